//! The wake decision as a state machine: which devices an item wakes, and
//! what cancels a waiting push.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::link::{PushEndpoint, link_down};
use common::proto::{Envelope, PushProvider, envelope::Content};
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
    let mut out = Vec::new();
    let t = std::time::Instant::now();
    loop {
        shard.settle();
        for e in shard.effects() {
            match e {
                Effect::Wake { user, device } => out.push(format!("wake {user} {device}")),
                Effect::Unwake { user, device } => out.push(format!("unwake {user} {device}")),
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

#[tokio::test]
async fn an_item_wakes_offline_devices_with_endpoints_only() {
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
