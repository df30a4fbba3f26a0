//! `wactl push test USER DEVICE`: one push to that device now (`POST
//! /admin/push/test` at every store; the user's home has the endpoint).

use std::process::ExitCode;

use anyhow::Context;
use serde_json::json;

use crate::cli::PushTestArgs;

pub(crate) async fn run(args: &PushTestArgs) -> anyhow::Result<ExitCode> {
    if !common::proto::ids::valid_user_id(&args.user) {
        anyhow::bail!("{:?} is not a valid user id", args.user);
    }
    let (nodes, token) = super::load(&args.nodes)?;
    let token = std::sync::Arc::new(token);
    let path = format!("/admin/push/test?user={}&device={}", args.user, args.device);
    let answers = super::each(nodes.of("wa-store"), |n| {
        let (token, path) = (std::sync::Arc::clone(&token), path.clone());
        async move {
            common::admin::client::request(n.admin, http::Method::POST, &path, Some(&token)).await
        }
    })
    .await;
    let mut found = None;
    for (n, a) in answers {
        let a = a.with_context(|| format!("store {}", n.name))?;
        match a.status {
            404 => continue,
            200 | 502 => {
                let v: serde_json::Value = serde_json::from_str(&a.text())
                    .with_context(|| format!("store {}: not JSON", n.name))?;
                found = Some((n.name.clone(), a.status == 200, v));
                break;
            }
            s => anyhow::bail!("store {}: {s} {}", n.name, a.text().trim()),
        }
    }
    let Some((node, sent, v)) = found else {
        anyhow::bail!(
            "{} device {} has no push endpoint at any store",
            args.user,
            args.device
        );
    };
    let doc =
        json!({ "node": node, "provider": v["provider"], "sent": sent, "outcome": v["outcome"] });
    super::print(args.output.output, &doc, || {
        format!(
            "{} via {} (store {node}): {}\n",
            if sent { "sent" } else { "NOT sent" },
            v["provider"].as_str().unwrap_or("?"),
            v["outcome"].as_str().unwrap_or("?"),
        )
    });
    Ok(if sent {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
