//! The groups module's own link into this node's shards (the local
//! shortcut, like the courier's): key-value reads and writes of group
//! records, appends to group logs and to members' mailboxes here, and the
//! fan-out's sessions on group logs. Answers come back on a [`LinkTx`]
//! whose frames one task routes: answers by request id, pushes by session.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::link::{AppendResult, KvResult, KvSpace, LinkDown, link_down};
use common::proto::{Code, Envelope};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::home::{Home, LinkTx, Op};

/// The link id of the groups module's frames (edges' links count up from
/// 1, the courier's is 0).
const GROUPS_LINK: u64 = u64::MAX;
/// Frames queued towards the router; it never waits, so this is slack.
const QUEUE: usize = 1 << 16;

/// What a session on a group log receives.
pub enum SessionFrame {
    Push { seq: u64, envelope: Envelope },
    Kicked(u32),
}

type Answers = HashMap<u64, oneshot::Sender<link_down::Kind>>;
type Sessions = HashMap<u64, mpsc::UnboundedSender<SessionFrame>>;

pub struct Local {
    pub home: Home,
    /// Answers stop coming with it: whoever waits for one gives up.
    stop: CancellationToken,
    tx: LinkTx,
    next: AtomicU64,
    answers: Mutex<Answers>,
    sessions: Mutex<Sessions>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Local {
    /// The local link, and its router and refill tasks (until `stop`).
    pub fn start(home: Home, stop: CancellationToken) -> Arc<Local> {
        let (tx, mut rx) = mpsc::channel::<LinkDown>(QUEUE);
        // (The refill task, holding the home, ends with the module: the
        // shards end only once nothing holds the home.)
        let dead = stop.child_token();
        let local = Arc::new(Local {
            home: home.clone(),
            stop: stop.clone(),
            tx: LinkTx::new(GROUPS_LINK, tx, dead.clone()),
            next: AtomicU64::new(1),
            answers: Mutex::default(),
            sessions: Mutex::default(),
        });
        let l = Arc::clone(&local);
        tokio::spawn(async move {
            loop {
                let kind = tokio::select! {
                    f = rx.recv() => match f {
                        Some(LinkDown { kind: Some(k) }) => k,
                        Some(_) => continue,
                        None => return,
                    },
                    () = stop.cancelled() => return,
                };
                l.route(kind);
            }
        });
        tokio::spawn(crate::listener::refill(local.tx.clone(), home, dead));
        local
    }

    fn route(&self, kind: link_down::Kind) {
        let answer_to = |req: u64, kind: link_down::Kind| {
            if let Some(w) = lock(&self.answers).remove(&req) {
                let _ = w.send(kind);
            }
        };
        let to_session = |session: u64, f: SessionFrame| {
            if let Some(s) = lock(&self.sessions).get(&session) {
                let _ = s.send(f);
            }
        };
        match kind {
            link_down::Kind::AppendResult(r) => answer_to(r.req, link_down::Kind::AppendResult(r)),
            link_down::Kind::KvResult(r) => answer_to(r.req, link_down::Kind::KvResult(r)),
            link_down::Kind::Push(p) => {
                if let Some(envelope) = p.envelope {
                    to_session(
                        p.session,
                        SessionFrame::Push {
                            seq: p.seq,
                            envelope,
                        },
                    );
                }
            }
            link_down::Kind::Kick(k) => to_session(k.session, SessionFrame::Kicked(k.code)),
            _ => {}
        }
    }

    /// Submits `op` (made with a fresh request id) and hands back the
    /// receiver of its answer once the shard has it queued.
    async fn ask(
        &self,
        op: impl FnOnce(LinkTx, u64) -> Op,
    ) -> Result<oneshot::Receiver<link_down::Kind>, Code> {
        let req = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.answers).insert(req, tx);
        if self.home.submit(op(self.tx.clone(), req)).await.is_err() {
            lock(&self.answers).remove(&req);
            return Err(Code::Unavailable);
        }
        Ok(rx)
    }

    /// Reads record `key` of `space` (a group's record, a user's groups):
    /// its version (0: never written) and value.
    pub async fn kv_get(&self, space: KvSpace, key: &str) -> Result<(u64, Bytes), Code> {
        let r = self.kv(space, key, None).await?;
        Ok((r.version, r.value))
    }

    /// Compare-and-set of record `key` of `space`, answered once durable.
    pub async fn kv_put(
        &self,
        space: KvSpace,
        key: &str,
        value: Bytes,
        expected: u64,
    ) -> Result<KvResult, Code> {
        self.kv(space, key, Some((value, expected))).await
    }

    async fn kv(
        &self,
        space: KvSpace,
        key: &str,
        put: Option<(Bytes, u64)>,
    ) -> Result<KvResult, Code> {
        let rx = self
            .ask(|link, req| Op::Kv {
                link,
                req,
                space,
                key: key.to_owned(),
                put,
            })
            .await?;
        match self.answer(rx).await {
            Ok(link_down::Kind::KvResult(r)) if r.code == 0 => Ok(r),
            Ok(link_down::Kind::KvResult(r)) => {
                Err(Code::from_u32(r.code).unwrap_or(Code::Internal))
            }
            _ => Err(Code::Unavailable),
        }
    }

    /// Queues the append of `envelope` to mailbox `to` here; the receiver
    /// has its answer once durable. Appends queued one after another keep
    /// their order in the mailbox.
    pub async fn submit_append(
        &self,
        to: &str,
        envelope: Envelope,
    ) -> Result<oneshot::Receiver<link_down::Kind>, Code> {
        self.ask(|link, req| Op::Append {
            link,
            req,
            to: to.to_owned(),
            envelope,
            sender_generation: None,
        })
        .await
    }

    async fn answer(
        &self,
        rx: oneshot::Receiver<link_down::Kind>,
    ) -> Result<link_down::Kind, Code> {
        tokio::select! {
            r = rx => r.map_err(|_| Code::Unavailable),
            () = self.stop.cancelled() => Err(Code::Unavailable),
        }
    }

    /// The answer of an append queued with [`Local::submit_append`].
    pub async fn appended(
        &self,
        rx: oneshot::Receiver<link_down::Kind>,
    ) -> Result<AppendResult, Code> {
        match self.answer(rx).await {
            Ok(link_down::Kind::AppendResult(r)) if r.code == 0 => Ok(r),
            Ok(link_down::Kind::AppendResult(r)) => {
                Err(Code::from_u32(r.code).unwrap_or(Code::Internal))
            }
            _ => Err(Code::Unavailable),
        }
    }

    /// Appends `envelope` to mailbox `to` here, answered once durable.
    pub async fn append(&self, to: &str, envelope: Envelope) -> Result<AppendResult, Code> {
        self.appended(self.submit_append(to, envelope).await?).await
    }

    /// A session of this link on mailbox `log` (a group's log): its items
    /// come, in order and windowed, as [`SessionFrame::Push`].
    pub async fn attach(
        &self,
        log: &str,
    ) -> Result<(u64, mpsc::UnboundedReceiver<SessionFrame>), Code> {
        let session = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.sessions).insert(session, tx);
        let op = Op::Attach {
            link: self.tx.clone(),
            session,
            user: log.to_owned(),
            device: 0,
            generation: 0,
        };
        if self.home.submit(op).await.is_err() {
            lock(&self.sessions).remove(&session);
            return Err(Code::Unavailable);
        }
        Ok((session, rx))
    }

    /// Item `seq` of `log` is done with: the home deletes it.
    pub async fn ack(&self, session: u64, log: &str, seq: u64) {
        let _ = self
            .home
            .submit(Op::Ack {
                link: GROUPS_LINK,
                session,
                user: log.to_owned(),
                seqs: vec![seq],
            })
            .await;
    }

    /// The session on `log` ends.
    pub async fn detach(&self, session: u64, log: &str) {
        lock(&self.sessions).remove(&session);
        let _ = self
            .home
            .submit(Op::Detach {
                link: GROUPS_LINK,
                session,
                user: log.to_owned(),
            })
            .await;
    }
}
