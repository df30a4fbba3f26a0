//! Home to home: the appends a home makes at other homes (today the
//! delivered receipts of acknowledged messages, DESIGN §4), each retried
//! until the other home has it durably.
//!
//! A shard decides a receipt (`Effect::Receipt`) and the shards' dispatcher
//! (`home::cell`) queues it as an errand in the [`Outbox`] (bounded; a full
//! outbox is reported back to the shard as `Op::ReceiptRefused`, which
//! leaves the item in its mailbox, to be delivered and acknowledged again
//! later).
//! [`run`] carries each errand out on a task of its own, at most
//! [`IN_FLIGHT`] destinations at once, one errand at a time and in order
//! for each destination user: to this node's own home through the shards (the
//! local shortcut), or to another island's primary over the cluster link
//! (`common::link_client`, which follows the map when a home answers
//! `WRONG_HOME`). Once the append is durable, the item the errand came from
//! is deleted (`Op::ReceiptStored`). Appends are idempotent by their dedupe
//! key, so a retry after an unknown outcome, or a receipt made twice after
//! a restart, is stored once.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::link::{AppendResult, LinkDown, link_down};
use common::link_client::{LinkClient, LinkClientError};
use common::proto::{Code, Envelope};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::coalesce::Coalescer;
use crate::home::{Home, LinkTx, Op};
use crate::ownership::Ownership;

/// Errands queued beyond those in flight.
const OUTBOX: usize = 1 << 16;
/// Errands carried out at once.
const IN_FLIGHT: usize = 4096;
/// The link id of the courier's answers from this node's own home (link
/// listeners number theirs from 1).
const LOCAL_LINK: u64 = 0;

/// One append to make at another home, and what it was made for: the
/// items it came from (one, or several for delivered receipts aggregated
/// by the [`Coalescer`]), or the requests of members' read receipts to
/// answer.
pub struct Errand {
    pub(crate) to: String,
    pub(crate) envelope: Envelope,
    /// (user, seq) of each item to delete once the append is stored.
    pub(crate) from: Vec<(String, u64)>,
    /// (link, req) of each append request to answer once it is stored.
    pub(crate) waiters: Vec<(LinkTx, u64)>,
}

impl Errand {
    /// An append made for the items `from` and the requests `waiters`.
    pub(crate) fn batch(
        to: String,
        envelope: Envelope,
        from: Vec<(String, u64)>,
        waiters: Vec<(LinkTx, u64)>,
    ) -> Errand {
        Errand {
            to,
            envelope,
            from,
            waiters,
        }
    }
}

/// Where the shards' dispatcher queues errands. Never waits.
#[derive(Clone)]
pub struct Outbox(mpsc::Sender<Errand>);

impl Outbox {
    /// Queues the append of `envelope` to `to`'s mailbox, made for items
    /// `seqs` of `user`; false if the outbox is full.
    pub fn send(&self, to: String, envelope: Envelope, user: &str, seqs: &[u64]) -> bool {
        self.0
            .try_send(Errand {
                to,
                envelope,
                from: seqs.iter().map(|s| (user.to_owned(), *s)).collect(),
                waiters: Vec::new(),
            })
            .is_ok()
    }

    /// Queues a member's group read receipt for `to`, to be aggregated and
    /// appended, and the append request (`link`, `req`) answered once it is
    /// stored. `None` once queued; if the outbox is full, the append to
    /// make instead, alone.
    pub fn gather(&self, link: LinkTx, req: u64, to: String, envelope: Envelope) -> Option<Op> {
        let errand = Errand {
            to,
            envelope,
            from: Vec::new(),
            waiters: vec![(link, req)],
        };
        self.0.try_send(errand).err().map(|e| {
            let Errand {
                to,
                envelope,
                mut waiters,
                ..
            } = e.into_inner();
            let (link, req) = waiters.pop().expect("one waiter");
            Op::Append {
                link,
                req,
                to,
                envelope,
                sender_generation: None,
            }
        })
    }
}

/// A new outbox and the receiving end [`run`] takes.
pub fn outbox() -> (Outbox, mpsc::Receiver<Errand>) {
    outbox_of(OUTBOX)
}

/// An outbox that holds `capacity` errands (tests fill a small one).
pub(crate) fn outbox_of(capacity: usize) -> (Outbox, mpsc::Receiver<Errand>) {
    let (tx, rx) = mpsc::channel(capacity);
    (Outbox(tx), rx)
}

/// How group delivered receipts are aggregated (`[groups] receipt_window`,
/// `receipt_max`; see [`Coalescer`]).
#[derive(Debug, Clone, Copy)]
pub struct Aggregation {
    pub window: Duration,
    pub max: usize,
}

/// What every errand needs.
struct Courier {
    home: Home,
    ownership: Arc<Ownership>,
    /// `None` without the cluster CA: other homes cannot be reached.
    client: Option<Arc<LinkClient>>,
    local: LinkTx,
    next_req: AtomicU64,
    waiting: Mutex<HashMap<u64, oneshot::Sender<AppendResult>>>,
    stop: CancellationToken,
}

/// Carries out the errands of `rx` until `stop`. Errands still queued or in
/// flight then are dropped: their items stay in their mailboxes.
pub async fn run(
    mut rx: mpsc::Receiver<Errand>,
    home: Home,
    ownership: Arc<Ownership>,
    client: Option<Arc<LinkClient>>,
    receipts: Aggregation,
    stop: CancellationToken,
) {
    let Aggregation { window, max } = receipts;
    let (tx, mut answers) = mpsc::channel::<LinkDown>(IN_FLIGHT * 2);
    let courier = Arc::new(Courier {
        home,
        ownership,
        client,
        local: LinkTx::new(LOCAL_LINK, tx, CancellationToken::new()),
        next_req: AtomicU64::new(1),
        waiting: Mutex::default(),
        stop: stop.clone(),
    });
    let answering = {
        let c = Arc::clone(&courier);
        tokio::spawn(async move {
            while let Some(LinkDown { kind }) = answers.recv().await {
                if let Some(link_down::Kind::AppendResult(r)) = kind
                    && let Some(w) = c.lock().remove(&r.req)
                {
                    let _ = w.send(r);
                }
            }
        })
    };
    // Errands to one user go one after another, in the order they came
    // (FIFO per destination, as for any sender); different users' at once.
    // Group delivered receipts wait in the coalescer first (up to its
    // window), so that one item carries many members' receipts.
    let lines: Arc<Mutex<HashMap<String, VecDeque<Errand>>>> = Arc::default();
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let tasks = TaskTracker::new();
    let mut coalescer = Coalescer::new(window, max);
    'run: loop {
        let deadline = coalescer.deadline();
        let errand = tokio::select! {
            e = rx.recv() => match e {
                Some(e) => Some(e),
                None => break,
            },
            () = common::timer::sleep_until_some(deadline.map(Into::into)) => None,
            () = stop.cancelled() => break,
        };
        let now = Instant::now();
        let mut ready = match errand {
            Some(e) => coalescer.offer(e, now),
            None => Vec::new(),
        };
        ready.extend(coalescer.due(now));
        for errand in ready {
            {
                let mut l = lines.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(q) = l.get_mut(&errand.to) {
                    // (At most one errand per acknowledged item still held.)
                    q.push_back(errand);
                    continue;
                }
                l.insert(errand.to.clone(), VecDeque::new());
            }
            let slot = tokio::select! {
                s = Arc::clone(&slots).acquire_owned() => s.expect("never closed"),
                () = stop.cancelled() => break 'run,
            };
            let c = Arc::clone(&courier);
            let lines = Arc::clone(&lines);
            tasks.spawn(async move {
                let mut next = Some(errand);
                while let Some(e) = next.take() {
                    let to = e.to.clone();
                    if !c.deliver(e).await {
                        break;
                    }
                    let mut l = lines.lock().unwrap_or_else(|p| p.into_inner());
                    next = l.get_mut(&to).and_then(VecDeque::pop_front);
                    if next.is_none() {
                        l.remove(&to);
                    }
                }
                drop(slot);
            });
        }
    }
    tasks.close();
    tasks.wait().await;
    answering.abort();
}

impl Courier {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<AppendResult>>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends until it is stored, then has the items it came from deleted
    /// and answers its requests; false if the courier stopped first. An
    /// errand made only for requests (members' read receipts) is tried
    /// once: a refusal or failure answers them with its code, and their
    /// edges and clients retry, as for any append.
    async fn deliver(&self, e: Errand) -> bool {
        let stored = if e.from.is_empty() {
            match self.attempt(&e).await {
                Ok(ts) => Ok(ts),
                Err(f) => {
                    tracing::debug!(to = %e.to, "group read receipts not stored: {f}");
                    for (link, req) in e.waiters {
                        link.send(link_down::Kind::AppendResult(AppendResult {
                            req,
                            code: f.code(),
                            ..Default::default()
                        }));
                    }
                    return !self.stop.is_cancelled();
                }
            }
        } else {
            crate::retry::until_done(&self.stop, "a delivered receipt", || self.attempt(&e)).await
        };
        let Ok(server_ts_ms) = stored else {
            return false;
        };
        for (link, req) in e.waiters {
            link.send(link_down::Kind::AppendResult(AppendResult {
                req,
                server_ts_ms,
                ..Default::default()
            }));
        }
        for (user, seq) in e.from {
            let _ = self.home.submit(Op::ReceiptStored { user, seq }).await;
        }
        true
    }

    /// One try at storing the errand's append: its server time once stored.
    async fn attempt(&self, e: &Errand) -> Result<u64, Failed> {
        if self.ownership.current().owns(&e.to) {
            self.append_here(e).await
        } else {
            self.append_there(e).await
        }
    }

    /// The local shortcut: the shards of this node, as a link would.
    async fn append_here(&self, e: &Errand) -> Result<u64, Failed> {
        let req = self.next_req.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.lock().insert(req, tx);
        let submitted = self
            .home
            .submit(Op::Append {
                link: self.local.clone(),
                req,
                to: e.to.clone(),
                envelope: e.envelope.clone(),
                sender_generation: None,
            })
            .await;
        if submitted.is_err() {
            self.lock().remove(&req);
            return Err(Failed::Other("the home is shutting down".into()));
        }
        let r = tokio::select! {
            r = rx => r.map_err(|_| Failed::Other("the home dropped the append".into()))?,
            () = self.stop.cancelled() => return Err(Failed::Other("stopping".into())),
        };
        match r.code {
            0 => Ok(r.server_ts_ms),
            c => Err(Failed::Refused(c)),
        }
    }

    async fn append_there(&self, e: &Errand) -> Result<u64, Failed> {
        let Some(client) = &self.client else {
            return Err(Failed::Other(
                "cluster.ca is not readable, so other homes cannot be reached".into(),
            ));
        };
        match client.append(&e.to, e.envelope.clone()).await {
            Ok(r) => Ok(r.server_ts_ms),
            Err(LinkClientError::Refused { code }) => Err(Failed::Refused(code)),
            Err(err) => Err(Failed::Other(err.to_string())),
        }
    }
}

/// Why an append was not stored.
enum Failed {
    /// The home answered with this code.
    Refused(u32),
    /// No answer: the link, the map, or this node stopping.
    Other(String),
}

impl Failed {
    /// The code to answer a waiting request with.
    fn code(&self) -> u32 {
        match self {
            Failed::Refused(c) => *c,
            Failed::Other(_) => Code::Unavailable as u32,
        }
    }
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failed::Refused(c) => write!(
                f,
                "the home refused it: {}",
                Code::from_u32(*c).map_or_else(|| c.to_string(), |c| c.to_string())
            ),
            Failed::Other(reason) => f.write_str(reason),
        }
    }
}
