//! `wactl expire --now`: every store deletes its undelivered items older
//! than `[mailbox] expire_after` now (`POST /admin/expire`), rather than at
//! its next sweep.

use std::process::ExitCode;

use anyhow::Context;
use serde_json::json;

use super::table::Table;
use crate::cli::ExpireArgs;

pub(crate) async fn run(args: &ExpireArgs) -> anyhow::Result<ExitCode> {
    let (nodes, token) = super::load(&args.nodes)?;
    let token = std::sync::Arc::new(token);
    let answers = super::each(nodes.of("wa-store"), |n| {
        let token = std::sync::Arc::clone(&token);
        async move {
            common::admin::client::request(
                n.target(),
                http::Method::POST,
                "/admin/expire",
                Some(&token),
            )
            .await
        }
    })
    .await;
    let mut rows = Vec::new();
    for (n, a) in answers {
        let a = a.with_context(|| format!("store {}", n.name))?;
        let row = match a.status {
            200 => {
                let v: serde_json::Value = serde_json::from_str(&a.text())
                    .with_context(|| format!("store {}: not JSON", n.name))?;
                json!({ "node": n.name, "expired": v["expired"] })
            }
            // A secondary: its primary's deletions reach it by replication.
            409 => json!({ "node": n.name, "expired": null, "note": a.text().trim() }),
            s => anyhow::bail!("store {}: {s} {}", n.name, a.text().trim()),
        };
        rows.push(row);
    }
    let doc = json!({ "stores": rows });
    super::print(args.output.output, &doc, || {
        let mut t = Table::new(&["NODE", "EXPIRED", "NOTE"]);
        for r in &rows {
            t.row(vec![
                r["node"].as_str().unwrap_or("-").to_string(),
                r["expired"]
                    .as_u64()
                    .map_or("-".to_string(), |n| n.to_string()),
                r["note"].as_str().unwrap_or("").to_string(),
            ]);
        }
        t.render()
    });
    Ok(ExitCode::SUCCESS)
}
