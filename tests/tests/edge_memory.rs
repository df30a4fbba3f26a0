//! The edge's memory during a stall (issue 21): 20 senders of 60 KB bodies
//! while their home is frozen (SIGSTOP; the link's timeouts set long, so
//! that only the budget bounds what the edge holds). The edge stops reading
//! from clients once `[limits] request_memory` of requests wait, so its RSS
//! stays near that budget instead of growing with every sender's window
//! (600 MB before); after SIGCONT every message is accepted and delivered
//! once.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use common::client::{Event, MessageId, Transport};
use nix::sys::signal::Signal;
use support::{Deployment, PATIENCE, next_message};

const SENDERS: usize = 20;
/// Messages per sender: 20 × 50 × 60 KB = 60 MB, well past the budget.
const N: usize = 50;
const BODY: usize = 60_000;
const BUDGET_MIB: u64 = 16;
/// What the edge holds besides requests (its code, TLS state, buffers), as
/// measured idle, with room to spare.
const OVERHEAD_MIB: u64 = 32;
const STALL: Duration = Duration::from_secs(10);

/// The resident memory of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status");
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_keeps_to_its_request_budget_while_a_home_stalls() {
    let extra = format!(
        "[limits]\nrequest_memory = \"{BUDGET_MIB} MiB\"\n[link]\ntimeout = \"120s\"\nrequest_timeout = \"120s\"\n"
    );
    let (d, chat) = Deployment::start_processes_with(&extra).await;
    let edge = chat.child.id().unwrap();
    let idle = rss(edge);

    let body = Bytes::from(vec![5u8; BODY]);
    let mut clients = Vec::new();
    for i in 0..SENDERS {
        clients.push(d.client(&format!("s{i}"), Transport::Tcp).await);
    }
    let store = &d.store_process.as_ref().unwrap().child;
    support::cluster::signal(store, Signal::SIGSTOP);
    let mut senders = Vec::new();
    for (c, events) in clients {
        let mut ids: Vec<MessageId> = Vec::new();
        for _ in 0..N {
            ids.push(c.send("bob", body.clone()).await.unwrap());
        }
        senders.push((c, events, ids));
    }
    let mut peak = 0;
    let mut ticks = tokio::time::interval(Duration::from_millis(250));
    let until = tokio::time::Instant::now() + STALL;
    while tokio::time::Instant::now() < until {
        ticks.tick().await;
        peak = peak.max(rss(edge));
    }
    let mib = |b: u64| b / (1 << 20);
    println!(
        "edge memory: {SENDERS} senders × {N} × {BODY} bytes during a {STALL:?} stall: edge RSS idle {} MiB, peak {} MiB (budget {BUDGET_MIB} MiB + {OVERHEAD_MIB} MiB overhead allowed)",
        mib(idle),
        mib(peak)
    );
    assert!(
        peak < (BUDGET_MIB + OVERHEAD_MIB) << 20,
        "edge RSS {} MiB",
        mib(peak)
    );

    let store = &d.store_process.as_ref().unwrap().child;
    support::cluster::signal(store, Signal::SIGCONT);
    let mut all = HashSet::new();
    for (c, mut events, ids) in senders {
        let mut waiting: HashSet<MessageId> = ids.iter().copied().collect();
        tokio::time::timeout(4 * PATIENCE, async {
            while !waiting.is_empty() {
                match events.next().await.expect("the client runs") {
                    Event::Accepted { id, .. } => assert!(waiting.remove(&id), "{id:?}"),
                    Event::Connected { .. }
                    | Event::Disconnected { .. }
                    | Event::Waiting { .. }
                    | Event::Retrying { .. }
                    | Event::Receipt { .. } => {}
                    other => panic!("sender: {other:?}"),
                }
            }
        })
        .await
        .expect("every send accepted after SIGCONT");
        all.extend(ids);
        c.close().await;
    }
    let (bob, mut eb) = d.client("bob", Transport::Tcp).await;
    let mut got = HashSet::new();
    while got.len() < all.len() {
        let (seq, _, id, _) = next_message(&mut eb).await;
        assert!(got.insert(id), "delivered twice: {id:?}");
        bob.ack(&[seq]).await.unwrap();
    }
    assert_eq!(got, all);
    println!(
        "edge memory: all {} messages accepted and delivered once",
        got.len()
    );
    bob.close().await;
    d.stop().await;
    let mut chat = chat;
    support::sigterm(&chat.child);
    let st = tokio::time::timeout(PATIENCE, chat.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(st.success(), "wa-chat exited with {st}");
}
