//! `wactl status`: every node of the node list, up or down, ready or not,
//! with its version, uptime, connections, cluster epoch and the queues it
//! reports. A node that does not answer, or answers not ready, is a problem:
//! shown in capitals, and the exit code is 2.

use std::process::ExitCode;

use serde_json::{Value, json};

use super::table::Table;
use crate::cli::StatusArgs;

pub(crate) async fn run(args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let (nodes, token) = super::load(&args.nodes)?;
    let token = std::sync::Arc::new(token);
    let answers = super::each(nodes.node.iter(), |n| {
        let token = std::sync::Arc::clone(&token);
        async move { common::admin::client::get_json(n.target(), "/admin/status", &token).await }
    })
    .await;
    let mut healthy = true;
    let mut rows = Vec::new();
    for (n, answer) in answers {
        let row = match answer {
            Ok(status) => {
                let ready = status["ready"].as_bool().unwrap_or(false);
                healthy &= ready;
                json!({
                    "name": n.name,
                    "service": n.service,
                    "admin": n.target().to_string(),
                    "up": true,
                    "ready": ready,
                    "status": status,
                })
            }
            Err(e) => {
                healthy = false;
                json!({
                    "name": n.name,
                    "service": n.service,
                    "admin": n.target().to_string(),
                    "up": false,
                    "ready": false,
                    "error": e.to_string(),
                })
            }
        };
        rows.push(row);
    }
    let doc = json!({ "healthy": healthy, "nodes": rows });
    super::print(args.output.output, &doc, || table(&rows));
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

fn table(rows: &[Value]) -> String {
    let mut t = Table::new(&[
        "NODE", "SERVICE", "STATE", "VERSION", "UPTIME", "CONN", "EPOCH", "NOTE",
    ]);
    for r in rows {
        let s = &r["status"];
        let state = match (r["up"].as_bool(), r["ready"].as_bool()) {
            (Some(true), Some(true)) => "up".to_string(),
            (Some(true), _) => "NOT READY".to_string(),
            _ => "DOWN".to_string(),
        };
        let cell = |v: &Value| match v {
            Value::Null => "-".to_string(),
            Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        let uptime = s["uptime_secs"]
            .as_u64()
            .map(|u| humantime::format_duration(std::time::Duration::from_secs(u)).to_string())
            .unwrap_or_else(|| "-".into());
        let note = match (&r["error"], &s["not_ready"]) {
            (Value::String(e), _) => e.clone(),
            (_, Value::String(why)) => why.clone(),
            _ => links_note(s),
        };
        t.row(vec![
            cell(&r["name"]),
            cell(&r["service"]),
            state,
            cell(&s["version"]),
            uptime,
            cell(&s["connections"]),
            cell(&s["epoch"]),
            note,
        ]);
    }
    t.render()
}

/// An edge's links that are down, or its longest link queue.
fn links_note(s: &Value) -> String {
    let Some(links) = s["links"].as_array() else {
        return String::new();
    };
    let down: Vec<_> = links
        .iter()
        .filter(|l| l["up"] == Value::Bool(false))
        .filter_map(|l| l["addr"].as_str())
        .collect();
    if !down.is_empty() {
        return format!("LINK DOWN to {}", down.join(", "));
    }
    let longest = links
        .iter()
        .map(|l| {
            l["queue_appends"].as_u64().unwrap_or(0) + l["queue_control"].as_u64().unwrap_or(0)
        })
        .max()
        .unwrap_or(0);
    format!("link queues <= {longest}")
}
