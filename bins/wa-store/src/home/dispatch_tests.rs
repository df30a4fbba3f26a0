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

fn message(n: u8) -> Envelope {
    Envelope {
        from: "ann".into(),
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

#[test]
fn a_receipt_the_courier_refuses_leaves_its_item_for_the_next_session() {
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
    // Room for one errand: the second receipt finds the queue full.
    let (outbox, mut errands) = crate::courier::outbox_of(1);
    let cell = ShardCell {
        state: Mutex::new(shard),
        queue: Mutex::new(VecDeque::new()),
        settle: AtomicBool::new(false),
        index: 0,
        fatal: Fatal::new(CancellationToken::new()),
        outbox: Some(outbox),
        pusher: None,
    };
    let (tx, mut rx) = mpsc::channel(64);
    let link = LinkTx::new(1, tx, CancellationToken::new());
    for n in 1..=2 {
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
