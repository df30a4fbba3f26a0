//! One bench worker process: its share of the pairs (pair `p` belongs to
//! worker `p % W`; sender `2p`, receiver `2p+1`, so every message starts and
//! ends in one process), the scenario's phases, and at the end of each phase
//! a report line on stdout, after which it waits for the coordinator's `go`
//! (or `stop`) on stdin. Progress lines go out while a phase runs.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;

use super::session::{self, Cmd, Counters, Dialer, Fault, Session, Shared};
use super::stats::{AtomicHist, Hist};
use crate::cli::{BenchArgs, BenchTransport, Scenario};
use crate::dev::DevDir;

/// The environment variable that arms the test-only fault: when it is set
/// (to anything), the sender of pair 0 skips its message 1, sends message 2
/// twice and message 4 before 3.
pub(crate) const FAULT_ENV: &str = "WACTL_BENCH_FAULT";
/// Commands queued per session at most (the open loop counts what does not
/// fit as `behind`: the bench, not the server, was the limit).
const QUEUE: usize = 1024;
/// How often a running phase reports progress.
const PROGRESS: Duration = Duration::from_millis(250);
/// How often a phase checks whether it is over.
const POLL: Duration = Duration::from_millis(10);

/// Which worker this is: `index` of `of`, in run `run`.
pub(crate) struct WorkerId {
    pub(crate) index: usize,
    pub(crate) of: usize,
    pub(crate) run: String,
}

impl WorkerId {
    pub(crate) fn parse(s: &str) -> anyhow::Result<Self> {
        let mut it = s.splitn(3, '/');
        let (Some(i), Some(of), Some(run)) = (it.next(), it.next(), it.next()) else {
            bail!("--worker-of is INDEX/COUNT/RUN");
        };
        Ok(Self {
            index: i.parse()?,
            of: of.parse()?,
            run: run.to_string(),
        })
    }
}

/// The user id of session `k` of run `run`.
pub(crate) fn user(run: &str, k: usize) -> String {
    format!("bench-{run}-{k}")
}

/// What a worker says at the end of a phase: its counters so far, and the
/// latencies recorded during the phase.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Report {
    pub(crate) sessions: u64,
    pub(crate) logins: u64,
    pub(crate) connected: u64,
    pub(crate) failed: u64,
    pub(crate) refused: u64,
    pub(crate) refused_retry_after: u64,
    /// Dials that offered a session ticket.
    pub(crate) resumed: u64,
    pub(crate) disconnects: u64,
    /// Messages handed to senders (numbered, so each is expected once).
    pub(crate) expected: u64,
    pub(crate) sent: u64,
    /// Handed to a sender that had no connection at the time: not sent.
    pub(crate) unsent: u64,
    pub(crate) accepted: u64,
    pub(crate) rejected: u64,
    pub(crate) received: u64,
    pub(crate) duplicated: u64,
    pub(crate) redelivered: u64,
    pub(crate) reordered: u64,
    pub(crate) receipts: u64,
    /// Open loop: sends that found their session's queue full.
    pub(crate) behind: u64,
    /// Whether the phase reached its goal before its time ran out.
    pub(crate) complete: bool,
    pub(crate) latency: Hist,
    pub(crate) login_latency: Hist,
}

impl Report {
    pub(crate) fn add(&mut self, o: &Report) {
        self.sessions += o.sessions;
        self.logins += o.logins;
        self.connected += o.connected;
        self.failed += o.failed;
        self.refused += o.refused;
        self.refused_retry_after += o.refused_retry_after;
        self.resumed += o.resumed;
        self.disconnects += o.disconnects;
        self.expected += o.expected;
        self.sent += o.sent;
        self.unsent += o.unsent;
        self.accepted += o.accepted;
        self.rejected += o.rejected;
        self.received += o.received;
        self.duplicated += o.duplicated;
        self.redelivered += o.redelivered;
        self.reordered += o.reordered;
        self.receipts += o.receipts;
        self.behind += o.behind;
        self.complete &= o.complete;
        self.latency.merge(&o.latency);
        self.login_latency.merge(&o.login_latency);
    }

    pub(crate) fn lost(&self) -> u64 {
        self.expected
            .saturating_sub(self.unsent)
            .saturating_sub(self.received)
    }
}

/// A line from a worker.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Line {
    Progress { done: u64, goal: u64 },
    At { phase: String, report: Box<Report> },
}

struct Pair {
    sender: Handle,
    receiver: Option<Handle>,
    next: u64,
}

struct Handle {
    tx: mpsc::Sender<Cmd>,
    task: JoinHandle<()>,
}

struct Worker {
    args: BenchArgs,
    sh: Arc<Shared>,
    pairs: Vec<Pair>,
    /// Receivers not started yet (offline): session and its queue's far end.
    waiting: Vec<(Session, mpsc::Receiver<Cmd>, mpsc::Sender<Cmd>)>,
    /// Sessions of this worker.
    sessions: u64,
    expected: u64,
    handed: u64,
    behind: u64,
    /// The coordinator's words, read by a thread of their own (tokio's
    /// stdin is not built in).
    stdin: mpsc::Receiver<String>,
}

/// Lines from stdin until it ends.
fn read_stdin() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(4);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { return };
            if tx.blocking_send(line).is_err() {
                return;
            }
        }
    });
    rx
}

pub(crate) async fn run(args: &BenchArgs, id: WorkerId) -> anyhow::Result<ExitCode> {
    let dev = DevDir::new(&args.dir.dir);
    let quic = args.transport == BenchTransport::Quic;
    let transport = if quic {
        common::client::Transport::Quic
    } else {
        common::client::Transport::Tcp
    };
    let addr = dev.chat_addr(&transport, args.edge.edge)?;
    let roots = common::tls::load_certs(&dev.path("pki/ca.pem"))
        .with_context(|| format!("cannot load the CA of {}", args.dir.dir.display()))?;
    let sources = (1..=args.source_addresses)
        .map(|i| std::net::IpAddr::from([127, 0, 0, i]))
        .collect();
    let dialer = Dialer::new(
        addr,
        quic,
        &roots,
        crate::dev::SERVER_NAME,
        sources,
        args.sessions.div_ceil(id.of),
    )?;
    let sh = Arc::new(Shared {
        dialer,
        counters: Counters::default(),
        latency: AtomicHist::new(),
        logins: AtomicHist::new(),
        dialing: Semaphore::new((args.concurrency / id.of).max(1)),
        epoch: Instant::now(),
        body: args.body,
    });
    let fault = std::env::var_os(FAULT_ENV).is_some_and(|v| !v.is_empty());
    let key = dev.path("keys/k1.pem");
    let token = |k: usize| {
        crate::token::mint(
            &key,
            crate::dev::KEY_ID,
            &user(&id.run, k),
            1,
            1,
            Duration::from_secs(24 * 3600),
        )
    };
    let mut w = Worker {
        args: args.clone(),
        sh: sh.clone(),
        pairs: Vec::new(),
        waiting: Vec::new(),
        sessions: 0,
        expected: 0,
        handed: 0,
        behind: 0,
        stdin: read_stdin(),
    };
    // Tokens first: minting is not part of any measured window.
    let mut sessions = Vec::new();
    for p in (0..args.sessions / 2).filter(|p| p % id.of == id.index) {
        let sender = Session {
            index: 2 * p,
            token: token(2 * p)?,
            peer: Some(user(&id.run, 2 * p + 1)),
            fault: (fault && p == 0).then(Fault::default),
            tls: sh.dialer.session_tls(&sh.counters.resumed)?,
        };
        let receiver = Session {
            index: 2 * p + 1,
            token: token(2 * p + 1)?,
            peer: None,
            fault: None,
            tls: sh.dialer.session_tls(&sh.counters.resumed)?,
        };
        sessions.push((sender, receiver));
    }
    w.sessions = sessions.len() as u64 * 2;
    w.at("ready", true).await?;

    let offline = args.scenario == Scenario::Offline;
    for (sender, receiver) in sessions {
        let sender = spawn(sender, &sh);
        let (tx, rx) = mpsc::channel(QUEUE);
        let receiver = if offline {
            w.waiting.push((receiver, rx, tx));
            None
        } else {
            Some(start(receiver, rx, tx, &sh))
        };
        w.pairs.push(Pair {
            sender,
            receiver,
            next: 0,
        });
    }
    let online = (w.pairs.len() * if offline { 1 } else { 2 }) as u64;
    let connected = w.wait_logins(online, args.connect_timeout).await;
    if !w.at("connected", connected).await? {
        return w.finish().await;
    }
    match args.scenario {
        Scenario::Login => {
            w.round(args.check).await;
            w.at("checked", true).await?;
        }
        Scenario::Idle => {
            let end = Instant::now() + args.duration;
            while Instant::now() < end {
                tokio::time::sleep(PROGRESS.min(end - Instant::now())).await;
                let goal = args.duration.as_millis() as u64;
                let left = end.saturating_duration_since(Instant::now()).as_millis() as u64;
                progress(goal - left.min(goal), goal);
            }
            w.at("idled", true).await?;
            w.round(args.check).await;
            w.at("checked", true).await?;
        }
        Scenario::Pairs => {
            let mut rate = args.rate / id.of as f64;
            loop {
                w.load(rate, args.duration).await;
                let done = w.drain().await;
                if !w.at("step", done).await? {
                    break;
                }
                rate *= super::SWEEP_FACTOR;
            }
        }
        Scenario::Offline => {
            let per_pair = (args.messages / (args.sessions as u64 / 2)).max(1);
            let mut handed = 0;
            for pair in &mut w.pairs {
                for _ in 0..per_pair {
                    handed += 1;
                    let n = pair.next;
                    pair.next += 1;
                    // (Waits for room: nothing is timed here.)
                    let _ = pair
                        .sender
                        .tx
                        .send(Cmd::Send {
                            n,
                            at: Instant::now(),
                        })
                        .await;
                }
            }
            w.expected += handed;
            w.handed += handed;
            let stored = w
                .wait(w.args.drain_timeout, |w| {
                    let c = &w.sh.counters;
                    let done = c.accepted.load(Relaxed) + c.rejected.load(Relaxed);
                    (
                        done,
                        w.handed,
                        c.processed.load(Relaxed) >= w.handed && done >= c.sent.load(Relaxed),
                    )
                })
                .await;
            if !w.at("queued", stored).await? {
                return w.finish().await;
            }
            for (s, rx, tx) in std::mem::take(&mut w.waiting) {
                let h = start(s, rx, tx, &sh);
                let pair = w
                    .pairs
                    .iter_mut()
                    .find(|p| p.receiver.is_none())
                    .expect("one waiting receiver per pair");
                pair.receiver = Some(h);
            }
            let done = w.drain().await;
            w.at("drained", done).await?;
        }
        Scenario::Storm => {
            w.round(args.check).await;
            w.confirm().await;
            w.at("steady", true).await?;
            let before = sh.counters.logins.load(Relaxed);
            for pair in &w.pairs {
                for h in pair.handles() {
                    let _ = h.tx.send(Cmd::Drop).await;
                }
            }
            let back = w.wait_logins_from(before, online, args.storm_timeout).await;
            w.at("back", back).await?;
            w.round(args.check).await;
            w.at("checked", true).await?;
        }
    }
    w.finish().await
}

fn spawn(s: Session, sh: &Arc<Shared>) -> Handle {
    let (tx, rx) = mpsc::channel(QUEUE);
    start(s, rx, tx, sh)
}

fn start(s: Session, rx: mpsc::Receiver<Cmd>, tx: mpsc::Sender<Cmd>, sh: &Arc<Shared>) -> Handle {
    Handle {
        tx,
        task: tokio::spawn(session::run(s, rx, sh.clone())),
    }
}

impl Pair {
    fn handles(&self) -> impl Iterator<Item = &Handle> {
        std::iter::once(&self.sender).chain(self.receiver.as_ref())
    }
}

fn progress(done: u64, goal: u64) {
    emit(&Line::Progress { done, goal });
}

fn emit(line: &Line) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer(&mut out, line);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

impl Worker {
    fn report(&self, complete: bool) -> Report {
        let c = &self.sh.counters;
        Report {
            sessions: self.sessions,
            logins: c.logins.load(Relaxed),
            connected: c.connected.load(Relaxed),
            failed: c.failed.load(Relaxed),
            refused: c.refused.load(Relaxed),
            refused_retry_after: c.refused_retry_after.load(Relaxed),
            resumed: c.resumed.load(Relaxed),
            disconnects: c.disconnects.load(Relaxed),
            expected: self.expected,
            sent: c.sent.load(Relaxed),
            unsent: c.unsent.load(Relaxed),
            accepted: c.accepted.load(Relaxed),
            rejected: c.rejected.load(Relaxed),
            received: c.received.load(Relaxed),
            duplicated: c.duplicated.load(Relaxed),
            redelivered: c.redelivered.load(Relaxed),
            reordered: c.reordered.load(Relaxed),
            receipts: c.receipts.load(Relaxed),
            behind: self.behind,
            complete,
            latency: self.sh.latency.take(),
            login_latency: self.sh.logins.take(),
        }
    }

    /// Reports the end of `phase` and waits for the coordinator: `true` to
    /// go on, `false` to stop.
    async fn at(&mut self, phase: &str, complete: bool) -> anyhow::Result<bool> {
        emit(&Line::At {
            phase: phase.into(),
            report: Box::new(self.report(complete)),
        });
        match self.stdin.recv().await {
            Some(l) if l == "go" => Ok(true),
            Some(l) if l == "stop" => Ok(false),
            Some(l) => bail!("the coordinator said {l:?}"),
            None => bail!("the coordinator went away"),
        }
    }

    /// Polls `f` (done, goal, finished) until finished or `limit` passes,
    /// reporting progress; whether it finished.
    async fn wait(&self, limit: Duration, f: impl Fn(&Worker) -> (u64, u64, bool)) -> bool {
        let start = Instant::now();
        let mut last = Instant::now();
        loop {
            let (done, goal, finished) = f(self);
            if finished {
                progress(done, goal);
                return true;
            }
            if start.elapsed() >= limit {
                return false;
            }
            if last.elapsed() >= PROGRESS {
                progress(done, goal);
                last = Instant::now();
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn wait_logins(&self, goal: u64, limit: Duration) -> bool {
        self.wait(limit, |w| {
            let n = w.sh.counters.connected.load(Relaxed);
            (n, goal, n >= goal)
        })
        .await
    }

    /// Until `goal` logins more than `before` have happened.
    async fn wait_logins_from(&self, before: u64, goal: u64, limit: Duration) -> bool {
        self.wait(limit, |w| {
            let n = w.sh.counters.logins.load(Relaxed) - before;
            (
                n,
                goal,
                n >= goal && w.sh.counters.connected.load(Relaxed) >= goal,
            )
        })
        .await
    }

    /// Until every message handed out was answered and every accepted one
    /// arrived (bounded by --drain-timeout).
    async fn drain(&self) -> bool {
        self.wait(self.args.drain_timeout, |w| {
            let c = &w.sh.counters;
            let answered = c.accepted.load(Relaxed) + c.rejected.load(Relaxed);
            let copies = c.copies();
            let finished = c.processed.load(Relaxed) >= w.handed
                && answered >= c.sent.load(Relaxed)
                && copies >= c.accepted.load(Relaxed);
            (copies, w.expected, finished)
        })
        .await
    }

    /// `k` messages from every sender to its receiver, then the drain.
    async fn round(&mut self, k: u64) -> bool {
        let now = Instant::now();
        for pair in &mut self.pairs {
            for _ in 0..k {
                let n = pair.next;
                pair.next += 1;
                let _ = pair.sender.tx.send(Cmd::Send { n, at: now }).await;
            }
        }
        self.expected += k * self.pairs.len() as u64;
        self.handed += k * self.pairs.len() as u64;
        self.drain().await
    }

    /// Every session pings and the answers arrive: the server has read
    /// every ack sent before (bounded by --drain-timeout).
    async fn confirm(&self) -> bool {
        let before = self.sh.counters.pongs.load(Relaxed);
        let mut n = 0;
        for pair in &self.pairs {
            for h in pair.handles() {
                let _ = h.tx.send(Cmd::Ping).await;
                n += 1;
            }
        }
        self.wait(self.args.drain_timeout, |w| {
            let got = w.sh.counters.pongs.load(Relaxed) - before;
            (got, n, got >= n)
        })
        .await
    }

    /// The open loop: `rate` messages a second over this worker's pairs in
    /// turn for `duration`, each stamped with the time it was due (so a
    /// late send counts its wait, and a slow server cannot slow the load).
    async fn load(&mut self, rate: f64, duration: Duration) {
        let start = Instant::now();
        let mut k = 0u64;
        let mut last = Instant::now();
        let n_pairs = self.pairs.len() as u64;
        loop {
            let elapsed = start.elapsed();
            if elapsed >= duration {
                break;
            }
            let due = (elapsed.as_secs_f64() * rate) as u64;
            while k < due {
                let at = start + Duration::from_secs_f64(k as f64 / rate);
                let pair = &mut self.pairs[(k % n_pairs) as usize];
                match pair.sender.tx.try_send(Cmd::Send { n: pair.next, at }) {
                    Ok(()) => {
                        pair.next += 1;
                        self.expected += 1;
                        self.handed += 1;
                    }
                    Err(_) => self.behind += 1,
                }
                k += 1;
            }
            if last.elapsed() >= PROGRESS {
                let goal = duration.as_millis() as u64;
                progress(elapsed.as_millis() as u64, goal);
                last = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Goodbye from every session, then the last report.
    async fn finish(mut self) -> anyhow::Result<ExitCode> {
        for pair in &self.pairs {
            for h in pair.handles() {
                let _ = h.tx.send(Cmd::Goodbye).await;
            }
        }
        for (_, _, tx) in &self.waiting {
            let _ = tx.send(Cmd::Goodbye).await;
        }
        let tasks: Vec<_> = std::mem::take(&mut self.pairs)
            .into_iter()
            .flat_map(|p| std::iter::once(p.sender.task).chain(p.receiver.map(|r| r.task)))
            .collect();
        let _ = tokio::time::timeout(Duration::from_secs(30), async {
            for t in tasks {
                let _ = t.await;
            }
        })
        .await;
        self.sh.dialer.close().await;
        emit(&Line::At {
            phase: "done".into(),
            report: Box::new(self.report(true)),
        });
        Ok(ExitCode::SUCCESS)
    }
}
