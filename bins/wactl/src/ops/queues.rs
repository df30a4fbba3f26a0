//! `wactl queues`: the longest mailboxes of every store, as of each store's
//! last sweep (`mailbox.sweep_interval`).

use std::process::ExitCode;

use anyhow::Context;
use serde_json::json;

use super::table::Table;
use crate::cli::QueuesArgs;

pub(crate) async fn run(args: &QueuesArgs) -> anyhow::Result<ExitCode> {
    let (nodes, token) = super::load(&args.nodes)?;
    let token = std::sync::Arc::new(token);
    let answers = super::each(nodes.of("wa-store"), |n| {
        let token = std::sync::Arc::clone(&token);
        async move { common::admin::client::get_json(n.target(), "/admin/queues", &token).await }
    })
    .await;
    let mut stores = Vec::new();
    let mut rows = Vec::new();
    for (n, a) in answers {
        let a = a.with_context(|| format!("store {}", n.name))?;
        let largest: Vec<_> = a["largest"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .take(args.limit)
            .collect();
        for m in &largest {
            rows.push(vec![
                n.name.clone(),
                m["user"].as_str().unwrap_or("-").to_string(),
                m["items"].to_string(),
                m["bytes"].to_string(),
            ]);
        }
        stores.push(json!({ "node": n.name, "largest": largest, "by_length": a["by_length"] }));
    }
    let doc = json!({ "stores": stores });
    super::print(args.output.output, &doc, || {
        let mut t = Table::new(&["NODE", "USER", "ITEMS", "BYTES"]);
        for r in rows {
            t.row(r);
        }
        t.render()
    });
    Ok(ExitCode::SUCCESS)
}
