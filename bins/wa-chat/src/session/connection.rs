//! One connection from its transport handshake to its close: the checks
//! before `Hello` (a refused login, the connection limit, a draining edge),
//! the login (`open::login`, in the connection's span), the session's loop,
//! then the last frames written and a closed TCP connection drained.

use std::sync::Arc;
use std::time::Duration;

use common::proto::Code;
use common::proto::limits::MAX_FRAME;
use common::wire::FrameReader;
use tokio::io::AsyncReadExt;
use tokio::time::Instant;
use tracing::Instrument;

use super::DRAINING;
use super::close::Close;
use super::open;
use crate::Ctx;
use crate::admission::Ticket;
use crate::outbound::Outbound;
use crate::transport::{Sink, Source};
use crate::writer::Writer;

/// How long the writer gets to send the last frames before it is cut.
const WRITER_GRACE: Duration = Duration::from_secs(2);
/// How long a closed TCP connection is drained so that a client still
/// sending does not get a reset that destroys our last frame.
const LINGER: Duration = Duration::from_secs(1);

/// A connection that finished its transport handshake.
pub struct Conn {
    pub source: Source,
    pub sink: Sink,
    /// Drain the reading side after closing (TCP).
    pub linger: bool,
}

/// Serves one connection until it ends. `deadline` is the end of the auth
/// window (it started when the connection was accepted).
///
/// (An `async move` block rather than an `async fn`: an `async fn` copies
/// its arguments into locals, and its future keeps both copies.)
///
/// `span` (the connection's) covers the login only: once welcomed, the
/// session's lines carry its id and user, and it holds no span.
#[allow(clippy::manual_async_fn)]
pub fn serve(
    conn: Conn,
    ctx: Arc<Ctx>,
    deadline: Instant,
    ticket: Ticket,
    span: tracing::Span,
) -> impl Future<Output = ()> + Send {
    async move {
        let transport = match conn.sink {
            Sink::Tls(_) => "tcp",
            Sink::Quic { .. } => "quic",
        };
        let out = Arc::new(Outbound::new(ctx.limits.outbound_queue));
        let mut writer = Writer::new(conn.sink, &ctx.session_buffers);
        let mut reader =
            FrameReader::releasing(conn.source, MAX_FRAME, ctx.session_buffers.clone());
        let _active = Active::enter(&ctx);
        let _counted = ctx.metrics.connection(transport);

        let (turn, refused) = match ticket {
            Ticket::Admitted(turn) => (turn, None),
            Ticket::Refused(after, turn) => (turn, Some(after)),
        };
        let mut turn = Some(turn);
        let refusal = if let Some(after) = refused {
            // Before `Hello` is read: a refused login costs the edge its
            // handshake and nothing more.
            ctx.metrics.logins_refused.inc();
            Some(Close::Goodbye(
                Code::Overloaded,
                after.as_millis() as u64,
                "too many logins at once; retry after retry_after_ms".into(),
            ))
        } else if ctx.active() > ctx.limits.max_connections {
            Some(Close::Goodbye(
                Code::Overloaded,
                ctx.retry_after_ms(),
                "too many connections".into(),
            ))
        } else if ctx.draining.load(std::sync::atomic::Ordering::Relaxed) {
            Some(Close::Goodbye(
                Code::ShuttingDown,
                ctx.retry_after_ms(),
                DRAINING.into(),
            ))
        } else {
            None
        };
        let close = match refusal {
            Some(close) => {
                span.in_scope(|| log_closed(&close));
                close
            }
            None => {
                // The login's phases and the session's loop are boxed (on the
                // heap only while they run): rustc lays an awaited future out
                // beside the other states of the future awaiting it, and keeps
                // a local's slot for as long as it is in scope. So the login's
                // results end in this block, the session moves into its loop's
                // future, and this task keeps only what outlives the loop.
                let login = open::login(&mut reader, &ctx, deadline, &out).instrument(span);
                let started = match Box::pin(login).await {
                    Err(close) => Err(close),
                    Ok((s, rx, early)) => {
                        // Welcomed: the next login may start.
                        turn = None;
                        Ok(Box::pin(s.run(&mut reader, &mut writer, rx, early)))
                    }
                };
                match started {
                    Ok(session) => session.await,
                    Err(close) => close,
                }
            }
        };
        drop(turn);
        out.end(close.end());
        // (A client that does not read, its socket buffer full, is cut after
        // the grace. Boxed, like the linger below: the session's future does
        // not carry their states all its life.)
        let _ = Box::pin(tokio::time::timeout(WRITER_GRACE, writer.finish(&out))).await;
        if conn.linger {
            let mut sink = vec![0u8; 4096];
            let inner = reader.get_mut();
            let _ = Box::pin(tokio::time::timeout(LINGER, async {
                while matches!(inner.read(&mut sink).await, Ok(n) if n > 0) {}
            }))
            .await;
        }
    }
}

/// Logs how a connection that never became a session ended (within its
/// span).
pub(super) fn log_closed(close: &Close) {
    match close.code() {
        // At shutdown every session says so; one line for all is in lib.rs.
        Some(Code::ShuttingDown) | None => tracing::debug!("closed"),
        Some(code) => tracing::info!(code = code.name(), "closed"),
    }
}

/// Counts the connection in `ctx` while it lives.
struct Active<'a>(&'a Ctx);

impl<'a> Active<'a> {
    fn enter(ctx: &'a Ctx) -> Active<'a> {
        ctx.active
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Active(ctx)
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0
            .active
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}
