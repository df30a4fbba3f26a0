//! A frozen or cut-off home (issue 21): wa-store stopped with SIGSTOP for
//! 30 s while clients send, and (as root) its network link set down for
//! 30 s. The edge's heartbeat finds the link silent and closes the
//! sessions that depend on it with `Goodbye{UNAVAILABLE}` within
//! `[link] timeout` + `heartbeat` (docs/PROTOCOL.md, "Limits"); a new login
//! during the stall gets `Goodbye{UNAVAILABLE}` instead of `Welcome`; after
//! SIGCONT (the link up again) every message is accepted and delivered
//! once.

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::client::{Client, ClientError, Event, Events, MessageId, Transport};
use common::proto::Code;
use nix::sys::signal::Signal;
use support::netns::Netns;
use support::{Deployment, PATIENCE};
use tokio::sync::watch;

const SENDERS: usize = 5;
/// Messages per sender.
const N: usize = 100;
/// Sends in flight per sender.
const WINDOW: usize = 4;
/// Between two sends of one sender.
const PACE: Duration = Duration::from_millis(50);
/// How long the home is frozen or cut off.
const OUTAGE: Duration = Duration::from_secs(30);
/// `[link] timeout` + `heartbeat` (the defaults), and a second of slack for
/// the client to read the goodbye.
const LEARN_BOUND: Duration = Duration::from_secs(3 + 1 + 1);

struct Sent {
    accepted: HashSet<MessageId>,
    /// From the SIGSTOP to the first sign of trouble (a disconnection with
    /// UNAVAILABLE, or a send to be retried).
    learned: Option<Duration>,
    /// A reconnect was refused with UNAVAILABLE (`Event::Waiting`).
    waited: bool,
}

async fn sender(
    client: Client,
    mut events: Events,
    to: String,
    mut stopped: watch::Receiver<Option<Instant>>,
    flowing: tokio::sync::mpsc::Sender<()>,
) -> Sent {
    let mut accepted = HashSet::new();
    let mut sent = 0;
    let mut learned = None;
    let mut waited = false;
    let mut announced = false;
    let mut next_send = tokio::time::Instant::now();
    tokio::time::timeout(OUTAGE + 4 * PATIENCE, async {
        while accepted.len() < N {
            let can_send = sent < N && sent - accepted.len() < WINDOW;
            tokio::select! {
                () = tokio::time::sleep_until(next_send), if can_send => {
                    client.send(&to, Bytes::from(format!("m{sent}"))).await.unwrap();
                    sent += 1;
                    next_send = tokio::time::Instant::now() + PACE;
                }
                e = events.next() => {
                    let trouble = match e.expect("the client runs") {
                        Event::Accepted { id, .. } => {
                            assert!(accepted.insert(id), "Accepted twice: {id:?}");
                            if accepted.len() == 10 && !announced {
                                announced = true;
                                let _ = flowing.send(()).await;
                            }
                            false
                        }
                        Event::Receipt { seq, .. } => {
                            client.ack(&[seq]).await.unwrap();
                            false
                        }
                        Event::Disconnected { code, .. } => code == Some(Code::Unavailable),
                        // "Waiting for the server": a reconnect refused.
                        Event::Waiting { code, .. } => {
                            waited |= code == Some(Code::Unavailable);
                            false
                        }
                        Event::Retrying { code: Code::Unavailable, .. } => true,
                        Event::Connected { .. } | Event::Presence { .. } => false,
                        other => panic!("sender: {other:?}"),
                    };
                    if trouble && learned.is_none() && let Some(t) = *stopped.borrow_and_update() {
                        learned = Some(t.elapsed());
                    }
                }
            }
        }
    })
    .await
    .expect("every send accepted in the end");
    client.close().await;
    Sent {
        accepted,
        learned,
        waited,
    }
}

async fn receiver(client: Client, mut events: Events, n: usize) -> HashSet<MessageId> {
    let mut got = HashSet::new();
    tokio::time::timeout(OUTAGE + 4 * PATIENCE, async {
        while got.len() < n {
            match events.next().await.expect("the client runs") {
                Event::Message { seq, id, .. } => {
                    assert!(got.insert(id), "delivered twice: {id:?}");
                    client.ack(&[seq]).await.unwrap();
                }
                Event::Connected { .. }
                | Event::Disconnected { .. }
                | Event::Waiting { .. }
                | Event::Presence { .. }
                | Event::Retrying { .. } => {}
                other => panic!("receiver: {other:?}"),
            }
        }
    })
    .await
    .expect("every message delivered in the end");
    client.close().await;
    got
}

/// Sends from every sender while `cut` makes the home unreachable for
/// [`OUTAGE`], then `heal`; checks that every sender learned in time, that
/// a login during the outage is refused, and that nothing is lost.
async fn outage(d: &Deployment, what: &str, cut: impl FnOnce(), heal: impl FnOnce()) {
    let (stopped_tx, stopped) = watch::channel(None);
    let (flowing_tx, mut flowing) = tokio::sync::mpsc::channel(SENDERS);
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for i in 0..SENDERS {
        let (r, re) = d.client(&format!("r{i}"), Transport::Tcp).await;
        receivers.push(tokio::spawn(receiver(r, re, N)));
        let (s, se) = d.client(&format!("s{i}"), Transport::Tcp).await;
        senders.push(tokio::spawn(sender(
            s,
            se,
            format!("r{i}"),
            stopped.clone(),
            flowing_tx.clone(),
        )));
    }
    for _ in 0..SENDERS {
        tokio::time::timeout(PATIENCE, flowing.recv())
            .await
            .expect("messages flow")
            .unwrap();
    }

    cut();
    stopped_tx.send_replace(Some(Instant::now()));
    let stop_at = Instant::now();

    // A login during the outage is refused, not welcomed.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let t = Instant::now();
    match Client::connect(d.client_config("late", Transport::Tcp)).await {
        Err(ClientError::Refused {
            code: Code::Unavailable,
            retry_after,
            ..
        }) => println!(
            "{what}: a login during the outage refused with UNAVAILABLE in {:?} (retry after {retry_after:?})",
            t.elapsed()
        ),
        Err(e) => panic!("a login during the outage: {e}"),
        Ok(_) => panic!("a login during the outage was welcomed"),
    }

    tokio::time::sleep(OUTAGE.saturating_sub(stop_at.elapsed())).await;
    heal();
    let resumed = Instant::now();

    let mut accepted = HashSet::new();
    for (i, s) in senders.into_iter().enumerate() {
        let s = s.await.unwrap();
        let learned = s.learned.expect("every sender learned of the outage");
        println!("{what}: sender s{i} learned of the outage after {learned:?}");
        assert!(learned <= LEARN_BOUND, "s{i} learned after {learned:?}");
        assert!(s.waited, "s{i} was told to wait while reconnecting");
        accepted.extend(s.accepted);
    }
    let mut delivered = HashSet::new();
    for r in receivers {
        delivered.extend(r.await.unwrap());
    }
    println!(
        "{what}: after the outage all {} messages accepted and delivered once in {:?}",
        accepted.len(),
        resumed.elapsed()
    );
    assert_eq!(accepted.len(), SENDERS * N);
    assert_eq!(delivered, accepted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_home_is_noticed_within_the_link_timeout_and_loses_nothing() {
    let d = Deployment::start_with_store_process().await;
    let store = &d.store_process.as_ref().unwrap().child;
    outage(
        &d,
        "SIGSTOP",
        || support::cluster::signal(store, Signal::SIGSTOP),
        || support::cluster::signal(store, Signal::SIGCONT),
    )
    .await;
    d.stop().await;
}

/// The same with the home's network cut (a veth link set down in a
/// network namespace): packets vanish, nothing closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_link_is_noticed_within_the_link_timeout_and_loses_nothing() {
    if let Some(why) = Netns::unavailable() {
        println!("SKIPPED: {why}");
        return;
    }
    let mut ns = Netns::create("cut");
    let v = ns.veth();
    let d = Deployment::start_with_store_in(&ns, v.inside).await;
    outage(&d, "link down", || ns.set(&v, false), || ns.set(&v, true)).await;
    d.stop().await;
}

/// A home that answers pings but not appends (its disk stopped answering:
/// journal syncs wait, by the store's debug-build fault switch): the edge's
/// request deadline (`[link] request_timeout`, 10 s) closes the sender's
/// session with `UNAVAILABLE`, not the link's heartbeat; once the disk
/// answers again the client's resend is accepted and delivered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_home_that_stops_answering_appends_is_given_up_at_the_request_deadline() {
    const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
    let marks = tempfile::tempdir().unwrap();
    let mark = marks.path().join("stall");
    let d = Deployment::start_with_store_env(
        "",
        |_| {},
        &[("WA_STORE_FAULT_STALL_FLUSH_WHILE", mark.as_os_str())],
    )
    .await;
    let (alice, mut ea) = d.client("alice", Transport::Tcp).await;
    std::fs::write(&mark, b"").unwrap();
    let t = Instant::now();
    let id = alice
        .send("bob", Bytes::from_static(b"hello"))
        .await
        .unwrap();
    let learned = tokio::time::timeout(PATIENCE, async {
        loop {
            match ea.next().await.expect("the client runs") {
                Event::Disconnected { code, .. } => break (t.elapsed(), code),
                Event::Connected { .. } | Event::Waiting { .. } => {}
                other => panic!("alice while the disk stalls: {other:?}"),
            }
        }
    })
    .await
    .expect("alice learns within patience");
    println!(
        "request deadline: the sender was told {:?} after {:?} (request_timeout {REQUEST_TIMEOUT:?})",
        learned.1, learned.0
    );
    assert_eq!(learned.1, Some(Code::Unavailable));
    // The deadline, not the heartbeat (which would have cut it in 4 s).
    assert!(learned.0 >= REQUEST_TIMEOUT, "{:?}", learned.0);
    assert!(
        learned.0 <= REQUEST_TIMEOUT + Duration::from_secs(1),
        "{:?}",
        learned.0
    );
    std::fs::remove_file(&mark).unwrap();
    tokio::time::timeout(PATIENCE, async {
        loop {
            match ea.next().await.expect("the client runs") {
                Event::Accepted { id: got, .. } if got == id => break,
                Event::Connected { .. }
                | Event::Disconnected { .. }
                | Event::Waiting { .. }
                | Event::Retrying { .. } => {}
                other => panic!("alice once the disk answers: {other:?}"),
            }
        }
    })
    .await
    .expect("accepted once the disk answers");
    let (bob, mut eb) = d.client("bob", Transport::Tcp).await;
    let (seq, _, got, _) = support::next_message(&mut eb).await;
    assert_eq!(got, id);
    bob.ack(&[seq]).await.unwrap();
    println!("request deadline: accepted and delivered once the disk answered");
    alice.close().await;
    bob.close().await;
    d.stop().await;
}
