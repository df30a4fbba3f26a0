//! The shards' dispatcher (`cell::dispatch`) carrying out a shard's
//! delivered receipts: the courier's queue decides, at once and before any
//! other operation, whether an acknowledged message waits for its receipt
//! or stays to be delivered again.

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::link::{LinkDown, link_down};
use common::proto::{Envelope, envelope::Content};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::cell::{Fatal, ShardCell};
use super::shard::Shard;
use super::shard::stand_ins::{MemEngine, MemLog};
use super::{CacheConfig, Limits, LinkTx, Op};
use crate::flusher::{Commit, FlushFn};
use crate::metrics::Metrics;
use crate::storage::Mailboxes;

/// Message `n`, from "ann" if odd and "cy" if even (one receipt goes to
/// each sender per ack).
fn message(n: u8) -> Envelope {
    Envelope {
        from: if n % 2 == 1 { "ann" } else { "cy" }.into(),
        from_device: 1,
        id: Bytes::from(vec![n; common::proto::limits::ID_LEN]),
        server_ts_ms: 0,
        content: Some(Content::Body(Bytes::from_static(b"hi"))),
        ..Default::default()
    }
}

/// The seqs pushed to `session` that are queued on `rx`.
fn pushed(rx: &mut mpsc::Receiver<LinkDown>, session: u64) -> Vec<u64> {
    let mut seqs = Vec::new();
    while let Ok(LinkDown { kind }) = rx.try_recv() {
        if let Some(link_down::Kind::Push(p)) = kind
            && p.session == session
        {
            seqs.push(p.seq);
        }
    }
    seqs
}

/// A shard cell over memory whose courier queue holds `room` errands, with
/// messages 1..=`n` appended to "bo" and flushed, and "bo"'s session 7 on
/// `link` attached; what was pushed to it is on the returned receiver.
#[allow(clippy::type_complexity)]
fn cell_with(
    room: usize,
    n: u8,
) -> (
    ShardCell,
    mpsc::Receiver<crate::courier::Errand>,
    LinkTx,
    mpsc::Receiver<LinkDown>,
) {
    let commit = Arc::new(Commit::new());
    let shard = Shard::new(
        Arc::new(Mailboxes::new(MemEngine::default())),
        Arc::new(MemLog::default()),
        Arc::clone(&commit),
        Limits {
            max_items: 100,
            max_bytes: 1 << 20,
        },
        CacheConfig {
            sync_delay: Duration::from_secs(3600),
            bypass_items: 100,
            budget_bytes: 1 << 20,
            expire_after: Duration::from_secs(86400),
            write_back_slice: 100,
        },
        Arc::new(Metrics::default()),
        true,
    );
    let (outbox, errands) = crate::courier::outbox_of(room);
    let cell = ShardCell {
        state: Mutex::new(shard),
        queue: Mutex::new(VecDeque::new()),
        settle: AtomicBool::new(false),
        index: 0,
        fatal: Fatal::new(CancellationToken::new()),
        outbox: Some(outbox),
        pusher: None,
    };
    let (tx, rx) = mpsc::channel(64);
    let link = LinkTx::new(1, tx, CancellationToken::new());
    for n in 1..=n {
        cell.run(Some(Op::Append {
            link: link.clone(),
            req: u64::from(n),
            to: "bo".into(),
            envelope: message(n),
            sender_generation: None,
        }))
        .unwrap();
    }
    let ok: FlushFn = Arc::new(|| Ok(()));
    commit.flush_now(&ok);
    cell.run(Some(Op::Attach {
        link: link.clone(),
        session: 7,
        user: "bo".into(),
        device: 1,
        generation: 0,
    }))
    .unwrap();
    (cell, errands, link, rx)
}

#[test]
fn a_receipt_the_courier_refuses_leaves_its_item_for_the_next_session() {
    // Room for one errand: the second receipt (the second sender's) finds
    // the queue full.
    let (cell, mut errands, link, mut rx) = cell_with(1, 2);
    assert_eq!(pushed(&mut rx, 7), [1, 2]);

    cell.run(Some(Op::Ack {
        link: 1,
        session: 7,
        user: "bo".into(),
        seqs: vec![1, 2],
    }))
    .unwrap();
    assert!(errands.try_recv().is_ok(), "the first receipt was queued");
    assert!(
        errands.try_recv().is_err(),
        "the second found the queue full"
    );
    let acked: BTreeSet<u64> = cell.state.lock().unwrap().acked_of("bo");
    assert_eq!(
        acked,
        BTreeSet::from([1]),
        "only the item whose receipt was queued waits for it"
    );
    assert_eq!(link.pushes(), 0, "the ack freed both window slots");

    cell.run(Some(Op::Attach {
        link: link.clone(),
        session: 8,
        user: "bo".into(),
        device: 1,
        generation: 0,
    }))
    .unwrap();
    assert_eq!(
        pushed(&mut rx, 8),
        [2],
        "the refused item is delivered again, the waiting one is not"
    );
}

/// The messages of one sender acknowledged in one `Ack` make one delivered
/// receipt naming all of them (its id a digest of what it says); another
/// sender's, its own, with the message's id.
#[test]
fn one_ack_makes_one_receipt_per_sender() {
    use common::proto::{Receipt, envelope};
    let (cell, mut errands, _link, mut rx) = cell_with(8, 5);
    assert_eq!(pushed(&mut rx, 7), [1, 2, 3, 4, 5]);
    cell.run(Some(Op::Ack {
        link: 1,
        session: 7,
        user: "bo".into(),
        seqs: vec![1, 2, 3, 4, 5],
    }))
    .unwrap();
    let mut got = Vec::new();
    while let Ok(e) = errands.try_recv() {
        let Some(envelope::Content::Receipt(Receipt { ids, .. })) = &e.envelope.content else {
            panic!("not a receipt");
        };
        let seqs: Vec<u64> = e.from.iter().map(|f| f.1).collect();
        got.push((e.to.clone(), e.envelope.id.clone(), ids.clone(), seqs));
    }
    assert_eq!(got.len(), 2, "{got:?}");
    let (to, id, ids, seqs) = &got[0];
    assert_eq!(to, "ann");
    assert_eq!(ids, &[message(1).id, message(3).id, message(5).id]);
    assert_eq!(seqs, &[1, 3, 5], "every item it speaks for waits for it");
    assert!(![1, 3, 5].iter().any(|n| *id == message(*n).id));
    let (to, _, ids, seqs) = &got[1];
    assert_eq!(to, "cy");
    assert_eq!(ids, &[message(2).id, message(4).id]);
    assert_eq!(seqs, &[2, 4]);
    let acked: BTreeSet<u64> = cell.state.lock().unwrap().acked_of("bo");
    assert_eq!(acked, BTreeSet::from([1, 2, 3, 4, 5]));

    // A lone message's receipt keeps the message's id.
    let (cell, mut errands, _link, _rx) = cell_with(8, 1);
    cell.run(Some(Op::Ack {
        link: 1,
        session: 7,
        user: "bo".into(),
        seqs: vec![1],
    }))
    .unwrap();
    let e = errands.try_recv().unwrap();
    assert_eq!(e.envelope.id, message(1).id);
}
