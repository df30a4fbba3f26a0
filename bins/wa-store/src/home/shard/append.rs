//! Mailbox writes: appends (validation, dedupe, limits, journal, cache or
//! engine) and deletes (acknowledged, expired, handed off).

use std::sync::Arc;

use common::link::{AppendResult, link_down};
use common::proto::{Code, Envelope, ItemKind, ids};
use common::reminder::{Reminder, Say};
use prost::Message;

use super::{Cached, Gone, LinkTx, Now, Pending, Shard};
use crate::journal::{AppendRecord, DeleteRecord, Record, Refusal, record};
use crate::metrics::Metrics;
use crate::storage::{DedupeKey, Original};

impl Shard {
    /// Tests: the dedupe window forgets every key but those of items still
    /// in memory (see `Op::ForgetRecent`).
    #[cfg(test)]
    pub(super) fn forget_recent(&mut self) {
        // Keys of items still in memory stay: those are younger than
        // the sync delay, and the window is far longer.
        let mut forgot = std::collections::HashSet::new();
        let users = &self.users;
        self.recent.forget_unless(
            |to, o| users.get(to).is_some_and(|u| u.cache.contains_key(&o.seq)),
            |to| {
                forgot.insert(to.to_owned());
            },
        );
        for to in forgot {
            if let Some(u) = self.users.get_mut(&to) {
                u.engine_dedupe = Some(true);
            }
        }
    }

    /// Whether the device that sent `envelope`, with a credential of
    /// `generation`, may still send: `REVOKED` when its generation is below
    /// the lowest accepted one. Revocations are written through to the
    /// engine by the sender's shard before it answers, so every shard of
    /// this node sees one as soon as it is answered.
    pub(super) fn sender_allowed(&self, envelope: &Envelope, generation: u32) -> Result<(), Code> {
        if !ids::valid_user_id(&envelope.from) {
            // (Refused by the append itself, with its own code.)
            return Ok(());
        }
        let min = self
            .storage
            .min_generation(&envelope.from, envelope.from_device)
            .map_err(internal)?;
        if generation < min {
            Metrics::add(&self.metrics.revoked_appends, 1);
            return Err(Code::Revoked);
        }
        Ok(())
    }

    /// Whether `envelope` may be written to `to`'s mailbox here: `to`'s
    /// home is still this node, and the device that sent it is not
    /// revoked (checked when `sender_generation` is given).
    pub(super) fn may_write(
        &self,
        to: &str,
        envelope: &Envelope,
        sender_generation: Option<u32>,
    ) -> Result<(), Code> {
        self.moved_away(to).and_then(|()| match sender_generation {
            Some(g) => self.sender_allowed(envelope, g),
            None => Ok(()),
        })
    }

    pub(super) fn append(
        &mut self,
        link: &LinkTx,
        req: u64,
        to: String,
        mut envelope: Envelope,
        now: Now,
    ) -> Result<(), Code> {
        // (A group's log is a mailbox named by the group id.)
        let mailbox = ids::valid_user_id(&to) || common::group::valid_group_id(&to);
        if !mailbox || !ids::valid_user_id(&envelope.from) {
            return Err(Code::BadRecipient);
        }
        if !ids::valid_message_id(&envelope.id) {
            return Err(Code::BadId);
        }
        let kind = envelope.item_kind();
        let key = DedupeKey {
            to: &to,
            from: &envelope.from,
            kind,
            id: &envelope.id,
        };
        let recent = self.recent.get(&key);
        let storage = Arc::clone(&self.storage);
        let journal = Arc::clone(&self.journal);
        self.load(&to).map_err(internal)?;
        let user = self.users.get_mut(&to).expect("loaded above");
        let original = match recent {
            Some(o) => Some(o),
            None if user.engine_may_dedupe(&*storage, &to).map_err(internal)? => {
                storage.dedupe(&key).map_err(internal)?
            }
            None => None,
        };
        if let Some(original) = original {
            Metrics::add(&self.metrics.duplicates, 1);
            // The original may not be flushed yet: answer after the flush
            // that covers every write so far.
            self.pending.push_back(Pending {
                ticket: self.commit.current(),
                link: link.clone(),
                req,
                server_ts_ms: original.server_ts_ms,
                seq: original.seq,
                fresh: None,
                wake: false,
                other: None,
            });
            return Ok(());
        }

        if let Some(r) = journal.refusal() {
            return Err(refusal_code(r));
        }
        // Receipts get twice the room, so that a full mailbox never blocks
        // the acknowledgement (and so the deletion) of messages elsewhere.
        let room = if kind == ItemKind::Message { 1 } else { 2 };
        let stored = user.engine_size(&*storage, &to).map_err(internal)?;
        let len = envelope.encoded_len() as u64;
        let budget = self.cache_cfg.budget_bytes;
        let (bypass_items, over_budget) = (self.cache_cfg.bypass_items, self.cache_bytes > budget);
        let items = stored.items + user.cache.len() as u64;
        let bytes = stored.bytes + user.cache_bytes;
        if items >= self.limits.max_items * room || bytes + len > self.limits.max_bytes * room {
            return Err(Code::MailboxFull);
        }

        let seq = user.last_seq + 1;
        // (Zero from every edge, which the listener makes sure of; an item
        // handed over from another island keeps its time.)
        if envelope.server_ts_ms == 0 {
            envelope.server_ts_ms = now.unix_ms;
        }
        let server_ts_ms = envelope.server_ts_ms;
        // (The record borrows the recipient and the envelope for its
        // encoding, and gives them back: no copies on the append path.)
        let rec = Record {
            kind: Some(record::Kind::Append(AppendRecord {
                user: to,
                seq,
                envelope: Some(envelope),
            })),
        };
        let segment = journal.append(&rec, true);
        let Some(record::Kind::Append(AppendRecord {
            user: to,
            envelope: Some(envelope),
            ..
        })) = rec.kind
        else {
            unreachable!("built above")
        };
        let segment = segment.map_err(internal)?;
        let wake = super::wake::wakes(&to, &envelope);
        #[cfg(debug_assertions)]
        if PANIC_ON_APPEND_TO.as_deref() == Some(to.as_str()) {
            panic!("fault switch: an append to {to} panics halfway, after its journal record");
        }
        let key = DedupeKey {
            to: &to,
            from: &envelope.from,
            kind,
            id: &envelope.id,
        };
        // (Not while the user's slice is in flight: the write-back task
        // writes its engine state.)
        let straight = (user.cache.len() >= bypass_items || over_budget) && user.flight.is_none();
        let in_engine = straight && storage.append(&to, seq, &envelope, &key).is_ok();
        self.recent
            .insert(&key, Original { seq, server_ts_ms }, now.at);
        if in_engine {
            user.wrote_to_engine(1, len);
            *self.written.entry(segment).or_default() += 1;
            Metrics::add(&self.metrics.bypassed, 1);
        } else {
            // (If the engine refused, the journal still holds the item; it
            // stays in memory and write-back tries again.)
            user.cache_bytes += len;
            self.cache_bytes += len;
            Metrics::add(&self.metrics.cache_items, 1);
            Metrics::add(&self.metrics.cache_bytes, len);
            user.cache.insert(
                seq,
                Cached {
                    envelope,
                    size: len,
                    at: now.at,
                    segment,
                },
            );
        }
        user.last_seq = seq;
        user.seq_dirty = true;
        user.unflushed += 1;
        Metrics::add(&self.metrics.appends, 1);
        let ticket = self.commit.ticket();
        self.pending.push_back(Pending {
            ticket,
            link: link.clone(),
            req,
            server_ts_ms,
            seq,
            fresh: Some(to),
            wake,
            other: None,
        });
        if self.recent.full() {
            self.prune_recent(now.at);
        }
        Ok(())
    }

    /// Lets the dedupe window forget what it should; the users whose keys it
    /// forgot have their dedupe checks go to the engine from now on.
    pub(super) fn prune_recent(&mut self, now: std::time::Instant) {
        let users = &mut self.users;
        self.recent.prune(now, |to| {
            if let Some(u) = users.get_mut(to) {
                u.engine_dedupe = Some(true);
            }
        });
    }

    /// Deletes items from the cache or the engine and journals the delete.
    /// Returns how many were there.
    pub(super) fn remove(&mut self, user: &str, seqs: &[u64], delivered: bool) -> u64 {
        if seqs.is_empty() {
            return 0;
        }
        let loaded = self.users.contains_key(user);
        let mut from_cache = 0;
        let mut engine = Vec::new();
        let mut deferred = false;
        if let Some(u) = self.users.get_mut(user) {
            let engine_empty = u.engine_empty();
            for &q in seqs {
                let writing = u.writing(q);
                match u.cache.remove(&q) {
                    Some(c) => {
                        u.cache_bytes -= c.size;
                        self.cache_bytes -= c.size;
                        Metrics::sub(&self.metrics.cache_items, 1);
                        Metrics::sub(&self.metrics.cache_bytes, c.size);
                        self.journal.settle(c.segment, 1);
                        from_cache += 1;
                        if writing && let Some(f) = &mut u.flight {
                            f.doomed.insert(q, Gone::Written);
                        }
                    }
                    // (Not in the cache and the engine holds none: nowhere.)
                    None if engine_empty => {}
                    None => match &mut u.flight {
                        Some(f) => {
                            let why = if delivered {
                                Gone::Delivered
                            } else {
                                Gone::Expired
                            };
                            f.doomed.entry(q).or_insert(why);
                            deferred = true;
                        }
                        None => engine.push(q),
                    },
                }
            }
            if !engine.is_empty() {
                u.engine = None;
            }
        } else {
            engine.extend_from_slice(seqs);
        }
        let from_engine = if engine.is_empty() {
            0
        } else {
            match self.storage.delete(user, &engine) {
                Ok(n) => n,
                Err(e) => {
                    if DELETE_FAILURES.hit(std::time::Instant::now()) != Say::Quiet {
                        tracing::error!(error = %e, "delete failed; the items will be delivered again (logged once a minute while deletes fail)");
                    }
                    0
                }
            }
        };
        // (A deferred engine delete is journaled now: the engine may hold
        // the item, and a replay must delete it too.)
        if from_cache + from_engine > 0 || deferred {
            let rec = Record {
                kind: Some(record::Kind::Delete(DeleteRecord {
                    user: user.to_owned(),
                    seqs: seqs.to_vec(),
                })),
            };
            if let Err(e) = self.journal.append(&rec, false)
                && DELETE_FAILURES.hit(std::time::Instant::now()) != Say::Quiet
            {
                tracing::error!(error = %e, "cannot journal a delete; a crash may deliver the items again (logged once a minute while deletes fail)");
            }
        }
        if delivered {
            Metrics::add(&self.metrics.delivered_from_cache, from_cache);
            Metrics::add(&self.metrics.delivered_from_engine, from_engine);
        }
        if !loaded {
            self.evict_if_idle(user);
        }
        from_cache + from_engine
    }
}

/// Tests only, and only in debug builds (which the black-box tests run): an
/// append to this user panics inside its shard, after its journal record
/// and before the cache holds it, so that a test can see what a panicking
/// operation does to the process (`tests/shard_panic.rs`). Read once (at
/// the first append), from `WA_STORE_FAULT_PANIC_ON_APPEND_TO`. A release
/// build has no such switch.
#[cfg(debug_assertions)]
pub(super) static PANIC_ON_APPEND_TO: std::sync::LazyLock<Option<String>> =
    std::sync::LazyLock::new(|| std::env::var("WA_STORE_FAULT_PANIC_ON_APPEND_TO").ok());

/// Failed deletes (engine or journal), logged once a minute: on a full disk
/// every acknowledgement fails.
static DELETE_FAILURES: Reminder = Reminder::new(crate::journal::REMIND_EVERY);

/// The answer to an append refused with `code`.
pub(super) fn refused(req: u64, code: Code) -> link_down::Kind {
    link_down::Kind::AppendResult(AppendResult {
        req,
        code: code as u32,
        retry_after_ms: retry_after_ms(code),
        ..Default::default()
    })
}

/// When a sender may try again after `code` (0: not a temporary refusal).
pub(super) fn retry_after_ms(code: Code) -> u64 {
    use common::proto::limits::{
        RETRY_MAILBOX_FULL_MS, RETRY_STORAGE_FULL_MS, RETRY_UNAVAILABLE_MS,
    };
    match code {
        Code::StorageFull => RETRY_STORAGE_FULL_MS,
        Code::MailboxFull => RETRY_MAILBOX_FULL_MS,
        Code::Unavailable | Code::Internal => RETRY_UNAVAILABLE_MS,
        _ => 0,
    }
}

/// What a sender is told when the journal takes no new items.
pub(super) fn refusal_code(r: Refusal) -> Code {
    match r {
        Refusal::LowSpace | Refusal::Failed { no_space: true } => Code::StorageFull,
        Refusal::Failed { no_space: false } => Code::Internal,
    }
}

pub(super) fn internal(e: impl std::fmt::Display) -> Code {
    tracing::error!(error = %e, "append failed");
    Code::Internal
}
