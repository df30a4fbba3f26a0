//! One connection to an edge: a byte stream (TLS over TCP, or a QUIC stream)
//! carrying frames, and the `Hello` / `Welcome` exchange that opens it.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_rustls::TlsConnector;

use super::{ClientConfig, ClientError, Transport, raw};
use crate::proto::limits::MAX_FRAME;
use crate::proto::{
    ClientFrame, Code, Hello, ServerFrame, Welcome, client_frame, frame, server_frame,
};
use crate::wire::{FrameReader, ReadError};

/// Longest wait for a connection to be established and welcomed.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

type Reader = Box<dyn AsyncRead + Send + Unpin>;
type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// An open connection. Outgoing frames are encoded into a buffer by
/// [`Conn::queue`] and written by [`Conn::flush`], so a burst of frames costs
/// one write.
pub(crate) struct Conn {
    reader: FrameReader<Reader>,
    writer: Writer,
    out: BytesMut,
    quic: Option<quinn::Connection>,
}

impl Conn {
    fn new(reader: Reader, writer: Writer, quic: Option<quinn::Connection>) -> Self {
        Self {
            reader: FrameReader::new(reader, MAX_FRAME),
            writer,
            out: BytesMut::with_capacity(4096),
            quic,
        }
    }

    pub(crate) fn queue(&mut self, kind: client_frame::Kind) {
        frame::encode(&ClientFrame { kind: Some(kind) }, &mut self.out);
    }

    pub(crate) fn has_queued(&self) -> bool {
        !self.out.is_empty()
    }

    pub(crate) async fn flush(&mut self) -> std::io::Result<()> {
        if !self.out.is_empty() {
            self.writer.write_all(&self.out).await?;
            self.out.clear();
        }
        self.writer.flush().await
    }

    /// The next frame, `None` at a clean end. Cancel safe.
    pub(crate) async fn read(&mut self) -> Result<Option<ServerFrame>, ReadError> {
        self.reader.read::<ServerFrame>().await
    }

    /// Ends the connection politely: flushes what is queued, closes the
    /// sending side, and gives the server `linger` to close its side (so a
    /// `Goodbye` just written is not cut off by a QUIC close).
    pub(crate) async fn shutdown(mut self, linger: Duration) {
        let _ = tokio::time::timeout(linger, async {
            let _ = self.flush().await;
            let _ = self.writer.shutdown().await;
            while let Ok(Some(_)) = self.read().await {}
        })
        .await;
        if let Some(q) = self.quic.take() {
            q.close(0u32.into(), b"bye");
        }
    }
}

/// Opens connections to one edge, again and again, with the same settings.
pub(crate) struct Dialer {
    addr: SocketAddr,
    server_name: String,
    hello: Hello,
    tls: Option<TlsConnector>,
    endpoint: Option<quinn::Endpoint>,
}

impl Dialer {
    pub(crate) fn new(cfg: &ClientConfig) -> Result<Self, ClientError> {
        let (tls, endpoint) = match cfg.transport {
            Transport::Tcp => (Some(raw::tls_connector(&cfg.roots)?), None),
            Transport::Quic => (None, Some(raw::quic_endpoint(cfg.addr, &cfg.roots)?)),
        };
        Ok(Self {
            addr: cfg.addr,
            server_name: cfg.server_name.clone(),
            hello: Hello {
                token: cfg.token.clone(),
                client: cfg.client_name.clone(),
            },
            tls,
            endpoint,
        })
    }

    /// Connects, says `Hello` and waits for `Welcome`.
    pub(crate) async fn dial(&self) -> Result<(Conn, Welcome), ClientError> {
        tokio::time::timeout(CONNECT_TIMEOUT, self.dial_inner())
            .await
            .map_err(|_| ClientError::Timeout {
                addr: self.addr,
                after: CONNECT_TIMEOUT,
            })?
    }

    async fn dial_inner(&self) -> Result<(Conn, Welcome), ClientError> {
        let mut conn = if let Some(tls) = &self.tls {
            let s = raw::tls_with(tls, self.addr, &self.server_name).await?;
            let (r, w) = tokio::io::split(s);
            Conn::new(Box::new(r), Box::new(w), None)
        } else {
            let endpoint = self
                .endpoint
                .as_ref()
                .expect("a QUIC dialer has an endpoint");
            let (c, send, recv) = raw::quic_with(endpoint, self.addr, &self.server_name).await?;
            Conn::new(Box::new(recv), Box::new(send), Some(c))
        };
        conn.queue(client_frame::Kind::Hello(self.hello.clone()));
        conn.flush().await.map_err(ClientError::Write)?;
        match conn.read().await? {
            None => Err(ClientError::ClosedBeforeWelcome),
            Some(ServerFrame { kind: Some(k) }) => match k {
                server_frame::Kind::Welcome(w) => Ok((conn, w)),
                server_frame::Kind::Error(e) => Err(refused(e.code, e.message, e.retry_after_ms)),
                server_frame::Kind::Goodbye(g) => Err(refused(g.code, g.reason, g.retry_after_ms)),
                _ => Err(ClientError::UnexpectedFrame),
            },
            Some(ServerFrame { kind: None }) => Err(ClientError::UnexpectedFrame),
        }
    }

    /// Waits until the QUIC endpoint (if any) has told the server it is gone.
    pub(crate) async fn close(&self, linger: Duration) {
        if let Some(e) = &self.endpoint {
            let _ = tokio::time::timeout(linger, e.wait_idle()).await;
        }
    }
}

fn refused(code: u32, message: String, retry_after_ms: u64) -> ClientError {
    ClientError::Refused {
        code: Code::from_u32(code).unwrap_or(Code::Internal),
        message,
        retry_after: (retry_after_ms > 0).then(|| Duration::from_millis(retry_after_ms)),
    }
}
