//! Opening a session: the `Hello` and its token, the link to the user's
//! home, the attach and the home's confirmation, then `Welcome`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use common::proto::limits::{MAX_BODY, MAX_CLIENT_NAME, MAX_FRAME};
use common::proto::{ClientFrame, Code, Hello, Welcome, client_frame, server_frame};
use common::token::TokenError;
use common::wire::FrameReader;
use tokio::time::Instant;

use super::close::{Close, killed, read_error, shutting_down};
use super::{EVENT_SLACK, LINK_WAIT, MOVED_RETRY_MS, Session, UNAVAILABLE_RETRY_MS, frame};
use crate::Ctx;
use crate::hub::{Event, Handle};
use crate::inbox::Incoming;
use crate::outbound::{Class, Outbound};
use crate::transport::Source;

/// The login: `Hello` and its token, then the session opened at its home.
pub(super) async fn login(
    reader: &mut FrameReader<Source>,
    ctx: &Arc<Ctx>,
    deadline: Instant,
    out: &Arc<Outbound>,
) -> Result<Opened, Close> {
    let opened = match authenticate(reader, ctx, deadline).await {
        Ok(hello) => Session::open(hello, ctx, out).await,
        Err(close) => Err(close),
    };
    if let Err(close) = &opened {
        ctx.metrics.login_failed(close.code());
        super::connection::log_closed(close);
    }
    opened
}

/// Waits for `Hello` and verifies its token.
async fn authenticate(
    reader: &mut FrameReader<Source>,
    ctx: &Ctx,
    deadline: Instant,
) -> Result<(Hello, common::token::TokenClaims), Close> {
    let first = tokio::select! {
        r = tokio::time::timeout_at(deadline, reader.read::<ClientFrame>()) => r,
        () = ctx.shutdown.cancelled() => {
            return Err(shutting_down(ctx));
        }
    };
    let hello = match first {
        Err(_) => {
            return Err(Close::Error(
                Code::NotAuthenticated,
                "no Hello within the auth timeout".into(),
            ));
        }
        Ok(Err(e)) => return Err(read_error(e)),
        Ok(Ok(None)) => return Err(Close::Quiet),
        Ok(Ok(Some(ClientFrame {
            kind: Some(client_frame::Kind::Hello(h)),
        }))) => h,
        Ok(Ok(Some(_))) => {
            return Err(Close::Error(
                Code::NotAuthenticated,
                "the first frame must be Hello".into(),
            ));
        }
    };
    if hello.client.len() > MAX_CLIENT_NAME {
        return Err(Close::Error(
            Code::ProtocolViolation,
            format!("Hello.client is longer than {MAX_CLIENT_NAME} bytes"),
        ));
    }
    let now = common::fsutil::now_ms() / 1000;
    match ctx.keys.verify(&hello.token, now) {
        Ok(claims) => Ok((hello, claims)),
        Err(TokenError::Expired { .. }) => Err(Close::Error(
            Code::TokenExpired,
            "the token has expired".into(),
        )),
        Err(e) => {
            tracing::debug!(error = %e, "token refused");
            Err(Close::Error(Code::TokenInvalid, e.to_string()))
        }
    }
}

/// Why an attempt to open a session did not.
enum Refusal {
    /// The home refused the attach as not this user's (any more), or its
    /// link broke before it answered: try the home the map names now.
    Moved,
    /// The session ends with this.
    Close(Close),
}

/// Pause before attaching again at the home a reloaded map names.
const MOVED_PAUSE: Duration = Duration::from_millis(100);
/// How long an attach waits for the device's older sessions on this edge
/// to act on what their clients sent (`hub::Event::Drain`); they answer at
/// once unless stalled.
const DRAIN_WAIT: Duration = Duration::from_millis(500);

/// A session opened: its state, its event queue, and the events that came
/// before the home's attach answer (handled first).
type Opened = (Session, crate::inbox::Receiver, Vec<Event>);

impl Session {
    /// Registers the session, waits for its home link, attaches at the home
    /// and waits for the home to confirm the device, then says `Welcome`.
    /// Until then no client frame is read, so nothing a revoked device
    /// pipelines behind its `Hello` is ever acted on.
    async fn open(
        (hello, claims): (Hello, common::token::TokenClaims),
        ctx: &Arc<Ctx>,
        out: &Arc<Outbound>,
    ) -> Result<Opened, Close> {
        // A home that answers the attach with WRONG_HOME or STALE_EPOCH (the
        // user's fragment moved, a secondary took over), or whose link breaks
        // before it answers, is not the client's problem: the map is read
        // again and the attach goes to the home it names now, until the
        // link wait is over.
        let give_up = Instant::now() + LINK_WAIT;
        loop {
            let once = Session::open_once((hello.clone(), claims.clone()), ctx, out, give_up);
            match once.await {
                Ok(opened) => return Ok(opened),
                Err(Refusal::Close(close)) => return Err(close),
                Err(Refusal::Moved) if Instant::now() + MOVED_PAUSE < give_up => {
                    ctx.router.reload_soon();
                    tokio::select! {
                        () = tokio::time::sleep(MOVED_PAUSE) => {}
                        () = ctx.shutdown.cancelled() => {}
                    }
                }
                Err(Refusal::Moved) => {
                    return Err(Close::Goodbye(
                        Code::Unavailable,
                        MOVED_RETRY_MS,
                        "this user's home moved; reconnect".into(),
                    ));
                }
            }
        }
    }

    /// One attempt of [`Session::open`], at the home the map names now.
    async fn open_once(
        (hello, claims): (Hello, common::token::TokenClaims),
        ctx: &Arc<Ctx>,
        out: &Arc<Outbound>,
        give_up: Instant,
    ) -> Result<Opened, Refusal> {
        let max_requests = (ctx.limits.outbound_queue / 2).max(1);
        let (tx, mut rx) =
            crate::inbox::channel(max_requests + 2 * common::link::PUSH_WINDOW + EVENT_SLACK);
        let handle = Handle { tx };
        let (link, epoch) = ctx.router.route(&claims.user);
        let home = tokio::select! {
            c = link.wait_up(give_up) => c,
            () = ctx.shutdown.cancelled() => {
                return Err(Refusal::Close(shutting_down(ctx)));
            }
        };
        let Some(home) = home else {
            return Err(Refusal::Close(Close::Goodbye(
                Code::Unavailable,
                UNAVAILABLE_RETRY_MS,
                "the home of this user cannot be reached".into(),
            )));
        };
        let id = ctx.hub.register(
            handle.clone(),
            crate::hub::SessionInfo {
                user: claims.user.clone(),
                device: claims.device,
                since_ms: common::fsutil::now_ms(),
            },
            Some(Arc::clone(out)),
        );
        ctx.metrics.logins.inc();
        tracing::Span::current().record("session", id);
        tracing::info!(user = %claims.user, device = claims.device, client = %hello.client, "authenticated");
        let l = &ctx.limits;
        let welcome = Welcome {
            user: claims.user.clone(),
            device: claims.device,
            server_time_ms: common::fsutil::now_ms(),
            keepalive_secs: l.keepalive.as_secs().max(1) as u32,
            idle_timeout_secs: l.idle_timeout.as_secs_f64().ceil() as u32,
            max_frame: MAX_FRAME as u32,
            max_body: MAX_BODY as u32,
            server: ctx.name.clone(),
        };
        let s = Session {
            ctx: Arc::clone(ctx),
            out: Arc::clone(out),
            id,
            user: claims.user,
            device: claims.device,
            generation: claims.generation,
            handle,
            home,
            requests: HashMap::new(),
            rerouting: VecDeque::new(),
            reroute: None,
            client_requests: 0,
            max_requests,
            next_tag: 0,
            watching: HashSet::new(),
            refused: HashMap::new(),
            unacked: HashSet::new(),
            window_full_since: None,
        };
        let unreachable = || {
            Close::Goodbye(
                Code::Unavailable,
                UNAVAILABLE_RETRY_MS,
                "the home of this user cannot be reached".into(),
            )
        };
        // An older connection of this device on this edge acts on what its
        // client sent before this attach goes (its last acks first, on the
        // same link), within a bound.
        let drained = Instant::now() + DRAIN_WAIT;
        for rx in ctx.hub.drain_others(s.id, &s.user, s.device) {
            let _ = tokio::time::timeout_at(drained, rx).await;
        }
        let attached = s.home.attach(
            s.id,
            &s.user,
            s.device,
            claims.generation,
            epoch,
            s.handle.tx.clone(),
        );
        if attached.is_err() {
            s.finish();
            return Err(Refusal::Close(unreachable()));
        }
        let early = match s.confirmed(&mut rx, give_up).await {
            Ok(early) => early,
            Err(refusal) => {
                s.finish();
                return Err(refusal);
            }
        };
        if s.out
            .push(frame(server_frame::Kind::Welcome(welcome)), Class::Control)
            .is_err()
        {
            s.finish();
            return Err(Refusal::Close(unreachable()));
        }
        Ok((s, rx, early))
    }

    /// Waits (up to [`LINK_WAIT`]) for the home's answer to the attach:
    /// `Attached`, or a kick (`REVOKED`, a moved home) that ends the session.
    /// Gives back the events that came first, to be handled in order after
    /// `Welcome`.
    async fn confirmed(
        &self,
        rx: &mut crate::inbox::Receiver,
        deadline: Instant,
    ) -> Result<Vec<Event>, Refusal> {
        let mut early = Vec::new();
        loop {
            tokio::select! {
                biased;
                incoming = rx.recv() => match incoming {
                    Incoming::Killed(code) => {
                        if matches!(code, Code::WrongHome | Code::StaleEpoch | Code::Unavailable) {
                            return Err(Refusal::Moved);
                        }
                        return Err(Refusal::Close(killed(&self.ctx, code)));
                    }
                    Incoming::Event(Event::Attached) => return Ok(early),
                    Incoming::Event(ev) => early.push(ev),
                },
                () = self.ctx.shutdown.cancelled() => return Err(Refusal::Close(shutting_down(&self.ctx))),
                () = tokio::time::sleep_until(deadline) => return Err(Refusal::Close(Close::Goodbye(
                    Code::Unavailable,
                    UNAVAILABLE_RETRY_MS,
                    "the home of this user did not answer".into(),
                ))),
            }
        }
    }
}
