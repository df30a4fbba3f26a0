//! Async frame I/O over any byte stream (TLS over TCP, a QUIC stream, the
//! internal link). The codec in [`crate::proto::frame`] decides; this only moves
//! bytes.

use bytes::{Buf, BytesMut};
use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

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

/// Reads frames from `R`, buffering partial ones.
pub struct FrameReader<R> {
    inner: R,
    buf: BytesMut,
    max_frame: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R, max_frame: usize) -> Self {
        Self {
            inner,
            buf: BytesMut::with_capacity(4096),
            max_frame,
        }
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
            if self.inner.read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(ReadError::Truncated)
                };
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{ClientFrame, Ping, client_frame::Kind};

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
