//! The home's key-value service and device revocation over the real link:
//! compare-and-set, the last seen an account read reports, `REVOKED` for
//! attached and later sessions of an older generation, and both surviving a
//! kill -9 of the store once answered.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;

use bytes::Bytes;
use common::link::{
    Append, Attach, Detach, KvGet, KvPut, KvReq, KvResult, KvSpace, Revoke, kv_req,
};
use common::link::{link_down, link_up};
use common::proto::Code;
use support::{Link, PATIENCE, SECRET};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_util::sync::CancellationToken;

async fn start(dir: &Path) -> (SocketAddr, CancellationToken, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let text = support::config_toml(dir, &addr.to_string(), "sled");
    let config: wa_store::Config = toml::from_str(&text).unwrap();
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let task = tokio::spawn(async move {
        wa_store::run(config, listener, stop).await.unwrap();
    });
    (addr, shutdown, task)
}

async fn open(addr: SocketAddr, dir: &Path) -> Link {
    let mut l = Link::open(addr, dir, &SECRET).await;
    assert!(matches!(l.recv().await, Some(link_down::Kind::AuthOk(_))));
    l
}

async fn kv(l: &mut Link, req: u64, space: KvSpace, key: &str, op: kv_req::Op) -> KvResult {
    l.send(link_up::Kind::Kv(KvReq {
        epoch: 1,
        handoff: false,
        req,
        space: space as i32,
        key: key.into(),
        op: Some(op),
    }))
    .await;
    loop {
        match l.recv().await {
            Some(link_down::Kind::KvResult(r)) => {
                assert_eq!(r.req, req);
                return r;
            }
            Some(link_down::Kind::Presence(_) | link_down::Kind::Attached(_)) => {}
            other => panic!("expected KvResult, got {other:?}"),
        }
    }
}

fn get() -> kv_req::Op {
    kv_req::Op::Get(KvGet {})
}

fn put(value: &'static [u8], expected_version: u64) -> kv_req::Op {
    kv_req::Op::Put(KvPut {
        value: Bytes::from_static(value),
        expected_version,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_set_and_last_seen() {
    let dir = tempfile::tempdir().unwrap();
    support::write_files(dir.path());
    let (addr, shutdown, task) = start(dir.path()).await;
    let mut l = open(addr, dir.path()).await;

    let r = kv(&mut l, 1, KvSpace::Phone, "+15550001", get()).await;
    assert_eq!((r.code, r.version, r.value.len()), (0, 0, 0));
    let r = kv(&mut l, 2, KvSpace::Phone, "+15550001", put(b"alice", 0)).await;
    assert_eq!((r.code, r.version, r.conflict), (0, 1, false));
    // A second writer that also saw "absent" loses, and learns the winner.
    let r = kv(&mut l, 3, KvSpace::Phone, "+15550001", put(b"mallory", 0)).await;
    assert_eq!((r.code, r.version, r.conflict), (0, 1, true));
    assert_eq!(&r.value[..], b"alice");
    // Spaces are separate.
    let r = kv(&mut l, 4, KvSpace::Account, "+15550001", get()).await;
    assert_eq!(r.version, 0);
    // Delete keeps the version rising.
    let r = kv(&mut l, 5, KvSpace::Phone, "+15550001", put(b"", 1)).await;
    assert_eq!((r.version, r.value.len(), r.conflict), (2, 0, false));

    // An account read tells when its user was last connected.
    let r = kv(&mut l, 6, KvSpace::Account, "alice", get()).await;
    assert_eq!(r.last_seen_ms, 0);
    l.send(link_up::Kind::Attach(Attach {
        epoch: 1,
        session: 1,
        user: "alice".into(),
        device: 1,
        generation: 1,
    }))
    .await;
    let before = common::fsutil::now_ms();
    let r = kv(&mut l, 7, KvSpace::Account, "alice", get()).await;
    assert!(r.last_seen_ms >= before, "online users are seen now");
    l.send(link_up::Kind::Detach(Detach {
        session: 1,
        user: "alice".into(),
    }))
    .await;
    let r = kv(&mut l, 8, KvSpace::Account, "alice", get()).await;
    assert!(r.last_seen_ms >= before);

    // Refused requests: unknown space, oversized value, no op.
    let r = kv(&mut l, 9, KvSpace::Unspecified, "x", get()).await;
    assert_eq!(r.code, Code::BadFrame as u32);
    l.send(link_up::Kind::Kv(KvReq {
        epoch: 1,
        handoff: false,
        req: 10,
        space: KvSpace::Account as i32,
        key: "alice".into(),
        op: Some(kv_req::Op::Put(KvPut {
            value: Bytes::from(vec![0; common::link::MAX_KV_VALUE + 1]),
            expected_version: 0,
        })),
    }))
    .await;
    match l.recv().await {
        Some(link_down::Kind::KvResult(r)) => {
            assert_eq!((r.req, r.code), (10, Code::BodyTooLarge as u32))
        }
        other => panic!("{other:?}"),
    }
    let r = kv(&mut l, 11, KvSpace::Account, "alice", get()).await;
    assert_eq!(r.version, 0, "nothing was stored by the refused put");

    drop(l);
    shutdown.cancel();
    tokio::time::timeout(PATIENCE, task).await.unwrap().unwrap();
}

async fn expect_kick(l: &mut Link, session: u64) {
    loop {
        match l.recv().await {
            Some(link_down::Kind::Kick(k)) => {
                assert_eq!((k.session, k.code), (session, Code::Revoked as u32));
                return;
            }
            Some(link_down::Kind::Presence(_) | link_down::Kind::Attached(_)) => {}
            other => panic!("expected a Kick, got {other:?}"),
        }
    }
}

async fn revoke(l: &mut Link, req: u64, user: &str, device: u32, generation: u32) -> u32 {
    l.send(link_up::Kind::Revoke(Revoke {
        epoch: 1,
        handoff: false,
        req,
        user: user.into(),
        device,
        generation,
    }))
    .await;
    loop {
        match l.recv().await {
            Some(link_down::Kind::RevokeResult(r)) => {
                assert_eq!((r.req, r.code), (req, 0));
                return r.kicked;
            }
            Some(
                link_down::Kind::Kick(_)
                | link_down::Kind::Presence(_)
                | link_down::Kind::Attached(_),
            ) => {}
            other => panic!("expected RevokeResult, got {other:?}"),
        }
    }
}

fn attach(session: u64, device: u32, generation: u32) -> link_up::Kind {
    link_up::Kind::Attach(Attach {
        epoch: 1,
        session,
        user: "bob".into(),
        device,
        generation,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_kicks_older_generations_now_and_later() {
    let dir = tempfile::tempdir().unwrap();
    support::write_files(dir.path());
    let (addr, shutdown, task) = start(dir.path()).await;
    let mut edge = open(addr, dir.path()).await;
    let mut reg = open(addr, dir.path()).await;

    // Device 1 at generation 1 (session 1), device 2 (session 2).
    edge.send(attach(1, 1, 1)).await;
    edge.send(attach(2, 2, 1)).await;
    // A read of bob's account on the same link lands on bob's shard after
    // the attaches: once it is answered, they are in place (the revoke comes
    // on another link, which the store may read first).
    kv(&mut edge, 99, KvSpace::Account, "bob", get()).await;
    assert_eq!(revoke(&mut reg, 1, "bob", 1, 2).await, 1);
    expect_kick(&mut edge, 1).await;
    // A later attach with the old generation is refused; the new one is not.
    edge.send(attach(3, 1, 1)).await;
    expect_kick(&mut edge, 3).await;
    edge.send(attach(4, 1, 2)).await;
    // Revoking again lower changes nothing; device 2 was never touched.
    assert_eq!(revoke(&mut reg, 2, "bob", 1, 1).await, 0);
    edge.append(1, "bob", "alice", 1, b"hi").await;
    let mut pushed = Vec::new();
    while pushed.len() < 2 {
        match edge.recv().await {
            Some(link_down::Kind::Push(p)) => pushed.push(p.session),
            Some(
                link_down::Kind::AppendResult(_)
                | link_down::Kind::Presence(_)
                | link_down::Kind::Attached(_),
            ) => {}
            other => panic!("{other:?}"),
        }
    }
    pushed.sort();
    assert_eq!(pushed, [2, 4]);

    // Every append a device makes is checked against its revocation at its
    // own home: one sent under the revoked generation is refused with
    // REVOKED (as when a revocation lands during a session, before the
    // kick reaches the edge), the current one is stored.
    for (req, generation, want) in [(20, 1, Code::Revoked as u32), (21, 2, 0)] {
        edge.send(link_up::Kind::Append(Append {
            req,
            to: "alice".into(),
            envelope: Some(support::envelope(
                "bob",
                Bytes::from(vec![req as u8; 16]),
                Bytes::from_static(b"sent by bob's device 1"),
            )),
            epoch: 1,
            handoff: false,
            from_generation: generation,
        }))
        .await;
        loop {
            match edge.recv().await {
                Some(link_down::Kind::AppendResult(r)) if r.req == req => {
                    assert_eq!(r.code, want, "append of generation {generation}");
                    break;
                }
                Some(
                    link_down::Kind::AppendResult(_)
                    | link_down::Kind::Presence(_)
                    | link_down::Kind::Push(_),
                ) => {}
                other => panic!("{other:?}"),
            }
        }
    }

    drop((edge, reg));
    shutdown.cancel();
    tokio::time::timeout(PATIENCE, task).await.unwrap().unwrap();
}

/// Starts the store binary on `listen` and returns it with its link address.
async fn spawn(dir: &Path, listen: &str) -> (tokio::process::Child, SocketAddr) {
    let cfg = dir.join("store.toml");
    std::fs::write(&cfg, support::config_toml(dir, listen, "sled")).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_wa-store"))
        .arg("--config")
        .arg(&cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = tokio::time::timeout(PATIENCE, async {
        loop {
            let l = lines.next_line().await.unwrap().expect("READY");
            if let Some(a) = l.strip_prefix("READY wa-store link=") {
                return a.split_whitespace().next().unwrap().parse().unwrap();
            }
        }
    })
    .await
    .unwrap();
    (child, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answered_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    support::write_files(dir.path());
    let (mut child, addr) = spawn(dir.path(), "127.0.0.1:0").await;
    let mut l = open(addr, dir.path()).await;
    for i in 0..20u64 {
        let key = format!("user{i}");
        let r = kv(&mut l, i, KvSpace::Account, &key, put(b"record", 0)).await;
        assert_eq!((r.code, r.version), (0, 1));
    }
    assert_eq!(revoke(&mut l, 100, "bob", 1, 5).await, 0);
    child.start_kill().unwrap();
    child.wait().await.unwrap();

    let (_child, addr) = spawn(dir.path(), &addr.to_string()).await;
    let mut l = open(addr, dir.path()).await;
    for i in 0..20u64 {
        let key = format!("user{i}");
        let r = kv(&mut l, i, KvSpace::Account, &key, get()).await;
        assert_eq!((r.version, &r.value[..]), (1, &b"record"[..]), "{key}");
    }
    l.send(attach(1, 1, 4)).await;
    expect_kick(&mut l, 1).await;
}

/// The binary turns transparent huge pages off for itself before it serves
/// (`wa_store::disable_transparent_huge_pages`, docs/BENCHMARKS.md, the run
/// "huge pages"); the kernel reports the process's setting.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_runs_without_transparent_huge_pages() {
    let dir = tempfile::tempdir().unwrap();
    support::write_files(dir.path());
    let (child, _addr) = spawn(dir.path(), "127.0.0.1:0").await;
    let pid = child.id().expect("running");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("THP_enabled:"))
        .expect("/proc/PID/status has THP_enabled (Linux 5.0 and later)");
    assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
}
