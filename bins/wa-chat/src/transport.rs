//! The two client transports turned into one byte stream each way: a boxed
//! reader, and a [`Sink`] that knows how to end its transport politely.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::tls_stream::TlsStream;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, WriteHalf};

/// How long a QUIC stream gets for the peer to acknowledge our last frame
/// before the connection is closed (a close discards unacknowledged data).
const QUIC_LINGER: Duration = Duration::from_secs(1);

pub type Source = Box<dyn AsyncRead + Send + Unpin>;

/// The writing side of a client connection.
pub enum Sink {
    Tls(WriteHalf<TlsStream>),
    Quic {
        send: quinn::SendStream,
        conn: quinn::Connection,
    },
}

impl Sink {
    /// Writes some of `buf` (cancel safe: nothing is kept between calls).
    pub fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self {
            Sink::Tls(w) => Pin::new(w).poll_write(cx, buf),
            Sink::Quic { send, .. } => AsyncWrite::poll_write(Pin::new(send), cx, buf),
        }
    }

    /// TLS buffers records; QUIC sends as it goes.
    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self {
            Sink::Tls(w) => Pin::new(w).poll_flush(cx),
            Sink::Quic { .. } => Poll::Ready(Ok(())),
        }
    }

    /// Ends the transport after what was written: TLS `close_notify` and FIN;
    /// on QUIC, finish the stream, give the peer a moment to acknowledge it,
    /// then close the connection with `code` (the wa code, 0 for a clean end).
    pub async fn close(self, code: u32) {
        match self {
            Sink::Tls(mut w) => {
                let _ = w.flush().await;
                let _ = w.shutdown().await;
            }
            Sink::Quic { mut send, conn } => {
                let _ = send.finish();
                let _ = tokio::time::timeout(QUIC_LINGER, send.stopped()).await;
                conn.close(quinn::VarInt::from_u32(code), b"");
            }
        }
    }
}
