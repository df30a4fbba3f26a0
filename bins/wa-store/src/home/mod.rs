//! The home: per-user state for every user this node is home to.
//!
//! Users are spread over a fixed number of shards by a hash of the user id.
//! A shard is a synchronous state machine behind its own mutex: the task
//! that brings an operation (a link reader, the write-back task, the
//! sweeper) queues it on the shard and applies the queue in place, under the
//! lock (never held across an await), or leaves it to the thread already
//! doing so ([`ShardCell`]). One operation at a time per shard, in queue
//! order, so every operation on one user happens in order; that is what
//! gives FIFO per (sender, recipient): a link reader queues one edge's
//! appends in the order they came. (Shards were tasks fed by channels until 2026-12: a channel send,
//! a task wake-up and a poll per append cost about as much CPU as the append
//! itself; docs/BENCHMARKS.md.)
//!
//! An append is journaled and kept in the user's write-back cache
//! ([`shard`]), then waits in the shard's `pending` queue for the group
//! commit (`crate::flusher`, which syncs the journal) to cover its ticket.
//! One settler task ([`settle_loop`]) wakes once per flush and, shard by
//! shard, answers what it covered. Only then is an append answered
//! (`AppendResult`) and pushed to the recipient's
//! sessions: nothing is ever shown to a recipient that the sender has not had
//! (or is not about to have) acknowledged, so a sender never sees a delivered
//! receipt before its own `Accepted`.
//!
//! Pushes are flow controlled per session: at most `PUSH_WINDOW` items are
//! in flight; acks open the window and the shard reads on.
//!
//! Two background tasks work through the shards: [`write_back`] (items that
//! lingered go to the engine; journal segments are released) and [`sweep`]
//! (expiry, mailbox size report).
//!
//! An operation that panics poisons its shard and raises [`Fatal`]: the
//! store stops serving, the other shards answer what is already durable,
//! and the process exits with an error so that the supervisor restarts it
//! and the journal is replayed. The poisoned shard's memory (maybe half
//! changed) never goes to the engine, and no journal segment is released
//! after the panic.

#[cfg(test)]
mod hand_off_tests;
mod link_tx;
#[cfg(test)]
mod model_tests;
mod recent;
mod seqmap;
mod shard;

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering, fence};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, TryLockError};
use std::time::{Duration, Instant};

use common::proto::Envelope;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::flusher::{Commit, Settled};
use crate::journal::Journal;
use crate::metrics::Metrics;
use crate::storage::Storage;

pub use link_tx::{LINK_PUSH_BUDGET, LinkId, LinkTx};

/// One operation on a user, from a link.
pub enum Op {
    Append {
        link: LinkTx,
        req: u64,
        to: String,
        envelope: Envelope,
    },
    Attach {
        link: LinkTx,
        session: u64,
        user: String,
        device: u32,
        generation: u32,
    },
    Detach {
        link: LinkId,
        session: u64,
        user: String,
    },
    Ack {
        link: LinkId,
        session: u64,
        user: String,
        seqs: Vec<u64>,
    },
    Typing {
        from: String,
        to: String,
        typing: bool,
    },
    Watch {
        link: LinkTx,
        session: u64,
        target: String,
        watch: bool,
    },
    /// Read or compare-and-set a key-value record (on the shard of `key`).
    Kv {
        link: LinkTx,
        req: u64,
        space: common::link::KvSpace,
        key: String,
        /// `None`: read; `Some((value, expected_version))`: compare-and-set.
        put: Option<(bytes::Bytes, u64)>,
    },
    /// Raise the lowest accepted generation of (`user`, `device`) and close
    /// the sessions below it.
    Revoke {
        link: LinkTx,
        req: u64,
        user: String,
        device: u32,
        generation: u32,
    },
    /// Every item of `user`'s mailbox (memory and engine, in order), for a
    /// hand-off of its fragment to another island.
    Export {
        user: String,
        reply: oneshot::Sender<Vec<crate::storage::Item>>,
    },
    /// These items are at their new home: delete them here.
    HandedOff { user: String, seqs: Vec<u64> },
    /// The users this shard holds items of in memory.
    Cached { reply: oneshot::Sender<Vec<String>> },
    /// The delivered receipt of `user`'s item `seq` is durable at its
    /// sender's home: delete the item.
    ReceiptStored { user: String, seq: u64 },
    /// A link ended: forget its sessions and presence watches (sent to every
    /// shard, after the link's last operation).
    LinkGone { link: LinkId },
    /// A link that ran out of push budget has room again: push on to its
    /// sessions (sent to every shard).
    Refill { link: LinkId },
    /// The cluster map changed: close the sessions of users this node no
    /// longer serves with `WRONG_HOME`, so their edges attach them at their
    /// new home (sent to every shard).
    Rehome { owned: Arc<crate::ownership::Owned> },
    /// These items are past their age: delete them.
    Expire { user: String, seqs: Vec<u64> },
    /// Hand over at most `max` of the cached items appended before `due`
    /// (every one with `all`; over the memory budget, the oldest others
    /// too), for the write-back task to write to the engine; on the shard's
    /// last slice of a round, with the sequence counters the engine has not
    /// seen (sent to every shard, again while it reports `more`). The items stay in memory, marked in flight,
    /// until [`Op::WrittenBack`]; meanwhile the shard goes on with its other
    /// operations, so a slow engine slows write-back, not appends.
    WriteBack {
        due: Instant,
        all: bool,
        max: usize,
        reply: oneshot::Sender<Slice>,
    },
    /// The engine writes of the shard's last slice are done, with these
    /// outcomes (one per user of the slice, in its order): drop what was
    /// written from memory and report it, by journal segment, to settle once
    /// the engine is flushed.
    WrittenBack {
        outcomes: Vec<Outcome>,
        reply: oneshot::Sender<HashMap<u64, u64>>,
    },
    /// Tests: the in-memory dedupe window of `user`'s shard ends now, as it
    /// does after `recent::WINDOW`, so later duplicates are found in the
    /// engine or not at all.
    #[cfg(test)]
    ForgetRecent { user: String },
}

/// One user's part of a write-back slice: its items to write (with their
/// dedupe entries) and then, if set, its sequence counter.
#[derive(Debug)]
pub struct UserBatch {
    pub user: String,
    pub items: Vec<(u64, Envelope)>,
    pub last_seq: Option<u64>,
}

/// What a shard hands the write-back task for one slice.
#[derive(Debug, Default)]
pub struct Slice {
    pub batch: Vec<UserBatch>,
    /// On the shard's last slice: when its oldest item not in this slice
    /// and still only in memory was appended.
    pub oldest: Option<Instant>,
    /// The shard stopped at `max` items: there is more to write this round.
    pub more: bool,
    /// A user due in this slice was left out (its mailbox size could not
    /// be read): the round must not count as covering the journal.
    pub incomplete: bool,
}

/// How the engine writes of one [`UserBatch`] went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub user: String,
    /// The items (if any) are in the engine.
    pub items: bool,
    /// The sequence counter (if any) is in the engine.
    pub last_seq: bool,
}

// Tests: set on the thread that writes a write-back slice, so that a test
// engine can hold those writes back and see what the shards do meanwhile.
#[cfg(test)]
thread_local! {
    pub static WRITING_BACK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Writes a slice to the engine (on a blocking thread: this is where a
/// slow engine waits). A user whose items fail keeps them in memory, and
/// its counter is not written either.
pub fn write_slice(storage: &dyn Storage, batch: &[UserBatch]) -> Vec<Outcome> {
    batch
        .iter()
        .map(|b| {
            let items = b.items.is_empty() || {
                let keyed: Vec<(u64, &Envelope, crate::storage::DedupeKey<'_>)> = b
                    .items
                    .iter()
                    .map(|(seq, e)| {
                        let key = crate::storage::DedupeKey {
                            to: &b.user,
                            from: &e.from,
                            kind: e.item_kind(),
                            id: &e.id,
                        };
                        (*seq, e, key)
                    })
                    .collect();
                match storage.append_batch(&b.user, &keyed) {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::error!(error = %e, items = keyed.len(), "write-back failed; the items stay in memory");
                        false
                    }
                }
            };
            let last_seq = match b.last_seq {
                Some(seq) if items => match storage.set_last_seq(&b.user, seq) {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot record a sequence counter");
                        false
                    }
                },
                Some(_) => false,
                None => true,
            };
            Outcome {
                user: b.user.clone(),
                items,
                last_seq,
            }
        })
        .collect()
}

/// What a shard wrote to the engine in a write-back round.
#[derive(Debug, Default)]
pub struct RoundReport {
    /// Items written, by journal segment.
    pub written: HashMap<u64, u64>,
    /// When the oldest item still only in memory was appended.
    pub oldest: Option<Instant>,
    /// The shard stopped at `max` items: there is more to write this round.
    pub more: bool,
    /// Something due was not written (an engine error, or a shard an
    /// operation panicked on): the engine may lack a sequence counter the
    /// journal's older segments hold, so they must stay.
    pub incomplete: bool,
}

/// Items a shard writes to the engine per write-back slice. A round is cut
/// into slices so that the appends queued behind it wait for one slice (a
/// few milliseconds of engine writes), never for a whole round.
pub const WRITE_BACK_SLICE: usize = 1000;

/// The write-back cache's settings.
#[derive(Debug, Clone, Copy)]
pub struct CacheConfig {
    /// An item still undelivered this long after its append is written to
    /// the engine.
    pub sync_delay: Duration,
    /// A mailbox holding this many cached items sends further appends
    /// straight to the engine.
    pub bypass_items: usize,
    /// Cache bytes one shard may hold; beyond, appends go straight to the
    /// engine and write-back writes the oldest items early.
    pub budget_bytes: u64,
    /// Items older than this are deleted undelivered (the sweeper does the
    /// engine; write-back rounds do the cache).
    pub expire_after: Duration,
    /// Items a shard writes per write-back slice ([`WRITE_BACK_SLICE`]).
    pub write_back_slice: usize,
}

/// Per-mailbox limits the home enforces on appends.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_items: u64,
    pub max_bytes: u64,
}

impl Op {
    fn user(&self) -> Option<&str> {
        match self {
            Op::Append { to, .. } => Some(to),
            Op::Attach { user, .. }
            | Op::Detach { user, .. }
            | Op::Ack { user, .. }
            | Op::ReceiptStored { user, .. }
            | Op::Export { user, .. }
            | Op::HandedOff { user, .. } => Some(user),
            Op::Typing { to, .. } => Some(to),
            Op::Watch { target, .. } => Some(target),
            Op::Expire { user, .. } => Some(user),
            // An account record lives on the shard of its user, so a read
            // can tell whether that user is online.
            Op::Kv { key, .. } => Some(key),
            Op::Revoke { user, .. } => Some(user),
            #[cfg(test)]
            Op::ForgetRecent { user } => Some(user),
            Op::LinkGone { .. }
            | Op::Cached { .. }
            | Op::Refill { .. }
            | Op::Rehome { .. }
            | Op::WriteBack { .. }
            | Op::WrittenBack { .. } => None,
        }
    }
}

/// The shards closed: the store is shutting down.
#[derive(Debug, thiserror::Error)]
#[error("the home is shutting down")]
pub struct HomeClosed;

/// Raised by the first operation that panics on a shard. That shard's state
/// may be half changed, so nothing more is done on it and the process must
/// stop: the journal holds everything the shard acknowledged, and the next
/// start replays it (`Store::serve` then returns
/// `StoreError::ShardPanicked`). Clones share it.
#[derive(Clone)]
pub struct Fatal(Arc<(CancellationToken, OnceLock<usize>)>);

impl Fatal {
    /// `stop` is cancelled when a shard panics.
    pub fn new(stop: CancellationToken) -> Fatal {
        Fatal(Arc::new((stop, OnceLock::new())))
    }

    /// The shard an operation first panicked on, if any did.
    pub fn shard(&self) -> Option<usize> {
        self.0.1.get().copied()
    }

    fn raise(&self, shard: usize) {
        let _ = self.0.1.set(shard);
        self.0.0.cancel();
    }
}

/// A handle on the shards; clones share them. The settler finishes (after
/// answering every pending append) once every handle is dropped.
#[derive(Clone)]
pub struct Home(Arc<HomeInner>);

struct HomeInner {
    shards: Arc<[ShardCell]>,
    write_back_slice: usize,
    /// Cancelled when the last handle goes: no operation can come any more.
    closed: CancellationToken,
}

impl Drop for HomeInner {
    fn drop(&mut self) {
        self.closed.cancel();
    }
}

/// Operations queued on one shard beyond which the thread bringing one
/// more waits for the shard instead of leaving it to the one applying them
/// (backpressure to the edges through TCP).
const SHARD_QUEUE: usize = 4096;

/// One shard: its state, and the operations queued for whichever thread
/// applies them next.
///
/// Nobody waits for a busy shard: a thread queues its operation and then
/// applies every queued operation itself, unless another thread is already
/// doing so (that one sees the new operation before it lets go). So a link
/// reader never blocks behind another thread (one the kernel may have
/// preempted while it held the shard), there is no task to wake per
/// operation, and one thread at a time works on the shard's users, in the
/// order their operations were queued. (`hand_off_tests` checks this
/// scheme under loom; a change here goes there too.)
struct ShardCell {
    state: Mutex<shard::Shard>,
    queue: Mutex<VecDeque<Op>>,
    /// A flush settled tickets: whoever holds the state answers them.
    settle: AtomicBool,
    /// This shard's number, for [`Fatal`].
    index: usize,
    fatal: Fatal,
}

impl ShardCell {
    fn queue(&self) -> MutexGuard<'_, VecDeque<Op>> {
        // (Pushes and takes only: a panic cannot leave it half changed.)
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `op` (if any) and applies the queue, unless another thread is
    /// applying it. `HomeClosed` if an operation once panicked on this shard
    /// (its state may be half changed, so nothing more is done on it; its
    /// pending answers are never sent, and their senders resend once the
    /// restarted store replayed the journal).
    fn run(&self, op: Option<Op>) -> Result<(), HomeClosed> {
        let queued = match op {
            Some(op) => {
                let mut q = self.queue();
                q.push_back(op);
                q.len()
            }
            None => 0,
        };
        // (This fence and the one below, after letting go of the state,
        // keep a thread from missing the queued operation while the other
        // misses the state's release: the two look crosswise, each at what
        // the other wrote, which acquire and release alone do not order.)
        fence(Ordering::SeqCst);
        // A panic stops here, not in the caller (a link reader, the settler,
        // write-back), whose other shards go on answering until the store
        // has stopped. (Unwind safe: the panic poisons the state's mutex, and
        // nothing reads a poisoned shard's state again.)
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.apply(queued))) {
            Ok(r) => r,
            Err(_) => {
                tracing::error!(shard = self.index, "an operation panicked on this shard");
                // The state is poisoned by now, so whoever queues later
                // finds it so; what is queued is dropped, which closes its
                // reply channels: no caller waits for an answer that cannot
                // come.
                self.queue().clear();
                self.fatal.raise(self.index);
                Err(HomeClosed)
            }
        }
    }

    /// `run`'s part after queueing: applies the queue unless another thread
    /// holds the state (`queued`: the queue's length after this thread's
    /// push, 0 if it pushed nothing).
    fn apply(&self, queued: usize) -> Result<(), HomeClosed> {
        loop {
            let state = match self.state.try_lock() {
                Ok(s) => Some(s),
                Err(TryLockError::WouldBlock) if queued <= SHARD_QUEUE => return Ok(()),
                Err(TryLockError::WouldBlock) => self.state.lock().ok(),
                Err(TryLockError::Poisoned(_)) => None,
            };
            let Some(mut state) = state else {
                self.queue().clear();
                return Err(HomeClosed);
            };
            loop {
                let mut applied = self.settle.swap(false, Ordering::SeqCst);
                // (One at a time, so the queue keeps its buffer: taking it
                // whole cost an allocation per operation. The queue's lock
                // goes with each statement, never held while applying.)
                loop {
                    let op = self.queue().pop_front();
                    let Some(op) = op else { break };
                    state.handle(op);
                    applied = true;
                }
                if !applied {
                    break;
                }
                // (Also answers what is already settled: a duplicate, or a
                // read whose writes a flush covered.)
                state.settle();
            }
            drop(state);
            fence(Ordering::SeqCst);
            // Something queued after the last look found the state taken,
            // and left it to this thread: look again.
            if self.queue().is_empty() && !self.settle.load(Ordering::SeqCst) {
                return Ok(());
            }
        }
    }
}

/// Has every shard answer whatever each flush settled; ends once the home
/// is closed and nothing waits any more. One wake-up per flush for the whole
/// home (rather than one per shard), and the answers of one flush reach the
/// link writers together, so each link writes them in one go.
async fn settle_loop(shards: Arc<[ShardCell]>, mut settled: Settled, closed: CancellationToken) {
    let mut closing = false;
    loop {
        for s in shards.iter() {
            s.settle.store(true, Ordering::SeqCst);
            let _ = s.run(None);
        }
        if closing
            && !shards
                .iter()
                .any(|s| s.state.lock().is_ok_and(|s| s.waiting()))
        {
            return;
        }
        tokio::select! {
            () = settled.changed() => {}
            () = closed.cancelled(), if !closing => closing = true,
        }
    }
}

impl Home {
    /// Starts `n` shards over `storage` and `journal` (the cache budget is
    /// split evenly between them) and the settler task, whose handle comes
    /// back: it ends once every `Home` is dropped and every pending answer
    /// is sent. A panic on a shard raises `fatal`.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        storage: Arc<dyn Storage>,
        journal: Arc<Journal>,
        commit: Arc<Commit>,
        limits: Limits,
        cache: CacheConfig,
        metrics: Arc<Metrics>,
        fatal: Fatal,
        n: usize,
        outbox: Option<crate::courier::Outbox>,
    ) -> (Home, Vec<tokio::task::JoinHandle<()>>) {
        let n = n.max(1);
        let per_shard = CacheConfig {
            budget_bytes: cache.budget_bytes / n as u64,
            ..cache
        };
        let shards: Arc<[ShardCell]> = (0..n)
            .map(|index| ShardCell {
                state: Mutex::new(shard::Shard::new(
                    Arc::clone(&storage),
                    Arc::clone(&journal),
                    Arc::clone(&commit),
                    limits,
                    per_shard,
                    Arc::clone(&metrics),
                    outbox.clone(),
                )),
                queue: Mutex::default(),
                settle: AtomicBool::new(false),
                index,
                fatal: fatal.clone(),
            })
            .collect();
        let closed = CancellationToken::new();
        let settler = tokio::spawn(settle_loop(
            Arc::clone(&shards),
            commit.settled(),
            closed.clone(),
        ));
        (
            Home(Arc::new(HomeInner {
                shards,
                write_back_slice: cache.write_back_slice.max(1),
                closed,
            })),
            vec![settler],
        )
    }

    /// An operation panicked on one of the shards.
    fn panicked(&self) -> bool {
        self.0.shards.iter().any(|s| s.state.is_poisoned())
    }

    fn shard_of(&self, user: &str) -> &ShardCell {
        let mut h = std::hash::DefaultHasher::new();
        user.hash(&mut h);
        let shards = &self.0.shards;
        &shards[(h.finish() % shards.len() as u64) as usize]
    }

    /// Applies `op` on its user's shard, or queues it for the thread that
    /// is applying that shard's operations. (Async for the callers' sake: it
    /// never waits, unless the shard has `SHARD_QUEUE` operations queued.)
    pub async fn submit(&self, op: Op) -> Result<(), HomeClosed> {
        match op.user() {
            Some(user) => self.shard_of(user).run(Some(op)),
            None => {
                // (Every shard hears it, even past a poisoned one.)
                let mut res = Ok(());
                for s in self.0.shards.iter() {
                    let each = match &op {
                        Op::LinkGone { link } => Op::LinkGone { link: *link },
                        Op::Refill { link } => Op::Refill { link: *link },
                        Op::Rehome { owned } => Op::Rehome {
                            owned: Arc::clone(owned),
                        },
                        _ => unreachable!(
                            "only LinkGone, Rehome and WriteBack have no user; WriteBack goes through write_back_round"
                        ),
                    };
                    if s.run(Some(each)).is_err() {
                        res = Err(HomeClosed);
                    }
                }
                res
            }
        }
    }

    /// The users any shard holds items of in memory.
    pub async fn cached_users(&self) -> Result<Vec<String>, HomeClosed> {
        let mut users = Vec::new();
        for s in self.0.shards.iter() {
            let (reply, rx) = oneshot::channel();
            s.run(Some(Op::Cached { reply }))?;
            users.extend(rx.await.map_err(|_| HomeClosed)?);
        }
        Ok(users)
    }

    /// Runs one write-back round on every shard and gathers their reports:
    /// slice by slice, each shard hands over its items, `storage` takes them
    /// on a blocking thread while the shards go on with their operations,
    /// and each shard then drops what was written.
    ///
    /// A shard an operation panicked on is left out (its state may be half
    /// changed, so none of it goes to the engine) and makes the round
    /// incomplete: the journal keeps its items for the next start to replay.
    pub async fn write_back_round(
        &self,
        storage: &Arc<dyn Storage>,
        due: Instant,
        all: bool,
    ) -> RoundReport {
        let mut total = RoundReport::default();
        // Shards still writing; each gets its next slice once the last one
        // is written and dropped.
        let shards = &self.0.shards;
        let mut busy: Vec<usize> = (0..shards.len()).collect();
        while !busy.is_empty() {
            let mut slices = Vec::with_capacity(busy.len());
            for &i in &busy {
                let (reply, rx) = oneshot::channel();
                let op = Op::WriteBack {
                    due,
                    all,
                    max: self.0.write_back_slice,
                    reply,
                };
                if shards[i].run(Some(op)).is_err() {
                    total.incomplete = true;
                    continue;
                }
                slices.push((i, rx));
            }
            busy.clear();
            for (i, rx) in slices {
                // (A reply channel closes unanswered only when the shard
                // panicked.)
                let Ok(slice) = rx.await else {
                    total.incomplete = true;
                    continue;
                };
                let st = Arc::clone(storage);
                let batch = slice.batch;
                let outcomes = if batch.is_empty() {
                    Vec::new()
                } else {
                    tokio::task::spawn_blocking(move || {
                        #[cfg(test)]
                        WRITING_BACK.set(true);
                        let outcomes = write_slice(&*st, &batch);
                        #[cfg(test)]
                        WRITING_BACK.set(false);
                        outcomes
                    })
                    .await
                    .expect("write-back does not panic")
                };
                let outcomes_wrote = outcomes.iter().any(|o| o.items);
                total.incomplete |=
                    slice.incomplete || outcomes.iter().any(|o| !(o.items && o.last_seq));
                let (reply, rx) = oneshot::channel();
                let dropped = match shards[i].run(Some(Op::WrittenBack { outcomes, reply })) {
                    Ok(()) => rx.await.ok(),
                    Err(HomeClosed) => None,
                };
                // (What a poisoned shard wrote is in the engine but counts
                // for nothing: its segments stay, and replay skips the
                // items as duplicates.)
                let Some(dropped) = dropped else {
                    total.incomplete = true;
                    continue;
                };
                for (seg, n) in dropped {
                    *total.written.entry(seg).or_default() += n;
                }
                // (A slice the engine refused entirely ends the shard's
                // round: the next round tries again.)
                if slice.more && outcomes_wrote {
                    busy.push(i);
                } else {
                    // A shard's oldest counts once it wrote all it had due.
                    total.oldest = match (total.oldest, slice.oldest) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                }
            }
        }
        total
    }
}

/// Deletes undelivered items older than `expire_after`, every `interval`,
/// until `stop`. Runs the scan off the async threads and hands deletions to
/// the shards, which own the mailboxes.
pub async fn sweep(
    storage: Arc<dyn Storage>,
    home: Home,
    expire_after: std::time::Duration,
    interval: std::time::Duration,
    report: (Arc<Metrics>, std::path::PathBuf),
    stop: CancellationToken,
) {
    let (metrics, engine_dir) = report;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let before = common::fsutil::now_ms().saturating_sub(expire_after.as_millis() as u64);
        match expire_before(&storage, &home, before, &stop).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(items = n, "expired undelivered items"),
            Err(HomeClosed) => return,
        }
        match expire_dedupe_before(&storage, before, &stop).await {
            Ok(0) => {}
            Ok(n) => {
                Metrics::add(&metrics.dedupe_expired, n);
                tracing::info!(entries = n, "dropped old dedupe entries");
            }
            Err(HomeClosed) => return,
        }
        let st = Arc::clone(&storage);
        let m = Arc::clone(&metrics);
        let dir = engine_dir.clone();
        let _ = tokio::task::spawn_blocking(move || report_sizes(&*st, &m, &dir)).await;
    }
}

/// How many of the largest mailboxes the metrics name.
const LARGEST: usize = 10;

/// Mailbox length histogram, the largest mailboxes and the engine's disk use,
/// into `metrics`.
fn report_sizes(storage: &dyn Storage, metrics: &Metrics, engine_dir: &std::path::Path) {
    use crate::metrics::{LENGTH_BUCKETS, MailboxReport};
    let mut r = MailboxReport::default();
    let mut largest: Vec<(String, u64, u64)> = Vec::new();
    let visited = storage.visit_sizes(&mut |user, size| {
        if size.items == 0 {
            return;
        }
        for (i, le) in LENGTH_BUCKETS.iter().enumerate() {
            if size.items <= *le {
                r.buckets[i] += 1;
            }
        }
        if largest.len() < LARGEST || largest.last().is_some_and(|l| l.1 < size.items) {
            largest.push((user.to_owned(), size.items, size.bytes));
            largest.sort_by_key(|l| std::cmp::Reverse(l.1));
            largest.truncate(LARGEST);
        }
    });
    if let Err(e) = visited {
        tracing::warn!(error = %e, "cannot read mailbox sizes");
        return;
    }
    r.largest = largest;
    *metrics.mailboxes.lock().unwrap_or_else(|p| p.into_inner()) = r;
    metrics
        .engine_disk_bytes
        .store(dir_bytes(engine_dir), std::sync::atomic::Ordering::Relaxed);
}

/// Bytes of the files under `dir`.
pub fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Drops the engine's dedupe entries of originals stored before
/// `before_ms`, a page at a time off the async threads; returns how many.
/// (A resend older than the expiry age is stored again: the client library
/// still removes the duplicate.) `Err` only if stopped.
pub async fn expire_dedupe_before(
    storage: &Arc<dyn Storage>,
    before_ms: u64,
    stop: &CancellationToken,
) -> Result<u64, HomeClosed> {
    const PAGE: usize = 4096;
    let mut after: Option<Vec<u8>> = None;
    let mut total = 0;
    loop {
        if stop.is_cancelled() {
            return Err(HomeClosed);
        }
        let st = Arc::clone(storage);
        let from = after.take();
        let page =
            tokio::task::spawn_blocking(move || st.expire_dedupe(before_ms, from.as_deref(), PAGE))
                .await
                .expect("dedupe expiry does not panic");
        match page {
            Ok(p) => {
                total += p.deleted;
                match p.next {
                    Some(n) => after = Some(n),
                    None => return Ok(total),
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "dedupe expiry failed");
                return Ok(total);
            }
        }
    }
}

/// Hands every engine item stored before `before_ms` to its shard for
/// deletion; returns how many were found.
pub async fn expire_before(
    storage: &Arc<dyn Storage>,
    home: &Home,
    before_ms: u64,
    stop: &CancellationToken,
) -> Result<usize, HomeClosed> {
    const PAGE: usize = 1024;
    let mut after = None;
    let mut total = 0usize;
    loop {
        let st = Arc::clone(storage);
        let from = after.clone();
        let page = tokio::task::spawn_blocking(move || st.expired(before_ms, from.as_ref(), PAGE))
            .await
            .expect("expiry scan does not panic");
        let page = match page {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "expiry scan failed");
                return Ok(total);
            }
        };
        let full = page.len() == PAGE;
        after = page.last().cloned();
        total += page.len();
        let mut by_user: HashMap<String, Vec<u64>> = HashMap::new();
        for e in page {
            by_user.entry(e.user).or_default().push(e.seq);
        }
        for (user, seqs) in by_user {
            if stop.is_cancelled() {
                return Err(HomeClosed);
            }
            home.submit(Op::Expire { user, seqs }).await?;
        }
        if !full {
            return Ok(total);
        }
    }
}

/// Most cache bytes the shutdown writes to the engine (more stays in the
/// journal for the next start to replay).
const FINAL_WRITE_BACK_MAX: u64 = 32 << 20;

/// The write-back task: every quarter of the sync delay, asks every shard to
/// write the items that lingered to the engine, flushes the engine, then
/// settles those items' journal segments and deletes the segments nothing
/// needs any more. On `stop` it runs one last round, which writes the whole
/// cache if it is small (see [`FINAL_WRITE_BACK_MAX`]).
pub async fn write_back(
    home: Home,
    storage: Arc<dyn Storage>,
    journal: Arc<Journal>,
    sync_delay: Duration,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval((sync_delay / 4).max(Duration::from_millis(20)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let last = tokio::select! {
            _ = tick.tick() => false,
            () = stop.cancelled() => true,
        };
        // At shutdown a small cache is written out so the next start replays
        // nothing; a large one is left to the journal, which already holds it,
        // so that stopping never outlasts the grace period.
        let dirty = metrics
            .cache_bytes
            .load(std::sync::atomic::Ordering::Relaxed);
        let all = last && dirty <= FINAL_WRITE_BACK_MAX;
        if last && !all {
            tracing::info!(
                bytes = dirty,
                "leaving the cache to the journal; the next start replays it"
            );
        }
        if all && let Err(e) = journal.seal() {
            tracing::error!(error = %e, "cannot seal the journal at shutdown");
        }
        write_back_once(&home, &storage, &journal, sync_delay, all, &metrics).await;
        if last {
            return;
        }
    }
}

/// One write-back round: items older than `sync_delay` (all with `all`) go
/// to the engine, the engine is flushed, journal segments settle and go.
pub async fn write_back_once(
    home: &Home,
    storage: &Arc<dyn Storage>,
    journal: &Arc<Journal>,
    sync_delay: Duration,
    all: bool,
    metrics: &Metrics,
) {
    let begun = journal.round_begin();
    let now = Instant::now();
    let due = now.checked_sub(sync_delay).unwrap_or(now);
    let report = home.write_back_round(storage, due, all).await;
    let st = Arc::clone(storage);
    let flushed = tokio::task::spawn_blocking(move || st.flush())
        .await
        .expect("engine flush does not panic");
    Metrics::add(&metrics.engine_flushes, 1);
    let lag = report
        .oldest
        .map_or(0, |o| now.saturating_duration_since(o).as_millis() as u64);
    metrics
        .oldest_dirty_ms
        .store(lag, std::sync::atomic::Ordering::Relaxed);
    match flushed {
        Ok(()) => {
            for (segment, n) in report.written {
                journal.settle(segment, n);
            }
            // (Older segments count as covered only if every counter and
            // item due made it; otherwise a later round covers them.)
            if !report.incomplete {
                journal.round_flushed(begun);
            }
            // Nothing goes once a shard panicked: the operation that
            // panicked may have counted items as settled before it stopped
            // halfway (a delete settles its items before it journals
            // itself), and the next start replays the journal anyway.
            if home.panicked() {
                return;
            }
            let j = Arc::clone(journal);
            let released = tokio::task::spawn_blocking(move || j.release())
                .await
                .expect("releasing journal segments does not panic");
            match released {
                Ok(n) if n > 0 => tracing::debug!(segments = n, "journal segments released"),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "cannot delete a journal segment"),
            }
        }
        // The items written stay counted in their segments, which are then
        // kept: the journal still covers them.
        Err(e) => tracing::error!(error = %e, "engine flush failed; journal segments kept"),
    }
}
