//! The data directory remembers the engine and format that wrote it
//! (`data_dir/FORMAT`), with the real binary: a store configured with the
//! other engine, or meeting a format it does not know, exits 64 naming both
//! and changes nothing in the directory (no empty database beside the real
//! one), `--check-config` says the same, and the right engine still opens
//! it with its data. A directory from before markers is adopted by the
//! engine whose database it holds.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::SystemTime;

use bytes::Bytes;
use common::link::{KvGet, KvPut, KvReq, KvResult, KvSpace, kv_req, link_down, link_up};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::{Link, PATIENCE, SECRET};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The store's config for `engine`, written beside the data (`dir/db`).
fn config(dir: &Path, engine: &str) -> PathBuf {
    let path = dir.join(format!("store-{engine}.toml"));
    std::fs::write(&path, support::config_toml(dir, "127.0.0.1:0", engine)).unwrap();
    path
}

fn command(dir: &Path, engine: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wa-store"));
    c.arg("--config")
        .arg(config(dir, engine))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    c
}

/// Starts the store and waits for its READY line.
async fn start(dir: &Path, engine: &str) -> (Child, SocketAddr) {
    let mut child = command(dir, engine)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(addr) = line.strip_prefix("READY wa-store link=") {
                return addr.split_whitespace().next().unwrap().parse().unwrap();
            }
        }
        panic!("wa-store ({engine}) ended its output without READY");
    };
    let addr = tokio::time::timeout(PATIENCE, ready)
        .await
        .expect("READY within patience");
    (child, addr)
}

/// SIGTERM, then a clean exit.
async fn stop(mut child: Child) {
    let pid = Pid::from_raw(child.id().unwrap() as i32);
    kill(pid, Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .expect("stops within patience")
        .unwrap();
    assert!(status.success(), "{status:?}");
}

/// Runs the store expecting a refusal (exit 64); its stderr.
async fn refused(dir: &Path, engine: &str, args: &[&str]) -> String {
    let out = tokio::time::timeout(
        PATIENCE,
        command(dir, engine)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output(),
    )
    .await
    .expect("exits within patience")
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(64),
        "{engine} {args:?}: stdout {:?} stderr {stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("READY"),
        "{engine} {args:?}"
    );
    stderr
}

/// Every path under `dir` with its modification time, and for files their
/// length and checksum: what "nothing changed" compares.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (SystemTime, Option<(u64, u32)>)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            let content = if meta.is_dir() {
                todo.push(p.clone());
                None
            } else {
                let bytes = std::fs::read(&p).unwrap();
                Some((bytes.len() as u64, crc32fast::hash(&bytes)))
            };
            out.insert(p, (meta.modified().unwrap(), content));
        }
    }
    out.insert(
        dir.to_owned(),
        (std::fs::metadata(dir).unwrap().modified().unwrap(), None),
    );
    out
}

async fn kv(addr: SocketAddr, dir: &Path, op: kv_req::Op) -> KvResult {
    let mut l = Link::open(addr, dir, &SECRET).await;
    assert!(matches!(l.recv().await, Some(link_down::Kind::AuthOk(_))));
    l.send(link_up::Kind::Kv(KvReq {
        epoch: 1,
        handoff: false,
        req: 1,
        space: KvSpace::Phone as i32,
        key: "+15550001".into(),
        op: Some(op),
    }))
    .await;
    loop {
        match l.recv().await {
            Some(link_down::Kind::KvResult(r)) => return r,
            Some(link_down::Kind::Presence(_)) => {}
            other => panic!("expected KvResult, got {other:?}"),
        }
    }
}

/// A data directory written by `engine`, holding one key-value record.
async fn written_by(engine: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    support::write_files(dir.path());
    let (child, addr) = start(dir.path(), engine).await;
    let put = kv_req::Op::Put(KvPut {
        value: Bytes::from_static(b"alice"),
        expected_version: 0,
    });
    let r = kv(addr, dir.path(), put).await;
    assert_eq!((r.code, r.version, r.conflict), (0, 1, false));
    stop(child).await;
    dir
}

/// Starts `engine` on `dir` and checks the record [`written_by`] stored.
async fn still_has_the_data(dir: &Path, engine: &str) {
    let (child, addr) = start(dir, engine).await;
    let r = kv(addr, dir, kv_req::Op::Get(KvGet {})).await;
    assert_eq!((r.code, r.version, &r.value[..]), (0, 1, &b"alice"[..]));
    stop(child).await;
}

fn marker(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("db/FORMAT")).unwrap()
}

async fn the_other_engine_is_refused(written: &str, other: &str) {
    let dir = written_by(written).await;
    let db = dir.path().join("db");
    assert!(
        marker(dir.path()).contains(&format!("engine = \"{written}\"\nformat = 1\n")),
        "{}",
        marker(dir.path())
    );
    let before = snapshot(&db);
    for args in [&[][..], &["--check-config"][..]] {
        let stderr = refused(dir.path(), other, args).await;
        assert!(
            stderr.contains(&format!("written by engine {written} (format 1)"))
                && stderr.contains(&format!("configured with engine = \"{other}\"")),
            "{args:?}: {stderr}"
        );
        assert_eq!(snapshot(&db), before, "{args:?}: the directory changed");
    }
    assert!(!db.join(other).exists());
    still_has_the_data(dir.path(), written).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sled_directory_refuses_fjall_and_keeps_its_data() {
    the_other_engine_is_refused("sled", "fjall").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fjall_directory_refuses_sled_and_keeps_its_data() {
    the_other_engine_is_refused("fjall", "sled").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_format_is_refused_naming_it() {
    let dir = written_by("sled").await;
    let db = dir.path().join("db");
    std::fs::write(db.join("FORMAT"), "engine = \"sled\"\nformat = 999\n").unwrap();
    let before = snapshot(&db);
    for args in [&[][..], &["--check-config"][..]] {
        let stderr = refused(dir.path(), "sled", args).await;
        assert!(
            stderr.contains("format 999") && stderr.contains("reads format 1 only"),
            "{args:?}: {stderr}"
        );
        assert_eq!(snapshot(&db), before, "{args:?}: the directory changed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_from_before_markers_is_adopted_by_its_engine() {
    let dir = written_by("sled").await;
    let db = dir.path().join("db");
    // What a store before markers left: the same files, no FORMAT.
    std::fs::remove_file(db.join("FORMAT")).unwrap();
    let before = snapshot(&db);
    let stderr = refused(dir.path(), "fjall", &[]).await;
    assert!(
        stderr.contains("holds a sled database") && stderr.contains("engine = \"fjall\""),
        "{stderr}"
    );
    assert_eq!(snapshot(&db), before, "the directory changed");
    still_has_the_data(dir.path(), "sled").await;
    assert!(marker(dir.path()).contains("engine = \"sled\"\nformat = 1\n"));
    let stderr = refused(dir.path(), "fjall", &["--check-config"]).await;
    assert!(stderr.contains("written by engine sled"), "{stderr}");
}

/// The upgrade path of `engine = "auto"` (the default): a directory sled
/// wrote, marked or from before markers, stays sled with its data; a new
/// directory gets fjall.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_keeps_the_engine_a_directory_records_and_gives_a_new_one_fjall() {
    let dir = written_by("sled").await;
    let db = dir.path().join("db");
    still_has_the_data(dir.path(), "auto").await;
    assert!(!db.join("fjall").exists(), "auto opened no second database");
    assert!(marker(dir.path()).contains("engine = \"sled\"\nformat = 1\n"));
    std::fs::remove_file(db.join("FORMAT")).unwrap();
    still_has_the_data(dir.path(), "auto").await;
    assert!(!db.join("fjall").exists(), "auto opened no second database");
    assert!(marker(dir.path()).contains("engine = \"sled\"\nformat = 1\n"));

    let new = written_by("auto").await;
    let db = new.path().join("db");
    assert!(db.join("fjall").is_dir() && !db.join("sled").exists());
    assert!(marker(new.path()).contains("engine = \"fjall\"\nformat = 1\n"));
    still_has_the_data(new.path(), "auto").await;
    still_has_the_data(new.path(), "fjall").await;
}
