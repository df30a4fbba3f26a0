//! The background task behind a [`Client`](super::Client): it owns the
//! connection, keeps the sends that wait for `Accepted` in their original
//! order, reconnects with backoff and resends them (same ids) when a
//! connection is lost, pings, dedupes deliveries and feeds the [`Event`]
//! stream.
//!
//! The task never blocks on the app: events go to a bounded channel and
//! overflow into an in-task queue (`outbox`); when that grows past its limit
//! the task stops reading from the server, so a stalled app shows up at the
//! edge as a slow consumer instead of as unbounded memory here.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::timer::sleep_until_some;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::{TryRecvError, TrySendError};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use super::connection::{Conn, Dialer};
use super::recent::Recent;
use super::{ClientConfig, ClientError, Event, MessageId};
use crate::proto::limits::{MAX_BATCH, MAX_BODY};
use crate::proto::{
    Ack, Code, Deliver, Goodbye, ItemKind, MarkRead, Media, Ping, Send, SendMedia, ServerFrame,
    SetPushEndpoint, Typing, WatchPresence, Welcome, client_frame, envelope, server_frame,
};

#[path = "driver_frames.rs"]
mod frames;

/// How many deliveries the client remembers for deduplication.
const DEDUPE_WINDOW: usize = 4096;
/// Events buffered beyond `max_pending` before the task stops reading.
const OUTBOX_SLACK: usize = 4096;
/// How long a closing client waits for the server to see its `Goodbye`.
const LINGER: Duration = Duration::from_secs(1);
/// How long to look for the server's reason after a write failed.
const EXPLAIN: Duration = Duration::from_millis(200);
/// Commands handled in one go before the queued frames are written.
const COMMAND_BURST: usize = 256;
/// Added to twice the keepalive before a silent server counts as gone.
const SILENCE_SLACK: Duration = Duration::from_secs(5);
/// Used when the server announces no keepalive.
const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(30);

/// Requests from the [`Client`](super::Client) handle to the task.
#[derive(Debug)]
pub(crate) enum Command {
    Send {
        id: MessageId,
        to: String,
        body: Bytes,
    },
    MarkRead {
        id: MessageId,
        to: String,
        ids: Vec<MessageId>,
        /// The group of the messages ("" for one-to-one).
        group: String,
    },
    SendMedia {
        id: MessageId,
        to: String,
        media: Box<Media>,
    },
    /// A group request (`req.id` is the pending id).
    Group(crate::proto::GroupRequest),
    SendGroup {
        id: MessageId,
        group: String,
        body: Bytes,
    },
    SetPush {
        id: MessageId,
        endpoint: Box<SetPushEndpoint>,
    },
    Ack(Vec<u64>),
    Typing {
        to: String,
        typing: bool,
    },
    Watch {
        user: String,
        watch: bool,
    },
}

/// State the handle and the task both see.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Sends and read receipts queued or waiting for `Accepted`.
    pub(crate) pending: AtomicUsize,
    /// The edge's `max_body` from its last `Welcome`.
    pub(crate) max_body: AtomicUsize,
    /// Cancelled by [`Client::close`](super::Client::close).
    pub(crate) closing: CancellationToken,
    /// Who has this user's group messages (`receipts`). Locked briefly,
    /// never across an await.
    pub(crate) receipts: std::sync::Mutex<super::receipts::Tracker>,
}

impl Shared {
    pub(crate) fn new() -> Self {
        Self {
            pending: AtomicUsize::new(0),
            max_body: AtomicUsize::new(MAX_BODY),
            closing: CancellationToken::new(),
            receipts: Default::default(),
        }
    }
}

/// Whether the client stops reconnecting after the server closed with `code`:
/// the token will never work again, or the client has a bug that a new
/// connection would repeat (PROTOCOL.md, error codes).
pub(crate) fn gives_up(code: Code) -> bool {
    matches!(
        code,
        Code::TokenExpired
            | Code::TokenInvalid
            | Code::Revoked
            | Code::Banned
            | Code::ProtocolViolation
            | Code::BadFrame
            | Code::FrameTooLarge
    )
}

/// Whether a request refused with `code` is kept and resent later with the
/// same id rather than reported as rejected.
fn resend_later(code: Option<Code>) -> bool {
    matches!(
        code,
        Some(
            Code::Unavailable
                | Code::Internal
                | Code::MailboxFull
                | Code::StorageFull
                | Code::GroupBusy
        )
    )
}

/// How a session ended.
#[derive(Debug)]
enum Outcome {
    /// The app closed the client.
    Close,
    /// The connection is gone; reconnect.
    Lost {
        code: Option<Code>,
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Reconnecting would not help.
    Fatal { code: Code, message: String },
}

#[derive(Debug)]
enum Item {
    Send {
        to: String,
        body: Bytes,
    },
    MarkRead {
        to: String,
        ids: Vec<MessageId>,
        group: String,
    },
    SendMedia {
        to: String,
        media: Box<Media>,
    },
    Group(crate::proto::GroupRequest),
    SendGroup {
        group: String,
        body: Bytes,
    },
    SetPush(Box<SetPushEndpoint>),
}

#[derive(Debug)]
struct Pending {
    id: MessageId,
    item: Item,
    /// Refused for now (`UNAVAILABLE`, `INTERNAL`) on this connection: resend
    /// at `hold_until`.
    held: bool,
}

impl Pending {
    fn frame(&self) -> client_frame::Kind {
        let id = Bytes::copy_from_slice(&self.id);
        match &self.item {
            Item::Send { to, body } => client_frame::Kind::Send(Send {
                id,
                to: to.clone(),
                body: body.clone(),
            }),
            Item::MarkRead { to, ids, group } => client_frame::Kind::MarkRead(MarkRead {
                id,
                to: to.clone(),
                ids: ids.iter().map(|i| Bytes::copy_from_slice(i)).collect(),
                group: group.clone(),
            }),
            Item::SendMedia { to, media } => client_frame::Kind::SendMedia(SendMedia {
                id,
                to: to.clone(),
                media: Some(media.clone()),
            }),
            Item::Group(req) => client_frame::Kind::GroupRequest(req.clone()),
            Item::SendGroup { group, body } => {
                client_frame::Kind::SendGroup(crate::proto::SendGroup {
                    id,
                    group: group.clone(),
                    body: body.clone(),
                })
            }
            Item::SetPush(e) => client_frame::Kind::SetPushEndpoint(SetPushEndpoint {
                id,
                ..(**e).clone()
            }),
        }
    }
}

fn id16(b: &[u8]) -> Option<MessageId> {
    b.try_into().ok()
}

fn millis(ms: u64) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(ms))
}

pub(crate) struct Driver {
    dialer: Arc<Dialer>,
    backoff_initial: Duration,
    backoff_max: Duration,
    shared: Arc<Shared>,
    /// Pending sends by arrival order; `order_of` finds them by id.
    pending: BTreeMap<u64, Pending>,
    order_of: HashMap<MessageId, u64>,
    next_order: u64,
    /// While set, pending items are held back (after `UNAVAILABLE`) and new
    /// ones wait behind them, so the sender's order is kept.
    hold_until: Option<Instant>,
    watched: BTreeSet<String>,
    recent: Recent<(String, ItemKind, MessageId)>,
    /// Sequence numbers of duplicate deliveries, acknowledged without an event.
    dup_acks: Vec<u64>,
    events: mpsc::Sender<Event>,
    outbox: VecDeque<Event>,
    outbox_limit: usize,
    events_gone: bool,
}

impl Driver {
    pub(crate) fn new(
        cfg: &ClientConfig,
        dialer: Dialer,
        events: mpsc::Sender<Event>,
        shared: Arc<Shared>,
    ) -> Self {
        Self {
            dialer: Arc::new(dialer),
            backoff_initial: cfg.backoff_initial,
            backoff_max: cfg.backoff_max,
            shared,
            pending: BTreeMap::new(),
            order_of: HashMap::new(),
            next_order: 0,
            hold_until: None,
            watched: BTreeSet::new(),
            recent: Recent::new(DEDUPE_WINDOW),
            dup_acks: Vec::new(),
            events,
            outbox: VecDeque::new(),
            outbox_limit: cfg.max_pending.saturating_add(OUTBOX_SLACK),
            events_gone: false,
        }
    }

    /// Runs until the app closes the client (or drops it) or the server
    /// refuses it for good. `first` is the connection [`Client::connect`]
    /// already established.
    ///
    /// [`Client::connect`]: super::Client::connect
    pub(crate) async fn run(mut self, first: (Conn, Welcome), mut cmds: mpsc::Receiver<Command>) {
        let mut backoff = Backoff::new(self.backoff_initial, self.backoff_max);
        let mut next = Some(first);
        loop {
            let (mut conn, welcome) = match next.take() {
                Some(c) => c,
                None => match self.reconnect(&mut cmds, &mut backoff).await {
                    Some(c) => c,
                    None => break,
                },
            };
            backoff.reset();
            self.emit(Event::Connected {
                server: welcome.server.clone(),
            });
            match self.session(&mut conn, &welcome, &mut cmds).await {
                Outcome::Close => {
                    conn.queue(client_frame::Kind::Goodbye(Goodbye {
                        code: 0,
                        retry_after_ms: 0,
                        reason: "client closing".into(),
                    }));
                    conn.shutdown(LINGER).await;
                    break;
                }
                Outcome::Fatal { code, message } => {
                    tracing::warn!(%code, %message, "the server refused this client for good");
                    self.emit(Event::Fatal { code, message });
                    break;
                }
                Outcome::Lost {
                    code,
                    reason,
                    retry_after,
                } => {
                    tracing::debug!(?code, %reason, "connection lost");
                    self.emit(Event::Disconnected { code, reason });
                    drop(conn);
                    let delay = backoff.next_delay(retry_after, &mut rand::rng());
                    if self
                        .offline(&mut cmds, tokio::time::sleep(delay))
                        .await
                        .is_none()
                    {
                        break;
                    }
                }
            }
        }
        cmds.close();
        self.finish().await;
    }

    /// Dials until welcomed (`Some`), closed by the app or refused for good.
    async fn reconnect(
        &mut self,
        cmds: &mut mpsc::Receiver<Command>,
        backoff: &mut Backoff,
    ) -> Option<(Conn, Welcome)> {
        loop {
            let dialer = self.dialer.clone();
            let result = self.offline(cmds, dialer.dial()).await?;
            let (code, reason, retry_after) = match result {
                Ok(c) => return Some(c),
                Err(ClientError::Refused { code, message, .. }) if gives_up(code) => {
                    self.emit(Event::Fatal { code, message });
                    return None;
                }
                Err(ClientError::Refused {
                    code,
                    message,
                    retry_after,
                }) => (Some(code), message, retry_after),
                Err(e) => {
                    tracing::debug!(error = %e, "reconnect failed");
                    (None, e.to_string(), None)
                }
            };
            let delay = backoff.next_delay(retry_after, &mut rand::rng());
            self.emit(Event::Waiting {
                code,
                reason,
                retry_after,
                after: delay,
            });
            self.offline(cmds, tokio::time::sleep(delay)).await?;
        }
    }

    /// Runs `fut` while no connection is up: commands are recorded (sends wait
    /// as pending, watches are remembered) and events keep flowing. `None` if
    /// the app closed the client first.
    async fn offline<F: Future>(
        &mut self,
        cmds: &mut mpsc::Receiver<Command>,
        fut: F,
    ) -> Option<F::Output> {
        tokio::pin!(fut);
        let closing = self.shared.closing.clone();
        let events = self.events.clone();
        loop {
            self.pump();
            tokio::select! {
                out = &mut fut => return Some(out),
                _ = closing.cancelled() => return None,
                cmd = cmds.recv() => match cmd {
                    None => return None,
                    Some(c) => self.command(c, None),
                },
                permit = events.reserve(), if !self.outbox.is_empty() => match permit {
                    Ok(p) => p.send(self.outbox.pop_front().expect("outbox is not empty")),
                    Err(_) => self.events_closed(),
                },
            }
        }
    }

    /// One connection's life.
    async fn session(
        &mut self,
        conn: &mut Conn,
        welcome: &Welcome,
        cmds: &mut mpsc::Receiver<Command>,
    ) -> Outcome {
        let max_body = match welcome.max_body {
            0 => MAX_BODY,
            n => n as usize,
        };
        self.shared.max_body.store(max_body, Ordering::Relaxed);
        self.receipts().set_me(&welcome.user);
        let keepalive = match welcome.keepalive_secs {
            0 => DEFAULT_KEEPALIVE,
            s => Duration::from_secs(s.into()),
        };
        // The server answers every ping, so this long without a frame means
        // the path is dead even if no error says so (a NAT or mobile network
        // that dropped it silently). The slack spares a busy machine.
        let silence_limit = keepalive * 2 + SILENCE_SLACK;

        // Everything still pending goes out again, same ids, original order,
        // before anything new.
        self.hold_until = None;
        for p in self.pending.values_mut() {
            p.held = false;
            conn.queue(p.frame());
        }
        for user in &self.watched {
            conn.queue(client_frame::Kind::WatchPresence(WatchPresence {
                user: user.clone(),
                watch: true,
            }));
        }

        let mut resend_backoff = Backoff::new(self.backoff_initial, self.backoff_max);
        let mut ping = tokio::time::interval_at(Instant::now() + keepalive, keepalive);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut nonce = 0u64;
        let mut last_rx = Instant::now();
        let closing = self.shared.closing.clone();
        let events = self.events.clone();
        loop {
            self.queue_dup_acks(conn);
            if conn.has_queued() {
                match tokio::time::timeout(silence_limit, conn.flush()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return self.explain(conn, format!("write failed: {e}")).await,
                    Err(_) => return lost("the server stopped reading"),
                }
            }
            self.pump();
            let reading = self.outbox.len() < self.outbox_limit;
            let hold_until = self.hold_until;
            tokio::select! {
                frame = conn.read(), if reading => {
                    last_rx = Instant::now();
                    match frame {
                        Ok(Some(f)) => {
                            if let Some(out) = self.frame(f, &mut resend_backoff) {
                                return out;
                            }
                        }
                        Ok(None) => return lost("the server closed the connection"),
                        Err(e) => return lost(&e.to_string()),
                    }
                }
                _ = closing.cancelled() => {
                    // What the app asked for before closing still goes out.
                    while let Ok(c) = cmds.try_recv() {
                        self.command(c, Some(conn));
                    }
                    return Outcome::Close;
                }
                cmd = cmds.recv() => {
                    let Some(c) = cmd else { return Outcome::Close };
                    self.command(c, Some(conn));
                    for _ in 0..COMMAND_BURST {
                        match cmds.try_recv() {
                            Ok(c) => self.command(c, Some(conn)),
                            Err(TryRecvError::Empty) => break,
                            Err(TryRecvError::Disconnected) => return Outcome::Close,
                        }
                    }
                }
                _ = ping.tick() => {
                    if reading && last_rx.elapsed() > silence_limit {
                        return lost("the server went silent");
                    }
                    nonce += 1;
                    conn.queue(client_frame::Kind::Ping(Ping { nonce }));
                }
                _ = sleep_until_some(hold_until) => {
                    self.hold_until = None;
                    for p in self.pending.values_mut().filter(|p| p.held) {
                        p.held = false;
                        conn.queue(p.frame());
                    }
                }
                permit = events.reserve(), if !self.outbox.is_empty() => match permit {
                    Ok(p) => p.send(self.outbox.pop_front().expect("outbox is not empty")),
                    Err(_) => self.events_closed(),
                },
            }
        }
    }

    /// After a failed write: the server may have said why just before it
    /// closed, and answers may be waiting; read what is there.
    async fn explain(&mut self, conn: &mut Conn, reason: String) -> Outcome {
        let mut resend_backoff = Backoff::new(self.backoff_initial, self.backoff_max);
        let found = tokio::time::timeout(EXPLAIN, async {
            while let Ok(Some(f)) = conn.read().await {
                if let Some(out) = self.frame(f, &mut resend_backoff) {
                    return Some(out);
                }
            }
            None
        })
        .await;
        found.ok().flatten().unwrap_or_else(|| lost(&reason))
    }

    fn queue_dup_acks(&mut self, conn: &mut Conn) {
        while !self.dup_acks.is_empty() {
            let n = self.dup_acks.len().min(MAX_BATCH);
            let seqs = self.dup_acks.drain(..n).collect();
            conn.queue(client_frame::Kind::Ack(Ack { seqs }));
        }
    }

    /// Applies a command; frames go to `conn` when connected.
    fn command(&mut self, cmd: Command, mut conn: Option<&mut Conn>) {
        match cmd {
            Command::Send { id, to, body } => self.add(id, Item::Send { to, body }, conn),
            Command::MarkRead { id, to, ids, group } => {
                self.add(id, Item::MarkRead { to, ids, group }, conn)
            }
            Command::SetPush { id, endpoint } => self.add(id, Item::SetPush(endpoint), conn),
            Command::SendMedia { id, to, media } => {
                self.add(id, Item::SendMedia { to, media }, conn)
            }
            Command::Group(req) => {
                let Some(id) = id16(&req.id) else {
                    self.shared.pending.fetch_sub(1, Ordering::Relaxed);
                    return;
                };
                self.add(id, Item::Group(req), conn)
            }
            Command::SendGroup { id, group, body } => {
                self.receipts().sent(&group, id, None);
                self.add(id, Item::SendGroup { group, body }, conn)
            }
            Command::Ack(seqs) => {
                // Offline, acks are dropped: the items come again on the next
                // connection, are recognised as duplicates and acknowledged then.
                if let Some(c) = conn.as_deref_mut() {
                    for chunk in seqs.chunks(MAX_BATCH) {
                        c.queue(client_frame::Kind::Ack(Ack {
                            seqs: chunk.to_vec(),
                        }));
                    }
                }
            }
            Command::Typing { to, typing } => {
                if let Some(c) = conn {
                    c.queue(client_frame::Kind::Typing(Typing { to, typing }));
                }
            }
            Command::Watch { user, watch } => {
                if watch {
                    self.watched.insert(user.clone());
                } else {
                    self.watched.remove(&user);
                }
                if let Some(c) = conn {
                    c.queue(client_frame::Kind::WatchPresence(WatchPresence {
                        user,
                        watch,
                    }));
                }
            }
        }
    }

    fn add(&mut self, id: MessageId, item: Item, conn: Option<&mut Conn>) {
        if self.order_of.contains_key(&id) {
            // Already pending under this id: it goes out (again) anyway.
            self.shared.pending.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        let order = self.next_order;
        self.next_order += 1;
        let held = self.hold_until.is_some();
        let p = Pending { id, item, held };
        if let (Some(c), false) = (conn, held) {
            c.queue(p.frame());
        }
        self.order_of.insert(id, order);
        self.pending.insert(order, p);
    }

    fn remove(&mut self, id: &MessageId) -> Option<Pending> {
        let order = self.order_of.remove(id)?;
        let p = self
            .pending
            .remove(&order)
            .expect("order_of and pending agree");
        self.shared.pending.fetch_sub(1, Ordering::Relaxed);
        Some(p)
    }

    fn receipts(&self) -> std::sync::MutexGuard<'_, super::receipts::Tracker> {
        self.shared
            .receipts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn emit_states(&mut self, states: Vec<super::receipts::GroupReceiptState>) {
        for s in states {
            self.emit(Event::GroupReceiptState(s));
        }
    }

    fn emit(&mut self, e: Event) {
        if self.events_gone {
            return;
        }
        self.outbox.push_back(e);
        self.pump();
    }

    /// Moves queued events into the channel while it has room.
    fn pump(&mut self) {
        while let Some(e) = self.outbox.pop_front() {
            match self.events.try_send(e) {
                Ok(()) => {}
                Err(TrySendError::Full(e)) => {
                    self.outbox.push_front(e);
                    return;
                }
                Err(TrySendError::Closed(_)) => {
                    self.events_closed();
                    return;
                }
            }
        }
    }

    fn events_closed(&mut self) {
        self.events_gone = true;
        self.outbox.clear();
    }

    /// Hands the app the events still queued (the last may be `Fatal`), unless
    /// it closes the client or drops its events first.
    async fn finish(mut self) {
        let closing = self.shared.closing.clone();
        while !self.outbox.is_empty() {
            tokio::select! {
                permit = self.events.reserve() => match permit {
                    Ok(p) => p.send(self.outbox.pop_front().expect("outbox is not empty")),
                    Err(_) => break,
                },
                _ = closing.cancelled() => break,
            }
        }
        self.dialer.close(LINGER).await;
    }
}

fn lost(reason: &str) -> Outcome {
    Outcome::Lost {
        code: None,
        reason: reason.to_string(),
        retry_after: None,
    }
}

/// The outcome of the server closing with `code`.
fn ending(code: Option<Code>, reason: String, retry_after: Option<Duration>) -> Outcome {
    match code {
        Some(code) if gives_up(code) => Outcome::Fatal {
            code,
            message: reason,
        },
        code => Outcome::Lost {
            code,
            reason,
            retry_after,
        },
    }
}
