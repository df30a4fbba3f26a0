//! `wactl drain EDGE --over 60s`: the edge turns not ready (the load
//! balancer stops sending it clients), tells new connections to go
//! elsewhere, and ends its sessions at random moments within the window, so
//! that the clients reconnect to the other edges spread over it. Reports
//! progress on stderr until no session is left.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;

use crate::cli::{DrainArgs, Output};

/// How often progress is asked for.
const POLL: Duration = Duration::from_millis(250);

pub(crate) async fn run(args: &DrainArgs) -> anyhow::Result<ExitCode> {
    let (nodes, token) = super::load(&args.nodes)?;
    let Some(edge) = nodes.of("wa-chat").find(|n| n.name == args.edge).cloned() else {
        bail!("no wa-chat node named {:?} in the node list", args.edge);
    };
    let over_ms = args.over.as_millis() as u64;
    let started = Instant::now();
    let plan = common::admin::client::call_json(
        edge.target(),
        http::Method::POST,
        &format!("/admin/drain?over_ms={over_ms}"),
        &token,
    )
    .await
    .with_context(|| format!("edge {}", edge.name))?;
    let total = plan["sessions"].as_u64().unwrap_or(0);
    eprintln!(
        "draining {}: {total} session(s) over {}",
        edge.name,
        humantime::format_duration(args.over)
    );
    let deadline = started + args.over + args.grace;
    let mut tick = tokio::time::interval(POLL);
    let mut last = u64::MAX;
    let left = loop {
        tick.tick().await;
        let s = common::admin::client::get_json(edge.target(), "/admin/status", &token)
            .await
            .with_context(|| format!("edge {}", edge.name))?;
        let left = s["sessions"].as_u64().unwrap_or(0);
        if left != last && args.output.output == Output::Table {
            eprintln!("  {left} session(s) left");
        }
        last = left;
        if left == 0 || Instant::now() >= deadline {
            break left;
        }
    };
    let doc = json!({
        "edge": edge.name,
        "sessions": total,
        "left": left,
        "over_ms": over_ms,
        "elapsed_ms": started.elapsed().as_millis() as u64,
        "planned_ms": plan["planned_ms"],
    });
    super::print(args.output.output, &doc, || {
        format!(
            "{} drained: {total} session(s) ended in {}\n",
            edge.name,
            humantime::format_duration(Duration::from_millis(started.elapsed().as_millis() as u64))
        )
    });
    Ok(if left == 0 {
        ExitCode::SUCCESS
    } else {
        eprintln!("{left} session(s) still open after the window and the grace");
        ExitCode::from(2)
    })
}
