//! Where an engine's memory goes (issue 21, "find out where the 5.1 GB
//! went"): appends T MiB of 60 KB messages for 2000 offline users straight
//! into the engine, through the store's own mailbox layer
//! (`storage::open`, `Storage::append_batch` of B items, a durable flush
//! every F MiB), with the engine cache the store gives `[cache]
//! memory` = 64 MiB (16 MiB), and prints the RSS. It uses the system
//! allocator (the store's mimalloc is invisible to heap profilers), so
//! that it can run under heaptrack:
//!
//! ```sh
//! cargo build --profile dev -p wa-store --example engine_heap
//! heaptrack target/debug/examples/engine_heap sled 640 [B] [F]   # defaults 8, 64
//! heaptrack_print -f heaptrack.engine_heap.*.zst | less   # PEAK MEMORY CONSUMERS
//! ```
//!
//! docs/BENCHMARKS.md, "Store memory", has what it found.

use bytes::Bytes;
use common::proto::envelope::Content;
use common::proto::{Envelope, ItemKind};
use wa_store::config::Engine;
use wa_store::storage::{self, DedupeKey};

const MIB: u64 = 1 << 20;
const BODY: usize = 60_000;
const USERS: usize = 2000;

fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let engine = match args.first().map(String::as_str) {
        Some("fjall") => Engine::Fjall,
        _ => Engine::Sled,
    };
    let num = |i: usize, d: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    let total = num(1, 640) * MIB;
    // Items per `append_batch` (write-back writes a user's items in one),
    // and bytes written between durable flushes.
    let (batch_items, flush_every) = (num(2, 8) as usize, num(3, 64) * MIB);
    let dir = tempfile::tempdir().unwrap();
    let store = storage::open(dir.path(), engine, storage::engine_cache(64 * MIB)).unwrap();
    let body = Bytes::from(vec![3u8; BODY]);
    let n = total / BODY as u64;
    let mut seqs = vec![0u64; USERS];
    let mut written = 0u64;
    let mut next_flush = flush_every;
    let mut next_report = total / 5;
    let mut i = 0u64;
    while i < n {
        let user = i as usize % USERS;
        let to = format!("u{user}");
        let mut items = Vec::new();
        for _ in 0..batch_items {
            seqs[user] += 1;
            let id = Bytes::copy_from_slice(&i.to_be_bytes());
            items.push((
                seqs[user],
                Envelope {
                    from: "alice".into(),
                    from_device: 1,
                    id,
                    server_ts_ms: 1,
                    content: Some(Content::Body(body.clone())),
                    ..Default::default()
                },
            ));
            i += 1;
        }
        let batch: Vec<_> = items
            .iter()
            .map(|(seq, e)| {
                let key = DedupeKey {
                    to: &to,
                    from: "alice",
                    kind: ItemKind::Message,
                    id: &e.id,
                };
                (*seq, e, key)
            })
            .collect();
        store.append_batch(&to, &batch).unwrap();
        written += (batch_items * BODY) as u64;
        if written >= next_flush {
            store.flush().unwrap();
            next_flush += flush_every;
        }
        if written >= next_report {
            next_report += total / 5;
            println!(
                "engine heap ({engine:?}): {} MiB written, RSS {} MiB",
                written / MIB,
                rss() / MIB
            );
        }
    }
    store.flush().unwrap();
    println!(
        "engine heap ({engine:?}): {} MiB written at an engine cache of {} MiB, RSS at the end {} MiB",
        written / MIB,
        storage::engine_cache(64 * MIB) / MIB,
        rss() / MIB
    );
}
