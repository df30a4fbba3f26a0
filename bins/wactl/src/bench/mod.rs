//! `wactl bench`: the coordinator. It finds the server processes of a
//! `wactl up` deployment, starts the worker processes (itself again, with
//! `--worker-of`), and at every phase boundary, when all workers have
//! reported, samples the servers', its own and the host's counters in
//! /proc before letting the workers go on. The summary is one JSON line.

mod procfs;
mod session;
mod stats;
mod summary;
mod tickets;
mod worker;

use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

use crate::cli::BenchArgs;
use procfs::{HostSample, Proc, ProcSample};
use worker::{Line, Report};

/// Sessions per worker process by default: below the ~19,000 sockets one
/// process may hold (20,000 open files), with room for the rest.
const SESSIONS_PER_WORKER: usize = 16_000;
/// `pairs --sweep`: each step's rate over the last.
const SWEEP_FACTOR: f64 = 1.5;
/// How often server memory is sampled while a phase runs (for peaks).
const PEAK_EVERY: Duration = Duration::from_millis(250);

pub(crate) async fn run(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    if let Some(w) = &args.worker_of {
        return worker::run(args, worker::WorkerId::parse(w)?).await;
    }
    if args.sessions < 2 || !args.sessions.is_multiple_of(2) {
        bail!("--sessions must be an even number, at least 2 (pairs of sender and receiver)");
    }
    if args.body < 16 {
        bail!("--body must be at least 16 bytes (the message number and its send time)");
    }
    if args.rate.is_nan() || args.rate <= 0.0 {
        bail!("--rate must be more than 0");
    }
    let pairs = args.sessions / 2;
    let workers = match args.workers {
        0 => args.sessions.div_ceil(SESSIONS_PER_WORKER),
        w => w,
    };
    if workers > pairs {
        bail!("--workers {workers} is more than the {pairs} pairs to share");
    }
    let servers = procfs::servers(&args.dir.dir, &args.servers)?;
    if servers.is_empty() {
        bail!(
            "no running {} in {}/run (start the deployment with `wactl up --dir {}`)",
            args.servers.join(" or "),
            args.dir.dir.display(),
            args.dir.dir.display()
        );
    }
    let run_id = format!("{:08x}", rand::random::<u32>());
    let exe = std::env::current_exe().context("cannot find this program to run workers")?;
    let mut children = Vec::new();
    let (tx, mut rx) = mpsc::channel::<(usize, anyhow::Result<Line>)>(1024);
    for i in 0..workers {
        let mut child = Command::new(&exe)
            .args(std::env::args_os().skip(1))
            .arg("--worker-of")
            .arg(format!("{i}/{workers}/{run_id}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start worker {} ({})", i, exe.display()))?;
        let out = child.stdout.take().expect("piped");
        let stdin = child.stdin.take().expect("piped");
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(out).lines();
            loop {
                let line = match lines.next_line().await {
                    Ok(Some(l)) => serde_json::from_str::<Line>(&l)
                        .with_context(|| format!("worker {i} said {l:?}")),
                    Ok(None) => Err(anyhow::anyhow!("worker {i} ended early")),
                    Err(e) => Err(e.into()),
                };
                // (After its last report a worker just exits.)
                let end = match &line {
                    Ok(Line::At { phase, .. }) => phase == "done",
                    Ok(Line::Progress { .. }) => false,
                    Err(_) => true,
                };
                if tx.send((i, line)).await.is_err() || end {
                    return;
                }
            }
        });
        children.push(Worker { child, stdin });
    }
    drop(tx);
    let mut bench_procs: Vec<Proc> = vec![Proc {
        name: "bench".into(),
        pid: std::process::id(),
    }];
    bench_procs.extend(children.iter().filter_map(|c| {
        c.child.id().map(|pid| Proc {
            name: "bench-worker".into(),
            pid,
        })
    }));

    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} {elapsed}")
            .expect("a valid template"),
    );
    let mut phases: Vec<Phase> = Vec::new();
    let mut progress = vec![(0u64, 0u64); workers];
    let mut arrived: Vec<Option<(String, Report)>> = vec![None; workers];
    let mut peak = 0u64;
    let mut last_peak = Instant::now();
    let mut rate = args.rate;
    let mut phase_name = "ready".to_string();
    bar.set_message(phase_name.clone());
    let outcome: anyhow::Result<()> = async {
        loop {
            let Some((i, line)) = rx.recv().await else {
                bail!("the workers went away");
            };
            match line? {
                Line::Progress { done, goal } => {
                    progress[i] = (done, goal);
                    bar.set_length(progress.iter().map(|p| p.1).sum());
                    bar.set_position(progress.iter().map(|p| p.0).sum());
                    if last_peak.elapsed() >= PEAK_EVERY {
                        peak = peak.max(rss(&servers));
                        last_peak = Instant::now();
                    }
                }
                Line::At { phase, report } => {
                    arrived[i] = Some((phase, *report));
                    if arrived.iter().any(Option::is_none) {
                        continue;
                    }
                    let all: Vec<(String, Report)> = arrived
                        .iter_mut()
                        .map(|a| a.take().expect("all arrived"))
                        .collect();
                    let name = all[0].0.clone();
                    if all.iter().any(|(p, _)| *p != name) {
                        bail!("the workers disagree about the phase: {all:?}");
                    }
                    let mut merged = Report {
                        complete: true,
                        ..Report::default()
                    };
                    for (_, r) in &all {
                        merged.add(r);
                    }
                    let snap = snapshot(&servers, &bench_procs);
                    peak = peak.max(snap.servers.iter().map(|s| s.rss).sum());
                    let mut phase = Phase {
                        name: name.clone(),
                        snap,
                        report: merged,
                        rate: None,
                        peak_rss: std::mem::take(&mut peak),
                    };
                    let mut go = phase.name != "done";
                    if phase.name == "step" {
                        phase.rate = Some(rate);
                        let step_ok = summary::step_passes(&phases, &phase, args.p99_limit);
                        rate *= SWEEP_FACTOR;
                        go = args.sweep && step_ok && rate <= args.max_rate;
                    }
                    if phase.name == "connected" && !phase.report.complete {
                        eprintln!(
                            "wactl bench: only {} of {} sessions logged in within {}",
                            phase.report.connected,
                            phase.report.sessions,
                            humantime::format_duration(args.connect_timeout)
                        );
                        go = false;
                    }
                    let done = phase.name == "done";
                    phases.push(phase);
                    if done {
                        return Ok(());
                    }
                    let word: &[u8] = if go { b"go\n" } else { b"stop\n" };
                    for c in &mut children {
                        c.stdin
                            .write_all(word)
                            .await
                            .context("cannot reach a worker")?;
                        c.stdin.flush().await?;
                    }
                    phase_name = name;
                    bar.set_message(phase_name.clone());
                    progress.iter_mut().for_each(|p| *p = (0, 0));
                    bar.set_length(0);
                    bar.set_position(0);
                    last_peak = Instant::now();
                }
            }
        }
    }
    .await;
    bar.finish_and_clear();
    for mut c in children {
        let _ = tokio::time::timeout(Duration::from_secs(10), c.child.wait()).await;
    }
    outcome?;
    let line = summary::summarize(args, workers, &servers, &phases)?;
    println!("{line}");
    if phases
        .iter()
        .any(|p| p.name == "connected" && !p.report.complete)
    {
        bail!("not every session logged in");
    }
    Ok(ExitCode::SUCCESS)
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
}

/// Counters at one phase boundary.
#[derive(Clone, Debug)]
pub(crate) struct Snapshot {
    pub(crate) at: Instant,
    pub(crate) servers: Vec<ProcSample>,
    /// CPU seconds of the bench's own processes.
    pub(crate) bench_cpu_s: f64,
    pub(crate) host: HostSample,
}

/// The end of one phase, over all workers.
#[derive(Debug)]
pub(crate) struct Phase {
    pub(crate) name: String,
    pub(crate) snap: Snapshot,
    pub(crate) report: Report,
    /// `step`: the rate it was run at.
    pub(crate) rate: Option<f64>,
    /// The highest total server RSS seen during the phase.
    pub(crate) peak_rss: u64,
}

fn snapshot(servers: &[Proc], bench: &[Proc]) -> Snapshot {
    Snapshot {
        at: Instant::now(),
        servers: servers
            .iter()
            .map(|p| procfs::sample(p.pid).unwrap_or_default())
            .collect(),
        bench_cpu_s: bench
            .iter()
            .filter_map(|p| procfs::sample(p.pid))
            .map(|s| s.cpu_s)
            .sum(),
        host: procfs::host(),
    }
}

fn rss(servers: &[Proc]) -> u64 {
    servers
        .iter()
        .filter_map(|p| procfs::sample(p.pid))
        .map(|s| s.rss)
        .sum()
}
