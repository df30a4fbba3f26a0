//! A client that stays connected (it pings) but never acknowledges holds
//! its push window only for `[limits] slow_consumer_after`: then the edge
//! closes it with `SLOW_CONSUMER`, and on the next session the items come
//! again (issue 21).

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::client::{Event, Transport};
use common::proto::Code;
use support::{Deployment, PATIENCE, expect};

const N: usize = 300;
const WINDOW: usize = common::link::PUSH_WINDOW;
const AFTER: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_acknowledges_is_cut_as_a_slow_consumer() {
    let d = Deployment::start_with(|c| {
        c.push_str("[limits]\nslow_consumer_after = \"2s\"\n");
    })
    .await;
    let (alice, mut ea) = d.client("alice", Transport::Tcp).await;
    for i in 0..N {
        alice
            .send("bob", Bytes::from(format!("m{i}")))
            .await
            .unwrap();
    }
    for _ in 0..N {
        expect(&mut ea, "Accepted", |e| {
            matches!(e, Event::Accepted { .. }).then_some(())
        })
        .await;
    }

    // Bob reads his window and never acknowledges it.
    let (bob, mut eb) = d.client("bob", Transport::Tcp).await;
    let mut got = HashSet::new();
    let (full_at, cut) = tokio::time::timeout(PATIENCE, async {
        let mut full_at = None;
        loop {
            match eb.next().await.expect("the client runs") {
                Event::Message { id, .. } => {
                    assert!(got.insert(id), "delivered twice: {id:?}");
                    if got.len() == WINDOW {
                        full_at = Some(Instant::now());
                    }
                }
                Event::Disconnected { code, .. } => {
                    break (full_at.expect("the window filled first"), code);
                }
                Event::Connected { .. } | Event::Presence { .. } => {}
                other => panic!("bob: {other:?}"),
            }
        }
    })
    .await
    .expect("bob is cut within patience");
    let after = full_at.elapsed();
    println!(
        "slow consumer: {} deliveries unacknowledged, cut with {cut:?} {after:?} after the window filled (bound {AFTER:?})",
        got.len()
    );
    assert_eq!(got.len(), WINDOW);
    assert_eq!(cut, Some(Code::SlowConsumer));
    // (The client saw the window full a little after the edge did.)
    assert!(after + Duration::from_millis(500) >= AFTER, "{after:?}");

    // Reconnected, bob acknowledges: the rest arrive, each once (the window
    // comes again and the client library drops and acknowledges what it
    // already showed).
    tokio::time::timeout(PATIENCE, async {
        while got.len() < N {
            match eb.next().await.expect("the client runs") {
                Event::Message { seq, id, .. } => {
                    assert!(got.insert(id), "delivered twice: {id:?}");
                    bob.ack(&[seq]).await.unwrap();
                }
                Event::Connected { .. } | Event::Waiting { .. } | Event::Presence { .. } => {}
                other => panic!("bob after reconnecting: {other:?}"),
            }
        }
    })
    .await
    .expect("the rest arrive after the reconnect");
    println!("slow consumer: all {N} delivered once after the reconnect");
    alice.close().await;
    bob.close().await;
    d.stop().await;
}
