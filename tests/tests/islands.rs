//! Two islands on one machine: two wa-store processes, each the home of half
//! of the fragments, and two wa-chat edges. Users whose homes are on
//! different islands, connected through different edges, get everything a
//! one-island deployment gives them (DESIGN §3, §4).

mod support;

use bytes::Bytes;
use common::client::{Client, Event, Events, MessageId};
use common::link::KvSpace;
use common::link_client::Cas;
use common::proto::ReceiptKind;
use support::cluster::Cluster;
use support::{expect, next_message};

async fn accepted(events: &mut Events, id: MessageId) {
    expect(events, "Accepted", |e| match e {
        Event::Accepted { id: got, .. } if *got == id => Some(()),
        _ => None,
    })
    .await;
}

/// The next receipt: its kind and ids, acknowledged.
async fn receipt(
    client: &Client,
    events: &mut Events,
    from: &str,
) -> (ReceiptKind, Vec<MessageId>) {
    let (seq, kind, ids) = expect(events, "a receipt", |e| match e {
        Event::Receipt {
            seq,
            from: f,
            kind,
            ids,
        } => {
            assert_eq!(f, from);
            Some((*seq, *kind, ids.clone()))
        }
        _ => None,
    })
    .await;
    client.ack(&[seq]).await.unwrap();
    (kind, ids)
}

/// `x` sends `y` a message while both are online: one tick, the message,
/// two ticks, blue ticks.
async fn ticks(
    (x, ex, xn): (&Client, &mut Events, &str),
    (y, ey, yn): (&Client, &mut Events, &str),
    text: &'static str,
) {
    let id = x
        .send(yn, Bytes::from_static(text.as_bytes()))
        .await
        .unwrap();
    accepted(ex, id).await;
    let (seq, from, got, body) = next_message(ey).await;
    assert_eq!((from.as_str(), got, &body[..]), (xn, id, text.as_bytes()));
    y.ack(&[seq]).await.unwrap();
    let read = y.mark_read(xn, &[id]).await.unwrap();
    accepted(ey, read).await;
    assert_eq!(both_receipts(x, ex, yn).await, [id, id]);
}

/// A delivered and a read receipt, in either order (the first comes from
/// the recipient's home, the second from its device): their ids, delivered
/// first.
async fn both_receipts(client: &Client, events: &mut Events, from: &str) -> [MessageId; 2] {
    let mut got = [
        receipt(client, events, from).await,
        receipt(client, events, from).await,
    ];
    got.sort_by_key(|(k, _)| *k as i32);
    assert_eq!(
        [got[0].0, got[1].0],
        [ReceiptKind::Delivered, ReceiptKind::Read]
    );
    [got[0].1[0], got[1].1[0]]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_islands_ticks_both_ways_offline_delivery_and_receipts_to_an_offline_sender() {
    let c = Cluster::start(2, 2).await;
    let a = c.user_on(1, "alice");
    let b = c.user_on(2, "bob");
    assert_ne!(c.map.home(&a).primary, c.map.home(&b).primary);

    // A on edge 1 (home: island 1), B on edge 2 (home: island 2).
    let (ca, mut ea) = c.client(&a, 1).await;
    let (cb, mut eb) = c.client(&b, 2).await;
    ticks((&ca, &mut ea, &a), (&cb, &mut eb, &b), "a to b").await;
    ticks((&cb, &mut eb, &b), (&ca, &mut ea, &a), "b to a").await;

    // B offline: A's messages wait at B's home and arrive in order when B
    // comes back (through the other edge this time).
    cb.close().await;
    let mut sent = Vec::new();
    for i in 0..20u8 {
        let id = ca.send(&b, Bytes::from(vec![b'm', i])).await.unwrap();
        accepted(&mut ea, id).await;
        sent.push(id);
    }
    let (cb, mut eb) = c.client(&b, 1).await;
    for want in &sent {
        let (seq, from, got, _) = next_message(&mut eb).await;
        assert_eq!((from.as_str(), got), (a.as_str(), *want));
        cb.ack(&[seq]).await.unwrap();
    }
    for want in &sent {
        assert_eq!(
            receipt(&ca, &mut ea, &b).await,
            (ReceiptKind::Delivered, vec![*want])
        );
    }

    // A offline after its message was accepted: B's delivered and read
    // receipts wait at A's home for A's next session.
    let id = ca
        .send(&b, Bytes::from_static(b"then offline"))
        .await
        .unwrap();
    accepted(&mut ea, id).await;
    ca.close().await;
    let (seq, _, got, _) = next_message(&mut eb).await;
    assert_eq!(got, id);
    cb.ack(&[seq]).await.unwrap();
    let read = cb.mark_read(&a, &[id]).await.unwrap();
    accepted(&mut eb, read).await;
    let (ca, mut ea) = c.client(&a, 2).await;
    assert_eq!(both_receipts(&ca, &mut ea, &b).await, [id, id]);

    ca.close().await;
    cb.close().await;
    c.stop().await;
}

/// Receives `n` messages, acknowledging each; their ids in arrival order.
async fn receive_all(client: &Client, events: &mut Events, n: usize) -> Vec<(String, MessageId)> {
    let mut got = Vec::with_capacity(n);
    for _ in 0..n {
        let (seq, from, id, _) = next_message(events).await;
        client.ack(&[seq]).await.unwrap();
        got.push((from, id));
    }
    got
}

/// Collects delivered receipts from `from` until every id of `want` has one;
/// fails on a receipt for anything else or on one that comes twice.
async fn delivered_receipts(client: &Client, events: &mut Events, from: &str, want: &[MessageId]) {
    let mut missing: std::collections::HashSet<MessageId> = want.iter().copied().collect();
    while !missing.is_empty() {
        let (kind, ids) = receipt(client, events, from).await;
        assert_eq!(kind, ReceiptKind::Delivered);
        for id in ids {
            assert!(
                missing.remove(&id),
                "a receipt twice, or for another message"
            );
        }
    }
}

/// A user b whose home is island 2 (which keeps the fragments above b's
/// fragment `f`), its account record, and `n` messages from alice (on edge
/// 1, client `ca`) waiting for it.
struct Waiting {
    b: String,
    f: u32,
    ca: Client,
    ea: Events,
    sent: Vec<MessageId>,
}

async fn waiting_at_island_2(c: &Cluster, n: u8) -> Waiting {
    let a = c.user_on(1, "alice");
    let b = (0..)
        .map(|i| format!("bob{i}"))
        .find(|u| c.map.home(u).name == "island-2" && c.map.fragment(u) < 255)
        .unwrap();
    let stored = c
        .link_client()
        .kv_put(KvSpace::Account, &b, Bytes::from_static(b"b's account"), 0)
        .await
        .unwrap();
    assert!(matches!(stored, Cas::Stored(_)));
    let (ca, mut ea) = c.client(&a, 1).await;
    let mut sent = Vec::new();
    for i in 0..n {
        let id = ca.send(&b, Bytes::from(vec![i])).await.unwrap();
        accepted(&mut ea, id).await;
        sent.push(id);
    }
    Waiting {
        f: c.map.fragment(&b),
        b,
        ca,
        ea,
        sent,
    }
}

/// The window defect of the edge-made receipts: an acknowledged item whose
/// receipt could not be stored never left the session's push window, so
/// after 256 of them the session received nothing more. Now the home frees
/// the slot at the ack and stores the receipt when the sender's home is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recipient_keeps_receiving_while_a_senders_home_is_down_and_each_receipt_arrives_once() {
    let mut c = Cluster::start(2, 2).await;
    let s = c.user_on(1, "sender");
    let o = c.user_on(2, "other");
    let r = c.user_on(2, "rcpt");

    // 300 messages from s wait at r's home.
    let (cs, mut es) = c.client(&s, 1).await;
    let mut from_s = Vec::new();
    for i in 0..300u16 {
        from_s.push(
            cs.send(&r, Bytes::from(i.to_be_bytes().to_vec()))
                .await
                .unwrap(),
        );
    }
    for id in &from_s {
        accepted(&mut es, *id).await;
    }
    cs.close().await;

    // s's home goes away; o (at r's home) sends 100 more.
    c.stop_store(1).await;
    let (co, mut eo) = c.client(&o, 2).await;
    let mut from_o = Vec::new();
    for i in 0..100u16 {
        from_o.push(
            co.send(&r, Bytes::from(i.to_be_bytes().to_vec()))
                .await
                .unwrap(),
        );
    }
    for id in &from_o {
        accepted(&mut eo, *id).await;
    }

    // r gets all 400 (past the window of 256), in order per sender.
    let (cr, mut er) = c.client(&r, 2).await;
    let got = receive_all(&cr, &mut er, 400).await;
    let of = |who: &str| -> Vec<MessageId> {
        got.iter()
            .filter(|(f, _)| f == who)
            .map(|(_, id)| *id)
            .collect()
    };
    assert_eq!(of(&s), from_s);
    assert_eq!(of(&o), from_o);
    // o's home is up: its receipts come now.
    delivered_receipts(&co, &mut eo, &r, &from_o).await;

    // s's home is back: each of its 300 receipts reaches s once.
    c.restart_store(1).await;
    let (cs, mut es) = c.client(&s, 1).await;
    delivered_receipts(&cs, &mut es, &r, &from_s).await;

    cs.close().await;
    co.close().await;
    cr.close().await;
    c.stop().await;
}

/// The documented move (docs/OPERATIONS.md, "Moving fragments"): a new map
/// with a raised epoch gives a range of fragments to another island, and
/// every node reads it (SIGHUP). A sender that keeps sending meanwhile sees
/// a delay and no error; the recipient gets everything accepted before,
/// during and after the move, once and in order, from its new home.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_a_fragment_range_loses_nothing_and_a_sender_sees_only_a_delay() {
    let mut c = Cluster::start(2, 2).await;
    // b's account record and 50 messages wait at b's home, island 2.
    let Waiting {
        b,
        f,
        ca,
        mut ea,
        mut sent,
    } = waiting_at_island_2(&c, 50).await;

    // a keeps sending, one at a time, while b's fragment moves to island 1.
    let b2 = b.clone();
    let sender = tokio::spawn(async move {
        let mut more = Vec::new();
        for i in 50..150u8 {
            let id = ca.send(&b2, Bytes::from(vec![i])).await.unwrap();
            // (`expect` fails on anything else, a rejection included.)
            accepted(&mut ea, id).await;
            more.push(id);
        }
        (ca, ea, more)
    });
    let mut moved = c.map.clone();
    moved.epoch = 2;
    moved.islands[0].fragments = [0, f];
    moved.islands[1].fragments = [f + 1, 255];
    c.publish(moved);
    let (ca, mut ea, more) = sender.await.unwrap();
    sent.extend(more);
    assert_eq!(c.map.home(&b).name, "island-1");

    // b, at its new home, gets all 150 once and in order.
    let (cb, mut eb) = c.client(&b, 2).await;
    let got = receive_all(&cb, &mut eb, sent.len()).await;
    let ids: Vec<MessageId> = got.into_iter().map(|(_, id)| id).collect();
    assert_eq!(ids, sent);
    delivered_receipts(&ca, &mut ea, &b, &sent).await;
    // The account record moved with the fragment.
    let record = c.link_client().kv_get(KvSpace::Account, &b).await.unwrap();
    assert_eq!(&record.value[..], b"b's account");

    ca.close().await;
    cb.close().await;
    c.stop().await;
}

/// A move that the homes' restarts interrupt goes on after they start: here
/// both homes are stopped when the map moves b's fragment, the new home
/// starts first and must not take a new message for b before the old home,
/// once back, has handed b's earlier ones over (else b would get them out
/// of order), and the old home must hand them over without being told again.
/// Before the homes recorded their moves (`MOVES` in the data directory),
/// the new home served b at once and the old one forgot b's items.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_interrupted_by_restarts_goes_on_in_order_after_them() {
    let mut c = Cluster::start(2, 2).await;
    let Waiting {
        b,
        f,
        ca,
        mut ea,
        mut sent,
    } = waiting_at_island_2(&c, 30).await;

    // Both homes stop; b's fragment moves to island 1 meanwhile (the edges
    // read the new map), and island 1 starts first.
    c.stop_store(1).await;
    c.stop_store(2).await;
    let mut moved = c.map.clone();
    moved.epoch = 2;
    moved.islands[0].fragments = [0, f];
    moved.islands[1].fragments = [f + 1, 255];
    c.publish(moved);
    c.restart_store(1).await;

    // A new message for b waits while b's earlier ones cannot arrive.
    let late = ca.send(&b, Bytes::from_static(b"late")).await.unwrap();
    let early =
        tokio::time::timeout(std::time::Duration::from_secs(3), accepted(&mut ea, late)).await;
    assert!(
        early.is_err(),
        "the new home took a message for b before b's earlier ones arrived"
    );
    // The old home, started with the new map, hands b's items over by
    // itself; then the new message is taken.
    c.restart_store(2).await;
    accepted(&mut ea, late).await;
    sent.push(late);

    let (cb, mut eb) = c.client(&b, 2).await;
    let got = receive_all(&cb, &mut eb, sent.len()).await;
    let ids: Vec<MessageId> = got.into_iter().map(|(_, id)| id).collect();
    assert_eq!(ids, sent, "every message once, in order");
    let record = c.link_client().kv_get(KvSpace::Account, &b).await.unwrap();
    assert_eq!(&record.value[..], b"b's account");

    ca.close().await;
    cb.close().await;
    c.stop().await;
}

/// Reads `key`'s account record until it is `want` (a hand-over in
/// progress answers from the old home, or not at all), at most PATIENCE.
async fn account_becomes(c: &Cluster, key: &str, want: &[u8]) {
    let client = c.link_client();
    let deadline = tokio::time::Instant::now() + support::PATIENCE;
    loop {
        let got = client.kv_get(KvSpace::Account, key).await;
        if matches!(&got, Ok(r) if &r.value[..] == want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{key}'s account is {got:?}, not {want:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A fragment that moves away and comes back brings back what changed
/// while it was away. Its first home keeps a stale copy of the records it
/// handed over, which the move back must replace (a changed account) or
/// remove (a deleted one); before, the move back kept the stale copies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fragment_moved_away_and_back_brings_its_changes_back() {
    let mut c = Cluster::start(2, 1).await;
    let on_2 = |c: &Cluster, i: usize| {
        (0..)
            .map(|n| format!("u{n}"))
            .filter(|u| c.map.home(u).name == "island-2" && c.map.fragment(u) < 255)
            .nth(i)
            .unwrap()
    };
    let (b, d) = (on_2(&c, 0), on_2(&c, 1));
    let f = c.map.fragment(&b).max(c.map.fragment(&d));
    let records = c.link_client();
    for key in [&b, &d] {
        let stored = records
            .kv_put(KvSpace::Account, key, Bytes::from_static(b"v1"), 0)
            .await
            .unwrap();
        assert!(matches!(stored, Cas::Stored(_)));
    }
    let (first, last) = (c.map.islands[1].fragments[0], c.map.islands[1].fragments[1]);

    // Away to island 1: b's account changes there, d's is deleted.
    let mut away = c.map.clone();
    away.epoch = 2;
    away.islands[0].fragments = [0, f];
    away.islands[1].fragments = [f + 1, last];
    c.publish(away);
    account_becomes(&c, &b, b"v1").await;
    account_becomes(&c, &d, b"v1").await;
    let client = c.link_client();
    for (key, value) in [(&b, &b"v2"[..]), (&d, &b""[..])] {
        let there = client.kv_get(KvSpace::Account, key).await.unwrap();
        let stored = client
            .kv_put(
                KvSpace::Account,
                key,
                Bytes::copy_from_slice(value),
                there.version,
            )
            .await
            .unwrap();
        assert!(matches!(stored, Cas::Stored(_)), "{key}: {stored:?}");
    }

    // And back to island 2.
    let mut back = c.map.clone();
    back.epoch = 3;
    back.islands[0].fragments = [0, first - 1];
    back.islands[1].fragments = [first, last];
    c.publish(back);
    assert_eq!(c.map.home(&b).name, "island-2");
    account_becomes(&c, &b, b"v2").await;
    account_becomes(&c, &d, b"").await;
    c.stop().await;
}
