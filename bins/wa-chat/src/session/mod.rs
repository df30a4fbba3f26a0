//! One client connection, from the first byte to the close: the same code for
//! TLS over TCP and QUIC (docs/ARCHITECTURE.md, "Edge sessions"; the client's
//! view is docs/PROTOCOL.md).
//!
//! [`serve`] runs the auth phase (the first frame must be `Hello`, within the
//! auth timeout), registers the session in the [`Hub`](crate::hub::Hub),
//! attaches it at the user's home, then loops over its inputs in a fixed
//! priority: a kill (link gone, kick, slow consumer, shutdown), its writer,
//! events from the links, and client frames. Client frames are handled one at
//! a time, in order, and every `Append` they cause is queued on its link before
//! the next frame is read: that is what keeps each sender's order, and keeps a
//! delivered receipt ahead of a later read receipt of the same session.
//!
//! Outbound frames go through [`Outbound`] to the session's [`Writer`],
//! which the loop polls as one of its inputs: one task per session, and
//! nothing in the loop waits on the client or on a link. The loop acts on
//! every event and every client frame that is ready (up to [`BATCH`] of
//! each) before it writes, so one write carries the answers to all of them.
//!
//! The rooms: [`connection`] (one connection around its session: the
//! checks before `Hello`, the last frames, the linger), [`open`] (the
//! `Hello`, the attach and `Welcome`), [`frames`]
//! (what each client frame does), [`appends`] (requests waiting for their
//! home's answer, and their rerouting), [`close`] (how a session ends);
//! this file holds the session's state, its loop and the link's events.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::link::{Watch, link_up};
use common::proto::limits::MAX_BATCH;
use common::proto::{
    ClientFrame, Code, Error, Presence, ServerFrame, TypingEvent, client_frame, server_frame,
};
use common::wire::FrameReader;
use tokio::time::Instant;

use crate::Ctx;
use crate::hub::{Event, Handle};
use crate::inbox::Incoming;
use crate::links::LinkConn;
use crate::outbound::{Class, Outbound};
use crate::transport::Source;
use crate::writer::Writer;

mod appends;
mod close;
mod connection;
mod deliveries;
mod frames;
mod open;
mod push;

use appends::Pending;
use close::{Close, killed, read_error, shutting_down};
pub use connection::{Conn, serve};

/// How long a new session waits for the link to its home to come up.
const LINK_WAIT: Duration = Duration::from_secs(5);
/// `retry_after_ms` when a home cannot be reached.
const UNAVAILABLE_RETRY_MS: u64 = 1000;
/// What clients of a draining edge are told.
const DRAINING: &str = "this edge is draining; reconnect elsewhere";
/// Most events, and most client frames, acted on before the writer writes.
const BATCH: usize = 64;
/// Best-effort events (typing, presence) a session queue holds beyond what
/// its requests and its push window can fill.
const EVENT_SLACK: usize = 64;
/// Most frames read after the client went away (see `Session::last_acks`).
const LAST_FRAMES: usize = 64;
/// `retry_after_ms` of a session closed because its home moved.
const MOVED_RETRY_MS: u64 = 100;

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

fn frame(k: server_frame::Kind) -> ServerFrame {
    ServerFrame { kind: Some(k) }
}

impl Session {
    /// The session's loop, until it closes; then forgets the session
    /// ([`Session::finish`]).
    ///
    /// (An `async move` block, not an `async fn`, so that its future holds
    /// the session once, not also the argument's copy.)
    #[allow(clippy::manual_async_fn)]
    fn run<'a>(
        mut self,
        reader: &'a mut FrameReader<Source>,
        writer: &'a mut Writer,
        rx: crate::inbox::Receiver,
        early: Vec<Event>,
    ) -> impl Future<Output = Close> + Send + 'a {
        async move {
            let close = self.serve_loop(reader, writer, rx, early).await;
            let (session, user) = (self.id, &self.user);
            match close.code() {
                Some(Code::ShuttingDown) | None => tracing::debug!(session, %user, "closed"),
                Some(code) => tracing::info!(session, %user, code = code.name(), "closed"),
            }
            self.finish();
            close
        }
    }

    async fn serve_loop(
        &mut self,
        reader: &mut FrameReader<Source>,
        writer: &mut Writer,
        mut rx: crate::inbox::Receiver,
        early: Vec<Event>,
    ) -> Close {
        for ev in early {
            if let Err(close) = self.handle_event(ev) {
                return close;
            }
        }
        let idle = self.ctx.limits.idle_timeout;
        // When the client last sent a frame (or the session last stopped
        // reading it): the idle deadline is this plus `idle`, checked when
        // the timer fires rather than moved on every frame.
        let mut active = Instant::now();
        // One timer for the loop's three deadlines (idle, rerouting, a
        // stuck push window), kept registered: no timer made and dropped
        // per wake-up.
        let mut timer = std::pin::pin!(tokio::time::sleep_until(active + idle));
        let out = Arc::clone(&self.out);
        // A write failed: the client went away.
        let mut gone = false;
        // A newer session of the same device waits for this one's drain.
        let mut drain = None;
        loop {
            // Past the request bound, or the edge's request budget, the
            // session stops reading (the client feels it as TCP or QUIC flow
            // control) until answers come back.
            let budget = Arc::clone(&self.ctx.requests_budget);
            let over = budget.over();
            let reading = self.may_read();
            if !reading {
                active = Instant::now();
            }
            self.release_idle();
            let writing = writer.has_work(&out);
            let next = self.next_deadline(reading.then_some(active + idle));
            // Moved only to an earlier deadline (or once fired): a later one,
            // such as the idle deadline after every frame, is found when the
            // timer fires early and nothing is due yet.
            if let Some(at) = next
                && (at < timer.deadline() || timer.is_elapsed())
            {
                timer.as_mut().reset(at);
            }
            // A kill (link gone, kick, slow consumer, shutdown) comes first.
            // At shutdown the edge kills every session it has (`Hub::kill_all`);
            // one that registered after that finds the token here.
            if let Some(code) = rx.killed() {
                return killed(&self.ctx, code);
            }
            if self.ctx.shutdown.is_cancelled() {
                return shutting_down(&self.ctx);
            }
            let step = tokio::select! {
                biased;
                r = writer.progress(&out), if writing => r.map_err(|_| {
                    // (The client's last frames may be read yet: see below.)
                    gone = true;
                    Close::Quiet
                }),
                incoming = rx.recv() => match incoming {
                    Incoming::Killed(code) => Err(killed(&self.ctx, code)),
                    Incoming::Event(ev) => self.handle_events(ev, &mut rx).map(|done| drain = done),
                },
                () = &mut timer, if next.is_some() => self.deadline(reading.then_some(active + idle)),
                () = budget.room(), if over => Ok(()),
                r = reader.read::<ClientFrame>(), if reading => {
                    active = Instant::now();
                    match r {
                        Ok(Some(ClientFrame { kind: Some(k) })) => match self.handle_frame(k) {
                            Ok(()) => self.handle_buffered(reader),
                            Err(close) => Err(close),
                        },
                        Ok(Some(ClientFrame { kind: None })) => {
                            unreachable!("decode_kinded refuses kindless frames")
                        }
                        Ok(None) => Err(Close::Quiet),
                        Err(e) => Err(read_error(e)),
                    }
                }
            };
            // (Awaited here, not in a branch of the `select!`: an await in
            // a branch keeps the `select!`'s output, a frame's worth, in the
            // loop's future beside the branches' futures. Rare, and boxed.)
            let step = match (step, drain.take()) {
                (Ok(()), Some(done)) => {
                    let step = if reading {
                        Box::pin(self.drain(reader)).await
                    } else {
                        Ok(())
                    };
                    let _ = done.send(());
                    step
                }
                (step, _) => step,
            };
            if let Err(close) = step {
                if gone {
                    Box::pin(self.last_acks(reader)).await;
                }
                return close;
            }
        }
    }

    /// The loop's next deadline: rerouting, a stuck push window, or (while
    /// reading) `idle_at`, whichever is first.
    fn next_deadline(&self, idle_at: Option<Instant>) -> Option<Instant> {
        [self.reroute.map(|r| r.1), self.window_stuck(), idle_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// The loop's timer fired: acts on whichever deadline is due, in the
    /// order rerouting, a stuck push window, idleness (none, when the
    /// deadline it was set to has moved later since).
    fn deadline(&mut self, idle_at: Option<Instant>) -> Step {
        let now = Instant::now();
        if self.reroute.is_some_and(|r| r.1 <= now) {
            return self.reroute_now();
        }
        if self.window_stuck().is_some_and(|at| at <= now) {
            return Err(Close::Error(
                Code::SlowConsumer,
                "the client has not acknowledged its window of deliveries in time".into(),
            ));
        }
        if idle_at.is_some_and(|at| at <= now) {
            let idle = self.ctx.limits.idle_timeout;
            return Err(Close::Error(
                Code::IdleTimeout,
                format!("no frame for {}", humantime::format_duration(idle)),
            ));
        }
        Ok(())
    }

    /// Acts on `first` and on the events queued behind it, up to [`BATCH`];
    /// stops at an [`Event::Drain`] and returns its answer, for the loop to
    /// drain the client's frames first.
    fn handle_events(
        &mut self,
        first: Event,
        rx: &mut crate::inbox::Receiver,
    ) -> Result<Option<tokio::sync::oneshot::Sender<()>>, Close> {
        let mut ev = first;
        for taken in 1.. {
            match ev {
                Event::Drain(done) => return Ok(Some(done)),
                ev => self.handle_event(ev)?,
            }
            if taken == BATCH {
                break;
            }
            match rx.try_recv() {
                Some(next) => ev = next,
                None => break,
            }
        }
        Ok(None)
    }

    /// Whether the session reads its client: not past its own request
    /// bound nor the edge's request budget.
    fn may_read(&self) -> bool {
        self.client_requests < self.max_requests && !self.ctx.requests_budget.over()
    }

    /// Acts on the client frames the last read brought whole, up to
    /// [`BATCH`], while the session may read.
    fn handle_buffered(&mut self, reader: &mut FrameReader<Source>) -> Step {
        for _ in 1..BATCH {
            if !self.may_read() {
                break;
            }
            match reader.read_buffered::<ClientFrame>() {
                Ok(Some(ClientFrame { kind: Some(k) })) => self.handle_frame(k)?,
                Ok(Some(ClientFrame { kind: None })) => {
                    unreachable!("decode_kinded refuses kindless frames")
                }
                Ok(None) => break,
                Err(e) => return Err(read_error(e)),
            }
        }
        Ok(())
    }

    /// Acts on the frames the client has sent already, without waiting for
    /// more (at most `LAST_FRAMES`, fewer if they are requests past the
    /// session's bound): a newer session of the same device is about to
    /// attach ([`Event::Drain`]).
    async fn drain(&mut self, reader: &mut FrameReader<Source>) -> Step {
        for _ in 0..LAST_FRAMES {
            if self.client_requests >= self.max_requests {
                break;
            }
            // One poll each: only what has arrived already.
            match tokio::time::timeout(Duration::ZERO, reader.read::<ClientFrame>()).await {
                Err(_) => break,
                Ok(Ok(Some(ClientFrame { kind: Some(k) }))) => self.handle_frame(k)?,
                Ok(Ok(Some(ClientFrame { kind: None }))) => {
                    unreachable!("decode_kinded refuses kindless frames")
                }
                Ok(Ok(None)) => return Err(Close::Quiet),
                Ok(Err(e)) => return Err(read_error(e)),
            }
        }
        Ok(())
    }

    /// Gives back what a burst made the session's tables grow to once they
    /// are empty again (a map keeps its capacity when emptied): an idle
    /// session holds no table memory.
    fn release_idle(&mut self) {
        if self.requests.is_empty() && self.requests.capacity() > 0 {
            self.requests = HashMap::new();
        }
        if self.rerouting.is_empty() && self.rerouting.capacity() > 0 {
            self.rerouting = VecDeque::new();
        }
        if self.unacked.is_empty() && self.unacked.capacity() > 0 {
            self.unacked = HashSet::new();
        }
        if self.refused.is_empty() && self.refused.capacity() > 0 {
            self.refused = HashMap::new();
        }
    }

    /// The client went away while its last frames were still unread (it
    /// acknowledged, said `Goodbye` and closed at once, with deliveries
    /// still on their way to it): what it sent and the edge has received is
    /// read without waiting, and its acks are applied, so that the next
    /// session is not given again what this one acknowledged.
    async fn last_acks(&mut self, reader: &mut FrameReader<Source>) {
        for _ in 0..LAST_FRAMES {
            // One poll each: only what has arrived already.
            let r = tokio::time::timeout(Duration::ZERO, reader.read::<ClientFrame>()).await;
            match r {
                Ok(Ok(Some(ClientFrame {
                    kind: Some(client_frame::Kind::Ack(a)),
                }))) if a.seqs.len() <= MAX_BATCH => self.link_ack(a.seqs),
                Ok(Ok(Some(ClientFrame {
                    kind: Some(client_frame::Kind::Goodbye(_)),
                })))
                | Ok(Ok(None) | Err(_))
                | Err(_) => return,
                // (Requests: the client never heard an answer and sends
                // them again.)
                Ok(Ok(Some(_))) => {}
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
                    watcher: self.user.clone(),
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

    fn handle_event(&mut self, ev: Event) -> Step {
        match ev {
            // (Only one answer per attach, taken by `confirmed`.)
            Event::Attached => Ok(()),
            // (Before the loop, with nothing read yet: answered by dropping.)
            Event::Drain(_) => Ok(()),
            Event::Push { seq, envelope } => self.deliver(seq, envelope),
            Event::Appended {
                tag,
                code,
                server_ts_ms,
                duplicate,
                retry_after_ms,
            } => self.answered(tag, code, server_ts_ms, duplicate, retry_after_ms, None),
            Event::Grouped { tag, answer } => self.grouped(tag, answer),
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
