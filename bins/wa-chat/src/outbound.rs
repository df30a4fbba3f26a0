//! The outbound queue of one connection: bounded, in two classes, drained by
//! the session's [`Writer`](crate::writer::Writer).
//!
//! Control frames (Welcome, Accepted, Error, Pong, Presence, TypingEvent,
//! Goodbye) always go before bulk frames (Deliver), so an answer or a pong never
//! waits behind a mailbox. The bound counts both classes; a push that finds it
//! full means the client does not read fast enough, and the session ends it
//! with `SLOW_CONSUMER`. The lock is never held across an await.
//!
//! Deliveries carry their bytes in the edge's delivery budget
//! (`[limits] delivery_memory`, [`crate::budget`]) from when they are queued
//! until the writer has written them (or the queue is ended and drops
//! them); [`Outbound::delivery_bytes`] is this queue's share, by which the
//! edge finds its slowest reader when the budget is full
//! (`session::deliveries`).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use common::proto::ServerFrame;

use crate::budget::Held;

/// Frames written in one go before control frames are looked at again.
const BATCH: usize = 64;
/// Bytes of deliveries the writer takes in one go (at least one frame):
/// what a client that stopped reading pins in its blocked writer.
const BATCH_BYTES: u64 = 256 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Control,
    Bulk,
}

/// The queue is full: the client is a slow consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

/// How the connection ends: an optional last frame, and the code for the QUIC
/// connection close.
#[derive(Debug, Clone, PartialEq)]
pub struct End {
    /// (Boxed: every session's queue has room for its end, and a frame
    /// inline is 176 bytes.)
    pub frame: Option<Box<ServerFrame>>,
    pub code: u32,
}

pub struct Outbound {
    state: Mutex<State>,
    /// Bytes of deliveries queued or being written.
    delivery_bytes: AtomicU64,
}

struct State {
    control: VecDeque<ServerFrame>,
    bulk: VecDeque<(ServerFrame, Option<Held>)>,
    cap: usize,
    end: Option<End>,
}

pub(crate) enum Take {
    /// Frames to write, and the budget they hold until written.
    Frames(Vec<ServerFrame>, Vec<Held>),
    End(End),
    Empty,
}

impl Outbound {
    /// A queue of at most `cap` frames.
    pub fn new(cap: usize) -> Outbound {
        Outbound {
            state: Mutex::new(State {
                control: VecDeque::new(),
                bulk: VecDeque::new(),
                cap,
                end: None,
            }),
            delivery_bytes: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("outbound lock is never poisoned")
    }

    /// Queues `frame`. After [`Outbound::end`] frames are dropped silently.
    pub fn push(&self, frame: ServerFrame, class: Class) -> Result<(), Full> {
        self.queue(frame, class, None)
    }

    /// Queues a delivery (bulk) holding `held` of the delivery budget until
    /// it is written or dropped.
    pub fn push_delivery(&self, frame: ServerFrame, held: Held) -> Result<(), Full> {
        self.queue(frame, Class::Bulk, Some(held))
    }

    fn queue(&self, frame: ServerFrame, class: Class, held: Option<Held>) -> Result<(), Full> {
        {
            let mut st = self.lock();
            if st.end.is_some() {
                return Ok(());
            }
            if st.control.len() + st.bulk.len() >= st.cap {
                return Err(Full);
            }
            if let Some(h) = &held {
                self.delivery_bytes.fetch_add(h.bytes(), Ordering::Relaxed);
            }
            match class {
                Class::Control => st.control.push_back(frame),
                Class::Bulk => st.bulk.push_back((frame, held)),
            }
        }
        Ok(())
    }

    /// Bytes of deliveries this queue holds: queued, or taken by the writer
    /// and not yet written.
    pub fn delivery_bytes(&self) -> u64 {
        self.delivery_bytes.load(Ordering::Relaxed)
    }

    /// Whether [`Outbound::end`] was called.
    pub fn ended(&self) -> bool {
        self.lock().end.is_some()
    }

    /// Gives back the share of `held`, taken with a batch now written.
    pub(crate) fn release(&self, held: &[Held]) {
        let bytes: u64 = held.iter().map(Held::bytes).sum();
        self.delivery_bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Ends the connection: queued bulk frames are dropped (they are
    /// redelivered on the next session), queued control frames still go, then
    /// `end.frame`, then the transport is closed. The first call wins.
    pub fn end(&self, end: End) {
        {
            let mut st = self.lock();
            if st.end.is_some() {
                return;
            }
            let dropped: Vec<Held> = st.bulk.drain(..).filter_map(|(_, h)| h).collect();
            self.release(&dropped);
            st.end = Some(end);
        }
    }

    pub fn len(&self) -> usize {
        let st = self.lock();
        st.control.len() + st.bulk.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The next batch to write. With `ending`, an empty queue that was
    /// ended gives its end (once); without, the end stays for the last
    /// drain ([`Writer::finish`](crate::writer::Writer::finish)).
    pub(crate) fn take(&self, ending: bool) -> Take {
        let mut st = self.lock();
        if st.control.is_empty() && st.bulk.is_empty() {
            // Idle: the queues give back what a burst made them grow to.
            st.control = VecDeque::new();
            st.bulk = VecDeque::new();
            return match ending.then(|| st.end.take()).flatten() {
                Some(e) => Take::End(e),
                None => Take::Empty,
            };
        }
        let mut v: Vec<ServerFrame> = st.control.drain(..).collect();
        let mut held = Vec::new();
        let mut bytes = 0;
        while v.len() < BATCH && (bytes < BATCH_BYTES || held.is_empty()) {
            match st.bulk.pop_front() {
                Some((f, h)) => {
                    v.push(f);
                    if let Some(h) = h {
                        bytes += h.bytes();
                        held.push(h);
                    }
                }
                None => break,
            }
        }
        Take::Frames(v, held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::proto::{Deliver, Pong, server_frame::Kind};

    fn pong(n: u64) -> ServerFrame {
        ServerFrame {
            kind: Some(Kind::Pong(Pong { nonce: n })),
        }
    }

    fn deliver(seq: u64) -> ServerFrame {
        ServerFrame {
            kind: Some(Kind::Deliver(Deliver {
                seq,
                envelope: None,
            })),
        }
    }

    fn frames(t: Take) -> Vec<ServerFrame> {
        match t {
            Take::Frames(v, _) => v,
            _ => panic!("expected frames"),
        }
    }

    #[test]
    fn control_goes_first_and_the_bound_counts_both_classes() {
        let q = Outbound::new(3);
        q.push(deliver(1), Class::Bulk).unwrap();
        q.push(pong(1), Class::Control).unwrap();
        q.push(deliver(2), Class::Bulk).unwrap();
        assert_eq!(q.push(pong(2), Class::Control), Err(Full));
        assert_eq!(frames(q.take(true)), vec![pong(1), deliver(1), deliver(2)]);
        assert!(matches!(q.take(true), Take::Empty));
    }

    #[test]
    fn deliveries_hold_their_bytes_until_written_or_dropped() {
        let budget = std::sync::Arc::new(crate::budget::Budget::new(1 << 30));
        let q = Outbound::new(100);
        for seq in 0..10 {
            q.push_delivery(deliver(seq), budget.take(100_000)).unwrap();
        }
        q.push(pong(1), Class::Control).unwrap();
        assert_eq!((q.delivery_bytes(), budget.used()), (1_000_000, 1_000_000));
        // The writer takes control frames and about BATCH_BYTES of bulk.
        let Take::Frames(v, held) = q.take(true) else {
            panic!("expected frames")
        };
        assert_eq!(v.len(), 1 + 3, "{v:?}");
        assert_eq!(budget.used(), 1_000_000, "held until written");
        q.release(&held);
        drop(held);
        assert_eq!((q.delivery_bytes(), budget.used()), (700_000, 700_000));
        q.end(End {
            frame: None,
            code: 0,
        });
        assert!(q.ended());
        assert_eq!((q.delivery_bytes(), budget.used()), (0, 0));
        // After the end a delivery is dropped at once.
        q.push_delivery(deliver(99), budget.take(5)).unwrap();
        assert_eq!((q.delivery_bytes(), budget.used()), (0, 0));
    }

    #[test]
    fn end_drops_bulk_keeps_control_then_ends() {
        let q = Outbound::new(10);
        q.push(deliver(1), Class::Bulk).unwrap();
        q.push(pong(1), Class::Control).unwrap();
        let end = End {
            frame: Some(Box::new(pong(9))),
            code: 12,
        };
        q.end(end.clone());
        q.end(End {
            frame: None,
            code: 0,
        });
        q.push(pong(2), Class::Control).unwrap();
        assert_eq!(frames(q.take(false)), vec![pong(1)]);
        // The session's loop never takes the end; its last drain does.
        assert!(matches!(q.take(false), Take::Empty));
        match q.take(true) {
            Take::End(e) => assert_eq!(e, end),
            _ => panic!("expected the end"),
        }
    }
}
