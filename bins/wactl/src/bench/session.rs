//! The bench's own client: one task per session on the bare wire codec
//! (`common::proto::frame`), with none of the client library's resends or
//! deduplication, so that what the server really sends is what is counted.
//! It dials (TLS over TCP or QUIC), says `Hello`, then sends what the
//! worker asks, acknowledges every `Deliver` in batches, pings on the
//! keepalive the server announced, and counts into [`Shared`].

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use common::client::Backoff;
use common::proto::limits::{ALPN, MAX_FRAME};
use common::proto::{ClientFrame, ServerFrame, client_frame, envelope, frame, server_frame};
use common::wire::FrameReader;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsConnector;

use super::stats::{AtomicHist, Seen, Tracker};
use super::tickets::Tickets;

/// The reconnect backoff's first ceiling and its cap.
const BACKOFF_INITIAL: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Longest wait for a connection to be established and welcomed.
const DIAL_TIMEOUT: Duration = Duration::from_secs(20);
/// Acks (or bytes) queued before they are written even while frames keep
/// arriving.
const MAX_QUEUED_ACKS: usize = 256;
const MAX_QUEUED_BYTES: usize = 32 * 1024;

/// Counters every session adds to; the worker reads them.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) logins: AtomicU64,
    pub(crate) connected: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) refused_retry_after: AtomicU64,
    pub(crate) disconnects: AtomicU64,
    /// Send commands taken from the queue (sent, or dropped for want of a
    /// connection).
    pub(crate) processed: AtomicU64,
    pub(crate) sent: AtomicU64,
    /// Send commands dropped because the session had no connection then
    /// (not sent, so neither expected nor lost).
    pub(crate) unsent: AtomicU64,
    pub(crate) accepted: AtomicU64,
    pub(crate) rejected: AtomicU64,
    /// First copies of bench messages.
    pub(crate) received: AtomicU64,
    pub(crate) duplicated: AtomicU64,
    pub(crate) redelivered: AtomicU64,
    pub(crate) reordered: AtomicU64,
    pub(crate) receipts: AtomicU64,
    pub(crate) pongs: AtomicU64,
    /// Dials that offered a session ticket (resumption attempted; the edge
    /// counts those it accepted: `wa_chat_tls_resumed`, `wa_chat_quic_resumed`).
    pub(crate) resumed: Arc<AtomicU64>,
}

impl Counters {
    pub(crate) fn copies(&self) -> u64 {
        self.received.load(Relaxed) + self.duplicated.load(Relaxed) + self.redelivered.load(Relaxed)
    }
}

/// What all sessions of a worker share.
pub(crate) struct Shared {
    pub(crate) dialer: Dialer,
    pub(crate) counters: Counters,
    /// Send (scheduled) to first receipt of each message.
    pub(crate) latency: AtomicHist,
    /// Dial to `Welcome`.
    pub(crate) logins: AtomicHist,
    /// Dials in flight at most.
    pub(crate) dialing: Semaphore,
    /// The zero of the timestamps inside message bodies.
    pub(crate) epoch: Instant,
    pub(crate) body: usize,
}

/// What the worker tells a session.
#[derive(Debug)]
pub(crate) enum Cmd {
    /// Send message number `n` to the peer, scheduled at `at`.
    Send { n: u64, at: Instant },
    /// Ask the server to confirm it has read everything so far.
    Ping,
    /// End the session politely (`Goodbye`) and stop.
    Goodbye,
    /// Cut the connection without a word, then dial again at once.
    Drop,
}

/// A test-only fault in one sender (`WACTL_BENCH_FAULT`): message 1 is
/// never sent, message 2 is sent twice (two ids), message 4 goes before 3.
#[derive(Default)]
pub(crate) struct Fault {
    held: Option<(u64, Instant)>,
}

/// One session: who it is and whom it sends to.
pub(crate) struct Session {
    pub(crate) index: usize,
    pub(crate) token: String,
    pub(crate) peer: Option<String>,
    pub(crate) fault: Option<Fault>,
    /// This session's own client configuration ([`Dialer::session_tls`]).
    pub(crate) tls: SessionTls,
}

/// A session's own client configuration, as a phone has: its TLS session
/// tickets ([`Tickets`]) and, over QUIC, its address validation tokens
/// (NEW_TOKEN), presented when it dials again. Built once per session,
/// before any measured window.
pub(crate) enum SessionTls {
    Tcp(TlsConnector),
    Quic(quinn::ClientConfig),
}

/// Sessions per client QUIC endpoint: each endpoint is one UDP socket and
/// one driver task, which must not become the load generator's own
/// bottleneck (one socket for 19,000 sessions dropped datagrams in its
/// kernel receive buffer).
const SESSIONS_PER_ENDPOINT: usize = 1000;
/// Client QUIC endpoints at most.
const MAX_ENDPOINTS: usize = 32;

type Reader = FrameReader<Box<dyn AsyncRead + Send + Unpin>>;
type Writer = Box<dyn AsyncWrite + Send + Unpin>;

struct Conn {
    reader: Reader,
    writer: Writer,
    out: BytesMut,
    quic: Option<quinn::Connection>,
    keepalive: Duration,
}

impl Conn {
    fn queue(&mut self, kind: client_frame::Kind) {
        frame::encode(&ClientFrame { kind: Some(kind) }, &mut self.out);
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.out.is_empty() {
            self.writer.write_all(&self.out).await?;
            self.out.clear();
            self.writer.flush().await?;
        }
        Ok(())
    }
}

/// Why a dial failed.
enum DialError {
    Refused { retry_after: Option<Duration> },
    Failed(String),
}

/// Opens connections to one edge.
pub(crate) struct Dialer {
    addr: SocketAddr,
    name: ServerName<'static>,
    /// The client configuration every session's own starts from.
    tls: tokio_rustls::rustls::ClientConfig,
    /// QUIC endpoints (none over TCP).
    quic: Vec<quinn::Endpoint>,
    /// Source addresses for TCP, taken in turn (empty: the kernel's choice).
    sources: Vec<IpAddr>,
}

impl Dialer {
    pub(crate) fn new(
        addr: SocketAddr,
        quic: bool,
        roots: &[CertificateDer<'static>],
        name: &str,
        sources: Vec<IpAddr>,
        sessions: usize,
    ) -> anyhow::Result<Self> {
        let tls = common::tls::client_config(roots, &[ALPN])?;
        let endpoints = if quic {
            let local: SocketAddr = match addr {
                SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
                SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
            };
            let n = sessions
                .div_ceil(SESSIONS_PER_ENDPOINT)
                .clamp(1, MAX_ENDPOINTS);
            (0..n)
                .map(|_| quinn::Endpoint::client(local))
                .collect::<Result<Vec<_>, _>>()?
        } else {
            Vec::new()
        };
        Ok(Self {
            addr,
            name: ServerName::try_from(name.to_string())?,
            tls,
            quic: endpoints,
            sources,
        })
    }

    /// A new session's own configuration; its resumptions are counted in
    /// `resumed`.
    pub(crate) fn session_tls(&self, resumed: &Arc<AtomicU64>) -> anyhow::Result<SessionTls> {
        let mut tls = self.tls.clone();
        tls.resumption = tokio_rustls::rustls::client::Resumption::store(Arc::new(Tickets::new(
            Arc::clone(resumed),
        )));
        Ok(if self.quic.is_empty() {
            SessionTls::Tcp(TlsConnector::from(Arc::new(tls)))
        } else {
            let mut c = common::tls::quic_client_config(tls)?;
            c.token_store(Arc::new(quinn::TokenMemoryCache::new(1, 2)));
            SessionTls::Quic(c)
        })
    }

    async fn dial(&self, s: &Session) -> Result<Conn, DialError> {
        match tokio::time::timeout(DIAL_TIMEOUT, self.dial_inner(s)).await {
            Ok(r) => r,
            Err(_) => Err(DialError::Failed(format!(
                "no Welcome within {DIAL_TIMEOUT:?}"
            ))),
        }
    }

    async fn dial_inner(&self, s: &Session) -> Result<Conn, DialError> {
        let (token, index) = (s.token.as_str(), s.index);
        let failed = |e: &dyn std::fmt::Display| DialError::Failed(e.to_string());
        let (reader, writer, quic): (Box<dyn AsyncRead + Send + Unpin>, Writer, _) = match &s.tls {
            SessionTls::Tcp(tls) => {
                let sock = match self.addr {
                    SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
                    SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
                }
                .map_err(|e| failed(&e))?;
                if !self.sources.is_empty() {
                    let ip = self.sources[index % self.sources.len()];
                    sock.bind(SocketAddr::new(ip, 0)).map_err(|e| failed(&e))?;
                }
                let tcp = sock.connect(self.addr).await.map_err(|e| failed(&e))?;
                let _ = tcp.set_nodelay(true);
                let s = tls
                    .connect(self.name.clone(), tcp)
                    .await
                    .map_err(|e| failed(&e))?;
                let (r, w) = tokio::io::split(s);
                (Box::new(r), Box::new(w), None)
            }
            SessionTls::Quic(cfg) => {
                let endpoint = &self.quic[index % self.quic.len()];
                let name = match &self.name {
                    ServerName::DnsName(n) => n.as_ref().to_string(),
                    other => format!("{other:?}"),
                };
                let conn = endpoint
                    .connect_with(cfg.clone(), self.addr, &name)
                    .map_err(|e| failed(&e))?
                    .await
                    .map_err(|e| failed(&e))?;
                let (send, recv) = conn.open_bi().await.map_err(|e| failed(&e))?;
                (Box::new(recv), Box::new(send), Some(conn))
            }
        };
        let mut conn = Conn {
            reader: FrameReader::new(reader, MAX_FRAME),
            writer,
            out: BytesMut::new(),
            quic,
            keepalive: Duration::from_secs(30),
        };
        conn.queue(client_frame::Kind::Hello(common::proto::Hello {
            token: token.to_string(),
            client: "wactl-bench".into(),
        }));
        conn.flush().await.map_err(|e| failed(&e))?;
        match conn.reader.read::<ServerFrame>().await {
            Ok(Some(ServerFrame { kind: Some(k) })) => match k {
                server_frame::Kind::Welcome(w) => {
                    conn.keepalive = Duration::from_secs(u64::from(w.keepalive_secs.max(1)));
                    Ok(conn)
                }
                server_frame::Kind::Error(e) => Err(refused(e.retry_after_ms)),
                server_frame::Kind::Goodbye(g) => Err(refused(g.retry_after_ms)),
                other => Err(DialError::Failed(format!("{other:?} before Welcome"))),
            },
            Ok(_) => Err(DialError::Failed("closed before Welcome".into())),
            Err(e) => Err(failed(&e)),
        }
    }

    /// Lets the QUIC endpoint tell the server its connections are gone.
    pub(crate) async fn close(&self) {
        let idle = futures_idle(&self.quic);
        let _ = tokio::time::timeout(Duration::from_secs(2), idle).await;
    }
}

async fn futures_idle(endpoints: &[quinn::Endpoint]) {
    for e in endpoints {
        e.wait_idle().await;
    }
}

fn refused(retry_after_ms: u64) -> DialError {
    DialError::Refused {
        retry_after: (retry_after_ms > 0).then(|| Duration::from_millis(retry_after_ms)),
    }
}

/// How a connection ended.
enum Ended {
    Goodbye,
    Dropped,
    Lost(String),
}

/// What a receiving session remembers across its connections.
struct State {
    tracker: Tracker,
    /// Connections so far.
    conn: u32,
    /// Ack batches written so far, and the highest one the server confirmed.
    batches: u32,
    confirmed: u32,
}

/// Runs session `s` until the worker says `Goodbye` (or drops the sender):
/// dial, serve, and after a drop or a lost connection dial again, waiting as
/// the client library does ([`Backoff`]: a refusal its retry-after plus
/// jitter under the backoff ceiling, a failure full jitter under a doubling
/// ceiling, here 100 ms to 5 s).
pub(crate) async fn run(mut s: Session, mut rx: mpsc::Receiver<Cmd>, sh: Arc<Shared>) {
    let mut st = State {
        tracker: Tracker::default(),
        conn: 0,
        batches: 0,
        confirmed: 0,
    };
    let mut backoff = Backoff::new(BACKOFF_INITIAL, BACKOFF_MAX);
    loop {
        let permit = sh.dialing.acquire().await;
        let t0 = Instant::now();
        let dialed = sh.dialer.dial(&s).await;
        drop(permit);
        let wait = match dialed {
            Ok(mut conn) => {
                sh.logins.record(t0.elapsed());
                sh.counters.logins.fetch_add(1, Relaxed);
                sh.counters.connected.fetch_add(1, Relaxed);
                st.conn += 1;
                backoff.reset();
                let ended = serve(&mut s, &mut conn, &mut rx, &sh, &mut st).await;
                sh.counters.connected.fetch_sub(1, Relaxed);
                match ended {
                    Ended::Goodbye => {
                        let _ = tokio::time::timeout(Duration::from_secs(2), async {
                            let _ = conn.flush().await;
                            let _ = conn.writer.shutdown().await;
                            while let Ok(Some(_)) = conn.reader.read::<ServerFrame>().await {}
                        })
                        .await;
                        if let Some(q) = conn.quic.take() {
                            q.close(0u32.into(), b"bye");
                        }
                        return;
                    }
                    Ended::Dropped => {
                        if let Some(q) = conn.quic.take() {
                            q.close(1u32.into(), b"storm");
                        }
                        continue;
                    }
                    Ended::Lost(why) => {
                        sh.counters.disconnects.fetch_add(1, Relaxed);
                        tracing::debug!("session {} lost: {why}", s.index);
                        backoff.next_delay(None, &mut rand::rng())
                    }
                }
            }
            Err(DialError::Refused { retry_after }) => {
                sh.counters.refused.fetch_add(1, Relaxed);
                if retry_after.is_some() {
                    sh.counters.refused_retry_after.fetch_add(1, Relaxed);
                }
                backoff.next_delay(retry_after, &mut rand::rng())
            }
            Err(DialError::Failed(why)) => {
                if sh.counters.failed.fetch_add(1, Relaxed) < 3 {
                    eprintln!("wactl bench: a login failed: {why}");
                }
                backoff.next_delay(None, &mut rand::rng())
            }
        };
        // Waiting to dial again; a Goodbye ends the session here.
        let sleep = tokio::time::sleep(wait);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                c = rx.recv() => match c {
                    None | Some(Cmd::Goodbye) => return,
                    // (Sends and pings of a session that is not there are
                    // not sent: counted as unsent, not as lost.)
                    Some(Cmd::Send { .. }) => {
                        sh.counters.processed.fetch_add(1, Relaxed);
                        sh.counters.unsent.fetch_add(1, Relaxed);
                    }
                    Some(_) => {}
                },
            }
        }
    }
}

enum Ev {
    Frame(Result<Option<ServerFrame>, common::wire::ReadError>),
    Cmd(Option<Cmd>),
    Flush,
    Tick,
}

async fn serve(
    s: &mut Session,
    conn: &mut Conn,
    rx: &mut mpsc::Receiver<Cmd>,
    sh: &Shared,
    st: &mut State,
) -> Ended {
    let mut acks: Vec<u64> = Vec::new();
    let mut next_ping = tokio::time::Instant::now() + conn.keepalive;
    loop {
        let pending = !acks.is_empty() || !conn.out.is_empty();
        let ev = tokio::select! {
            biased;
            r = conn.reader.read::<ServerFrame>() => Ev::Frame(r),
            c = rx.recv() => Ev::Cmd(c),
            _ = std::future::ready(()), if pending => Ev::Flush,
            _ = tokio::time::sleep_until(next_ping) => Ev::Tick,
        };
        match ev {
            Ev::Frame(Ok(Some(f))) => {
                if let Some(end) = on_frame(f, &mut acks, sh, st) {
                    return end;
                }
                if acks.len() < MAX_QUEUED_ACKS && conn.out.len() < MAX_QUEUED_BYTES {
                    continue;
                }
            }
            Ev::Frame(Ok(None)) => return Ended::Lost("closed by the server".into()),
            Ev::Frame(Err(e)) => return Ended::Lost(e.to_string()),
            Ev::Cmd(None) | Ev::Cmd(Some(Cmd::Goodbye)) => {
                flush_fault(s, conn, sh);
                queue_acks(conn, &mut acks, st);
                conn.queue(client_frame::Kind::Goodbye(common::proto::Goodbye {
                    code: 0,
                    retry_after_ms: 0,
                    reason: "bench done".into(),
                }));
                return Ended::Goodbye;
            }
            Ev::Cmd(Some(Cmd::Drop)) => return Ended::Dropped,
            Ev::Cmd(Some(Cmd::Send { n, at })) => {
                send(s, conn, sh, n, at);
                sh.counters.processed.fetch_add(1, Relaxed);
                if conn.out.len() < MAX_QUEUED_BYTES {
                    continue;
                }
            }
            Ev::Cmd(Some(Cmd::Ping)) => {
                flush_fault(s, conn, sh);
                queue_acks(conn, &mut acks, st);
                conn.queue(client_frame::Kind::Ping(common::proto::Ping {
                    nonce: u64::from(st.batches),
                }));
            }
            Ev::Flush => {}
            Ev::Tick => conn.queue(client_frame::Kind::Ping(common::proto::Ping {
                nonce: u64::from(st.batches),
            })),
        }
        queue_acks(conn, &mut acks, st);
        if let Err(e) = conn.flush().await {
            return Ended::Lost(format!("write failed: {e}"));
        }
        next_ping = tokio::time::Instant::now() + conn.keepalive;
    }
}

fn queue_acks(conn: &mut Conn, acks: &mut Vec<u64>, st: &mut State) {
    if !acks.is_empty() {
        conn.queue(client_frame::Kind::Ack(common::proto::Ack {
            seqs: std::mem::take(acks),
        }));
        st.batches += 1;
    }
}

fn on_frame(f: ServerFrame, acks: &mut Vec<u64>, sh: &Shared, st: &mut State) -> Option<Ended> {
    let c = &sh.counters;
    match f.kind? {
        server_frame::Kind::Deliver(d) => {
            acks.push(d.seq);
            match d.envelope.and_then(|e| e.content) {
                Some(envelope::Content::Body(b)) if b.len() >= 16 => {
                    let n = u64::from_be_bytes(b[..8].try_into().expect("8 bytes"));
                    let at = u64::from_be_bytes(b[8..16].try_into().expect("8 bytes"));
                    let seen = st.tracker.see(n, st.conn, st.batches + 1, st.confirmed);
                    match seen {
                        Seen::First { reordered } => {
                            c.received.fetch_add(1, Relaxed);
                            if reordered {
                                c.reordered.fetch_add(1, Relaxed);
                            }
                            let sent = sh.epoch + Duration::from_nanos(at);
                            sh.latency
                                .record(Instant::now().saturating_duration_since(sent));
                        }
                        Seen::Duplicate => {
                            c.duplicated.fetch_add(1, Relaxed);
                        }
                        Seen::Redelivered => {
                            c.redelivered.fetch_add(1, Relaxed);
                        }
                    }
                }
                Some(envelope::Content::Receipt(_)) => {
                    c.receipts.fetch_add(1, Relaxed);
                }
                _ => {}
            }
        }
        server_frame::Kind::Accepted(_) => {
            c.accepted.fetch_add(1, Relaxed);
        }
        server_frame::Kind::Error(e) => {
            if !e.id.is_empty() && c.rejected.fetch_add(1, Relaxed) < 3 {
                eprintln!(
                    "wactl bench: a message was refused: {} {}",
                    e.code, e.message
                );
            }
            if e.fatal {
                return Some(Ended::Lost(format!("error {}: {}", e.code, e.message)));
            }
        }
        server_frame::Kind::Pong(p) => {
            c.pongs.fetch_add(1, Relaxed);
            st.confirmed = st.confirmed.max(u32::try_from(p.nonce).unwrap_or(u32::MAX));
        }
        server_frame::Kind::Goodbye(g) => {
            return Some(Ended::Lost(format!("Goodbye {}: {}", g.code, g.reason)));
        }
        _ => {}
    }
    None
}

/// Queues message `n` (and applies the test-only fault, if armed).
fn send(s: &mut Session, conn: &mut Conn, sh: &Shared, n: u64, at: Instant) {
    if let Some(fault) = &mut s.fault {
        match n {
            1 => return,
            2 => {
                write_send(s, conn, sh, n, at, 0);
                write_send(s, conn, sh, n, at, 1);
                return;
            }
            3 => {
                fault.held = Some((n, at));
                return;
            }
            4 => {
                write_send(s, conn, sh, n, at, 0);
                flush_fault(s, conn, sh);
                return;
            }
            _ => flush_fault(s, conn, sh),
        }
    }
    write_send(s, conn, sh, n, at, 0);
}

/// Sends a message the fault held back.
fn flush_fault(s: &mut Session, conn: &mut Conn, sh: &Shared) {
    if let Some((n, at)) = s.fault.as_mut().and_then(|f| f.held.take()) {
        write_send(s, conn, sh, n, at, 0);
    }
}

fn write_send(s: &Session, conn: &mut Conn, sh: &Shared, n: u64, at: Instant, copy: u8) {
    let Some(peer) = &s.peer else { return };
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&n.to_be_bytes());
    id[8] = copy;
    let mut body = BytesMut::with_capacity(sh.body.max(16));
    body.put_u64(n);
    body.put_u64(u64::try_from(at.saturating_duration_since(sh.epoch).as_nanos()).unwrap_or(0));
    body.resize(sh.body.max(16), b'.');
    conn.queue(client_frame::Kind::Send(common::proto::Send {
        id: Bytes::copy_from_slice(&id),
        to: peer.clone(),
        body: body.freeze(),
    }));
    sh.counters.sent.fetch_add(1, Relaxed);
}
