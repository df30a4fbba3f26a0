//! A client's TLS connection on rustls's unbuffered API, holding no buffer
//! while idle.
//!
//! tokio-rustls drives rustls's buffered connection, which keeps a 4 KiB
//! zero-filled record buffer for the connection's whole life once it has
//! read anything: the largest single item of an idle TLS session
//! (docs/BENCHMARKS.md, "Idle sessions"). Here the TLS bytes read from the
//! socket go to a buffer taken when the socket has something and given back
//! when every whole record in it has been processed, and the records to
//! send to one given back once the socket has taken them; only a partial
//! record keeps its buffer.
//!
//! Reads and writes share the one rustls connection (tokio's `split`
//! serialises them); whatever rustls has to send while reading (a key
//! update's answer, an alert) joins the same outgoing buffer, in order.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, InsufficientSizeError};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// What the socket is asked for at a time.
const READ_SIZE: usize = 4096;
/// Past this many bytes waiting for the socket, writes wait.
const MAX_OUTGOING: usize = 64 * 1024;

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

pub struct TlsStream {
    tcp: TcpStream,
    conn: UnbufferedServerConnection,
    /// TLS bytes read and not yet processed (`used` of them).
    incoming: Vec<u8>,
    used: usize,
    /// Plaintext decrypted and not yet read, from `plain_pos` on.
    plain: Vec<u8>,
    plain_pos: usize,
    /// TLS bytes for the socket, from `out_pos` on.
    outgoing: Vec<u8>,
    out_pos: usize,
    /// The peer's close_notify or the socket's end.
    eof: bool,
    /// Our close_notify is queued.
    closing: bool,
}

/// What one round of [`TlsStream::process`] found.
enum Next {
    /// Plaintext came (or rustls queued bytes to send): look again.
    Progress,
    /// Nothing more without reading from the socket.
    NeedInput,
    /// The peer ended the stream.
    Eof,
    /// Application data may be sent (the handshake is over).
    Writable,
}

impl TlsStream {
    /// Runs the server side of the handshake on `tcp`.
    pub async fn accept(config: Arc<rustls::ServerConfig>, tcp: TcpStream) -> io::Result<Self> {
        let conn = UnbufferedServerConnection::new(config).map_err(invalid)?;
        let mut s = TlsStream {
            tcp,
            conn,
            incoming: Vec::new(),
            used: 0,
            plain: Vec::new(),
            plain_pos: 0,
            outgoing: Vec::new(),
            out_pos: 0,
            eof: false,
            closing: false,
        };
        std::future::poll_fn(|cx| s.poll_handshake(cx)).await?;
        Ok(s)
    }

    /// Whether the session was resumed from a ticket.
    pub fn handshake_kind(&self) -> Option<rustls::HandshakeKind> {
        self.conn.handshake_kind()
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            match self.process()? {
                Next::Progress => continue,
                Next::Writable => {
                    // (The session tickets go out here.)
                    ready!(self.poll_release(cx))?;
                    return Poll::Ready(Ok(()));
                }
                Next::Eof => return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into())),
                Next::NeedInput => {
                    ready!(self.poll_send(cx))?;
                    if ready!(self.poll_fill(cx))? == 0 {
                        return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                    }
                }
            }
        }
    }

    /// One step of rustls over what has been read: plaintext to `plain`,
    /// records to send to `outgoing`.
    fn process(&mut self) -> io::Result<Next> {
        let status = self
            .conn
            .process_tls_records(&mut self.incoming[..self.used]);
        let discard = status.discard;
        let next = match status.state.map_err(invalid)? {
            ConnectionState::ReadTraffic(mut r) => {
                while let Some(rec) = r.next_record() {
                    let rec = rec.map_err(invalid)?;
                    if self.plain_pos == self.plain.len() {
                        self.plain.clear();
                        self.plain_pos = 0;
                    }
                    self.plain.extend_from_slice(rec.payload);
                }
                Next::Progress
            }
            ConnectionState::EncodeTlsData(mut e) => {
                append_growing(
                    &mut self.outgoing,
                    512,
                    |buf| e.encode(buf),
                    |err| match err {
                        EncodeError::InsufficientSize(InsufficientSizeError { required_size }) => {
                            Some(*required_size)
                        }
                        _ => None,
                    },
                )?;
                Next::Progress
            }
            // (Queued in `outgoing`, which the socket gets in order.)
            ConnectionState::TransmitTlsData(t) => {
                t.done();
                Next::Progress
            }
            ConnectionState::BlockedHandshake => Next::NeedInput,
            ConnectionState::WriteTraffic(_) => Next::Writable,
            ConnectionState::PeerClosed | ConnectionState::Closed => Next::Eof,
            ConnectionState::ReadEarlyData(_) => {
                return Err(invalid("early data is not accepted"));
            }
            _ => return Err(invalid("unexpected TLS state")),
        };
        if discard > 0 {
            self.incoming.copy_within(discard..self.used, 0);
            self.used -= discard;
        }
        if self.used == 0 && !self.incoming.is_empty() {
            // Every whole record is processed: the buffer goes back.
            self.incoming = Vec::new();
        }
        Ok(next)
    }

    /// Reads from the socket into `incoming`: the number of bytes (0 at
    /// its end).
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.incoming.len() < self.used + READ_SIZE {
            self.incoming.resize(self.used + READ_SIZE, 0);
        }
        let mut rb = ReadBuf::new(&mut self.incoming[self.used..]);
        let r = Pin::new(&mut self.tcp).poll_read(cx, &mut rb);
        let n = rb.filled().len();
        match r {
            Poll::Ready(Ok(())) => {
                self.used += n;
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if self.used == 0 {
                    self.incoming = Vec::new();
                }
                Poll::Pending
            }
        }
    }

    /// Writes `outgoing` to the socket. The buffer is kept for the next
    /// records (a burst's writes reuse it) until [`TlsStream::poll_release`].
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_pos < self.outgoing.len() {
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, &self.outgoing[self.out_pos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_pos += n;
        }
        self.outgoing.clear();
        self.out_pos = 0;
        Poll::Ready(Ok(()))
    }

    /// Writes `outgoing` to the socket and gives the buffer back: the
    /// writer flushes when its queue is empty, so an idle connection holds
    /// none.
    fn poll_release(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_send(cx))?;
        self.outgoing = Vec::new();
        Poll::Ready(Ok(()))
    }

    /// Brings rustls to where application data may be sent, handling what
    /// it has to say first.
    fn writable(&mut self) -> io::Result<()> {
        loop {
            match self.process()? {
                Next::Progress => continue,
                Next::Writable => return Ok(()),
                // The peer's close_notify (the reader sees the end once it
                // has read the rest): TLS 1.3 lets this side go on sending.
                Next::Eof if !self.eof && !self.closing => self.eof = true,
                Next::Eof | Next::NeedInput => {
                    return Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "the TLS connection cannot send",
                    ));
                }
            }
        }
    }

    /// Encrypts `data` into `outgoing` (close_notify with `None`).
    fn encrypt(&mut self, data: Option<&[u8]>) -> io::Result<()> {
        self.writable()?;
        // (Right after `writable`, over the same bytes: nothing new to
        // process, so nothing to discard.)
        let status = self
            .conn
            .process_tls_records(&mut self.incoming[..self.used]);
        debug_assert_eq!(status.discard, 0);
        let ConnectionState::WriteTraffic(mut w) = status.state.map_err(invalid)? else {
            return Err(invalid("the TLS connection cannot send"));
        };
        let need = data.map_or(64, |d| d.len() + 64 + d.len() / 16_000 * 32);
        append_growing(
            &mut self.outgoing,
            need,
            |buf| match data {
                Some(d) => w.encrypt(d, buf),
                None => w.queue_close_notify(buf),
            },
            |e| match e {
                EncryptError::InsufficientSize(InsufficientSizeError { required_size }) => {
                    Some(*required_size)
                }
                _ => None,
            },
        )
    }
}

/// Appends what `write` writes to `out`, starting with room for `need`
/// bytes and growing as far as rustls says it needs (`too_small`).
fn append_growing<E: std::fmt::Display>(
    out: &mut Vec<u8>,
    mut need: usize,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, E>,
    too_small: impl Fn(&E) -> Option<usize>,
) -> io::Result<()> {
    let start = out.len();
    loop {
        out.resize(start + need, 0);
        match write(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return Ok(());
            }
            Err(e) => match too_small(&e) {
                Some(required) => need = required,
                None => {
                    out.truncate(start);
                    return Err(invalid(e));
                }
            },
        }
    }
}

impl AsyncRead for TlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let s = self.get_mut();
        loop {
            if s.plain_pos < s.plain.len() {
                let n = (s.plain.len() - s.plain_pos).min(buf.remaining());
                buf.put_slice(&s.plain[s.plain_pos..s.plain_pos + n]);
                s.plain_pos += n;
                if s.plain_pos == s.plain.len() {
                    s.plain = Vec::new();
                    s.plain_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if s.eof {
                return Poll::Ready(Ok(()));
            }
            match s.process()? {
                Next::Progress => {}
                Next::Eof => s.eof = true,
                Next::NeedInput | Next::Writable => {
                    // What rustls queued (a key update's answer) goes first;
                    // a socket that will not take it, or has failed (the
                    // writer finds out), does not stop reading: what the
                    // peer sent before it went away is still read.
                    if s.out_pos < s.outgoing.len() {
                        let _ = s.poll_release(cx);
                    }
                    if ready!(s.poll_fill(cx))? == 0 {
                        if s.used > 0 {
                            return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                        }
                        s.eof = true;
                    }
                }
            }
        }
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let s = self.get_mut();
        if s.outgoing.len() - s.out_pos >= MAX_OUTGOING {
            ready!(s.poll_send(cx))?;
        }
        s.encrypt(Some(data))?;
        // As much as the socket takes now; the rest on the next write or
        // the flush.
        let _ = s.poll_send(cx)?;
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_release(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let s = self.get_mut();
        if !s.closing {
            s.closing = true;
            // (A connection that can no longer send just closes.)
            let _ = s.encrypt(None);
        }
        ready!(s.poll_release(cx))?;
        Pin::new(&mut s.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::tls::{DevPki, client_config, issue_tickets, load_certs, load_key, server_config};
    use rustls_pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    struct Pair {
        server: Arc<rustls::ServerConfig>,
        client: tokio_rustls::TlsConnector,
        listener: TcpListener,
        _dir: tempfile::TempDir,
    }

    async fn pair() -> Pair {
        let dir = tempfile::tempdir().unwrap();
        DevPki::generate(&["localhost"])
            .unwrap()
            .write_to(dir.path())
            .unwrap();
        let certs = load_certs(&dir.path().join("cert.pem")).unwrap();
        let key = load_key(&dir.path().join("key.pem")).unwrap();
        let roots = load_certs(&dir.path().join("ca.pem")).unwrap();
        let mut server = server_config(certs, key, &[b"wa"]).unwrap();
        issue_tickets(&mut server).unwrap();
        let client = client_config(&roots, &[b"wa"]).unwrap();
        Pair {
            server: Arc::new(server),
            client: tokio_rustls::TlsConnector::from(Arc::new(client)),
            listener: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            _dir: dir,
        }
    }

    impl Pair {
        /// One connection: the client's end and the server's.
        async fn connect(&self) -> (tokio_rustls::client::TlsStream<TcpStream>, TlsStream) {
            let addr = self.listener.local_addr().unwrap();
            let dial = async {
                let tcp = TcpStream::connect(addr).await.unwrap();
                let name = ServerName::try_from("localhost").unwrap();
                self.client.connect(name, tcp).await.unwrap()
            };
            let accept = async {
                let (tcp, _) = self.listener.accept().await.unwrap();
                TlsStream::accept(Arc::clone(&self.server), tcp)
                    .await
                    .unwrap()
            };
            tokio::time::timeout(std::time::Duration::from_secs(10), async {
                tokio::join!(dial, accept)
            })
            .await
            .expect("handshake in time")
        }
    }

    fn idle(s: &TlsStream) -> bool {
        s.incoming.capacity() == 0 && s.outgoing.capacity() == 0 && s.plain.capacity() == 0
    }

    #[tokio::test]
    async fn carries_bytes_both_ways_and_holds_no_buffer_when_idle() {
        let p = pair().await;
        let (mut client, mut server) = p.connect().await;
        assert_eq!(server.handshake_kind(), Some(rustls::HandshakeKind::Full));
        // Larger than a TLS record (16 KiB), read in small pieces.
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let send = async {
            client.write_all(&data).await.unwrap();
            client.flush().await.unwrap();
        };
        let recv = async {
            let mut got = Vec::new();
            let mut piece = [0u8; 1000];
            while got.len() < data.len() {
                let n = server.read(&mut piece).await.unwrap();
                assert!(n > 0, "ended early at {}", got.len());
                got.extend_from_slice(&piece[..n]);
            }
            got
        };
        let ((), got) = tokio::join!(send, recv);
        assert!(got == data, "the bytes the client sent");
        assert!(idle(&server), "everything read: no buffer held");
        // And back, in many writes, with a flush at the end.
        let back = async {
            for chunk in data.chunks(7_000) {
                server.write_all(chunk).await.unwrap();
            }
            server.flush().await.unwrap();
        };
        let mut echoed = vec![0u8; data.len()];
        let (_, r) = tokio::join!(back, client.read_exact(&mut echoed));
        r.unwrap();
        assert!(echoed == data, "the bytes the server sent");
        assert!(idle(&server), "everything written: no buffer held");
    }

    #[tokio::test]
    async fn the_peers_close_ends_reading_after_its_data_and_writing_goes_on() {
        let p = pair().await;
        let (mut client, mut server) = p.connect().await;
        client.write_all(b"last words").await.unwrap();
        // close_notify, then the TCP FIN.
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"last words");
        // TLS 1.3 lets this side go on after the peer's close_notify.
        server.write_all(b"goodbye").await.unwrap();
        server.shutdown().await.unwrap();
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"goodbye");
    }

    #[tokio::test]
    async fn a_reconnecting_client_resumes_with_its_ticket() {
        let p = pair().await;
        let (mut client, mut server) = p.connect().await;
        // The ticket comes after the handshake: read it by an exchange.
        server.write_all(b"x").await.unwrap();
        server.flush().await.unwrap();
        let mut one = [0u8; 1];
        client.read_exact(&mut one).await.unwrap();
        drop((client, server));
        let (_client, server) = p.connect().await;
        assert_eq!(
            server.handshake_kind(),
            Some(rustls::HandshakeKind::Resumed)
        );
    }

    #[tokio::test]
    async fn garbage_instead_of_a_handshake_is_an_error() {
        let p = pair().await;
        let addr = p.listener.local_addr().unwrap();
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let (s, _) = p.listener.accept().await.unwrap();
        let r = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            TlsStream::accept(Arc::clone(&p.server), s),
        )
        .await
        .expect("refused in time");
        assert!(r.is_err());
    }
}
