//! Crash loop: the real `wa-store` binary is killed with SIGKILL at random
//! moments (while it opens its database, right after it is ready, in the middle
//! of heavy pipelined writing and group commits) and restarted, again and
//! again. A writer speaking the link protocol records every append the store
//! acknowledged (`AppendResult` code 0, not a duplicate). At the end a checker
//! starts the store cleanly, drains every mailbox and counts, per
//! sender → recipient, acknowledged records that are missing (lost), records
//! delivered twice (duplicates) and records delivered out of order
//! (reordered). All three must be zero.
//!
//! The writer never resends an unacknowledged append after a crash; it goes on
//! with new counters, so each pair's counters must come out strictly rising.
//! Unacknowledged appends may or may not survive; either is allowed.
//!
//! Environment:
//! - `WA_CRASH_KILLS`: kills per engine (default 8, the CI size);
//! - `WA_CRASH_SEED`: replay a run (the seed is printed at the start);
//! - `WA_CRASH_ENGINES`: which engines to run (default `sled,fjall`).
//! - `WA_CRASH_EXTRA_TOML`: appended to the store's config, e.g.
//!   `[cache]` with a short `sync_delay` so that rounds write back to the engine
//!   (the test itself sets `[mailbox]` and `[journal]`);
//! - `WA_CRASH_VERBOSE=1`: a line per round.
//!
//! A long run: `WA_CRASH_KILLS=200 cargo test --release -p wa-store --test
//! crash_loop -- --nocapture`. On failure the data directory and the store's
//! stderr (`store.log`) are kept and their path printed.

mod support;

use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::link::{Append, Attach, Detach, LinkAck, link_down, link_up};
use common::proto::envelope::Content;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{Semaphore, oneshot};

use support::{Link, PATIENCE, SECRET, config_toml, envelope, write_files};

/// Users sending, users receiving: every sender writes to every recipient.
const SENDERS: usize = 6;
const RECIPIENTS: usize = 4;
const PAIRS: usize = SENDERS * RECIPIENTS;
/// Links the writer opens per round, like a few edges; a pair always goes
/// over one link so its appends reach the store in order.
const LINKS: usize = 2;
/// Appends in flight per link.
const IN_FLIGHT: usize = 256;
/// Appends written before one flush of the socket.
const BURST: usize = 64;
/// Acks the checker holds before sending them (well under the push window).
const ACK_BATCH: usize = 64;
/// A store that is not ready this long after its start has failed.
const READY_WITHIN: Duration = Duration::from_secs(60);
/// The checker must have drained every mailbox within this.
const CHECK_WITHIN: Duration = Duration::from_secs(600);
/// The sender of the checker's end-of-mailbox markers.
const MARKER_FROM: &str = "checker";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loop_sled() {
    crash_loop("sled").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loop_fjall() {
    crash_loop("fjall").await;
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} does not parse")),
        Err(_) => default,
    }
}

async fn crash_loop(engine: &str) {
    let engines = env_or("WA_CRASH_ENGINES", "sled,fjall".to_string());
    if !engines.split(',').any(|e| e.trim() == engine) {
        eprintln!("crash-loop engine={engine}: skipped (WA_CRASH_ENGINES={engines})");
        return;
    }
    let kills: u32 = env_or("WA_CRASH_KILLS", 8);
    let seed: u64 = env_or("WA_CRASH_SEED", rand::random());
    eprintln!(
        "crash-loop engine={engine} seed={seed} kills={kills} (replay: WA_CRASH_SEED={seed} WA_CRASH_KILLS={kills} WA_CRASH_ENGINES={engine})"
    );
    let dir = tempfile::tempdir().unwrap();
    write_files(dir.path());
    let cfg = dir.path().join("store.toml");
    let extra = env_or("WA_CRASH_EXTRA_TOML", String::new());
    if !extra.is_empty() {
        eprintln!("crash-loop engine={engine} extra config: {extra:?}");
    }
    // Room for everything a long run writes: a refusal for a full mailbox
    // would only thin the test. The smallest journal segments, so that every
    // round rotates through many and kills land while spares are being made.
    let config = config_toml(dir.path(), "127.0.0.1:0", engine)
        + "[mailbox]\nmax_items = 1000000000\nmax_bytes = \"1 TiB\"\n"
        + "[journal]\nsegment_size = \"64 KiB\"\n"
        + &extra;
    std::fs::write(&cfg, config).unwrap();
    let mut run = Run {
        dir: dir.path().to_owned(),
        cfg,
        log: dir.path().join("store.log"),
        rng: StdRng::seed_from_u64(seed),
        ledger: Arc::new(Mutex::new(Ledger::new())),
        open_estimate: Duration::from_millis(50),
        kills: Kills::default(),
        round: 0,
        verbose: env_or("WA_CRASH_VERBOSE", 0u8) != 0,
    };
    let started = Instant::now();
    let outcome = run.go(kills).await;
    let elapsed = started.elapsed();
    let ledger = run.ledger.lock().unwrap();
    let k = &run.kills;
    match outcome {
        Ok(c) => {
            let ok = c.lost == 0
                && c.duplicates == 0
                && c.reordered == 0
                && c.strangers == 0
                && c.leftover == 0
                && ledger.duplicate_answers == 0;
            eprintln!(
                "crash-loop engine={engine} seed={seed} kills={} (opening={} serving={} heavy={}) sent={} acknowledged={} lost={} duplicates={} reordered={} unacknowledged_kept={} refused={} strangers={} leftover={} duplicate_answers={} elapsed={:.1}s",
                k.total(),
                k.opening,
                k.early_serving,
                k.heavy,
                ledger.sent,
                ledger.acknowledged(),
                c.lost,
                c.duplicates,
                c.reordered,
                c.unacknowledged_kept,
                ledger.refused,
                c.strangers,
                c.leftover,
                ledger.duplicate_answers,
                elapsed.as_secs_f64()
            );
            if !ok {
                let kept = dir.keep();
                panic!(
                    "crash-loop engine={engine} seed={seed} FAILED: {}\ndata kept in {}",
                    c.examples.join("\n"),
                    kept.display()
                );
            }
        }
        Err(failure) => {
            let kept = dir.keep();
            panic!(
                "crash-loop engine={engine} seed={seed} round={} FAILED: {failure}\ndata and store.log kept in {}",
                run.round,
                kept.display()
            );
        }
    }
}

/// What the writer knows: per pair (sender, recipient), the next counter and
/// the counters the store acknowledged.
#[derive(Clone)]
struct Ledger {
    next: Vec<u64>,
    acked: Vec<Vec<u64>>,
    sent: u64,
    refused: u64,
    /// `AppendResult`s marked duplicate. The writer never sends an id twice,
    /// so any is a defect.
    duplicate_answers: u64,
}

impl Ledger {
    fn new() -> Ledger {
        Ledger {
            next: vec![1; PAIRS],
            acked: vec![Vec::new(); PAIRS],
            sent: 0,
            refused: 0,
            duplicate_answers: 0,
        }
    }

    fn acknowledged(&self) -> usize {
        self.acked.iter().map(Vec::len).sum()
    }
}

fn user(prefix: char, i: usize) -> String {
    format!("{prefix}{i}")
}

/// Id (and body prefix) of an append: sender, recipient, counter.
fn record_id(s: usize, r: usize, c: u64) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[0..4].copy_from_slice(&(s as u32).to_be_bytes());
    id[4..8].copy_from_slice(&(r as u32).to_be_bytes());
    id[8..16].copy_from_slice(&c.to_be_bytes());
    id
}

fn parse_id(id: &[u8]) -> Option<(usize, usize, u64)> {
    let id: &[u8; 16] = id.try_into().ok()?;
    let s = u32::from_be_bytes(id[0..4].try_into().unwrap()) as usize;
    let r = u32::from_be_bytes(id[4..8].try_into().unwrap()) as usize;
    let c = u64::from_be_bytes(id[8..16].try_into().unwrap());
    (s < SENDERS && r < RECIPIENTS).then_some((s, r, c))
}

#[derive(Default)]
struct Kills {
    /// Killed before it printed READY.
    opening: u32,
    /// Killed within moments of READY, while links were coming up.
    early_serving: u32,
    /// Killed during pipelined writing.
    heavy: u32,
}

impl Kills {
    fn total(&self) -> u32 {
        self.opening + self.early_serving + self.heavy
    }
}

/// When a round kills the store.
#[derive(Debug, Clone, Copy)]
enum Plan {
    /// This long after spawning it, without waiting for READY.
    AfterSpawn(Duration),
    /// This long after READY, with the writer going.
    AfterReady(Duration),
}

struct Run {
    dir: PathBuf,
    cfg: PathBuf,
    log: PathBuf,
    rng: StdRng,
    ledger: Arc<Mutex<Ledger>>,
    /// How long the store has recently taken from spawn to READY: kills
    /// aimed at the opening are drawn within it.
    open_estimate: Duration,
    kills: Kills,
    round: u32,
    /// `WA_CRASH_VERBOSE=1`: a line per round.
    verbose: bool,
}

/// A running store process.
struct Proc {
    child: Child,
    pid: Pid,
    ready: oneshot::Receiver<SocketAddr>,
    spawned: Instant,
    /// Where this run's stderr starts in `store.log`.
    log_from: u64,
}

impl Run {
    async fn go(&mut self, kills: u32) -> Result<Checked, String> {
        while self.kills.total() < kills {
            self.round += 1;
            let plan = self.plan();
            self.crash_round(plan).await?;
        }
        self.round += 1;
        let mut p = self.spawn()?;
        let addr = self.wait_ready(&mut p).await?;
        let checking = Instant::now();
        let checked = tokio::time::timeout(CHECK_WITHIN, self.check(addr))
            .await
            .map_err(|_| {
                format!("the checker did not drain the mailboxes within {CHECK_WITHIN:?}")
            })?;
        if self.verbose {
            eprintln!("checked in {:?}", checking.elapsed());
        }
        // The clean stop works too after all this.
        kill(p.pid, Signal::SIGTERM).unwrap();
        let status = tokio::time::timeout(PATIENCE, p.child.wait())
            .await
            .map_err(|_| "no exit within patience after SIGTERM".to_string())?
            .unwrap();
        if !status.success() {
            return Err(self.with_log(&p, format!("exit after SIGTERM: {status}")));
        }
        Ok(checked)
    }

    fn plan(&mut self) -> Plan {
        let roll = self.rng.random_range(0..100u32);
        let ms = |lo: f64, hi: f64, rng: &mut StdRng| {
            Duration::from_secs_f64(rng.random_range(lo..hi) / 1000.0)
        };
        let open_ms = self.open_estimate.as_secs_f64() * 1000.0;
        if roll < 30 {
            Plan::AfterSpawn(ms(0.0, open_ms * 1.2 + 1.0, &mut self.rng))
        } else if roll < 45 {
            Plan::AfterReady(ms(0.0, 20.0, &mut self.rng))
        } else {
            Plan::AfterReady(ms(20.0, 600.0, &mut self.rng))
        }
    }

    fn spawn(&self) -> Result<Proc, String> {
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        writeln!(log, "=== round {}", self.round).unwrap();
        let log_from = log.seek(SeekFrom::End(0)).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_wa-store"))
            .arg("--config")
            .arg(&self.cfg)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot spawn wa-store: {e}"))?;
        let spawned = Instant::now();
        let pid = Pid::from_raw(child.id().expect("just spawned") as i32);
        let stdout = child.stdout.take().expect("piped");
        let (tx, ready) = oneshot::channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            let mut tx = Some(tx);
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(addr) = line.strip_prefix("READY wa-store link=")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(
                        addr.split_whitespace()
                            .next()
                            .and_then(|a| a.parse().ok())
                            .expect("READY names an address"),
                    );
                }
            }
        });
        Ok(Proc {
            child,
            pid,
            ready,
            spawned,
            log_from,
        })
    }

    /// The store's stderr since `p` started, appended to `what`.
    fn with_log(&self, p: &Proc, what: String) -> String {
        let mut f = std::fs::File::open(&self.log).unwrap();
        f.seek(SeekFrom::Start(p.log_from)).unwrap();
        let mut text = String::new();
        f.read_to_string(&mut text).unwrap();
        format!("{what}\n--- wa-store stderr ---\n{text}--- end ---")
    }

    async fn wait_ready(&mut self, p: &mut Proc) -> Result<SocketAddr, String> {
        match tokio::time::timeout(READY_WITHIN, &mut p.ready).await {
            Ok(Ok(addr)) => {
                let took = p.spawned.elapsed();
                self.open_estimate = (self.open_estimate * 3 + took) / 4;
                Ok(addr)
            }
            Ok(Err(_)) => {
                let status = tokio::time::timeout(PATIENCE, p.child.wait())
                    .await
                    .ok()
                    .map(|s| s.unwrap());
                Err(self.with_log(
                    p,
                    format!("the store stopped before READY: exit {status:?}"),
                ))
            }
            Err(_) => {
                let _ = kill(p.pid, Signal::SIGKILL);
                Err(self.with_log(p, format!("no READY within {READY_WITHIN:?}")))
            }
        }
    }

    /// SIGKILL, then insists it was the kill that ended the process.
    async fn kill(&self, p: &mut Proc) -> Result<(), String> {
        kill(p.pid, Signal::SIGKILL).unwrap();
        let status: ExitStatus = tokio::time::timeout(PATIENCE, p.child.wait())
            .await
            .map_err(|_| "not reaped within patience after SIGKILL".to_string())?
            .unwrap();
        if status.signal() == Some(Signal::SIGKILL as i32) {
            Ok(())
        } else {
            Err(self.with_log(p, format!("the store ended on its own: {status}")))
        }
    }

    async fn crash_round(&mut self, plan: Plan) -> Result<(), String> {
        if self.verbose {
            let l = self.ledger.lock().unwrap();
            eprintln!(
                "round {} {plan:?} open~{:?} sent={} acknowledged={}",
                self.round,
                self.open_estimate,
                l.sent,
                l.acknowledged()
            );
        }
        let mut p = self.spawn()?;
        match plan {
            Plan::AfterSpawn(delay) => {
                tokio::time::sleep(delay).await;
                let was_ready = p.ready.try_recv().is_ok();
                self.kill(&mut p).await?;
                if was_ready {
                    self.kills.early_serving += 1;
                } else {
                    self.kills.opening += 1;
                }
            }
            Plan::AfterReady(delay) => {
                let addr = self.wait_ready(&mut p).await?;
                let writer = tokio::spawn(write(
                    addr,
                    self.dir.clone(),
                    Arc::clone(&self.ledger),
                    self.rng.random(),
                ));
                tokio::time::sleep(delay).await;
                self.kill(&mut p).await?;
                tokio::time::timeout(PATIENCE, writer)
                    .await
                    .map_err(|_| "the writer did not notice the kill".to_string())?
                    .unwrap();
                if delay < Duration::from_millis(20) {
                    self.kills.early_serving += 1;
                } else {
                    self.kills.heavy += 1;
                }
            }
        }
        Ok(())
    }

    /// Starts over a clean store, drains every mailbox, counts.
    async fn check(&self, addr: SocketAddr) -> Checked {
        // The writers are done: work on a copy.
        let ledger = self.ledger.lock().unwrap().clone();
        let mut link = Link::open(addr, &self.dir, &SECRET).await;
        assert!(
            matches!(link.recv().await, Some(link_down::Kind::AuthOk(_))),
            "no AuthOk"
        );
        let mut c = Checked::default();
        let mut delivered: Vec<Vec<u64>> = vec![Vec::new(); PAIRS];
        let mut seen: HashSet<(usize, u64)> = HashSet::new();

        attach_and_mark(&mut link, 1, 1).await;
        let mut done = 0;
        let mut marked = [false; RECIPIENTS];
        let mut acks: Vec<Vec<u64>> = vec![Vec::new(); RECIPIENTS];
        while done < RECIPIENTS {
            let frame = link
                .r
                .next()
                .await
                .unwrap()
                .expect("the store closed the link");
            match frame {
                link_down::Kind::AppendResult(a) => {
                    assert_eq!(a.code, 0, "marker append refused: {a:?}");
                }
                link_down::Kind::Push(p) => {
                    let r = (p.session - 1) as usize;
                    assert!(r < RECIPIENTS, "push for unknown session {}", p.session);
                    acks[r].push(p.seq);
                    let e = p.envelope.expect("pushes carry an envelope");
                    if e.from == MARKER_FROM {
                        marked[r] = true;
                        done += 1;
                    } else {
                        c.record(r, &e, &ledger, &mut delivered, &mut seen);
                    }
                    if acks[r].len() >= ACK_BATCH || marked[r] {
                        link.w
                            .queue(link_up::Kind::Ack(LinkAck {
                                session: p.session,
                                user: user('r', r),
                                seqs: std::mem::take(&mut acks[r]),
                            }))
                            .await
                            .unwrap();
                        link.w.flush().await.unwrap();
                    }
                }
                link_down::Kind::Attached(_) => {}
                other => panic!("unexpected frame {other:?}"),
            }
        }

        // Everything acknowledged is gone: fresh sessions get only a new marker.
        for r in 0..RECIPIENTS {
            link.w
                .queue(link_up::Kind::Detach(Detach {
                    session: 1 + r as u64,
                    user: user('r', r),
                }))
                .await
                .unwrap();
        }
        attach_and_mark(&mut link, 101, 2).await;
        let mut done = 0;
        while done < RECIPIENTS {
            match link
                .r
                .next()
                .await
                .unwrap()
                .expect("the store closed the link")
            {
                link_down::Kind::AppendResult(a) => assert_eq!(a.code, 0, "{a:?}"),
                link_down::Kind::Push(p) => {
                    let e = p.envelope.expect("pushes carry an envelope");
                    if e.from == MARKER_FROM && e.id[0] == 2 {
                        done += 1;
                    } else {
                        c.leftover += 1;
                        c.example(format!(
                            "left after acks: session {} seq {}",
                            p.session, p.seq
                        ));
                    }
                }
                link_down::Kind::Attached(_) => {}
                other => panic!("unexpected frame {other:?}"),
            }
        }

        c.tally(&ledger, &delivered);
        c
    }
}

/// Attaches a session per recipient (`session_base + r`), then appends a
/// marker (id all `marker`) to each mailbox. Pushes come in sequence order and
/// the marker is the newest item, so a session that got its marker has been
/// given the whole mailbox: draining ends on a fact, not a quiet period.
async fn attach_and_mark(link: &mut Link, session_base: u64, marker: u8) {
    for r in 0..RECIPIENTS {
        link.w
            .queue(link_up::Kind::Attach(Attach {
                epoch: 1,
                session: session_base + r as u64,
                user: user('r', r),
                device: 1,
                generation: 1,
            }))
            .await
            .unwrap();
        link.w
            .queue(link_up::Kind::Append(Append {
                req: session_base + r as u64,
                to: user('r', r),
                envelope: Some(envelope(
                    MARKER_FROM,
                    Bytes::from(vec![marker; 16]),
                    Bytes::from_static(b"marker"),
                )),
                epoch: 1,
                handoff: false,
                from_generation: 0,
            }))
            .await
            .unwrap();
    }
    link.w.flush().await.unwrap();
}

/// The checker's counts.
#[derive(Default, Debug)]
struct Checked {
    lost: u64,
    duplicates: u64,
    reordered: u64,
    /// Delivered, never acknowledged: allowed.
    unacknowledged_kept: u64,
    /// Items the writer never sent, or whose id and body disagree.
    strangers: u64,
    /// Items still there after they were acknowledged.
    leftover: u64,
    examples: Vec<String>,
}

impl Checked {
    fn example(&mut self, what: String) {
        if self.examples.len() < 20 {
            self.examples.push(what);
        }
    }

    /// Counts acknowledged records never delivered (lost) and unacknowledged
    /// ones that were kept.
    fn tally(&mut self, ledger: &Ledger, delivered: &[Vec<u64>]) {
        for (pair, acked) in ledger.acked.iter().enumerate() {
            let got: HashSet<u64> = delivered[pair].iter().copied().collect();
            for &n in acked {
                if !got.contains(&n) {
                    self.lost += 1;
                    self.example(format!(
                        "lost: s{} -> r{} counter {n}",
                        pair / RECIPIENTS,
                        pair % RECIPIENTS
                    ));
                }
            }
            let acked: HashSet<u64> = acked.iter().copied().collect();
            self.unacknowledged_kept += got.iter().filter(|n| !acked.contains(n)).count() as u64;
        }
    }

    fn record(
        &mut self,
        r: usize,
        e: &common::proto::Envelope,
        ledger: &Ledger,
        delivered: &mut [Vec<u64>],
        seen: &mut HashSet<(usize, u64)>,
    ) {
        let parsed = parse_id(&e.id).filter(|&(s, to, c)| {
            to == r
                && e.from == user('s', s)
                && c < ledger.next[s * RECIPIENTS + r]
                && matches!(&e.content, Some(Content::Body(b)) if b.starts_with(&e.id))
        });
        let Some((s, _, n)) = parsed else {
            self.strangers += 1;
            self.example(format!(
                "stranger in r{r}: from {} id {:02x?}",
                e.from,
                &e.id[..]
            ));
            return;
        };
        let pair = s * RECIPIENTS + r;
        if !seen.insert((pair, n)) {
            self.duplicates += 1;
            self.example(format!("duplicate: s{s} -> r{r} counter {n}"));
            return;
        }
        if let Some(&last) = delivered[pair].last()
            && n < last
        {
            self.reordered += 1;
            self.example(format!("reordered: s{s} -> r{r} counter {n} after {last}"));
        }
        delivered[pair].push(n);
    }
}

/// One round's writer: `LINKS` links, pipelined appends until the store dies.
async fn write(addr: SocketAddr, dir: PathBuf, ledger: Arc<Mutex<Ledger>>, seed: u64) {
    let mut links = Vec::new();
    for l in 0..LINKS {
        links.push(tokio::spawn(write_link(
            addr,
            dir.clone(),
            Arc::clone(&ledger),
            l,
            seed.wrapping_add(l as u64),
        )));
    }
    for l in links {
        l.await.unwrap();
    }
}

async fn write_link(
    addr: SocketAddr,
    dir: PathBuf,
    ledger: Arc<Mutex<Ledger>>,
    index: usize,
    seed: u64,
) {
    // Any failure here is the kill: the round is over for this link.
    let Ok(mut link) = Link::connect(addr, &dir, &SECRET).await else {
        return;
    };
    match link.r.next().await {
        Ok(Some(link_down::Kind::AuthOk(_))) => {}
        Ok(Some(other)) => panic!("expected AuthOk, got {other:?}"),
        Ok(None) | Err(_) => return,
    }
    let (mut reader, mut writer) = link.split();
    let pairs: Vec<usize> = (0..PAIRS).filter(|p| p % LINKS == index).collect();
    let window = Arc::new(Semaphore::new(IN_FLIGHT));
    let inflight: Arc<Mutex<std::collections::HashMap<u64, (usize, u64)>>> = Arc::default();

    let sender = {
        let window = Arc::clone(&window);
        let inflight = Arc::clone(&inflight);
        let ledger = Arc::clone(&ledger);
        let mut rng = StdRng::seed_from_u64(seed);
        async move {
            let mut req = 0u64;
            loop {
                let Ok(p) = window.acquire().await else {
                    return;
                };
                p.forget();
                let mut n = 1;
                while n < BURST
                    && let Ok(p) = window.try_acquire()
                {
                    p.forget();
                    n += 1;
                }
                for _ in 0..n {
                    let pair = pairs[rng.random_range(0..pairs.len())];
                    let (s, r) = (pair / RECIPIENTS, pair % RECIPIENTS);
                    let counter = {
                        let mut l = ledger.lock().unwrap();
                        let c = l.next[pair];
                        l.next[pair] += 1;
                        l.sent += 1;
                        c
                    };
                    req += 1;
                    inflight.lock().unwrap().insert(req, (pair, counter));
                    let id = record_id(s, r, counter);
                    let mut body = id.to_vec();
                    body.resize(16 + rng.random_range(0..200), b'.');
                    let frame = link_up::Kind::Append(Append {
                        req,
                        to: user('r', r),
                        envelope: Some(envelope(
                            &user('s', s),
                            Bytes::copy_from_slice(&id),
                            Bytes::from(body),
                        )),
                        epoch: 1,
                        handoff: false,
                        from_generation: 0,
                    });
                    if writer.queue(frame).await.is_err() {
                        return;
                    }
                }
                if writer.flush().await.is_err() {
                    return;
                }
            }
        }
    };
    let receiver = async {
        while let Ok(Some(frame)) = reader.next().await {
            let link_down::Kind::AppendResult(a) = frame else {
                panic!("the writer attaches nothing, got {frame:?}");
            };
            let (pair, counter) = inflight
                .lock()
                .unwrap()
                .remove(&a.req)
                .unwrap_or_else(|| panic!("answer to unknown req {}", a.req));
            let mut l = ledger.lock().unwrap();
            if a.code != 0 {
                l.refused += 1;
            } else if a.duplicate {
                l.duplicate_answers += 1;
            } else {
                l.acked[pair].push(counter);
            }
            drop(l);
            window.add_permits(1);
        }
        // The store is gone: stop the sender if it waits for room.
        window.close();
    };
    tokio::join!(sender, receiver);
}

/// The checker itself catches each kind of fault.
#[test]
fn checker_counts_loss_duplicates_reordering_and_strangers() {
    let mut ledger = Ledger::new();
    ledger.next[RECIPIENTS + 2] = 10;
    ledger.acked[RECIPIENTS + 2] = vec![1, 2, 3, 5];
    let item = |c: u64| {
        let id = record_id(1, 2, c);
        envelope(
            "s1",
            Bytes::copy_from_slice(&id),
            Bytes::copy_from_slice(&id),
        )
    };
    let mut c = Checked::default();
    let mut delivered = vec![Vec::new(); PAIRS];
    let mut seen = HashSet::new();
    // 1, 3, 2 (reordered), 3 again (duplicate), 4 (unacknowledged, kept);
    // 5 is lost; 11 was never sent; an id naming another recipient.
    for n in [1, 3, 2, 3, 4, 11] {
        c.record(2, &item(n), &ledger, &mut delivered, &mut seen);
    }
    c.record(3, &item(1), &ledger, &mut delivered, &mut seen);
    c.tally(&ledger, &delivered);
    assert_eq!(
        (
            c.lost,
            c.duplicates,
            c.reordered,
            c.strangers,
            c.unacknowledged_kept
        ),
        (1, 1, 1, 2, 1),
        "{c:?}"
    );
}

#[test]
fn ids_round_trip() {
    assert_eq!(parse_id(&record_id(5, 3, 1 << 40)), Some((5, 3, 1 << 40)));
    assert_eq!(parse_id(&record_id(SENDERS, 0, 1)), None);
    assert_eq!(parse_id(&[0; 15]), None);
}
