//! Draining an edge under load, black box: 500 clients reach edge 1
//! through a load balancer; a sender on edge 2 writes to every one of them
//! before and during `POST /admin/drain` (what `wactl drain` calls) on
//! edge 1, and the balancer sends new connections to edge 2 from the
//! moment edge 1 turns not ready. Every client ends up on edge 2 with every
//! message once, and the moves spread over the drain window instead of
//! arriving all at once (the reconnect storm the seeds warn about).

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::client::{Client, Event, MessageId, Transport};
use support::PATIENCE;
use support::balancer::Balancer;
use support::cluster::Cluster;

const CLIENTS: usize = 500;
const WINDOW: Duration = Duration::from_secs(3);

/// What each client saw: when it was welcomed and by which edge, and the
/// messages it got.
#[derive(Default)]
struct Seen {
    connected: Vec<(Instant, String)>,
    got: Vec<MessageId>,
}

type Log = Arc<Mutex<HashMap<String, Seen>>>;

/// Keeps `user`'s client reading, acknowledging and logging.
fn reader(user: String, client: Client, mut events: common::client::Events, log: Log) {
    tokio::spawn(async move {
        while let Some(e) = events.next().await {
            match e {
                Event::Connected { server } => {
                    let mut l = log.lock().unwrap();
                    let s = l.entry(user.clone()).or_default();
                    s.connected.push((Instant::now(), server));
                }
                Event::Message { seq, id, .. } => {
                    log.lock()
                        .unwrap()
                        .entry(user.clone())
                        .or_default()
                        .got
                        .push(id);
                    let _ = client.ack(&[seq]).await;
                }
                _ => {}
            }
        }
    });
}

/// Sends one message to every user, each until Accepted; their ids.
async fn round(
    sender: &Client,
    events: &mut common::client::Events,
    users: &[String],
    tag: &str,
) -> HashMap<String, MessageId> {
    let mut ids = HashMap::new();
    for u in users {
        let id = sender
            .send(u, Bytes::from(format!("{tag} to {u}")))
            .await
            .unwrap();
        // (Delivered receipts come meanwhile: acknowledged, like messages.)
        tokio::time::timeout(PATIENCE, async {
            loop {
                match events.next().await.expect("the sender's events go on") {
                    Event::Accepted { id: got, .. } if got == id => return,
                    Event::Receipt { seq, .. } => sender.ack(&[seq]).await.unwrap(),
                    Event::Rejected { code, message, .. } => panic!("{u}: {code:?} {message}"),
                    _ => {}
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the send to {u} was not accepted"));
        ids.insert(u.clone(), id);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_an_edge_moves_500_clients_over_the_window_and_loses_nothing() {
    let c = Cluster::start(1, 2).await;
    let lb = Balancer::start(vec![c.edges[0].tcp, c.edges[1].tcp]).await;
    let users: Vec<String> = (0..CLIENTS).map(|i| format!("u{i}")).collect();
    let log: Log = Arc::default();
    // Connected in batches (each is a TLS handshake and an attach).
    for batch in users.chunks(50) {
        let mut joins = Vec::new();
        for u in batch {
            let mut cfg = c.client_config(u, 1, Transport::Tcp);
            cfg.addr = lb.addr;
            joins.push(tokio::spawn(Client::connect(cfg)));
        }
        for (u, j) in batch.iter().zip(joins) {
            let (client, events) = j.await.unwrap().expect("client connects");
            reader(u.clone(), client, events, Arc::clone(&log));
        }
    }
    let (sender, mut sent_events) = c.client("sender", 2).await;
    let before = round(&sender, &mut sent_events, &users, "before").await;

    // The drain, and the balancer following edge 1's /readyz.
    let token = std::fs::read(c.dir.path().join("admin.token")).unwrap();
    let plan = common::admin::client::call_json(
        c.edges[0].admin,
        http::Method::POST,
        &format!("/admin/drain?over_ms={}", WINDOW.as_millis()),
        &token,
    )
    .await
    .unwrap();
    let drained = Instant::now();
    lb.choose(1);
    assert_eq!(plan["sessions"], CLIENTS, "{plan}");
    let during = round(&sender, &mut sent_events, &users, "during").await;

    // Every client on edge 2 with both messages, once.
    let t = Instant::now();
    loop {
        let done = {
            let l = log.lock().unwrap();
            users.iter().all(|u| {
                l.get(u).is_some_and(|s| {
                    s.got.contains(&before[u])
                        && s.got.contains(&during[u])
                        && s.connected.last().is_some_and(|(_, e)| e == "chat-2")
                })
            })
        };
        if done {
            break;
        }
        assert!(
            t.elapsed() < PATIENCE,
            "not every client moved with its messages"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let moved: Vec<Duration> = {
        let l = log.lock().unwrap();
        users
            .iter()
            .map(|u| {
                let s = &l[u];
                let unique: HashSet<_> = s.got.iter().collect();
                assert_eq!(unique.len(), s.got.len(), "{u} got a message twice");
                assert_eq!(s.got.len(), 2, "{u}: {:?}", s.got);
                let (at, edge) = s.connected.last().unwrap();
                assert_eq!(edge, "chat-2");
                assert_eq!(s.connected.len(), 2, "{u} moved once: {:?}", s.connected);
                at.saturating_duration_since(drained)
            })
            .collect()
    };
    // The reconnects over time, in half seconds from the drain's start.
    let mut buckets = [0usize; 10];
    for m in &moved {
        buckets[((m.as_millis() / 500) as usize).min(buckets.len() - 1)] += 1;
    }
    println!("reconnects to edge 2 per 500 ms since the drain began (window {WINDOW:?}):");
    for (i, n) in buckets.iter().enumerate() {
        println!(
            "  {:>4}-{:>4} ms {n:>4} {}",
            i * 500,
            i * 500 + 499,
            "#".repeat(n / 4)
        );
    }
    let first_second = moved
        .iter()
        .filter(|m| **m < Duration::from_secs(1))
        .count();
    assert!(
        first_second < CLIENTS * 2 / 3,
        "{first_second} of {CLIENTS} moved in the first second: not spread"
    );
    let last = moved.iter().max().unwrap();
    assert!(
        *last >= WINDOW / 2,
        "every move within {last:?} of a {WINDOW:?} window: not spread"
    );
    let status = support::admin_get(c.dir.path(), c.edges[0].admin, "/admin/status").await;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["connections"], 0, "edge 1 is empty: {status}");
    sender.close().await;
    c.stop().await;
}
