//! `wactl sessions USER` and `wactl kick USER [DEVICE]`: the user's
//! sessions on every edge of the node list, and ending them (the client
//! hears UNAVAILABLE and reconnects after a pause).

use std::process::ExitCode;

use anyhow::Context;
use serde_json::{Value, json};

use super::table::Table;
use crate::cli::{KickArgs, SessionsArgs};

pub(crate) async fn sessions(args: &SessionsArgs) -> anyhow::Result<ExitCode> {
    let (nodes, token) = super::load(&args.nodes)?;
    let token = std::sync::Arc::new(token);
    let path = format!("/admin/sessions?user={}", super::escape(&args.user));
    let answers = super::each(nodes.of("wa-chat"), |n| {
        let token = std::sync::Arc::clone(&token);
        let path = path.clone();
        async move { common::admin::client::get_json(n.target(), &path, &token).await }
    })
    .await;
    let mut all = Vec::new();
    for (n, a) in answers {
        let a = a.with_context(|| format!("edge {}", n.name))?;
        for s in a["sessions"].as_array().cloned().unwrap_or_default() {
            all.push(json!({
                "edge": n.name,
                "id": s["id"],
                "device": s["device"],
                "since_ms": s["since_ms"],
            }));
        }
    }
    let doc = json!({ "user": args.user, "sessions": all });
    super::print(args.output.output, &doc, || {
        let mut t = Table::new(&["EDGE", "SESSION", "DEVICE", "SINCE"]);
        for s in &all {
            t.row(vec![
                s["edge"].as_str().unwrap_or("-").into(),
                s["id"].to_string(),
                s["device"].to_string(),
                since(&s["since_ms"]),
            ]);
        }
        if all.is_empty() {
            format!("{} has no session\n", args.user)
        } else {
            t.render()
        }
    });
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn kick(args: &KickArgs) -> anyhow::Result<ExitCode> {
    let (nodes, token) = super::load(&args.nodes)?;
    let token = std::sync::Arc::new(token);
    let mut path = format!("/admin/kick?user={}", super::escape(&args.user));
    if let Some(d) = args.device {
        path += &format!("&device={d}");
    }
    let answers = super::each(nodes.of("wa-chat"), |n| {
        let token = std::sync::Arc::clone(&token);
        let path = path.clone();
        async move {
            common::admin::client::call_json(n.target(), http::Method::POST, &path, &token).await
        }
    })
    .await;
    let mut edges = Vec::new();
    let mut total = 0;
    for (n, a) in answers {
        let a = a.with_context(|| format!("edge {}", n.name))?;
        let k = a["kicked"].as_u64().unwrap_or(0);
        total += k;
        edges.push(json!({ "edge": n.name, "kicked": k }));
    }
    let doc = json!({ "user": args.user, "device": args.device, "kicked": total, "edges": edges });
    super::print(args.output.output, &doc, || {
        format!("kicked {total} session(s) of {}\n", args.user)
    });
    Ok(ExitCode::SUCCESS)
}

/// How long ago a unix-ms time was, for people.
fn since(ms: &Value) -> String {
    let Some(ms) = ms.as_u64() else {
        return "-".into();
    };
    let ago = common::fsutil::now_ms().saturating_sub(ms) / 1000;
    format!(
        "{} ago",
        humantime::format_duration(std::time::Duration::from_secs(ago))
    )
}
