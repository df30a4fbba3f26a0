//! A busy group's bounded fan-out queue (docs/PROTOCOL.md "Groups",
//! `GROUP_BUSY`): past `[groups] fanout_queue` messages not yet copied to
//! every member, the group's senders are refused and resend later, and
//! nothing accepted or resent is lost, doubled or reordered.

mod support;

use bytes::Bytes;
use common::client::Transport;
use common::proto::Code;
use support::cluster::Cluster;
use support::groups::{Answer, Member};

const MESSAGES: usize = 10;

/// A two-member group whose home is island 1 and one of whose members is
/// at island 2, which is down: the fan-out of its first item cannot
/// finish, so the group's queue (2 here) fills and the sender's further
/// messages are refused `GROUP_BUSY` (the client resends them by itself).
/// Once island 2 is back every message reaches both members exactly once,
/// in the order sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_group_refuses_past_its_queue_then_delivers_everything_in_order() {
    let mut c = Cluster::start_with(2, 1, "[groups]\nfanout_queue = 2\n").await;
    let alice = c.user_on(1, "alice");
    let bob = c.user_on(2, "bob");
    let cfg = |c: &Cluster, u: &str| c.client_config(u, 1, Transport::Tcp);
    let mut a = Member::connect(&alice, cfg(&c, &alice)).await;
    // A group whose home is island 1 (its id is random: a few tries).
    let mut group = None;
    for _ in 0..32 {
        let (req, g) = a
            .client
            .create_group(&alice, "busy", &[&bob])
            .await
            .unwrap();
        a.until("the group", |s| s.answers.contains_key(&req)).await;
        if c.map.home(&g).name == "island-1" {
            group = Some(g);
            break;
        }
    }
    let group = group.expect("one of 32 random groups has its home on island 1");
    c.stop_store(2).await;

    let mut ids = Vec::new();
    for i in 0..MESSAGES {
        let body = Bytes::from(format!("m{i}"));
        ids.push(a.client.send_group(&group, body).await.unwrap());
    }
    // At most 2 wait in the queue, whichever item is stuck: the rest are
    // refused GROUP_BUSY and held by the client for a resend.
    a.until("a GROUP_BUSY", |s| {
        s.retrying.iter().any(|r| r.1 == Code::GroupBusy)
    })
    .await;
    let accepted = ids
        .iter()
        .filter(|id| matches!(a.seen.answers.get(*id), Some(Answer::Accepted)))
        .count();
    assert!(
        accepted <= 2,
        "{accepted} accepted while the fan-out was stuck"
    );
    assert!(
        a.seen.retrying.iter().all(|r| r.1 == Code::GroupBusy),
        "{:?}: {:?}",
        a.seen.retrying,
        a.seen.refusals
    );

    c.restart_store(2).await;
    let mut b = Member::connect(&bob, cfg(&c, &bob)).await;
    let want: Vec<String> = (0..MESSAGES).map(|i| format!("m{i}")).collect();
    let got = |s: &support::groups::Seen| {
        s.messages
            .iter()
            .filter(|m| m.0 == group)
            .map(|m| String::from_utf8_lossy(&m.3).into_owned())
            .collect::<Vec<_>>()
    };
    let (ga, gb) = (group.clone(), group.clone());
    tokio::join!(
        a.until("every message accepted and copied back", |s| {
            ids.iter()
                .all(|id| matches!(s.answers.get(id), Some(Answer::Accepted)))
                && s.messages.iter().filter(|m| m.0 == ga).count() >= MESSAGES
        }),
        b.until("every message", |s| {
            s.messages.iter().filter(|m| m.0 == gb).count() >= MESSAGES
        }),
    );
    assert_eq!(got(&a.seen), want, "alice's own copies");
    assert_eq!(got(&b.seen), want, "bob's copies");
    // Nothing more comes (no doubled copy): a last message is next.
    let last = a
        .client
        .send_group(&group, Bytes::from("last"))
        .await
        .unwrap();
    b.until("the last message", |s| {
        s.messages.iter().any(|m| m.2 == last)
    })
    .await;
    let mut want = want;
    want.push("last".into());
    assert_eq!(got(&b.seen), want, "bob's copies, once each");
    a.close().await;
    b.close().await;
}
