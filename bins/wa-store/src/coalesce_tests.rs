//! The coalescer as a state machine: receipts in, errands out, bounded in
//! count and time.

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::proto::{Envelope, Receipt, ReceiptKind, envelope};

use super::{Coalescer, MAX_OPEN};
use crate::courier::Errand;
use crate::home::LinkTx;

const WINDOW: Duration = Duration::from_millis(50);

fn id(n: u8) -> Bytes {
    Bytes::from(vec![n; 16])
}

/// `member`'s delivered receipt of `ids` for `to`, about `group` (empty:
/// a one-to-one receipt), made for `member`'s item `seq`.
fn receipt(to: &str, group: &str, member: &str, kind: ReceiptKind, ids: &[u8], seq: u64) -> Errand {
    let ids: Vec<Bytes> = ids.iter().map(|n| id(*n)).collect();
    Errand::batch(
        to.into(),
        Envelope {
            from: member.into(),
            from_device: 1,
            id: ids[0].clone(),
            content: Some(envelope::Content::Receipt(Receipt {
                kind: kind as i32,
                ids,
                members: Vec::new(),
            })),
            group: group.into(),
            ..Default::default()
        },
        vec![(member.into(), seq)],
        Vec::new(),
    )
}

fn delivered(to: &str, member: &str, ids: &[u8], seq: u64) -> Errand {
    receipt(to, "g", member, ReceiptKind::Delivered, ids, seq)
}

fn receipt_of(e: &Errand) -> &Receipt {
    match &e.envelope.content {
        Some(envelope::Content::Receipt(r)) => r,
        other => panic!("not a receipt: {other:?}"),
    }
}

#[test]
fn four_members_within_the_window_make_one_item_for_every_item_acked() {
    let mut c = Coalescer::new(WINDOW, 256);
    let t0 = Instant::now();
    for (i, m) in ["dave", "bob", "erin", "carol"].iter().enumerate() {
        let out = c.offer(delivered("alice", m, &[1, 2], i as u64 + 10), t0);
        assert!(out.is_empty(), "held until the window ends");
    }
    assert_eq!(c.open(), 1);
    assert_eq!(c.deadline(), Some(t0 + WINDOW));
    assert!(c.due(t0 + WINDOW - Duration::from_millis(1)).is_empty());
    let out = c.due(t0 + WINDOW);
    assert_eq!(out.len(), 1);
    let e = &out[0];
    assert_eq!(e.to, "alice");
    assert_eq!(e.envelope.group, "g");
    let r = receipt_of(e);
    let members: Vec<_> = r.members.iter().map(|m| m.member.as_str()).collect();
    // Sorted, so that the same receipts make the same item.
    assert_eq!(members, ["bob", "carol", "dave", "erin"]);
    assert!(r.members.iter().all(|m| m.ids == [id(1), id(2)]));
    // An old client reads a true receipt: the first member's.
    assert_eq!(e.envelope.from, "bob");
    assert_eq!(r.ids, [id(1), id(2)]);
    // Every item it was made for is released once it is stored.
    let mut from = e.from.clone();
    from.sort();
    assert_eq!(
        from,
        [
            ("bob".into(), 11),
            ("carol".into(), 13),
            ("dave".into(), 10),
            ("erin".into(), 12)
        ]
    );
    assert_eq!(c.open(), 0);
    assert_eq!(c.deadline(), None);
}

#[test]
fn one_to_one_receipts_pass_through_at_once() {
    let mut c = Coalescer::new(WINDOW, 256);
    let t0 = Instant::now();
    let out = c.offer(
        receipt("alice", "", "bob", ReceiptKind::Delivered, &[1], 1),
        t0,
    );
    assert_eq!(out.len(), 1);
    assert!(receipt_of(&out[0]).members.is_empty());
    let out = c.offer(receipt("alice", "", "bob", ReceiptKind::Read, &[1], 2), t0);
    assert_eq!(out.len(), 1);
    assert_eq!(c.open(), 0);
}

/// A member's `MarkRead` of group messages, as the sender's home gathers
/// it: no item of its own, one request (`req`) to answer.
fn read(to: &str, member: &str, ids: &[u8], link: &LinkTx, req: u64) -> Errand {
    let mut e = receipt(to, "g", member, ReceiptKind::Read, ids, 0);
    e.from.clear();
    // (The MarkRead's own id, not a message id.)
    e.envelope.id = Bytes::from(vec![0xee; 16]);
    e.waiters.push((link.clone(), req));
    e
}

#[test]
fn read_receipts_are_gathered_apart_from_delivered_ones_and_answer_every_request() {
    let (tx, _rx) = tokio::sync::mpsc::channel(8);
    let link = LinkTx::new(7, tx, tokio_util::sync::CancellationToken::new());
    let mut c = Coalescer::new(WINDOW, 256);
    let t0 = Instant::now();
    for (i, m) in ["dave", "bob", "carol"].iter().enumerate() {
        assert!(
            c.offer(read("alice", m, &[1], &link, i as u64 + 1), t0)
                .is_empty()
        );
        assert!(
            c.offer(delivered("alice", m, &[1], i as u64 + 10), t0)
                .is_empty()
        );
    }
    assert_eq!(c.open(), 2, "one batch per kind");
    let out = c.due(t0 + WINDOW);
    assert_eq!(out.len(), 2);
    let reads: Vec<&Errand> = out
        .iter()
        .filter(|e| receipt_of(e).kind == ReceiptKind::Read as i32)
        .collect();
    assert_eq!(reads.len(), 1);
    let r = receipt_of(reads[0]);
    let members: Vec<_> = r.members.iter().map(|m| m.member.as_str()).collect();
    assert_eq!(members, ["bob", "carol", "dave"]);
    assert!(reads[0].from.is_empty(), "no item waits on a read receipt");
    let mut reqs: Vec<u64> = reads[0].waiters.iter().map(|w| w.1).collect();
    reqs.sort();
    assert_eq!(
        reqs,
        [1, 2, 3],
        "every MarkRead is answered once it is stored"
    );
    assert_ne!(reads[0].envelope.id, Bytes::from(vec![0xee; 16]));
}

#[test]
fn a_lone_read_receipt_keeps_its_own_id() {
    let (tx, _rx) = tokio::sync::mpsc::channel(8);
    let link = LinkTx::new(7, tx, tokio_util::sync::CancellationToken::new());
    let mut c = Coalescer::new(WINDOW, 256);
    let t0 = Instant::now();
    assert!(
        c.offer(read("alice", "bob", &[1, 2], &link, 9), t0)
            .is_empty()
    );
    let out = c.due(t0 + WINDOW);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].envelope.id, Bytes::from(vec![0xee; 16]));
    assert_eq!(receipt_of(&out[0]).ids, [id(1), id(2)]);
    assert!(receipt_of(&out[0]).members.is_empty());
    assert_eq!(out[0].waiters.len(), 1);
}

#[test]
fn a_lone_receipt_goes_as_it_was() {
    let mut c = Coalescer::new(WINDOW, 256);
    let t0 = Instant::now();
    let alone = delivered("alice", "bob", &[7], 3);
    let (want_id, want_from) = (alone.envelope.id.clone(), alone.envelope.from.clone());
    assert!(c.offer(alone, t0).is_empty());
    let out = c.due(t0 + WINDOW);
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].envelope.id, want_id,
        "the message's id, as without aggregation"
    );
    assert_eq!(out[0].envelope.from, want_from);
    assert!(receipt_of(&out[0]).members.is_empty());
}

#[test]
fn batches_are_per_sender_and_group() {
    let mut c = Coalescer::new(WINDOW, 256);
    let t0 = Instant::now();
    assert!(c.offer(delivered("alice", "bob", &[1], 1), t0).is_empty());
    assert!(c.offer(delivered("frank", "bob", &[2], 2), t0).is_empty());
    let other_group = receipt("alice", "h", "bob", ReceiptKind::Delivered, &[3], 3);
    assert!(c.offer(other_group, t0).is_empty());
    assert_eq!(c.open(), 3);
    let mut to: Vec<_> = c.due(t0 + WINDOW).into_iter().map(|e| e.to).collect();
    to.sort();
    assert_eq!(to, ["alice", "alice", "frank"]);
}

#[test]
fn a_full_batch_goes_at_once_and_the_next_starts_afresh() {
    let mut c = Coalescer::new(WINDOW, 3);
    let t0 = Instant::now();
    assert!(c.offer(delivered("alice", "bob", &[1], 1), t0).is_empty());
    assert!(c.offer(delivered("alice", "carol", &[1], 2), t0).is_empty());
    let out = c.offer(delivered("alice", "dave", &[1], 3), t0);
    assert_eq!(out.len(), 1);
    assert_eq!(receipt_of(&out[0]).members.len(), 3);
    assert_eq!(c.open(), 0);
    let t1 = t0 + Duration::from_millis(30);
    assert!(c.offer(delivered("alice", "erin", &[1], 4), t1).is_empty());
    // Its own window, not the one of the batch before.
    assert!(c.due(t0 + WINDOW).is_empty());
    assert_eq!(c.due(t1 + WINDOW).len(), 1);
}

#[test]
fn the_same_receipts_make_the_same_id_and_others_another() {
    let t0 = Instant::now();
    let batch = |members: &[&str]| {
        let mut c = Coalescer::new(WINDOW, 256);
        for (i, m) in members.iter().enumerate() {
            c.offer(delivered("alice", m, &[1], i as u64), t0);
        }
        c.due(t0 + WINDOW).remove(0).envelope.id
    };
    assert_eq!(batch(&["bob", "carol"]), batch(&["carol", "bob"]));
    assert_ne!(batch(&["bob", "carol"]), batch(&["bob", "dave"]));
    assert_eq!(batch(&["bob", "carol"]).len(), 16);
}

#[test]
fn open_batches_are_bounded_the_oldest_going_early() {
    let mut c = Coalescer::new(WINDOW, 256);
    let t0 = Instant::now();
    for i in 0..MAX_OPEN {
        let to = format!("sender{i}");
        assert!(
            c.offer(delivered(&to, "bob", &[1], i as u64), t0)
                .is_empty()
        );
    }
    let out = c.offer(delivered("late", "bob", &[1], 0), t0);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].to, "sender0");
    assert_eq!(c.open(), MAX_OPEN);
    assert_eq!(c.due(t0 + WINDOW).len(), MAX_OPEN);
    assert_eq!(c.open(), 0);
}

#[test]
fn no_window_no_aggregation() {
    let mut c = Coalescer::new(Duration::ZERO, 256);
    let out = c.offer(delivered("alice", "bob", &[1], 1), Instant::now());
    assert_eq!(out.len(), 1);
    assert_eq!(c.open(), 0);
}
