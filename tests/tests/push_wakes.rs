//! What wakes a device (issue 24): an item its user must see, while it has
//! no session or only sessions idle past `[push] wake_idle_after`; never a
//! receipt. And a provider's `Retry-After` given as an HTTP-date. A real
//! wa-store and wa-chat, the fake UnifiedPush server of
//! tests/tests/support/push.

mod support;

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use common::client::{Event, Transport};
use support::push::Reply;
use support::push::devices::{
    no_more_than, push_toml, register_offline, send_accepted, unifiedpush,
};
use support::push::unifiedpush::FakeUnifiedPush;
use support::{Deployment, PATIENCE, expect, next_message};

#[tokio::test(flavor = "multi_thread")]
async fn a_connected_device_that_acknowledges_nothing_is_woken_and_an_active_one_is_not() {
    let up = FakeUnifiedPush::start().await;
    let toml =
        push_toml("200ms", "60s", "").replace("[push]\n", "[push]\nwake_idle_after = \"1s\"\n");
    let d = Deployment::start_with_store_config(&toml, |_| {}).await;
    let (alice, mut ea) = d.client("alice", Transport::Tcp).await;
    // bob and carol stay connected with endpoints; bob reads nothing, carol
    // acknowledges everything.
    let mut devices = Vec::new();
    for user in ["bob", "carol"] {
        let (url, keys) = up.device(user);
        let (c, mut e) = d.client(user, Transport::Tcp).await;
        let id = c
            .set_push_endpoint(Some(unifiedpush(&url, &keys)))
            .await
            .unwrap();
        expect(&mut e, "PushEndpointSet", |ev| match ev {
            Event::PushEndpointSet { id: got } if *got == id => Some(()),
            _ => None,
        })
        .await;
        devices.push((c, e));
    }
    let (carol, mut ec) = devices.pop().unwrap();
    let (bob, _eb) = devices.pop().unwrap();
    let acker = tokio::spawn(async move {
        let mut n = 0;
        while n < 15 {
            let (seq, ..) = next_message(&mut ec).await;
            carol.ack(&[seq]).await.unwrap();
            n += 1;
        }
        carol
    });

    // A message every 200 ms to each for 3 s: bob's first is pushed to its
    // session and stays unacknowledged; a later one finds it idle.
    let first = Instant::now();
    for i in 0..15 {
        for to in ["bob", "carol"] {
            alice
                .send(to, Bytes::from(format!("to {to} {i}")))
                .await
                .unwrap();
            // (carol's delivered receipts come meanwhile.)
            while !expect(&mut ea, "Accepted", |ev| match ev {
                Event::Accepted { .. } => Some(true),
                Event::Receipt { .. } => Some(false),
                _ => None,
            })
            .await
            {}
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let carol = tokio::time::timeout(PATIENCE, acker)
        .await
        .unwrap()
        .unwrap();
    let got = up.log.wait_accepted(1).await;
    no_more_than(&up.log, 1).await;
    up.log.assert_no_problems();
    assert_eq!(got[0].path, "/up/bob", "only the idle device: {got:?}");
    assert!(
        got[0].at - first >= Duration::from_secs(1),
        "woken {:?} after its first unacknowledged item, before the threshold",
        got[0].at - first
    );
    bob.close().await;
    carol.close().await;
    alice.close().await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn receipts_never_wake_a_device_and_a_message_does() {
    let up = FakeUnifiedPush::start().await;
    let d = Deployment::start_with_store_config(&push_toml("200ms", "200ms", ""), |_| {}).await;
    let (alice, mut ea) = d.client("alice", Transport::Tcp).await;
    let (dave, mut ed) = d.client("dave", Transport::Tcp).await;
    // bob sends alice a message, then registers an endpoint and goes
    // offline.
    let (bob, mut eb) = d.client("bob", Transport::Tcp).await;
    bob.send("alice", Bytes::from_static(b"hello"))
        .await
        .unwrap();
    expect(&mut eb, "Accepted", |ev| {
        matches!(ev, Event::Accepted { .. }).then_some(())
    })
    .await;
    let (url, keys) = up.device("bob");
    register_offline((bob, eb), "bob", unifiedpush(&url, &keys), &dave, &mut ed).await;

    // alice reads it: a delivered and a read receipt land in bob's mailbox.
    let (seq, from, id, _) = next_message(&mut ea).await;
    assert_eq!(from, "bob");
    alice.ack(&[seq]).await.unwrap();
    alice.mark_read("bob", &[id]).await.unwrap();
    expect(&mut ea, "the read receipt accepted", |ev| {
        matches!(ev, Event::Accepted { .. }).then_some(())
    })
    .await;
    no_more_than(&up.log, 0).await;

    // (Both receipts are there: bob gets them when it comes back.)
    send_accepted(&alice, &mut ea, "bob", 1, "a message").await;
    let got = up.log.wait_accepted(1).await;
    assert_eq!(got[0].payload["n"], 1, "{}", got[0].payload);
    no_more_than(&up.log, 1).await;
    up.log.assert_no_problems();
    let (bob, mut eb) = d.client("bob", Transport::Tcp).await;
    let mut kinds = Vec::new();
    while kinds.len() < 3 {
        let k = expect(&mut eb, "bob's items", |ev| match ev {
            Event::Receipt { kind, .. } => Some(format!("{kind:?}")),
            Event::Message { .. } => Some("message".into()),
            _ => None,
        })
        .await;
        kinds.push(k);
    }
    kinds.sort();
    assert_eq!(kinds, ["Delivered", "Read", "message"]);
    bob.close().await;
    dave.close().await;
    alice.close().await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retry_after_given_as_an_http_date_is_honoured() {
    let up = FakeUnifiedPush::start().await;
    let toml =
        push_toml("100ms", "100ms", "").replace("backoff_max = \"5s\"", "backoff_max = \"1m\"");
    let d = Deployment::start_with_store_config(&toml, |_| {}).await;
    let (alice, mut ea) = d.client("alice", Transport::Tcp).await;
    let (dave, mut ed) = d.client("dave", Transport::Tcp).await;
    let (url, keys) = up.device("bob");
    register_offline(
        d.client("bob", Transport::Tcp).await,
        "bob",
        unifiedpush(&url, &keys),
        &dave,
        &mut ed,
    )
    .await;
    // (A date has whole seconds: 4 s from now is more than 3 s away, and
    // the first attempt comes well within a second.)
    up.log
        .script([Reply::new(503, "").retry_at(SystemTime::now() + Duration::from_secs(4))]);
    send_accepted(&alice, &mut ea, "bob", 1, "m").await;
    let got = up.log.wait_accepted(1).await;
    let first = &up.log.taken()[0];
    assert_eq!(first.status, 503);
    assert!(
        got[0].at - first.at >= Duration::from_secs(2),
        "retried {:?} after a 503 asking for 3 to 4 s (as a date)",
        got[0].at - first.at
    );
    up.log.assert_no_problems();
    dave.close().await;
    alice.close().await;
    d.stop().await;
}
