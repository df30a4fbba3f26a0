//! A session's queue of events from the links: bounded, one receiver, and
//! holding no memory while empty.
//!
//! It replaces tokio's bounded `mpsc` channel, which allocates its first
//! block of 32 slots when it is made: 32 [`Event`]s (an `Envelope` each, a
//! few hundred bytes) per session, idle or not, which was the largest single
//! item of an idle session's memory (docs/BENCHMARKS.md, "Idle sessions").
//! Here the events sit in a `VecDeque` that is given back as soon as the
//! session has taken the last one.
//!
//! It also carries the session's kill ([`Sender::kill`]): a code that ends
//! the session, which the receiver sees before any event. One wake-up for
//! both, so that the session waits on one thing for them.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use common::proto::Code;
use tokio::sync::Notify;

use crate::hub::Event;

struct Shared {
    queue: Mutex<VecDeque<Event>>,
    cap: usize,
    wake: Notify,
    closed: AtomicBool,
    /// Why the session must end, if it must: the first code wins.
    killed: OnceLock<Code>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Event>> {
        self.queue.lock().expect("inbox lock is never poisoned")
    }
}

/// Why an event was not queued (it is dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// The inbox holds its bound: the session does not keep up.
    Full,
    /// The session is gone.
    Closed,
}

/// Hands events to one session.
#[derive(Clone)]
pub struct Sender(Arc<Shared>);

/// The session's end of its inbox.
pub struct Receiver(Arc<Shared>);

/// An inbox of at most `cap` events.
pub fn channel(cap: usize) -> (Sender, Receiver) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(VecDeque::new()),
        cap: cap.max(1),
        wake: Notify::new(),
        closed: AtomicBool::new(false),
        killed: OnceLock::new(),
    });
    (Sender(Arc::clone(&shared)), Receiver(shared))
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("inbox::Sender").finish_non_exhaustive()
    }
}

impl Sender {
    /// Queues `event` unless the inbox is full or its session is gone.
    pub fn try_send(&self, event: Event) -> Result<(), SendError> {
        if self.0.closed.load(Ordering::Relaxed) {
            return Err(SendError::Closed);
        }
        {
            let mut q = self.0.lock();
            if q.len() >= self.0.cap {
                return Err(SendError::Full);
            }
            q.push_back(event);
        }
        self.0.wake.notify_one();
        Ok(())
    }

    /// Ends the session with `code` (if nothing ended it first): its
    /// receiver sees it before any event still queued.
    pub fn kill(&self, code: Code) {
        if self.0.killed.set(code).is_ok() {
            self.0.wake.notify_one();
        }
    }

    /// The code the session was killed with, if it was.
    pub fn killed(&self) -> Option<Code> {
        self.0.killed.get().copied()
    }
}

/// What the session's inbox gives it next.
#[derive(Debug)]
pub enum Incoming {
    /// The session must end (see [`Sender::kill`]).
    Killed(Code),
    Event(Event),
}

impl Receiver {
    /// The kill if there was one, else the next event, waiting for either.
    ///
    /// Cancel safe: an event is taken only when this returns it.
    pub async fn recv(&mut self) -> Incoming {
        loop {
            if let Some(code) = self.killed() {
                return Incoming::Killed(code);
            }
            if let Some(ev) = self.try_recv() {
                return Incoming::Event(ev);
            }
            self.0.wake.notified().await;
        }
    }

    /// The code the session was killed with, if it was.
    pub fn killed(&self) -> Option<Code> {
        self.0.killed.get().copied()
    }

    /// The next event if one is queued. Taking the last one gives back the
    /// queue's memory.
    pub fn try_recv(&mut self) -> Option<Event> {
        let mut q = self.0.lock();
        let ev = q.pop_front();
        if q.is_empty() && q.capacity() > 0 {
            *q = VecDeque::new();
        }
        ev
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.0.closed.store(true, Ordering::Relaxed);
        self.0.lock().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typing(n: usize) -> Event {
        Event::Typing {
            from: n.to_string(),
            typing: true,
        }
    }

    #[tokio::test]
    async fn bounded_in_order_and_empty_when_drained() {
        let (tx, mut rx) = channel(3);
        for n in 0..3 {
            tx.try_send(typing(n)).unwrap();
        }
        assert_eq!(tx.try_send(typing(9)), Err(SendError::Full));
        for n in 0..3 {
            match rx.recv().await {
                Incoming::Event(Event::Typing { from, .. }) => assert_eq!(from, n.to_string()),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(rx.0.lock().capacity(), 0, "drained: no memory held");
        // A waiting receiver is woken by the next event.
        let waiter = tokio::spawn(async move { (rx.recv().await, rx) });
        tx.try_send(typing(4)).unwrap();
        let (ev, rx) = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .unwrap();
        assert!(matches!(ev, Incoming::Event(Event::Typing { .. })));
        drop(rx);
        assert_eq!(tx.try_send(typing(5)), Err(SendError::Closed));
    }

    #[tokio::test]
    async fn a_kill_comes_before_queued_events_wakes_a_waiting_receiver_and_the_first_code_wins() {
        let (tx, mut rx) = channel(4);
        // A waiting receiver is woken by a kill.
        let waiter = tokio::spawn(async move { (rx.recv().await, rx) });
        tokio::task::yield_now().await;
        tx.kill(Code::SlowConsumer);
        let (got, mut rx) = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .unwrap();
        assert!(matches!(got, Incoming::Killed(Code::SlowConsumer)));
        // Queued events do not hide it, and a later code does not replace it.
        tx.try_send(typing(1)).unwrap();
        tx.kill(Code::Unavailable);
        assert!(matches!(
            rx.recv().await,
            Incoming::Killed(Code::SlowConsumer)
        ));
        assert_eq!(tx.killed(), Some(Code::SlowConsumer));
        assert_eq!(rx.killed(), Some(Code::SlowConsumer));
    }
}
