//! A shard's cell: its state behind a mutex, the operations queued for
//! whichever thread applies them next, the dispatcher that carries out the
//! effects the shard leaves (the only place a shard's frames are sent), the
//! settler that answers what each journal sync covered, and [`Fatal`],
//! raised when an operation panics.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering, fence};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, TryLockError};

use tokio_util::sync::CancellationToken;

use super::shard::{Now, Shard};
use super::{HomeClosed, Op};
use crate::flusher::Settled;

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

/// Operations queued on one shard beyond which the thread bringing one
/// more waits for the shard instead of leaving it to the one applying them
/// (backpressure to the edges through TCP).
pub(super) const SHARD_QUEUE: usize = 4096;

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
pub(super) struct ShardCell {
    pub(super) state: Mutex<Shard>,
    pub(super) queue: Mutex<VecDeque<Op>>,
    /// A flush settled tickets: whoever holds the state answers them.
    pub(super) settle: AtomicBool,
    /// This shard's number, for [`Fatal`].
    pub(super) index: usize,
    /// Where the dispatcher queues the shard's delivered receipts
    /// (`Effect::Receipt`) for the courier.
    pub(super) outbox: Option<crate::courier::Outbox>,
    /// Where the dispatcher hands pushes to wake offline devices
    /// (`Effect::Wake`, `Effect::Unwake`).
    pub(super) pusher: Option<crate::push::Pusher>,
    pub(super) fatal: Fatal,
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
    pub(super) fn run(&self, op: Option<Op>) -> Result<(), HomeClosed> {
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
                    state.handle(op, Now::read());
                    dispatch(&mut state, self.outbox.as_ref(), self.pusher.as_ref());
                    applied = true;
                }
                if !applied {
                    break;
                }
                // (Also answers what is already settled: a duplicate, or a
                // read whose writes a flush covered.)
                state.settle(Now::read());
                dispatch(&mut state, self.outbox.as_ref(), self.pusher.as_ref());
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

/// The shards' one dispatcher: carries out, in order, what the operation
/// (or settle) just applied decided ([`Shard::effects`]: frames and pushes
/// for links). Called by the thread holding the state, before it applies
/// anything else, so that each link gets its frames in the order the shard
/// decided them: a thread that dispatched after letting go of the state
/// could be overtaken by the next holder's frames (a push of a later item
/// before an earlier one, an answer after the next one), which would break
/// FIFO per (sender, recipient). Sends never wait (see `LinkTx::send`), so
/// this adds no wait under the state; and effects never outlive the
/// operation that made them, so a panic loses no more than it did.
///
/// A delivered receipt the courier's queue refuses is handed back to the
/// shard at once (`Op::ReceiptRefused`), before anything else is applied:
/// the queue's answer decides the item's fate as if the shard had queued
/// the receipt itself.
fn dispatch(
    state: &mut Shard,
    outbox: Option<&crate::courier::Outbox>,
    pusher: Option<&crate::push::Pusher>,
) {
    loop {
        let refused: Vec<Op> = state
            .effects()
            .filter_map(|effect| effect.dispatch(outbox, pusher))
            .collect();
        if refused.is_empty() {
            return;
        }
        for op in refused {
            state.handle(op, Now::read());
        }
    }
}

/// Has every shard answer whatever each flush settled; ends once the home
/// is closed and nothing waits any more. One wake-up per flush for the whole
/// home (rather than one per shard), and the answers of one flush reach the
/// link writers together, so each link writes them in one go.
pub(super) async fn settle_loop(
    shards: Arc<[ShardCell]>,
    mut settled: Settled,
    closed: CancellationToken,
) {
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
