//! A reconnect storm that passes (DESIGN §6, issue 22): an edge restarts
//! with every session on it; the new edge on the same addresses admits very few
//! logins per second; every client (TCP and QUIC, through the client
//! library) is refused with `OVERLOADED` and a retry-after, honours it, and
//! ends up logged in; the edge counts the refusals; every message sent
//! before the storm is delivered exactly once.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::client::{Client, Event, Transport};
use common::proto::Code;
use support::{ChatProcess, Deployment, PATIENCE, admin_get, counter};

/// Receivers (half TCP, half QUIC).
const CLIENTS: usize = 16;
/// Messages each receiver is sent before the storm.
const MESSAGES: usize = 5;

/// Admission on the edge that takes the storm: 4 logins/s, 4 at once,
/// 250 ms of queueing; a herd of 17 must be refused.
const TIGHT: &str = "[limits]\nlogin_rate = 4\nlogin_burst = 4\nlogin_queue_wait = \"250ms\"\n";

/// What one client saw.
#[derive(Default, Debug)]
struct Seen {
    connected: usize,
    /// `Waiting` after an `OVERLOADED` refusal: (retry-after, wait chosen).
    overloaded: Vec<(Duration, Duration)>,
    /// Message ids received, with how often.
    messages: HashMap<common::client::MessageId, usize>,
}

/// Consumes `events` into `seen`, acknowledging every message.
fn watch(client: Arc<Client>, mut events: common::client::Events, seen: Arc<Mutex<Seen>>) {
    tokio::spawn(async move {
        while let Some(e) = events.next().await {
            let ack = {
                let mut s = seen.lock().unwrap();
                match e {
                    Event::Connected { .. } => {
                        s.connected += 1;
                        None
                    }
                    Event::Waiting {
                        code: Some(Code::Overloaded),
                        retry_after,
                        after,
                        ..
                    } => {
                        let r = retry_after.expect("an OVERLOADED refusal carries a retry-after");
                        s.overloaded.push((r, after));
                        None
                    }
                    Event::Message { seq, id, .. } => {
                        *s.messages.entry(id).or_default() += 1;
                        Some(seq)
                    }
                    _ => None,
                }
            };
            if let Some(seq) = ack {
                let _ = client.ack(&[seq]).await;
            }
        }
    });
}

/// wa-chat as a process listening on `tcp` and `quic` (port 0: any).
async fn spawn_chat_at(dir: &Path, tcp: &str, quic: &str, extra: &str) -> ChatProcess {
    let text = support::chat_toml(dir)
        .replace("tcp = \"127.0.0.1:0\"", &format!("tcp = \"{tcp}\""))
        .replace("quic = \"127.0.0.1:0\"", &format!("quic = \"{quic}\""))
        + extra;
    support::spawn_chat_process_text(&dir.join("wa-chat-storm.toml"), text).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_herd_refused_with_retry_after_all_comes_back_and_nothing_is_lost() {
    let (d, mut first) = Deployment::start_processes().await;
    let transport = |i: usize| {
        if i.is_multiple_of(2) {
            Transport::Tcp
        } else {
            Transport::Quic
        }
    };
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let user = format!("storm-{i}");
        let (c, events) = d.client(&user, transport(i)).await;
        let c = Arc::new(c);
        let seen = Arc::new(Mutex::new(Seen::default()));
        watch(Arc::clone(&c), events, Arc::clone(&seen));
        clients.push((user, c, seen));
    }
    let (sender, mut sender_events) = d.client("storm-sender", Transport::Tcp).await;
    let mut sent: HashMap<String, Vec<common::client::MessageId>> = HashMap::new();
    for (user, _, _) in &clients {
        for k in 0..MESSAGES {
            let id = sender
                .send(user, Bytes::from(format!("before the storm {k}")))
                .await
                .unwrap();
            sent.entry(user.clone()).or_default().push(id);
        }
    }
    for _ in 0..CLIENTS * MESSAGES {
        support::expect(&mut sender_events, "Accepted", |e| {
            matches!(e, Event::Accepted { .. }).then_some(())
        })
        .await;
    }

    // The storm: the edge restarts (every session told SHUTTING_DOWN with
    // the test config's 100 ms retry-after, so all come back at once), and
    // the new one, admitting 4 logins a second, takes its addresses.
    support::sigterm(&first.child);
    tokio::time::timeout(PATIENCE, first.child.wait())
        .await
        .expect("the first edge stops")
        .unwrap();
    let (tcp, quic) = (first.tcp.to_string(), first.quic.to_string());
    let second = spawn_chat_at(d.dir.path(), &tcp, &quic, TIGHT).await;

    // Everyone back (a second Connected each), bounded.
    tokio::time::timeout(PATIENCE * 2, async {
        loop {
            let back = clients
                .iter()
                .filter(|(_, _, s)| s.lock().unwrap().connected >= 2)
                .count();
            if back == CLIENTS {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("not all {CLIENTS} clients came back after the storm"));

    // Refusals: seen by the clients as OVERLOADED with a retry-after, which
    // they honoured (never dialed earlier), counted by the edge.
    let mut refusals = 0;
    for (user, _, seen) in &clients {
        let s = seen.lock().unwrap();
        for (retry_after, after) in &s.overloaded {
            assert!(
                after >= retry_after,
                "{user} waited {after:?} < {retry_after:?}"
            );
        }
        refusals += s.overloaded.len();
    }
    assert!(
        refusals > 0,
        "a herd of {CLIENTS} at 4 logins/s was never refused"
    );
    let page = admin_get(d.dir.path(), second.admin, "/metrics").await;
    let counted = counter(&page, "wa_chat_logins_refused_total");
    assert!(
        counted as usize >= refusals,
        "the edge counted {counted} refusals, the clients saw {refusals}"
    );
    // Distinct retry-afters: the herd is spread, not sent back at once.
    let mut afters: Vec<_> = clients
        .iter()
        .flat_map(|(_, _, s)| s.lock().unwrap().overloaded.clone())
        .map(|(r, _)| r)
        .collect();
    afters.sort();
    afters.dedup();
    assert!(
        afters.len() > 1,
        "every refusal got the same retry-after: {afters:?}"
    );

    // Every message sent before the storm, exactly once.
    tokio::time::timeout(PATIENCE, async {
        loop {
            let done = clients.iter().all(|(user, _, seen)| {
                let s = seen.lock().unwrap();
                sent[user].iter().all(|id| s.messages.contains_key(id))
            });
            if done {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("every message sent before the storm is delivered");
    for (user, _, seen) in &clients {
        let s = seen.lock().unwrap();
        for id in &sent[user] {
            assert_eq!(s.messages[id], 1, "{user}: message {id:?} delivered twice");
        }
        assert_eq!(s.messages.len(), MESSAGES, "{user}: {:?}", s.messages);
    }

    drop(sender);
    drop(clients);
    support::sigterm(&second.child);
    let mut child = second.child;
    let st = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(st.success(), "wa-chat exited with {st}");
    d.stop().await;
}
