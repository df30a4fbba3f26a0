//! One shard of the home: the users it owns, their write-back caches, their
//! sessions and presence watchers. Everything here runs on one thread at a
//! time, whichever holds the shard (`super::ShardCell`), one operation at a
//! time; storage and journal calls are synchronous and short (they hit
//! memory; `fsync`s happen elsewhere).
//!
//! A mailbox item lives in exactly one place: the user's cache (memory, made
//! durable by the journal) or the engine. An append goes to the cache unless
//! the mailbox is large or the shard's cache is over its budget, in which case
//! it goes straight to the engine. Write-back rounds move items that lingered
//! past the sync delay (or, under memory pressure, the oldest) to the engine.
//! Deleting an item that is still in the cache never touches the engine.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use common::link::{
    AppendResult, Kick, KvResult, KvSpace, PUSH_WINDOW, PresenceDown, Push, RevokeResult,
    TypingDown, link_down,
};
use common::proto::{Code, Envelope, ItemKind, ids};
use prost::Message;

use super::recent::Recent;
use super::seqmap::SeqMap;
use super::{CacheConfig, Limits, LinkId, LinkTx, Op, Outcome, Slice, UserBatch};
use crate::flusher::{Commit, FlushError, Settled};
use crate::journal::{AppendRecord, DeleteRecord, Journal, KvRecord, Record, RevokeRecord, record};
use crate::metrics::Metrics;
use crate::storage::{DedupeKey, Item, MailboxSize, Original, Storage, StorageError};

/// Tests only, and only in debug builds (which the black-box tests run): an
/// append to this user panics inside its shard, after its journal record
/// and before the cache holds it, so that a test can see what a panicking
/// operation does to the process (`tests/shard_panic.rs`). Read once (at
/// the first append), from `WA_STORE_FAULT_PANIC_ON_APPEND_TO`. A release
/// build has no such switch.
#[cfg(debug_assertions)]
static PANIC_ON_APPEND_TO: std::sync::LazyLock<Option<String>> =
    std::sync::LazyLock::new(|| std::env::var("WA_STORE_FAULT_PANIC_ON_APPEND_TO").ok());

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
    /// Part of the write-back slice in flight (see [`Flight`]).
    flight: Option<Flight>,
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

    /// Pushes every session what it may have now (see [`fill`]), after
    /// forgetting `acked` from their windows.
    fn fill_sessions(&mut self, storage: &dyn Storage, user: &str, acked: &[u64]) {
        let mailbox = Mailbox {
            durable: self.durable,
            cache: &self.cache,
            engine_empty: self.engine_empty(),
            doomed: self.flight.as_ref().map(|f| &f.doomed),
            acked: &self.acked,
        };
        for s in &mut self.sessions {
            let freed = acked.iter().filter(|q| s.inflight.remove(q)).count();
            s.link.released(freed);
            fill(storage, user, &mailbox, s);
        }
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

/// An answer (and maybe a push) held back until a flush covers `ticket`.
struct Pending {
    ticket: u64,
    link: LinkTx,
    req: u64,
    server_ts_ms: u64,
    seq: u64,
    /// The user whose mailbox got a new item (None for a duplicate).
    fresh: Option<String>,
    /// Not an append: this answer (a `KvResult` or `RevokeResult`) is sent
    /// instead, its code replaced if the flush failed.
    other: Option<link_down::Kind>,
}

pub(super) struct Shard {
    storage: Arc<dyn Storage>,
    journal: Arc<Journal>,
    commit: Arc<Commit>,
    settled: Settled,
    limits: Limits,
    cache_cfg: CacheConfig,
    metrics: Arc<Metrics>,
    /// Where delivered receipts go to be appended at their senders' homes;
    /// `None`: acknowledged items are deleted at once, without a receipt.
    outbox: Option<crate::courier::Outbox>,
    users: foldhash::HashMap<String, User>,
    /// Tickets in rising order: a shard takes them one after another.
    pending: VecDeque<Pending>,
    recent: Recent,
    cache_bytes: u64,
    /// Items written to the engine since the last round report, by journal
    /// segment: they settle once the round's engine flush returns.
    written: HashMap<u64, u64>,
}

fn result(link: &LinkTx, req: u64, code: Code) {
    link.send(link_down::Kind::AppendResult(AppendResult {
        req,
        code: code as u32,
        ..Default::default()
    }));
}

fn internal(e: impl std::fmt::Display) -> Code {
    tracing::error!(error = %e, "append failed");
    Code::Internal
}

impl Shard {
    pub(super) fn new(
        storage: Arc<dyn Storage>,
        journal: Arc<Journal>,
        commit: Arc<Commit>,
        limits: Limits,
        cache_cfg: CacheConfig,
        metrics: Arc<Metrics>,
        outbox: Option<crate::courier::Outbox>,
    ) -> Shard {
        Shard {
            storage,
            journal,
            settled: commit.settled(),
            commit,
            limits,
            cache_cfg,
            metrics,
            outbox,
            users: foldhash::HashMap::default(),
            pending: VecDeque::new(),
            recent: Recent::default(),
            cache_bytes: 0,
            written: HashMap::new(),
        }
    }

    /// Answers are waiting for a flush.
    pub(super) fn waiting(&self) -> bool {
        !self.pending.is_empty()
    }

    pub(super) fn handle(&mut self, op: Op) {
        match op {
            Op::Append {
                link,
                req,
                to,
                envelope,
            } => {
                if let Err(code) = self.append(&link, req, to, envelope) {
                    if code == Code::MailboxFull {
                        Metrics::add(&self.metrics.mailbox_full, 1);
                    }
                    result(&link, req, code);
                }
            }
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
                let answer = self
                    .kv(req, space, &key, put)
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
                let answer = self.revoke(req, &user, device, generation);
                self.answer_when_durable(link, link_down::Kind::RevokeResult(answer));
            }
            Op::Detach {
                link,
                session,
                user,
            } => self.detach(link, session, &user),
            Op::Ack {
                link,
                session,
                user,
                seqs,
            } => self.ack(link, session, &user, &seqs),
            Op::Export { user, reply } => {
                let _ = reply.send(self.export(&user));
            }
            Op::HandedOff { user, seqs } => {
                self.remove(&user, &seqs, false);
                self.refill(&user, &seqs);
            }
            Op::Cached { reply } => {
                let users = self
                    .users
                    .iter()
                    .filter(|(_, u)| !u.cache.is_empty())
                    .map(|(n, _)| n.clone())
                    .collect();
                let _ = reply.send(users);
            }
            Op::ReceiptStored { user, seq } => {
                if let Some(u) = self.users.get_mut(&user) {
                    u.acked.remove(&seq);
                }
                self.remove(&user, &[seq], true);
                self.refill(&user, &[seq]);
            }
            Op::Typing { from, to, typing } => {
                if let Some(u) = self.users.get(&to) {
                    for s in &u.sessions {
                        s.link.send(link_down::Kind::Typing(TypingDown {
                            session: s.id,
                            from: from.clone(),
                            typing,
                        }));
                    }
                }
            }
            Op::Watch {
                link,
                session,
                target,
                watch,
            } => self.watch(link, session, target, watch),
            Op::LinkGone { link } => self.link_gone(link),
            Op::Refill { link } => self.refill_link(link),
            Op::Rehome { owned } => self.rehome(&owned),
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
                let slice = self.write_back(due, all, max);
                let _ = reply.send(slice);
            }
            Op::WrittenBack { outcomes, reply } => {
                self.written_back(outcomes);
                let _ = reply.send(std::mem::take(&mut self.written));
            }
            #[cfg(test)]
            Op::ForgetRecent { .. } => {
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

    fn append(
        &mut self,
        link: &LinkTx,
        req: u64,
        to: String,
        mut envelope: Envelope,
    ) -> Result<(), Code> {
        if !ids::valid_user_id(&to) || !ids::valid_user_id(&envelope.from) {
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
                other: None,
            });
            return Ok(());
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
            envelope.server_ts_ms = common::fsutil::now_ms();
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
        let now = Instant::now();
        self.recent
            .insert(&key, Original { seq, server_ts_ms }, now);
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
                    at: now,
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
            other: None,
        });
        if self.recent.full() {
            self.prune_recent();
        }
        Ok(())
    }

    /// Lets the dedupe window forget what it should; the users whose keys it
    /// forgot have their dedupe checks go to the engine from now on.
    fn prune_recent(&mut self) {
        let users = &mut self.users;
        self.recent.prune(|to| {
            if let Some(u) = users.get_mut(to) {
                u.engine_dedupe = Some(true);
            }
        });
    }

    /// Answers every pending append a flush has settled, in order, and pushes
    /// the items that became durable.
    pub(super) fn settle(&mut self) {
        while let Some(p) = self.pending.front() {
            let Some(outcome) = self.settled.outcome(p.ticket) else {
                break;
            };
            let p = self.pending.pop_front().expect("front exists");
            let code = match outcome {
                Ok(()) => 0,
                Err(FlushError::Failed) => Code::Internal as u32,
                Err(FlushError::Stopped) => Code::Unavailable as u32,
            };
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
                p.link.send(answer);
                continue;
            }
            p.link.send(link_down::Kind::AppendResult(AppendResult {
                req: p.req,
                code,
                server_ts_ms: p.server_ts_ms,
                duplicate: p.fresh.is_none(),
                seq: p.seq,
            }));
            if let Some(to) = p.fresh {
                if let Some(u) = self.users.get_mut(&to) {
                    u.unflushed -= 1;
                    u.durable = u.durable.max(p.seq);
                    u.fill_sessions(&*self.storage, &to, &[]);
                }
                self.evict_if_idle(&to);
            }
        }
    }

    /// Queues `answer` behind a ticket covering every write so far, so that
    /// nothing it reports (even a read) can be lost by a crash after it went out.
    fn answer_when_durable(&mut self, link: LinkTx, answer: link_down::Kind) {
        self.pending.push_back(Pending {
            ticket: self.commit.current(),
            link,
            req: 0,
            server_ts_ms: 0,
            seq: 0,
            fresh: None,
            other: Some(answer),
        });
    }

    /// A key-value read or compare-and-set. A write goes to the engine and
    /// the journal (whose sync makes it durable; the journal segment is kept
    /// until an engine flush has covered it, like a delete's).
    fn kv(
        &mut self,
        req: u64,
        space: KvSpace,
        key: &str,
        put: Option<(bytes::Bytes, u64)>,
    ) -> Result<KvResult, Code> {
        let sp = space as i32 as u8;
        let (version, value) = self.storage.kv_get(sp, key).map_err(internal)?;
        let last_seen_ms = if space == KvSpace::Account {
            match self.users.get(key) {
                Some(u) if !u.sessions.is_empty() => common::fsutil::now_ms(),
                Some(u) => u.last_seen.unwrap_or(0),
                None => self.storage.last_seen(key).map_err(internal)?.unwrap_or(0),
            }
        } else {
            0
        };
        let current = |conflict| KvResult {
            req,
            code: 0,
            value: value.clone().into(),
            version,
            conflict,
            last_seen_ms,
        };
        let Some((new, expected)) = put else {
            return Ok(current(false));
        };
        if expected != version {
            return Ok(current(true));
        }
        let version = version + 1;
        self.storage
            .kv_put(sp, key, version, &new)
            .map_err(internal)?;
        let rec = Record {
            kind: Some(record::Kind::Kv(KvRecord {
                space: u32::from(sp),
                key: key.to_owned(),
                version,
                value: new.to_vec(),
            })),
        };
        self.journal.append(&rec, false).map_err(internal)?;
        self.commit.ticket();
        Ok(KvResult {
            req,
            code: 0,
            value: new,
            version,
            conflict: false,
            last_seen_ms,
        })
    }

    /// Records the lowest accepted generation of (`user`, `device`) and
    /// closes that device's sessions below it with `REVOKED`.
    fn revoke(&mut self, req: u64, user: &str, device: u32, generation: u32) -> RevokeResult {
        let mut kicked = 0;
        if let Some(u) = self.users.get_mut(user) {
            let before = u.sessions.len();
            u.sessions.retain(|s| {
                let revoked = s.device == device && s.generation < generation;
                if revoked {
                    s.link.send(link_down::Kind::Kick(Kick {
                        session: s.id,
                        code: Code::Revoked as u32,
                    }));
                }
                !revoked
            });
            kicked = (before - u.sessions.len()) as u32;
            if before > 0 && u.sessions.is_empty() {
                went_offline(&*self.storage, u, user);
            }
        }
        self.evict_if_idle(user);
        tracing::info!(device, generation, kicked, "device generation revoked");
        let stored = self
            .storage
            .set_min_generation(user, device, generation)
            .map_err(internal)
            .and_then(|()| {
                let rec = Record {
                    kind: Some(record::Kind::Revoke(RevokeRecord {
                        user: user.to_owned(),
                        device,
                        generation,
                    })),
                };
                self.journal.append(&rec, false).map_err(internal)
            });
        if let Err(code) = stored {
            return RevokeResult {
                req,
                code: code as u32,
                kicked,
            };
        }
        self.commit.ticket();
        RevokeResult {
            req,
            code: 0,
            kicked,
        }
    }

    fn attach(&mut self, link: LinkTx, session: u64, user: String, device: u32, generation: u32) {
        let storage = Arc::clone(&self.storage);
        match storage.min_generation(&user, device) {
            Ok(min) if generation < min => {
                tracing::info!(
                    session,
                    device,
                    generation,
                    min,
                    "attach of a revoked device refused"
                );
                link.send(link_down::Kind::Kick(Kick {
                    session,
                    code: Code::Revoked as u32,
                }));
                return;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "cannot read a device generation; refusing the session");
                link.send(link_down::Kind::Kick(Kick {
                    session,
                    code: Code::Internal as u32,
                }));
                return;
            }
        }
        let u = match self.load(&user) {
            Ok(u) => u,
            Err(e) => {
                tracing::error!(error = %e, "cannot load a mailbox; refusing the session");
                link.send(link_down::Kind::Kick(Kick {
                    session,
                    code: Code::Internal as u32,
                }));
                return;
            }
        };
        tracing::debug!(session, device, "attach");
        u.sessions
            .retain(|s| !(s.link.id == link.id && s.id == session));
        let was_online = !u.sessions.is_empty();
        // Known from here on (kept exact by this shard), so that pushes to an
        // online user whose items all stay in memory never read the engine.
        let engine_empty = u
            .engine_size(&*storage, &user)
            .is_ok_and(|size| size.items == 0);
        let mut s = Session {
            link,
            id: session,
            device,
            generation,
            cursor: 1,
            inflight: BTreeSet::new(),
        };
        let mailbox = Mailbox {
            durable: u.durable,
            cache: &u.cache,
            engine_empty,
            doomed: u.flight.as_ref().map(|f| &f.doomed),
            acked: &u.acked,
        };
        fill(&*storage, &user, &mailbox, &mut s);
        u.sessions.push(s);
        if !was_online {
            notify_presence(u, &user, true);
        }
    }

    fn detach(&mut self, link: LinkId, session: u64, user: &str) {
        let Some(u) = self.users.get_mut(user) else {
            return;
        };
        let before = u.sessions.len();
        u.sessions
            .retain(|s| !(s.link.id == link && s.id == session));
        if before > 0 && u.sessions.is_empty() {
            went_offline(&*self.storage, u, user);
        }
        self.evict_if_idle(user);
    }

    fn ack(&mut self, link: LinkId, session: u64, user: &str, seqs: &[u64]) {
        let Some(u) = self.users.get_mut(user) else {
            return;
        };
        // Only what this session was given; an ack for anything else is a
        // confused or stale edge, and deleting on it could lose a message.
        let Some(s) = u
            .sessions
            .iter()
            .find(|s| s.link.id == link && s.id == session)
        else {
            return;
        };
        let (device, valid): (u32, Vec<u64>) = (
            s.device,
            seqs.iter()
                .copied()
                .filter(|q| s.inflight.contains(q))
                .collect(),
        );
        // A message stays until its delivered receipt is durable at the
        // sender's home (the courier then sends `Op::ReceiptStored`); a
        // receipt, or a message whose receipt cannot be queued now, goes at
        // once or stays for the next session. Either way the window slots
        // are free from here on.
        let mut gone = Vec::with_capacity(valid.len());
        for &seq in &valid {
            match self.receipt_for(user, device, seq) {
                Some((to, receipt)) => {
                    let outbox = self.outbox.as_ref().expect("receipts only with an outbox");
                    if outbox.send(to, receipt, user, seq) {
                        if let Some(u) = self.users.get_mut(user) {
                            u.acked.insert(seq);
                        }
                    } else {
                        tracing::debug!(
                            seq,
                            "receipt queue full; the item is delivered again later"
                        );
                    }
                }
                None => gone.push(seq),
            }
        }
        self.remove(user, &gone, true);
        self.refill(user, &valid);
    }

    /// The delivered receipt that acknowledging `user`'s item `seq` makes
    /// (from `user`'s `device`), and whose home it goes to; `None` for an
    /// item that needs none (a receipt) or if this home makes no receipts.
    fn receipt_for(&self, user: &str, device: u32, seq: u64) -> Option<(String, Envelope)> {
        use common::proto::{Receipt, ReceiptKind, envelope};
        self.outbox.as_ref()?;
        let u = self.users.get(user)?;
        let item = match u.cache.get(&seq) {
            Some(c) => c.envelope.clone(),
            None if u.engine_empty() => return None,
            None => match self.storage.read(user, seq, 1) {
                Ok(mut items) if items.first().is_some_and(|i| i.seq == seq) => {
                    items.swap_remove(0).envelope
                }
                Ok(_) => return None,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read an acknowledged item; no receipt");
                    return None;
                }
            },
        };
        if item.item_kind() != ItemKind::Message {
            return None;
        }
        let receipt = Envelope {
            from: user.to_owned(),
            from_device: device,
            id: item.id.clone(),
            server_ts_ms: 0,
            content: Some(envelope::Content::Receipt(Receipt {
                kind: ReceiptKind::Delivered as i32,
                ids: vec![item.id],
            })),
        };
        Some((item.from, receipt))
    }

    /// Deletes items from the cache or the engine and journals the delete.
    /// Returns how many were there.
    fn remove(&mut self, user: &str, seqs: &[u64], delivered: bool) -> u64 {
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
                    tracing::error!(error = %e, "delete failed; the items will be delivered again");
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
            if let Err(e) = self.journal.append(&rec, false) {
                tracing::error!(error = %e, "cannot journal a delete; a crash may deliver the items again");
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

    /// After items went away: free their window slots and push on.
    fn refill(&mut self, user: &str, seqs: &[u64]) {
        if let Some(u) = self.users.get_mut(user) {
            u.fill_sessions(&*self.storage, user, seqs);
        }
        self.evict_if_idle(user);
    }

    /// Hands over, for the engine, the cached items older than `due` (or
    /// every one, with `all`), user by user, and, over the memory budget, the
    /// oldest of the others, at most `max` in all; in the last slice of a
    /// round, the sequence counters the engine has not seen too. They are in
    /// flight until [`Shard::written_back`].
    fn write_back(&mut self, due: Instant, all: bool, max: usize) -> Slice {
        let storage = Arc::clone(&self.storage);
        if let Some(old) = Instant::now().checked_sub(self.cache_cfg.expire_after) {
            let expired: Vec<(String, Vec<u64>)> = self
                .users
                .iter()
                .map(|(n, u)| {
                    let seqs = u
                        .cache
                        .iter()
                        .take_while(|(_, c)| c.at < old)
                        .map(|(s, _)| *s);
                    (n.clone(), seqs.collect::<Vec<_>>())
                })
                .filter(|(_, s)| !s.is_empty())
                .collect();
            for (user, seqs) in expired {
                let n = self.remove(&user, &seqs, false);
                Metrics::add(&self.metrics.expired, n);
                self.refill(&user, &seqs);
            }
        }
        // The due items, user by user (each cache is in time order), at most
        // `max`: a slice costs what it hands over, not everything due.
        let mut by_user: HashMap<String, Vec<u64>> = HashMap::new();
        let mut taken = 0usize;
        let mut more = false;
        for (name, u) in &self.users {
            let mut seqs = Vec::new();
            for (&seq, _) in u.cache.iter().take_while(|(_, c)| all || c.at <= due) {
                if taken == max {
                    more = true;
                    break;
                }
                seqs.push(seq);
                taken += 1;
            }
            if !seqs.is_empty() {
                by_user.insert(name.clone(), seqs);
            }
            if more {
                break;
            }
        }
        if !more && self.cache_bytes > self.cache_cfg.budget_bytes {
            // Memory pressure: the oldest of the rest go too, down to three
            // quarters of the budget.
            let target = self.cache_bytes - self.cache_cfg.budget_bytes * 3 / 4;
            let mut rest: Vec<(Instant, &str, u64, u64)> = self
                .users
                .iter()
                .flat_map(|(n, u)| {
                    u.cache
                        .iter()
                        .skip_while(|(_, c)| all || c.at <= due)
                        .map(move |(s, c)| (c.at, n.as_str(), *s, c.size))
                })
                .collect();
            rest.sort_unstable_by_key(|r| r.0);
            let mut freed = 0;
            for (_, name, seq, size) in rest {
                if freed >= target {
                    break;
                }
                if taken == max {
                    more = true;
                    break;
                }
                freed += size;
                taken += 1;
                by_user.entry(name.to_owned()).or_default().push(seq);
            }
        }
        if !more {
            // The round's last slice: every counter the engine lacks too.
            for (name, u) in &self.users {
                if u.seq_dirty {
                    by_user.entry(name.clone()).or_default();
                }
            }
        }
        let mut batch = Vec::with_capacity(by_user.len());
        let mut incomplete = false;
        for (name, seqs) in by_user {
            let Some(u) = self.users.get_mut(&name) else {
                continue;
            };
            // The engine's part of the mailbox stays exact while the slice
            // is in flight (its items are still counted in memory), so
            // appends meanwhile never read a half-written engine.
            if let Err(e) = u.engine_size(&*storage, &name) {
                tracing::error!(error = %e, "cannot read a mailbox size; its write-back waits");
                incomplete = true;
                continue;
            }
            let items: Vec<(u64, Envelope)> = seqs
                .iter()
                .filter_map(|seq| Some((*seq, u.cache.get(seq)?.envelope.clone())))
                .collect();
            let last_seq = (!more && u.seq_dirty).then_some(u.last_seq);
            if items.is_empty() && last_seq.is_none() {
                continue;
            }
            let mut sent: Vec<u64> = items.iter().map(|i| i.0).collect();
            sent.sort_unstable();
            u.flight = Some(Flight {
                sent,
                doomed: BTreeMap::new(),
                last_seq,
            });
            batch.push(UserBatch {
                user: name,
                items,
                last_seq,
            });
        }
        more &= !batch.is_empty();
        if more {
            return Slice {
                batch,
                oldest: None,
                more,
                incomplete,
            };
        }
        let mut idle = Vec::new();
        let mut oldest: Option<Instant> = None;
        for (name, u) in &self.users {
            if let Some(c) = u
                .cache
                .iter()
                .find_map(|(seq, c)| (!u.writing(*seq)).then_some(c))
            {
                oldest = Some(oldest.map_or(c.at, |o| o.min(c.at)));
            }
            if u.idle() {
                idle.push(name.clone());
            }
        }
        for name in idle {
            self.users.remove(&name);
        }
        self.prune_recent();
        Slice {
            batch,
            oldest,
            more,
            incomplete,
        }
    }

    /// The write-back task wrote the slice in flight, with these outcomes:
    /// written items leave memory (to be settled in the journal once the
    /// engine is flushed), and what was deleted meanwhile is deleted from the
    /// engine now.
    fn written_back(&mut self, outcomes: Vec<Outcome>) {
        let storage = Arc::clone(&self.storage);
        for o in outcomes {
            let Some(u) = self.users.get_mut(&o.user) else {
                // (Users in flight are never idle, so never evicted.)
                tracing::error!("a written-back user is not loaded");
                continue;
            };
            let Some(flight) = u.flight.take() else {
                continue;
            };
            let (mut items, mut bytes) = (0, 0);
            // (Items that failed stay in memory; items deleted meanwhile are
            // gone already, and doomed.)
            let written = if o.items { &flight.sent[..] } else { &[] };
            for seq in written {
                let Some(c) = u.cache.remove(seq) else {
                    continue;
                };
                items += 1;
                bytes += c.size;
                u.cache_bytes -= c.size;
                self.cache_bytes -= c.size;
                Metrics::sub(&self.metrics.cache_items, 1);
                Metrics::sub(&self.metrics.cache_bytes, c.size);
                Metrics::add(&self.metrics.written_back, 1);
                *self.written.entry(c.segment).or_default() += 1;
            }
            if o.items {
                u.wrote_to_engine(items, bytes);
            }
            if let Some(seq) = flight.last_seq
                && o.last_seq
            {
                // (Appends meanwhile raised it again.)
                u.seq_dirty = u.last_seq > seq;
            }
            let (mut delivered, mut expired, mut written) = (Vec::new(), Vec::new(), Vec::new());
            for (seq, why) in flight.doomed {
                match why {
                    Gone::Delivered => delivered.push(seq),
                    Gone::Expired => expired.push(seq),
                    // (Only in the engine if the slice's write went in.)
                    Gone::Written if o.items => written.push(seq),
                    Gone::Written => {}
                }
            }
            let counted = [
                (delivered, Some(&self.metrics.delivered_from_engine)),
                (expired, Some(&self.metrics.expired)),
                (written, None),
            ];
            for (seqs, metric) in counted {
                if seqs.is_empty() {
                    continue;
                }
                u.engine = None;
                let n = match storage.delete(&o.user, &seqs) {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::error!(error = %e, "delete failed; the items will be delivered again");
                        0
                    }
                };
                if let Some(m) = metric {
                    Metrics::add(m, n);
                }
            }
            // Sessions may now read on into what was written.
            u.fill_sessions(&*storage, &o.user, &[]);
            self.evict_if_idle(&o.user);
        }
    }

    fn watch(&mut self, link: LinkTx, session: u64, target: String, watch: bool) {
        let u = match self.load(&target) {
            Ok(u) => u,
            Err(e) => {
                tracing::error!(error = %e, "cannot load a user for presence");
                return;
            }
        };
        u.watchers
            .retain(|w| !(w.link.id == link.id && w.session == session));
        if watch {
            link.send(link_down::Kind::Presence(PresenceDown {
                session,
                user: target.clone(),
                online: !u.sessions.is_empty(),
                last_seen_ms: u.last_seen.unwrap_or(0),
            }));
            u.watchers.push(Watcher { link, session });
        }
        self.evict_if_idle(&target);
    }

    /// Closes, with `WRONG_HOME`, the sessions of users `owned` says this
    /// node no longer serves.
    fn rehome(&mut self, owned: &crate::ownership::Owned) {
        let storage = Arc::clone(&self.storage);
        let mut idle = Vec::new();
        for (name, u) in self.users.iter_mut() {
            if u.sessions.is_empty() || owned.owns(name) {
                continue;
            }
            for s in u.sessions.drain(..) {
                s.link.send(link_down::Kind::Kick(Kick {
                    session: s.id,
                    code: Code::WrongHome as u32,
                }));
            }
            went_offline(&*storage, u, name);
            if u.idle() {
                idle.push(name.clone());
            }
        }
        for name in idle {
            self.users.remove(&name);
        }
    }

    /// Every item of `user`'s mailbox, memory and engine merged in order
    /// (items deleted while a write-back slice is in flight left out).
    fn export(&mut self, user: &str) -> Vec<Item> {
        let storage = Arc::clone(&self.storage);
        let Ok(u) = self.load(user) else {
            return Vec::new();
        };
        let mut items = match storage.read(user, 1, usize::MAX) {
            Ok(items) => items,
            Err(e) => {
                tracing::error!(error = %e, "cannot read a mailbox to hand it over");
                Vec::new()
            }
        };
        if let Some(f) = &u.flight {
            items.retain(|i| !f.doomed.contains_key(&i.seq));
        }
        items.extend(u.cache.iter().map(|(&seq, c)| Item {
            seq,
            envelope: c.envelope.clone(),
        }));
        items.sort_by_key(|i| i.seq);
        items.dedup_by_key(|i| i.seq);
        self.evict_if_idle(user);
        items
    }

    /// Pushes on to every session of `link` (it has budget again).
    fn refill_link(&mut self, link: LinkId) {
        let storage = Arc::clone(&self.storage);
        for (name, u) in self.users.iter_mut() {
            if u.sessions.iter().any(|s| s.link.id == link) {
                u.fill_sessions(&*storage, name, &[]);
            }
        }
    }

    fn link_gone(&mut self, link: LinkId) {
        let storage = Arc::clone(&self.storage);
        let mut idle = Vec::new();
        for (name, u) in self.users.iter_mut() {
            let before = u.sessions.len();
            u.sessions.retain(|s| s.link.id != link);
            u.watchers.retain(|w| w.link.id != link);
            if before > 0 && u.sessions.is_empty() {
                went_offline(&*storage, u, name);
            }
            if u.idle() {
                idle.push(name.clone());
            }
        }
        for name in idle {
            self.users.remove(&name);
        }
    }
}

/// What [`fill`] reads of a user's mailbox.
struct Mailbox<'a> {
    /// Highest sequence number known durable: pushes stop there.
    durable: u64,
    cache: &'a SeqMap<Cached>,
    /// The engine holds none of the mailbox: read memory only.
    engine_empty: bool,
    /// Deleted while a write-back slice is in flight (see [`Flight`]).
    doomed: Option<&'a BTreeMap<u64, Gone>>,
    /// Acknowledged, waiting for their receipts (see `User::acked`).
    acked: &'a BTreeSet<u64>,
}

/// Pushes `s` the durable items it has not had, up to its window, merging
/// the engine's items with the cache's in sequence order.
fn fill(storage: &dyn Storage, user: &str, m: &Mailbox<'_>, s: &mut Session) {
    let Mailbox {
        durable,
        cache,
        engine_empty,
        doomed,
        acked,
    } = *m;
    while s.inflight.len() < PUSH_WINDOW && s.cursor <= durable {
        // (No budget left on the link: an ack on it wakes the link's
        // refill, which comes back here.)
        let room = (PUSH_WINDOW - s.inflight.len()).min(s.link.push_room());
        if room == 0 {
            return;
        }
        // (A mailbox the engine holds nothing of is read from memory only.)
        // Items deleted while a write-back slice was in flight may still be
        // in the engine: read that many more and leave them out, so that
        // `room` of the rest are still among those read.
        let extra = doomed.map_or(0, BTreeMap::len) + acked.len();
        let read = if engine_empty {
            Ok(Vec::new())
        } else {
            storage.read(user, s.cursor, room + extra)
        };
        let stored = match read {
            Ok(mut items) => {
                if let Some(d) = doomed {
                    items.retain(|i| !d.contains_key(&i.seq));
                }
                items.retain(|i| !acked.contains(&i.seq));
                items.truncate(room);
                items
            }
            Err(e) => {
                tracing::error!(error = %e, "mailbox read failed; closing the session");
                s.link.send(link_down::Kind::Kick(Kick {
                    session: s.id,
                    code: Code::Internal as u32,
                }));
                s.cursor = u64::MAX;
                return;
            }
        };
        // Both sources are read from the cursor, `room` items each: the first
        // `room` of their union in order are the next items, whatever the mix.
        let cached = cache
            .range(s.cursor..)
            .filter(|(seq, _)| !acked.contains(seq))
            .take(room)
            .map(|(&seq, c)| Item {
                seq,
                envelope: c.envelope.clone(),
            });
        let mut merged: Vec<Item> = stored.into_iter().chain(cached).collect();
        if merged.is_empty() {
            // Nothing stored from the cursor on: later items are above `durable`.
            s.cursor = durable + 1;
            return;
        }
        merged.sort_by_key(|i| i.seq);
        // (An item of a write-back slice in flight is in memory and maybe
        // already in the engine: once is enough.)
        merged.dedup_by_key(|i| i.seq);
        for item in merged.into_iter().take(room) {
            if item.seq > durable {
                return;
            }
            s.cursor = item.seq + 1;
            s.inflight.insert(item.seq);
            s.link.pushed();
            s.link.send(link_down::Kind::Push(Push {
                session: s.id,
                seq: item.seq,
                envelope: Some(item.envelope),
            }));
        }
    }
}

fn went_offline(storage: &dyn Storage, u: &mut User, user: &str) {
    let now = common::fsutil::now_ms();
    u.last_seen = Some(now);
    if let Err(e) = storage.set_last_seen(user, now) {
        tracing::warn!(error = %e, "cannot record last seen");
    }
    notify_presence(u, user, false);
}

fn notify_presence(u: &User, user: &str, online: bool) {
    for w in &u.watchers {
        w.link.send(link_down::Kind::Presence(PresenceDown {
            session: w.session,
            user: user.to_owned(),
            online,
            last_seen_ms: u.last_seen.unwrap_or(0),
        }));
    }
}
