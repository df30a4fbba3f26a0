//! Property test of the shard as a state machine: random operations go
//! straight into [`Shard::handle`] with a made-up `now`, flushes happen when
//! the test says and end as it says, and the test plays the dispatcher
//! (reading every [`Effect`]) and the write-back task (holding slices back
//! and completing them). Nothing here does I/O: the engine is a `BTreeMap`
//! under the real mailbox layer, the journal an in-memory `Log`, the group
//! commit the real `Commit` flushed on this thread; no link, no cell, no
//! task, no runtime.
//!
//! Checked against a plain model after every operation: every append is
//! answered once, in order, with the sequence number and duplicate flag the
//! model predicts, and only by the flush after it; nothing is pushed before
//! its answer (a push never overtakes the flush); each session gets items in
//! sequence order, never twice, at most `PUSH_WINDOW` unacknowledged, and
//! everything it may have while its window has room; an ack frees the
//! slots at once (the shard's windows and the link's budget agree with the
//! model); an acknowledged message makes exactly one receipt the courier
//! takes, to its sender, and waits for it (never pushed again), or goes
//! back to the mailbox if the courier refuses it; stray acks change nothing;
//! key-value compare-and-set and revocations answer as the model says, and
//! revoked sessions are kicked. At the end everything still stored is
//! delivered to fresh sessions: every accepted message was delivered (or
//! expired), none twice.
//!
//! `home::model_tests` stays: it runs whole homes over the real engines
//! (sled and fjall) and the on-disk journal, with restarts that replay it,
//! which this test (no I/O by design) cannot cover.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::link::{KvSpace, PUSH_WINDOW, link_down};
use common::proto::{Code, Envelope, ReceiptKind, envelope::Content};
use proptest::prelude::*;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::stand_ins::{MemEngine, MemLog};
use super::{Effect, Now, Shard};
use crate::flusher::{Commit, FlushFn};
use crate::home::{CacheConfig, Limits, LinkTx, Op, Outcome, Slice, write_slice};
use crate::metrics::Metrics;
use crate::storage::{Mailboxes, Storage, StorageError};

const USERS: [&str; 3] = ["ann", "bo", "cy"];
const KEYS: [&str; 2] = ["+15550001", "+15550002"];
const SYNC_DELAY: Duration = Duration::from_secs(10);
/// The link appends, key-value requests and revocations come on.
const EDGE: u64 = 1;
/// The link every session is attached through.
const SESSIONS: u64 = 2;

#[derive(Debug, Clone)]
enum Step {
    /// `from` sends `to` `n` new messages, or (`resend`) its last one again.
    Append {
        from: usize,
        to: usize,
        n: usize,
        resend: bool,
    },
    /// A journal sync ends (well or not) and the shard settles.
    Flush {
        ok: bool,
    },
    Attach {
        user: usize,
        device: u32,
        generation: u32,
    },
    Detach {
        pick: usize,
    },
    /// The `pick`-th session acks its first `n` unacknowledged items (and,
    /// with `stray`, an item it was never given); with `refuse` the courier's
    /// queue refuses the receipts.
    Ack {
        pick: usize,
        n: usize,
        stray: bool,
        refuse: bool,
    },
    /// The courier stored the `pick`-th receipt it holds.
    ReceiptStored {
        pick: usize,
    },
    /// The first `n` items of `user`'s mailbox expire.
    Expire {
        user: usize,
        n: usize,
    },
    /// Write-back takes a slice (held until `WrittenBack`).
    WriteBack {
        all: bool,
    },
    /// The held slice's engine writes are done (or failed).
    WrittenBack {
        ok: bool,
    },
    /// A read, or a compare-and-set expecting the current version (or
    /// another one, with `stale`).
    Kv {
        key: usize,
        put: Option<u8>,
        stale: bool,
    },
    Revoke {
        user: usize,
        device: u32,
        generation: u32,
    },
    /// Every session's link goes.
    LinkGone,
    Advance {
        ms: u64,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        12 => (0..3usize, 0..3usize, any::<bool>()).prop_map(|(from, to, resend)| Step::Append { from, to, n: 1, resend }),
        1 => (0..3usize, 0..3usize).prop_map(|(from, to)| Step::Append { from, to, n: PUSH_WINDOW + 40, resend: false }),
        6 => prop::bool::weighted(0.85).prop_map(|ok| Step::Flush { ok }),
        4 => (0..3usize, 1..3u32, 0..3u32).prop_map(|(user, device, generation)| Step::Attach { user, device, generation }),
        2 => (0..8usize).prop_map(|pick| Step::Detach { pick }),
        8 => (0..8usize, 0..300usize, any::<bool>(), prop::bool::weighted(0.25)).prop_map(|(pick, n, stray, refuse)| Step::Ack { pick, n, stray, refuse }),
        4 => (0..8usize).prop_map(|pick| Step::ReceiptStored { pick }),
        1 => (0..3usize, 0..4usize).prop_map(|(user, n)| Step::Expire { user, n }),
        2 => any::<bool>().prop_map(|all| Step::WriteBack { all }),
        2 => prop::bool::weighted(0.85).prop_map(|ok| Step::WrittenBack { ok }),
        2 => (0..2usize, prop::option::of(any::<u8>()), any::<bool>()).prop_map(|(key, put, stale)| Step::Kv { key, put, stale }),
        1 => (0..3usize, 1..3u32, 0..3u32).prop_map(|(user, device, generation)| Step::Revoke { user, device, generation }),
        1 => Just(Step::LinkGone),
        2 => (1..3000u64).prop_map(|ms| Step::Advance { ms }),
    ]
}

/// A stored item as the model knows it.
#[derive(Debug, Clone)]
struct Item {
    from: usize,
    id: Bytes,
    ts: u64,
    /// Answered (by a flush, which may have failed): pushes may show it.
    answered: bool,
    /// Acknowledged; its receipt is with the courier.
    waiting: bool,
    /// Its receipt was refused once: sessions numbered below this may have
    /// passed it meanwhile and do not get it again (later ones do).
    refused_before: u64,
}

#[derive(Debug)]
struct Session {
    id: u64,
    user: usize,
    device: u32,
    generation: u32,
    last_pushed: u64,
    inflight: BTreeSet<u64>,
}

#[derive(Debug)]
enum Answer {
    Append {
        req: u64,
        to: usize,
        seq: u64,
        duplicate: bool,
        ts: u64,
    },
    Kv {
        req: u64,
        value: Bytes,
        version: u64,
        conflict: bool,
    },
    Revoke {
        req: u64,
        kicked: u32,
    },
}

#[derive(Default)]
struct Model {
    boxes: [BTreeMap<u64, Item>; 3],
    next_seq: [u64; 3],
    /// Every item ever stored, by (recipient, seq): (sender, id, time).
    ever: HashMap<(usize, u64), (usize, Bytes, u64)>,
    /// (recipient, sender, id) -> seq.
    originals: HashMap<(usize, usize, Bytes), u64>,
    last_id: HashMap<(usize, usize), Bytes>,
    /// Answers waiting for a flush, in the order they must come.
    answers: VecDeque<Answer>,
    sessions: Vec<Session>,
    /// Receipts the courier holds: (user, seq).
    courier: Vec<(usize, u64)>,
    /// Receipts the courier ever took.
    receipted: HashSet<(usize, u64)>,
    /// Acknowledged appends (code 0, not duplicates).
    accepted: Vec<(usize, u64)>,
    /// Delivered: acked by a session while stored.
    delivered: HashSet<(usize, u64)>,
    expired: HashSet<(usize, u64)>,
    kv: HashMap<usize, (u64, Bytes)>,
    min_generation: HashMap<(usize, u32), u32>,
    /// No write since the last flush: its outcome, which settles at once
    /// whatever rests on writes before it. `None` once a write took a
    /// ticket after it.
    clean: Option<bool>,
}

struct Harness {
    shard: Shard,
    storage: Arc<dyn Storage>,
    commit: Arc<Commit>,
    edge: LinkTx,
    sessions_link: LinkTx,
    /// (Kept so that the links' queues stay open; nothing is ever sent.)
    _queues: Vec<mpsc::Receiver<common::link::LinkDown>>,
    receipts: bool,
    base: Instant,
    clock_ms: u64,
    held: Option<Slice>,
    next_req: u64,
    next_session: u64,
    next_id: u64,
    /// How the dispatcher answers the receipts of the current step.
    refuse: bool,
    /// Receipts the current ack may make: (user, seq) -> (made, required).
    expect_receipts: HashMap<(usize, u64), (bool, bool)>,
    /// Sessions the current operation must kick, with the code.
    expect_kicks: HashMap<u64, Code>,
    /// Sessions whose attach the current operation must answer `Attached`
    /// (before any push to them).
    expect_attached: std::collections::HashSet<u64>,
    /// The flush outcome being settled.
    flush_ok: bool,
    m: Model,
}

fn user_of(name: &str) -> usize {
    USERS.iter().position(|u| *u == name).expect("a test user")
}

impl Harness {
    fn new(receipts: bool) -> Harness {
        let storage: Arc<dyn Storage> = Arc::new(Mailboxes::new(MemEngine::default()));
        let commit = Arc::new(Commit::new());
        let shard = Shard::new(
            Arc::clone(&storage),
            Arc::new(MemLog::default()),
            Arc::clone(&commit),
            Limits {
                max_items: 1 << 20,
                max_bytes: 1 << 40,
            },
            CacheConfig {
                sync_delay: SYNC_DELAY,
                // Small, so that appends also go straight to the engine and
                // write-back meets memory pressure.
                bypass_items: 8,
                budget_bytes: 4 << 10,
                expire_after: Duration::from_secs(86400),
                write_back_slice: 8,
            },
            Arc::new(Metrics::default()),
            receipts,
        );
        let (etx, erx) = mpsc::channel(1);
        let (stx, srx) = mpsc::channel(1);
        Harness {
            shard,
            storage,
            commit,
            edge: LinkTx::new(EDGE, etx, CancellationToken::new()),
            sessions_link: LinkTx::new(SESSIONS, stx, CancellationToken::new()),
            _queues: vec![erx, srx],
            receipts,
            base: Instant::now(),
            clock_ms: 0,
            held: None,
            next_req: 1,
            next_session: 1,
            next_id: 1,
            refuse: false,
            expect_receipts: HashMap::new(),
            expect_kicks: HashMap::new(),
            expect_attached: Default::default(),
            flush_ok: true,
            m: Model {
                clean: Some(true),
                ..Model::default()
            },
        }
    }

    fn now(&self) -> Now {
        Now {
            at: self.base + Duration::from_millis(self.clock_ms),
            unix_ms: 1_700_000_000_000 + self.clock_ms,
        }
    }

    /// Applies `op` as the cell does: then a settle (which answers at once
    /// what an earlier flush already covers), carrying out the effects of
    /// both. Answers that come now were covered by the last flush.
    fn handle(&mut self, op: Op) {
        self.flush_ok = self.m.clean.unwrap_or(true);
        self.shard.handle(op, self.now());
        self.effects();
        self.shard.settle(super::Now::read());
        self.effects();
    }

    fn effects(&mut self) {
        let effects: Vec<Effect> = self.shard.effects().collect();
        for e in effects {
            self.effect(e);
        }
    }

    fn effect(&mut self, e: Effect) {
        match e {
            Effect::Send { link, frame } => self.frame(link.id, frame),
            Effect::Push {
                link,
                session,
                seq,
                envelope,
            } => self.push(link.id, session, seq, &envelope),
            Effect::Receipt {
                to,
                envelope,
                user,
                seqs,
            } => self.receipt(&to, &envelope, &user, &seqs),
            Effect::Wake { .. } | Effect::Unwake { .. } | Effect::Unowed { .. } => {
                unreachable!("the model registers no push endpoints")
            }
            Effect::Gather { .. } => unreachable!("the model sends no group read receipts"),
        }
    }

    fn frame(&mut self, link: u64, frame: link_down::Kind) {
        match frame {
            link_down::Kind::Kick(k) => {
                assert_eq!(link, SESSIONS);
                let code = self
                    .expect_kicks
                    .remove(&k.session)
                    .unwrap_or_else(|| panic!("unexpected kick {k:?}"));
                assert_eq!(k.code, code as u32);
            }
            link_down::Kind::Attached(a) => {
                assert_eq!(link, SESSIONS);
                assert!(
                    self.expect_attached.remove(&a.session),
                    "unexpected attach answer {a:?}"
                );
            }
            link_down::Kind::AppendResult(r) => {
                assert_eq!(link, EDGE);
                let Some(Answer::Append {
                    req,
                    to,
                    seq,
                    duplicate,
                    ts,
                }) = self.m.answers.pop_front()
                else {
                    panic!("an append answered out of turn: {r:?}");
                };
                let code = if self.flush_ok {
                    0
                } else {
                    Code::Internal as u32
                };
                assert_eq!(
                    (r.req, r.code, r.seq, r.duplicate, r.server_ts_ms),
                    (req, code, seq, duplicate, ts),
                    "append answer"
                );
                if let Some(item) = self.m.boxes[to].get_mut(&seq) {
                    item.answered = true;
                }
                if code == 0 && !duplicate {
                    self.m.accepted.push((to, seq));
                }
            }
            link_down::Kind::KvResult(r) => {
                assert_eq!(link, EDGE);
                let Some(Answer::Kv {
                    req,
                    value,
                    version,
                    conflict,
                }) = self.m.answers.pop_front()
                else {
                    panic!("a key-value answer out of turn: {r:?}");
                };
                assert_eq!(r.req, req);
                if self.flush_ok {
                    assert_eq!(
                        (r.code, r.value, r.version, r.conflict),
                        (0, value, version, conflict),
                        "key-value answer"
                    );
                } else {
                    assert_eq!(r.code, Code::Internal as u32);
                }
            }
            link_down::Kind::RevokeResult(r) => {
                assert_eq!(link, EDGE);
                let Some(Answer::Revoke { req, kicked }) = self.m.answers.pop_front() else {
                    panic!("a revoke answer out of turn: {r:?}");
                };
                let code = if self.flush_ok {
                    0
                } else {
                    Code::Internal as u32
                };
                assert_eq!((r.req, r.code, r.kicked), (req, code, kicked));
            }
            other => panic!("unexpected frame {other:?}"),
        }
    }

    fn push(&mut self, link: u64, session: u64, seq: u64, envelope: &Envelope) {
        assert_eq!(link, SESSIONS);
        assert!(
            !self.expect_attached.contains(&session),
            "a push to session {session} before its attach answer"
        );
        let s = self
            .m
            .sessions
            .iter_mut()
            .find(|s| s.id == session)
            .unwrap_or_else(|| panic!("a push to a gone session {session}"));
        let item = self.m.boxes[s.user]
            .get(&seq)
            .unwrap_or_else(|| panic!("pushed {seq}, which is not stored"));
        assert!(item.answered, "pushed {seq} before its flush answered it");
        assert!(!item.waiting, "pushed {seq} while it waits for its receipt");
        assert!(
            seq > s.last_pushed,
            "pushed {seq} after {} to one session",
            s.last_pushed
        );
        assert_eq!(
            (&envelope.from, &envelope.id, envelope.server_ts_ms),
            (&USERS[item.from].to_owned(), &item.id, item.ts)
        );
        s.last_pushed = seq;
        s.inflight.insert(seq);
        assert!(s.inflight.len() <= PUSH_WINDOW, "window overrun");
    }

    /// One receipt for `user`'s items `seqs`, all from one sender, their
    /// ids in the order of `seqs`.
    fn receipt(&mut self, to: &str, envelope: &Envelope, user: &str, seqs: &[u64]) {
        assert!(self.receipts, "a receipt from a home that makes none");
        let u = user_of(user);
        let Some(Content::Receipt(r)) = &envelope.content else {
            panic!("a receipt that is not one");
        };
        assert_eq!(r.kind, ReceiptKind::Delivered as i32);
        assert_eq!(envelope.from, user);
        let mut ids = Vec::new();
        for &seq in seqs {
            let made = self
                .expect_receipts
                .get_mut(&(u, seq))
                .unwrap_or_else(|| panic!("an unexpected receipt for {user} {seq}"));
            assert!(!made.0, "two receipts for one ack");
            made.0 = true;
            let (from, id, _) = self.m.ever[&(u, seq)].clone();
            assert_eq!(to, USERS[from], "one receipt speaks for one sender");
            ids.push(id);
        }
        assert_eq!(r.ids, ids);
        if seqs.len() == 1 {
            assert_eq!(envelope.id, ids[0], "a receipt of one message has its id");
        }
        if self.refuse {
            // The dispatcher's part: the queue said no, and the shard hears
            // it before anything else.
            for seq in seqs {
                if let Some(item) = self.m.boxes[u].get_mut(seq) {
                    item.waiting = false;
                    item.refused_before = self.next_session;
                }
            }
            self.shard.handle(
                Op::ReceiptRefused {
                    user: user.to_owned(),
                    seqs: seqs.to_vec(),
                },
                self.now(),
            );
            assert!(self.shard.effects().next().is_none());
        } else {
            for &seq in seqs {
                assert!(
                    self.m.receipted.insert((u, seq)),
                    "the courier took a second receipt for {user} {seq}"
                );
                self.m.courier.push((u, seq));
            }
        }
    }

    fn message(&mut self, from: usize) -> Envelope {
        let mut id = [0u8; common::proto::limits::ID_LEN];
        id[..8].copy_from_slice(&self.next_id.to_be_bytes());
        self.next_id += 1;
        Envelope {
            from: USERS[from].to_owned(),
            from_device: 1,
            id: Bytes::copy_from_slice(&id),
            server_ts_ms: 0,
            content: Some(Content::Body(Bytes::from_static(b"hello there"))),
            ..Default::default()
        }
    }

    fn append(&mut self, from: usize, to: usize, resend: bool) {
        let envelope = match self.m.last_id.get(&(from, to)) {
            Some(id) if resend => Envelope {
                id: id.clone(),
                ..self.message(from)
            },
            _ => self.message(from),
        };
        let req = self.next_req;
        self.next_req += 1;
        let key = (to, from, envelope.id.clone());
        let answer = match self.m.originals.get(&key) {
            Some(&seq) => {
                let ts = self.m.ever[&(to, seq)].2;
                Answer::Append {
                    req,
                    to,
                    seq,
                    duplicate: true,
                    ts,
                }
            }
            None => {
                self.m.next_seq[to] += 1;
                let seq = self.m.next_seq[to];
                let ts = self.now().unix_ms;
                self.m.originals.insert(key, seq);
                self.m
                    .ever
                    .insert((to, seq), (from, envelope.id.clone(), ts));
                self.m.last_id.insert((from, to), envelope.id.clone());
                self.m.boxes[to].insert(
                    seq,
                    Item {
                        from,
                        id: envelope.id.clone(),
                        ts,
                        answered: false,
                        waiting: false,
                        refused_before: 0,
                    },
                );
                Answer::Append {
                    req,
                    to,
                    seq,
                    duplicate: false,
                    ts,
                }
            }
        };
        if let Answer::Append {
            duplicate: false, ..
        } = answer
        {
            self.m.clean = None;
        }
        self.m.answers.push_back(answer);
        self.handle(Op::Append {
            link: self.edge.clone(),
            req,
            to: USERS[to].to_owned(),
            envelope,
            sender_generation: None,
        });
    }

    /// Items gone (or acknowledged) no longer take window slots in any of
    /// `user`'s sessions.
    fn forget_inflight(&mut self, user: usize, seqs: &[u64]) {
        for s in self.m.sessions.iter_mut().filter(|s| s.user == user) {
            for q in seqs {
                s.inflight.remove(q);
            }
        }
    }

    fn req(&mut self) -> u64 {
        let r = self.next_req;
        self.next_req += 1;
        r
    }

    fn flush(&mut self, ok: bool) {
        let flush: FlushFn = if ok {
            Arc::new(|| Ok(()))
        } else {
            Arc::new(|| {
                Err(StorageError::Corrupt {
                    what: "injected".into(),
                })
            })
        };
        self.commit.flush_now(&flush);
        self.flush_ok = ok;
        // (A failed flush of nothing new leaves the earlier success in
        // place: what rests on it is still covered.)
        self.m.clean = Some(ok || self.m.clean == Some(true));
        self.shard.settle(super::Now::read());
        self.effects();
        assert!(
            self.m.answers.is_empty(),
            "a flush left answers waiting: {:?}",
            self.m.answers
        );
    }

    fn attach(&mut self, user: usize, device: u32, generation: u32) {
        let id = self.next_session;
        self.next_session += 1;
        let min = self
            .m
            .min_generation
            .get(&(user, device))
            .copied()
            .unwrap_or(0);
        if generation < min {
            self.expect_kicks.insert(id, Code::Revoked);
        } else {
            self.expect_attached.insert(id);
            self.m.sessions.push(Session {
                id,
                user,
                device,
                generation,
                last_pushed: 0,
                inflight: BTreeSet::new(),
            });
        }
        self.handle(Op::Attach {
            link: self.sessions_link.clone(),
            session: id,
            user: USERS[user].to_owned(),
            device,
            generation,
        });
    }

    fn ack(&mut self, pick: usize, n: usize, stray: bool, refuse: bool) {
        if self.m.sessions.is_empty() {
            return;
        }
        let i = pick % self.m.sessions.len();
        let (id, user) = (self.m.sessions[i].id, self.m.sessions[i].user);
        let valid: Vec<u64> = self.m.sessions[i]
            .inflight
            .iter()
            .take(n)
            .copied()
            .collect();
        let mut seqs = valid.clone();
        if stray
            && let Some((&q, _)) = self.m.boxes[user]
                .iter()
                .rev()
                .find(|(q, _)| !self.m.sessions[i].inflight.contains(q))
        {
            seqs.push(q);
        }
        // (An ack frees the item's slot in every session of the user.)
        self.forget_inflight(user, &valid);
        for q in &valid {
            self.m.delivered.insert((user, *q));
            match self.m.boxes[user].get_mut(q) {
                Some(item) if self.receipts => {
                    item.waiting = true;
                    self.expect_receipts.insert((user, *q), (false, true));
                }
                Some(_) => {
                    self.m.boxes[user].remove(q);
                }
                // Expired while pushed: a receipt may still come.
                None if self.receipts => {
                    self.expect_receipts.insert((user, *q), (false, false));
                }
                None => {}
            }
        }
        self.refuse = refuse;
        self.handle(Op::Ack {
            link: SESSIONS,
            session: id,
            user: USERS[user].to_owned(),
            seqs,
        });
        for ((u, q), (made, required)) in self.expect_receipts.drain() {
            assert!(made || !required, "no receipt for acked {u} {q}");
        }
    }

    fn revoke(&mut self, user: usize, device: u32, generation: u32) {
        let before = self.m.sessions.len();
        let kicks = &mut self.expect_kicks;
        self.m.sessions.retain(|s| {
            let gone = s.user == user && s.device == device && s.generation < generation;
            if gone {
                kicks.insert(s.id, Code::Revoked);
            }
            !gone
        });
        let kicked = (before - self.m.sessions.len()) as u32;
        let min = self.m.min_generation.entry((user, device)).or_default();
        *min = (*min).max(generation);
        let req = self.req();
        self.m.clean = None;
        self.m.answers.push_back(Answer::Revoke { req, kicked });
        self.handle(Op::Revoke {
            link: self.edge.clone(),
            req,
            user: USERS[user].to_owned(),
            device,
            generation,
        });
    }

    fn kv(&mut self, key: usize, put: Option<u8>, stale: bool) {
        let req = self.req();
        let (version, value) = self.m.kv.get(&key).cloned().unwrap_or_default();
        let expected = if stale { version + 1 } else { version };
        let answer = match put {
            None => Answer::Kv {
                req,
                value: value.clone(),
                version,
                conflict: false,
            },
            Some(_) if stale => Answer::Kv {
                req,
                value: value.clone(),
                version,
                conflict: true,
            },
            Some(b) => {
                let new = Bytes::from(vec![b]);
                self.m.kv.insert(key, (version + 1, new.clone()));
                self.m.clean = None;
                Answer::Kv {
                    req,
                    value: new,
                    version: version + 1,
                    conflict: false,
                }
            }
        };
        self.m.answers.push_back(answer);
        self.handle(Op::Kv {
            link: self.edge.clone(),
            req,
            space: KvSpace::Phone,
            key: KEYS[key].to_owned(),
            put: put.map(|b| (Bytes::from(vec![b]), expected)),
        });
    }

    fn write_back(&mut self, all: bool) {
        if self.held.is_some() {
            return;
        }
        let now = self.now();
        let due = now.at.checked_sub(SYNC_DELAY).unwrap_or(self.base);
        let (reply, mut rx) = oneshot::channel();
        self.handle(Op::WriteBack {
            due,
            all,
            max: 8,
            reply,
        });
        let slice = rx.try_recv().expect("answered at once");
        if !slice.batch.is_empty() {
            self.held = Some(slice);
        }
    }

    fn written_back(&mut self, ok: bool) {
        let Some(slice) = self.held.take() else {
            return;
        };
        let outcomes = if ok {
            write_slice(&*self.storage, &slice.batch)
        } else {
            slice
                .batch
                .iter()
                .map(|b| Outcome {
                    user: b.user.clone(),
                    items: false,
                    last_seq: false,
                })
                .collect()
        };
        let (reply, _rx) = oneshot::channel();
        self.handle(Op::WrittenBack { outcomes, reply });
    }

    fn run(&mut self, step: Step) {
        match step {
            Step::Append {
                from,
                to,
                n,
                resend,
            } => {
                for _ in 0..n {
                    self.append(from, to, resend);
                }
            }
            Step::Flush { ok } => self.flush(ok),
            Step::Attach {
                user,
                device,
                generation,
            } => self.attach(user, device, generation),
            Step::Detach { pick } => {
                if !self.m.sessions.is_empty() {
                    let s = self.m.sessions.remove(pick % self.m.sessions.len());
                    self.handle(Op::Detach {
                        link: SESSIONS,
                        session: s.id,
                        user: USERS[s.user].to_owned(),
                    });
                }
            }
            Step::Ack {
                pick,
                n,
                stray,
                refuse,
            } => self.ack(pick, n, stray, refuse),
            Step::ReceiptStored { pick } => {
                if !self.m.courier.is_empty() {
                    let (user, seq) = self.m.courier.remove(pick % self.m.courier.len());
                    self.m.boxes[user].remove(&seq);
                    self.forget_inflight(user, &[seq]);
                    self.handle(Op::ReceiptStored {
                        user: USERS[user].to_owned(),
                        seq,
                    });
                }
            }
            Step::Expire { user, n } => {
                let seqs: Vec<u64> = self.m.boxes[user].keys().take(n).copied().collect();
                for q in &seqs {
                    self.m.boxes[user].remove(q);
                    self.m.expired.insert((user, *q));
                }
                self.forget_inflight(user, &seqs);
                self.handle(Op::Expire {
                    user: USERS[user].to_owned(),
                    seqs,
                });
            }
            Step::WriteBack { all } => self.write_back(all),
            Step::WrittenBack { ok } => self.written_back(ok),
            Step::Kv { key, put, stale } => self.kv(key, put, stale),
            Step::Revoke {
                user,
                device,
                generation,
            } => self.revoke(user, device, generation),
            Step::LinkGone => {
                self.m.sessions.clear();
                self.handle(Op::LinkGone { link: SESSIONS });
            }
            Step::Advance { ms } => self.clock_ms += ms,
        }
        self.check();
    }

    /// The shard's state agrees with the model, and every session has
    /// everything it may have.
    fn check(&self) {
        assert!(
            self.expect_kicks.is_empty(),
            "kicks missing: {:?}",
            self.expect_kicks
        );
        assert!(
            self.expect_attached.is_empty(),
            "attach answers missing: {:?}",
            self.expect_attached
        );
        if self.m.clean.is_some() {
            assert!(
                self.m.answers.is_empty(),
                "answers held back: {:?}",
                self.m.answers
            );
        }
        let mut inflight = 0;
        for s in &self.m.sessions {
            let u = self
                .shard
                .users
                .get(USERS[s.user])
                .expect("a user with a session is loaded");
            let theirs = u
                .sessions
                .iter()
                .find(|t| t.id == s.id)
                .unwrap_or_else(|| panic!("session {} is gone from the shard", s.id));
            assert_eq!(theirs.inflight, s.inflight, "session {}'s window", s.id);
            inflight += s.inflight.len();
            if s.inflight.len() < PUSH_WINDOW {
                let missed: Vec<u64> = self.m.boxes[s.user]
                    .range(s.last_pushed + 1..)
                    .filter(|(_, i)| i.answered && !i.waiting && s.id >= i.refused_before)
                    .map(|(q, _)| *q)
                    .collect();
                assert!(
                    missed.is_empty(),
                    "session {} with room was not pushed {missed:?}",
                    s.id
                );
            }
        }
        let shard_sessions: usize = self.shard.users.values().map(|u| u.sessions.len()).sum();
        assert_eq!(shard_sessions, self.m.sessions.len(), "sessions");
        assert_eq!(
            self.sessions_link.pushes(),
            inflight,
            "the link's push budget"
        );
        for (i, name) in USERS.iter().enumerate() {
            let waiting: BTreeSet<u64> = self
                .m
                .courier
                .iter()
                .filter(|(u, _)| *u == i)
                .map(|(_, q)| *q)
                .collect();
            let acked = self
                .shard
                .users
                .get(*name)
                .map(|u| u.acked.clone())
                .unwrap_or_default();
            assert_eq!(acked, waiting, "{name}'s items waiting for receipts");
        }
    }

    /// Everything settles and every stored item is delivered to fresh
    /// sessions; then every accepted message was delivered (or expired),
    /// and, with receipts, its receipt taken exactly once.
    fn drain(&mut self) {
        self.written_back(true);
        self.flush(true);
        self.m.sessions.clear();
        self.handle(Op::LinkGone { link: SESSIONS });
        for pick in (0..self.m.courier.len()).rev() {
            self.run(Step::ReceiptStored { pick });
        }
        for user in 0..USERS.len() {
            self.attach(user, 7, 0);
        }
        for _ in 0..100 {
            if self.m.sessions.iter().all(|s| s.inflight.is_empty()) {
                break;
            }
            for pick in 0..self.m.sessions.len() {
                self.run(Step::Ack {
                    pick,
                    n: PUSH_WINDOW,
                    stray: false,
                    refuse: false,
                });
            }
            for pick in (0..self.m.courier.len()).rev() {
                self.run(Step::ReceiptStored { pick });
            }
        }
        for (user, b) in self.m.boxes.iter().enumerate() {
            assert!(b.is_empty(), "{} still holds {:?}", USERS[user], b.keys());
        }
        for key in &self.m.accepted {
            assert!(
                self.m.delivered.contains(key) || self.m.expired.contains(key),
                "accepted {key:?} never delivered"
            );
            if self.receipts && !self.m.expired.contains(key) {
                assert!(self.m.receipted.contains(key), "no receipt for {key:?}");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn the_shard_agrees_with_the_model(
        steps in prop::collection::vec(step(), 1..120),
        receipts in any::<bool>(),
    ) {
        let mut h = Harness::new(receipts);
        for step in steps {
            h.run(step);
        }
        h.drain();
    }
}
