//! `wactl user show|ban|unban|delete USER`: the account at its home store
//! (wa-store's `inspect.rs`). Every wa-store of the node list is asked; the
//! one that is USER's home answers.

use std::process::ExitCode;

use anyhow::bail;
use serde_json::Value;

use super::table::Table;
use crate::cli::{NodesArg, UserCommand};
use crate::nodes::Node;

pub(crate) async fn run(cmd: &UserCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        UserCommand::Show(a) => {
            let (node, doc) = home(&a.nodes, http::Method::GET, "/admin/user", &a.user, "").await?;
            let exists = doc["exists"] == true;
            let mut doc = doc;
            doc["store"] = node.name.clone().into();
            super::print(a.output.output, &doc, || show_table(&doc));
            Ok(if exists {
                ExitCode::SUCCESS
            } else {
                if a.output.output == crate::cli::Output::Table {
                    eprintln!("{} is not known at its home {}", a.user, node.name);
                }
                ExitCode::from(3)
            })
        }
        UserCommand::Ban(a) => {
            let extra = format!("&reason={}", super::escape(&a.reason));
            let path = "/admin/user/ban";
            let (node, doc) = home(&a.nodes, http::Method::POST, path, &a.user, &extra).await?;
            super::print(a.output.output, &with_store(doc.clone(), &node), || {
                format!(
                    "{} banned at {} ({} session(s) closed{})\n",
                    a.user,
                    node.name,
                    doc["kicked"],
                    if doc["was_banned"] == true {
                        "; was banned already"
                    } else {
                        ""
                    }
                )
            });
            Ok(ExitCode::SUCCESS)
        }
        UserCommand::Unban(a) => {
            let path = "/admin/user/unban";
            let (node, doc) = home(&a.nodes, http::Method::POST, path, &a.user, "").await?;
            super::print(a.output.output, &with_store(doc.clone(), &node), || {
                if doc["was_banned"] == true {
                    format!("{} may log in again\n", a.user)
                } else {
                    format!("{} was not banned\n", a.user)
                }
            });
            Ok(ExitCode::SUCCESS)
        }
        UserCommand::Delete(a) => {
            let path = "/admin/user/delete";
            let (node, mut doc) = home(&a.nodes, http::Method::POST, path, &a.user, "").await?;
            // The number's record lives at the number's home, maybe another
            // store.
            let mut phone_forgotten = false;
            if let Some(number) = doc["phone"].as_str() {
                let path = format!(
                    "/admin/phone/forget?number={}&user={}",
                    super::escape(number),
                    super::escape(&a.user)
                );
                let (_, p) = ask_all(&a.nodes, http::Method::POST, &path, number).await?;
                phone_forgotten = p["forgot"] == true;
            }
            doc["phone_forgotten"] = phone_forgotten.into();
            let doc = with_store(doc, &node);
            super::print(a.output.output, &doc, || {
                format!(
                    "{} deleted at {}: account {}, phone number {}, {} mailbox item(s), device(s) {} revoked, {} session(s) closed\n",
                    a.user,
                    node.name,
                    if doc["account"] == true {
                        "deleted"
                    } else {
                        "absent"
                    },
                    if phone_forgotten {
                        "forgotten"
                    } else {
                        "not on record"
                    },
                    doc["items"],
                    doc["devices"],
                    doc["kicked"],
                )
            });
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn with_store(mut doc: Value, node: &Node) -> Value {
    doc["store"] = node.name.clone().into();
    doc
}

/// `method path?user=USER&extra` at USER's home.
async fn home(
    nodes: &NodesArg,
    method: http::Method,
    path: &str,
    user: &str,
    extra: &str,
) -> anyhow::Result<(Node, Value)> {
    let path = format!("{path}?user={}{extra}", super::escape(user));
    ask_all(nodes, method, &path, user).await
}

/// Asks every wa-store; the answer of the one that is `key`'s home.
pub(crate) async fn ask_all(
    nodes: &NodesArg,
    method: http::Method,
    path: &str,
    key: &str,
) -> anyhow::Result<(Node, Value)> {
    let (nodes, token) = super::load(nodes)?;
    let token = std::sync::Arc::new(token);
    let answers = super::each(nodes.of("wa-store"), |n| {
        let (token, path, method) = (
            std::sync::Arc::clone(&token),
            path.to_owned(),
            method.clone(),
        );
        async move { common::admin::client::call_json(n.target(), method, &path, &token).await }
    })
    .await;
    let mut errors = Vec::new();
    for (n, a) in answers {
        match a {
            Ok(v) if v["home"] == true => return Ok((n, v)),
            Ok(_) => {}
            Err(e) => errors.push(format!("store {}: {e}", n.name)),
        }
    }
    if errors.is_empty() {
        bail!("no wa-store of the node list is the home of {key:?} (is its primary listed?)");
    }
    bail!("the home of {key:?} did not answer: {}", errors.join("; "))
}

fn ms_ago(v: &Value) -> String {
    match v.as_u64() {
        Some(ms) if ms > 0 => {
            let ago = common::fsutil::now_ms().saturating_sub(ms) / 1000;
            format!(
                "{} ago",
                humantime::format_duration(std::time::Duration::from_secs(ago))
            )
        }
        _ => "never".into(),
    }
}

fn show_table(doc: &Value) -> String {
    let a = &doc["account"];
    let mut t = Table::new(&["FIELD", "VALUE"]);
    let cell = |v: &Value| match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    t.row(vec!["user".into(), cell(&doc["user"])]);
    t.row(vec!["home".into(), cell(&doc["store"])]);
    if a.is_null() {
        t.row(vec!["account".into(), "NONE".into()]);
    } else {
        t.row(vec!["phone".into(), cell(&a["phone"])]);
        t.row(vec!["registered".into(), ms_ago(&a["created_ms"])]);
        t.row(vec!["generation".into(), cell(&a["generation"])]);
        t.row(vec!["pin".into(), cell(&a["pin"])]);
    }
    let banned = &doc["banned"];
    t.row(vec![
        "banned".into(),
        if banned.is_null() {
            "no".into()
        } else {
            format!(
                "BANNED {} ({})",
                ms_ago(&banned["since_ms"]),
                cell(&banned["reason"])
            )
        },
    ]);
    t.row(vec![
        "online".into(),
        if doc["online"] == true {
            "yes".into()
        } else {
            format!("no, last seen {}", ms_ago(&doc["last_seen_ms"]))
        },
    ]);
    let m = &doc["mailbox"];
    t.row(vec![
        "mailbox".into(),
        format!(
            "{} item(s), {} bytes ({} in memory, {} in the engine)",
            m["items"], m["bytes"], m["in_memory"], m["in_engine"]
        ),
    ]);
    let mut out = t.render();
    let mut d = Table::new(&["DEVICE", "NAME", "MIN GENERATION", "SESSIONS (EDGE)"]);
    let mut ids: Vec<u64> = a["devices"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["id"].as_u64())
        .collect();
    for g in doc["device_generations"].as_array().into_iter().flatten() {
        ids.extend(g["device"].as_u64());
    }
    for s in doc["sessions"].as_array().into_iter().flatten() {
        ids.extend(s["device"].as_u64());
    }
    ids.sort_unstable();
    ids.dedup();
    for id in ids {
        let name = a["devices"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|d| d["id"].as_u64() == Some(id))
            .map_or("-".into(), |d| cell(&d["name"]));
        let min = doc["device_generations"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|g| g["device"].as_u64() == Some(id))
            .map_or("-".into(), |g| cell(&g["min_generation"]));
        let sessions: Vec<String> = doc["sessions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["device"].as_u64() == Some(id))
            .map(|s| s["edge"].as_str().unwrap_or("?").to_string())
            .collect();
        let sessions = if sessions.is_empty() {
            "-".to_string()
        } else {
            sessions.join(", ")
        };
        d.row(vec![id.to_string(), name, min, sessions]);
    }
    out.push('\n');
    out.push_str(&d.render());
    out
}
