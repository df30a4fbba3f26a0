//! A push decided before a failover is still sent after it (issue 24): the
//! devices owed a push are recorded with their endpoints, which replicate,
//! and the promoted secondary queues them before it serves. Black box: an
//! island whose primary (store 1) and secondary (store 2) are processes,
//! one edge, the fake UnifiedPush server of tests/tests/support/push.

mod support;

use std::time::{Duration, Instant};

use common::client::Event;
use support::cluster::{Cluster, signal};
use support::push::Reply;
use support::push::devices::{no_more_than, push_toml, send_accepted, unifiedpush};
use support::push::unifiedpush::FakeUnifiedPush;
use support::{PATIENCE, expect};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_queued_when_the_primary_dies_is_sent_once_by_the_promoted_secondary() {
    let up = FakeUnifiedPush::start().await;
    // The first attempt is refused with a long Retry-After (well within
    // backoff_max): the push is decided, tried and still queued when the
    // primary dies.
    up.log.script([Reply::new(503, "").retry_after(3600)]);
    let toml =
        push_toml("300ms", "60s", "").replace("backoff_max = \"5s\"", "backoff_max = \"2h\"");
    let mut c = Cluster::start_replicated_stores_with(1, &toml).await;

    let (alice, mut ea) = c.client("alice", 1).await;
    let (dave, mut ed) = c.client("dave", 1).await;
    let (url, keys) = up.device("bob");
    let (bob, mut eb) = c.client("bob", 1).await;
    let id = bob
        .set_push_endpoint(Some(unifiedpush(&url, &keys)))
        .await
        .unwrap();
    expect(&mut eb, "PushEndpointSet", |ev| match ev {
        Event::PushEndpointSet { id: got } if *got == id => Some(()),
        _ => None,
    })
    .await;
    dave.watch_presence("bob", true).await.unwrap();
    let offline = |ev: &Event| match ev {
        Event::Presence {
            user,
            online: false,
            ..
        } if user == "bob" => Some(()),
        _ => None,
    };
    expect(&mut ed, "bob online", |ev| match ev {
        Event::Presence {
            user, online: true, ..
        } if user == "bob" => Some(()),
        _ => None,
    })
    .await;
    bob.close().await;
    expect(&mut ed, "bob offline", offline).await;

    send_accepted(&alice, &mut ea, "bob", 3, "before the failover").await;
    let deadline = Instant::now() + PATIENCE;
    while up.log.taken().is_empty() {
        assert!(Instant::now() < deadline, "no first attempt");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(up.log.taken()[0].status, 503);

    // kill -9 of the primary; the map promotes the secondary (epoch 2).
    signal(&c.stores[0].child, nix::sys::signal::Signal::SIGKILL);
    let _ = c.stores[0].child.wait().await;
    assert!(up.log.accepted().is_empty());
    let mut map = c.map.clone();
    let island = &mut map.islands[0];
    let old = island.primary;
    island.primary = island.secondary.replace(old).unwrap();
    map.epoch = 2;
    std::fs::write(c.dir.path().join("cluster.toml"), map.to_toml()).unwrap();
    signal(&c.stores[1].child, nix::sys::signal::Signal::SIGHUP);
    for e in &c.edges {
        signal(&e.child, nix::sys::signal::Signal::SIGHUP);
    }
    c.map = map;

    let got = up.log.wait_accepted(1).await;
    no_more_than(&up.log, 2).await;
    up.log.assert_no_problems();
    assert_eq!(got[0].path, "/up/bob");

    // Sent: no longer owed. The old primary, back as the secondary, and a
    // restart of the new one send nothing more.
    c.restart_replicated_in(1, None, Some("CAUGHT-UP")).await;
    c.stop_store(2).await;
    c.restart_replicated(2).await;
    no_more_than(&up.log, 2).await;

    alice.close().await;
    dave.close().await;
    c.stop().await;
}
