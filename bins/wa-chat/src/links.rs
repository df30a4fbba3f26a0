//! Links to homes: one TLS connection per store node, opened by this edge,
//! authenticated with the cluster secret and multiplexed over every session
//! (docs/ARCHITECTURE.md, "The internal link").
//!
//! A [`Link`] is the long-lived slot for one store address; its task keeps
//! it connected (`common::link_keeper`, the reconnect loop every client of
//! the link shares), publishes the live [`LinkConn`] (`crate::link_conn`:
//! what the sessions queue on it and wait for), reads `LinkDown`
//! frames into the sessions (through the [`Hub`] and the pending appends)
//! and, when the connection breaks, fails everything that depended on it
//! before the keeper reconnects with backoff.
//!
//! Sessions never wait on a link: they queue frames with `try_send` into a
//! large per-connection queue (a writer task drains it), and learn the answer to
//! an append as an [`Event`] on their own queue.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::link::{LinkDown, LinkPing, link_down, link_up};
use common::link_dial::{Dialed, Dialer};
use common::link_keeper::{LinkKeeper, Redial};
use common::link_liveness::{Beat, Liveness};
use common::proto::Code;
use common::timer::sleep_until_some;
use common::wire::FrameReader;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::hub::{Event, Hub};
pub use crate::link_conn::LinkConn;

/// Frames queued towards one store before the link counts as stuck. Sessions
/// bound their own requests, so this is reached only by a store that stopped
/// reading.
const LINK_QUEUE: usize = 1 << 16;
/// Longest wait for TCP connect, TLS and `AuthOk` together.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often appends are checked against the request timeout.
const EXPIRY_CHECK: Duration = Duration::from_millis(250);
/// How long the writer gets to flush its last frames (the `Detach`es of the
/// sessions that just ended) when the edge stops.
const FINAL_FLUSH: Duration = Duration::from_secs(2);

/// What every link needs to connect and authenticate.
pub struct LinkSettings {
    /// TLS, cluster secret and this edge's name (`common::link_dial`).
    pub dialer: Dialer,
    /// The epoch of the edge's current cluster map, sent in `Auth`.
    pub epoch: AtomicU64,
    /// Heartbeats and deadlines (`[link]`).
    pub times: LinkTimes,
}

/// How long the edge waits on a home (`[link]` in the config).
#[derive(Debug, Clone, Copy)]
pub struct LinkTimes {
    /// A ping this often.
    pub heartbeat: Duration,
    /// Nothing from the home for this long: the link is closed, and every
    /// session that depended on it with it (`UNAVAILABLE`).
    pub timeout: Duration,
    /// An append unanswered this long closes its session with
    /// `UNAVAILABLE` (the client resends it on its next one).
    pub request_timeout: Duration,
}

impl LinkSettings {
    pub fn set_epoch(&self, epoch: u64) {
        self.epoch.store(epoch, Ordering::Relaxed);
    }
}

/// The link is down, or its queue is full: the request cannot go now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the link to the home is down")]
pub struct LinkDownError;

/// The slot for one store node.
pub struct Link {
    pub addr: SocketAddr,
    keeper: LinkKeeper,
    state: watch::Sender<Option<Arc<LinkConn>>>,
    /// Cancelled when no island of the map has this address as primary
    /// any more ([`Link::retire`]).
    retired: CancellationToken,
}

impl Link {
    pub fn new(addr: SocketAddr, server_name: ServerName<'static>) -> Link {
        Link {
            addr,
            keeper: LinkKeeper::new(addr, server_name, CONNECT_TIMEOUT, Redial::Always),
            state: watch::Sender::new(None),
            retired: CancellationToken::new(),
        }
    }

    /// The map no longer names this store a primary: close the connection
    /// (the sessions that depended on it end with `UNAVAILABLE` and their
    /// clients resend, in order, to the new home) and stop redialing. A
    /// store that vanished from the network (a partition) would otherwise
    /// hold those sessions and their sends until TCP gives up.
    pub fn retire(&self) {
        self.retired.cancel();
    }

    /// The live connection, if the link is up.
    pub fn current(&self) -> Option<Arc<LinkConn>> {
        self.state.borrow().clone()
    }

    /// The live connection, waiting for one until `deadline` (or until
    /// the link is retired: its store is no home any more).
    pub async fn wait_up(&self, deadline: Instant) -> Option<Arc<LinkConn>> {
        let mut rx = self.state.subscribe();
        tokio::select! {
            r = tokio::time::timeout_at(deadline, rx.wait_for(Option::is_some)) => match r {
                Ok(Ok(c)) => c.clone(),
                _ => None,
            },
            () = self.retired.cancelled() => None,
        }
    }

    /// Keeps the link up until `stop` (the reconnect loop is
    /// `common::link_keeper`'s): serve each connection, fail what depended
    /// on it when it breaks, back off, reconnect.
    pub async fn run(
        self: Arc<Self>,
        settings: Arc<LinkSettings>,
        hub: Arc<Hub>,
        stop: CancellationToken,
    ) {
        let mine = stop.child_token();
        let (link, hub, stopping) = (&*self, &*hub, &mine);
        let times = settings.times;
        let run = self.keeper.run(
            &settings.dialer,
            || settings.epoch.load(Ordering::Relaxed),
            &mine,
            move |Dialed {
                      reader,
                      writer,
                      heartbeat,
                      ..
                  }| { link.serve(reader, writer, (heartbeat, times), hub, stopping) },
        );
        tokio::pin!(run);
        tokio::select! {
            () = &mut run => return,
            () = self.retired.cancelled() => {}
        }
        tracing::info!("no island of the cluster map has this store as primary: link closed");
        mine.cancel();
        run.await;
    }

    /// Publishes a fresh connection, runs it until it breaks or `stop`, then
    /// withdraws it and fails everything that depended on it.
    async fn serve<R, W>(
        &self,
        reader: FrameReader<R>,
        writer: W,
        (heartbeat, times): (bool, LinkTimes),
        hub: &Hub,
        stop: &CancellationToken,
    ) where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (control, control_rx) = mpsc::channel(LINK_QUEUE);
        let (bulk, bulk_rx) = mpsc::channel(LINK_QUEUE);
        let conn = Arc::new(LinkConn::new(control, bulk));
        let dead = CancellationToken::new();
        let writer = tokio::spawn(
            common::wire::write_link(
                writer,
                control_rx,
                Some(bulk_rx),
                dead.clone(),
                stop.clone(),
            )
            .in_current_span(),
        );
        self.state.send_replace(Some(Arc::clone(&conn)));
        let live = heartbeat
            .then(|| Liveness::new(std::time::Instant::now(), times.heartbeat, times.timeout));
        read_loop(reader, &conn, hub, &dead, stop, live, times.request_timeout).await;
        self.state.send_replace(None);
        let (pending, homed) = conn.fail();
        if pending + homed > 0 {
            tracing::info!(
                pending,
                sessions = homed,
                "sessions that depended on the link are closed"
            );
        }
        if stop.is_cancelled() {
            // Let the writer deliver what the ending sessions queued (Detach).
            let _ = tokio::time::timeout(FINAL_FLUSH, writer).await;
        } else {
            dead.cancel();
            let _ = writer.await;
        }
    }
}

/// Reads the store's frames into the sessions until the link breaks, the
/// store falls silent for the heartbeat's timeout (`live`, if the store
/// answers pings) or `stop`; gives up appends unanswered for
/// `request_timeout` on the way.
async fn read_loop<R: AsyncRead + Unpin>(
    mut reader: FrameReader<R>,
    conn: &LinkConn,
    hub: &Hub,
    dead: &CancellationToken,
    stop: &CancellationToken,
    mut live: Option<Liveness>,
    request_timeout: Duration,
) {
    let mut next_expiry = Instant::now() + EXPIRY_CHECK;
    let mut nonce = 0u64;
    loop {
        let beat_at = live.as_ref().map(|l| Instant::from_std(l.next()));
        let frame = tokio::select! {
            f = reader.read::<LinkDown>() => f,
            () = dead.cancelled() => return,
            () = stop.cancelled() => return,
            () = tokio::time::sleep_until(next_expiry) => {
                let now = Instant::now();
                next_expiry = now + EXPIRY_CHECK;
                if let Some(cutoff) = now.checked_sub(request_timeout) {
                    let n = conn.expire(cutoff);
                    if n > 0 {
                        tracing::warn!(appends = n, timeout = %humantime::format_duration(request_timeout), "appends unanswered by the home within the request timeout; their sessions are closed with UNAVAILABLE");
                    }
                }
                continue;
            }
            () = sleep_until_some(beat_at) => {
                let l = live.as_mut().expect("a beat needs liveness");
                let now = std::time::Instant::now();
                match l.poll(now) {
                    Beat::Ping => {
                        nonce += 1;
                        let _ = conn.queue(link_up::Kind::Ping(LinkPing { nonce }));
                    }
                    Beat::Dead => {
                        tracing::warn!(silent = %humantime::format_duration(l.silent_for(now)), "the store sent nothing for the link timeout; closing the link");
                        return;
                    }
                    Beat::Wait => {}
                }
                continue;
            }
        };
        if let Some(l) = &mut live {
            l.heard(std::time::Instant::now());
        }
        let kind = match frame {
            Ok(Some(LinkDown { kind: Some(k) })) => k,
            Ok(Some(LinkDown { kind: None })) => {
                unreachable!("decode_kinded refuses kindless frames")
            }
            Ok(None) => {
                tracing::info!("the store closed the link");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "link read failed");
                return;
            }
        };
        match kind {
            link_down::Kind::AuthOk(_) => tracing::debug!("extra AuthOk ignored"),
            link_down::Kind::Pong(_) => {}
            link_down::Kind::AppendResult(r) => conn.resolve(r),
            link_down::Kind::GroupResult(r) => conn.resolve_group(r),
            link_down::Kind::Push(p) => {
                if let (Some(h), Some(envelope)) = (hub.get(p.session), p.envelope) {
                    h.must(Event::Push {
                        seq: p.seq,
                        envelope,
                    });
                }
            }
            link_down::Kind::Typing(t) => {
                if let Some(h) = hub.get(t.session) {
                    h.may(Event::Typing {
                        from: t.from,
                        typing: t.typing,
                    });
                }
            }
            link_down::Kind::Presence(p) => {
                if let Some(h) = hub.get(p.session) {
                    h.may(Event::Presence {
                        user: p.user,
                        online: p.online,
                        last_seen_ms: p.last_seen_ms,
                    });
                }
            }
            link_down::Kind::PushSet(p) => {
                if let Some(h) = hub.get(p.session) {
                    h.must(Event::PushSet {
                        id: p.id,
                        code: p.code,
                    });
                }
            }
            link_down::Kind::Attached(a) => {
                if let Some(h) = hub.get(a.session) {
                    h.must(Event::Attached);
                }
            }
            link_down::Kind::Kick(k) => {
                if let Some(h) = hub.get(k.session) {
                    h.kill(Code::from_u32(k.code).unwrap_or(Code::Internal));
                }
            }
            // Answers to requests this edge never makes (wa-register's).
            link_down::Kind::KvResult(_)
            | link_down::Kind::RevokeResult(_)
            | link_down::Kind::DeviceChecked(_)
            | link_down::Kind::GroupDelivered(_)
            | link_down::Kind::GroupsCounted(_)
            | link_down::Kind::HandoffResult(_)
            | link_down::Kind::Replicate(_)
            | link_down::Kind::SnapshotPage(_)
            | link_down::Kind::SnapshotDone(_) => {
                tracing::debug!("unexpected key-value, revoke or replication frame ignored")
            }
        }
    }
}
