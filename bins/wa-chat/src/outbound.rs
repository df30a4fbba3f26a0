//! The outbound queue of one connection: bounded, in two classes, drained by
//! a writer task.
//!
//! Control frames (Welcome, Accepted, Error, Pong, Presence, TypingEvent,
//! Goodbye) always go before bulk frames (Deliver), so an answer or a pong never
//! waits behind a mailbox. The bound counts both classes; a push that finds it
//! full means the client does not read fast enough, and the session ends it
//! with `SLOW_CONSUMER`. The lock is never held across an await.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::BytesMut;
use common::proto::ServerFrame;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::transport::Sink;

/// Frames written in one go before control frames are looked at again.
const BATCH: usize = 64;

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
    pub frame: Option<ServerFrame>,
    pub code: u32,
}

pub struct Outbound {
    state: Mutex<State>,
    wake: Notify,
}

struct State {
    control: VecDeque<ServerFrame>,
    bulk: VecDeque<ServerFrame>,
    cap: usize,
    end: Option<End>,
}

enum Take {
    Frames(Vec<ServerFrame>),
    End(End),
    Empty,
}

impl Outbound {
    pub fn new(cap: usize) -> Outbound {
        Outbound {
            state: Mutex::new(State {
                control: VecDeque::new(),
                bulk: VecDeque::new(),
                cap,
                end: None,
            }),
            wake: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("outbound lock is never poisoned")
    }

    /// Queues `frame`. After [`Outbound::end`] frames are dropped silently.
    pub fn push(&self, frame: ServerFrame, class: Class) -> Result<(), Full> {
        {
            let mut st = self.lock();
            if st.end.is_some() {
                return Ok(());
            }
            if st.control.len() + st.bulk.len() >= st.cap {
                return Err(Full);
            }
            match class {
                Class::Control => st.control.push_back(frame),
                Class::Bulk => st.bulk.push_back(frame),
            }
        }
        self.wake.notify_one();
        Ok(())
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
            st.bulk.clear();
            st.end = Some(end);
        }
        self.wake.notify_one();
    }

    pub fn len(&self) -> usize {
        let st = self.lock();
        st.control.len() + st.bulk.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn take(&self) -> Take {
        let mut st = self.lock();
        if st.control.is_empty() && st.bulk.is_empty() {
            return match st.end.take() {
                Some(e) => Take::End(e),
                None => Take::Empty,
            };
        }
        let mut v: Vec<ServerFrame> = st.control.drain(..).collect();
        while v.len() < BATCH {
            match st.bulk.pop_front() {
                Some(f) => v.push(f),
                None => break,
            }
        }
        Take::Frames(v)
    }

    /// Writes queued frames to `sink` until the connection is ended, then
    /// closes it. A write error cancels `gone` (the client went away).
    pub async fn write_loop(&self, mut sink: Sink, gone: CancellationToken) {
        let mut buf = BytesMut::with_capacity(16 * 1024);
        loop {
            match self.take() {
                Take::Frames(frames) => {
                    buf.clear();
                    for f in &frames {
                        common::proto::frame::encode(f, &mut buf);
                    }
                    if sink.write_all(&buf).await.is_err() {
                        gone.cancel();
                        return;
                    }
                    if self.is_empty() && sink.flush().await.is_err() {
                        gone.cancel();
                        return;
                    }
                }
                Take::End(end) => {
                    if let Some(f) = end.frame {
                        buf.clear();
                        common::proto::frame::encode(&f, &mut buf);
                        let _ = sink.write_all(&buf).await;
                    }
                    sink.close(end.code).await;
                    return;
                }
                Take::Empty => self.wake.notified().await,
            }
        }
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
            Take::Frames(v) => v,
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
        assert_eq!(frames(q.take()), vec![pong(1), deliver(1), deliver(2)]);
        assert!(matches!(q.take(), Take::Empty));
    }

    #[test]
    fn end_drops_bulk_keeps_control_then_ends() {
        let q = Outbound::new(10);
        q.push(deliver(1), Class::Bulk).unwrap();
        q.push(pong(1), Class::Control).unwrap();
        let end = End {
            frame: Some(pong(9)),
            code: 12,
        };
        q.end(end.clone());
        q.end(End {
            frame: None,
            code: 0,
        });
        q.push(pong(2), Class::Control).unwrap();
        assert_eq!(frames(q.take()), vec![pong(1)]);
        match q.take() {
            Take::End(e) => assert_eq!(e, end),
            _ => panic!("expected the end"),
        }
    }
}
