//! The sending side of a link, as the shards see it: frames for one edge
//! (or for the courier), in two classes, and the link's push budget.
//!
//! Control frames (answers, kicks, presence, typing) and bulk frames
//! (pushes) go to two bounded queues that the link's writer drains control
//! first, so an answer never waits behind a mailbox. Sends never wait: a
//! full queue means an edge that stopped reading, and the link is cut (the
//! edge reconnects and its sessions start afresh) rather than stalling a
//! shard. Pushes never fill their queue: besides each session's window,
//! the sessions of one link have at most [`LINK_PUSH_BUDGET`] pushes
//! unacknowledged. A session that finds the budget spent stops pushing and
//! marks the link starved; the ack that gives budget back wakes the link's
//! refill task (`crate::listener`), which has every shard push on
//! (`Op::Refill`). So a reconnect storm (thousands of sessions attaching to
//! full mailboxes at once) slows pushes down instead of cutting every link.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::link::{LinkDown, link_down};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

/// Identifies one link (one edge connection) for the life of the process.
pub type LinkId = u64;

/// Unacknowledged pushes on one link, all its sessions together: a quarter
/// of a link's queue, so that the shards' concurrent pushes (each checks
/// the budget, then pushes up to a window) never fill it.
pub const LINK_PUSH_BUDGET: usize = 16 * 1024;

struct Inner {
    control: mpsc::Sender<LinkDown>,
    /// `None`: pushes go with the control frames (the courier's link).
    bulk: Option<mpsc::Sender<LinkDown>>,
    dead: CancellationToken,
    /// Pushes sent and not yet acknowledged (or given up with their session).
    pushes: AtomicUsize,
    /// A session wanted to push and found the budget spent.
    starved: AtomicBool,
    refill: Notify,
}

/// A link's sending side; clones share it.
#[derive(Clone)]
pub struct LinkTx {
    pub id: LinkId,
    /// (Shared: every operation carries a clone, and cloning the senders and
    /// the token themselves costs atomics and a lock per append.)
    inner: Arc<Inner>,
}

impl LinkTx {
    /// A link whose frames all go to `tx`.
    pub fn new(id: LinkId, tx: mpsc::Sender<LinkDown>, dead: CancellationToken) -> LinkTx {
        LinkTx::build(id, tx, None, dead)
    }

    /// A link with its pushes in a queue of their own.
    pub fn with_bulk(
        id: LinkId,
        control: mpsc::Sender<LinkDown>,
        bulk: mpsc::Sender<LinkDown>,
        dead: CancellationToken,
    ) -> LinkTx {
        LinkTx::build(id, control, Some(bulk), dead)
    }

    fn build(
        id: LinkId,
        control: mpsc::Sender<LinkDown>,
        bulk: Option<mpsc::Sender<LinkDown>>,
        dead: CancellationToken,
    ) -> LinkTx {
        LinkTx {
            id,
            inner: Arc::new(Inner {
                control,
                bulk,
                dead,
                pushes: AtomicUsize::new(0),
                starved: AtomicBool::new(false),
                refill: Notify::new(),
            }),
        }
    }

    pub fn send(&self, kind: link_down::Kind) {
        let i = &*self.inner;
        let queue = match (&kind, &i.bulk) {
            (link_down::Kind::Push(_), Some(bulk)) => bulk,
            _ => &i.control,
        };
        if queue.try_send(LinkDown { kind: Some(kind) }).is_err() && !i.dead.is_cancelled() {
            tracing::warn!(
                link = self.id,
                "link queue full or closed; cutting the link"
            );
            i.dead.cancel();
        }
    }

    /// How many more pushes the link's budget allows now; none marks the
    /// link starved, to be woken when acks give budget back.
    pub fn push_room(&self) -> usize {
        let room = LINK_PUSH_BUDGET.saturating_sub(self.inner.pushes.load(Ordering::Acquire));
        if room == 0 {
            self.inner.starved.store(true, Ordering::SeqCst);
        }
        room
    }

    /// One push went out.
    pub fn pushed(&self) {
        self.inner.pushes.fetch_add(1, Ordering::AcqRel);
    }

    /// `n` pushes were acknowledged (or their session ended): budget back,
    /// and the refill task woken if a session is waiting for it.
    pub fn released(&self, n: usize) {
        if n == 0 {
            return;
        }
        self.inner.pushes.fetch_sub(n, Ordering::AcqRel);
        if self.inner.starved.swap(false, Ordering::SeqCst) {
            self.inner.refill.notify_one();
        }
    }

    /// Pushes unacknowledged on this link.
    pub fn pushes(&self) -> usize {
        self.inner.pushes.load(Ordering::Relaxed)
    }

    /// Resolves when a session starved of budget may push again.
    pub async fn starved_sessions_may_push(&self) {
        self.inner.refill.notified().await;
    }
}
