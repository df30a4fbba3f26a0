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
//! The shard is a state machine ([`shard`]): it takes an operation and the
//! time and leaves effects (answers, pushes, kicks, presence, typing); the
//! cell (`cell.rs`), which hands the shard from thread to thread, is the one
//! dispatcher that carries them out.
//!
//! An operation that panics poisons its shard and raises [`Fatal`]: the
//! store stops serving, the other shards answer what is already durable,
//! and the process exits with an error so that the supervisor restarts it
//! and the journal is replayed. The poisoned shard's memory (maybe half
//! changed) never goes to the engine, and no journal segment is released
//! after the panic.

mod cell;
#[cfg(test)]
mod dispatch_tests;
#[cfg(test)]
mod hand_off_tests;
mod link_tx;
#[cfg(test)]
mod model_tests;
pub mod operator;
mod recent;
mod seqmap;
mod shard;
mod sweep;
mod write_back;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::proto::Envelope;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

pub use shard::SetPushBy;

use crate::flusher::Commit;
use crate::journal::Journal;
use crate::metrics::Metrics;
use crate::storage::Storage;

pub use cell::Fatal;
#[cfg(test)]
use cell::SHARD_QUEUE;
use cell::{ShardCell, settle_loop};
pub use link_tx::{LINK_PUSH_BUDGET, LinkId, LinkTx};
pub use sweep::{SweepRequests, dir_bytes, expire_before, expire_dedupe_before, sweep};
#[cfg(test)]
use write_back::WRITING_BACK;
pub use write_back::{
    Outcome, RoundReport, Slice, UserBatch, WRITE_BACK_SLICE, write_back, write_back_once,
    write_slice,
};

/// One operation on a user, from a link.
pub enum Op {
    Append {
        link: LinkTx,
        req: u64,
        to: String,
        envelope: Envelope,
        /// Check the sender's device against its revocation first: the
        /// generation of its credential (set when this node serves the
        /// sender and an edge sent the append).
        sender_generation: Option<u32>,
    },
    /// A member's read receipt of group messages, for `to` (their sender):
    /// checked like an append, then aggregated with the other members'
    /// by the courier and appended as one item, answered once that is
    /// stored (docs/PROTOCOL.md "Group receipts").
    Gather {
        link: LinkTx,
        req: u64,
        to: String,
        envelope: Envelope,
        sender_generation: Option<u32>,
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
        /// The user of `session`.
        watcher: String,
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
    /// Answer whether (`user`, `device`) is still accepted at `generation`
    /// (a read of its revocation; nothing is written).
    CheckDevice {
        link: LinkTx,
        req: u64,
        user: String,
        device: u32,
        generation: u32,
    },
    /// Set or clear the push endpoint of (`user`, `device`) (`shard::wake`).
    SetPush {
        by: shard::SetPushBy,
        user: String,
        device: u32,
        endpoint: Option<common::link::PushEndpoint>,
    },
    /// Whether `device` of `user` is owed a push (`shard::wake`): false
    /// from the push sender once its push is sent or given up, true from
    /// the dispatcher when the queue still holds one (`Effect::Unowed`).
    PushOwed {
        user: String,
        device: u32,
        owed: bool,
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
    /// The courier's queue refused the delivered receipt of `user`'s items
    /// `seqs` (`shard::Effect::Receipt`): they no longer wait for it.
    /// Applied by the dispatcher right after the effect, before any other
    /// operation.
    ReceiptRefused { user: String, seqs: Vec<u64> },
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
    /// An operator's request about `key` (a user, or a phone number), on
    /// its shard (`wactl user`, `wactl trace`; [`operator`]).
    Operator {
        key: String,
        action: operator::Action,
        reply: oneshot::Sender<operator::Answer>,
    },
    /// Tests: the in-memory dedupe window of `user`'s shard ends now, as it
    /// does after `recent::WINDOW`, so later duplicates are found in the
    /// engine or not at all.
    #[cfg(test)]
    ForgetRecent { user: String },
}

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
            Op::Append { to, .. } | Op::Gather { to, .. } => Some(to),
            Op::Attach { user, .. }
            | Op::Detach { user, .. }
            | Op::Ack { user, .. }
            | Op::ReceiptStored { user, .. }
            | Op::ReceiptRefused { user, .. }
            | Op::Export { user, .. }
            | Op::HandedOff { user, .. } => Some(user),
            Op::Typing { to, .. } => Some(to),
            Op::Watch { target, .. } => Some(target),
            Op::Expire { user, .. } => Some(user),
            // An account record lives on the shard of its user, so a read
            // can tell whether that user is online.
            Op::Kv { key, .. } => Some(key),
            Op::Revoke { user, .. } | Op::CheckDevice { user, .. } => Some(user),
            Op::Operator { key, .. } => Some(key),
            Op::SetPush { user, .. } | Op::PushOwed { user, .. } => Some(user),
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

/// A [`Home`] that may be gone ([`Home::downgrade`]).
#[derive(Clone, Default)]
pub struct WeakHome(std::sync::Weak<HomeInner>);

impl WeakHome {
    pub fn upgrade(&self) -> Option<Home> {
        self.0.upgrade().map(Home)
    }
}

/// The shards closed: the store is shutting down.
#[derive(Debug, thiserror::Error)]
#[error("the home is shutting down")]
pub struct HomeClosed;

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
        pusher: Option<crate::push::Pusher>,
    ) -> (Home, Vec<tokio::task::JoinHandle<()>>) {
        let n = n.max(1);
        let per_shard = CacheConfig {
            budget_bytes: cache.budget_bytes / n as u64,
            ..cache
        };
        let shards: Arc<[ShardCell]> = (0..n)
            .map(|index| ShardCell {
                state: Mutex::new({
                    let mut s = shard::Shard::new(
                        Arc::clone(&storage),
                        Arc::clone(&journal) as Arc<dyn shard::Log>,
                        Arc::clone(&commit),
                        limits,
                        per_shard,
                        Arc::clone(&metrics),
                        outbox.is_some(),
                    );
                    s.set_wake_idle_after(pusher.as_ref().and_then(|p| p.wake_idle_after()));
                    s
                }),
                outbox: outbox.clone(),
                pusher: pusher.clone(),
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

    /// A handle that does not keep the shards open (the admin API's).
    pub fn downgrade(&self) -> WeakHome {
        WeakHome(Arc::downgrade(&self.0))
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
}
