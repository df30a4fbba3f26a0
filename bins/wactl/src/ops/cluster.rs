//! `wactl cluster status` and `wactl cluster catch-up`: the islands as
//! their wa-store nodes report them (`/admin/status`, its `replication`
//! part): who is primary, who follows, how far behind.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::progress::{Bar, Bars};
use super::table::Table;
use crate::cli::{CatchUpArgs, ClusterStatusArgs, NodesArg};

/// How often `catch-up` asks again.
const EVERY: Duration = Duration::from_millis(250);

/// One wa-store node's answer, or why there is none.
struct Store {
    name: String,
    status: Result<Value, String>,
}

async fn ask(arg: &NodesArg) -> anyhow::Result<Vec<Store>> {
    let (nodes, token) = super::load(arg)?;
    let token = std::sync::Arc::new(token);
    let stores: Vec<_> = nodes
        .node
        .iter()
        .filter(|n| n.service == "wa-store")
        .cloned()
        .collect();
    if stores.is_empty() {
        anyhow::bail!("the node list names no wa-store node");
    }
    let answers = super::each(stores.iter(), |n| {
        let token = std::sync::Arc::clone(&token);
        async move { common::admin::client::get_json(n.target(), "/admin/status", &token).await }
    })
    .await;
    Ok(answers
        .into_iter()
        .map(|(n, a)| Store {
            name: n.name,
            status: a.map_err(|e| e.to_string()),
        })
        .collect())
}

/// A node's row: island, epoch, role and figures, and what is wrong.
fn row(s: &Store) -> Value {
    let Ok(st) = &s.status else {
        let e = s.status.as_ref().err().cloned().unwrap_or_default();
        return json!({ "node": s.name, "up": false, "problem": format!("DOWN: {e}") });
    };
    let r = &st["replication"];
    let role = r["role"].as_str().unwrap_or("primary");
    let problem = match role {
        "fenced" => Some("FENCED: may not serve (no lease in etcd, or stepping down)".to_string()),
        "secondary" if r["caught_up"] != Value::Bool(true) => {
            Some("NOT CAUGHT UP: could not take over".to_string())
        }
        "primary" if r["alone"] == Value::Bool(true) => Some(
            "ALONE: acknowledges appends its secondary lacks (no takeover possible)".to_string(),
        ),
        "primary" if r["secondary_connected"] == Value::Bool(false) => {
            Some("no secondary follows".to_string())
        }
        _ => None,
    };
    json!({
        "node": s.name,
        "up": true,
        "island": st["island"],
        "epoch": st["epoch"],
        "role": role,
        "replication": r,
        "problem": problem,
    })
}

/// Problems of the cluster as a whole: islands without a serving primary.
fn island_problems(rows: &[Value]) -> Vec<String> {
    let mut islands: Vec<&str> = rows.iter().filter_map(|r| r["island"].as_str()).collect();
    islands.sort_unstable();
    islands.dedup();
    islands
        .into_iter()
        .filter(|i| {
            !rows
                .iter()
                .any(|r| r["island"].as_str() == Some(i) && r["role"] == "primary")
        })
        .map(|i| format!("island {i}: NO SERVING PRIMARY"))
        .collect()
}

pub(crate) async fn status(args: &ClusterStatusArgs) -> anyhow::Result<ExitCode> {
    let stores = ask(&args.nodes).await?;
    let mut rows: Vec<Value> = stores.iter().map(row).collect();
    rows.sort_by(|a, b| {
        let key = |r: &Value| {
            (
                r["island"].as_str().unwrap_or("").to_string(),
                r["role"] != "primary",
            )
        };
        key(a).cmp(&key(b))
    });
    let problems = island_problems(&rows);
    // (A primary without a secondary is worth showing, not failing: a
    // one-machine island is a valid deployment.)
    let healthy = problems.is_empty()
        && rows.iter().all(|r| {
            r["up"] == true && (r["problem"].is_null() || r["problem"] == "no secondary follows")
        });
    let doc = json!({ "healthy": healthy, "problems": problems, "nodes": rows });
    super::print(args.output.output, &doc, || {
        let mut t = Table::new(&["ISLAND", "EPOCH", "NODE", "ROLE", "LSN", "LAG", "NOTE"]);
        for r in &rows {
            let repl = &r["replication"];
            let lag = match (repl["lag_records"].as_u64(), repl["lag_seconds"].as_f64()) {
                (Some(n), Some(s)) => format!("{n} rec, {s:.3} s"),
                (None, Some(s)) => format!("{s:.3} s"),
                _ => "-".into(),
            };
            let cell = |v: &Value| match v {
                Value::Null => "-".to_string(),
                Value::String(s) => s.clone(),
                v => v.to_string(),
            };
            t.row(vec![
                cell(&r["island"]),
                cell(&r["epoch"]),
                cell(&r["node"]),
                cell(&r["role"]),
                cell(&repl["lsn"]),
                lag,
                r["problem"].as_str().unwrap_or("").to_string(),
            ]);
        }
        let mut out = t.render();
        for p in &problems {
            out.push_str(p);
            out.push('\n');
        }
        out
    });
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

/// A secondary's bar, or `None` for a node that is not one.
fn bar(s: &Store) -> Option<Bar> {
    let st = match &s.status {
        Ok(st) => st,
        Err(e) => {
            return Some(Bar {
                label: s.name.clone(),
                done: 0,
                total: 0,
                note: format!("DOWN: {e}"),
            });
        }
    };
    let r = &st["replication"];
    if r["role"] != "secondary" {
        return None;
    }
    let (copied, total) = (
        r["copied_bytes"].as_u64().unwrap_or(0),
        r["copy_total_bytes"].as_u64().unwrap_or(0),
    );
    Some(if r["caught_up"] == true {
        Bar {
            label: s.name.clone(),
            done: 1,
            total: 1,
            note: format!("caught up (lsn {})", r["lsn"]),
        }
    } else if total > 0 {
        Bar {
            label: s.name.clone(),
            done: copied,
            total,
            note: "copying".into(),
        }
    } else {
        Bar {
            label: s.name.clone(),
            done: 0,
            total: 0,
            note: "connecting to its primary".into(),
        }
    })
}

pub(crate) async fn catch_up(args: &CatchUpArgs) -> anyhow::Result<ExitCode> {
    let deadline = Instant::now() + args.timeout;
    let mut bars = Bars::new();
    loop {
        let stores = ask(&args.nodes).await?;
        let shown: Vec<Bar> = stores.iter().filter_map(bar).collect();
        if shown.is_empty() {
            anyhow::bail!("no wa-store node of the node list is a secondary");
        }
        bars.draw(&shown);
        if shown.iter().all(|b| b.note.starts_with("caught up")) {
            println!("every secondary is caught up");
            return Ok(ExitCode::SUCCESS);
        }
        if Instant::now() >= deadline {
            println!(
                "not every secondary caught up within {}",
                humantime::format_duration(args.timeout)
            );
            return Ok(ExitCode::from(2));
        }
        tokio::time::sleep(EVERY).await;
    }
}
