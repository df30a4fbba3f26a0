//! The operator commands against a real `wactl up` deployment: `status`,
//! `sessions`, `kick`, `queues`, `push test`, `config defaults` and `completions`, each
//! with `--output json` parsed and checked, and the human tables.

mod support;

use std::process::Output;

use serde_json::Value;
use support::{PATIENCE, WACTL, exits_zero, free_port, sigterm, spawn, wait_line};
use tokio::process::Command;

async fn wactl(args: &[&str]) -> Output {
    tokio::time::timeout(PATIENCE, Command::new(WACTL).args(args).output())
        .await
        .unwrap_or_else(|_| panic!("wactl {args:?} did not finish"))
        .unwrap()
}

/// `wactl ARGS --output json`, which must exit `code`, parsed.
async fn json(args: &[&str], code: i32) -> Value {
    let mut all = args.to_vec();
    all.extend(["--output", "json"]);
    let out = wactl(&all).await;
    assert_eq!(
        out.status.code(),
        Some(code),
        "wactl {all:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "wactl {all:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_commands_against_a_running_deployment() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dev");
    let dir = dir.to_str().unwrap();
    let (link, port) = (free_port().to_string(), free_port().to_string());
    let (mut up, mut up_out) = spawn(&["up", "--dir", dir, "--link-port", &link, "--port", &port]);
    let ready = wait_line(&mut up_out, "READY from wactl up", |l| {
        l.starts_with("READY wactl-up ")
    })
    .await;
    assert!(ready.contains("nodes="), "{ready}");
    tokio::spawn(async move { while let Ok(Some(_)) = up_out.next_line().await {} });

    // Every node answers; the edge is ready once its link is up (until
    // then status exits 2 and says which node is not ready).
    let status = tokio::time::timeout(PATIENCE, async {
        loop {
            let out = wactl(&["status", "--dir", dir, "--output", "json"]).await;
            let s: Value = serde_json::from_slice(&out.stdout).unwrap();
            match out.status.code() {
                Some(0) => {
                    assert_eq!(s["healthy"], true);
                    return s;
                }
                Some(2) => assert_eq!(s["healthy"], false),
                c => panic!("wactl status exited {c:?}"),
            }
        }
    })
    .await
    .expect("the deployment becomes healthy");
    let nodes = status["nodes"].as_array().unwrap();
    let services: Vec<_> = nodes
        .iter()
        .map(|n| n["service"].as_str().unwrap())
        .collect();
    assert_eq!(services, ["wa-store", "wa-chat", "wa-media", "wa-register"]);
    for n in nodes {
        assert_eq!(n["up"], true, "{n}");
        assert_eq!(n["status"]["version"], env!("CARGO_PKG_VERSION"), "{n}");
        assert!(n["status"]["uptime_secs"].is_u64(), "{n}");
        assert!(
            n["admin"].as_str().unwrap().starts_with("127.0.0.1:"),
            "{n}"
        );
    }
    assert!(nodes[0]["status"]["epoch"].is_u64());
    assert_eq!(
        nodes[0]["status"]["connections"], 1,
        "the edge's link to the store"
    );
    assert!(nodes[1]["status"]["connections"].is_u64());
    let table = wactl(&["status", "--dir", dir]).await;
    assert!(table.status.success());
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(table.starts_with("NODE "), "{table}");
    assert!(
        table.contains("chat-1") && table.contains(" up "),
        "{table}"
    );

    // Two devices of alice watching.
    let (mut w1, _o1) = spawn(&["watch", "--dir", dir, "--user", "alice"]);
    let (mut w2, _o2) = spawn(&["watch", "--dir", dir, "--user", "alice"]);
    let sessions = tokio::time::timeout(PATIENCE, async {
        loop {
            let s = json(&["sessions", "--dir", dir, "alice"], 0).await;
            if s["sessions"].as_array().unwrap().len() == 2 {
                return s;
            }
        }
    })
    .await
    .expect("both watchers get a session");
    assert_eq!(sessions["user"], "alice");
    for s in sessions["sessions"].as_array().unwrap() {
        assert_eq!(s["edge"], "chat-1");
        assert_eq!(s["device"], 1);
        assert!(s["id"].is_u64() && s["since_ms"].is_u64());
    }
    let none = json(&["sessions", "--dir", dir, "nobody"], 0).await;
    assert_eq!(none["sessions"], serde_json::json!([]));
    let kicked = json(&["kick", "--dir", dir, "alice"], 0).await;
    assert_eq!(kicked["kicked"], 2, "{kicked}");
    assert_eq!(kicked["edges"][0]["edge"], "chat-1");
    let kicked = json(&["kick", "--dir", dir, "alice", "7"], 0).await;
    assert_eq!(kicked["device"], 7);

    let queues = json(&["queues", "--dir", dir], 0).await;
    let stores = queues["stores"].as_array().unwrap();
    assert_eq!(stores.len(), 1);
    assert_eq!(stores[0]["node"], "store-1");
    assert!(stores[0]["largest"].is_array());

    // `push test` asks the stores; a device without an endpoint is a
    // failure that says so (a push through each provider is tested in
    // tests/tests/push_providers.rs).
    let out = wactl(&["push", "test", "--dir", dir, "alice", "1"]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("has no push endpoint"),
        "{out:?}"
    );

    // A wrong token is refused: the command fails and says so.
    let nodes_file = std::path::Path::new(dir).join("wactl.toml");
    let text = std::fs::read_to_string(&nodes_file).unwrap();
    let bad = tmp.path().join("bad.token");
    common::fsutil::write_private(&bad, b"0000000000000000000000000000").unwrap();
    let wrong = tmp.path().join("wrong.toml");
    let mut nodes: toml::Table = toml::from_str(&text).unwrap();
    nodes.insert("token_file".into(), bad.to_str().unwrap().into());
    std::fs::write(&wrong, toml::to_string(&nodes).unwrap()).unwrap();
    let out = wactl(&["queues", "--nodes", wrong.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("403"),
        "{out:?}"
    );

    // Drain the edge: the watchers (back after the kick) are ended within
    // the window, the edge turns not ready and refuses them after that.
    tokio::time::timeout(PATIENCE, async {
        loop {
            let s = json(&["sessions", "--dir", dir, "alice"], 0).await;
            if s["sessions"].as_array().unwrap().len() == 2 {
                return;
            }
        }
    })
    .await
    .expect("the kicked watchers reconnect");
    let drained = json(&["drain", "--dir", dir, "chat-1", "--over", "1500ms"], 0).await;
    assert_eq!(drained["sessions"], 2, "{drained}");
    assert_eq!(drained["left"], 0, "{drained}");
    let planned: Vec<u64> = drained["planned_ms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap())
        .collect();
    assert_eq!(planned.len(), 2);
    assert!(
        planned.windows(2).all(|w| w[0] <= w[1]) && planned[1] <= 1500,
        "{planned:?}"
    );
    assert!(
        drained["elapsed_ms"].as_u64().unwrap() >= planned[1],
        "{drained}"
    );
    let after = json(&["status", "--dir", dir], 2).await;
    let chat = &after["nodes"][1];
    assert_eq!(chat["ready"], false, "{chat}");
    assert_eq!(chat["status"]["not_ready"], "draining", "{chat}");
    assert_eq!(chat["status"]["draining"], true, "{chat}");
    let none = json(&["sessions", "--dir", dir, "alice"], 0).await;
    assert_eq!(
        none["sessions"],
        serde_json::json!([]),
        "a draining edge admits no one"
    );

    for w in [&mut w1, &mut w2] {
        sigterm(w);
        exits_zero(w, "wactl watch").await;
    }
    sigterm(&up);
    exits_zero(&mut up, "wactl up").await;
    // Everything is down now: status says so with exit 2.
    let down = json(&["status", "--dir", dir], 2).await;
    assert_eq!(down["healthy"], false);
    assert!(
        down["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["up"] == false)
    );
}

#[tokio::test]
async fn config_defaults_and_completions() {
    for service in ["wa-chat", "wa-store", "wa-media", "wa-register"] {
        let out = wactl(&["config", "defaults", service]).await;
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.starts_with('#'), "{service}: comments first");
        let parsed: toml::Table = toml::from_str(&text).unwrap();
        assert!(parsed.contains_key("admin"), "{service}");
    }
    let out = wactl(&["completions", "bash"]).await;
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("_wactl") && text.contains("status"), "{text}");
}
