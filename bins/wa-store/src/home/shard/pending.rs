//! Answers waiting for a journal sync: an append's `AppendResult` (and its
//! pushes), a key-value or revoke answer, each sent once a flush covers the
//! ticket it was queued behind.

use common::link::{AppendResult, KvResult, link_down};
use common::proto::Code;

use super::{Effect, LinkTx, Shard};
use crate::flusher::FlushError;

impl Shard {
    /// Answers every pending append a flush has settled, in order, and pushes
    /// the items that became durable (at `now`: whether to wake a device
    /// depends on how long its sessions have been idle).
    pub(in crate::home) fn settle(&mut self, now: super::Now) {
        while let Some(p) = self.pending.front() {
            let Some(outcome) = self.settled.outcome(p.ticket) else {
                break;
            };
            let p = self.pending.pop_front().expect("front exists");
            let code = match outcome {
                Ok(()) => None,
                Err(FlushError::Failed) => Some(
                    self.journal
                        .refusal()
                        .map_or(Code::Internal, super::append::refusal_code),
                ),
                Err(FlushError::Stopped | FlushError::Unreplicated) => Some(Code::Unavailable),
            };
            let retry_after_ms = code.map_or(0, super::append::retry_after_ms);
            let code = code.map_or(0, |c| c as u32);
            if let Some(mut answer) = p.other {
                if code != 0 {
                    match &mut answer {
                        link_down::Kind::KvResult(r) => {
                            *r = KvResult {
                                req: r.req,
                                code,
                                ..Default::default()
                            }
                        }
                        link_down::Kind::RevokeResult(r) => r.code = code,
                        _ => {}
                    }
                }
                self.effects.push(Effect::Send {
                    link: p.link,
                    frame: answer,
                });
                continue;
            }
            self.effects.push(Effect::Send {
                link: p.link,
                frame: link_down::Kind::AppendResult(AppendResult {
                    req: p.req,
                    code,
                    server_ts_ms: p.server_ts_ms,
                    duplicate: p.fresh.is_none(),
                    seq: p.seq,
                    retry_after_ms,
                }),
            });
            if let Some(to) = p.fresh {
                if let Some(u) = self.users.get_mut(&to) {
                    u.unflushed -= 1;
                    u.durable = u.durable.max(p.seq);
                    u.fill_sessions(
                        &*self.storage,
                        &to,
                        &[],
                        &mut self.effects,
                        &mut self.starved,
                    );
                }
                if code == 0 && p.wake {
                    self.item_landed(&to, now.at);
                }
                self.evict_if_idle(&to);
            }
        }
    }

    /// Queues `answer` behind a ticket covering every write so far, so that
    /// nothing it reports (even a read) can be lost by a crash after it went out.
    pub(super) fn answer_when_durable(&mut self, link: LinkTx, answer: link_down::Kind) {
        self.pending.push_back(Pending {
            ticket: self.commit.current(),
            link,
            req: 0,
            server_ts_ms: 0,
            seq: 0,
            fresh: None,
            wake: false,
            other: Some(answer),
        });
    }
}

/// An answer (and maybe a push) held back until a flush covers `ticket`.
pub(super) struct Pending {
    pub(super) ticket: u64,
    pub(super) link: LinkTx,
    pub(super) req: u64,
    pub(super) server_ts_ms: u64,
    pub(super) seq: u64,
    /// The user whose mailbox got a new item (None for a duplicate).
    pub(super) fresh: Option<String>,
    /// The new item is one its user must see: it may wake a device
    /// (`wake::wakes`).
    pub(super) wake: bool,
    /// Not an append: this answer (a `KvResult` or `RevokeResult`) is sent
    /// instead, its code replaced if the flush failed.
    pub(super) other: Option<link_down::Kind>,
}
