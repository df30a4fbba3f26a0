//! `wactl trace MESSAGE_ID --from A --to B`: where a message is now, from
//! the records of B's home (wa-store's `inspect.rs`).

use std::process::ExitCode;

use anyhow::bail;
use serde_json::Value;

use super::table::Table;
use crate::cli::TraceArgs;

pub(crate) async fn run(args: &TraceArgs) -> anyhow::Result<ExitCode> {
    let id = args.message_id.to_ascii_lowercase();
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!(
            "MESSAGE_ID must be 32 hex digits, not {:?}",
            args.message_id
        );
    }
    let path = format!(
        "/admin/trace?from={}&to={}&id={id}",
        super::escape(&args.from),
        super::escape(&args.to)
    );
    let (node, mut doc) =
        super::user::ask_all(&args.nodes, http::Method::GET, &path, &args.to).await?;
    doc["store"] = node.name.clone().into();
    let found = doc["found"] == true;
    super::print(args.output.output, &doc, || table(&doc));
    Ok(if found {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

fn table(doc: &Value) -> String {
    if doc["found"] != true {
        return format!(
            "{} has no record of it: {}\n",
            doc["store"].as_str().unwrap_or("the home"),
            doc["note"].as_str().unwrap_or("")
        );
    }
    let cell = |v: &Value| match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    let mut t = Table::new(&["FIELD", "VALUE"]);
    let place = match doc["place"].as_str() {
        Some("cache") => format!(
            "in memory and the journal (segment {})",
            cell(&doc["journal_segment"])
        ),
        Some("engine") => "in the engine".into(),
        _ => "deleted".into(),
    };
    t.row(vec!["home".into(), cell(&doc["store"])]);
    t.row(vec!["seq".into(), cell(&doc["seq"])]);
    t.row(vec![
        "accepted".into(),
        if doc["accepted"] == true {
            "yes (journal synced)".into()
        } else {
            "not yet (waiting for the journal sync)".into()
        },
    ]);
    t.row(vec!["where".into(), place]);
    if doc["writing_back"] == true {
        t.row(vec!["".into(), "being written back to the engine".into()]);
    }
    let pushed: Vec<String> = doc["pushed_to"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            format!(
                "link {} session {} (device {})",
                s["link"], s["session"], s["device"]
            )
        })
        .collect();
    t.row(vec![
        "pushed, unacknowledged".into(),
        if pushed.is_empty() {
            "-".into()
        } else {
            pushed.join(", ")
        },
    ]);
    t.row(vec!["acknowledged".into(), cell(&doc["acknowledged"])]);
    t.row(vec!["receipt".into(), cell(&doc["receipt"])]);
    t.render()
}
