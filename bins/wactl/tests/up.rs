//! `wactl up` end to end: a real wa-store and wa-chat started by wactl, a
//! `wactl watch` receiving, `wactl send` waiting for its ticks, and a clean
//! stop on SIGTERM. Needs the workspace's binaries (`cargo build --workspace`).

use std::path::Path;

use tokio::process::Command;

mod support;

use support::{PATIENCE, WACTL, exits_zero, free_port, sigterm, spawn, wait_line};

async fn send(dir: &str, extra: &[&str], text: &str) -> String {
    let mut args = vec![
        "send",
        "--dir",
        dir,
        "--from",
        "alice",
        "--to",
        "bob",
        "--timeout",
        "30s",
    ];
    args.extend_from_slice(extra);
    args.push(text);
    let out = tokio::time::timeout(PATIENCE, Command::new(WACTL).args(&args).output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "wactl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_then_watch_and_send_then_sigterm() {
    let bin_dir = Path::new(WACTL).parent().unwrap();
    for b in ["wa-store", "wa-chat", "wa-media", "wa-register"] {
        assert!(
            bin_dir.join(b).is_file(),
            "{b} is not built in {}: run `cargo build --workspace`",
            bin_dir.display()
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dev");
    let dir = dir.to_str().unwrap();
    let (link, port) = (free_port().to_string(), free_port().to_string());
    let (mut up, mut up_out) = spawn(&["up", "--dir", dir, "--link-port", &link, "--port", &port]);
    let ready = wait_line(&mut up_out, "READY from wactl up", |l| {
        l.starts_with("READY wactl-up ")
    })
    .await;
    assert!(ready.contains(&format!("tcp=127.0.0.1:{port}")), "{ready}");
    // Keep draining wactl up's output; the codes it prints come back here.
    let (code_tx, mut code_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(l)) = up_out.next_line().await {
            if let Some(rest) = l.strip_prefix("SMS code for ") {
                let _ = code_tx.send(rest.to_owned());
            }
        }
    });

    let (mut watch, mut watch_out) = spawn(&["watch", "--dir", dir, "--user", "bob", "--read"]);
    wait_line(&mut watch_out, "watch connected", |l| {
        l.starts_with("watching as bob")
    })
    .await;

    assert_eq!(
        send(dir, &["--wait", "read"], "hello bob").await,
        "accepted\ndelivered\nread\n"
    );
    wait_line(&mut watch_out, "the message at watch", |l| {
        l == "alice: hello bob"
    })
    .await;
    // (The watcher marks it read at once; the read receipt may overtake the
    // delivered one, which comes from bob's home.)
    let out = send(dir, &["--quic", "--wait", "delivered"], "over quic").await;
    assert!(
        ["accepted\ndelivered\n", "accepted\ndelivered\nread\n"].contains(&out.as_str()),
        "{out:?}"
    );
    wait_line(&mut watch_out, "the QUIC message at watch", |l| {
        l == "alice: over quic"
    })
    .await;

    // Sign up through wa-register; the code comes from the development file.
    let out = tokio::time::timeout(
        PATIENCE,
        Command::new(WACTL)
            .args(["register", "--dir", dir, "--number", "+15550001234"])
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "wactl register: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("new account u") && text.contains("token v1."),
        "{text}"
    );
    let out = Command::new(WACTL)
        .args(["code", "--dir", dir, "--number", "+15550001234"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let code = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(code.len(), 6, "{code:?}");
    // wactl up printed the same code as it went out.
    let printed = tokio::time::timeout(PATIENCE, code_rx.recv())
        .await
        .expect("wactl up prints the code")
        .unwrap();
    assert_eq!(printed, format!("+15550001234: {code}"));

    sigterm(&watch);
    exits_zero(&mut watch, "wactl watch").await;
    sigterm(&up);
    exits_zero(&mut up, "wactl up").await;

    // Finding 9: mailboxes, account records (PIN hashes), blobs and codes
    // were world-readable under umask 022. Every file and directory of the
    // deployment is its owner's only.
    use std::os::unix::fs::PermissionsExt;
    fn open_to_others(p: &Path, found: &mut Vec<String>) {
        let meta = std::fs::symlink_metadata(p).unwrap();
        if meta.file_type().is_symlink() {
            return;
        }
        let mode = meta.permissions().mode() & 0o777;
        // (Public keys are public on purpose: `fsutil::write_public`.)
        let public = p.extension().is_some_and(|e| e == "pub");
        if mode & 0o077 != 0 && !public {
            found.push(format!("{} {mode:o}", p.display()));
        }
        if meta.is_dir() {
            for e in std::fs::read_dir(p).unwrap() {
                open_to_others(&e.unwrap().path(), found);
            }
        }
    }
    let mut found = Vec::new();
    open_to_others(Path::new(dir), &mut found);
    assert!(found.is_empty(), "readable by others: {found:#?}");
}

/// `--chat-toml` and `--store-toml` that cannot be added are refused before
/// anything starts, each error naming the flag or the config file and why.
#[tokio::test]
async fn up_refuses_extra_toml_that_cannot_be_added() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dev");
    let cases = [
        (
            "--chat-toml",
            "[tls]\ncert = \"/x.pem\"\n",
            "wa-chat.toml: the added TOML clashes",
        ),
        (
            "--store-toml",
            "[cache]\nmemory = \"1 GiB\"\n[admin]\nlisten = \"127.0.0.1:1\"\n",
            "wa-store.toml: the added TOML clashes",
        ),
        (
            "--chat-toml",
            "max_connections = 5\n",
            "`max_connections` is not in a table",
        ),
        ("--store-toml", "[groups\n", "is not TOML"),
    ];
    for (i, (flag, text, want)) in cases.into_iter().enumerate() {
        let extra = tmp.path().join(format!("extra-{i}.toml"));
        std::fs::write(&extra, text).unwrap();
        let out = tokio::time::timeout(
            PATIENCE,
            Command::new(WACTL)
                .args([
                    "up",
                    "--dir",
                    dir.to_str().unwrap(),
                    "--port",
                    "1",
                    "--link-port",
                    "2",
                ])
                .args([flag, extra.to_str().unwrap()])
                .output(),
        )
        .await
        .unwrap()
        .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag} {text:?} was taken");
        assert!(err.contains(want), "{flag} {text:?}: {err}");
    }
    let missing = tmp.path().join("absent.toml");
    let out = tokio::time::timeout(
        PATIENCE,
        Command::new(WACTL)
            .args([
                "up",
                "--dir",
                dir.to_str().unwrap(),
                "--chat-toml",
                missing.to_str().unwrap(),
            ])
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--chat-toml: cannot read"),
        "{err}"
    );
}

/// `n` consecutive ports free for TCP and UDP on 127.0.0.1 right now.
fn free_ports(n: u16) -> u16 {
    loop {
        let base = free_port();
        let free = (1..n).all(|i| {
            base.checked_add(i).is_some_and(|p| {
                std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
                    && std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok()
            })
        });
        if free {
            return base;
        }
    }
}

/// A newcomer's two islands: `wactl up --islands 2 --edges 2`, a user
/// watching on one edge, a message from a user of the other island through
/// the other edge, all three ticks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_with_two_islands_and_two_edges_talks_across_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dev");
    let dir = dir.to_str().unwrap();
    let (link, port) = (free_ports(2).to_string(), free_ports(2).to_string());
    let (mut up, mut up_out) = spawn(&[
        "up",
        "--dir",
        dir,
        "--link-port",
        &link,
        "--port",
        &port,
        "--islands",
        "2",
        "--edges",
        "2",
    ]);
    let ready = wait_line(&mut up_out, "READY", |l| l.starts_with("READY wactl-up")).await;
    assert!(ready.contains("islands=2 edges=2"), "{ready}");
    tokio::spawn(async move { while let Ok(Some(_)) = up_out.next_line().await {} });

    // Users on different islands, as `wactl home` tells (of 40, all on one
    // island of two: one chance in 2^39).
    let users: Vec<String> = (0..40).map(|i| format!("user{i}")).collect();
    let out = Command::new(WACTL)
        .args(["home", "--dir", dir])
        .args(&users)
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let island = |user: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{user}: ")))
            .and_then(|l| l.split(", ").nth(1))
            .and_then(|i| i.split(' ').next())
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("{user} missing in {text}"))
    };
    let from = users[0].as_str();
    let to = users
        .iter()
        .find(|u| island(u) != island(from))
        .expect("a user on the other island");
    let to = to.as_str();

    let (mut watch, mut watch_out) =
        spawn(&["watch", "--dir", dir, "--edge", "2", "--user", to, "--read"]);
    wait_line(&mut watch_out, "watch connected", |l| {
        l.starts_with("watching as")
    })
    .await;
    let out = tokio::time::timeout(
        PATIENCE,
        Command::new(WACTL)
            .args([
                "send",
                "--dir",
                dir,
                "--edge",
                "1",
                "--from",
                from,
                "--to",
                to,
                "--wait",
                "read",
                "across islands",
            ])
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "accepted\ndelivered\nread\n"
    );
    wait_line(&mut watch_out, "the message at watch", |l| {
        l == format!("{from}: across islands")
    })
    .await;

    sigterm(&watch);
    exits_zero(&mut watch, "wactl watch").await;
    sigterm(&up);
    exits_zero(&mut up, "wactl up").await;
}

/// Waits for a secondary's `CAUGHT-UP` line (wa-store's, which wactl up
/// passes on).
async fn caught_up(lines: &mut tokio::sync::mpsc::UnboundedReceiver<String>) {
    let fut = async {
        while let Some(l) = lines.recv().await {
            if l.contains("CAUGHT-UP") {
                return;
            }
        }
        panic!("wactl up ended");
    };
    tokio::time::timeout(PATIENCE, fut)
        .await
        .expect("a secondary caught up");
}

/// A newcomer's failover: `wactl up --secondaries`, a message, `kill -9`
/// of the primary, `wactl promote`, and messages flow again through the
/// promoted secondary, with nothing accepted before lost; wactl up starts
/// the killed store again and it follows as the new secondary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_with_secondaries_survives_a_killed_primary_after_wactl_promote() {
    kill_the_primary(false).await;
}

/// The same with `--etcd`: nobody promotes; the secondary takes over once
/// the killed primary's lease is gone, and the restarted primary, back from
/// a crash, leaves it the island.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_with_secondaries_and_etcd_fails_over_by_itself() {
    kill_the_primary(true).await;
}

async fn kill_the_primary(etcd: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dev");
    let dir = dir.to_str().unwrap();
    let (link, port) = (free_ports(2).to_string(), free_port().to_string());
    let mut args = vec![
        "up",
        "--dir",
        dir,
        "--link-port",
        &link,
        "--port",
        &port,
        "--secondaries",
    ];
    if etcd {
        args.push("--etcd");
    }
    let (mut up, mut up_out) = spawn(&args);
    let saw_caught_up = std::sync::atomic::AtomicBool::new(false);
    wait_line(&mut up_out, "READY", |l| {
        if l.contains("CAUGHT-UP") {
            saw_caught_up.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        l.starts_with("READY wactl-up")
    })
    .await;
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(l)) = up_out.next_line().await {
            let _ = lines_tx.send(l);
        }
    });
    // The secondary has caught up once it says so (wa-store's line, which
    // wactl up passes on).
    if !saw_caught_up.load(std::sync::atomic::Ordering::SeqCst) {
        caught_up(&mut lines).await;
    }
    assert_eq!(
        send(dir, &["--wait", "accepted"], "before").await,
        "accepted\n"
    );
    // The operator's view: one island, its primary serving, its secondary
    // caught up and (after the send) acknowledging everything.
    let (code, doc) = cluster_status(dir).await;
    assert_eq!(code, Some(0), "{doc}");
    assert_eq!(
        roles(&doc),
        [
            ("island-1".into(), 1, "primary".into()),
            ("island-1".into(), 1, "secondary".into())
        ],
        "{doc}"
    );
    assert_eq!(doc["nodes"][1]["replication"]["caught_up"], true, "{doc}");
    // Lag in seconds on both sides (the send above went through the
    // stream, so the secondary measured one frame).
    assert!(
        doc["nodes"][0]["replication"]["lag_seconds"].is_number(),
        "{doc}"
    );
    assert!(
        doc["nodes"][1]["replication"]["lag_seconds"].is_number(),
        "{doc}"
    );
    assert_eq!(
        doc["nodes"][0]["replication"]["secondary_caught_up"], true,
        "{doc}"
    );

    let pid: i32 = std::fs::read_to_string(Path::new(dir).join("run/wa-store.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    if !etcd {
        let out = Command::new(WACTL)
            .args(["promote", "island-1", "--dir", dir])
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let said = String::from_utf8(out.stdout).unwrap();
        assert!(said.contains("epoch 2"), "{said}");
        // (Until the killed store is back, the island is not healthy.)
        let (code, doc) = cluster_status(dir).await;
        assert_eq!(code, Some(2), "{doc}");
    }
    // The client retries until the edge routes it to the new primary.
    assert_eq!(
        send(dir, &["--wait", "accepted"], "after").await,
        "accepted\n"
    );
    // The killed store is back, following the new primary.
    caught_up(&mut lines).await;
    let out = Command::new(WACTL)
        .args(["cluster", "catch-up", "--dir", dir, "--timeout", "30s"])
        .output()
        .await
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("every secondary is caught up"), "{said}");
    assert!(said.contains("caught up (lsn"), "{said}");
    let (code, doc) = cluster_status(dir).await;
    assert_eq!(code, Some(0), "{doc}");
    assert_eq!(
        roles(&doc),
        [
            ("island-1".into(), 2, "primary".into()),
            ("island-1".into(), 2, "secondary".into())
        ],
        "{doc}"
    );
    // The roles swapped: the store started second is the primary now.
    assert_eq!(doc["nodes"][0]["node"], "store-2", "{doc}");

    let (mut watch, mut watch_out) = spawn(&["watch", "--dir", dir, "--user", "bob"]);
    wait_line(&mut watch_out, "the message from before", |l| {
        l == "alice: before"
    })
    .await;
    wait_line(&mut watch_out, "the message from after", |l| {
        l == "alice: after"
    })
    .await;
    sigterm(&watch);
    exits_zero(&mut watch, "wactl watch").await;
    sigterm(&up);
    exits_zero(&mut up, "wactl up").await;
}

/// `wactl cluster status -o json` of the deployment in `dir`: exit code
/// and document.
async fn cluster_status(dir: &str) -> (Option<i32>, serde_json::Value) {
    let out = Command::new(WACTL)
        .args(["cluster", "status", "--dir", dir, "--output", "json"])
        .output()
        .await
        .unwrap();
    let doc = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), doc)
}

/// (island, epoch, role) of each node of a `cluster status` document.
fn roles(doc: &serde_json::Value) -> Vec<(String, u64, String)> {
    doc["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["island"].as_str().unwrap_or("?").to_string(),
                n["epoch"].as_u64().unwrap_or(0),
                n["role"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect()
}
