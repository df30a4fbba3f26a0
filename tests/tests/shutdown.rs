//! SIGTERM: both services exit 0 within their grace period; the store answers
//! and flushes the appends it already received; clients are told goodbye.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use common::client::{Event, Transport};
use common::proto::Code;
use support::{Deployment, PATIENCE, expect, next_message, sigterm};

/// The grace period in the test configs (support::store_toml / chat_toml).
const GRACE: Duration = Duration::from_secs(5);

async fn exits_zero_within_grace(child: &mut tokio::process::Child, name: &str) {
    sigterm(child);
    let status = tokio::time::timeout(GRACE + Duration::from_secs(2), child.wait())
        .await
        .unwrap_or_else(|_| panic!("{name} did not exit within its grace period"))
        .unwrap();
    assert!(status.success(), "{name} exited with {status}");
}

/// Waits for `Disconnected { ShuttingDown }`, ignoring anything else.
async fn goodbye(events: &mut common::client::Events, who: &str) {
    tokio::time::timeout(PATIENCE, async {
        while let Some(e) = events.next().await {
            if let Event::Disconnected {
                code: Some(Code::ShuttingDown),
                ..
            } = e
            {
                return;
            }
        }
        panic!("{who}: events ended without a goodbye");
    })
    .await
    .unwrap_or_else(|_| panic!("{who} heard no SHUTTING_DOWN goodbye"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_both_services_and_loses_nothing() {
    const N: usize = 2000;
    let (mut d, mut chat) = Deployment::start_processes().await;
    let (a, mut ea) = d.client("alice", Transport::Tcp).await;
    let (b, mut eb) = d.client("bob", Transport::Quic).await;

    // B takes whatever arrives, acking, until it has all N.
    let receiver = tokio::spawn(async move {
        let mut seen = Vec::new();
        while seen.len() < N {
            let (seq, from, id, _) = next_message(&mut eb).await;
            assert_eq!(from, "alice");
            assert!(!seen.contains(&id), "duplicate delivery");
            seen.push(id);
            b.ack(&[seq]).await.unwrap();
        }
        (b, eb, seen)
    });

    // A burst of sends, then SIGTERM to the store while most are in flight.
    let mut ids = Vec::with_capacity(N);
    for i in 0..N {
        ids.push(a.send("bob", Bytes::from(format!("s{i}"))).await.unwrap());
    }
    let mut accepted = HashSet::new();
    let first = expect(&mut ea, "the first Accepted", |e| match e {
        Event::Accepted { id, .. } => Some(*id),
        _ => None,
    })
    .await;
    accepted.insert(first);
    let mut store = d.store_process.take().unwrap();
    exits_zero_within_grace(&mut store.child, "wa-store").await;

    // Restarted on the same address: the edge relinks, the client resends
    // what was not accepted, and everything arrives once, in order.
    d.store_process = Some(support::spawn_store_process(d.dir.path(), store.addr).await);
    tokio::time::timeout(PATIENCE * 2, async {
        while accepted.len() < N {
            match ea.next().await.expect("A's events go on") {
                Event::Accepted { id, .. } => {
                    accepted.insert(id);
                }
                Event::Rejected { id, code, .. } => panic!("{id:?} rejected with {code:?}"),
                _ => {}
            }
        }
    })
    .await
    .expect("every message accepted after the restart");
    let (b, mut eb, seen) = tokio::time::timeout(PATIENCE * 2, receiver)
        .await
        .unwrap()
        .unwrap();
    let order: Vec<usize> = seen
        .iter()
        .map(|id| ids.iter().position(|x| x == id).unwrap())
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "FIFO per sender");

    // SIGTERM to the edge: every client hears SHUTTING_DOWN, the edge exits 0.
    sigterm(&chat.child);
    goodbye(&mut ea, "alice").await;
    goodbye(&mut eb, "bob").await;
    let status = tokio::time::timeout(GRACE + Duration::from_secs(2), chat.child.wait())
        .await
        .expect("wa-chat exits within its grace period")
        .unwrap();
    assert!(status.success(), "wa-chat exited with {status}");
    a.close().await;
    b.close().await;
    d.stop().await;
}
