//! The write-back cache as seen from outside: messages to online recipients
//! are delivered and deleted without touching the engine; messages that
//! linger are written back; a large mailbox bypasses the cache; a kill -9
//! loses nothing acknowledged (the journal replays).

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use common::link::{Attach, LinkAck, link_down, link_up};
use support::{Link, PATIENCE, SECRET, config_toml, write_files};
use tokio_util::sync::CancellationToken;
use wa_store::metrics::Metrics;

struct Running {
    dir: tempfile::TempDir,
    addr: std::net::SocketAddr,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), wa_store::StoreError>>,
}

async fn start(engine: &str, cache: &str) -> Running {
    let dir = tempfile::tempdir().unwrap();
    write_files(dir.path());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let text = config_toml(dir.path(), &addr.to_string(), engine) + cache;
    let config: wa_store::Config = toml::from_str(&text).unwrap();
    let store = wa_store::Store::open(config).unwrap();
    let metrics = store.metrics();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(store.serve(listener, shutdown.clone()));
    Running {
        dir,
        addr,
        metrics,
        shutdown,
        task,
    }
}

impl Running {
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

/// Appends `n` messages to `to` (ids `first..first+n`) and waits for every
/// answer, ignoring pushes.
async fn append_n(l: &mut Link, to: &str, first: u8, n: u8) {
    for i in 0..n {
        l.append(u64::from(first + i), to, "alice", first + i, b"hi")
            .await;
    }
    let mut answered = 0;
    while answered < n {
        match l.recv().await.expect("link open") {
            link_down::Kind::AppendResult(r) => {
                assert_eq!(r.code, 0, "{r:?}");
                answered += 1;
            }
            link_down::Kind::Push(_) => {}
            link_down::Kind::Attached(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Waits (bounded) until `f` holds; for effects of background rounds.
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let started = tokio::time::Instant::now();
    while !f() {
        assert!(started.elapsed() < PATIENCE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Attaches `user`, acks everything pushed until `n` items came.
async fn drain(l: &mut Link, user: &str, session: u64, n: usize) -> Vec<u64> {
    l.send(link_up::Kind::Attach(Attach {
        epoch: 1,
        session,
        user: user.into(),
        device: 1,
        generation: 1,
    }))
    .await;
    let mut seqs = Vec::new();
    while seqs.len() < n {
        match l.recv().await.expect("link open") {
            link_down::Kind::Push(p) => {
                assert_eq!(p.session, session);
                seqs.push(p.seq);
                l.send(link_up::Kind::Ack(LinkAck {
                    session,
                    user: user.into(),
                    seqs: vec![p.seq],
                }))
                .await;
            }
            link_down::Kind::Attached(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    seqs
}

async fn online_offline_bypass(engine: &str) {
    let s = start(
        engine,
        "[cache]\nsync_delay = \"300ms\"\nbypass_items = 5\n",
    )
    .await;
    let mut l = Link::open(s.addr, s.dir.path(), &SECRET).await;
    assert!(matches!(l.recv().await, Some(link_down::Kind::AuthOk(_))));

    // Online recipient: delivered and deleted from memory.
    l.send(link_up::Kind::Attach(Attach {
        epoch: 1,
        session: 1,
        user: "bob".into(),
        device: 1,
        generation: 1,
    }))
    .await;
    let mut answered = 0;
    let mut pushed = 0;
    for i in 0..4u8 {
        l.append(u64::from(i), "bob", "alice", i, b"hi").await;
    }
    while answered < 4 || pushed < 4 {
        match l.recv().await.expect("link open") {
            link_down::Kind::AppendResult(r) => {
                assert_eq!(r.code, 0);
                answered += 1;
            }
            link_down::Kind::Push(p) => {
                pushed += 1;
                l.send(link_up::Kind::Ack(LinkAck {
                    session: 1,
                    user: "bob".into(),
                    seqs: vec![p.seq],
                }))
                .await;
            }
            link_down::Kind::Attached(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let m = Arc::clone(&s.metrics);
    until("acks of bob's messages", || {
        m.delivered_from_cache.load(Relaxed) == 4
    })
    .await;
    assert_eq!(s.metrics.written_back.load(Relaxed), 0);
    assert_eq!(s.metrics.delivered_from_engine.load(Relaxed), 0);

    // Offline recipient: written back after the sync delay, then delivered
    // from the engine.
    append_n(&mut l, "carol", 10, 3).await;
    // (Bob's acks put four delivered receipts in alice's mailbox, and
    // alice never comes: they are written back too.)
    until(
        "write-back of carol's messages and alice's receipts",
        || m.written_back.load(Relaxed) == 3 + 4,
    )
    .await;
    assert_eq!(s.metrics.cache_items.load(Relaxed), 0);
    assert_eq!(drain(&mut l, "carol", 2, 3).await, [1, 2, 3]);
    until("acks of carol's messages", || {
        m.delivered_from_engine.load(Relaxed) == 3
    })
    .await;

    // A large mailbox: beyond bypass_items cached, items go straight to the engine.
    append_n(&mut l, "dave", 20, 8).await;
    assert_eq!(s.metrics.bypassed.load(Relaxed), 3);
    assert_eq!(
        drain(&mut l, "dave", 3, 8).await,
        (1..=8).collect::<Vec<_>>()
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_offline_bypass_sled() {
    online_offline_bypass("sled").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_offline_bypass_fjall() {
    online_offline_bypass("fjall").await;
}
