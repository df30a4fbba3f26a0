//! A session's writer: drains its [`Outbound`] queue to the client from the
//! session's own task.
//!
//! There is no writer task. The session loop polls [`Writer::progress`]
//! as one of its `select!` branches whenever the queue holds frames or a
//! batch is still being written: each batch is encoded into one buffer and
//! written with as few system calls as the socket allows, the buffer is
//! given back once the queue is empty, and a client that does not read
//! leaves the write pending (the socket wakes the session when it drains)
//! while the loop goes on with its other inputs. One task per session
//! instead of two: no second task, no hand-off between them on every frame
//! (docs/BENCHMARKS.md, "Idle sessions: the task").
//!
//! Polling is cancel safe: all progress lives in the [`Writer`], so the
//! branch can lose a `select!` at any point without losing a byte.

use std::future::Future;
use std::io;
use std::task::{Context, Poll, ready};

use bytes::BytesMut;
use common::proto::frame;
use common::wire::{BufferCount, BufferHold};

use crate::budget::Held;
use crate::outbound::{End, Outbound, Take};
use crate::transport::Sink;

/// The buffer's first size (it grows for bigger batches).
const WRITE_BUF: usize = 4096;

pub struct Writer {
    sink: Sink,
    /// The batch being written, from `pos` on.
    buf: BytesMut,
    pos: usize,
    /// Written since the last flush.
    unflushed: bool,
    /// The delivery budget the batch's frames hold until written.
    budget: Vec<Held>,
    hold: BufferHold,
    /// A write failed: the client is gone.
    failed: bool,
}

impl Writer {
    /// A writer to `sink` counting its buffer in `buffers`.
    pub fn new(sink: Sink, buffers: &BufferCount) -> Writer {
        Writer {
            sink,
            buf: BytesMut::new(),
            pos: 0,
            unflushed: false,
            budget: Vec::new(),
            hold: buffers.holder(),
            failed: false,
        }
    }

    /// Whether [`Writer::progress`] has work: a batch not fully written or
    /// flushed, or frames waiting in `out`.
    pub fn has_work(&self, out: &Outbound) -> bool {
        !self.failed && (self.pos < self.buf.len() || self.unflushed || !out.is_empty())
    }

    /// Writes what `out` holds until it is empty and flushed. An error means
    /// the client is gone; the writer writes nothing after it.
    pub fn progress<'a>(
        &'a mut self,
        out: &'a Outbound,
    ) -> impl Future<Output = io::Result<()>> + Send + 'a {
        std::future::poll_fn(move |cx| self.poll_drain(cx, out, false).map_ok(|_| ()))
    }

    /// After [`Outbound::end`]: writes the control frames still queued and the
    /// last frame, then ends the transport. Bound it with a timeout: a
    /// client that does not read never lets it finish.
    pub async fn finish(mut self, out: &Outbound) {
        let end = std::future::poll_fn(|cx| self.poll_drain(cx, out, true)).await;
        let Ok(Some(end)) = end else {
            // (Failed: nothing more can be written.)
            return;
        };
        if let Some(f) = end.frame {
            self.buf.clear();
            frame::encode(&f, &mut self.buf);
            self.pos = 0;
            if std::future::poll_fn(|cx| self.poll_write_buf(cx))
                .await
                .is_err()
            {
                return;
            }
        }
        self.hold.set(0);
        self.sink.close(end.code).await;
    }

    /// Writes batches taken from `out` until it is empty, then flushes.
    /// With `ending`, the end the queue was given is taken and returned once
    /// all before it is written; without, it stays queued.
    fn poll_drain(
        &mut self,
        cx: &mut Context<'_>,
        out: &Outbound,
        ending: bool,
    ) -> Poll<io::Result<Option<End>>> {
        if self.failed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        loop {
            if let Err(e) = ready!(self.poll_write_buf(cx)) {
                return Poll::Ready(Err(e));
            }
            if !self.budget.is_empty() {
                out.release(&self.budget);
                self.budget.clear();
            }
            match out.take(ending) {
                Take::Frames(frames, budget) => {
                    self.buf.clear();
                    self.buf.reserve(WRITE_BUF);
                    for f in &frames {
                        frame::encode(f, &mut self.buf);
                    }
                    self.pos = 0;
                    self.budget = budget;
                    self.hold.set(self.buf.capacity());
                }
                Take::End(end) => return Poll::Ready(Ok(Some(end))),
                Take::Empty => {
                    if self.unflushed {
                        if let Err(e) = ready!(self.sink.poll_flush(cx)) {
                            self.failed = true;
                            return Poll::Ready(Err(e));
                        }
                        self.unflushed = false;
                    }
                    // Idle: the buffer goes back.
                    self.buf = BytesMut::new();
                    self.pos = 0;
                    self.budget = Vec::new();
                    self.hold.set(0);
                    return Poll::Ready(Ok(None));
                }
            }
        }
    }

    /// Writes the rest of the buffer.
    fn poll_write_buf(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.pos < self.buf.len() {
            match ready!(self.sink.poll_write(cx, &self.buf[self.pos..])) {
                Ok(0) => {
                    self.failed = true;
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                Ok(n) => {
                    self.pos += n;
                    self.unflushed = true;
                }
                Err(e) => {
                    self.failed = true;
                    return Poll::Ready(Err(e));
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}
