//! The home: per-user state for every user this node is home to.
//!
//! Users are spread over a fixed number of shard tasks by a hash of the user
//! id; a shard owns its users' in-memory state outright (no locks) and handles
//! one operation at a time, so every operation on one user happens in order.
//! That is what gives FIFO per (sender, recipient): a link delivers one edge's
//! appends in order and a shard applies them in order.
//!
//! An append is written to storage at once, then waits in the shard's
//! `pending` queue for the group commit (`crate::flusher`) to cover its ticket.
//! Only then is it answered (`AppendResult`) and pushed to the recipient's
//! sessions: nothing is ever shown to a recipient that the sender has not had
//! (or is not about to have) acknowledged, so a sender never sees a delivered
//! receipt before its own `Accepted`.
//!
//! Pushes are flow controlled per session: at most [`PUSH_WINDOW`] items are
//! in flight; acks open the window and the shard reads on from storage.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use common::link::{
    AppendResult, Kick, LinkDown, PUSH_WINDOW, PresenceDown, Push, TypingDown, link_down,
};
use common::proto::{Code, Envelope, ids};
use prost::Message;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::flusher::{Commit, FlushError, Settled};
use crate::storage::{DedupeKey, Storage, StorageError};

/// Operations queued per shard before a link reader waits (backpressure to
/// the edge through TCP).
const SHARD_QUEUE: usize = 4096;

/// Identifies one link (one edge connection) for the life of the process.
pub type LinkId = u64;

/// The sending side of a link: frames for one edge. Sends never wait: a link
/// whose queue is full has an edge that stopped reading, and is cut (the edge
/// reconnects and its sessions start afresh) rather than stalling a shard.
#[derive(Clone)]
pub struct LinkTx {
    pub id: LinkId,
    tx: mpsc::Sender<LinkDown>,
    dead: CancellationToken,
}

impl LinkTx {
    pub fn new(id: LinkId, tx: mpsc::Sender<LinkDown>, dead: CancellationToken) -> LinkTx {
        LinkTx { id, tx, dead }
    }

    pub fn send(&self, kind: link_down::Kind) {
        if self.tx.try_send(LinkDown { kind: Some(kind) }).is_err() && !self.dead.is_cancelled() {
            tracing::warn!(
                link = self.id,
                "link queue full or closed; cutting the link"
            );
            self.dead.cancel();
        }
    }
}

/// One operation on a user, from a link.
pub enum Op {
    Append {
        link: LinkTx,
        req: u64,
        to: String,
        envelope: Envelope,
    },
    Attach {
        link: LinkTx,
        session: u64,
        user: String,
        device: u32,
    },
    Detach {
        link: LinkId,
        session: u64,
        user: String,
    },
    Ack {
        link: LinkId,
        session: u64,
        user: String,
        seqs: Vec<u64>,
    },
    Typing {
        from: String,
        to: String,
        typing: bool,
    },
    Watch {
        link: LinkTx,
        session: u64,
        target: String,
        watch: bool,
    },
    /// A link ended: forget its sessions and presence watches (sent to every
    /// shard, after the link's last operation).
    LinkGone { link: LinkId },
    /// These items are past their age: delete them.
    Expire { user: String, seqs: Vec<u64> },
}

/// Per-mailbox limits the home enforces on appends.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_items: u64,
    pub max_bytes: u64,
}

impl Op {
    fn user(&self) -> Option<&str> {
        match self {
            Op::Append { to, .. } => Some(to),
            Op::Attach { user, .. } | Op::Detach { user, .. } | Op::Ack { user, .. } => Some(user),
            Op::Typing { to, .. } => Some(to),
            Op::Watch { target, .. } => Some(target),
            Op::Expire { user, .. } => Some(user),
            Op::LinkGone { .. } => None,
        }
    }
}

/// The shards closed: the store is shutting down.
#[derive(Debug, thiserror::Error)]
#[error("the home is shutting down")]
pub struct HomeClosed;

/// A handle on the shards; clones share them. The shards finish (after
/// answering every pending append) once every handle is dropped.
#[derive(Clone)]
pub struct Home {
    shards: Arc<[mpsc::Sender<Op>]>,
}

impl Home {
    /// Starts `n` shard tasks over `storage`.
    pub fn start(
        storage: Arc<dyn Storage>,
        commit: Arc<Commit>,
        limits: Limits,
        n: usize,
    ) -> (Home, Vec<tokio::task::JoinHandle<()>>) {
        let mut senders = Vec::with_capacity(n);
        let mut tasks = Vec::with_capacity(n);
        for _ in 0..n.max(1) {
            let (tx, rx) = mpsc::channel(SHARD_QUEUE);
            senders.push(tx);
            let shard = Shard {
                storage: Arc::clone(&storage),
                commit: Arc::clone(&commit),
                settled: commit.settled(),
                limits,
                users: HashMap::new(),
                pending: VecDeque::new(),
            };
            tasks.push(tokio::spawn(shard.run(rx)));
        }
        (
            Home {
                shards: senders.into(),
            },
            tasks,
        )
    }

    fn shard_of(&self, user: &str) -> &mpsc::Sender<Op> {
        let mut h = std::hash::DefaultHasher::new();
        user.hash(&mut h);
        &self.shards[(h.finish() % self.shards.len() as u64) as usize]
    }

    /// Queues `op` on its user's shard, waiting while that shard is busy.
    pub async fn submit(&self, op: Op) -> Result<(), HomeClosed> {
        match op.user() {
            Some(user) => self.shard_of(user).send(op).await.map_err(|_| HomeClosed),
            None => {
                let Op::LinkGone { link } = op else {
                    unreachable!("only LinkGone has no user")
                };
                for s in self.shards.iter() {
                    s.send(Op::LinkGone { link })
                        .await
                        .map_err(|_| HomeClosed)?;
                }
                Ok(())
            }
        }
    }
}

struct Session {
    link: LinkTx,
    id: u64,
    /// The next sequence number to consider pushing.
    cursor: u64,
    /// Pushed and not yet acknowledged.
    inflight: BTreeSet<u64>,
}

struct Watcher {
    link: LinkTx,
    session: u64,
}

/// A user's in-memory state, kept while it has sessions, watchers or appends
/// waiting for a flush.
struct User {
    /// Highest sequence number assigned.
    last_seq: u64,
    /// Highest sequence number known durable: pushes stop there.
    durable: u64,
    /// Appends to this mailbox waiting for a flush.
    unflushed: u32,
    sessions: Vec<Session>,
    watchers: Vec<Watcher>,
    last_seen: Option<u64>,
}

impl User {
    fn idle(&self) -> bool {
        self.sessions.is_empty() && self.watchers.is_empty() && self.unflushed == 0
    }
}

/// An answer (and maybe a push) held back until a flush covers `ticket`.
struct Pending {
    ticket: u64,
    link: LinkTx,
    req: u64,
    server_ts_ms: u64,
    seq: u64,
    /// The user whose mailbox got a new item (None for a duplicate).
    fresh: Option<String>,
}

struct Shard {
    storage: Arc<dyn Storage>,
    commit: Arc<Commit>,
    settled: Settled,
    limits: Limits,
    users: HashMap<String, User>,
    /// Tickets in rising order: a shard takes them one after another.
    pending: VecDeque<Pending>,
}

fn result(link: &LinkTx, req: u64, code: Code) {
    link.send(link_down::Kind::AppendResult(AppendResult {
        req,
        code: code as u32,
        ..Default::default()
    }));
}

impl Shard {
    async fn run(mut self, mut rx: mpsc::Receiver<Op>) {
        let mut open = true;
        loop {
            tokio::select! {
                op = rx.recv(), if open => match op {
                    Some(op) => self.handle(op),
                    None => open = false,
                },
                () = self.settled.changed() => {}
            }
            self.settle();
            if !open && self.pending.is_empty() {
                break;
            }
        }
    }

    fn handle(&mut self, op: Op) {
        match op {
            Op::Append {
                link,
                req,
                to,
                envelope,
            } => {
                if let Err(code) = self.append(&link, req, to, envelope) {
                    result(&link, req, code);
                }
            }
            Op::Attach {
                link,
                session,
                user,
                device,
            } => self.attach(link, session, user, device),
            Op::Detach {
                link,
                session,
                user,
            } => self.detach(link, session, &user),
            Op::Ack {
                link,
                session,
                user,
                seqs,
            } => self.ack(link, session, &user, &seqs),
            Op::Typing { from, to, typing } => {
                if let Some(u) = self.users.get(&to) {
                    for s in &u.sessions {
                        s.link.send(link_down::Kind::Typing(TypingDown {
                            session: s.id,
                            from: from.clone(),
                            typing,
                        }));
                    }
                }
            }
            Op::Watch {
                link,
                session,
                target,
                watch,
            } => self.watch(link, session, target, watch),
            Op::LinkGone { link } => self.link_gone(link),
            Op::Expire { user, seqs } => self.expire(&user, &seqs),
        }
    }

    fn load(&mut self, user: &str) -> Result<&mut User, StorageError> {
        if !self.users.contains_key(user) {
            let last_seq = self.storage.last_seq(user)?;
            let last_seen = self.storage.last_seen(user)?;
            self.users.insert(
                user.to_owned(),
                User {
                    last_seq,
                    durable: last_seq,
                    unflushed: 0,
                    sessions: Vec::new(),
                    watchers: Vec::new(),
                    last_seen,
                },
            );
        }
        Ok(self.users.get_mut(user).expect("inserted above"))
    }

    fn evict_if_idle(&mut self, user: &str) {
        if self.users.get(user).is_some_and(User::idle) {
            self.users.remove(user);
        }
    }

    fn append(
        &mut self,
        link: &LinkTx,
        req: u64,
        to: String,
        mut envelope: Envelope,
    ) -> Result<(), Code> {
        if !ids::valid_user_id(&to) || !ids::valid_user_id(&envelope.from) {
            return Err(Code::BadRecipient);
        }
        if !ids::valid_message_id(&envelope.id) {
            return Err(Code::BadId);
        }
        let internal = |e: StorageError| {
            tracing::error!(error = %e, "append failed");
            Code::Internal
        };
        let id = envelope.id.clone();
        let from = envelope.from.clone();
        let key = DedupeKey {
            to: &to,
            from: &from,
            kind: envelope.item_kind(),
            id: &id,
        };
        if let Some(original) = self.storage.dedupe(&key).map_err(internal)? {
            // The original may not be flushed yet: answer after the flush
            // that covers every write so far.
            self.pending.push_back(Pending {
                ticket: self.commit.current(),
                link: link.clone(),
                req,
                server_ts_ms: original.server_ts_ms,
                seq: original.seq,
                fresh: None,
            });
            return Ok(());
        }
        // Receipts get twice the room, so that a full mailbox never blocks
        // the acknowledgement (and so the deletion) of messages elsewhere.
        let room = match envelope.item_kind() {
            common::proto::ItemKind::Message => 1,
            _ => 2,
        };
        let size = self.storage.mailbox_size(&to).map_err(internal)?;
        let len = envelope.encoded_len() as u64;
        if size.items >= self.limits.max_items * room
            || size.bytes + len > self.limits.max_bytes * room
        {
            return Err(Code::MailboxFull);
        }
        let storage = Arc::clone(&self.storage);
        let user = self.load(&to).map_err(internal)?;
        let seq = user.last_seq + 1;
        envelope.server_ts_ms = common::fsutil::now_ms();
        let server_ts_ms = envelope.server_ts_ms;
        storage
            .append(&to, seq, &envelope, &key)
            .map_err(internal)?;
        user.last_seq = seq;
        user.unflushed += 1;
        let ticket = self.commit.ticket();
        self.pending.push_back(Pending {
            ticket,
            link: link.clone(),
            req,
            server_ts_ms,
            seq,
            fresh: Some(to),
        });
        Ok(())
    }

    /// Answers every pending append a flush has settled, in order, and pushes
    /// the items that became durable.
    fn settle(&mut self) {
        while let Some(p) = self.pending.front() {
            let Some(outcome) = self.settled.outcome(p.ticket) else {
                break;
            };
            let p = self.pending.pop_front().expect("front exists");
            let code = match outcome {
                Ok(()) => 0,
                Err(FlushError::Failed) => Code::Internal as u32,
                Err(FlushError::Stopped) => Code::Unavailable as u32,
            };
            p.link.send(link_down::Kind::AppendResult(AppendResult {
                req: p.req,
                code,
                server_ts_ms: p.server_ts_ms,
                duplicate: p.fresh.is_none(),
                seq: p.seq,
            }));
            if let Some(to) = p.fresh {
                if let Some(u) = self.users.get_mut(&to) {
                    u.unflushed -= 1;
                    u.durable = u.durable.max(p.seq);
                    for i in 0..u.sessions.len() {
                        fill(&*self.storage, &to, u.durable, &mut u.sessions[i]);
                    }
                }
                self.evict_if_idle(&to);
            }
        }
    }

    fn attach(&mut self, link: LinkTx, session: u64, user: String, device: u32) {
        let storage = Arc::clone(&self.storage);
        let u = match self.load(&user) {
            Ok(u) => u,
            Err(e) => {
                tracing::error!(error = %e, "cannot load a mailbox; refusing the session");
                link.send(link_down::Kind::Kick(Kick {
                    session,
                    code: Code::Internal as u32,
                }));
                return;
            }
        };
        tracing::debug!(session, device, "attach");
        u.sessions
            .retain(|s| !(s.link.id == link.id && s.id == session));
        let was_online = !u.sessions.is_empty();
        let mut s = Session {
            link,
            id: session,
            cursor: 1,
            inflight: BTreeSet::new(),
        };
        fill(&*storage, &user, u.durable, &mut s);
        u.sessions.push(s);
        if !was_online {
            notify_presence(u, &user, true);
        }
    }

    fn detach(&mut self, link: LinkId, session: u64, user: &str) {
        let Some(u) = self.users.get_mut(user) else {
            return;
        };
        let before = u.sessions.len();
        u.sessions
            .retain(|s| !(s.link.id == link && s.id == session));
        if before > 0 && u.sessions.is_empty() {
            went_offline(&*self.storage, u, user);
        }
        self.evict_if_idle(user);
    }

    fn ack(&mut self, link: LinkId, session: u64, user: &str, seqs: &[u64]) {
        let storage = Arc::clone(&self.storage);
        let Some(u) = self.users.get_mut(user) else {
            return;
        };
        // Only what this session was given; an ack for anything else is a
        // confused or stale edge, and deleting on it could lose a message.
        let Some(s) = u
            .sessions
            .iter()
            .find(|s| s.link.id == link && s.id == session)
        else {
            return;
        };
        let valid: Vec<u64> = seqs
            .iter()
            .copied()
            .filter(|q| s.inflight.contains(q))
            .collect();
        if let Err(e) = storage.delete(user, &valid) {
            tracing::error!(error = %e, "delete failed; the items will be delivered again");
            return;
        }
        let durable = u.durable;
        for s in &mut u.sessions {
            for q in &valid {
                s.inflight.remove(q);
            }
            fill(&*storage, user, durable, s);
        }
    }

    fn expire(&mut self, user: &str, seqs: &[u64]) {
        match self.storage.delete(user, seqs) {
            Ok(n) if n > 0 => tracing::debug!(items = n, "expired"),
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "expiry delete failed; the next sweep retries");
                return;
            }
        }
        let storage = Arc::clone(&self.storage);
        if let Some(u) = self.users.get_mut(user) {
            let durable = u.durable;
            for s in &mut u.sessions {
                for q in seqs {
                    s.inflight.remove(q);
                }
                fill(&*storage, user, durable, s);
            }
        }
    }

    fn watch(&mut self, link: LinkTx, session: u64, target: String, watch: bool) {
        let u = match self.load(&target) {
            Ok(u) => u,
            Err(e) => {
                tracing::error!(error = %e, "cannot load a user for presence");
                return;
            }
        };
        u.watchers
            .retain(|w| !(w.link.id == link.id && w.session == session));
        if watch {
            link.send(link_down::Kind::Presence(PresenceDown {
                session,
                user: target.clone(),
                online: !u.sessions.is_empty(),
                last_seen_ms: u.last_seen.unwrap_or(0),
            }));
            u.watchers.push(Watcher { link, session });
        }
        self.evict_if_idle(&target);
    }

    fn link_gone(&mut self, link: LinkId) {
        let storage = Arc::clone(&self.storage);
        let mut idle = Vec::new();
        for (name, u) in self.users.iter_mut() {
            let before = u.sessions.len();
            u.sessions.retain(|s| s.link.id != link);
            u.watchers.retain(|w| w.link.id != link);
            if before > 0 && u.sessions.is_empty() {
                went_offline(&*storage, u, name);
            }
            if u.idle() {
                idle.push(name.clone());
            }
        }
        for name in idle {
            self.users.remove(&name);
        }
    }
}

/// Pushes `s` the durable items it has not had, up to its window.
fn fill(storage: &dyn Storage, user: &str, durable: u64, s: &mut Session) {
    while s.inflight.len() < PUSH_WINDOW && s.cursor <= durable {
        let room = PUSH_WINDOW - s.inflight.len();
        let items = match storage.read(user, s.cursor, room) {
            Ok(items) => items,
            Err(e) => {
                tracing::error!(error = %e, "mailbox read failed; closing the session");
                s.link.send(link_down::Kind::Kick(Kick {
                    session: s.id,
                    code: Code::Internal as u32,
                }));
                s.cursor = u64::MAX;
                return;
            }
        };
        let got = items.len();
        for item in items {
            if item.seq > durable {
                s.cursor = item.seq;
                return;
            }
            s.cursor = item.seq + 1;
            s.inflight.insert(item.seq);
            s.link.send(link_down::Kind::Push(Push {
                session: s.id,
                seq: item.seq,
                envelope: Some(item.envelope),
            }));
        }
        if got < room {
            // Nothing more is stored up to `durable`.
            s.cursor = s.cursor.max(durable + 1);
        }
    }
}

fn went_offline(storage: &dyn Storage, u: &mut User, user: &str) {
    let now = common::fsutil::now_ms();
    u.last_seen = Some(now);
    if let Err(e) = storage.set_last_seen(user, now) {
        tracing::warn!(error = %e, "cannot record last seen");
    }
    notify_presence(u, user, false);
}

fn notify_presence(u: &User, user: &str, online: bool) {
    for w in &u.watchers {
        w.link.send(link_down::Kind::Presence(PresenceDown {
            session: w.session,
            user: user.to_owned(),
            online,
            last_seen_ms: u.last_seen.unwrap_or(0),
        }));
    }
}

/// Deletes undelivered items older than `expire_after`, every `interval`,
/// until `stop`. Runs the scan off the async threads and hands deletions to
/// the shards, which own the mailboxes.
pub async fn sweep(
    storage: Arc<dyn Storage>,
    home: Home,
    expire_after: std::time::Duration,
    interval: std::time::Duration,
    stop: CancellationToken,
) {
    const PAGE: usize = 1024;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let before = common::fsutil::now_ms().saturating_sub(expire_after.as_millis() as u64);
        let mut after = None;
        let mut total = 0usize;
        loop {
            let st = Arc::clone(&storage);
            let from = after.clone();
            let page = tokio::task::spawn_blocking(move || st.expired(before, from.as_ref(), PAGE))
                .await
                .expect("expiry scan does not panic");
            let page = match page {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e, "expiry scan failed");
                    break;
                }
            };
            let full = page.len() == PAGE;
            after = page.last().cloned();
            total += page.len();
            let mut by_user: HashMap<String, Vec<u64>> = HashMap::new();
            for e in page {
                by_user.entry(e.user).or_default().push(e.seq);
            }
            for (user, seqs) in by_user {
                if stop.is_cancelled() || home.submit(Op::Expire { user, seqs }).await.is_err() {
                    return;
                }
            }
            if !full {
                break;
            }
        }
        if total > 0 {
            tracing::info!(items = total, "expired undelivered items");
        }
    }
}
