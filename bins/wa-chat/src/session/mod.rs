//! One client connection, from the first byte to the close: the same code for
//! TLS over TCP and QUIC (docs/ARCHITECTURE.md, "Edge sessions"; the client's
//! view is docs/PROTOCOL.md).
//!
//! [`serve`] runs the auth phase (the first frame must be `Hello`, within the
//! auth timeout), registers the session in the [`Hub`](crate::hub::Hub),
//! attaches it at the user's home, then loops over three inputs in a fixed
//! priority: a kill (link gone, kick, slow consumer), the shutdown signal,
//! events from the links, and client frames. Client frames are handled one at
//! a time, in order, and every `Append` they cause is queued on its link before
//! the next frame is read: that is what keeps each sender's order, and keeps a
//! delivered receipt ahead of a later read receipt of the same session.
//!
//! Outbound frames go through [`Outbound`] to a writer task; nothing in the
//! loop waits on the client or on a link.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::link::{LinkAck, TypingUp, Watch, link_up};
use common::proto::limits::{MAX_BATCH, MAX_BODY, MAX_CLIENT_NAME, MAX_FRAME};
use common::proto::{
    Accepted, ClientFrame, Code, DecodeError, Deliver, Envelope, Error, Goodbye, Hello, MarkRead,
    Pong, Presence, Receipt, ReceiptKind, Send, ServerFrame, TypingEvent, Welcome, client_frame,
    envelope, ids, server_frame,
};
use common::token::TokenError;
use common::wire::{FrameReader, ReadError};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::Ctx;
use crate::hub::{Event, Handle, Kill};
use crate::links::LinkConn;
use crate::outbound::{Class, End, Outbound};
use crate::transport::{Sink, Source};

mod appends;
mod push;

use appends::Pending;

/// How long a new session waits for the link to its home to come up.
const LINK_WAIT: Duration = Duration::from_secs(5);
/// `retry_after_ms` when a home cannot be reached.
const UNAVAILABLE_RETRY_MS: u64 = 1000;
/// What clients of a draining edge are told.
const DRAINING: &str = "this edge is draining; reconnect elsewhere";
/// How long the writer gets to send the last frames before it is cut.
const WRITER_GRACE: Duration = Duration::from_secs(2);
/// How long a closed TCP connection is drained so that a client still
/// sending does not get a reset that destroys our last frame.
const LINGER: Duration = Duration::from_secs(1);
/// Best-effort events (typing, presence) a session queue holds beyond what
/// its requests and its push window can fill.
const EVENT_SLACK: usize = 64;
/// `retry_after_ms` of a session closed because its home moved.
const MOVED_RETRY_MS: u64 = 100;

/// A connection that finished its transport handshake.
pub struct Conn {
    pub source: Source,
    pub sink: Sink,
    /// Drain the reading side after closing (TCP).
    pub linger: bool,
}

/// How a session ends.
#[derive(Debug)]
enum Close {
    /// Nothing more to say (the client left, or the connection broke).
    Quiet,
    /// A fatal `Error` frame.
    Error(Code, String),
    /// A `Goodbye` frame.
    Goodbye(Code, u64, String),
}

impl Close {
    /// The frame for a code that ends the session: `Goodbye` for the codes
    /// about the server (shutting down, overloaded, unavailable, internal), a
    /// fatal `Error` for the rest.
    fn for_code(code: Code, retry_after_ms: u64, reason: &str) -> Close {
        match code {
            Code::ShuttingDown | Code::Overloaded | Code::Unavailable | Code::Internal => {
                Close::Goodbye(code, retry_after_ms, reason.into())
            }
            // (Link-only codes: the client reconnects and lands at the new home.)
            Code::WrongHome | Code::StaleEpoch => {
                Close::Goodbye(Code::Unavailable, MOVED_RETRY_MS, reason.into())
            }
            _ => Close::Error(code, reason.into()),
        }
    }

    fn end(self) -> End {
        let frame = |k| Some(ServerFrame { kind: Some(k) });
        match self {
            Close::Quiet => End {
                frame: None,
                code: 0,
            },
            Close::Error(code, message) => End {
                frame: frame(server_frame::Kind::Error(Error {
                    code: code as u32,
                    message,
                    id: Bytes::new(),
                    fatal: true,
                    retry_after_ms: 0,
                })),
                code: code as u32,
            },
            Close::Goodbye(code, retry_after_ms, reason) => End {
                frame: frame(server_frame::Kind::Goodbye(Goodbye {
                    code: code as u32,
                    retry_after_ms,
                    reason,
                })),
                code: code as u32,
            },
        }
    }

    fn code(&self) -> Option<Code> {
        match self {
            Close::Quiet => None,
            Close::Error(c, _) | Close::Goodbye(c, _, _) => Some(*c),
        }
    }
}

/// Serves one connection until it ends. `deadline` is the end of the auth
/// window (it started when the connection was accepted).
pub async fn serve(conn: Conn, ctx: Arc<Ctx>, deadline: Instant) {
    let transport = match conn.sink {
        Sink::Tls(_) => "tcp",
        Sink::Quic { .. } => "quic",
    };
    let out = Arc::new(Outbound::new(ctx.limits.outbound_queue));
    let gone = CancellationToken::new();
    let writer = tokio::spawn({
        let out = Arc::clone(&out);
        let gone = gone.clone();
        let sink = conn.sink;
        tracing::Instrument::in_current_span(async move { out.write_loop(sink, gone).await })
    });
    let mut reader = FrameReader::new(conn.source, MAX_FRAME);
    let _active = Active::enter(&ctx);
    let _counted = ctx.metrics.connection(transport);

    let close = if ctx.active() > ctx.limits.max_connections {
        Close::Goodbye(
            Code::Overloaded,
            ctx.retry_after_ms(),
            "too many connections".into(),
        )
    } else if ctx.draining.load(std::sync::atomic::Ordering::Relaxed) {
        Close::Goodbye(Code::ShuttingDown, ctx.retry_after_ms(), DRAINING.into())
    } else {
        match authenticate(&mut reader, &ctx, deadline).await {
            Err(close) => {
                ctx.metrics.login_failed(close.code());
                close
            }
            Ok(hello) => match Session::open(hello, &ctx, &out).await {
                Err(close) => {
                    ctx.metrics.login_failed(close.code());
                    close
                }
                Ok((mut s, rx, early)) => {
                    let close = s.run(&mut reader, rx, early, &gone).await;
                    s.finish();
                    close
                }
            },
        }
    };
    match close.code() {
        // At shutdown every session says so; one line for all is in lib.rs.
        Some(Code::ShuttingDown) | None => tracing::debug!("closed"),
        Some(code) => tracing::info!(code = code.name(), "closed"),
    }
    out.end(close.end());
    let mut writer = writer;
    if tokio::time::timeout(WRITER_GRACE, &mut writer)
        .await
        .is_err()
    {
        // The client does not read: its socket buffer is full. Cut it.
        writer.abort();
    }
    if conn.linger {
        let mut sink = [0u8; 4096];
        let inner = reader.get_mut();
        let _ = tokio::time::timeout(LINGER, async {
            while matches!(inner.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
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

/// What a refused frame becomes.
fn read_error(e: ReadError) -> Close {
    match e {
        ReadError::Decode(DecodeError::FrameTooLarge { len, max }) => Close::Error(
            Code::FrameTooLarge,
            format!("frame of {len} bytes exceeds max_frame {max}"),
        ),
        ReadError::Decode(e) => Close::Error(Code::BadFrame, e.to_string()),
        ReadError::Io(_) | ReadError::Truncated => Close::Quiet,
    }
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
            return Err(Close::Goodbye(Code::ShuttingDown, ctx.retry_after_ms(), "shutting down".into()));
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

struct Session {
    ctx: Arc<Ctx>,
    out: Arc<Outbound>,
    id: u64,
    user: String,
    device: u32,
    /// The generation of the session's credential, sent with every append
    /// so that the sender's home refuses them once the device is revoked.
    generation: u32,
    handle: Handle,
    home: Arc<LinkConn>,
    requests: HashMap<u64, Pending>,
    /// Appends a home refused for the wrong home or epoch, in the order they
    /// were made, waiting to be sent again (with every client request made
    /// since behind them, so that none overtakes another).
    rerouting: VecDeque<Pending>,
    /// When the oldest of `rerouting` was first refused, and when they go again.
    reroute: Option<(Instant, Instant)>,
    /// Client requests in `requests` and `rerouting`.
    client_requests: usize,
    /// Most client requests in flight before the session stops reading.
    max_requests: usize,
    next_tag: u64,
    watching: HashSet<String>,
    /// Homes this session recently answered `UNAVAILABLE` for, and until when
    /// it keeps doing so.
    refused: HashMap<std::net::SocketAddr, Instant>,
    /// Delivered items the client has not acknowledged yet, and since when
    /// they fill the home's push window (see [`Session::window_stuck`]).
    unacked: HashSet<u64>,
    window_full_since: Option<Instant>,
}

type Step = Result<(), Close>;

/// Sleeps until `at`, or forever without one.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn frame(k: server_frame::Kind) -> ServerFrame {
    ServerFrame { kind: Some(k) }
}

/// Why a session ends when something outside its task kills it with `code`.
fn kill_reason(ctx: &Ctx, code: Code) -> &'static str {
    match code {
        Code::SlowConsumer => "the client does not read fast enough",
        Code::ShuttingDown if ctx.draining.load(std::sync::atomic::Ordering::Relaxed) => DRAINING,
        Code::Unavailable => "the link to a home was lost, or an operator closed the session",
        Code::WrongHome | Code::StaleEpoch => {
            ctx.router.reload_soon();
            "this user's home moved; reconnect"
        }
        Code::Revoked => "this device's registration was revoked",
        _ => "closed by the home",
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

/// A session opened: its state, its event queue, and the events that came
/// before the home's attach answer (handled first).
type Opened = (Session, mpsc::Receiver<Event>, Vec<Event>);

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
            mpsc::channel(max_requests + 2 * common::link::PUSH_WINDOW + EVENT_SLACK);
        let handle = Handle {
            tx,
            kill: Arc::new(Kill::default()),
        };
        let (link, epoch) = ctx.router.route(&claims.user);
        let home = tokio::select! {
            c = link.wait_up(give_up) => c,
            () = ctx.shutdown.cancelled() => {
                return Err(Refusal::Close(Close::Goodbye(Code::ShuttingDown, ctx.retry_after_ms(), "shutting down".into())));
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
        tracing::info!(device = claims.device, client = %hello.client, "authenticated");
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
        let attached = s.home.attach(
            s.id,
            &s.user,
            s.device,
            claims.generation,
            epoch,
            Arc::clone(&s.handle.kill),
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
        rx: &mut mpsc::Receiver<Event>,
        deadline: Instant,
    ) -> Result<Vec<Event>, Refusal> {
        let kill = Arc::clone(&self.handle.kill);
        let mut early = Vec::new();
        loop {
            tokio::select! {
                biased;
                code = kill.killed() => {
                    if matches!(code, Code::WrongHome | Code::StaleEpoch | Code::Unavailable) {
                        return Err(Refusal::Moved);
                    }
                    let reason = kill_reason(&self.ctx, code);
                    return Err(Refusal::Close(Close::for_code(code, UNAVAILABLE_RETRY_MS, reason)));
                }
                () = self.ctx.shutdown.cancelled() => return Err(Refusal::Close(Close::Goodbye(
                    Code::ShuttingDown,
                    self.ctx.retry_after_ms(),
                    "the server is shutting down".into(),
                ))),
                ev = rx.recv() => match ev {
                    Some(Event::Attached) => return Ok(early),
                    Some(ev) => early.push(ev),
                    None => unreachable!("the session holds a sender of its own queue"),
                },
                () = tokio::time::sleep_until(deadline) => return Err(Refusal::Close(Close::Goodbye(
                    Code::Unavailable,
                    UNAVAILABLE_RETRY_MS,
                    "the home of this user did not answer".into(),
                ))),
            }
        }
    }

    async fn run(
        &mut self,
        reader: &mut FrameReader<Source>,
        mut rx: mpsc::Receiver<Event>,
        early: Vec<Event>,
        gone: &CancellationToken,
    ) -> Close {
        for ev in early {
            if let Err(close) = self.handle_event(ev) {
                return close;
            }
        }
        let idle = self.ctx.limits.idle_timeout;
        let mut idle_at = Instant::now() + idle;
        let kill = Arc::clone(&self.handle.kill);
        loop {
            // Past the request bound, or the edge's request budget, the
            // session stops reading (the client feels it as TCP or QUIC flow
            // control) until answers come back.
            let budget = Arc::clone(&self.ctx.requests_budget);
            let over = budget.over();
            let reading = self.client_requests < self.max_requests && !over;
            if !reading {
                idle_at = Instant::now() + idle;
            }
            let step = tokio::select! {
                biased;
                code = kill.killed() => {
                    let reason = kill_reason(&self.ctx, code);
                    Err(Close::for_code(code, UNAVAILABLE_RETRY_MS, reason))
                }
                () = self.ctx.shutdown.cancelled() => Err(Close::Goodbye(
                    Code::ShuttingDown,
                    self.ctx.retry_after_ms(),
                    "the server is shutting down".into(),
                )),
                () = gone.cancelled() => Err(Close::Quiet),
                Some(ev) = rx.recv() => self.handle_event(ev),
                () = sleep_until_some(self.reroute.map(|r| r.1)) => self.reroute_now(),
                () = budget.room(), if over => Ok(()),
                () = sleep_until_some(self.window_stuck()) => Err(Close::Error(
                    Code::SlowConsumer,
                    "the client has not acknowledged its window of deliveries in time".into(),
                )),
                r = reader.read::<ClientFrame>(), if reading => {
                    idle_at = Instant::now() + idle;
                    match r {
                        Ok(Some(ClientFrame { kind: Some(k) })) => self.handle_frame(k),
                        Ok(Some(ClientFrame { kind: None })) => {
                            unreachable!("decode_kinded refuses kindless frames")
                        }
                        Ok(None) => Err(Close::Quiet),
                        Err(e) => Err(read_error(e)),
                    }
                }
                () = tokio::time::sleep_until(idle_at), if reading => Err(Close::Error(
                    Code::IdleTimeout,
                    format!("no frame for {}", humantime::format_duration(idle)),
                )),
            };
            if let Err(close) = step {
                return close;
            }
        }
    }

    /// Forgets the session here and at the homes.
    fn finish(&self) {
        self.ctx.hub.unregister(self.id);
        self.home.detach(self.id, &self.user);
        for target in &self.watching {
            if let Some(c) = self.ctx.router.home(target).current() {
                let _ = c.send(link_up::Kind::Watch(Watch {
                    session: self.id,
                    target: target.clone(),
                    watch: false,
                }));
            }
        }
    }

    fn push(&self, k: server_frame::Kind, class: Class) -> Step {
        self.out.push(frame(k), class).map_err(|_| {
            Close::Error(
                Code::SlowConsumer,
                "the client does not read fast enough".into(),
            )
        })
    }

    /// A non-fatal `Error`, about request `id` if it has one.
    fn refuse(
        &self,
        code: Code,
        id: Bytes,
        message: impl Into<String>,
        retry_after_ms: u64,
    ) -> Step {
        debug_assert!(!code.is_fatal());
        self.push(
            server_frame::Kind::Error(Error {
                code: code as u32,
                message: message.into(),
                id,
                fatal: false,
                retry_after_ms,
            }),
            Class::Control,
        )
    }

    fn handle_frame(&mut self, k: client_frame::Kind) -> Step {
        match k {
            client_frame::Kind::Hello(_) => Err(Close::Error(
                Code::ProtocolViolation,
                "Hello on an authenticated session".into(),
            )),
            client_frame::Kind::Send(s) => {
                self.ctx.metrics.messages_in.inc();
                self.handle_send(s)
            }
            client_frame::Kind::MarkRead(m) => self.handle_mark_read(m),
            client_frame::Kind::Ack(a) => self.handle_ack(a.seqs),
            client_frame::Kind::Ping(p) => self.push(
                server_frame::Kind::Pong(Pong { nonce: p.nonce }),
                Class::Control,
            ),
            client_frame::Kind::Typing(t) => {
                if !ids::valid_user_id(&t.to) {
                    return self.refuse(
                        Code::BadRecipient,
                        Bytes::new(),
                        "Typing.to is not a valid user id",
                        0,
                    );
                }
                if let Some(c) = self.ctx.router.home(&t.to).current() {
                    let _ = c.send(link_up::Kind::Typing(TypingUp {
                        from: self.user.clone(),
                        to: t.to,
                        typing: t.typing,
                    }));
                }
                Ok(())
            }
            client_frame::Kind::WatchPresence(w) => {
                if !ids::valid_user_id(&w.user) {
                    return self.refuse(
                        Code::BadRecipient,
                        Bytes::new(),
                        "WatchPresence.user is not a valid user id",
                        0,
                    );
                }
                if let Some(c) = self.ctx.router.home(&w.user).current() {
                    let _ = c.send(link_up::Kind::Watch(Watch {
                        session: self.id,
                        target: w.user.clone(),
                        watch: w.watch,
                    }));
                }
                if w.watch {
                    self.watching.insert(w.user);
                } else {
                    self.watching.remove(&w.user);
                }
                Ok(())
            }
            client_frame::Kind::Goodbye(_) => Err(Close::Quiet),
            client_frame::Kind::SendMedia(m) => {
                self.ctx.metrics.messages_in.inc();
                self.handle_send_media(m)
            }
            client_frame::Kind::SetPushEndpoint(p) => self.handle_set_push(p),
        }
    }

    /// A message carrying a media reference (docs/MEDIA.md): checked, then
    /// stored and delivered exactly like a `Send` body.
    fn handle_send_media(&mut self, m: common::proto::SendMedia) -> Step {
        use prost::Message as _;
        if !ids::valid_message_id(&m.id) {
            return self.refuse(Code::BadId, m.id, "SendMedia.id must be 16 bytes", 0);
        }
        if !ids::valid_user_id(&m.to) {
            return self.refuse(
                Code::BadRecipient,
                m.id,
                "SendMedia.to is not a valid user id",
                0,
            );
        }
        let Some(media) = m.media else {
            return self.refuse(Code::BadMedia, m.id, "SendMedia.media is missing", 0);
        };
        if let Some(problem) = media.problem() {
            return self.refuse(Code::BadMedia, m.id, problem, 0);
        }
        if media.encoded_len() > MAX_BODY {
            return self.refuse(
                Code::BodyTooLarge,
                m.id,
                format!(
                    "media of {} bytes exceeds max_body {MAX_BODY}",
                    media.encoded_len()
                ),
                0,
            );
        }
        let envelope = self.envelope(m.id.clone(), envelope::Content::Media(media));
        self.client_append(&m.to, envelope, m.id)
    }

    fn handle_send(&mut self, s: Send) -> Step {
        if !ids::valid_message_id(&s.id) {
            return self.refuse(Code::BadId, s.id, "Send.id must be 16 bytes", 0);
        }
        if !ids::valid_user_id(&s.to) {
            return self.refuse(
                Code::BadRecipient,
                s.id,
                "Send.to is not a valid user id",
                0,
            );
        }
        if s.body.len() > MAX_BODY {
            return self.refuse(
                Code::BodyTooLarge,
                s.id,
                format!("body of {} bytes exceeds max_body {MAX_BODY}", s.body.len()),
                0,
            );
        }
        let envelope = self.envelope(s.id.clone(), envelope::Content::Body(s.body));
        self.client_append(&s.to, envelope, s.id)
    }

    fn handle_mark_read(&mut self, m: MarkRead) -> Step {
        if !ids::valid_message_id(&m.id) {
            return self.refuse(Code::BadId, m.id, "MarkRead.id must be 16 bytes", 0);
        }
        if !ids::valid_user_id(&m.to) {
            return self.refuse(
                Code::BadRecipient,
                m.id,
                "MarkRead.to is not a valid user id",
                0,
            );
        }
        if m.ids.is_empty() || m.ids.len() > MAX_BATCH {
            return self.refuse(
                Code::BadId,
                m.id,
                format!("MarkRead needs 1 to {MAX_BATCH} ids"),
                0,
            );
        }
        if !m.ids.iter().all(|i| ids::valid_message_id(i)) {
            return self.refuse(
                Code::BadId,
                m.id,
                "every MarkRead.ids entry must be 16 bytes",
                0,
            );
        }
        let receipt = Receipt {
            kind: ReceiptKind::Read as i32,
            ids: m.ids,
        };
        let envelope = self.envelope(m.id.clone(), envelope::Content::Receipt(receipt));
        self.client_append(&m.to, envelope, m.id)
    }

    fn envelope(&self, id: Bytes, content: envelope::Content) -> Envelope {
        Envelope {
            from: self.user.clone(),
            from_device: self.device,
            id,
            server_ts_ms: 0,
            content: Some(content),
        }
    }

    /// The home checks the seqs against what it pushed this session, frees
    /// their window slots, and deletes each item once its delivered receipt
    /// is durable at the sender's home (it makes the receipt).
    fn handle_ack(&mut self, seqs: Vec<u64>) -> Step {
        if seqs.len() > MAX_BATCH {
            return self.refuse(
                Code::BadId,
                Bytes::new(),
                format!("an Ack holds at most {MAX_BATCH} seqs"),
                0,
            );
        }
        self.link_ack(seqs);
        Ok(())
    }

    /// When a client whose push window is full (it has every item the home
    /// may push unacknowledged) becomes a slow consumer: a client that
    /// reads (or only pings) but never acknowledges would otherwise hold
    /// its window, and the home's memory for it, forever.
    fn window_stuck(&self) -> Option<Instant> {
        self.window_full_since
            .map(|t| t + self.ctx.limits.slow_consumer_after)
    }

    fn link_ack(&mut self, seqs: Vec<u64>) {
        for s in &seqs {
            self.unacked.remove(s);
        }
        if self.unacked.len() < common::link::PUSH_WINDOW {
            self.window_full_since = None;
        }
        if seqs.is_empty() {
            return;
        }
        let _ = self.home.send(link_up::Kind::Ack(LinkAck {
            session: self.id,
            user: self.user.clone(),
            seqs,
        }));
    }

    fn handle_event(&mut self, ev: Event) -> Step {
        match ev {
            // (Only one answer per attach, taken by `confirmed`.)
            Event::Attached => Ok(()),
            Event::Push { seq, envelope } => {
                self.ctx.metrics.messages_out.inc();
                self.unacked.insert(seq);
                if self.unacked.len() >= common::link::PUSH_WINDOW
                    && self.window_full_since.is_none()
                {
                    self.window_full_since = Some(Instant::now());
                }
                self.push(
                    server_frame::Kind::Deliver(Deliver {
                        seq,
                        envelope: Some(envelope),
                    }),
                    Class::Bulk,
                )
            }
            Event::Appended {
                tag,
                code,
                server_ts_ms,
                duplicate,
                retry_after_ms,
            } => {
                let Some(p) = self.requests.remove(&tag) else {
                    return Ok(());
                };
                let code = match code {
                    0 => None,
                    c => Some(Code::from_u32(c).unwrap_or(Code::Internal)),
                };
                match code {
                    Some(Code::WrongHome | Code::StaleEpoch) => {
                        self.refused_elsewhere(p);
                        Ok(())
                    }
                    // The sender's home found this device revoked: the
                    // session ends, as the home's kick would end it.
                    Some(Code::Revoked) => Err(Close::Error(
                        Code::Revoked,
                        "this device's registration was revoked".into(),
                    )),
                    None => {
                        self.client_requests -= 1;
                        self.ctx
                            .metrics
                            .accepted_latency
                            .observe(p.since.elapsed().as_secs_f64());
                        self.push(
                            server_frame::Kind::Accepted(Accepted {
                                id: p.id,
                                server_ts_ms,
                                duplicate,
                            }),
                            Class::Control,
                        )
                    }
                    // Whatever else the home refused, the session goes on:
                    // the code is about this request.
                    Some(code) => {
                        let code = if code.is_fatal() {
                            Code::Internal
                        } else {
                            code
                        };
                        self.failed(p, code, retry_after_ms)
                    }
                }
            }
            Event::PushSet { id, code } => self.push_set(id, code),
            Event::Typing { from, typing } => self.push(
                server_frame::Kind::Typing(TypingEvent { from, typing }),
                Class::Control,
            ),
            Event::Presence {
                user,
                online,
                last_seen_ms,
            } => self.push(
                server_frame::Kind::Presence(Presence {
                    user,
                    online,
                    last_seen_ms,
                }),
                Class::Control,
            ),
        }
    }
}
