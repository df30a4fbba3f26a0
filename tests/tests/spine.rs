//! The messaging spine end to end: real wa-store and wa-chat, real sockets,
//! the real client library. Each test is one promise of DESIGN.md section 4.

mod support;

use std::collections::HashSet;

use bytes::Bytes;
use common::client::{Event, Transport};
use common::proto::ReceiptKind;
use support::{Deployment, expect, next_message};

/// A sends to B, both online: Accepted, then delivered, then read; B sees the
/// message exactly once.
async fn online(ta: Transport, tb: Transport) {
    let d = Deployment::start().await;
    let (a, mut ea) = d.client("alice", ta).await;
    let (b, mut eb) = d.client("bob", tb).await;

    let id = a.send("bob", Bytes::from_static(b"hello")).await.unwrap();
    let duplicate = expect(&mut ea, "Accepted", |e| match e {
        Event::Accepted {
            id: got, duplicate, ..
        } if *got == id => Some(*duplicate),
        _ => None,
    })
    .await;
    assert!(!duplicate);

    let (seq, from, got, body) = next_message(&mut eb).await;
    assert_eq!(
        (from.as_str(), got, &body[..]),
        ("alice", id, &b"hello"[..])
    );
    b.ack(&[seq]).await.unwrap();
    let read_id = b.mark_read("alice", &[id]).await.unwrap();
    expect(&mut eb, "Accepted for the read receipt", |e| match e {
        Event::Accepted { id, .. } if *id == read_id => Some(()),
        _ => None,
    })
    .await;

    // Two ticks and blue ticks. The delivered receipt comes from B's home
    // and the read receipt from B's device, so either may come first.
    let mut kinds = Vec::new();
    for _ in 0..2 {
        let (seq, kind) = expect(&mut ea, "a receipt", |e| match e {
            Event::Receipt {
                seq,
                from,
                kind,
                ids,
            } => {
                assert_eq!((from.as_str(), ids.as_slice()), ("bob", &[id][..]));
                Some((*seq, *kind))
            }
            _ => None,
        })
        .await;
        kinds.push(kind);
        a.ack(&[seq]).await.unwrap();
    }
    kinds.sort_by_key(|k| *k as i32);
    assert_eq!(kinds, [ReceiptKind::Delivered, ReceiptKind::Read]);

    // Exactly once: the next thing B sees is the next message, not the first again.
    let id2 = a.send("bob", Bytes::from_static(b"second")).await.unwrap();
    let (_, _, got, body) = next_message(&mut eb).await;
    assert_eq!((got, &body[..]), (id2, &b"second"[..]));

    a.close().await;
    b.close().await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_both_tcp() {
    online(Transport::Tcp, Transport::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_both_quic() {
    online(Transport::Quic, Transport::Quic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_across_transports() {
    online(Transport::Tcp, Transport::Quic).await;
}

/// B offline: 1,000 messages wait; B gets all, in order, once. A is offline
/// when B acknowledges and still gets every delivered receipt later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_recipient_gets_thousand_in_order_and_offline_sender_gets_receipts() {
    const N: usize = 1000;
    let d = Deployment::start().await;
    let (a, mut ea) = d.client("alice", Transport::Tcp).await;
    let mut ids = Vec::with_capacity(N);
    for i in 0..N {
        ids.push(a.send("bob", Bytes::from(format!("m{i}"))).await.unwrap());
    }
    let mut accepted = HashSet::new();
    while accepted.len() < N {
        let id = expect(&mut ea, "Accepted", |e| match e {
            Event::Accepted { id, .. } => Some(*id),
            _ => None,
        })
        .await;
        assert!(accepted.insert(id), "Accepted twice for one id");
    }
    a.close().await;
    drop(ea);

    let (b, mut eb) = d.client("bob", Transport::Quic).await;
    for (i, want) in ids.iter().enumerate() {
        let (seq, from, id, body) = next_message(&mut eb).await;
        assert_eq!(from, "alice");
        assert_eq!(
            (id, &body[..]),
            (*want, format!("m{i}").as_bytes()),
            "message {i} out of order"
        );
        b.ack(&[seq]).await.unwrap();
    }

    let (a, mut ea) = d.client("alice", Transport::Tcp).await;
    let mut delivered = HashSet::new();
    while delivered.len() < N {
        let (seq, got) = expect(&mut ea, "delivered receipt", |e| match e {
            Event::Receipt {
                seq,
                kind: ReceiptKind::Delivered,
                ids,
                from,
            } if from == "bob" => Some((*seq, ids.clone())),
            _ => None,
        })
        .await;
        for id in got {
            assert!(delivered.insert(id), "delivered receipt twice");
        }
        a.ack(&[seq]).await.unwrap();
    }
    assert_eq!(delivered, ids.iter().copied().collect::<HashSet<_>>());

    // Once: after the thousand, B's next message is a new one.
    let last = a.send("bob", Bytes::from_static(b"last")).await.unwrap();
    let (_, _, id, _) = next_message(&mut eb).await;
    assert_eq!(id, last);

    a.close().await;
    b.close().await;
    d.stop().await;
}

/// A's connection drops after the Send reached the server and before Accepted
/// reached A: the client resends with the same id on reconnect, the home
/// recognises it, and B sees the message once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resend_after_drop_before_accepted_is_seen_once() {
    let d = Deployment::start().await;
    let proxy = support::proxy::Proxy::start(d.chat_tcp).await;
    let (b, mut eb) = d.client("bob", Transport::Tcp).await;
    let mut cfg = d.client_config("alice", Transport::Tcp);
    cfg.addr = proxy.addr;
    let (a, mut ea) = common::client::Client::connect(cfg).await.unwrap();

    proxy.blackhole_server_to_client(true);
    let id = a.send("bob", Bytes::from_static(b"once")).await.unwrap();
    // B receiving it proves the home stored it and answered; A saw nothing.
    let (seq, _, got, _) = next_message(&mut eb).await;
    assert_eq!(got, id);
    b.ack(&[seq]).await.unwrap();
    proxy.cut_all();

    // On reconnect A gets both the answer to its resend and the delivered
    // receipt B's ack produced meanwhile, in either order (PROTOCOL.md §8).
    let (mut dup, mut receipt) = (None, false);
    while dup.is_none() || !receipt {
        let got = expect(
            &mut ea,
            "Accepted after resend and the delivered receipt",
            |e| match e {
                Event::Accepted {
                    id: got, duplicate, ..
                } if *got == id => Some(Some(*duplicate)),
                Event::Receipt {
                    kind: ReceiptKind::Delivered,
                    ids,
                    ..
                } if ids == &[id] => Some(None),
                _ => None,
            },
        )
        .await;
        match got {
            Some(d) => dup = Some(d),
            None => receipt = true,
        }
    }
    assert_eq!(
        dup,
        Some(true),
        "the resend must be recognised by the home as a duplicate"
    );

    let next = a.send("bob", Bytes::from_static(b"after")).await.unwrap();
    let (_, _, got, body) = next_message(&mut eb).await;
    assert_eq!(
        (got, &body[..]),
        (next, &b"after"[..]),
        "B must not see the first message twice"
    );

    a.close().await;
    b.close().await;
    d.stop().await;
}

/// kill -9 of wa-store after A received Accepted for N messages: after a
/// restart, B receives all N.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_kill_9_loses_no_accepted_message() {
    const N: usize = 300;
    let mut d = Deployment::start_with_store_process().await;
    let (a, mut ea) = d.client("alice", Transport::Tcp).await;
    let mut ids = Vec::new();
    for i in 0..N {
        ids.push(a.send("bob", Bytes::from(format!("k{i}"))).await.unwrap());
    }
    let mut accepted = HashSet::new();
    while accepted.len() < N {
        let id = expect(&mut ea, "Accepted", |e| match e {
            Event::Accepted { id, .. } => Some(*id),
            _ => None,
        })
        .await;
        accepted.insert(id);
    }
    let mut sp = d.store_process.take().unwrap();
    sp.child.start_kill().unwrap(); // SIGKILL
    sp.child.wait().await.unwrap();
    a.close().await;

    d.store_process = Some(support::spawn_store_process(d.dir.path(), sp.addr).await);
    let (b, mut eb) = d.client("bob", Transport::Tcp).await;
    for (i, want) in ids.iter().enumerate() {
        let (seq, _, id, body) = next_message(&mut eb).await;
        assert_eq!(
            (id, &body[..]),
            (*want, format!("k{i}").as_bytes()),
            "message {i}"
        );
        b.ack(&[seq]).await.unwrap();
    }
    b.close().await;
    d.stop().await;
}
