//! The shard as a state machine, driven directly with no link, no cell and
//! no dispatcher: operations in, effects out.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::link::link_down;
use common::proto::{Envelope, envelope::Content};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Effect, Now, Shard};
use crate::flusher::{Commit, FlushFn};
use crate::home::{CacheConfig, Limits, LinkTx, Op};
use crate::metrics::Metrics;
use crate::storage::{SledStorage, Storage};

fn message(from: &str, id: &[u8]) -> Envelope {
    Envelope {
        from: from.to_owned(),
        from_device: 1,
        id: Bytes::copy_from_slice(id),
        server_ts_ms: 0,
        content: Some(Content::Body(Bytes::from_static(b"hi"))),
        ..Default::default()
    }
}

/// What an effect is, for comparing: (link, frame kind, session or req, seq).
fn summary(e: &Effect) -> (u64, &'static str, u64, u64) {
    match e {
        Effect::Send { link, frame } => match frame {
            link_down::Kind::AppendResult(r) => (link.id, "AppendResult", r.req, r.seq),
            link_down::Kind::Presence(p) => (link.id, "Presence", p.session, 0),
            link_down::Kind::Kick(k) => (link.id, "Kick", k.session, 0),
            link_down::Kind::Attached(a) => (link.id, "Attached", a.session, 0),
            _ => (link.id, "other", 0, 0),
        },
        Effect::Push {
            link, session, seq, ..
        } => (link.id, "Push", *session, *seq),
        Effect::Receipt { seq, .. } => (0, "Receipt", 0, *seq),
        Effect::Wake { device, .. } => (0, "Wake", 0, u64::from(*device)),
        Effect::Unwake { device, .. } => (0, "Unwake", 0, u64::from(*device)),
        Effect::Unowed { device, .. } => (0, "Unowed", 0, u64::from(*device)),
    }
}

/// An append is answered by the settle after a flush covers it: the answer
/// first, then the push to the recipient's attached session; the shard
/// itself writes nothing to any link.
#[tokio::test]
async fn an_append_is_answered_after_its_flush_then_pushed() {
    let dir = tempfile::tempdir().unwrap();
    let storage: Arc<dyn Storage> = Arc::new(
        crate::storage::tests::retrying(|| SledStorage::open(&dir.path().join("sled"))).unwrap(),
    );
    let journal =
        Arc::new(crate::recover(&*storage, &dir.path().join("journal"), 1 << 20).unwrap());
    let commit = Arc::new(Commit::new());
    let j = Arc::clone(&journal);
    let flush: FlushFn = Arc::new(move || {
        j.sync().map_err(|e| crate::storage::StorageError::Engine {
            op: "journal sync",
            source: Box::new(e),
        })
    });
    let stop = CancellationToken::new();
    let flusher = tokio::spawn(Arc::clone(&commit).run(flush, stop.clone()));
    let mut shard = Shard::new(
        Arc::clone(&storage),
        Arc::clone(&journal) as Arc<dyn super::Log>,
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
        false,
    );
    // Links whose queues nobody reads: a frame that reached one would show.
    let (sender_tx, mut sender_rx) = mpsc::channel(16);
    let sender = LinkTx::new(1, sender_tx, CancellationToken::new());
    let (recipient_tx, mut recipient_rx) = mpsc::channel(16);
    let recipient = LinkTx::new(2, recipient_tx, CancellationToken::new());
    let now = Now::read();

    shard.handle(
        Op::Attach {
            link: recipient.clone(),
            session: 7,
            user: "bo".into(),
            device: 1,
            generation: 0,
        },
        now,
    );
    let got: Vec<_> = shard.effects().map(|e| summary(&e)).collect();
    assert_eq!(
        got,
        [(2, "Attached", 7, 0)],
        "the attach is answered; an empty mailbox pushes nothing"
    );
    shard.handle(
        Op::Append {
            link: sender.clone(),
            req: 3,
            to: "bo".into(),
            envelope: message("ann", &[1; common::proto::limits::ID_LEN]),
            sender_generation: None,
        },
        now,
    );
    let got: Vec<_> = shard.effects().map(|e| summary(&e)).collect();
    assert_eq!(
        got,
        [],
        "an append is answered (and pushed) by a settle, never by itself"
    );

    let t = std::time::Instant::now();
    loop {
        shard.settle(super::Now::read());
        let effects: Vec<_> = shard.effects().collect();
        if !effects.is_empty() {
            let got: Vec<_> = effects.iter().map(summary).collect();
            assert_eq!(got, [(1, "AppendResult", 3, 1), (2, "Push", 7, 1)]);
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the flush never came"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(sender_rx.try_recv().is_err() && recipient_rx.try_recv().is_err());
    assert_eq!(
        recipient.pushes(),
        1,
        "the push counts against the link's budget"
    );

    // Going offline tells a watcher, as an effect too.
    shard.handle(
        Op::Watch {
            link: sender.clone(),
            session: 9,
            target: "bo".into(),
            watch: true,
            watcher: "watcher".into(),
        },
        now,
    );
    shard.handle(
        Op::Detach {
            link: recipient.id,
            session: 7,
            user: "bo".into(),
        },
        now,
    );
    let got: Vec<_> = shard.effects().map(|e| summary(&e)).collect();
    assert_eq!(got, [(1, "Presence", 9, 0), (1, "Presence", 9, 0)]);
    assert_eq!(
        recipient.pushes(),
        0,
        "a session that goes gives its budget back"
    );

    stop.cancel();
    flusher.await.unwrap();
}
