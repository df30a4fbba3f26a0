//! One shard of the home: the users it owns, their write-back caches, their
//! sessions and presence watchers. Everything here runs on one thread at a
//! time, whichever holds the shard (`super::cell::ShardCell`), one
//! operation at a time; storage and journal calls are synchronous and short
//! (they hit memory; `fsync`s happen elsewhere).
//!
//! A mailbox item lives in exactly one place: the user's cache (memory, made
//! durable by the journal) or the engine. An append goes to the cache unless
//! the mailbox is large or the shard's cache is over its budget, in which case
//! it goes straight to the engine. Write-back rounds move items that lingered
//! past the sync delay (or, under memory pressure, the oldest) to the engine.
//! Deleting an item that is still in the cache never touches the engine.
//!
//! This file holds the shard's state and [`Shard::handle`], which hands each
//! operation to the room that does it: [`append`] (mailbox writes: appends,
//! dedupe, limits, deletes), [`pending`] (answers waiting for a sync),
//! [`push`] (pushes and windows), [`sessions`] (attach, detach, presence,
//! typing), [`ack`] (acks and delivered receipts), [`accounts`] (key-value
//! records, revocation), [`write_back`] (the shard's side of write-back),
//! [`handover`] (a fragment moving to another island) and [`operator`]
//! (`wactl user` and `wactl trace`).

mod accounts;
mod ack;
mod append;
mod effect;
#[cfg(test)]
mod effect_tests;
mod handover;
mod log;
#[cfg(test)]
mod model_tests;
mod operator;
mod pending;
mod privacy;
mod push;
mod sessions;
#[cfg(test)]
pub(in crate::home) mod stand_ins;
mod wake;
#[cfg(test)]
mod wake_tests;
mod write_back;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use common::link::{KvResult, link_down};
use common::proto::{Code, Envelope};

use super::recent::Recent;
use super::seqmap::SeqMap;
use super::{CacheConfig, Limits, LinkId, LinkTx, Op, Outcome, Slice, UserBatch};
use crate::flusher::{Commit, Settled};
use crate::metrics::Metrics;
use crate::storage::{MailboxSize, Storage, StorageError};

pub(in crate::home) use effect::{Effect, Now};
pub(in crate::home) use log::Log;
pub use wake::SetPushBy;

use append::{internal, refused};
use pending::Pending;
use push::{Mailbox, fill};
use sessions::went_offline;

struct Session {
    link: LinkTx,
    id: u64,
    device: u32,
    /// The device generation its credential carries (see `Op::Revoke`).
    generation: u32,
    /// The next sequence number to consider pushing.
    cursor: u64,
    /// Pushed and not yet acknowledged.
    inflight: BTreeSet<u64>,
    /// Since when it has owed acknowledgements, as far as the wake
    /// decision has looked (`wake.rs`: idle sessions count as absent).
    owing_since: Option<Instant>,
    /// A push was decided because it was idle: its next acknowledgement
    /// cancels it.
    woken: bool,
}

impl Drop for Session {
    /// Its unacknowledged pushes no longer count against the link's budget.
    fn drop(&mut self) {
        self.link.released(self.inflight.len());
    }
}

struct Watcher {
    link: LinkTx,
    session: u64,
    /// The user watching (its presence privacy is the target's choice).
    user: String,
}

/// An item only in memory (and in the journal).
struct Cached {
    envelope: Envelope,
    size: u64,
    at: Instant,
    /// The journal segment holding its append.
    segment: u64,
}

/// Why an item was deleted while its user's write-back slice was in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gone {
    /// Acknowledged, not in memory: counted once the engine delete says so.
    Delivered,
    /// Expired, not in memory: likewise.
    Expired,
    /// Was in memory and in the slice (already counted): the slice may have
    /// put it in the engine.
    Written,
}

/// A user's part of the write-back slice in flight. The write-back task
/// writes the user's engine state meanwhile, so the shard writes none of it
/// (appends stay in memory; engine deletes wait in `doomed`).
struct Flight {
    /// The items handed over, in order.
    sent: Vec<u64>,
    /// Deleted meanwhile and maybe in the engine: deleted from it when the
    /// slice is done, and never pushed until then.
    doomed: BTreeMap<u64, Gone>,
    /// The sequence counter the slice records, if it does.
    last_seq: Option<u64>,
}

/// A user's in-memory state, kept while it has sessions, watchers, cached
/// items, appends waiting for a flush, or a sequence counter the engine has
/// not seen yet.
struct User {
    /// Highest sequence number assigned.
    last_seq: u64,
    /// Highest sequence number known durable: pushes stop there.
    durable: u64,
    /// Appends to this mailbox waiting for a flush.
    unflushed: u32,
    sessions: Vec<Session>,
    watchers: Vec<Watcher>,
    last_seen: Option<u64>,
    cache: SeqMap<Cached>,
    cache_bytes: u64,
    /// `last_seq` is ahead of the engine's copy.
    seq_dirty: bool,
    /// The engine's part of the mailbox, as last read; `None` once this
    /// shard wrote or deleted any of its items (read again when needed).
    /// Only this shard changes a loaded user's items, so a `Some` is exact.
    engine: Option<MailboxSize>,
    /// Whether the engine may hold dedupe entries for items to this user
    /// that the shard's in-memory window (`recent`) does not; `None` until
    /// probed. Only this shard adds entries, and only for items whose keys
    /// are in the window; when the window forgets a key of this user, this
    /// turns `Some(true)`. So a `Some(false)` is exact, and spares every
    /// append an engine read, even once its mailbox is in the engine. (The
    /// sweeper only ever removes entries.)
    engine_dedupe: Option<bool>,
    /// Part of the write-back slice in flight (see [`Flight`]). (Boxed:
    /// every loaded user has the field, few at a time have a slice.)
    flight: Option<Box<Flight>>,
    /// Acknowledged items whose delivered receipts are on their way to the
    /// senders' homes: kept until `Op::ReceiptStored`, never pushed again
    /// meanwhile.
    acked: BTreeSet<u64>,
}

impl User {
    fn engine_size(
        &mut self,
        storage: &dyn Storage,
        user: &str,
    ) -> Result<MailboxSize, StorageError> {
        known_or_read(&mut self.engine, || storage.mailbox_size(user))
    }

    fn engine_may_dedupe(
        &mut self,
        storage: &dyn Storage,
        user: &str,
    ) -> Result<bool, StorageError> {
        known_or_read(&mut self.engine_dedupe, || storage.has_dedupe(user))
    }

    /// The engine holds none of this mailbox's items (as far as is known
    /// without reading).
    fn engine_empty(&self) -> bool {
        self.engine.is_some_and(|s| s.items == 0)
    }

    /// This shard just wrote `items` items of `bytes` (encoded) to the
    /// engine's part of the mailbox (their dedupe keys still in the window):
    /// the known size grows by as much, so the next append reads nothing.
    fn wrote_to_engine(&mut self, items: u64, bytes: u64) {
        if let Some(s) = &mut self.engine {
            s.items += items;
            s.bytes += bytes;
        }
    }

    fn idle(&self) -> bool {
        self.sessions.is_empty()
            && self.watchers.is_empty()
            && self.unflushed == 0
            && self.cache.is_empty()
            && !self.seq_dirty
            && self.flight.is_none()
            && self.acked.is_empty()
    }

    /// `seq` is in the write-back slice in flight.
    fn writing(&self, seq: u64) -> bool {
        self.flight
            .as_ref()
            .is_some_and(|f| f.sent.binary_search(&seq).is_ok())
    }
}

/// The value `slot` remembers, or `read` it and remember it.
fn known_or_read<T: Copy>(
    slot: &mut Option<T>,
    read: impl FnOnce() -> Result<T, StorageError>,
) -> Result<T, StorageError> {
    match *slot {
        Some(v) => Ok(v),
        None => Ok(*slot.insert(read()?)),
    }
}

pub(super) struct Shard {
    storage: Arc<dyn Storage>,
    journal: Arc<dyn Log>,
    commit: Arc<Commit>,
    settled: Settled,
    limits: Limits,
    cache_cfg: CacheConfig,
    metrics: Arc<Metrics>,
    /// Acknowledged messages make delivered receipts (`Effect::Receipt`,
    /// for the courier); false: acknowledged items are deleted at once,
    /// without a receipt.
    receipts: bool,
    users: foldhash::HashMap<String, User>,
    /// Tickets in rising order: a shard takes them one after another.
    pending: VecDeque<Pending>,
    recent: Recent,
    cache_bytes: u64,
    /// Items written to the engine since the last round report, by journal
    /// segment: they settle once the round's engine flush returns.
    written: HashMap<u64, u64>,
    /// What the operations applied decided should happen outside the
    /// shard, in order, until the dispatcher takes it ([`Shard::effects`]).
    effects: Vec<Effect>,
    /// Users whose session found its link's push budget spent, by link:
    /// the link's refill visits only them (see `push::Starved`).
    starved: push::Starved,
    /// Users' push endpoints, cached ([`wake`]).
    wakes: wake::Endpoints,
    /// The map's view of this node since the last [`Op::Rehome`] (`None`:
    /// none came since the start, and the links' checks are all there is).
    /// Appends and writes for users it gives another island are refused
    /// `WRONG_HOME` here, where they are ordered with the hand-over's
    /// `Op::Export`: one that passed a link's check before the map moved,
    /// and reaches the shard after its mailbox was exported, would stay
    /// behind here, lost to its user.
    owned: Option<Arc<crate::ownership::Owned>>,
}

impl Shard {
    pub(super) fn new(
        storage: Arc<dyn Storage>,
        journal: Arc<dyn Log>,
        commit: Arc<Commit>,
        limits: Limits,
        cache_cfg: CacheConfig,
        metrics: Arc<Metrics>,
        receipts: bool,
    ) -> Shard {
        Shard {
            storage,
            journal,
            settled: commit.settled(),
            commit,
            limits,
            cache_cfg,
            metrics,
            receipts,
            users: foldhash::HashMap::default(),
            pending: VecDeque::new(),
            recent: Recent::default(),
            cache_bytes: 0,
            written: HashMap::new(),
            effects: Vec::new(),
            starved: push::Starved::default(),
            wakes: wake::Endpoints::default(),
            owned: None,
        }
    }

    /// `WRONG_HOME` if the map read last gives `user` to another island.
    fn moved_away(&self, user: &str) -> Result<(), Code> {
        match &self.owned {
            Some(o) if !o.owns(user) => Err(Code::WrongHome),
            _ => Ok(()),
        }
    }

    /// What the operations applied so far decided should happen outside the
    /// shard, in the order they decided it, to be carried out now.
    pub(in crate::home) fn effects(&mut self) -> std::vec::Drain<'_, Effect> {
        self.effects.drain(..)
    }

    /// Answers are waiting for a flush.
    pub(super) fn waiting(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Applies `op`, which happens at `now`. What it decides should happen
    /// outside the shard (answers, pushes, kicks, presence, typing, receipts
    /// for the courier) is left
    /// in order among the shard's effects, for the caller to take
    /// ([`Shard::effects`]) and carry out before anything else is applied;
    /// the replies of the write-back task and the hand-over go back on
    /// their oneshot channels at once. Appends and key-value or revoke
    /// operations are answered only by a later [`Shard::settle`].
    pub(super) fn handle(&mut self, op: Op, now: Now) {
        match op {
            Op::Append {
                link,
                req,
                to,
                envelope,
                sender_generation,
            } => {
                let checked = self.may_write(&to, &envelope, sender_generation);
                if let Err(code) = checked.and_then(|()| self.append(&link, req, to, envelope, now))
                {
                    match code {
                        Code::MailboxFull => Metrics::add(&self.metrics.mailbox_full, 1),
                        Code::StorageFull => Metrics::add(&self.metrics.storage_full, 1),
                        _ => {}
                    }
                    self.effects.push(Effect::Send {
                        link,
                        frame: refused(req, code),
                    });
                }
            }
            Op::Gather {
                link,
                req,
                to,
                envelope,
                sender_generation,
            } => match self.may_write(&to, &envelope, sender_generation) {
                Ok(()) => self.effects.push(Effect::Gather {
                    link,
                    req,
                    to,
                    envelope,
                }),
                Err(code) => self.effects.push(Effect::Send {
                    link,
                    frame: refused(req, code),
                }),
            },
            Op::Attach {
                link,
                session,
                user,
                device,
                generation,
            } => self.attach(link, session, user, device, generation),
            Op::Kv {
                link,
                req,
                space,
                key,
                put,
            } => {
                let moved = match put {
                    Some(_) => self.moved_away(&key),
                    None => Ok(()),
                };
                let answer = moved
                    .and_then(|()| self.kv(req, space, &key, put, now.unix_ms))
                    .unwrap_or_else(|code| KvResult {
                        req,
                        code: code as u32,
                        ..Default::default()
                    });
                self.answer_when_durable(link, link_down::Kind::KvResult(answer));
            }
            Op::Revoke {
                link,
                req,
                user,
                device,
                generation,
            } => {
                let answer = match self.moved_away(&user) {
                    Ok(()) => self.revoke(req, &user, device, generation, now.unix_ms),
                    Err(code) => common::link::RevokeResult {
                        req,
                        code: code as u32,
                        kicked: 0,
                    },
                };
                self.answer_when_durable(link, link_down::Kind::RevokeResult(answer));
            }
            Op::CheckDevice {
                link,
                req,
                user,
                device,
                generation,
            } => {
                let answer = self.check_device(req, &user, device, generation);
                self.effects.push(Effect::Send {
                    link,
                    frame: link_down::Kind::DeviceChecked(answer),
                });
            }
            Op::SetPush {
                by,
                user,
                device,
                endpoint,
            } => self.set_push(by, &user, device, endpoint),
            Op::PushOwed { user, device, owed } => self.push_owed(&user, device, owed),
            Op::Detach {
                link,
                session,
                user,
            } => self.detach(link, session, &user, now.unix_ms),
            Op::Ack {
                link,
                session,
                user,
                seqs,
            } => {
                self.ack(link, session, &user, &seqs);
                self.showed_life(link, session, &user, now.at);
            }
            Op::Export { user, reply } => {
                let _ = reply.send(self.export(&user));
            }
            Op::HandedOff { user, seqs } => self.handed_off(&user, &seqs),
            Op::Cached { reply } => {
                let _ = reply.send(self.cached_users());
            }
            Op::ReceiptStored { user, seq } => self.receipt_stored(&user, seq),
            Op::ReceiptRefused { user, seqs } => self.receipt_refused(&user, &seqs),
            Op::Typing { from, to, typing } => self.typing(&from, &to, typing),
            Op::Watch {
                link,
                session,
                target,
                watch,
                watcher,
            } => self.watch(link, session, target, watch, watcher),
            Op::LinkGone { link } => self.link_gone(link, now.unix_ms),
            Op::Refill { link } => self.refill_link(link),
            Op::Rehome { owned } => {
                self.rehome(&owned, now.unix_ms);
                self.owned = Some(owned);
            }
            Op::Expire { user, seqs } => {
                let n = self.remove(&user, &seqs, false);
                Metrics::add(&self.metrics.expired, n);
                self.refill(&user, &seqs);
            }
            Op::WriteBack {
                due,
                all,
                max,
                reply,
            } => {
                let slice = self.write_back(due, all, max, now.at);
                let _ = reply.send(slice);
            }
            Op::WrittenBack { outcomes, reply } => {
                self.written_back(outcomes);
                let _ = reply.send(std::mem::take(&mut self.written));
            }
            Op::Operator { key, action, reply } => {
                let _ = reply.send(self.operator(&key, action, now.unix_ms));
            }
            #[cfg(test)]
            Op::ForgetRecent { .. } => self.forget_recent(),
        }
    }

    fn load(&mut self, user: &str) -> Result<&mut User, StorageError> {
        if !self.users.contains_key(user) {
            let last_seq = self.storage.last_seq(user)?;
            let last_seen = self.storage.last_seen(user)?;
            self.users.insert(
                user.to_owned(),
                User {
                    last_seq,
                    durable: last_seq,
                    unflushed: 0,
                    sessions: Vec::new(),
                    watchers: Vec::new(),
                    last_seen,
                    cache: SeqMap::default(),
                    cache_bytes: 0,
                    seq_dirty: false,
                    engine: None,
                    engine_dedupe: None,
                    flight: None,
                    acked: BTreeSet::new(),
                },
            );
        }
        Ok(self.users.get_mut(user).expect("inserted above"))
    }

    fn evict_if_idle(&mut self, user: &str) {
        if self.users.get(user).is_some_and(User::idle) {
            self.users.remove(user);
        }
    }
}
