//! A group whose fragment moves to another island (docs/OPERATIONS.md
//! "Moving fragments"): its record and its log go with the hand-off, the
//! edges reroute its requests on `WRONG_HOME`, and its members get every
//! message once, in order.

mod support;

use bytes::Bytes;
use common::client::{MessageId, Transport};
use support::cluster::Cluster;
use support::groups::{Answer, Member};

/// Members besides the three who connect, with 64-byte ids: the record is
/// over the 16 KiB other key-value records may have.
const FILLERS: usize = 304;
/// Messages sent before the move, and in all.
const BEFORE: usize = 10;
const ALL: usize = 40;

/// Sends `body` to `group` and waits for its answer, which must be
/// `Accepted` (a reroute is only a delay).
async fn send_accepted(m: &mut Member, group: &str, body: String) -> MessageId {
    let id = m.client.send_group(group, Bytes::from(body)).await.unwrap();
    m.until("the answer", |s| s.answers.contains_key(&id)).await;
    match &m.seen.answers[&id] {
        Answer::Accepted => id,
        other => panic!("{group}: refused {other:?}"),
    }
}

/// A group of 306 members whose home is island 2 moves to island 1 while
/// a member keeps sending to it: every message is accepted (the edge
/// retries at the new home), the group's record (over 16 KiB) is there
/// (`INFO` at the new home), and every member, on either island, gets all
/// of them once and in order, the items still in the log at the hand-off
/// included (the new home fans them out without waiting for a request).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_moved_between_islands_keeps_its_record_its_log_and_its_order() {
    let mut c = Cluster::start(2, 2).await;
    let alice = c.user_on(1, "alice");
    let bob = c.user_on(1, "bob");
    let carol = c.user_on(2, "carol");
    let cfg = |c: &Cluster, u: &str, k: usize| c.client_config(u, k, Transport::Tcp);
    let mut a = Member::connect(&alice, cfg(&c, &alice, 1)).await;
    // A group whose home is island 2, below its last fragment (island 2
    // keeps the fragments above the group's).
    let filler: Vec<String> = (0..FILLERS).map(|i| format!("{i:0>64}")).collect();
    let named: Vec<&str> = [bob.as_str(), carol.as_str()]
        .into_iter()
        .chain(filler[..254].iter().map(String::as_str))
        .collect();
    let mut group = None;
    for _ in 0..64 {
        let (req, g) = a
            .client
            .create_group(&alice, "moving", &named)
            .await
            .unwrap();
        a.until("the group", |s| s.answers.contains_key(&req)).await;
        if c.map.home(&g).name == "island-2" && c.map.fragment(&g) < 255 {
            group = Some(g);
            break;
        }
    }
    let group = group.expect("one of 64 random groups is on island 2 below 255");
    let f = c.map.fragment(&group);
    let more: Vec<&str> = filler[254..].iter().map(String::as_str).collect();
    let req = a.client.add_members(&group, &more).await.unwrap();
    a.until("the add", |s| s.answers.contains_key(&req)).await;
    assert!(matches!(a.seen.answers[&req], Answer::Group(_)));

    let mut sent = Vec::new();
    for i in 0..BEFORE {
        sent.push(send_accepted(&mut a, &group, format!("m{i:03}")).await);
    }
    // Alice keeps sending while the group's fragment moves to island 1.
    let g = group.clone();
    let sender = tokio::spawn(async move {
        let mut more = Vec::new();
        for i in BEFORE..ALL {
            more.push(send_accepted(&mut a, &g, format!("m{i:03}")).await);
        }
        (a, more)
    });
    let mut moved = c.map.clone();
    moved.epoch = 2;
    moved.islands[0].fragments = [0, f];
    moved.islands[1].fragments = [f + 1, 255];
    c.publish(moved);
    let (mut a, more) = sender.await.unwrap();
    sent.extend(more);
    assert_eq!(c.map.home(&group).name, "island-1");

    // The record moved: the new home answers INFO with the members.
    let info = a.client.group_info(&group).await.unwrap();
    a.until("INFO", |s| s.answers.contains_key(&info)).await;
    match &a.seen.answers[&info] {
        Answer::Group(i) => assert_eq!(i.members.len(), 3 + FILLERS, "{}", i.group),
        other => panic!("INFO at the new home: {other:?}"),
    }

    let want: Vec<String> = (0..ALL).map(|i| format!("m{i:03}")).collect();
    let mut b = Member::connect(&bob, cfg(&c, &bob, 2)).await;
    let mut k = Member::connect(&carol, cfg(&c, &carol, 2)).await;
    let of = |m: &Member| {
        m.seen
            .messages
            .iter()
            .filter(|x| x.0 == group)
            .map(|x| String::from_utf8_lossy(&x.3).into_owned())
            .collect::<Vec<_>>()
    };
    let (g1, g2) = (group.clone(), group.clone());
    tokio::join!(
        b.until("every message", |s| s
            .messages
            .iter()
            .filter(|x| x.0 == g1)
            .count()
            >= ALL),
        k.until("every message", |s| s
            .messages
            .iter()
            .filter(|x| x.0 == g2)
            .count()
            >= ALL),
    );
    // A last message after all: nothing doubled comes before it.
    let last = send_accepted(&mut a, &group, "last".into()).await;
    b.until("the last", |s| s.messages.iter().any(|x| x.2 == last))
        .await;
    k.until("the last", |s| s.messages.iter().any(|x| x.2 == last))
        .await;
    let mut want = want;
    want.push("last".into());
    assert_eq!(of(&b), want, "bob");
    assert_eq!(of(&k), want, "carol");
    assert_eq!(sent.len(), ALL);
    for m in [a, b, k] {
        m.close().await;
    }
    c.stop().await;
}
