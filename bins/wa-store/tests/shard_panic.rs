//! A panic in a home shard stops the real `wa-store` binary with exit code 1,
//! and the next start, on the same data directory, delivers every append the
//! store had accepted: exactly once, in order.
//!
//! The panic comes from the debug build's fault switch
//! `WA_STORE_FAULT_PANIC_ON_APPEND_TO` (`home/shard.rs`): an append to that
//! user panics inside its shard, halfway through. The sync delay is long,
//! so every accepted item is still only in the shards' memory and the
//! journal when the panic comes; with this many recipients some are almost
//! surely on the panicking shard, whose items only the journal's replay can
//! bring back.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;

use bytes::Bytes;
use common::link::{Append, Attach, LinkAck, link_down, link_up};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use support::{Link, PATIENCE, SECRET, config_toml, envelope, write_files};

/// Recipients, and messages each gets before the panic. (16 shards: the
/// chance that none of 64 recipients shares the panicking shard is 1.6 %.)
const RECIPIENTS: usize = 64;
const MESSAGES: usize = 5;
const FAULT_USER: &str = "doomed";
const SENDER: &str = "sender";
const MARKER_FROM: &str = "checker";

fn recipient(r: usize) -> String {
    format!("r{r}")
}

/// Message id: recipient, then counter.
fn message_id(r: usize, n: usize) -> Bytes {
    let mut id = [0u8; 16];
    id[0..8].copy_from_slice(&(r as u64).to_be_bytes());
    id[8..16].copy_from_slice(&(n as u64).to_be_bytes());
    Bytes::copy_from_slice(&id)
}

/// Starts the store on `cfg` (with the fault switch set to `fault`, if any)
/// and waits for its READY line.
async fn start(cfg: &Path, log: &Path, fault: Option<&str>) -> (Child, SocketAddr) {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wa-store"));
    cmd.arg("--config")
        .arg(cfg)
        .env("RUST_LOG", "warn")
        .env_remove("WA_STORE_FAULT_PANIC_ON_APPEND_TO")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .kill_on_drop(true);
    if let Some(user) = fault {
        cmd.env("WA_STORE_FAULT_PANIC_ON_APPEND_TO", user);
    }
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = tokio::time::timeout(PATIENCE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(addr) = line.strip_prefix("READY wa-store link=") {
                return addr.split_whitespace().next().unwrap().parse().unwrap();
            }
        }
        panic!("the store stopped before READY");
    })
    .await
    .expect("READY within patience");
    // (Drains stdout, so the store never blocks on a full pipe.)
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addr)
}

async fn connect(addr: SocketAddr, dir: &Path) -> Link {
    let mut link = Link::open(addr, dir, &SECRET).await;
    assert!(
        matches!(link.recv().await, Some(link_down::Kind::AuthOk(_))),
        "no AuthOk"
    );
    link
}

fn append(req: u64, to: String, from: &str, id: Bytes) -> link_up::Kind {
    link_up::Kind::Append(Append {
        req,
        to,
        envelope: Some(envelope(from, id, Bytes::from_static(b"body"))),
        epoch: 1,
        handoff: false,
        from_generation: 0,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_panic_exits_non_zero_and_the_restart_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    write_files(dir.path());
    let cfg = dir.path().join("store.toml");
    let log = dir.path().join("store.log");
    let config = config_toml(dir.path(), "127.0.0.1:0", "sled") + "[cache]\nsync_delay = \"1h\"\n";
    std::fs::write(&cfg, config).unwrap();

    // Accepted appends, each answered before the panic.
    let (mut store, addr) = start(&cfg, &log, Some(FAULT_USER)).await;
    let mut link = connect(addr, dir.path()).await;
    for n in 0..MESSAGES {
        for r in 0..RECIPIENTS {
            let req = (n * RECIPIENTS + r) as u64;
            link.w
                .queue(append(req, recipient(r), SENDER, message_id(r, n)))
                .await
                .unwrap();
        }
    }
    link.w.flush().await.unwrap();
    for _ in 0..MESSAGES * RECIPIENTS {
        match link.recv().await {
            Some(link_down::Kind::AppendResult(a)) => {
                assert_eq!(a.code, 0, "append refused: {a:?}");
                assert!(!a.duplicate, "a first append answered as a duplicate");
            }
            other => panic!("expected AppendResult, got {other:?}"),
        }
    }

    link.send(append(
        u64::MAX,
        FAULT_USER.into(),
        SENDER,
        message_id(999, 0),
    ))
    .await;
    let status = tokio::time::timeout(PATIENCE, store.wait())
        .await
        .expect("the store exits within patience after the panic")
        .unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        status.code(),
        Some(1),
        "exit status {status}; stderr:\n{text}"
    );
    assert!(
        text.contains("the next start replays the journal"),
        "stderr names the cause:\n{text}"
    );

    // Started again without the switch: every accepted item, once, in order.
    let (mut store, addr) = start(&cfg, &log, None).await;
    let mut link = connect(addr, dir.path()).await;
    for r in 0..RECIPIENTS {
        let session = r as u64 + 1;
        link.w
            .queue(link_up::Kind::Attach(Attach {
                epoch: 1,
                session,
                user: recipient(r),
                device: 1,
                generation: 1,
            }))
            .await
            .unwrap();
        // Behind everything the mailbox held: marks its end.
        link.w
            .queue(append(
                session,
                recipient(r),
                MARKER_FROM,
                message_id(r, 1000),
            ))
            .await
            .unwrap();
    }
    link.w.flush().await.unwrap();
    let mut got: Vec<Vec<Bytes>> = vec![Vec::new(); RECIPIENTS];
    let mut ended = 0;
    while ended < RECIPIENTS {
        match link.recv().await.expect("the store keeps the link") {
            link_down::Kind::AppendResult(a) => assert_eq!(a.code, 0, "marker refused: {a:?}"),
            link_down::Kind::Push(p) => {
                let r = (p.session - 1) as usize;
                let e = p.envelope.expect("pushes carry an envelope");
                if e.from == MARKER_FROM {
                    ended += 1;
                } else {
                    assert_eq!(e.from, SENDER);
                    got[r].push(e.id);
                }
                link.send(link_up::Kind::Ack(LinkAck {
                    session: p.session,
                    user: recipient(r),
                    seqs: vec![p.seq],
                }))
                .await;
            }
            link_down::Kind::Attached(_) => {}
            other => panic!("unexpected frame {other:?}"),
        }
    }
    for (r, ids) in got.iter().enumerate() {
        let want: Vec<Bytes> = (0..MESSAGES).map(|n| message_id(r, n)).collect();
        assert_eq!(
            ids,
            &want,
            "what {} was pushed after the restart",
            recipient(r)
        );
    }

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(store.id().unwrap() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = tokio::time::timeout(PATIENCE, store.wait())
        .await
        .expect("the store exits within patience after SIGTERM")
        .unwrap();
    assert!(status.success(), "exit after SIGTERM: {status}");
}
