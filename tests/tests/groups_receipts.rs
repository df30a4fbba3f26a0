//! Group receipts, aggregated (docs/PROTOCOL.md "Group receipts"): the
//! members' home gathers their delivered receipts into one item for the
//! sender, the sender's home their read receipts into another, and the
//! sender's client library tells who has and who has read each message,
//! and when all have.

mod support;

use bytes::Bytes;
use common::client::{MessageId, Transport};
use common::proto::ReceiptKind;
use support::cluster::Cluster;
use support::groups::{Member, Seen};

/// A window long enough that the four members' acks of both messages fall
/// into it on a loaded machine, so that the count below is exact.
const STORES: &str = "[groups]\nreceipt_window = \"4s\"\n";

/// A 5-member group across two islands: the sender on island 1, four
/// members on island 2 (one home). The sender goes offline once its two
/// messages are accepted; every member gets them and reads them; the
/// sender, back, gets every member's delivered and read receipts, as one
/// item of each kind for all four members and both messages, and its
/// client library says "delivered to all" and "read by all".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_of_four_members_on_one_home_come_as_one_item() {
    let c = Cluster::start_with(2, 2, STORES).await;
    let a = c.user_on(1, "alice");
    let others = [
        c.user_on(2, "bob"),
        c.user_on(2, "carol"),
        c.user_on(2, "dave"),
        c.user_on(2, "erin"),
    ];
    let cfg = |u: &str, edge: usize| c.client_config(u, edge, Transport::Tcp);
    let mut alice = Member::connect(&a, cfg(&a, 1)).await;
    let mut members = Vec::new();
    for m in &others {
        members.push(Member::connect(m, cfg(m, 2)).await);
    }
    let names: Vec<&str> = others.iter().map(String::as_str).collect();
    let (req, group) = alice.client.create_group(&a, "r", &names).await.unwrap();
    assert_eq!(alice.info(req).await.members.len(), 5);

    let mut ids: Vec<MessageId> = Vec::new();
    for t in ["one", "two"] {
        let id = alice
            .client
            .send_group(&group, Bytes::from(t))
            .await
            .unwrap();
        ids.push(id);
    }
    for id in &ids {
        alice.accepted(*id).await;
    }
    // Tracked from the send on: nobody has it yet.
    let st = alice.client.group_receipts(&group, &ids[0]).unwrap();
    assert!(!st.delivered_to_all && st.delivered.is_empty(), "{st:?}");
    assert_eq!(st.members.len(), 4, "the sender is not counted: {st:?}");
    alice.close().await;

    // The members get both (each acknowledges, which makes a delivered
    // receipt) and read them, the sender offline. Each `MarkRead` is
    // answered once the item gathering it is stored, so all four are sent
    // before any answer is awaited.
    let mut reads = Vec::new();
    for m in &mut members {
        m.messages(2).await;
        reads.push(m.client.mark_read_in_group(&group, &a, &ids).await.unwrap());
    }
    for (m, read) in members.iter_mut().zip(reads) {
        m.accepted(read).await;
    }

    // Back: a new connection knows nothing of the messages; it learns the
    // membership by asking, and the rest from the receipts.
    let mut alice = Member::connect(&a, cfg(&a, 1)).await;
    let info = alice.client.group_info(&group).await.unwrap();
    alice.info(info).await;
    let settled = |s: &Seen| {
        ids.iter().all(|id| {
            s.states
                .get(id)
                .is_some_and(|st| st.delivered_to_all && st.read_by_all)
        })
    };
    // (Read implies delivered: the library may say both before the
    // delivered item, held for the window, comes.)
    let all_receipts = |s: &Seen| {
        others.iter().all(|m| {
            [ReceiptKind::Delivered, ReceiptKind::Read]
                .iter()
                .all(|k| s.receipted(m, *k).len() >= ids.len())
        })
    };
    alice
        .until("delivered to all and read by all", |s| {
            settled(s) && all_receipts(s)
        })
        .await;
    for m in &others {
        for kind in [ReceiptKind::Delivered, ReceiptKind::Read] {
            let mut got = alice.seen.receipted(m, kind);
            got.sort_unstable();
            got.dedup();
            let mut want = ids.clone();
            want.sort_unstable();
            assert_eq!(got, want, "{m} {kind:?}");
        }
    }
    // The library answers from what it received.
    for id in &ids {
        let mut read = alice.client.who_has_read(&group, id);
        read.sort();
        let mut want = others.to_vec();
        want.sort();
        assert_eq!(read, want);
        assert!(alice.client.who_has_read("not-this-group", id).is_empty());
    }
    // Fewer items than members: the four members' delivered receipts of
    // both messages are one item (gathered at their home; one each would
    // make eight), and their read receipts another (gathered at the
    // sender's home, from four edges' MarkReads).
    let items = |kind: ReceiptKind| -> Vec<usize> {
        alice
            .seen
            .receipt_items
            .iter()
            .filter(|i| i.0 == kind)
            .map(|i| i.1)
            .collect()
    };
    assert_eq!(
        items(ReceiptKind::Delivered),
        [4],
        "{:?}",
        alice.seen.receipt_items
    );
    assert_eq!(
        items(ReceiptKind::Read),
        [4],
        "{:?}",
        alice.seen.receipt_items
    );

    // Nothing more comes: a marker from each member finds nothing else
    // before it.
    for m in &mut members {
        let id = m
            .client
            .send(&a, Bytes::from_static(b"marker"))
            .await
            .unwrap();
        m.accepted(id).await;
    }
    alice.until("four markers", |s| s.direct.len() == 4).await;
    assert_eq!(alice.seen.receipt_items.len(), 2);
    for m in members.into_iter().chain([alice]) {
        m.close().await;
    }
}

/// kill -9 of the members' home while their delivered receipts wait in an
/// open batch: nothing is lost. The acknowledged copies stay until their
/// receipt is stored, so after the restart they are delivered again, the
/// clients acknowledge them again, and the receipts reach the sender.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_while_receipts_are_gathered_loses_none() {
    let Crash {
        mut c,
        a,
        others,
        mut alice,
        members,
        group,
        id,
    } = Crash::start().await;
    // Both copies acknowledged, their receipts held (the window is open).
    let (dir, admin) = (c.dir.path().to_owned(), c.stores[1].admin);
    let t = std::time::Instant::now();
    for m in &others {
        let path = format!("/admin/trace?from={a}&to={m}&id={}", hex::encode(id));
        loop {
            let doc: serde_json::Value =
                serde_json::from_str(&support::admin_get(&dir, admin, &path).await).unwrap();
            if doc["receipt"]
                .as_str()
                .is_some_and(|r| r.contains("on its way"))
            {
                break;
            }
            assert!(t.elapsed() < support::PATIENCE, "never acknowledged: {doc}");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    c.stores[1].child.start_kill().unwrap(); // SIGKILL
    c.stores[1].child.wait().await.unwrap();
    assert!(
        t.elapsed() < std::time::Duration::from_secs(8),
        "the window closed before the kill; the test proves nothing"
    );
    assert!(
        alice
            .seen
            .receipted(&others[0], ReceiptKind::Delivered)
            .is_empty()
    );
    c.restart_store(2).await;

    alice
        .until("both members' delivered receipts after the restart", |s| {
            others
                .iter()
                .all(|m| s.receipted(m, ReceiptKind::Delivered).contains(&id))
        })
        .await;
    let st = alice.client.group_receipts(&group, &id).unwrap();
    assert!(st.delivered_to_all, "{st:?}");
    for m in members.into_iter().chain([alice]) {
        m.close().await;
    }
}

/// kill -9 of the sender's home while its members' read receipts wait
/// there in an open batch: nothing is lost. Their `MarkRead`s are not
/// answered until the batch is stored, so the clients send them again
/// after the restart, and the read receipts reach the sender.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_while_read_receipts_are_gathered_loses_none() {
    let Crash {
        mut c,
        a,
        others,
        alice,
        mut members,
        group,
        id,
    } = Crash::start().await;
    let cfg = |c: &Cluster, u: &str, edge: usize| c.client_config(u, edge, Transport::Tcp);
    alice.close().await;
    let mut reads = Vec::new();
    let t = std::time::Instant::now();
    for m in &mut members {
        reads.push(
            m.client
                .mark_read_in_group(&group, &a, &[id])
                .await
                .unwrap(),
        );
    }
    // The sender's home, with the batch open (the window is 8 s).
    c.stores[0].child.start_kill().unwrap(); // SIGKILL
    c.stores[0].child.wait().await.unwrap();
    // (The window is 8 s: if the kill came within it, no batch was stored.)
    assert!(
        t.elapsed() < std::time::Duration::from_secs(8),
        "the window closed before the kill; the test proves nothing"
    );
    c.restart_store(1).await;
    for (m, read) in members.iter_mut().zip(reads) {
        m.accepted(read).await;
    }

    let mut alice = Member::connect(&a, cfg(&c, &a, 1)).await;
    alice
        .until("both members' read receipts after the restart", |s| {
            others
                .iter()
                .all(|m| s.receipted(m, ReceiptKind::Read).contains(&id))
        })
        .await;
    for m in members.into_iter().chain([alice]) {
        m.close().await;
    }
}

/// Two islands with an 8 s receipt window: alice on island 1 sent one
/// message to a group of bob and carol (island 2), who both received it.
struct Crash {
    c: Cluster,
    a: String,
    others: [String; 2],
    alice: Member,
    members: Vec<Member>,
    group: String,
    id: MessageId,
}

impl Crash {
    async fn start() -> Crash {
        let c = Cluster::start_with(2, 2, "[groups]\nreceipt_window = \"8s\"\n").await;
        let a = c.user_on(1, "alice");
        let others = [c.user_on(2, "bob"), c.user_on(2, "carol")];
        let cfg = |u: &str, edge: usize| c.client_config(u, edge, Transport::Tcp);
        let mut alice = Member::connect(&a, cfg(&a, 1)).await;
        let mut members = Vec::new();
        for m in &others {
            members.push(Member::connect(m, cfg(m, 2)).await);
        }
        let names: Vec<&str> = others.iter().map(String::as_str).collect();
        let (req, group) = alice.client.create_group(&a, "k", &names).await.unwrap();
        alice.info(req).await;
        let id = alice
            .client
            .send_group(&group, Bytes::from_static(b"one"))
            .await
            .unwrap();
        alice.accepted(id).await;
        for m in &mut members {
            m.messages(1).await;
        }
        Crash {
            c,
            a,
            others,
            alice,
            members,
            group,
            id,
        }
    }
}
