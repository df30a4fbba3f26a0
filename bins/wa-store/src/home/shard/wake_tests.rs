//! The wake decision as a state machine: which devices an item wakes, and
//! what cancels a waiting push.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::link::{PushEndpoint, PushEndpoints, link_down};
use common::proto::{Envelope, PushProvider, envelope::Content};
use common::proto::{GroupEvent, GroupOp, Receipt, ReceiptKind};
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Effect, Now, SetPushBy, Shard};
use crate::flusher::{Commit, FlushFn};
use crate::home::{CacheConfig, Limits, LinkTx, Op};
use crate::metrics::Metrics;
use crate::storage::{SledStorage, Storage};

fn endpoint(device: u32, token: &str) -> PushEndpoint {
    PushEndpoint {
        device,
        generation: 1,
        provider: PushProvider::Fcm as i32,
        token: token.into(),
        ..Default::default()
    }
}

/// The wake effects (and push answers) among what the shard decided, after
/// settling until the flush covered everything.
async fn settled(shard: &mut Shard) -> Vec<String> {
    settled_at(shard, Now::read()).await
}

/// [`settled`], the flush seen at `now`.
async fn settled_at(shard: &mut Shard, now: Now) -> Vec<String> {
    let mut out = Vec::new();
    let t = std::time::Instant::now();
    loop {
        shard.settle(now);
        for e in shard.effects() {
            match e {
                Effect::Wake { user, device } => out.push(format!("wake {user} {device}")),
                Effect::Unwake { user, device } => out.push(format!("unwake {user} {device}")),
                Effect::Unowed { user, device } => out.push(format!("unowed {user} {device}")),
                Effect::Send {
                    frame: link_down::Kind::PushSet(p),
                    ..
                } => out.push(format!("set {}", p.code)),
                Effect::Send {
                    frame: link_down::Kind::AppendResult(_),
                    ..
                } => out.push("appended".into()),
                _ => {}
            }
        }
        if !shard.waiting() {
            return out;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the flush never came"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A shard over a real engine and journal, with its flusher.
struct Rig {
    shard: Shard,
    storage: Arc<dyn Storage>,
    stop: CancellationToken,
    flusher: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Rig {
    fn start() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn Storage> = Arc::new(
            crate::storage::tests::retrying(|| SledStorage::open(&dir.path().join("sled")))
                .unwrap(),
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
        let shard = Shard::new(
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
        Rig {
            shard,
            storage,
            stop,
            flusher,
            _dir: dir,
        }
    }

    /// The devices `user`'s record says are owed a push.
    fn owed(&self, user: &str) -> Vec<u32> {
        let (_, raw) = self.storage.kv_get(4, user).unwrap();
        PushEndpoints::decode(raw.as_slice()).unwrap().owed
    }

    async fn stop(self) {
        drop(self.shard);
        self.stop.cancel();
        let _ = self.flusher.await;
    }
}

fn append_op(link: &LinkTx, n: u8, from: &str, content: Content, group: &str) -> Op {
    Op::Append {
        link: link.clone(),
        req: u64::from(n),
        to: "bo".into(),
        envelope: Envelope {
            from: from.into(),
            from_device: 1,
            id: Bytes::copy_from_slice(&[n; 16]),
            server_ts_ms: 0,
            content: Some(content),
            group: group.into(),
            ..Default::default()
        },
        sender_generation: None,
    }
}

fn set_op(link: &LinkTx, device: u32, e: Option<PushEndpoint>) -> Op {
    Op::SetPush {
        by: SetPushBy::Session {
            link: link.clone(),
            session: 1,
            id: Bytes::from_static(&[1; 16]),
        },
        user: "bo".into(),
        device,
        endpoint: e,
    }
}

#[tokio::test]
async fn an_item_wakes_offline_devices_with_endpoints_only() {
    let Rig {
        mut shard,
        storage,
        stop,
        flusher,
        _dir,
    } = Rig::start();
    let (tx, _rx) = mpsc::channel(64);
    let link = LinkTx::new(1, tx, CancellationToken::new());
    let now = Now::read();
    let set = |device: u32, e: Option<PushEndpoint>| Op::SetPush {
        by: SetPushBy::Session {
            link: link.clone(),
            session: 1,
            id: Bytes::from_static(&[1; 16]),
        },
        user: "bo".into(),
        device,
        endpoint: e,
    };
    let append = |n: u8| Op::Append {
        link: link.clone(),
        req: u64::from(n),
        to: "bo".into(),
        envelope: Envelope {
            from: "ann".into(),
            from_device: 1,
            id: Bytes::copy_from_slice(&[n; 16]),
            server_ts_ms: 0,
            content: Some(Content::Body(Bytes::from_static(b"hi"))),
            ..Default::default()
        },
        sender_generation: None,
    };

    shard.handle(append(1), now);
    assert_eq!(
        settled(&mut shard).await,
        ["appended"],
        "no endpoint, no wake"
    );

    shard.handle(set(1, Some(endpoint(1, "t1"))), now);
    shard.handle(set(2, Some(endpoint(2, "t2"))), now);
    assert_eq!(settled(&mut shard).await, ["set 0", "set 0"]);
    shard.handle(
        Op::Attach {
            link: link.clone(),
            session: 5,
            user: "bo".into(),
            device: 2,
            generation: 1,
        },
        now,
    );
    assert_eq!(
        settled(&mut shard).await,
        ["unwake bo 2"],
        "connecting cancels"
    );
    shard.handle(append(2), now);
    assert_eq!(
        settled(&mut shard).await,
        ["appended", "wake bo 1"],
        "device 2 is online; device 1 is woken"
    );

    // A dead token is removed only while it is still the device's.
    shard.handle(
        Op::SetPush {
            by: SetPushBy::DeadToken {
                token: "old".into(),
            },
            user: "bo".into(),
            device: 1,
            endpoint: None,
        },
        now,
    );
    shard.handle(append(3), now);
    assert_eq!(settled(&mut shard).await, ["appended", "wake bo 1"]);
    shard.handle(
        Op::SetPush {
            by: SetPushBy::DeadToken { token: "t1".into() },
            user: "bo".into(),
            device: 1,
            endpoint: None,
        },
        now,
    );
    shard.handle(append(4), now);
    assert_eq!(settled(&mut shard).await, ["unwake bo 1", "appended"]);

    // Revoking device 2 below its endpoint's generation removes it.
    shard.handle(
        Op::Detach {
            link: link.id,
            session: 5,
            user: "bo".into(),
        },
        now,
    );
    shard.handle(append(5), now);
    assert_eq!(settled(&mut shard).await, ["appended", "wake bo 2"]);
    shard.handle(
        Op::Revoke {
            link: link.clone(),
            req: 9,
            user: "bo".into(),
            device: 2,
            generation: 2,
        },
        now,
    );
    shard.handle(append(6), now);
    assert_eq!(settled(&mut shard).await, ["unwake bo 2", "appended"]);
    // The revoked credential cannot set it again.
    shard.handle(set(2, Some(endpoint(2, "t2"))), now);
    assert_eq!(
        settled(&mut shard).await,
        [format!("set {}", common::proto::Code::Revoked as u32)]
    );
    // The record survives (it is the engine's, not the cache's).
    drop(shard);
    let (_, raw) = storage.kv_get(4, "bo").unwrap();
    assert!(raw.is_empty(), "every endpoint is gone: {raw:?}");
    stop.cancel();
    let _ = flusher.await;
}

#[tokio::test]
async fn only_items_the_user_must_see_wake() {
    let mut rig = Rig::start();
    let (tx, _rx) = mpsc::channel(64);
    let link = LinkTx::new(1, tx, CancellationToken::new());
    let now = Now::read();
    rig.shard
        .handle(set_op(&link, 1, Some(endpoint(1, "t1"))), now);
    assert_eq!(settled(&mut rig.shard).await, ["set 0"]);
    let receipt = |kind: ReceiptKind| {
        Content::Receipt(Receipt {
            kind: kind as i32,
            ids: vec![Bytes::from_static(&[9; 16])],
            members: Vec::new(),
        })
    };
    let event = |op: GroupOp, members: &[&str]| {
        Content::GroupEvent(GroupEvent {
            op: op as i32,
            members: members.iter().map(|m| (*m).to_owned()).collect(),
            ..Default::default()
        })
    };
    let group = "g0123456789abcdef0123456789abcdef";
    let quiet = [
        append_op(&link, 1, "ann", receipt(ReceiptKind::Delivered), ""),
        append_op(&link, 2, "ann", receipt(ReceiptKind::Read), ""),
        append_op(
            &link,
            3,
            "bo",
            Content::Body(Bytes::from_static(b"x")),
            group,
        ),
        append_op(&link, 4, "ann", event(GroupOp::Subject, &[]), group),
        append_op(&link, 5, "ann", event(GroupOp::Add, &["cy"]), group),
        append_op(&link, 6, "ann", event(GroupOp::Remove, &["bo"]), group),
    ];
    for op in quiet {
        rig.shard.handle(op, now);
        assert_eq!(settled(&mut rig.shard).await, ["appended"]);
    }
    assert!(rig.owed("bo").is_empty());
    let loud = [
        append_op(&link, 7, "ann", Content::Body(Bytes::from_static(b"x")), ""),
        append_op(
            &link,
            8,
            "ann",
            Content::Body(Bytes::from_static(b"x")),
            group,
        ),
        append_op(&link, 9, "ann", event(GroupOp::Add, &["cy", "bo"]), group),
    ];
    for op in loud {
        rig.shard.handle(op, now);
        assert_eq!(settled(&mut rig.shard).await, ["appended", "wake bo 1"]);
    }
    assert_eq!(rig.owed("bo"), [1]);
    rig.stop().await;
}

#[tokio::test]
async fn a_session_idle_past_the_threshold_is_woken_and_its_ack_cancels() {
    let mut rig = Rig::start();
    rig.shard
        .set_wake_idle_after(Some(Duration::from_millis(500)));
    let (tx, _rx) = mpsc::channel(64);
    let link = LinkTx::new(1, tx, CancellationToken::new());
    let t0 = Now::read();
    let later = |ms| Now {
        at: t0.at + Duration::from_millis(ms),
        unix_ms: t0.unix_ms + ms,
    };
    let body = || Content::Body(Bytes::from_static(b"x"));
    rig.shard
        .handle(set_op(&link, 1, Some(endpoint(1, "t1"))), t0);
    rig.shard.handle(
        Op::Attach {
            link: link.clone(),
            session: 5,
            user: "bo".into(),
            device: 1,
            generation: 1,
        },
        t0,
    );
    assert_eq!(
        settled_at(&mut rig.shard, t0).await,
        ["unwake bo 1", "set 0"]
    );
    // Pushed at once; not idle yet (owing since 0 ms).
    rig.shard.handle(append_op(&link, 1, "ann", body(), ""), t0);
    assert_eq!(settled_at(&mut rig.shard, t0).await, ["appended"]);
    rig.shard
        .handle(append_op(&link, 2, "ann", body(), ""), later(400));
    assert_eq!(settled_at(&mut rig.shard, later(400)).await, ["appended"]);
    // 600 ms without an acknowledgement: woken, and owed.
    rig.shard
        .handle(append_op(&link, 3, "ann", body(), ""), later(600));
    assert_eq!(
        settled_at(&mut rig.shard, later(600)).await,
        ["appended", "wake bo 1"]
    );
    assert_eq!(rig.owed("bo"), [1]);
    // Its acknowledgement shows life: the wake is cancelled, and the next
    // item (within the threshold of the ack) wakes nothing.
    rig.shard.handle(
        Op::Ack {
            link: link.id,
            session: 5,
            user: "bo".into(),
            seqs: vec![1],
        },
        later(700),
    );
    assert_eq!(
        settled_at(&mut rig.shard, later(700)).await,
        ["unwake bo 1"]
    );
    assert!(rig.owed("bo").is_empty());
    rig.shard
        .handle(append_op(&link, 4, "ann", body(), ""), later(1100));
    assert_eq!(settled_at(&mut rig.shard, later(1100)).await, ["appended"]);
    // Off: a connected device is never woken.
    rig.shard.set_wake_idle_after(Some(Duration::ZERO));
    rig.shard
        .handle(append_op(&link, 5, "ann", body(), ""), later(9000));
    assert_eq!(settled_at(&mut rig.shard, later(9000)).await, ["appended"]);
    rig.stop().await;
}

#[tokio::test]
async fn a_finished_push_is_no_longer_owed_unless_the_queue_still_holds_one() {
    let mut rig = Rig::start();
    let (tx, _rx) = mpsc::channel(64);
    let link = LinkTx::new(1, tx, CancellationToken::new());
    let now = Now::read();
    rig.shard
        .handle(set_op(&link, 1, Some(endpoint(1, "t1"))), now);
    rig.shard
        .handle(set_op(&link, 2, Some(endpoint(2, "t2"))), now);
    rig.shard.handle(
        append_op(&link, 1, "ann", Content::Body(Bytes::from_static(b"x")), ""),
        now,
    );
    assert_eq!(
        settled(&mut rig.shard).await,
        ["set 0", "set 0", "appended", "wake bo 1", "wake bo 2"]
    );
    assert_eq!(rig.owed("bo"), [1, 2]);
    let owed = |device, owed| Op::PushOwed {
        user: "bo".into(),
        device,
        owed,
    };
    rig.shard.handle(owed(1, false), now);
    assert_eq!(settled(&mut rig.shard).await, ["unowed bo 1"]);
    assert_eq!(rig.owed("bo"), [2]);
    // (Again: nothing changes, nothing to check.)
    rig.shard.handle(owed(1, false), now);
    assert!(settled(&mut rig.shard).await.is_empty());
    rig.shard.handle(owed(1, true), now);
    assert!(settled(&mut rig.shard).await.is_empty());
    assert_eq!(rig.owed("bo"), [1, 2]);
    // Clearing an endpoint drops its device from the owed ones.
    rig.shard.handle(set_op(&link, 2, None), now);
    assert_eq!(settled(&mut rig.shard).await, ["unwake bo 2", "set 0"]);
    assert_eq!(rig.owed("bo"), [1]);
    rig.stop().await;
}
