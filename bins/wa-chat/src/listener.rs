//! The client listeners: TLS 1.3 over TCP and QUIC. Each accepted connection
//! becomes one task running [`session::serve`] inside a span naming its peer
//! and transport. The handshake counts against the auth timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::Ctx;
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

fn span(peer: SocketAddr, transport: &'static str) -> tracing::Span {
    tracing::info_span!("conn", %peer, transport, session = tracing::field::Empty)
}

/// Accepts TLS connections until shutdown.
pub async fn serve_tcp(
    listener: TcpListener,
    acceptor: TlsAcceptor,
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
        let _ = tcp.set_nodelay(true);
        let ctx = Arc::clone(&ctx);
        let acceptor = acceptor.clone();
        let task = async move {
            let deadline = Instant::now() + ctx.limits.auth_timeout;
            let tls = tokio::select! {
                r = tokio::time::timeout_at(deadline, acceptor.accept(tcp)) => r,
                () = ctx.shutdown.cancelled() => return,
            };
            let tls = match tls {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => return tracing::debug!(error = %e, "TLS handshake failed"),
                Err(_) => return tracing::debug!("TLS handshake timed out"),
            };
            if tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
                ctx.metrics.tls_resumed.inc();
            }
            let (r, w) = tokio::io::split(tls);
            let conn = Conn {
                source: Box::new(r),
                sink: Sink::Tls(w),
                linger: true,
            };
            session::serve(conn, ctx, deadline).await;
        };
        static TCP: std::sync::Once = std::sync::Once::new();
        note_task_size(&TCP, "tcp", &task);
        sessions.spawn(task.instrument(span(peer, "tcp")));
    }
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
        let ctx = Arc::clone(&ctx);
        let task = async move {
            let deadline = Instant::now() + ctx.limits.auth_timeout;
            let open = async {
                let conn = incoming.await?;
                let (send, recv) = conn.accept_bi().await?;
                Ok::<_, quinn::ConnectionError>((conn, send, recv))
            };
            let opened = tokio::select! {
                r = tokio::time::timeout_at(deadline, open) => r,
                () = ctx.shutdown.cancelled() => return,
            };
            let (qc, send, recv) = match opened {
                Ok(Ok(x)) => x,
                Ok(Err(e)) => return tracing::debug!(error = %e, "QUIC handshake failed"),
                Err(_) => return tracing::debug!("QUIC handshake timed out"),
            };
            let conn = Conn {
                source: Box::new(recv),
                sink: Sink::Quic { send, conn: qc },
                linger: false,
            };
            session::serve(conn, ctx, deadline).await;
        };
        static QUIC: std::sync::Once = std::sync::Once::new();
        note_task_size(&QUIC, "quic", &task);
        sessions.spawn(task.instrument(span(peer, "quic")));
    }
    endpoint.set_server_config(None);
}
