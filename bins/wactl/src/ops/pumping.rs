//! `wactl pumping [--release PREFIX]`: the prefixes every wa-register
//! holds to its tightened rate (`GET /admin/pumping`), and their release
//! (`POST /admin/pumping/release?prefix=`).

use std::process::ExitCode;

use anyhow::Context;
use serde_json::json;

use super::table::Table;
use crate::cli::PumpingArgs;

pub(crate) async fn run(args: &PumpingArgs) -> anyhow::Result<ExitCode> {
    if let Some(p) = &args.release {
        let digits = p.trim().trim_start_matches('+');
        let shown = digits.trim_end_matches('*');
        if shown.is_empty() || !shown.bytes().all(|b| b.is_ascii_digit()) {
            anyhow::bail!(
                "--release {p:?}: a prefix is + and digits, like +8819, or the form this command lists (+8819**)"
            );
        }
    }
    let (nodes, token) = super::load(&args.nodes)?;
    let token = std::sync::Arc::new(token);
    let release = args.release.clone();
    if nodes.of("wa-register").next().is_none() {
        anyhow::bail!("the node list names no wa-register");
    }
    let answers = super::each(nodes.of("wa-register"), |n| {
        let token = std::sync::Arc::clone(&token);
        let release = release.clone();
        async move {
            let (method, path) = match &release {
                Some(p) => (
                    http::Method::POST,
                    format!(
                        "/admin/pumping/release?prefix={}",
                        p.trim().trim_start_matches('+').replace('*', "%2A")
                    ),
                ),
                None => (http::Method::GET, "/admin/pumping".to_string()),
            };
            common::admin::client::request(n.target(), method, &path, Some(&token)).await
        }
    })
    .await;
    let mut rows = Vec::new();
    for (n, a) in answers {
        let a = a.with_context(|| format!("wa-register {}", n.name))?;
        if a.status != 200 {
            anyhow::bail!("wa-register {}: {} {}", n.name, a.status, a.text().trim());
        }
        let v: serde_json::Value = serde_json::from_str(&a.text())
            .with_context(|| format!("wa-register {}: not JSON", n.name))?;
        rows.push(json!({ "node": n.name, "answer": v }));
    }
    let doc = json!({ "registers": rows });
    super::print(args.output.output, &doc, || {
        let mut t = match &args.release {
            Some(_) => Table::new(&["NODE", "PREFIX", "RELEASED"]),
            None => Table::new(&["NODE", "TIGHTENED PREFIXES"]),
        };
        for r in &rows {
            let node = r["node"].as_str().unwrap_or("-").to_string();
            let v = &r["answer"];
            if args.release.is_some() {
                t.row(vec![
                    node,
                    v["prefix"].as_str().unwrap_or("-").to_string(),
                    v["released"].to_string(),
                ]);
            } else {
                let list: Vec<String> = v["tightened"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|p| p.as_str().unwrap_or("?").to_string())
                            .collect()
                    })
                    .unwrap_or_default();
                t.row(vec![
                    node,
                    if list.is_empty() {
                        "-".into()
                    } else {
                        list.join(" ")
                    },
                ]);
            }
        }
        t.render()
    });
    Ok(ExitCode::SUCCESS)
}
