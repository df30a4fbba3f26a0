//! A session's queue of events from the links: bounded, one receiver, and
//! holding no memory while empty.
//!
//! It replaces tokio's bounded `mpsc` channel, which allocates its first
//! block of 32 slots when it is made: 32 [`Event`]s (an `Envelope` each, a
//! few hundred bytes) per session, idle or not, which was the largest single
//! item of an idle session's memory (docs/BENCHMARKS.md, "Idle sessions").
//! Here the events sit in a `VecDeque` that is given back as soon as the
//! session has taken the last one.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::hub::Event;

struct Shared {
    queue: Mutex<VecDeque<Event>>,
    cap: usize,
    wake: Notify,
    closed: AtomicBool,
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
}

impl Receiver {
    /// The next event (never `None`: the session holds a sender of its own).
    ///
    /// Cancel safe: an event is taken only when this returns it.
    pub async fn recv(&mut self) -> Option<Event> {
        loop {
            if let Some(ev) = self.try_recv() {
                return Some(ev);
            }
            self.0.wake.notified().await;
        }
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
                Some(Event::Typing { from, .. }) => assert_eq!(from, n.to_string()),
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
        assert!(matches!(ev, Some(Event::Typing { .. })));
        drop(rx);
        assert_eq!(tx.try_send(typing(5)), Err(SendError::Closed));
    }
}
