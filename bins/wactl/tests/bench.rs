//! `wactl bench` against a real deployment (`wactl up`: wa-store and
//! wa-chat processes over real sockets): every scenario at a few sessions,
//! over TLS/TCP and QUIC, comes out clean; with the test-only fault armed
//! (`WACTL_BENCH_FAULT`: one sender skips a message, sends one twice and
//! swaps two) every scenario reports exactly that loss, duplicate and
//! reordering; and sessions spread over worker processes are counted as
//! one run. Needs the workspace's binaries (`cargo build --workspace`).

use serde_json::Value;
use tokio::process::Command;

mod support;

use support::{PATIENCE, Proc, WACTL, exits_zero, free_port, sigterm, spawn, wait_line};

/// A `wactl up` deployment in a temp dir, stopped when dropped (SIGTERM).
struct Up {
    _tmp: tempfile::TempDir,
    dir: String,
    up: Proc,
}

impl Up {
    async fn start() -> Up {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("dev").to_str().unwrap().to_string();
        let (link, port) = (free_port().to_string(), free_port().to_string());
        let (up, mut out) = spawn(&["up", "--dir", &dir, "--link-port", &link, "--port", &port]);
        wait_line(&mut out, "READY from wactl up", |l| {
            l.starts_with("READY wactl-up ")
        })
        .await;
        // Keep draining its output so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = out.next_line().await {} });
        Up { _tmp: tmp, dir, up }
    }

    /// Runs `wactl bench ARGS`, with the fault armed or not; its one JSON line.
    async fn bench(&self, args: &[&str], fault: bool) -> Value {
        let mut cmd = Command::new(WACTL);
        cmd.arg("bench")
            .args(args)
            .args(["--dir", &self.dir, "--drain-timeout", "20s"]);
        if fault {
            cmd.env("WACTL_BENCH_FAULT", "1");
        } else {
            cmd.env_remove("WACTL_BENCH_FAULT");
        }
        let out = tokio::time::timeout(PATIENCE, cmd.output())
            .await
            .unwrap_or_else(|_| panic!("wactl bench {args:?} took longer than {PATIENCE:?}"))
            .unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert!(
            out.status.success(),
            "wactl bench {args:?}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 1, "exactly one line on stdout: {stdout}");
        serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("{e}: {}", lines[0]))
    }

    async fn stop(mut self) {
        sigterm(&self.up);
        exits_zero(&mut self.up, "wactl up").await;
    }
}

/// Each scenario's arguments at CI size (4 sessions: 2 pairs).
fn scenario(name: &str) -> Vec<&str> {
    let mut a = vec![name, "--sessions", "4"];
    a.extend_from_slice(match name {
        "idle" => &["--duration", "1s"][..],
        "pairs" => &["--rate", "200", "--duration", "1s"][..],
        "offline" => &["--messages", "40"][..],
        _ => &[][..],
    });
    a
}

const SCENARIOS: [&str; 5] = ["login", "idle", "pairs", "offline", "storm"];

fn n(v: &Value, path: &str) -> f64 {
    let mut at = v;
    for k in path.split('.') {
        at = &at[k];
    }
    at.as_f64()
        .unwrap_or_else(|| panic!("{path} is not a number in {v}"))
}

fn assert_faults(v: &Value, lost: f64, duplicated: f64, reordered: f64) {
    assert_eq!(
        (n(v, "lost"), n(v, "duplicated"), n(v, "reordered")),
        (lost, duplicated, reordered),
        "{v}"
    );
}

/// What every clean summary shows, and each scenario's own numbers.
fn assert_clean(name: &str, transport: &str, sessions: f64, v: &Value) {
    assert_eq!(v["scenario"], name, "{v}");
    assert_eq!(v["transport"], transport, "{v}");
    assert_faults(v, 0.0, 0.0, 0.0);
    assert_eq!(n(v, "redelivered"), 0.0, "{v}");
    assert!(n(v, "messages.received") > 0.0, "{v}");
    assert_eq!(n(v, "messages.received"), n(v, "messages.expected"), "{v}");
    // Measured from /proc: the servers are there and the numbers too.
    assert!(v["servers"].as_array().unwrap().len() >= 2, "{v}");
    assert!(n(v, "login.server_cpu_us_per_login") >= 0.0, "{v}");
    assert!(n(v, "login.bench_cpu_us_per_login") >= 0.0, "{v}");
    assert!((0.0..=1.0).contains(&n(v, "steal")), "{v}");
    // (Offline: only the senders log in before the drain.)
    let first = if name == "offline" {
        sessions / 2.0
    } else {
        sessions
    };
    assert_eq!(n(v, "login.count"), first, "{v}");
    match name {
        "idle" => assert!(n(v, "idle.seconds") >= 1.0, "{v}"),
        "pairs" => {
            let step = &v["steps"][0];
            assert!(n(step, "delivered") >= 150.0, "{v}");
            assert_eq!(n(step, "lost") + n(step, "behind"), 0.0, "{v}");
            // (Whether p99 met --p99-limit depends on the machine's load.)
            assert!(n(step, "server_cpu_us_per_message") > 0.0, "{v}");
        }
        "offline" => {
            assert_eq!(n(v, "offline.queued"), 40.0, "{v}");
            assert_eq!(n(v, "offline.drained"), 40.0, "{v}");
        }
        "storm" => {
            assert_eq!(v["storm"]["all_back"], true, "{v}");
            assert_eq!(n(v, "storm.logins"), sessions, "{v}");
            // New users log in with full handshakes; every reconnect
            // offers the ticket its session kept, as a phone does.
            assert_eq!(n(v, "login.resumed"), 0.0, "{v}");
            assert!(n(v, "storm.resumed") >= sessions, "{v}");
        }
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_runs_clean_over_tcp_and_quic() {
    let up = Up::start().await;
    for transport in ["tcp", "quic"] {
        for name in SCENARIOS {
            let mut args = scenario(name);
            args.extend(["--transport", transport]);
            let v = up.bench(&args, false).await;
            assert_clean(name, transport, 4.0, &v);
        }
    }
    up.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_reports_the_injected_loss_duplicate_and_reordering() {
    let up = Up::start().await;
    for name in SCENARIOS {
        let v = up.bench(&scenario(name), true).await;
        assert_faults(&v, 1.0, 1.0, 1.0);
    }
    let mut quic = scenario("pairs");
    quic.extend(["--transport", "quic", "--sweep", "--p99-limit", "10s"]);
    let v = up.bench(&quic, true).await;
    assert_faults(&v, 1.0, 1.0, 1.0);
    // A faulty step does not pass, and the sweep stops there.
    assert_eq!(v["steps"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["steps"][0]["pass"], false, "{v}");
    assert_eq!(v["max_rate"], Value::Null, "{v}");
    up.stop().await;
}

/// Sessions spread over worker processes (what runs past ~19,000
/// sessions) add up to one run, faults and all; a sweep climbs by half
/// until its ceiling (a p99 limit no debug build on shared cores misses:
/// only loss could stop it early).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_and_a_sweep_add_up() {
    let up = Up::start().await;
    let v = up
        .bench(
            &[
                "pairs",
                "--sessions",
                "8",
                "--workers",
                "2",
                "--rate",
                "200",
                "--duration",
                "1s",
            ],
            true,
        )
        .await;
    assert_eq!(n(&v, "workers"), 2.0, "{v}");
    assert_eq!(n(&v, "login.count"), 8.0, "{v}");
    assert_faults(&v, 1.0, 1.0, 1.0);
    let v = up
        .bench(
            &[
                "storm",
                "--sessions",
                "8",
                "--workers",
                "2",
                "--transport",
                "quic",
            ],
            false,
        )
        .await;
    assert_clean("storm", "quic", 8.0, &v);

    let v = up
        .bench(
            &[
                "pairs",
                "--sessions",
                "4",
                "--sweep",
                "--rate",
                "100",
                "--max-rate",
                "300",
                "--duration",
                "1s",
                "--p99-limit",
                "10s",
            ],
            false,
        )
        .await;
    let steps = v["steps"].as_array().unwrap();
    let rates: Vec<f64> = steps.iter().map(|s| n(s, "rate")).collect();
    assert_eq!(rates, vec![100.0, 150.0, 225.0], "{v}");
    assert_eq!(n(&v, "max_rate"), 225.0, "{v}");
    up.stop().await;
}
