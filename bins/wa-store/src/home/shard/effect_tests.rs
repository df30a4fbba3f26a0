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
        Effect::Receipt { seqs, .. } => (0, "Receipt", 0, seqs[0]),
        Effect::Gather { link, req, .. } => (link.id, "Gather", *req, 0),
        Effect::Wake { device, .. } => (0, "Wake", 0, u64::from(*device)),
        Effect::Unwake { device, .. } => (0, "Unwake", 0, u64::from(*device)),
        Effect::Unowed { device, .. } => (0, "Unowed", 0, u64::from(*device)),
    }
}

/// An append is answered by the settle after a flush covers it: the answer
/// first, then the push to the recipient's attached session; the shard
/// itself writes nothing to any link.
/// A shard on a fresh engine and journal in `dir`, and its flusher
/// (running until `stop`).
fn shard_in(
    dir: &std::path::Path,
    stop: &CancellationToken,
) -> (Shard, tokio::task::JoinHandle<()>) {
    let storage: Arc<dyn Storage> =
        Arc::new(crate::storage::tests::retrying(|| SledStorage::open(&dir.join("sled"))).unwrap());
    let journal = Arc::new(crate::recover(&*storage, &dir.join("journal"), 1 << 20).unwrap());
    let commit = Arc::new(Commit::new());
    let j = Arc::clone(&journal);
    let flush: FlushFn = Arc::new(move || {
        j.sync().map_err(|e| crate::storage::StorageError::Engine {
            op: "journal sync",
            source: Box::new(e),
        })
    });
    let flusher = tokio::spawn(Arc::clone(&commit).run(flush, stop.clone()));
    let shard = Shard::new(
        storage,
        journal as Arc<dyn super::Log>,
        commit,
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
    (shard, flusher)
}

#[tokio::test]
async fn an_append_is_answered_after_its_flush_then_pushed() {
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let (mut shard, flusher) = shard_in(dir.path(), &stop);
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

/// Once the map gives a user to another island (`Op::Rehome`), the shard
/// refuses appends, key-value writes and revocations for that user with
/// `WRONG_HOME`, right away: queued behind the map change, they would
/// otherwise land after the hand-over exported the mailbox, and stay here.
/// Its own users are served as before.
#[tokio::test]
async fn writes_for_a_user_the_map_moved_away_are_refused_wrong_home() {
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let (mut shard, flusher) = shard_in(dir.path(), &stop);
    let path = dir.path().join("map.toml");
    std::fs::write(
        &path,
        "epoch = 2\nfragments = 16\nhash_seed = \"00112233445566778899aabbccddeeff\"\n\
         [[island]]\nname = \"a\"\nprimary = \"127.0.0.1:1\"\nfragments = [0, 7]\n\
         [[island]]\nname = \"b\"\nprimary = \"127.0.0.1:2\"\nfragments = [8, 15]\n",
    )
    .unwrap();
    let ownership = crate::ownership::Ownership::load(path, "a".into(), None, None).unwrap();
    let owned = ownership.current();
    let users: Vec<String> = (0..100).map(|i| format!("u{i}")).collect();
    let mine = users.iter().find(|u| owned.owns(u)).unwrap().clone();
    let theirs = users.iter().find(|u| !owned.owns(u)).unwrap().clone();
    let (tx, _rx) = mpsc::channel(16);
    let link = LinkTx::new(1, tx, CancellationToken::new());
    let now = Now::read();
    let wrong_home = common::proto::Code::WrongHome as u32;

    // Before any map change the shard takes the links' word for it.
    let append = |req: u64, to: &str| Op::Append {
        link: link.clone(),
        req,
        to: to.to_owned(),
        envelope: message("ann", &[req as u8; common::proto::limits::ID_LEN]),
        sender_generation: None,
    };
    shard.handle(append(1, &theirs), now);
    assert_eq!(shard.effects().count(), 0, "queued for its flush");

    shard.handle(Op::Rehome { owned }, now);
    shard.effects().for_each(drop);
    shard.handle(append(2, &theirs), now);
    shard.handle(append(3, &mine), now);
    shard.handle(
        Op::Kv {
            link: link.clone(),
            req: 4,
            space: common::link::KvSpace::Account,
            key: theirs.clone(),
            put: Some((Bytes::from_static(b"v"), 0)),
        },
        now,
    );
    shard.handle(
        Op::Revoke {
            link: link.clone(),
            req: 5,
            user: theirs.clone(),
            device: 1,
            generation: 2,
        },
        now,
    );
    let refused: Vec<(u64, u32)> = shard
        .effects()
        .map(|e| match e {
            Effect::Send { frame, .. } => match frame {
                link_down::Kind::AppendResult(r) => (r.req, r.code),
                link_down::Kind::KvResult(r) => (r.req, r.code),
                link_down::Kind::RevokeResult(r) => (r.req, r.code),
                other => panic!("unexpected {other:?}"),
            },
            _ => panic!("unexpected effect"),
        })
        .collect();
    assert_eq!(refused, [(2, wrong_home)], "the append to its user is not");
    // The key-value write and the revocation are answered at the next
    // settle (after a flush), refused.
    let t = std::time::Instant::now();
    let mut answers = Vec::new();
    while answers.len() < 4 {
        shard.settle(Now::read());
        answers.extend(shard.effects().filter_map(|e| match e {
            Effect::Send { frame, .. } => match frame {
                link_down::Kind::AppendResult(r) => Some((r.req, r.code)),
                link_down::Kind::KvResult(r) => Some((r.req, r.code)),
                link_down::Kind::RevokeResult(r) => Some((r.req, r.code)),
                _ => None,
            },
            _ => None,
        }));
        assert!(t.elapsed() < Duration::from_secs(10), "got {answers:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    answers.sort_unstable();
    assert_eq!(
        answers,
        [(1, 0), (3, 0), (4, wrong_home), (5, wrong_home)],
        "the append queued before the map change is stored"
    );

    // A member's group read receipt is checked like an append, then handed
    // on to be gathered (nothing queued for a flush: the courier appends
    // the aggregated item).
    let read = |req: u64, to: &str| {
        let mut envelope = message("ann", &[req as u8; common::proto::limits::ID_LEN]);
        envelope.group = "g".into();
        envelope.content = Some(Content::Receipt(common::proto::Receipt {
            kind: common::proto::ReceiptKind::Read as i32,
            ids: vec![Bytes::from_static(&[9; common::proto::limits::ID_LEN])],
            members: Vec::new(),
        }));
        Op::Gather {
            link: link.clone(),
            req,
            to: to.to_owned(),
            envelope,
            sender_generation: None,
        }
    };
    shard.handle(read(6, &theirs), now);
    shard.handle(read(7, &mine), now);
    let out: Vec<_> = shard.effects().map(|e| summary(&e)).collect();
    assert_eq!(out, [(1, "AppendResult", 6, 0), (1, "Gather", 7, 0)]);
    stop.cancel();
    flusher.await.unwrap();
}
