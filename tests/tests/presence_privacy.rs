//! Presence privacy (issue "Revocation that holds everywhere...", finding
//! 9: the presence and last seen of any user were visible to anyone who
//! knew the user id). A user chooses who sees it (everyone, contacts,
//! nobody) through wa-register; the user's home applies it to every
//! watcher at once, and a watcher it hides presence from sees a user never
//! online: offline, last seen 0.

mod support;

use common::client::{Client, Event, Events, Transport};
use support::{Deployment, expect, sign_up};

/// The next presence of `user` on `events`: (online, last_seen_ms).
async fn presence_of(events: &mut Events, user: &str) -> (bool, u64) {
    expect(events, "a presence", |e| match e {
        Event::Presence {
            user: u,
            online,
            last_seen_ms,
        } if u == user => Some((*online, *last_seen_ms)),
        _ => None,
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_shown_only_to_whom_the_user_allows() {
    let d = Deployment::start().await;
    let node = d
        .start_register("[codes]\nresend_waits = [\"1ns\"]\n")
        .await;
    let rc = d.register_client(&node);
    let bob = sign_up(&rc, &node, "+15550000101", "bob", None)
        .await
        .unwrap();
    let alice = sign_up(&rc, &node, "+15550000102", "alice", None)
        .await
        .unwrap();
    let carol = sign_up(&rc, &node, "+15550000103", "carol", None)
        .await
        .unwrap();
    let connect = |token: &str| {
        let cfg = d.client_config_with_token(token, Transport::Tcp);
        async move { Client::connect(cfg).await.unwrap() }
    };
    let (_b, _eb) = connect(&bob.token).await;
    let (a, mut ea) = connect(&alice.token).await;
    let (c, mut ec) = connect(&carol.token).await;

    // By default everyone who knows the id sees it.
    a.watch_presence(&bob.user, true).await.unwrap();
    c.watch_presence(&bob.user, true).await.unwrap();
    assert!(presence_of(&mut ea, &bob.user).await.0);
    assert!(presence_of(&mut ec, &bob.user).await.0);

    // Contacts only, alice among them: carol's view turns to "never
    // online" at once, alice's stays.
    rc.set_privacy(&bob.token, "contacts", &[&alice.user])
        .await
        .unwrap();
    assert_eq!(presence_of(&mut ec, &bob.user).await, (false, 0));
    assert!(presence_of(&mut ea, &bob.user).await.0);

    // Bob leaves: alice learns when, carol learns nothing.
    drop(_b);
    let (online, seen) = presence_of(&mut ea, &bob.user).await;
    assert!(!online && seen > 0, "alice sees bob's last seen");
    assert_eq!(presence_of(&mut ec, &bob.user).await, (false, 0));

    // Nobody: alice too sees him as never online, also on a new watch.
    rc.set_privacy(&bob.token, "nobody", &[]).await.unwrap();
    assert_eq!(presence_of(&mut ea, &bob.user).await, (false, 0));
    assert_eq!(presence_of(&mut ec, &bob.user).await, (false, 0));
    let (_b, _eb) = connect(&bob.token).await;
    assert_eq!(presence_of(&mut ea, &bob.user).await, (false, 0));
    assert_eq!(presence_of(&mut ec, &bob.user).await, (false, 0));
    a.watch_presence(&bob.user, false).await.unwrap();
    a.watch_presence(&bob.user, true).await.unwrap();
    assert_eq!(presence_of(&mut ea, &bob.user).await, (false, 0));

    // Everyone again: both see him online.
    rc.set_privacy(&bob.token, "everyone", &[]).await.unwrap();
    assert!(presence_of(&mut ea, &bob.user).await.0);
    assert!(presence_of(&mut ec, &bob.user).await.0);

    // Bad settings are refused with what is wrong.
    let e = rc
        .set_privacy(&bob.token, "friends", &[])
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400), "{e}");
    let e = rc
        .set_privacy(&bob.token, "contacts", &["not a user"])
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400), "{e}");
    node.service.stop().await;
    d.stop().await;
}
