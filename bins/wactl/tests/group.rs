//! `wactl group` end to end on a `wactl up` deployment: create, add, show,
//! a refusal with its code, and a group message that `wactl watch` prints.
//! Needs the workspace's binaries (`cargo build --workspace`).

use tokio::process::Command;

mod support;

use support::{PATIENCE, WACTL, exits_zero, sigterm, spawn, wait_line};

/// `wactl group --dir DIR --user USER ARGS...`: (success, stdout, stderr).
async fn group(dir: &str, user: &str, args: &[&str]) -> (bool, String, String) {
    let mut all = vec!["group", "--dir", dir, "--user", user];
    all.extend_from_slice(args);
    let out = tokio::time::timeout(PATIENCE, Command::new(WACTL).args(&all).output())
        .await
        .unwrap()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_create_add_show_send_and_a_refusal() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dev");
    let dir = dir.to_str().unwrap();
    let (mut up, mut up_out, _) = support::up(dir, &[]).await;
    tokio::spawn(async move { while let Ok(Some(_)) = up_out.next_line().await {} });

    let (ok, out, err) = group(dir, "alice", &["create", "--subject", "team", "bob"]).await;
    assert!(ok, "{err}");
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("group "))
        .expect("the group's id")
        .to_owned();
    assert!(out.contains("subject team\nversion 1\n"), "{out}");
    assert!(
        out.contains("alice admin\n") && out.contains("bob member\n"),
        "{out}"
    );

    let (ok, _, err) = group(dir, "alice", &["add", &id, "carol"]).await;
    assert!(ok, "{err}");
    let (ok, out, err) = group(dir, "bob", &["show", &id]).await;
    assert!(ok, "{err}");
    assert!(
        out.contains("version 2\n") && out.contains("carol member\n"),
        "{out}"
    );
    let (ok, _, err) = group(dir, "bob", &["remove", &id, "carol"]).await;
    assert!(!ok && err.contains("NOT_ADMIN"), "{err}");

    let (mut watch, mut watch_out) = spawn(&["watch", "--dir", dir, "--user", "carol"]);
    wait_line(&mut watch_out, "watch connected", |l| {
        l.starts_with("watching as carol")
    })
    .await;
    let (ok, out, err) = group(dir, "alice", &["send", &id, "hello team"]).await;
    assert!(ok && out == "accepted\n", "{out} {err}");
    let want = format!("{id} alice: hello team");
    wait_line(&mut watch_out, "the group message at watch", |l| l == want).await;

    sigterm(&watch);
    exits_zero(&mut watch, "wactl watch").await;
    sigterm(&up);
    exits_zero(&mut up, "wactl up").await;
}

/// `wactl up --store-toml FILE`: the operator's `[groups]` table reaches
/// wa-store (a group past its `max_members` is refused), while the configs
/// are still rewritten at every start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_with_store_toml_applies_the_operators_group_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let extra = tmp.path().join("store-extra.toml");
    std::fs::write(&extra, "[groups]\nmax_members = 2\n").unwrap();
    let dir = tmp.path().join("dev");
    let dir = dir.to_str().unwrap();
    let (mut up, mut up_out, _) =
        support::up(dir, &["--store-toml", extra.to_str().unwrap()]).await;
    tokio::spawn(async move { while let Ok(Some(_)) = up_out.next_line().await {} });

    let (ok, _, err) = group(dir, "alice", &["create", "--subject", "pair", "bob"]).await;
    assert!(ok, "two members are within the limit: {err}");
    let (ok, _, err) = group(
        dir,
        "alice",
        &["create", "--subject", "three", "bob", "carol"],
    )
    .await;
    assert!(!ok && err.contains("GROUP_FULL"), "{err}");

    sigterm(&up);
    exits_zero(&mut up, "wactl up").await;
}
