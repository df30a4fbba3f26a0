//! Append benchmark: wa-store in process (`wa_store::run` on port 0, a fresh
//! temp dir per run) driven over its real link listener by a few links, like a
//! few edges.
//!
//! Mode `append` (default): W writers, each sends an append, waits for its
//! `AppendResult` (sent only once durable) and sends the next; after a
//! warm-up it counts durable appends per second and the time from sending an
//! append to its result (p50/p99/p99.9/max), for each engine and each W. By
//! default the loop is closed (each writer sends again at once: the store's
//! saturation throughput, where latency is writers / throughput by Little's
//! law); with `--rate R` the W writers together offer R appends/s on a fixed
//! schedule and latency counts from when each append was due (open loop, no
//! coordinated omission): the latency a store carrying R/s gives.
//!
//! Mode `churn`: every recipient is online (one session each, acknowledging
//! every push) while writers append, until N messages came and went (or a time
//! cap); reports the rate, the send → push latency and the data directory's
//! size on disk, live and after a clean stop, per million messages.
//!
//! `cargo bench -p wa-store --bench append -- --help` lists the options. The
//! load generator shares the machine with the store: numbers are what an edge
//! on the same host sees.

#[path = "../tests/support/mod.rs"]
mod support;

/// The allocator of the wa-store binary (see its main.rs).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use common::link::{Append, AppendResult, Attach, LinkAck, link_down, link_up};
use common::proto::envelope::Content;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use support::{Link, LinkReader, LinkWriter, SECRET, config_toml, envelope, write_files};

#[derive(Parser, Debug)]
#[command(about = "wa-store append benchmark")]
struct Args {
    /// `append`: closed-loop writers; `churn`: recipients online, disk use.
    #[arg(long, default_value = "append")]
    mode: String,
    /// Engines to measure, comma separated.
    #[arg(long, default_value = "sled,fjall", value_delimiter = ',')]
    engines: Vec<String>,
    /// Concurrent writers (one append in flight each), comma separated.
    #[arg(long, default_value = "1,100,1000,10000", value_delimiter = ',')]
    writers: Vec<usize>,
    /// Append mode: offered appends per second over all writers (open loop:
    /// each writer sends on its own schedule and the time to Accepted counts
    /// from when the append was due, so a late send shows as latency). 0: each
    /// writer sends the next append as soon as the last was accepted
    /// (closed loop, the store's saturation throughput).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Links the writers are spread over.
    #[arg(long, default_value_t = 4)]
    links: usize,
    /// Seconds measured per run (append mode).
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// Seconds of warm-up before measuring (append mode).
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Body bytes per message.
    #[arg(long, default_value_t = 100)]
    body: usize,
    /// Recipients the writers write to.
    #[arg(long, default_value_t = 1000)]
    recipients: usize,
    /// Churn mode: messages that must come and go.
    #[arg(long, default_value_t = 1_000_000)]
    messages: u64,
    /// Churn mode: stop after this many seconds even if fewer messages went.
    #[arg(long, default_value_t = 60)]
    max_secs: u64,
    /// Worker threads of a runtime of the store's own, as in the wa-store
    /// binary (0: the store shares the load generator's runtime, so its
    /// tasks queue behind the generator's).
    #[arg(long, default_value_t = 2)]
    store_threads: usize,
    /// Worker threads of the load generator's runtime (the stand-in for the
    /// edges, which would run on machines of their own). Fewer threads than
    /// cores leaves the store's threads a core to wake up on instead of
    /// queueing behind the generator's; a generator that falls behind only
    /// makes the measured latency worse (open loop counts from when each
    /// append was due).
    #[arg(long, default_value_t = 2)]
    gen_threads: usize,
    /// Append mode, diagnostics: also print how many appends took longer
    /// than this many ms, in all (a share that pools across runs) and for
    /// every 250 ms of the measured window, to tell steady queueing from
    /// stalls (0: off).
    #[arg(long, default_value_t = 0)]
    slow_ms: u64,
    /// Append mode, diagnostics: run `benches/pause_probe.py` at real-time
    /// priority (`chrt -f 50`, so root) over the measured window and print
    /// how often and how long the machine stopped running it: pauses no
    /// thread of the guest can cause, which land on the store's latency
    /// as they are. Costs the probe's wake-ups (2,000/s).
    #[arg(long)]
    pause_probe: bool,
    /// Extra wa-store configuration (TOML tables), appended to the bench's.
    #[arg(long, default_value = "")]
    store_toml: String,
    /// Where the temp dirs go (default: the system temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Give the store a secondary (a wa-store process on this machine,
    /// following it over a real link), caught up before the run begins.
    #[arg(long)]
    secondary: bool,
    /// The store's durability level: `disk` or `replicated` (which needs
    /// --secondary to acknowledge anything).
    #[arg(long, default_value = "disk")]
    durability: String,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() {
    let args = Args::parse();
    // As the wa-store binary does (and, like it, runs on if refused, but
    // says so: the numbers are then not the binary's).
    if let Err(e) = wa_store::disable_transparent_huge_pages() {
        eprintln!(
            "warning: cannot turn transparent huge pages off ({e}); latencies will not be the binary's"
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.gen_threads.max(1))
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        match args.mode.as_str() {
            "append" => {
                println!(
                    "| engine | writers | offered/s | durable appends/s | cores busy | host steal % | p50 ms | p99 ms | p99.9 ms | max ms | appends per sync | clean stop s | loadavg before → after |"
                );
                println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
                for engine in &args.engines {
                    for &w in &args.writers {
                        append_run(&args, engine, w).await;
                    }
                }
            }
            "churn" => {
                println!(
                    "| engine | writers | recipients | messages | msgs/s | send→push p50 ms | p99 ms | never touched the engine | disk live | disk after stop | per 1M (live / stopped) | clean stop s | loadavg before → after |"
                );
                println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
                for engine in &args.engines {
                    for &w in &args.writers {
                        churn_run(&args, engine, w).await;
                    }
                }
            }
            other => {
                eprintln!("unknown --mode {other:?} (append or churn)");
                std::process::exit(64);
            }
        }
    });
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// A store running in this process.
struct Store {
    dir: tempfile::TempDir,
    addr: SocketAddr,
    metrics: Arc<wa_store::metrics::Metrics>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), wa_store::StoreError>>,
    /// The store's own runtime (`--store-threads`), if not the bench's.
    rt: Option<tokio::runtime::Runtime>,
    /// The secondary's process (`--secondary`).
    secondary: Option<tokio::process::Child>,
}

async fn start(args: &Args, engine: &str) -> Store {
    // The previous run's files (a clean stop writes the cache to the engine,
    // then the temp dir goes) are still being written back by the kernel;
    // left alone, that lands in this run as journal syncs of 100 ms and more.
    let _ = tokio::process::Command::new("sync").status().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let dir = match &args.dir {
        Some(d) => tempfile::tempdir_in(d).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    write_files(dir.path());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let secondary_addr = args.secondary.then(|| {
        let a = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut map = common::cluster::ClusterMap::single(addr, "localhost", [7; 16]);
        map.islands[0].secondary = Some(a);
        std::fs::write(dir.path().join("cluster.toml"), map.to_toml()).unwrap();
        a
    });
    let durability = format!("durability = \"{}\"\n", args.durability);
    let extra = "[mailbox]\nmax_items = 1000000000\nmax_bytes = \"1 TiB\"\n".to_string()
        + &args.store_toml.replace("\\n", "\n");
    let text = durability.clone() + &config_toml(dir.path(), &addr.to_string(), engine) + &extra;
    let config: wa_store::Config = toml::from_str(&text).unwrap();
    let shutdown = CancellationToken::new();
    let store =
        tokio::task::spawn_blocking(move || wa_store::Store::open(config).map_err(Box::new))
            .await
            .unwrap()
            .unwrap();
    let metrics = store.metrics();
    let serve = {
        let shutdown = shutdown.clone();
        async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            store.serve(listener, shutdown).await
        }
    };
    let (task, rt) = if args.store_threads == 0 {
        (tokio::spawn(serve), None)
    } else {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.store_threads)
            .thread_name("store")
            .enable_all()
            .build()
            .unwrap();
        (rt.spawn(serve), Some(rt))
    };
    let secondary = match secondary_addr {
        Some(a) => {
            let text = durability
                + &config_toml(dir.path(), &a.to_string(), engine)
                    .replace("/db\"", "/db-secondary\"")
                    .replace("store-t", "store-s")
                + &extra;
            let cfg = dir.path().join("secondary.toml");
            std::fs::write(&cfg, text).unwrap();
            Some(start_secondary(&cfg, &metrics).await)
        }
        None => None,
    };
    Store {
        dir,
        addr,
        metrics,
        shutdown,
        task,
        rt,
        secondary,
    }
}

/// Starts the wa-store binary as the secondary on `cfg` and waits until the
/// primary (whose `metrics` these are) has it caught up.
async fn start_secondary(
    cfg: &Path,
    metrics: &wa_store::metrics::Metrics,
) -> tokio::process::Child {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_wa-store"))
        .arg("--config")
        .arg(cfg)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let t = Instant::now();
    loop {
        if let Some(r) = metrics.replication.get()
            && r.status().1
        {
            return child;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the secondary did not catch up within a minute"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Store {
    /// Stops the store cleanly; returns its dir and how long the stop took
    /// (drain, write-back and final flush).
    async fn stop(mut self) -> (tempfile::TempDir, Duration) {
        let t0 = Instant::now();
        if let Some(mut c) = self.secondary.take() {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(600), self.task)
            .await
            .expect("store stops within ten minutes")
            .unwrap()
            .unwrap();
        if let Some(rt) = self.rt {
            rt.shutdown_background();
        }
        (self.dir, t0.elapsed())
    }
}

/// A link as the bench drives it: frames go through a writer task that
/// batches them before flushing; results are routed back by `req`.
#[derive(Clone)]
struct Edge {
    tx: mpsc::UnboundedSender<link_up::Kind>,
    waiters: Arc<Mutex<HashMap<u64, oneshot::Sender<AppendResult>>>>,
    next_req: Arc<AtomicU64>,
}

/// What a link's reader does with pushes: (session, seq, envelope).
type OnPush = Arc<dyn Fn(&Edge, u64, u64, common::proto::Envelope) + Send + Sync>;

impl Edge {
    async fn connect(addr: SocketAddr, dir: &Path, on_push: Option<OnPush>) -> Edge {
        let mut link = Link::open(addr, dir, &SECRET).await;
        match link.recv().await {
            Some(link_down::Kind::AuthOk(_)) => {}
            other => panic!("expected AuthOk, got {other:?}"),
        }
        let (reader, writer) = link.split();
        let (tx, rx) = mpsc::unbounded_channel();
        let edge = Edge {
            tx,
            waiters: Arc::default(),
            next_req: Arc::new(AtomicU64::new(1)),
        };
        tokio::spawn(write_loop(writer, rx));
        tokio::spawn(read_loop(reader, edge.clone(), on_push));
        edge
    }

    /// Sends an append and waits for its result.
    async fn append(&self, to: String, from: &str, id: [u8; 16], body: Bytes) -> AppendResult {
        let req = self.next_req.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiters.lock().unwrap().insert(req, tx);
        self.tx
            .send(link_up::Kind::Append(Append {
                req,
                to,
                envelope: Some(envelope(from, Bytes::copy_from_slice(&id), body)),
                epoch: 1,
                handoff: false,
                from_generation: 0,
            }))
            .expect("link writer runs");
        rx.await.expect("the store answers every append")
    }
}

async fn write_loop(mut w: LinkWriter, mut rx: mpsc::UnboundedReceiver<link_up::Kind>) {
    while let Some(f) = rx.recv().await {
        if w.queue(f).await.is_err() {
            return;
        }
        common::wire::let_others_queue().await;
        while let Ok(f) = rx.try_recv() {
            if w.queue(f).await.is_err() {
                return;
            }
        }
        if w.flush().await.is_err() {
            return;
        }
    }
}

async fn read_loop(mut r: LinkReader, edge: Edge, on_push: Option<OnPush>) {
    while let Ok(Some(frame)) = r.next().await {
        match frame {
            link_down::Kind::AppendResult(a) => {
                if let Some(tx) = edge.waiters.lock().unwrap().remove(&a.req) {
                    let _ = tx.send(a);
                }
            }
            link_down::Kind::Push(p) => {
                if let (Some(f), Some(e)) = (&on_push, p.envelope) {
                    f(&edge, p.session, p.seq, e);
                }
            }
            _ => {}
        }
    }
}

const WARM: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

fn id_for(writer: usize, n: u64) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&(writer as u64).to_be_bytes());
    id[8..].copy_from_slice(&n.to_be_bytes());
    id
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    f64::from(sorted[i]) / 1000.0
}

/// What one load task measured: latencies (µs, from when each append was
/// due), refusals, the slow ones as (when due, µs), and, open loop only, how
/// late each send went out and the time from the actual send.
type Measured = (Vec<u32>, u64, Vec<(Instant, u32)>, Vec<u32>, Vec<u32>);

fn micros(d: Duration) -> u32 {
    d.as_micros().min(u128::from(u32::MAX)) as u32
}

/// Closed loop: a task per writer, each sending its next append as soon as
/// the last was accepted.
fn closed_loop(
    args: &Args,
    edges: &[Edge],
    writers: usize,
    phase: &Arc<AtomicU8>,
    body: &Bytes,
) -> Vec<tokio::task::JoinHandle<Measured>> {
    let slow_us = args.slow_ms * 1000;
    (0..writers)
        .map(|w| {
            let edge = edges[w % edges.len()].clone();
            let phase = Arc::clone(phase);
            let body = body.clone();
            let to = format!("u{}", w % args.recipients);
            let from = format!("w{w}");
            tokio::spawn(async move {
                let (mut lat, mut slow, mut refused) = (Vec::new(), Vec::new(), 0);
                let mut n = 0u64;
                while phase.load(Ordering::Relaxed) != STOP {
                    n += 1;
                    let t0 = Instant::now();
                    let r = edge
                        .append(to.clone(), &from, id_for(w, n), body.clone())
                        .await;
                    let us = micros(t0.elapsed());
                    if r.code != 0 {
                        refused += 1;
                    } else if phase.load(Ordering::Relaxed) == MEASURE {
                        lat.push(us);
                        if slow_us > 0 && u64::from(us) > slow_us {
                            slow.push((t0, us));
                        }
                    }
                }
                (lat, refused, slow, Vec::new(), Vec::new())
            })
        })
        .collect()
}

/// The appends one open-loop link task sent.
struct Sends {
    /// Per writer (index into the link's writers): appends sent.
    sent: Vec<u64>,
    /// Per writer: (recipient, sender).
    names: Vec<(String, String)>,
    /// req -> (writer, when due, when sent)
    flight: HashMap<u64, (usize, Instant, Instant)>,
    next_req: u64,
}

impl Sends {
    /// The next append of writer `i` of `mine`, due at `due`.
    fn frame(&mut self, mine: &[usize], i: usize, due: Instant, body: &Bytes) -> link_up::Kind {
        self.sent[i] += 1;
        let req = self.next_req;
        self.next_req += 1;
        self.flight.insert(req, (i, due, Instant::now()));
        let (to, from) = &self.names[i];
        link_up::Kind::Append(Append {
            req,
            to: to.clone(),
            envelope: Some(envelope(
                from,
                Bytes::copy_from_slice(&id_for(mine[i], self.sent[i])),
                body.clone(),
            )),
            epoch: 1,
            handoff: false,
            from_generation: 0,
        })
    }
}

/// Open loop: the writers together offer `--rate` appends/s, each on a
/// fixed schedule (its first send spread over one period so that they do not
/// fire together), one append in flight per writer: an append that falls due
/// while its writer's last one is unanswered goes out when that answer comes,
/// and its latency still counts from when it was due.
///
/// One task per link drives all of the link's writers from one timer, and
/// its reader hands it the answers, rather than a task, a timer and a
/// oneshot per writer: the generator shares the store's two cores, and the
/// lighter it is the less of its own cost (CPU and queueing) it adds to the
/// store's latency. (An edge is on machines of its own.)
async fn open_loop(
    args: &Args,
    store: &Store,
    writers: usize,
    phase: &Arc<AtomicU8>,
    body: &Bytes,
) -> Vec<tokio::task::JoinHandle<Measured>> {
    let period = Duration::from_secs_f64(writers as f64 / args.rate as f64);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for l in 0..args.links {
        let mut link = Link::open(store.addr, store.dir.path(), &SECRET).await;
        match link.recv().await {
            Some(link_down::Kind::AuthOk(_)) => {}
            other => panic!("expected AuthOk, got {other:?}"),
        }
        let (mut reader, mut w) = link.split();
        // (req, code, when it came)
        let (answers_tx, mut answers) = mpsc::unbounded_channel::<(u64, u32, Instant)>();
        tokio::spawn(async move {
            while let Ok(Some(frame)) = reader.next().await {
                if let link_down::Kind::AppendResult(a) = frame {
                    let _ = answers_tx.send((a.req, a.code, Instant::now()));
                }
            }
        });
        // This link's writers, in the order their sends fall due.
        let mine: Vec<usize> = (l..writers).step_by(args.links).collect();
        let (phase, body, recipients) = (Arc::clone(phase), body.clone(), args.recipients);
        let slow_us = args.slow_ms * 1000;
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut late, mut from_send) = (Vec::new(), Vec::new(), Vec::new());
            let (mut slow, mut refused) = (Vec::new(), 0u64);
            let mut busy = vec![false; mine.len()];
            let mut waiting: Vec<std::collections::VecDeque<Instant>> =
                vec![Default::default(); mine.len()];
            let mut out = Sends {
                sent: vec![0; mine.len()],
                names: mine
                    .iter()
                    .map(|w| (format!("u{}", w % recipients), format!("w{w}")))
                    .collect(),
                flight: HashMap::new(),
                next_req: 1,
            };
            let (mut round, mut cursor) = (0u32, 0usize);
            let due_of = |round: u32, i: usize| {
                start + period.mul_f64(mine[i] as f64 / writers as f64) + period * round
            };
            loop {
                if phase.load(Ordering::Relaxed) == STOP {
                    break;
                }
                let next_due = due_of(round, cursor);
                tokio::select! {
                    biased;
                    Some(first) = answers.recv() => {
                        let mut a = Some(first);
                        while let Some((req, code, at)) = a.take().or_else(|| answers.try_recv().ok()) {
                            let Some((i, due, sent_at)) = out.flight.remove(&req) else { continue };
                            if code != 0 {
                                refused += 1;
                            } else if phase.load(Ordering::Relaxed) == MEASURE {
                                let us = micros(at.saturating_duration_since(due));
                                lat.push(us);
                                late.push(micros(sent_at.saturating_duration_since(due)));
                                from_send.push(micros(at.saturating_duration_since(sent_at)));
                                if slow_us > 0 && u64::from(us) > slow_us {
                                    slow.push((due, us));
                                }
                            }
                            busy[i] = false;
                            if let Some(d) = waiting[i].pop_front() {
                                busy[i] = true;
                                w.queue(out.frame(&mine, i, d, &body)).await.expect("the store reads its links");
                            }
                        }
                    }
                    () = tokio::time::sleep_until(next_due.into()) => {
                        let now = Instant::now();
                        loop {
                            let due = due_of(round, cursor);
                            if due > now {
                                break;
                            }
                            if busy[cursor] {
                                waiting[cursor].push_back(due);
                            } else {
                                busy[cursor] = true;
                                w.queue(out.frame(&mine, cursor, due, &body)).await.expect("the store reads its links");
                            }
                            cursor += 1;
                            if cursor == mine.len() {
                                (cursor, round) = (0, round + 1);
                            }
                        }
                    }
                }
                w.flush().await.expect("the store reads its links");
            }
            (lat, refused, slow, late, from_send)
        }));
    }
    tasks
}

async fn append_run(args: &Args, engine: &str, writers: usize) {
    let load_before = loadavg();
    let store = start(args, engine).await;
    let phase = Arc::new(AtomicU8::new(WARM));
    let body = Bytes::from(vec![b'x'; args.body]);
    let mut edges = Vec::new();
    let tasks = if args.rate > 0 {
        open_loop(args, &store, writers, &phase, &body).await
    } else {
        for _ in 0..args.links {
            edges.push(Edge::connect(store.addr, store.dir.path(), None).await);
        }
        closed_loop(args, &edges, writers, &phase, &body)
    };
    tokio::time::sleep(Duration::from_secs(args.warmup)).await;
    phase.store(MEASURE, Ordering::Relaxed);
    let t0 = Instant::now();
    let cpu0 = cpu_time();
    let steal0 = steal_time();
    let probe = args.pause_probe.then(|| start_pause_probe(args.secs));
    let worst_lag = Arc::new(AtomicU64::new(0));
    let lag = {
        let m = Arc::clone(&store.metrics);
        let worst = Arc::clone(&worst_lag);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
                if let Some(r) = m.replication.get() {
                    worst.fetch_max(r.status().2, Ordering::Relaxed);
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(args.secs)).await;
    phase.store(STOP, Ordering::Relaxed);
    let measured = t0.elapsed();
    lag.abort();
    if let Some(probe) = probe {
        report_pause_probe(probe).await;
    }
    let cores = (cpu_time() - cpu0).as_secs_f64() / measured.as_secs_f64();
    let steal = steal_time().zip(steal0).map(|(b, a)| {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        100.0 * (b - a).as_secs_f64() / (measured.as_secs_f64() * cpus as f64)
    });
    let load_after = loadavg();
    let mut all = Vec::new();
    let mut refused = 0;
    let mut slow = Vec::new();
    let mut late = Vec::new();
    let mut fsend = Vec::new();
    for t in tasks {
        let (lat, r, s, l, fs) = t.await.unwrap();
        fsend.extend(fs);
        all.extend(lat);
        refused += r;
        slow.extend(s);
        late.extend(l);
    }
    if args.rate > 0 {
        late.sort_unstable();
        fsend.sort_unstable();
        eprintln!(
            "from the actual send to Accepted (the generator's lateness taken out): p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms",
            percentile(&fsend, 0.5),
            percentile(&fsend, 0.99),
            percentile(&fsend, 0.999)
        );
        eprintln!(
            "send lateness (the generator's timer and task queue): p50 {:.2} ms, p99 {:.2} ms",
            percentile(&late, 0.50),
            percentile(&late, 0.99)
        );
    }
    if args.slow_ms > 0 {
        // The share, so that runs can be pooled: under 1 % over all runs is a
        // p99 under the threshold over all their appends.
        eprintln!(
            "slower than {} ms: {} of {} measured appends ({:.3} %)",
            args.slow_ms,
            slow.len(),
            all.len(),
            100.0 * slow.len() as f64 / all.len().max(1) as f64
        );
        let mut buckets = vec![(0u32, 0u32); (measured.as_millis() / 250 + 1) as usize];
        for (at, us) in slow {
            let i = (at.saturating_duration_since(t0).as_millis() / 250) as usize;
            if let Some(b) = buckets.get_mut(i) {
                b.0 += 1;
                b.1 = b.1.max(us / 1000);
            }
        }
        let line: Vec<String> = buckets
            .iter()
            .enumerate()
            .filter(|(_, b)| b.0 > 0)
            .map(|(i, b)| format!("{:.2}s:{}(max {}ms)", i as f64 / 4.0, b.0, b.1))
            .collect();
        // (`Instant`'s Debug form is its CLOCK_MONOTONIC reading, the clock
        // `perf record -k CLOCK_MONOTONIC` stamps events with.)
        eprintln!(
            "slower than {} ms, per 250 ms from {t0:?}: {}",
            args.slow_ms,
            line.join(" ")
        );
    }
    drop(edges);
    let m = Arc::clone(&store.metrics);
    eprintln!(
        "store: {} written back, {} straight to the engine (bypass or memory pressure)",
        m.written_back.load(Ordering::Relaxed),
        m.bypassed.load(Ordering::Relaxed)
    );
    if let Some(r) = m.replication.get() {
        let st = &r.stats;
        eprintln!(
            "replication: lag at most {} records (sampled every 20 ms); records committed replicated {}, disk {}, refused {}",
            worst_lag.load(Ordering::Relaxed),
            st.records_replicated.load(Ordering::Relaxed),
            st.records_disk.load(Ordering::Relaxed),
            st.records_refused.load(Ordering::Relaxed)
        );
    }
    let per_sync = m.appends.load(Ordering::Relaxed) as f64
        / m.journal_syncs.load(Ordering::Relaxed).max(1) as f64;
    let (_dir, stop) = store.stop().await;
    all.sort_unstable();
    println!(
        "| {engine} | {writers} | {} | {:.0} | {cores:.2} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} | {:.1} | {load_before} → {load_after} |{}",
        if args.rate > 0 {
            args.rate.to_string()
        } else {
            "closed loop".into()
        },
        all.len() as f64 / measured.as_secs_f64(),
        steal.map_or_else(|| "?".into(), |s| format!("{s:.1}")),
        percentile(&all, 0.50),
        percentile(&all, 0.99),
        percentile(&all, 0.999),
        all.last().map_or(f64::NAN, |&m| f64::from(m) / 1000.0),
        per_sync,
        stop.as_secs_f64(),
        if refused > 0 {
            format!(" {refused} refused")
        } else {
            String::new()
        }
    );
}

/// CPU time (user + system) this process used so far: the store and the
/// load generator together (zero where /proc is missing).
fn cpu_time() -> Duration {
    // /proc/self/stat fields 14 and 15 (after the parenthesised name), in
    // clock ticks of 1/100 s. Linux only, like /proc/loadavg above.
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    Duration::from_millis(f.iter().sum::<u64>() * 10)
}

/// Time the hypervisor ran something else while this machine's vCPUs
/// wanted to run ("steal" in /proc/stat, summed over all CPUs, in clock
/// ticks of 1/100 s); `None` where /proc/stat is missing or reports none.
/// A share of a few per cent, taken in slices of milliseconds, is the VM
/// pausing under the store (docs/BENCHMARKS.md).
fn steal_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: u64 = cpu.split_whitespace().nth(8)?.parse().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// `pause_probe.py` over the next `secs` seconds, at real-time priority.
fn start_pause_probe(secs: u64) -> std::io::Result<tokio::process::Child> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/pause_probe.py");
    tokio::process::Command::new("chrt")
        .args(["-f", "50", "python3", script, &secs.to_string()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
}

/// Waits for the probe and prints what it saw (lines of "<s> <ms>").
async fn report_pause_probe(probe: std::io::Result<tokio::process::Child>) {
    let out = match probe {
        Ok(child) => child.wait_with_output().await,
        Err(e) => Err(e),
    };
    match out {
        Ok(out) if out.status.success() => {
            let ms: Vec<f64> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
                .collect();
            eprintln!(
                "pause probe (real-time thread, 0.5 ms sleeps): {} oversleeps over 2 ms, {} over 5 ms, the longest {:.1} ms",
                ms.len(),
                ms.iter().filter(|&&m| m > 5.0).count(),
                ms.iter().copied().fold(0.0, f64::max)
            );
        }
        Ok(out) => eprintln!(
            "pause probe failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => eprintln!("pause probe could not run (chrt and python3 needed): {e}"),
    }
}

/// Bytes the files under `dir` take on disk (allocated blocks).
fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    for e in entries.flatten() {
        let Ok(m) = e.metadata() else { continue };
        if m.is_dir() {
            total += disk_usage(&e.path());
        } else {
            total += m.blocks() * 512;
        }
    }
    total
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

async fn churn_run(args: &Args, engine: &str, writers: usize) {
    let load_before = loadavg();
    let store = start(args, engine).await;
    let db = store.dir.path().join("db");
    let started = Instant::now();
    let delivered = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::<u32>::new()));
    let on_push: OnPush = {
        let delivered = Arc::clone(&delivered);
        let latencies = Arc::clone(&latencies);
        Arc::new(move |edge, session, seq, e| {
            if let Some(Content::Body(b)) = &e.content
                && b.len() >= 8
            {
                let sent = u64::from_be_bytes(b[..8].try_into().unwrap());
                let now = started.elapsed().as_micros() as u64;
                latencies
                    .lock()
                    .unwrap()
                    .push(now.saturating_sub(sent).min(u64::from(u32::MAX)) as u32);
            }
            delivered.fetch_add(1, Ordering::Relaxed);
            let _ = edge.tx.send(link_up::Kind::Ack(LinkAck {
                session,
                user: format!("u{}", session - 1),
                seqs: vec![seq],
            }));
        })
    };
    let mut edges = Vec::new();
    for _ in 0..args.links {
        edges.push(Edge::connect(store.addr, store.dir.path(), Some(Arc::clone(&on_push))).await);
    }
    for r in 0..args.recipients {
        edges[r % edges.len()]
            .tx
            .send(link_up::Kind::Attach(Attach {
                epoch: 1,
                session: r as u64 + 1,
                user: format!("u{r}"),
                device: 1,
                generation: 1,
            }))
            .unwrap();
    }
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicU8::new(WARM));
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..writers {
        let edge = edges[w % edges.len()].clone();
        let (sent, stop) = (Arc::clone(&sent), Arc::clone(&stop));
        let (limit, body_len, recipients) = (args.messages, args.body.max(8), args.recipients);
        let from = format!("w{w}");
        tasks.spawn(async move {
            let mut n = 0u64;
            while stop.load(Ordering::Relaxed) != STOP
                && sent.fetch_add(1, Ordering::Relaxed) < limit
            {
                n += 1;
                let mut body = vec![b'x'; body_len];
                body[..8].copy_from_slice(&(started.elapsed().as_micros() as u64).to_be_bytes());
                let to = format!("u{}", (w + n as usize) % recipients);
                let r = edge
                    .append(to, &from, id_for(w, n), Bytes::from(body))
                    .await;
                assert_eq!(r.code, 0, "append refused: {r:?}");
            }
        });
    }
    let cap = tokio::time::sleep(Duration::from_secs(args.max_secs));
    tokio::pin!(cap);
    let mut capped = false;
    loop {
        tokio::select! {
            r = tasks.join_next() => match r {
                Some(r) => r.unwrap(),
                None => break,
            },
            () = &mut cap, if !capped => {
                stop.store(STOP, Ordering::Relaxed);
                capped = true;
            }
        }
    }
    let appended = sent.load(Ordering::Relaxed).min(args.messages);
    // Every acknowledged append gets pushed; wait (bounded) for the pushes
    // and their acks to go through.
    let drain_until = Instant::now() + Duration::from_secs(30);
    while delivered.load(Ordering::Relaxed) < appended && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    let went = delivered.load(Ordering::Relaxed);
    let load_after = loadavg();
    let live = disk_usage(&db);
    drop(edges);
    let hit = store.metrics.cache_hit_ratio();
    let (dir, stop_took) = store.stop().await;
    let stopped = disk_usage(&dir.path().join("db"));
    let mut lat = std::mem::take(&mut *latencies.lock().unwrap());
    lat.sort_unstable();
    let per_m = |b: u64| b as f64 * 1e6 / went.max(1) as f64;
    println!(
        "| {engine} | {writers} | {} | {went} | {:.0} | {:.2} | {:.2} | {:.2}% | {} | {} | {} / {} | {:.1} | {load_before} → {load_after} |",
        args.recipients,
        went as f64 / elapsed.as_secs_f64(),
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
        hit * 100.0,
        mib(live),
        mib(stopped),
        mib(per_m(live) as u64),
        mib(per_m(stopped) as u64),
        stop_took.as_secs_f64(),
    );
}
