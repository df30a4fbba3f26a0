//! The internal link listener: edges connect over TLS, prove the cluster
//! secret, then stream `LinkUp` operations into the home and read `LinkDown`
//! answers and pushes (docs/ARCHITECTURE.md, "The internal link").
//!
//! Per link: a reader (this task) that turns frames into home operations, in
//! order, and a writer task that drains the link's bounded queue onto the
//! socket, flushing when the queue runs dry.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::link::{LinkAuthOk, LinkUp, MAX_LINK_FRAME, link_down, link_up};
use common::proto::Code;
use common::wire::FrameReader;
use subtle::ConstantTimeEq;
use tokio::io::AsyncRead;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::home::{Home, LinkTx, Op};
use crate::ownership::Ownership;

/// How long an edge has to finish TLS and send `Auth`.
const AUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames queued towards one edge before it counts as stuck and is cut.
/// Pushes are windowed per session, so this is reached only by an edge that
/// stopped reading.
const LINK_QUEUE: usize = 1 << 16;

/// What every link needs.
pub struct LinkCtx {
    pub home: Home,
    pub secret: Vec<u8>,
    pub node: String,
    /// Which users this node serves, under which epoch.
    pub ownership: Arc<Ownership>,
    pub acceptor: TlsAcceptor,
    /// What a secondary following this primary is sent.
    pub replication: Option<Arc<crate::replication::sender::Source>>,
    next_link: AtomicU64,
    /// Where the links up are counted (the admin listener's
    /// `wa_store_links`).
    metrics: Option<Arc<crate::metrics::Metrics>>,
    /// Connections not authenticated yet ([`crate::gate`]).
    unauthenticated: Arc<tokio::sync::Semaphore>,
    pub refusals: Arc<crate::gate::Refusals>,
    /// Handles `LinkUp::Group` (`None`: refused `UNAVAILABLE`).
    pub groups: Option<Arc<crate::groups::Groups>>,
}

impl LinkCtx {
    pub fn new(
        home: Home,
        secret: Vec<u8>,
        node: String,
        ownership: Arc<Ownership>,
        acceptor: TlsAcceptor,
    ) -> Self {
        LinkCtx {
            home,
            secret,
            node,
            ownership,
            acceptor,
            replication: None,
            next_link: AtomicU64::new(1),
            metrics: None,
            unauthenticated: Arc::new(tokio::sync::Semaphore::new(
                crate::gate::MAX_UNAUTHENTICATED,
            )),
            refusals: Arc::default(),
            groups: None,
        }
    }

    /// Counts the links up in `metrics.links`.
    pub fn counting_links(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }
}

/// Accepts links until `shutdown`, then waits for every link reader to stop.
/// Link writers are spawned on `writers` and outlive this: they deliver the
/// answers to appends that are still waiting for their flush.
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<LinkCtx>,
    shutdown: CancellationToken,
    writers: TaskTracker,
) {
    let readers = TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: wait a little rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let span = tracing::info_span!("link", %peer);
        let Ok(permit) = Arc::clone(&ctx.unauthenticated).try_acquire_owned() else {
            // (Dropped: closed at once, before any TLS work.)
            ctx.refusals
                .refused("too many connections waiting to authenticate", &span);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let ctx = Arc::clone(&ctx);
        let shutdown = shutdown.clone();
        let writers = writers.clone();
        readers.spawn(link(tcp, ctx, shutdown, writers, span, permit));
    }
    drop(listener);
    readers.close();
    readers.wait().await;
}

/// One side of an authenticated link: its reader and writer halves, the
/// peer's name and whether it is a secondary asking to follow.
pub(crate) type Authenticated = (
    FrameReader<tokio::io::ReadHalf<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>>,
    tokio::io::WriteHalf<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>,
    String,
    Option<common::link::Follow>,
);

/// TLS, then `Auth` with the cluster secret within [`AUTH_TIMEOUT`];
/// `None` (logged) if the peer fails either or `shutdown` comes first.
pub(crate) async fn authenticate(
    tcp: tokio::net::TcpStream,
    acceptor: &TlsAcceptor,
    secret: &[u8],
    shutdown: &CancellationToken,
    span: &tracing::Span,
    refusals: &crate::gate::Refusals,
) -> Option<Authenticated> {
    let auth = async {
        let tls = acceptor
            .accept(tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        let (r, w) = tokio::io::split(tls);
        let mut reader = FrameReader::new(r, MAX_LINK_FRAME);
        match reader.read::<LinkUp>().await {
            Ok(Some(LinkUp {
                kind: Some(link_up::Kind::Auth(a)),
            })) => {
                if bool::from(a.secret.as_ref().ct_eq(secret)) {
                    Ok((reader, w, a.edge, a.follow))
                } else {
                    Err("wrong cluster secret".to_string())
                }
            }
            Ok(Some(_)) => Err("first frame is not Auth".into()),
            Ok(None) => Err("closed before Auth".into()),
            Err(e) => Err(format!("bad first frame: {e}")),
        }
    };
    match tokio::select! {
        r = tokio::time::timeout(AUTH_TIMEOUT, auth) => r.unwrap_or_else(|_| Err("no Auth within 10 s".into())),
        () = shutdown.cancelled() => return None,
    } {
        Ok(x) => Some(x),
        Err(reason) => {
            refusals.refused(&reason, span);
            None
        }
    }
}

async fn link(
    tcp: tokio::net::TcpStream,
    ctx: Arc<LinkCtx>,
    shutdown: CancellationToken,
    writers: TaskTracker,
    span: tracing::Span,
    unauthenticated: tokio::sync::OwnedSemaphorePermit,
) {
    use tracing::Instrument;
    let authenticated = authenticate(
        tcp,
        &ctx.acceptor,
        &ctx.secret,
        &shutdown,
        &span,
        &ctx.refusals,
    )
    .await;
    drop(unauthenticated);
    let Some((reader, w, edge, follow)) = authenticated else {
        return;
    };
    if let Some(follow) = follow {
        follower(reader, w, &ctx, follow, &edge, shutdown)
            .instrument(span)
            .await;
        return;
    }
    let id = ctx.next_link.fetch_add(1, Ordering::Relaxed);
    span.in_scope(|| tracing::info!(link = id, %edge, "link up"));
    if let Some(m) = &ctx.metrics {
        crate::metrics::Metrics::add(&m.links, 1);
        m.edges.up(id, &edge);
    }
    let dead = CancellationToken::new();
    let (control, control_rx) = mpsc::channel(LINK_QUEUE);
    let (bulk, bulk_rx) = mpsc::channel(LINK_QUEUE);
    let link = LinkTx::with_bulk(id, control, bulk, dead.clone());
    // (Answers and kicks before pushes: `home::LinkTx`.)
    writers.spawn(
        common::wire::write_link(
            w,
            control_rx,
            Some(bulk_rx),
            dead.clone(),
            CancellationToken::new(),
        )
        .instrument(span.clone()),
    );
    let refill = tokio::spawn(refill(link.clone(), ctx.home.clone(), dead.clone()));
    link.send(link_down::Kind::AuthOk(LinkAuthOk {
        node: ctx.node.clone(),
        epoch: ctx.ownership.current().epoch(),
        heartbeat: true,
    }));
    read_loop(reader, &link, &ctx, &shutdown, &dead)
        .instrument(span.clone())
        .await;
    refill.abort();
    // After the link's last operation, so nothing of it is left behind.
    let _ = ctx.home.submit(Op::LinkGone { link: id }).await;
    if let Some(m) = &ctx.metrics {
        crate::metrics::Metrics::sub(&m.links, 1);
        m.edges.down(id);
    }
    span.in_scope(|| tracing::info!(link = id, "link down"));
}

/// A secondary asks for the replication stream: served if this node is
/// the primary of that island.
async fn follower<R, W>(
    reader: FrameReader<R>,
    mut w: W,
    ctx: &LinkCtx,
    follow: common::link::Follow,
    node: &str,
    shutdown: CancellationToken,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: tokio::io::AsyncWrite + Unpin,
{
    let owned = ctx.ownership.current();
    let island = &owned.map.islands[owned.island].name;
    let source = match &ctx.replication {
        Some(s) if owned.primary && *island == follow.island => Arc::clone(s),
        _ => {
            tracing::warn!(%node, island = %follow.island, "a secondary asked to follow, but this node is not that island's primary; closing");
            return;
        }
    };
    if ctx.ownership.fenced() {
        // (No lease in etcd yet, cut off, or back from a crash: a fresh
        // copy from here could replace newer data the secondary has.)
        tracing::warn!(%node, "a secondary asked to follow, but this primary is fenced; closing (it asks again)");
        return;
    }
    tracing::info!(%node, "secondary connected");
    let ok = common::link::LinkDown {
        kind: Some(link_down::Kind::AuthOk(LinkAuthOk {
            node: ctx.node.clone(),
            epoch: owned.epoch(),
            heartbeat: false,
        })),
    };
    let mut scratch = bytes::BytesMut::new();
    use tokio::io::AsyncWriteExt;
    if common::wire::write_frame(&mut w, &ok, &mut scratch)
        .await
        .is_err()
        || w.flush().await.is_err()
    {
        return;
    }
    crate::replication::sender::serve(reader, w, source, shutdown).await;
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut reader: FrameReader<R>,
    link: &LinkTx,
    ctx: &LinkCtx,
    shutdown: &CancellationToken,
    dead: &CancellationToken,
) {
    let home = &ctx.home;
    loop {
        let frame = tokio::select! {
            f = reader.read::<LinkUp>() => f,
            () = shutdown.cancelled() => return,
            () = dead.cancelled() => return,
        };
        let kind = match frame {
            Ok(Some(LinkUp { kind: Some(k) })) => k,
            Ok(Some(LinkUp { kind: None })) => {
                unreachable!("decode_kinded refuses kindless frames")
            }
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(error = %e, "link read failed");
                break;
            }
        };
        if let Err(code) = routed_here(&ctx.ownership, &kind) {
            refuse(link, &kind, code);
            continue;
        }
        let op = match kind {
            link_up::Kind::Auth(_) => {
                tracing::warn!("second Auth on a link; closing it");
                break;
            }
            link_up::Kind::ReplicaAck(_) => {
                tracing::warn!("a replication ack on an edge's link; closing it");
                break;
            }
            // Answered here, by the link's own task: an edge learns that the
            // process is alive and reading, whatever its shards are doing.
            link_up::Kind::Ping(p) => {
                link.send(link_down::Kind::Pong(p));
                continue;
            }
            link_up::Kind::Group(g) => {
                match &ctx.groups {
                    Some(groups) => groups.handle(link.clone(), g),
                    None => refuse(link, &link_up::Kind::Group(g), Code::Unavailable),
                }
                continue;
            }
            link_up::Kind::GroupDeliver(gd) => {
                match &ctx.groups {
                    Some(groups) => groups.deliver_here(link.clone(), gd),
                    None => refuse(link, &link_up::Kind::GroupDeliver(gd), Code::Unavailable),
                }
                continue;
            }
            link_up::Kind::CountGroups(c) => {
                match &ctx.groups {
                    Some(groups) => groups.count_here(link.clone(), c),
                    None => refuse(link, &link_up::Kind::CountGroups(c), Code::Unavailable),
                }
                continue;
            }
            link_up::Kind::Handoff(h) => {
                ctx.ownership.handoff_done(h.first, h.last, h.epoch);
                if let Some(groups) = &ctx.groups {
                    // (The logs of groups that came with them.)
                    groups.resume();
                }
                link.send(link_down::Kind::HandoffResult(
                    common::link::HandoffResult {
                        req: h.req,
                        code: 0,
                    },
                ));
                continue;
            }
            link_up::Kind::Append(a) => match a.envelope {
                Some(mut envelope) => {
                    if !a.handoff {
                        // The home stamps the time; only an item handed
                        // over from another island keeps its own.
                        envelope.server_ts_ms = 0;
                    }
                    // The sender's revocations are kept at its own home:
                    // checked here when that is this node.
                    let sender_generation = (a.from_generation != 0
                        && !a.handoff
                        && ctx.ownership.current().owns(&envelope.from))
                    .then_some(a.from_generation);
                    if !a.handoff && gathered_read(&a.to, &envelope) {
                        Op::Gather {
                            link: link.clone(),
                            req: a.req,
                            to: a.to,
                            envelope,
                            sender_generation,
                        }
                    } else {
                        Op::Append {
                            link: link.clone(),
                            req: a.req,
                            to: a.to,
                            envelope,
                            sender_generation,
                        }
                    }
                }
                None => {
                    link.send(link_down::Kind::AppendResult(common::link::AppendResult {
                        req: a.req,
                        code: common::proto::Code::BadFrame as u32,
                        ..Default::default()
                    }));
                    continue;
                }
            },
            link_up::Kind::Attach(a) => Op::Attach {
                link: link.clone(),
                session: a.session,
                user: a.user,
                device: a.device,
                generation: a.generation,
            },
            link_up::Kind::Kv(k) => match kv_op(link, k) {
                Ok(op) => op,
                Err(result) => {
                    link.send(link_down::Kind::KvResult(result));
                    continue;
                }
            },
            link_up::Kind::Revoke(r) => {
                if !common::proto::ids::valid_user_id(&r.user) {
                    link.send(link_down::Kind::RevokeResult(common::link::RevokeResult {
                        req: r.req,
                        code: common::proto::Code::BadRecipient as u32,
                        kicked: 0,
                    }));
                    continue;
                }
                Op::Revoke {
                    link: link.clone(),
                    req: r.req,
                    user: r.user,
                    device: r.device,
                    generation: r.generation,
                }
            }
            link_up::Kind::CheckDevice(c) if !common::proto::ids::valid_user_id(&c.user) => {
                link.send(link_down::Kind::DeviceChecked(
                    common::link::DeviceChecked {
                        req: c.req,
                        code: common::proto::Code::BadRecipient as u32,
                    },
                ));
                continue;
            }
            link_up::Kind::CheckDevice(c) => Op::CheckDevice {
                link: link.clone(),
                req: c.req,
                user: c.user,
                device: c.device,
                generation: c.generation,
            },
            link_up::Kind::SetPush(p) => Op::SetPush {
                by: crate::home::SetPushBy::Session {
                    link: link.clone(),
                    session: p.session,
                    id: p.id,
                },
                user: p.user,
                device: p.device,
                // (The edge checked it: the device and generation are the
                // session's, the rest `push_endpoint_problem`.)
                endpoint: p.endpoint.map(|e| common::link::PushEndpoint {
                    device: p.device,
                    ..e
                }),
            },
            link_up::Kind::Detach(d) => Op::Detach {
                link: link.id,
                session: d.session,
                user: d.user,
            },
            link_up::Kind::Ack(a) => Op::Ack {
                link: link.id,
                session: a.session,
                user: a.user,
                seqs: a.seqs,
            },
            link_up::Kind::Typing(t) => Op::Typing {
                from: t.from,
                to: t.to,
                typing: t.typing,
            },
            link_up::Kind::Watch(w) => Op::Watch {
                link: link.clone(),
                session: w.session,
                target: w.target,
                watch: w.watch,
                watcher: w.watcher,
            },
        };
        // (A shard panicked and the store is stopping: as at a shutdown,
        // the writer goes on delivering what the other shards answer.)
        if home.submit(op).await.is_err() {
            return;
        }
    }
    // Read side over: the edge is gone, so stop writing to it too.
    dead.cancel();
}

/// Whether this node serves the user (or key) `kind` is about, under the
/// epoch it was routed by. Frames without an epoch (acks, detaches, typing,
/// presence) are only checked for the user: they follow an `Attach` or an
/// `Append` that was checked.
fn routed_here(ownership: &Ownership, kind: &link_up::Kind) -> Result<(), Code> {
    match kind {
        link_up::Kind::Append(a) => ownership.check(&a.to, a.epoch, a.handoff),
        link_up::Kind::Attach(a) => ownership.check(&a.user, a.epoch, false),
        link_up::Kind::Kv(k) => ownership.check(&k.key, k.epoch, k.handoff),
        link_up::Kind::Revoke(r) => ownership.check(&r.user, r.epoch, r.handoff),
        link_up::Kind::CheckDevice(c) => ownership.check(&c.user, c.epoch, false),
        link_up::Kind::Group(g) => ownership.check(&g.group, g.epoch, false),
        link_up::Kind::SetPush(p) => ownership.check(&p.user, p.epoch, false),
        link_up::Kind::Detach(d) => owned(ownership, &d.user),
        link_up::Kind::Ack(a) => owned(ownership, &a.user),
        link_up::Kind::Typing(t) => owned(ownership, &t.to),
        link_up::Kind::Watch(w) => owned(ownership, &w.target),
        // (Each member of a delivery is checked on its own.)
        link_up::Kind::Auth(_)
        | link_up::Kind::GroupDeliver(_)
        | link_up::Kind::CountGroups(_)
        | link_up::Kind::Handoff(_)
        | link_up::Kind::ReplicaAck(_)
        | link_up::Kind::Ping(_) => Ok(()),
    }
}

fn owned(ownership: &Ownership, user: &str) -> Result<(), Code> {
    if !ownership.fenced() && ownership.current().owns(user) {
        Ok(())
    } else {
        Err(Code::WrongHome)
    }
}

/// Answers a request this node does not serve with `code`; frames that
/// expect no answer are dropped.
fn refuse(link: &LinkTx, kind: &link_up::Kind, code: Code) {
    if let Some(answer) = refusal(kind, code) {
        link.send(answer);
    }
}

/// The answer refusing `kind` with `code`, if it expects one.
pub(crate) fn refusal(kind: &link_up::Kind, code: Code) -> Option<link_down::Kind> {
    use common::link::{AppendResult, DeviceChecked, Kick, KvResult, RevokeResult};
    let code = code as u32;
    let answer = match kind {
        link_up::Kind::Append(a) => link_down::Kind::AppendResult(AppendResult {
            req: a.req,
            code,
            ..Default::default()
        }),
        link_up::Kind::Attach(a) => link_down::Kind::Kick(Kick {
            session: a.session,
            code,
        }),
        link_up::Kind::Kv(k) => link_down::Kind::KvResult(KvResult {
            req: k.req,
            code,
            ..Default::default()
        }),
        link_up::Kind::CheckDevice(c) => {
            link_down::Kind::DeviceChecked(DeviceChecked { req: c.req, code })
        }
        link_up::Kind::Revoke(r) => link_down::Kind::RevokeResult(RevokeResult {
            req: r.req,
            code,
            kicked: 0,
        }),
        link_up::Kind::GroupDeliver(g) => {
            link_down::Kind::GroupDelivered(common::link::GroupDelivered {
                req: g.req,
                code,
                codes: Vec::new(),
            })
        }
        link_up::Kind::CountGroups(c) => {
            link_down::Kind::GroupsCounted(common::link::GroupsCounted {
                req: c.req,
                code,
                codes: Vec::new(),
            })
        }
        link_up::Kind::Group(g) => link_down::Kind::GroupResult(common::link::GroupDown {
            req: g.req,
            code,
            ..Default::default()
        }),
        link_up::Kind::SetPush(p) => link_down::Kind::PushSet(common::link::PushSet {
            session: p.session,
            id: p.id.clone(),
            code,
        }),
        _ => {
            tracing::debug!(code, "a frame for a user this node does not serve dropped");
            return None;
        }
    };
    Some(answer)
}

/// A key-value request as a home operation, or the answer refusing it.
fn kv_op(link: &LinkTx, k: common::link::KvReq) -> Result<Op, common::link::KvResult> {
    use common::link::{KvResult, KvSpace, MAX_KV_KEY, MAX_KV_VALUE, kv_req};
    let refuse = |code: common::proto::Code| KvResult {
        req: k.req,
        code: code as u32,
        ..Default::default()
    };
    let space = match KvSpace::try_from(k.space) {
        Ok(s @ (KvSpace::Phone | KvSpace::Account | KvSpace::PresencePrivacy)) => s,
        // Written by the home only (push endpoints by the shards, group
        // records and users' groups by the groups module, bans by the operator's commands);
        // moved with their fragment like the rest.
        Ok(
            s @ (KvSpace::PushEndpoints | KvSpace::Banned | KvSpace::Group | KvSpace::UserGroups),
        ) if k.handoff => s,
        _ => return Err(refuse(common::proto::Code::BadFrame)),
    };
    if k.key.is_empty() || k.key.len() > MAX_KV_KEY {
        return Err(refuse(common::proto::Code::BadRecipient));
    }
    let put = match k.op {
        None => return Err(refuse(common::proto::Code::BadFrame)),
        Some(kv_req::Op::Get(_)) => None,
        Some(kv_req::Op::Put(p)) => {
            // (A group record, only ever handed over, is bounded by the
            // link frame instead: up to 1,024 members.)
            let max = match space {
                KvSpace::Group => common::link::MAX_LINK_FRAME - 1024,
                KvSpace::UserGroups => common::user_groups::MAX_RECORD,
                _ => MAX_KV_VALUE,
            };
            if p.value.len() > max {
                return Err(refuse(common::proto::Code::BodyTooLarge));
            }
            Some((p.value, p.expected_version))
        }
    };
    Ok(Op::Kv {
        link: link.clone(),
        req: k.req,
        space,
        key: k.key,
        put,
    })
}

/// Has every shard push on to `link`'s sessions whenever acks gave budget
/// back to a link that ran out of it (see `home::LinkTx`), until the link
/// is dead.
pub(crate) async fn refill(link: LinkTx, home: Home, dead: CancellationToken) {
    loop {
        tokio::select! {
            () = link.starved_sessions_may_push() => {}
            () = dead.cancelled() => return,
        }
        if home.submit(Op::Refill { link: link.id }).await.is_err() {
            return;
        }
    }
}

/// Whether an edge's append is a member's read receipt of group messages,
/// which the courier aggregates with the other members' before it is
/// stored (`Op::Gather`); anything malformed goes the plain way, to be
/// refused with its code.
fn gathered_read(to: &str, envelope: &common::proto::Envelope) -> bool {
    use common::proto::{ItemKind, ids};
    envelope.item_kind() == ItemKind::Read
        && crate::coalesce::gathers(envelope)
        && ids::valid_user_id(to)
        && ids::valid_user_id(&envelope.from)
        && ids::valid_message_id(&envelope.id)
}
