//! Model check of the shard hand-off ([`super::ShardCell`]) under loom,
//! which runs every interleaving of the threads below (within a preemption
//! bound) and, for the settle flag, the values a weak memory model lets a
//! load see.
//!
//! `Cell::run` is `ShardCell::run` step for step, with the shard's state
//! reduced to what the scheme promises: the operations applied, in order,
//! and the last flush answered. A change to `ShardCell::run` belongs here
//! too. Checked after every interleaving:
//! - no operation is left queued, and every one was applied, in the order
//!   it was queued;
//! - every flush was answered by a settle that ran after it, and no settle
//!   request is left standing.
//!
//! Each of these changes to `run` makes the check fail: either fence
//! removed; the last look dropping its queue test or its settle test; the
//! last look taken before the state is released.
//!
//! The effects an operation leaves are carried out by the thread holding
//! the state, right after the operation (`cell::dispatch`): part of applying
//! it here, so the scheme is unchanged.
//!
//! Not modelled: the wait for the state past `SHARD_QUEUE` (a wait on the
//! lock word is a spin, which loom explores without end); once it has the
//! state, that thread does what the others do.

use std::collections::VecDeque;

use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering, fence};
use loom::sync::{Arc, Mutex};

use super::SHARD_QUEUE;

#[derive(Default)]
struct State {
    applied: Vec<u32>,
    /// Flushes whose tickets a settle answered.
    answered: usize,
}

#[derive(Default)]
struct Queue {
    ops: VecDeque<u32>,
    /// Every operation ever queued, in queue order.
    pushed: Vec<u32>,
}

struct Cell {
    /// The state's lock word, as std's futex mutex has it: `try_lock` a
    /// compare-exchange (acquire), unlock a release store. (A loom `Mutex`
    /// would hide the window this scheme is about: loom runs no other
    /// thread at a lock's release, so none would ever find the state taken
    /// after the holder's last look at the queue.)
    taken: AtomicBool,
    /// Touched only by the thread that set `taken` (checked).
    state: Mutex<State>,
    queue: Mutex<Queue>,
    settle: AtomicBool,
    /// Flushes done (the flusher's counter that `Shard::settle` reads).
    flushes: AtomicUsize,
}

impl Cell {
    fn new() -> Cell {
        Cell {
            taken: AtomicBool::new(false),
            state: Mutex::default(),
            queue: Mutex::default(),
            settle: AtomicBool::new(false),
            flushes: AtomicUsize::new(0),
        }
    }

    /// The state's `try_lock`.
    fn take(&self) -> bool {
        self.taken
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// `ShardCell::run` (and its `apply`), without the panic handling.
    fn run(&self, op: Option<u32>) {
        let queued = match op {
            Some(op) => {
                let mut q = self.queue.lock().unwrap();
                q.ops.push_back(op);
                q.pushed.push(op);
                q.ops.len()
            }
            None => 0,
        };
        fence(Ordering::SeqCst);
        loop {
            if !self.take() {
                // (Past `SHARD_QUEUE` the real code waits for the state and
                // then goes on as here. Not modelled: a wait on the lock
                // word is a spin, which loom explores without end.)
                assert!(queued <= SHARD_QUEUE, "the model never fills the queue");
                return;
            }
            let mut state = self
                .state
                .try_lock()
                .expect("the state is touched only by the thread that took it");
            loop {
                // (`swap(false)` in `ShardCell::run`; a compare-exchange
                // here, which changes the flag the same way, because loom
                // 0.7 lets a swap that races a store produce histories no
                // machine can (tokio-rs/loom#254). A failed exchange is
                // only a load, which may see an older value than a swap
                // would: the model lets more happen, not less.)
                let mut applied = self
                    .settle
                    .compare_exchange(true, false, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok();
                loop {
                    let op = self.queue.lock().unwrap().ops.pop_front();
                    let Some(op) = op else { break };
                    state.applied.push(op);
                    applied = true;
                }
                if !applied {
                    break;
                }
                // (Answers are never taken back: a settle answers every
                // ticket up to the flush it reads.)
                let flushed = self.flushes.load(Ordering::SeqCst);
                state.answered = state.answered.max(flushed);
            }
            drop(state);
            self.taken.store(false, Ordering::Release);
            fence(Ordering::SeqCst);
            if self.queue.lock().unwrap().ops.is_empty() && !self.settle.load(Ordering::SeqCst) {
                return;
            }
        }
    }

    /// A flush, then the settler's turn on this shard (`settle_loop`).
    fn flushed(&self) {
        self.flushes.fetch_add(1, Ordering::SeqCst);
        self.settle.store(true, Ordering::SeqCst);
        self.run(None);
    }

    fn check(&self) {
        let q = self.queue.lock().unwrap();
        let s = self.state.lock().unwrap();
        assert!(q.ops.is_empty(), "operations left queued: {:?}", q.ops);
        assert_eq!(s.applied, q.pushed, "applied, against queue order");
        assert_eq!(
            s.answered,
            self.flushes.load(Ordering::SeqCst),
            "a flush left unanswered"
        );
        assert!(
            !self.settle.load(Ordering::SeqCst),
            "a settle left standing"
        );
    }
}

/// Two link readers queue two operations each while the settler answers a
/// flush.
#[test]
fn every_queued_operation_is_applied_in_order_and_every_flush_answered() {
    let mut b = loom::model::Builder::new();
    // (An exhaustive search of three threads takes more than ten minutes;
    // each change listed in the module docs fails within this bound.)
    b.preemption_bound = Some(3);
    b.check(|| {
        let cell = Arc::new(Cell::new());
        let readers: Vec<_> = [[1, 2], [3, 4]]
            .into_iter()
            .map(|ops| {
                let cell = Arc::clone(&cell);
                loom::thread::spawn(move || {
                    for op in ops {
                        cell.run(Some(op));
                    }
                })
            })
            .collect();
        cell.flushed();
        for r in readers {
            r.join().unwrap();
        }
        cell.check();
    });
}
