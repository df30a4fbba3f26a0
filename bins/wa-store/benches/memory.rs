//! Memory benchmark (issue 21): the real `wa-store` process at `[cache]
//! memory` = M MiB takes T MiB of 60 KB messages for 2000 users who never
//! come online, over one link as fast as it answers; prints its RSS as it
//! goes, the peak (sampled every 200 ms), and how the RSS divides
//! (anonymous, file-backed) 12 s later, once the write-back is due.
//!
//! `cargo bench -p wa-store --bench memory -- [sled|fjall|auto] [M] [T]`
//! (defaults: both engines, 64, 640; `auto` is the default configuration,
//! which gives the new data directory fjall). docs/BENCHMARKS.md, "Store memory",
//! has the figures.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::link::{Append, link_down, link_up};
use support::{Link, PATIENCE, SECRET, config_toml, envelope, spawn_store, write_files};

const MIB: u64 = 1 << 20;
const BODY: usize = 60_000;
const USERS: usize = 2000;
const WINDOW: u64 = 64;

fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

async fn run(engine: &str, memory_mib: u64, total: u64) {
    let dir = tempfile::tempdir().unwrap();
    write_files(dir.path());
    let cfg = dir.path().join("wa-store.toml");
    std::fs::write(
        &cfg,
        config_toml(dir.path(), "127.0.0.1:0", engine)
            + &format!("[cache]\nmemory = \"{memory_mib} MiB\"\n"),
    )
    .unwrap();
    let (mut child, addr) = spawn_store(&cfg).await;
    let pid = child.id().unwrap();
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = tokio::spawn({
        let peak = Arc::clone(&peak);
        async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tick.tick().await;
                peak.fetch_max(rss(pid), Ordering::Relaxed);
            }
        }
    });
    let idle = rss(pid);

    let link = Link::open(addr, dir.path(), &SECRET).await;
    let (mut r, mut w) = link.split();
    let n = total / BODY as u64;
    let body = Bytes::from(vec![3u8; BODY]);
    let started = Instant::now();
    let writer = tokio::spawn(async move {
        let mut sent = 0u64;
        while sent < n {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&sent.to_be_bytes());
            w.queue(link_up::Kind::Append(Append {
                req: sent + 1,
                to: format!("u{}", sent as usize % USERS),
                envelope: Some(envelope("alice", Bytes::copy_from_slice(&id), body.clone())),
                epoch: 1,
                handoff: false,
                from_generation: 0,
            }))
            .await
            .unwrap();
            sent += 1;
            if sent.is_multiple_of(WINDOW) {
                w.flush().await.unwrap();
            }
        }
        w.flush().await.unwrap();
        w
    });
    let mut answered = 0u64;
    let mut next_report = n / 5;
    while answered < n {
        let f = tokio::time::timeout(PATIENCE, r.next())
            .await
            .expect("the store answers within patience")
            .unwrap()
            .expect("link open");
        if let link_down::Kind::AppendResult(a) = f {
            assert_eq!(a.code, 0, "{a:?}");
            answered += 1;
            if answered >= next_report {
                next_report += n / 5;
                println!(
                    "store memory ({engine}): {} MiB stored, RSS {} MiB",
                    answered * BODY as u64 / MIB,
                    rss(pid) / MIB
                );
            }
        }
    }
    let _w = writer.await.unwrap();
    let elapsed = started.elapsed();
    // The write-back of what is still in memory happens after the sync
    // delay (10 s): watch it too.
    tokio::time::sleep(Duration::from_secs(12)).await;
    sampler.abort();
    let peak = peak.load(Ordering::Relaxed);
    println!(
        "store memory ({engine}): {} MiB of 60 KB messages for {USERS} offline users in {elapsed:?} at [cache] memory = {memory_mib} MiB: RSS idle {} MiB, peak {} MiB, 12 s later {} MiB",
        total / MIB,
        idle / MIB,
        peak / MIB,
        rss(pid) / MIB,
    );
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let parts: Vec<&str> = status
        .lines()
        .filter(|l| l.starts_with("Rss"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .map(|l| Box::leak(l.into_boxed_str()) as &str)
        .collect();
    println!("store memory ({engine}): {}", parts.join(", "));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let st = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(st.success(), "wa-store exited with {st}");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let engines: Vec<&str> = match args.first().map(String::as_str) {
        Some(e @ ("sled" | "fjall" | "auto")) => vec![e],
        _ => vec!["sled", "fjall"],
    };
    let num = |i: usize, d: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    let (memory, total) = (num(1, 64), num(2, 640));
    for e in engines {
        run(e, memory, total * MIB).await;
    }
}
