//! Property test: the home's mailboxes (write-back cache, journal, engine,
//! bypass, memory pressure, expiry, restarts with journal replay) give the
//! same answers as a plain in-memory model, for any sequence of operations.
//!
//! Kept beside `shard::model_tests` (the shard's state machine driven
//! directly, no I/O, effects checked one by one) for what that one cannot
//! cover by design: sled and fjall themselves, the on-disk journal and its
//! replay after a restart, the cell that hands shards between threads and
//! the real write-back task.
//!
//! The harness drives real shards over the real storage engines and journal;
//! only the link is replaced by a channel, read in order. A "barrier" (a
//! presence watch of the user, answered by the user's own shard after every
//! earlier operation) tells when a shard has pushed all it will push.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::link::{AppendResult, LinkDown, link_down};
use common::proto::{Envelope, envelope::Content};
use proptest::prelude::*;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{CacheConfig, Home, Limits, LinkTx, Op};
use crate::flusher::{Commit, FlushFn};
use crate::journal::Journal;
use crate::metrics::Metrics;
use crate::storage::{FjallStorage, SledStorage, Storage};

const USERS: [&str; 3] = ["ann", "bo", "cy"];
const BARRIER: u64 = u64::MAX;
/// Longer than any test: only explicit rounds (and memory pressure) move
/// items to the engine.
const SYNC_DELAY: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone)]
enum Step {
    /// `from` sends `to` a new message, or resends its last one if that is
    /// still waiting in `to`'s mailbox.
    Append {
        to: usize,
        from: usize,
        resend: bool,
    },
    /// A session of `user` connects, gets its window, acknowledges the first
    /// `ack` items it got, and leaves.
    Deliver { user: usize, ack: usize },
    /// Items stored before the `pick`-th waiting item expire.
    Expire { pick: usize },
    /// A write-back round (every cached item with `all`).
    WriteBack { all: bool },
    /// A write-back round whose engine writes are held back while the steps
    /// after it run, until a step that needs the engine settled (another
    /// round, expiry, restart, forget, or the end): appends, deliveries and
    /// acks meet items that are in flight to the engine.
    SlowWriteBack { all: bool },
    /// The shards forget the dedupe keys they hold in memory for items that
    /// are in the engine (as when such an item lingers past the in-memory
    /// window): later resends of them are recognised by the engine alone.
    Forget,
    /// Stop without the final write-back (like a crash after the last
    /// acknowledged append was synced) and open again: the journal replays.
    Restart,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0..3usize, 0..3usize, any::<bool>()).prop_map(|(to, from, resend)| Step::Append { to, from, resend }),
        3 => (0..3usize, 0..6usize).prop_map(|(user, ack)| Step::Deliver { user, ack }),
        1 => (0..8usize).prop_map(|pick| Step::Expire { pick }),
        1 => any::<bool>().prop_map(|all| Step::WriteBack { all }),
        1 => any::<bool>().prop_map(|all| Step::SlowWriteBack { all }),
        1 => Just(Step::Forget),
        1 => Just(Step::Restart),
    ]
}

/// An item as the model knows it.
#[derive(Debug, Clone, PartialEq)]
struct Item {
    from: String,
    id: Bytes,
    ts: u64,
}

#[derive(Default)]
struct Model {
    boxes: HashMap<String, BTreeMap<u64, Item>>,
    last_seq: HashMap<String, u64>,
    /// (from, to) -> id of the last message.
    last_sent: HashMap<(String, String), Bytes>,
}

/// Holds back the write-back task's engine writes while closed (see
/// `Step::SlowWriteBack`).
#[derive(Default)]
struct Gate {
    /// (closed, writes waiting at it)
    state: std::sync::Mutex<(bool, usize)>,
    cv: std::sync::Condvar,
    /// Write-back's counter writes fail (an engine error).
    fail_counters: std::sync::atomic::AtomicBool,
}

impl Gate {
    fn pass(&self) {
        if !super::WRITING_BACK.get() {
            return;
        }
        let mut g = self.state.lock().unwrap();
        g.1 += 1;
        self.cv.notify_all();
        while g.0 {
            g = self.cv.wait(g).unwrap();
        }
        g.1 -= 1;
    }

    fn close(&self) {
        self.state.lock().unwrap().0 = true;
    }

    /// Waits until a write-back write is held at the gate, or `limit`.
    fn wait_for_writer(&self, limit: Duration) -> bool {
        let g = self.state.lock().unwrap();
        let (g, _) = self.cv.wait_timeout_while(g, limit, |g| g.1 == 0).unwrap();
        g.1 > 0
    }

    fn open(&self) {
        self.state.lock().unwrap().0 = false;
        self.cv.notify_all();
    }
}

/// The real engine, with the write-back task's writes going through a gate.
struct Gated {
    inner: Arc<dyn Storage>,
    gate: Arc<Gate>,
}

struct Harness {
    dir: tempfile::TempDir,
    gate: Arc<Gate>,
    /// A write-back round held at the gate.
    slow: Option<tokio::task::JoinHandle<()>>,
    fjall: bool,
    storage: Arc<dyn Storage>,
    journal: Arc<Journal>,
    home: Option<Home>,
    shards: Vec<tokio::task::JoinHandle<()>>,
    flusher: Option<tokio::task::JoinHandle<()>>,
    flusher_stop: CancellationToken,
    metrics: Arc<Metrics>,
    link: LinkTx,
    rx: mpsc::Receiver<LinkDown>,
    next: u64,
}

fn open_storage(dir: &std::path::Path, fjall: bool, gate: &Arc<Gate>) -> Arc<dyn Storage> {
    use crate::storage::tests::retrying;
    let inner: Arc<dyn Storage> = if fjall {
        Arc::new(retrying(|| FjallStorage::open(&dir.join("fjall"))).unwrap())
    } else {
        Arc::new(retrying(|| SledStorage::open(&dir.join("sled"))).unwrap())
    };
    Arc::new(Gated {
        inner,
        gate: Arc::clone(gate),
    })
}

/// Journal segments so small that some cases rotate (17 rotations over a
/// run when this was written), with spares made meanwhile.
const MODEL_SEGMENT: u64 = 512;

impl Harness {
    fn new(fjall: bool) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = mpsc::channel(1 << 16);
        let link = LinkTx::new(1, tx, CancellationToken::new());
        let gate = Arc::new(Gate::default());
        let storage = open_storage(dir.path(), fjall, &gate);
        let journal =
            crate::recover(&*storage, &dir.path().join("journal"), MODEL_SEGMENT).unwrap();
        let mut h = Harness {
            dir,
            gate,
            slow: None,
            fjall,
            storage,
            journal: Arc::new(journal),
            home: None,
            shards: Vec::new(),
            flusher: None,
            flusher_stop: CancellationToken::new(),
            metrics: Arc::default(),
            link,
            rx,
            next: 0,
        };
        h.start();
        h
    }

    fn start(&mut self) {
        let commit = Arc::new(Commit::new());
        let journal = Arc::clone(&self.journal);
        let flush: FlushFn = Arc::new(move || {
            journal
                .sync()
                .map_err(|e| crate::storage::StorageError::Engine {
                    op: "journal sync",
                    source: Box::new(e),
                })
        });
        self.flusher_stop = CancellationToken::new();
        self.flusher = Some(tokio::spawn(
            Arc::clone(&commit).run(flush, self.flusher_stop.clone()),
        ));
        let (home, shards) = Home::start(
            Arc::clone(&self.storage),
            Arc::clone(&self.journal),
            commit,
            Limits {
                max_items: 1000,
                max_bytes: 1 << 20,
            },
            // Small on purpose: bypass and memory pressure happen often.
            CacheConfig {
                sync_delay: SYNC_DELAY,
                bypass_items: 3,
                budget_bytes: 2 * 300,
                expire_after: Duration::from_secs(30 * 86400),
                // Rounds cut into slices of two items, so that slicing runs.
                write_back_slice: 2,
            },
            Arc::clone(&self.metrics),
            super::Fatal::new(CancellationToken::new()),
            2,
            None,
            None,
        );
        self.home = Some(home);
        self.shards = shards;
    }

    /// A write-back round (every cached item with `all`).
    async fn write_back(&self, all: bool) {
        write_back(
            self.home(),
            &self.storage,
            &self.journal,
            &self.metrics,
            all,
        )
        .await;
    }

    /// Starts a write-back round and returns once its first engine write
    /// is held at the gate (or the round had nothing to write).
    async fn slow_write_back(&mut self, all: bool) {
        self.settle_write_back().await;
        self.gate.close();
        let (home, storage, journal, metrics) = (
            self.home().clone(),
            Arc::clone(&self.storage),
            Arc::clone(&self.journal),
            Arc::clone(&self.metrics),
        );
        let round =
            tokio::spawn(async move { write_back(&home, &storage, &journal, &metrics, all).await });
        let gate = Arc::clone(&self.gate);
        let round_done = || round.is_finished();
        // (Polled: the round either reaches the gate or ends.)
        loop {
            let g = Arc::clone(&gate);
            let held =
                tokio::task::spawn_blocking(move || g.wait_for_writer(Duration::from_millis(20)))
                    .await
                    .unwrap();
            if held || round_done() {
                break;
            }
        }
        self.slow = Some(round);
    }

    /// Lets a held write-back round finish.
    async fn settle_write_back(&mut self) {
        self.gate.open();
        if let Some(r) = self.slow.take() {
            r.await.unwrap();
        }
    }

    async fn restart(&mut self) {
        self.settle_write_back().await;
        self.home = None;
        for s in self.shards.drain(..) {
            s.await.unwrap();
        }
        self.flusher_stop.cancel();
        self.flusher.take().unwrap().await.unwrap();
        // Every handle on the engine must go before it can be opened again.
        let dir = self.dir.path().to_owned();
        self.journal = Arc::new(Journal::start_fresh(&dir.join("scratch"), MODEL_SEGMENT).unwrap());
        let old = std::mem::replace(&mut self.storage, Arc::new(NoStorage));
        drop(old);
        self.storage = open_storage(&dir, self.fjall, &self.gate);
        self.journal =
            Arc::new(crate::recover(&*self.storage, &dir.join("journal"), MODEL_SEGMENT).unwrap());
        self.start();
    }

    fn home(&self) -> &Home {
        self.home.as_ref().unwrap()
    }

    async fn submit(&self, op: Op) {
        self.home().submit(op).await.unwrap();
    }

    async fn recv(&mut self) -> link_down::Kind {
        tokio::time::timeout(Duration::from_secs(30), self.rx.recv())
            .await
            .expect("the home answers")
            .unwrap()
            .kind
            .unwrap()
    }

    async fn append(&mut self, to: &str, from: &str, id: Bytes) -> AppendResult {
        self.next += 1;
        let req = self.next;
        let envelope = Envelope {
            from: from.into(),
            from_device: 1,
            id,
            server_ts_ms: 0,
            content: Some(Content::Body(Bytes::from(format!("{from}->{to}")))),
            ..Default::default()
        };
        self.submit(Op::Append {
            link: self.link.clone(),
            req,
            to: to.into(),
            envelope,
            sender_generation: None,
        })
        .await;
        match self.recv().await {
            link_down::Kind::AppendResult(r) => {
                assert_eq!(r.req, req);
                r
            }
            other => panic!("expected AppendResult, got {other:?}"),
        }
    }

    /// Frames up to the barrier's presence answer for `user`.
    async fn barrier(&mut self, user: &str) -> Vec<link_down::Kind> {
        self.submit(Op::Watch {
            link: self.link.clone(),
            session: BARRIER,
            target: user.into(),
            watch: true,
            watcher: "watcher".into(),
        })
        .await;
        let mut got = Vec::new();
        loop {
            match self.recv().await {
                link_down::Kind::Presence(p) if p.session == BARRIER => break,
                k => got.push(k),
            }
        }
        self.submit(Op::Watch {
            link: self.link.clone(),
            session: BARRIER,
            target: user.into(),
            watch: false,
            watcher: "watcher".into(),
        })
        .await;
        got
    }

    /// A session connects, takes its window, acks the first `ack`, leaves.
    async fn deliver(&mut self, user: &str, ack: usize) -> Vec<(u64, Item)> {
        self.next += 1;
        let session = self.next;
        self.submit(Op::Attach {
            link: self.link.clone(),
            session,
            user: user.into(),
            device: 1,
            generation: 1,
        })
        .await;
        let mut frames = self.barrier(user).await.into_iter();
        // The attach answer comes first, then the pushes.
        assert!(
            matches!(frames.next(), Some(link_down::Kind::Attached(a)) if a.session == session)
        );
        let pushed: Vec<(u64, Item)> = frames
            .map(|k| match k {
                link_down::Kind::Push(p) => {
                    assert_eq!(p.session, session);
                    let e = p.envelope.unwrap();
                    (
                        p.seq,
                        Item {
                            from: e.from,
                            id: e.id,
                            ts: e.server_ts_ms,
                        },
                    )
                }
                other => panic!("expected pushes, got {other:?}"),
            })
            .collect();
        let acked: Vec<u64> = pushed.iter().take(ack).map(|(s, _)| *s).collect();
        if !acked.is_empty() {
            self.submit(Op::Ack {
                link: self.link.id,
                session,
                user: user.into(),
                seqs: acked,
            })
            .await;
        }
        self.submit(Op::Detach {
            link: self.link.id,
            session,
            user: user.into(),
        })
        .await;
        // Acks may push more before the detach lands; drop those.
        for k in self.barrier(user).await {
            assert!(matches!(k, link_down::Kind::Push(_)), "{k:?}");
        }
        pushed
    }
}

/// One write-back round at the harness's sync delay.
async fn write_back(
    home: &Home,
    storage: &Arc<dyn Storage>,
    journal: &Arc<Journal>,
    metrics: &Metrics,
    all: bool,
) {
    super::write_back_once(home, storage, journal, SYNC_DELAY, all, metrics).await;
}

/// The runtime the tests here run on: two workers, like the store's.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Stands in for the engine while the real one is closed and reopened.
struct NoStorage;

impl Storage for NoStorage {
    fn dedupe(
        &self,
        _: &crate::storage::DedupeKey<'_>,
    ) -> Result<Option<crate::storage::Original>, crate::storage::StorageError> {
        unreachable!()
    }
    fn last_seq(&self, _: &str) -> Result<u64, crate::storage::StorageError> {
        unreachable!()
    }
    fn append_batch(
        &self,
        _: &str,
        _: &[(u64, &Envelope, crate::storage::DedupeKey<'_>)],
    ) -> Result<(), crate::storage::StorageError> {
        unreachable!()
    }
    fn read(
        &self,
        _: &str,
        _: u64,
        _: usize,
    ) -> Result<Vec<crate::storage::Item>, crate::storage::StorageError> {
        unreachable!()
    }
    fn delete(&self, _: &str, _: &[u64]) -> Result<u64, crate::storage::StorageError> {
        unreachable!()
    }
    fn mailbox_size(
        &self,
        _: &str,
    ) -> Result<crate::storage::MailboxSize, crate::storage::StorageError> {
        unreachable!()
    }
    fn has_dedupe(&self, _: &str) -> Result<bool, crate::storage::StorageError> {
        unreachable!()
    }
    fn expire_dedupe(
        &self,
        _: u64,
        _: Option<&[u8]>,
        _: usize,
    ) -> Result<crate::storage::DedupePage, crate::storage::StorageError> {
        unreachable!()
    }
    fn expired(
        &self,
        _: u64,
        _: Option<&crate::storage::Expired>,
        _: usize,
    ) -> Result<Vec<crate::storage::Expired>, crate::storage::StorageError> {
        unreachable!()
    }
    fn last_seen(&self, _: &str) -> Result<Option<u64>, crate::storage::StorageError> {
        unreachable!()
    }
    fn set_last_seen(&self, _: &str, _: u64) -> Result<(), crate::storage::StorageError> {
        unreachable!()
    }
    fn visit_sizes(
        &self,
        _: &mut dyn FnMut(&str, crate::storage::MailboxSize),
    ) -> Result<(), crate::storage::StorageError> {
        unreachable!()
    }
    fn set_last_seq(&self, _: &str, _: u64) -> Result<(), crate::storage::StorageError> {
        unreachable!()
    }
    fn kv_get(&self, _: u8, _: &str) -> Result<(u64, Vec<u8>), crate::storage::StorageError> {
        unreachable!()
    }
    fn kv_put(&self, _: u8, _: &str, _: u64, _: &[u8]) -> Result<(), crate::storage::StorageError> {
        unreachable!()
    }
    fn min_generation(&self, _: &str, _: u32) -> Result<u32, crate::storage::StorageError> {
        unreachable!()
    }
    fn set_min_generation(
        &self,
        _: &str,
        _: u32,
        _: u32,
    ) -> Result<(), crate::storage::StorageError> {
        unreachable!()
    }
    fn flush(&self) -> Result<(), crate::storage::StorageError> {
        unreachable!()
    }
    fn page_after(
        &self,
        _: Option<&[u8]>,
        _: usize,
    ) -> Result<crate::storage::Pairs, crate::storage::StorageError> {
        unreachable!()
    }
    fn put_raw(&self, _: crate::storage::Pairs) -> Result<(), crate::storage::StorageError> {
        unreachable!()
    }
    fn recount(&self) -> Result<u64, crate::storage::StorageError> {
        unreachable!()
    }
    fn clear(&self) -> Result<(), crate::storage::StorageError> {
        unreachable!()
    }
}

impl Storage for Gated {
    fn dedupe(
        &self,
        k: &crate::storage::DedupeKey<'_>,
    ) -> Result<Option<crate::storage::Original>, crate::storage::StorageError> {
        self.inner.dedupe(k)
    }
    fn last_seq(&self, u: &str) -> Result<u64, crate::storage::StorageError> {
        self.inner.last_seq(u)
    }
    fn append_batch(
        &self,
        u: &str,
        items: &[(u64, &Envelope, crate::storage::DedupeKey<'_>)],
    ) -> Result<(), crate::storage::StorageError> {
        self.gate.pass();
        self.inner.append_batch(u, items)
    }
    fn read(
        &self,
        u: &str,
        from: u64,
        n: usize,
    ) -> Result<Vec<crate::storage::Item>, crate::storage::StorageError> {
        self.inner.read(u, from, n)
    }
    fn delete(&self, u: &str, seqs: &[u64]) -> Result<u64, crate::storage::StorageError> {
        self.inner.delete(u, seqs)
    }
    fn mailbox_size(
        &self,
        u: &str,
    ) -> Result<crate::storage::MailboxSize, crate::storage::StorageError> {
        self.inner.mailbox_size(u)
    }
    fn has_dedupe(&self, u: &str) -> Result<bool, crate::storage::StorageError> {
        self.inner.has_dedupe(u)
    }
    fn expire_dedupe(
        &self,
        before: u64,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<crate::storage::DedupePage, crate::storage::StorageError> {
        self.inner.expire_dedupe(before, after, limit)
    }
    fn expired(
        &self,
        before: u64,
        after: Option<&crate::storage::Expired>,
        limit: usize,
    ) -> Result<Vec<crate::storage::Expired>, crate::storage::StorageError> {
        self.inner.expired(before, after, limit)
    }
    fn last_seen(&self, u: &str) -> Result<Option<u64>, crate::storage::StorageError> {
        self.inner.last_seen(u)
    }
    fn set_last_seen(&self, u: &str, ms: u64) -> Result<(), crate::storage::StorageError> {
        self.inner.set_last_seen(u, ms)
    }
    fn visit_sizes(
        &self,
        f: &mut dyn FnMut(&str, crate::storage::MailboxSize),
    ) -> Result<(), crate::storage::StorageError> {
        self.inner.visit_sizes(f)
    }
    fn set_last_seq(&self, u: &str, seq: u64) -> Result<(), crate::storage::StorageError> {
        self.gate.pass();
        if self
            .gate
            .fail_counters
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            return Err(crate::storage::StorageError::Engine {
                op: "set_last_seq",
                source: "injected".into(),
            });
        }
        self.inner.set_last_seq(u, seq)
    }
    fn kv_get(&self, sp: u8, k: &str) -> Result<(u64, Vec<u8>), crate::storage::StorageError> {
        self.inner.kv_get(sp, k)
    }
    fn kv_put(
        &self,
        sp: u8,
        k: &str,
        version: u64,
        v: &[u8],
    ) -> Result<(), crate::storage::StorageError> {
        self.inner.kv_put(sp, k, version, v)
    }
    fn min_generation(&self, u: &str, d: u32) -> Result<u32, crate::storage::StorageError> {
        self.inner.min_generation(u, d)
    }
    fn set_min_generation(
        &self,
        u: &str,
        d: u32,
        g: u32,
    ) -> Result<(), crate::storage::StorageError> {
        self.inner.set_min_generation(u, d, g)
    }
    fn flush(&self) -> Result<(), crate::storage::StorageError> {
        self.inner.flush()
    }
    fn page_after(
        &self,
        a: Option<&[u8]>,
        n: usize,
    ) -> Result<crate::storage::Pairs, crate::storage::StorageError> {
        self.inner.page_after(a, n)
    }
    fn put_raw(&self, p: crate::storage::Pairs) -> Result<(), crate::storage::StorageError> {
        self.inner.put_raw(p)
    }
    fn recount(&self) -> Result<u64, crate::storage::StorageError> {
        self.inner.recount()
    }
    fn clear(&self) -> Result<(), crate::storage::StorageError> {
        self.inner.clear()
    }
}

async fn run(steps: Vec<Step>, fjall: bool) {
    let mut h = Harness::new(fjall);
    let mut m = Model::default();
    let mut counter = 0u64;
    for step in steps {
        match step {
            Step::Append { to, from, resend } => {
                let (to, from) = (USERS[to], USERS[from]);
                let last = m.last_sent.get(&(from.into(), to.into())).cloned();
                let waiting = last.as_ref().and_then(|id| {
                    m.boxes
                        .get(to)
                        .and_then(|b| b.iter().find(|(_, i)| i.from == from && i.id == *id))
                        .map(|(s, _)| *s)
                });
                let (id, original) = match (resend, waiting) {
                    (true, Some(seq)) => (last.unwrap(), Some(seq)),
                    _ => {
                        counter += 1;
                        (Bytes::from(counter.to_be_bytes().repeat(2)), None)
                    }
                };
                let r = h.append(to, from, id.clone()).await;
                assert_eq!(r.code, 0, "{r:?}");
                match original {
                    Some(seq) => {
                        assert!(r.duplicate, "a resend of a waiting message is a duplicate");
                        assert_eq!(r.seq, seq);
                    }
                    None => {
                        assert!(!r.duplicate);
                        let last = m.last_seq.entry(to.into()).or_default();
                        *last += 1;
                        assert_eq!(r.seq, *last, "sequence numbers rise by one");
                        m.boxes.entry(to.into()).or_default().insert(
                            r.seq,
                            Item {
                                from: from.into(),
                                id: id.clone(),
                                ts: r.server_ts_ms,
                            },
                        );
                        m.last_sent.insert((from.into(), to.into()), id);
                    }
                }
            }
            Step::Deliver { user, ack } => {
                let user = USERS[user];
                let pushed = h.deliver(user, ack).await;
                let want: Vec<(u64, Item)> = m
                    .boxes
                    .get(user)
                    .map(|b| {
                        b.iter()
                            .take(common::link::PUSH_WINDOW)
                            .map(|(s, i)| (*s, i.clone()))
                            .collect()
                    })
                    .unwrap_or_default();
                assert_eq!(pushed, want, "the window of {user}");
                if let Some(b) = m.boxes.get_mut(user) {
                    for (s, _) in pushed.iter().take(ack) {
                        b.remove(s);
                    }
                }
            }
            Step::Expire { pick } => {
                let mut all: Vec<u64> = m
                    .boxes
                    .values()
                    .flat_map(|b| b.values().map(|i| i.ts))
                    .collect();
                if all.is_empty() {
                    continue;
                }
                all.sort_unstable();
                let cutoff = all[pick % all.len()];
                h.settle_write_back().await;
                // Cached items expire by their age in memory; put everything
                // in the engine first so the cutoff applies to all.
                h.write_back(true).await;
                super::expire_before(&h.storage, h.home(), cutoff, &CancellationToken::new())
                    .await
                    .unwrap();
                // So do dedupe entries, as in the sweeper: a resend of a
                // waiting item (never older than the cutoff) must still be
                // recognised.
                super::expire_dedupe_before(&h.storage, cutoff, &CancellationToken::new())
                    .await
                    .unwrap();
                for u in USERS {
                    h.barrier(u).await;
                }
                for b in m.boxes.values_mut() {
                    b.retain(|_, i| i.ts >= cutoff);
                }
            }
            Step::SlowWriteBack { all } => h.slow_write_back(all).await,
            Step::WriteBack { all } => {
                h.settle_write_back().await;
                h.write_back(all).await;
            }
            Step::Forget => {
                h.settle_write_back().await;
                for u in USERS {
                    h.submit(Op::ForgetRecent { user: u.into() }).await;
                    h.barrier(u).await;
                }
            }
            Step::Restart => h.restart().await,
        }
    }
    h.settle_write_back().await;
    // Everything left, in order, once.
    for user in USERS {
        let mut got = Vec::new();
        loop {
            let batch = h.deliver(user, usize::MAX).await;
            if batch.is_empty() {
                break;
            }
            got.extend(batch);
        }
        let want: Vec<(u64, Item)> = m
            .boxes
            .get(user)
            .map(|b| b.iter().map(|(s, i)| (*s, i.clone())).collect())
            .unwrap_or_default();
        assert_eq!(got, want, "what is left for {user}");
    }
    h.restart().await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn mailboxes_match_the_model(steps in prop::collection::vec(step(), 1..60), fjall in any::<bool>()) {
        runtime().block_on(run(steps, fjall));
    }
}

/// An item that went straight to the engine (its mailbox was large) while
/// its user stayed in memory: once the in-memory window forgot its key, a
/// resend is still a duplicate, found in the engine.
#[test]
fn a_resend_of_an_item_in_the_engine_is_a_duplicate() {
    for fjall in [false, true] {
        runtime().block_on(async {
            let mut h = Harness::new(fjall);
            let id = |n: u8| Bytes::from(vec![n; 16]);
            // The harness's bypass is 3 cached items: the 4th goes straight
            // to the engine, the first three stay in memory.
            for n in 1..=4 {
                let r = h.append("bob", "alice", id(n)).await;
                assert_eq!((r.code, r.seq, r.duplicate), (0, u64::from(n), false));
            }
            h.submit(Op::ForgetRecent { user: "bob".into() }).await;
            for n in [4, 1] {
                let r = h.append("bob", "alice", id(n)).await;
                assert_eq!(
                    (r.code, r.seq, r.duplicate),
                    (0, u64::from(n), true),
                    "resend of {n}"
                );
            }
            let r = h.append("bob", "alice", id(5)).await;
            assert_eq!((r.seq, r.duplicate), (5, false));
        });
    }
}

/// A write-back round whose sequence counter write failed must not let the
/// journal drop older segments: they hold the only durable copy of that
/// counter, and without it a restart would hand out a used number again.
#[test]
fn a_round_that_could_not_record_a_counter_keeps_the_journal() {
    runtime().block_on(async {
        let mut h = Harness::new(false);
        let r = h.append("ann", "bo", Bytes::from(vec![1; 16])).await;
        assert_eq!((r.code, r.seq), (0, 1));
        // The append's segment is sealed; only a covering round may drop it.
        h.journal.seal().unwrap();
        assert_eq!(h.journal.stats().0, 2);
        h.gate
            .fail_counters
            .store(true, std::sync::atomic::Ordering::SeqCst);
        h.write_back(true).await;
        assert_eq!(
            h.journal.stats().0,
            2,
            "the counter is not in the engine: the segment stays"
        );
        h.gate
            .fail_counters
            .store(false, std::sync::atomic::Ordering::SeqCst);
        h.write_back(true).await;
        assert_eq!(h.journal.stats().0, 1, "now it may go");
        h.restart().await;
        let r = h.append("ann", "bo", Bytes::from(vec![2; 16])).await;
        assert_eq!((r.code, r.seq), (0, 2), "numbers go on after a restart");
    });
}

/// Threads that queue operations on one shard while another thread applies
/// them (the shard is busy, so they leave their operation to it): every
/// operation is applied, none is left in the queue, and each sender's
/// appends keep their order.
#[test]
fn operations_queued_on_a_busy_shard_are_all_applied_in_order() {
    const THREADS: u64 = 8;
    const EACH: u64 = 120; // 960 in all: under the harness's mailbox quota
    let rt = runtime();
    let _in_rt = rt.enter();
    let h = Harness::new(false);
    let home = h.home().clone();
    let (tx, mut rx) = mpsc::channel(1 << 16);
    let link = LinkTx::new(2, tx, CancellationToken::new());
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (home, link, rt) = (home.clone(), link.clone(), rt.handle().clone());
            s.spawn(move || {
                for i in 0..EACH {
                    let req = t * EACH + i + 1;
                    let envelope = Envelope {
                        from: format!("s{t}"),
                        from_device: 1,
                        id: Bytes::from(req.to_be_bytes().repeat(2)),
                        server_ts_ms: 0,
                        content: Some(Content::Body(Bytes::from_static(b"x"))),
                        ..Default::default()
                    };
                    let op = Op::Append {
                        link: link.clone(),
                        req,
                        to: "ann".into(),
                        envelope,
                        sender_generation: None,
                    };
                    rt.block_on(home.submit(op)).unwrap();
                }
            });
        }
    });
    rt.block_on(async {
        let mut seq_of = HashMap::new();
        for _ in 0..THREADS * EACH {
            let frame = tokio::time::timeout(Duration::from_secs(30), rx.recv())
                .await
                .expect("every queued append is applied and answered")
                .unwrap();
            let Some(link_down::Kind::AppendResult(r)) = frame.kind else {
                panic!("expected AppendResult, got {frame:?}");
            };
            assert_eq!(r.code, 0, "append {} refused", r.req);
            assert!(seq_of.insert(r.req, r.seq).is_none(), "answered twice");
        }
        let mut seqs: Vec<u64> = seq_of.values().copied().collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=THREADS * EACH).collect::<Vec<_>>());
        for t in 0..THREADS {
            let mine: Vec<u64> = (1..=EACH).map(|i| seq_of[&(t * EACH + i)]).collect();
            assert!(mine.is_sorted(), "sender s{t}'s appends out of order");
        }
    });
    drop(h);
}
