//! Async frame I/O over any byte stream (TLS over TCP, a QUIC stream, the
//! internal link). The codec in [`crate::proto::frame`] decides; this only moves
//! bytes.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use prost::Message;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::proto::frame::{self, DecodeError, Decoded, Kinded};

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("read failed: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("connection closed in the middle of a frame")]
    Truncated,
}

/// Bytes of buffers held by many readers and writers together, for a gauge
/// (the edge's sessions count their read and write buffers in one, which
/// idle sessions leave at zero). Clones share the count.
#[derive(Clone, Debug, Default)]
pub struct BufferCount(Arc<AtomicI64>);

impl BufferCount {
    /// Bytes held now.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed).max(0) as u64
    }

    /// One buffer's share of the count, holding nothing yet.
    pub fn holder(&self) -> BufferHold {
        BufferHold {
            count: self.clone(),
            held: 0,
        }
    }
}

/// One buffer's share of a [`BufferCount`]; what it counted is taken off
/// when it is dropped.
#[derive(Debug)]
pub struct BufferHold {
    count: BufferCount,
    held: usize,
}

impl BufferHold {
    /// The buffer now holds `bytes`.
    pub fn set(&mut self, bytes: usize) {
        if bytes != self.held {
            self.count
                .0
                .fetch_add(bytes as i64 - self.held as i64, Ordering::Relaxed);
            self.held = bytes;
        }
    }
}

impl Drop for BufferHold {
    fn drop(&mut self) {
        self.set(0);
    }
}

/// How much a reader asks for at a time.
const READ_SIZE: usize = 4096;

/// Reads frames from `R`, buffering partial ones.
///
/// A [`FrameReader::releasing`] reader holds no buffer while it waits for
/// bytes with none buffered: it takes one when it is polled and gives it back
/// when the stream has nothing more (one allocation per wake-up, instead of
/// 4 KiB held by every idle connection).
pub struct FrameReader<R> {
    inner: R,
    buf: BytesMut,
    max_frame: usize,
    release: Option<BufferHold>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R, max_frame: usize) -> Self {
        Self {
            inner,
            buf: BytesMut::new(),
            max_frame,
            release: None,
        }
    }

    /// A reader that releases its buffer while idle, counting what it holds
    /// in `count`.
    pub fn releasing(inner: R, max_frame: usize, count: BufferCount) -> Self {
        Self {
            release: Some(count.holder()),
            ..Self::new(inner, max_frame)
        }
    }

    /// Bytes of buffer held now.
    pub fn buffer_capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// The next frame, or `None` at a clean end of stream.
    ///
    /// Cancel safe: a cancelled call loses no bytes, so it can sit in `select!`.
    pub async fn read<M: Message + Default + Kinded>(&mut self) -> Result<Option<M>, ReadError> {
        loop {
            if let Decoded::Frame(m, n) = frame::decode_kinded::<M>(&self.buf, self.max_frame)? {
                self.buf.advance(n);
                return Ok(Some(m));
            }
            if std::future::poll_fn(|cx| self.poll_fill(cx)).await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(ReadError::Truncated)
                };
            }
        }
    }

    /// The next frame if it is already buffered whole, without reading: a
    /// caller that took one frame with [`FrameReader::read`] acts on the rest
    /// of what that read brought before it waits again.
    pub fn read_buffered<M: Message + Default + Kinded>(&mut self) -> Result<Option<M>, ReadError> {
        match frame::decode_kinded::<M>(&self.buf, self.max_frame)? {
            Decoded::Frame(m, n) => {
                self.buf.advance(n);
                Ok(Some(m))
            }
            _ => Ok(None),
        }
    }

    /// Reads what the stream has into the buffer, taking one if needed; a
    /// releasing reader with nothing buffered gives it back while it waits.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        if self.buf.capacity() == self.buf.len() {
            self.buf.reserve(READ_SIZE);
        }
        let r = tokio_util::io::poll_read_buf(Pin::new(&mut self.inner), cx, &mut self.buf);
        if let Some(hold) = &mut self.release {
            if r.is_pending() && self.buf.is_empty() {
                self.buf = BytesMut::new();
            }
            hold.set(self.buf.capacity());
        }
        r
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }
}

/// Lets the tasks that are ready right now queue their frames before a
/// writer task drains its queue. Call it after taking the first frame: the
/// task that woke the writer made it tokio's next task on that worker (the
/// LIFO slot), so without this the writer runs between every two senders
/// and each write carries one frame. Yielding puts the writer behind the
/// other ready tasks, so one write carries what they all queued. In the
/// store's append benchmark (1,000 writers offering 50,000 appends/s over 4
/// links) the edges' `writev` calls fell from one per append to one per
/// 8 appends, and the process's CPU time by a third.
pub async fn let_others_queue() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return std::task::Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
    .await;
}

/// Bytes of frames gathered before a [`BatchWriter`] is full.
pub const BATCH_BYTES: usize = 64 * 1024;

/// Writes frames in batches: a writer task pushes the frame it woke for and
/// whatever else is already queued (up to [`BATCH_BYTES`]), then sends them
/// with one write. Over TLS each write is a record and a system call, so a
/// link carrying many small frames costs one of each per batch instead of
/// one per frame.
pub struct BatchWriter<W> {
    inner: W,
    buf: BytesMut,
}

impl<W: AsyncWrite + Unpin> BatchWriter<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            buf: BytesMut::with_capacity(BATCH_BYTES),
        }
    }

    /// Adds a frame to the batch (nothing is written yet).
    pub fn push<M: Message>(&mut self, msg: &M) {
        frame::encode(msg, &mut self.buf);
    }

    /// Whether the batch should be sent before more are pushed.
    pub fn is_full(&self) -> bool {
        self.buf.len() >= BATCH_BYTES
    }

    /// Writes the batch and flushes.
    pub async fn send(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            let r = self.inner.write_all(&self.buf).await;
            self.buf.clear();
            r?;
        }
        self.inner.flush().await
    }

    /// Sends what is batched, then shuts the stream down.
    pub async fn shutdown(&mut self) -> std::io::Result<()> {
        self.send().await?;
        self.inner.shutdown().await
    }
}

/// Encodes and writes one frame, without flushing.
pub async fn write_frame<W: AsyncWrite + Unpin, M: Message>(
    w: &mut W,
    msg: &M,
    scratch: &mut BytesMut,
) -> std::io::Result<()> {
    scratch.clear();
    frame::encode(msg, scratch);
    w.write_all(scratch).await
}

/// The one writer of an internal link (edges, homes, `link_client`): drains
/// `control` before `bulk` (pushes; `None` when a side has none) onto `w`,
/// each write carrying whatever is queued (up to a [`BatchWriter`]'s worth),
/// until every sender is gone or `dead` is cancelled (a failed write cancels
/// it too). When `finish` is cancelled it writes what is already queued and
/// closes: an edge that stops still delivers its sessions' last frames.
pub async fn write_link<W: AsyncWrite + Unpin, M: Message>(
    w: W,
    mut control: tokio::sync::mpsc::Receiver<M>,
    mut bulk: Option<tokio::sync::mpsc::Receiver<M>>,
    dead: tokio_util::sync::CancellationToken,
    finish: tokio_util::sync::CancellationToken,
) {
    let mut w = BatchWriter::new(w);
    let mut control_open = true;
    loop {
        let bulk_open = bulk.is_some();
        if !control_open && !bulk_open {
            break;
        }
        let first = tokio::select! {
            biased;
            () = dead.cancelled() => return,
            () = finish.cancelled() => break,
            m = control.recv(), if control_open => match m {
                Some(m) => m,
                None => {
                    control_open = false;
                    continue;
                }
            },
            m = async { bulk.as_mut().expect("open").recv().await }, if bulk_open => match m {
                Some(m) => m,
                None => {
                    bulk = None;
                    continue;
                }
            },
        };
        w.push(&first);
        let_others_queue().await;
        // Whatever else is queued goes in the same write, control first.
        while !w.is_full()
            && let Ok(more) = control.try_recv()
        {
            w.push(&more);
        }
        while !w.is_full()
            && let Some(Ok(more)) = bulk.as_mut().map(|b| b.try_recv())
        {
            w.push(&more);
        }
        if w.send().await.is_err() {
            dead.cancel();
            return;
        }
    }
    // Stopping (or every sender gone): what is still queued goes too.
    while let Some(m) = control
        .try_recv()
        .ok()
        .or_else(|| bulk.as_mut().and_then(|b| b.try_recv().ok()))
    {
        w.push(&m);
        if w.is_full() && w.send().await.is_err() {
            return;
        }
    }
    let _ = w.send().await;
    let _ = w.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{ClientFrame, Ping, client_frame::Kind};

    fn ping(n: u64) -> ClientFrame {
        ClientFrame {
            kind: Some(Kind::Ping(Ping { nonce: n })),
        }
    }

    #[tokio::test]
    async fn a_link_writes_what_is_queued_control_before_bulk() {
        let (a, b) = tokio::io::duplex(1 << 20);
        let (ctx, crx) = tokio::sync::mpsc::channel(16);
        let (btx, brx) = tokio::sync::mpsc::channel(16);
        for n in 0..3 {
            btx.try_send(ping(100 + n)).unwrap();
        }
        for n in 0..3 {
            ctx.try_send(ping(n)).unwrap();
        }
        drop((ctx, btx));
        let never = tokio_util::sync::CancellationToken::new();
        write_link(a, crx, Some(brx), never.clone(), never).await;
        let mut r = FrameReader::new(b, 1024);
        let mut got = Vec::new();
        while let Some(f) = r.read::<ClientFrame>().await.unwrap() {
            let Some(Kind::Ping(p)) = f.kind else {
                panic!("not a ping")
            };
            got.push(p.nonce);
        }
        assert_eq!(got, [0, 1, 2, 100, 101, 102]);
    }

    #[tokio::test]
    async fn frames_across_tiny_reads() {
        let (a, mut b) = tokio::io::duplex(3);
        let writer = tokio::spawn(async move {
            let mut s = BytesMut::new();
            for n in 0..50u64 {
                let f = ClientFrame {
                    kind: Some(Kind::Ping(Ping { nonce: n })),
                };
                write_frame(&mut b, &f, &mut s).await.unwrap();
            }
        });
        let mut r = FrameReader::new(a, 1024);
        for n in 0..50u64 {
            let f: ClientFrame = r.read().await.unwrap().unwrap();
            assert_eq!(f.kind, Some(Kind::Ping(Ping { nonce: n })));
        }
        writer.await.unwrap();
        assert!(r.read::<ClientFrame>().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn eof_mid_frame_is_truncated() {
        let (a, mut b) = tokio::io::duplex(64);
        b.write_all(&[0, 0, 0, 9, 1]).await.unwrap();
        drop(b);
        let mut r = FrameReader::new(a, 1024);
        assert!(matches!(
            r.read::<ClientFrame>().await,
            Err(ReadError::Truncated)
        ));
    }
}
