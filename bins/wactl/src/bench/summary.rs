//! The one JSON line `wactl bench` prints: from the phases' reports and the
//! /proc samples at their edges, the cost per unit of work (CPU per login,
//! per message, RSS per session), rates, latencies and the fault counts.

use std::time::Duration;

use serde_json::{Value, json};

use super::procfs::{self, Proc};
use super::stats::Hist;
use super::{Phase, Snapshot};
use crate::cli::{BenchArgs, BenchTransport, Scenario};

/// What happened between two phase boundaries.
struct Window {
    secs: f64,
    server_cpu_s: f64,
    bench_cpu_s: f64,
    steal: f64,
}

fn window(a: &Snapshot, b: &Snapshot) -> Window {
    Window {
        secs: b.at.duration_since(a.at).as_secs_f64(),
        server_cpu_s: cpu(b) - cpu(a),
        bench_cpu_s: b.bench_cpu_s - a.bench_cpu_s,
        steal: procfs::steal(a.host, b.host),
    }
}

fn cpu(s: &Snapshot) -> f64 {
    s.servers.iter().map(|p| p.cpu_s).sum()
}

fn rss(s: &Snapshot) -> u64 {
    s.servers.iter().map(|p| p.rss).sum()
}

/// Microseconds of `cpu_s` per unit (`null` for no units).
fn per(cpu_s: f64, units: u64) -> Value {
    if units == 0 {
        Value::Null
    } else {
        json!(round(cpu_s * 1e6 / units as f64))
    }
}

fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn latency(h: &Hist) -> Value {
    json!({
        "count": h.count(),
        "p50_ms": round(h.quantile_ms(0.5)),
        "p99_ms": round(h.quantile_ms(0.99)),
        "max_ms": round(h.max_ms()),
    })
}

/// Whether a `pairs` step met the bar: p99 within `limit`, nothing lost,
/// duplicated or reordered, and the bench kept up with its own schedule.
pub(super) fn step_passes(before: &[Phase], step: &Phase, limit: Duration) -> bool {
    let Some(prev) = before.last() else {
        return false;
    };
    let (a, b) = (&prev.report, &step.report);
    let lost = b.lost().saturating_sub(a.lost());
    step.report.complete
        && lost == 0
        && b.duplicated == a.duplicated
        && b.reordered == a.reordered
        && b.behind == a.behind
        && b.latency.quantile_ms(0.99) <= limit.as_secs_f64() * 1000.0
}

pub(super) fn summarize(
    args: &BenchArgs,
    workers: usize,
    servers: &[Proc],
    phases: &[Phase],
) -> anyhow::Result<String> {
    let find = |name: &str| phases.iter().find(|p| p.name == name);
    let (Some(ready), Some(last)) = (find("ready"), phases.last()) else {
        anyhow::bail!("the run ended before it began");
    };
    let end = if last.name == "done" && phases.len() > 1 {
        &phases[phases.len() - 2]
    } else {
        last
    };
    let total = &last.report;
    let mut all_latency = Hist::default();
    for p in phases {
        all_latency.merge(&p.report.latency);
    }
    let whole = window(&ready.snap, &end.snap);
    let mut out = json!({
        "scenario": format!("{:?}", args.scenario).to_lowercase(),
        "transport": match args.transport { BenchTransport::Tcp => "tcp", BenchTransport::Quic => "quic" },
        "sessions": args.sessions,
        "workers": workers,
        "lost": total.lost(),
        "duplicated": total.duplicated,
        "reordered": total.reordered,
        "redelivered": total.redelivered,
        "messages": {
            "expected": total.expected,
            "sent": total.sent,
            "unsent": total.unsent,
            "accepted": total.accepted,
            "rejected": total.rejected,
            "received": total.received,
            "receipts": total.receipts,
            "latency": latency(&all_latency),
        },
        "seconds": round(whole.secs),
        "steal": round(whole.steal),
        "bench_cpu_s": round(whole.bench_cpu_s),
        "server_cpu_s": round(whole.server_cpu_s),
        "servers": servers.iter().enumerate().map(|(i, p)| json!({
            "name": p.name,
            "pid": p.pid,
            "cpu_s": round(end.snap.servers[i].cpu_s - ready.snap.servers[i].cpu_s),
            "rss_start": ready.snap.servers[i].rss,
            "rss_end": end.snap.servers[i].rss,
        })).collect::<Vec<_>>(),
        "disconnects": total.disconnects,
    });
    if let Some(c) = find("connected") {
        let w = window(&ready.snap, &c.snap);
        let logins = c.report.logins;
        let connected = c.report.connected;
        out["login"] = json!({
            "count": logins,
            "all_in": c.report.complete,
            "per_s": if w.secs > 0.0 { round(logins as f64 / w.secs) } else { 0.0 },
            "latency": latency(&c.report.login_latency),
            "failed": c.report.failed,
            "refused": c.report.refused,
            "refused_retry_after": c.report.refused_retry_after,
            "resumed": c.report.resumed,
            "server_cpu_us_per_login": per(w.server_cpu_s, logins),
            "bench_cpu_us_per_login": per(w.bench_cpu_s, logins),
            "steal": round(w.steal),
        });
        let grown = rss(&c.snap).saturating_sub(rss(&ready.snap));
        out["server_rss_per_session"] = json!(grown.checked_div(connected));
        // Each server's share of it, so that the edge's bytes per session
        // are told apart from the home's.
        let pairs = c.snap.servers.iter().zip(&ready.snap.servers);
        for (i, (at, before)) in pairs.enumerate() {
            let grown = at.rss.saturating_sub(before.rss);
            out["servers"][i]["rss_per_session"] = json!(grown.checked_div(connected));
        }
    }
    match args.scenario {
        Scenario::Login => {}
        Scenario::Idle => {
            if let (Some(c), Some(i)) = (find("connected"), find("idled")) {
                let w = window(&c.snap, &i.snap);
                out["idle"] = json!({
                    "seconds": round(w.secs),
                    "server_cpu_share": round(w.server_cpu_s / w.secs.max(1e-9) * 1000.0) / 1000.0,
                    "bench_cpu_share": round(w.bench_cpu_s / w.secs.max(1e-9) * 1000.0) / 1000.0,
                    "server_rss_end": rss(&i.snap),
                    "steal": round(w.steal),
                    "disconnects": i.report.disconnects - c.report.disconnects,
                });
            }
        }
        Scenario::Pairs => {
            let mut steps = Vec::new();
            let mut best: Option<f64> = None;
            for (k, p) in phases.iter().enumerate().filter(|(_, p)| p.name == "step") {
                let prev = &phases[k - 1];
                let (a, b) = (&prev.report, &p.report);
                let w = window(&prev.snap, &p.snap);
                let delivered = b.received - a.received;
                let pass = step_passes(&phases[..k], p, args.p99_limit);
                let target = p.rate.unwrap_or(0.0);
                if pass {
                    best = Some(best.map_or(target, |x: f64| x.max(target)));
                }
                steps.push(json!({
                    "rate": round(target),
                    "achieved_per_s": round(delivered as f64 / args.duration.as_secs_f64()),
                    "delivered": delivered,
                    "lost": b.lost().saturating_sub(a.lost()),
                    "duplicated": b.duplicated - a.duplicated,
                    "reordered": b.reordered - a.reordered,
                    "redelivered": b.redelivered - a.redelivered,
                    "behind": b.behind - a.behind,
                    "drained": b.complete,
                    "latency": latency(&b.latency),
                    "server_cpu_us_per_message": per(w.server_cpu_s, delivered),
                    "bench_cpu_us_per_message": per(w.bench_cpu_s, delivered),
                    "steal": round(w.steal),
                    "pass": pass,
                }));
            }
            out["steps"] = json!(steps);
            out["max_rate"] = json!(best);
        }
        Scenario::Offline => {
            if let (Some(c), Some(q), Some(d)) =
                (find("connected"), find("queued"), find("drained"))
            {
                let wq = window(&c.snap, &q.snap);
                let wd = window(&q.snap, &d.snap);
                let queued = q.report.accepted - c.report.accepted;
                let drained = d.report.received - q.report.received;
                out["offline"] = json!({
                    "queued": queued,
                    "stored_all": q.report.complete,
                    "queue_ms": round(wq.secs * 1000.0),
                    "queue_server_cpu_us_per_message": per(wq.server_cpu_s, queued),
                    "drained": drained,
                    "drained_all": d.report.complete,
                    "drain_ms": round(wd.secs * 1000.0),
                    "drain_server_cpu_us_per_message": per(wd.server_cpu_s, drained),
                    "drain_bench_cpu_us_per_message": per(wd.bench_cpu_s, drained),
                    "drain_steal": round(wd.steal),
                });
            }
        }
        Scenario::Storm => {
            if let (Some(s), Some(b)) = (find("steady"), find("back")) {
                let w = window(&s.snap, &b.snap);
                let (a, r) = (&s.report, &b.report);
                let logins = r.logins - a.logins;
                out["storm"] = json!({
                    "all_back": r.complete,
                    "back_ms": round(w.secs * 1000.0),
                    "logins": logins,
                    "failed": r.failed - a.failed,
                    "refused": r.refused - a.refused,
                    "refused_retry_after": r.refused_retry_after - a.refused_retry_after,
                    "resumed": r.resumed - a.resumed,
                    "login_latency": latency(&r.login_latency),
                    "server_cpu_us_per_login": per(w.server_cpu_s, logins),
                    "bench_cpu_us_per_login": per(w.bench_cpu_s, logins),
                    "server_rss_steady": rss(&s.snap),
                    "server_rss_peak": b.peak_rss.max(rss(&b.snap)),
                    "steal": round(w.steal),
                });
            }
        }
    }
    Ok(serde_json::to_string(&out)?)
}
