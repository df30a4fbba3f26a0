//! The client listeners: TLS 1.3 over TCP and QUIC. Each accepted connection
//! becomes one task running [`session::serve`] inside a span naming its peer
//! and transport. The handshake counts against the auth timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::Ctx;
use crate::admission::{Ticket, Verdict};
use crate::session::{self, Conn};
use crate::transport::Sink;

/// Logs once per transport what one session's task carries (its future's
/// size: what every connection costs in the task itself, before any heap
/// buffer), for the memory accounting in docs/BENCHMARKS.md.
fn note_task_size<F>(once: &'static std::sync::Once, transport: &'static str, task: &F) {
    once.call_once(|| {
        tracing::info!(
            transport,
            bytes = std::mem::size_of_val(task),
            "session task size"
        );
    });
}

/// The span of a connection's login (accept, handshake, `Hello`, attach):
/// its lines carry the peer, the transport and, once known, the session id.
/// A session's later lines carry its session id and user instead (an idle
/// session's span cost it about 400 bytes: docs/BENCHMARKS.md).
fn span(peer: SocketAddr, transport: &'static str) -> tracing::Span {
    tracing::info_span!("conn", %peer, transport, session = tracing::field::Empty)
}

/// Connections accepted whose handshake or admission is not over, plus
/// the sessions: past `max_connections` a new one gets no handshake.
fn over_capacity(ctx: &Ctx) -> bool {
    ctx.active() + ctx.pending.load(Ordering::Relaxed) >= ctx.limits.max_connections
}

/// Counts a connection in `ctx.pending` until its session starts.
struct Pending<'a>(&'a Ctx);

impl<'a> Pending<'a> {
    fn enter(ctx: &'a Ctx) -> Pending<'a> {
        ctx.pending.fetch_add(1, Ordering::Relaxed);
        Pending(ctx)
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The admission of a connection accepted just now (see
/// [`crate::admission`]): waits for its slot and its turn, up to the auth
/// deadline. `None`: the deadline or shutdown came first.
async fn admit(ctx: &Ctx, deadline: Instant) -> Option<Ticket> {
    let verdict = ctx.admission.decide_now();
    let wait = async {
        if let Verdict::Admit(at) = verdict {
            tokio::time::sleep_until(at).await;
        }
        ctx.admission.turn().await
    };
    let turn = tokio::select! {
        r = tokio::time::timeout_at(deadline, wait) => r.ok()?,
        () = ctx.shutdown.cancelled() => return None,
    };
    Some(match verdict {
        Verdict::Admit(_) => Ticket::Admitted(turn),
        Verdict::Refuse(after) => Ticket::Refused(after, turn),
    })
}

/// A TLS connection's way to its session: admission, then the handshake,
/// both within the auth deadline. `None`: refused on the way, or shutdown.
async fn tls_login(
    tcp: tokio::net::TcpStream,
    acceptor: Arc<rustls::ServerConfig>,
    ctx: &Ctx,
) -> Option<(Conn, Instant, Ticket)> {
    let deadline = Instant::now() + ctx.limits.auth_timeout;
    let _pending = Pending::enter(ctx);
    let ticket = admit(ctx, deadline).await?;
    let tls = tokio::select! {
        r = tokio::time::timeout_at(deadline, crate::tls_stream::TlsStream::accept(acceptor, tcp)) => r,
        () = ctx.shutdown.cancelled() => return None,
    };
    let tls = match tls {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            return None;
        }
        Err(_) => {
            tracing::debug!("TLS handshake timed out");
            return None;
        }
    };
    if tls.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
        ctx.metrics.tls_resumed.inc();
    }
    let (r, w) = tokio::io::split(tls);
    let conn = Conn {
        source: Box::new(r),
        sink: Sink::Tls(w),
        linger: true,
    };
    Some((conn, deadline, ticket))
}

/// Accepts TLS connections until shutdown.
pub async fn serve_tcp(
    listener: TcpListener,
    acceptor: Arc<rustls::ServerConfig>,
    ctx: Arc<Ctx>,
    sessions: TaskTracker,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            () = ctx.shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: wait a little rather than spin.
                    tracing::warn!(error = %e, "TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if over_capacity(&ctx) {
            // Past max_connections the cheapest refusal: no handshake.
            drop(tcp);
            continue;
        }
        let _ = tcp.set_nodelay(true);
        let ctx = Arc::clone(&ctx);
        let acceptor = Arc::clone(&acceptor);
        let task = async move {
            // Both phases boxed: an awaited future is laid out beside the
            // other states of the future awaiting it, so the task an idle
            // session keeps all its life would otherwise also carry the
            // handshake's (docs/BENCHMARKS.md, "Idle sessions: the task").
            // The span is the login's (see `session::serve`). It and the
            // login's result end in this block, so that their slots are not
            // kept in the task while the session runs.
            let session = {
                let span = span(peer, "tcp");
                let login = Box::pin(tls_login(tcp, acceptor, &ctx).instrument(span.clone())).await;
                login.map(|(conn, deadline, ticket)| {
                    Box::pin(session::serve(conn, ctx, deadline, ticket, span))
                })
            };
            if let Some(session) = session {
                session.await;
            }
        };
        static TCP: std::sync::Once = std::sync::Once::new();
        note_task_size(&TCP, "tcp", &task);
        sessions.spawn(task);
    }
}

/// A QUIC connection's way to its session: admission, the handshake and
/// the client's first stream, within the auth deadline. `None`: refused on
/// the way, or shutdown.
async fn quic_login(incoming: quinn::Incoming, ctx: &Ctx) -> Option<(Conn, Instant, Ticket)> {
    let deadline = Instant::now() + ctx.limits.auth_timeout;
    let _pending = Pending::enter(ctx);
    let Some(ticket) = admit(ctx, deadline).await else {
        incoming.ignore();
        return None;
    };
    let open = async {
        let conn = incoming.await?;
        let (send, recv) = conn.accept_bi().await?;
        Ok::<_, quinn::ConnectionError>((conn, send, recv))
    };
    let opened = tokio::select! {
        r = tokio::time::timeout_at(deadline, open) => r,
        () = ctx.shutdown.cancelled() => return None,
    };
    let (qc, send, recv) = match opened {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "QUIC handshake failed");
            return None;
        }
        Err(_) => {
            tracing::debug!("QUIC handshake timed out");
            return None;
        }
    };
    let conn = Conn {
        source: Box::new(recv),
        sink: Sink::Quic { send, conn: qc },
        linger: false,
    };
    Some((conn, deadline, ticket))
}

/// Accepts QUIC connections until shutdown, then refuses new ones. The
/// session runs on the first bidirectional stream the client opens.
pub async fn serve_quic(endpoint: quinn::Endpoint, ctx: Arc<Ctx>, sessions: TaskTracker) {
    loop {
        let incoming = tokio::select! {
            () = ctx.shutdown.cancelled() => break,
            i = endpoint.accept() => match i {
                Some(i) => i,
                None => break,
            },
        };
        let peer = incoming.remote_address();
        if over_capacity(&ctx) {
            // Past max_connections: a stateless CONNECTION_REFUSED.
            incoming.refuse();
            continue;
        }
        if incoming.remote_address_validated() {
            ctx.metrics.quic_token_validated.inc();
        }
        let ctx = Arc::clone(&ctx);
        let task = async move {
            // (Both phases boxed, as for TLS above.)
            let session = {
                let span = span(peer, "quic");
                let login = Box::pin(quic_login(incoming, &ctx).instrument(span.clone())).await;
                login.map(|(conn, deadline, ticket)| {
                    Box::pin(session::serve(conn, ctx, deadline, ticket, span))
                })
            };
            if let Some(session) = session {
                session.await;
            }
        };
        static QUIC: std::sync::Once = std::sync::Once::new();
        note_task_size(&QUIC, "quic", &task);
        sessions.spawn(task);
    }
    endpoint.set_server_config(None);
}
