//! The edge's memory during a stall (issue 21): 20 senders of 60 KB bodies
//! while their home is frozen (SIGSTOP; the link's timeouts set long, so
//! that only the budget bounds what the edge holds). The edge stops reading
//! from clients once `[limits] request_memory` of requests wait, so its RSS
//! stays near that budget instead of growing with every sender's window
//! (600 MB before); after SIGCONT every message is accepted and delivered
//! once.
//!
//! And the edge's memory for deliveries: many sessions that stop reading
//! while big messages are pushed to them. Past `[limits] delivery_memory`
//! of queued deliveries the edge cuts the slowest readers as slow
//! consumers, so its RSS stays near that budget instead of growing with
//! every reader's push window; each reader then gets everything once when
//! it reads again.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use common::client::{Event, MessageId, Transport};
use nix::sys::signal::Signal;
use support::{Deployment, PATIENCE, next_message};

const SENDERS: usize = 20;
/// Messages per sender: 20 × 50 × 60 KB = 60 MB, well past the budget.
const N: usize = 50;
const BODY: usize = 60_000;
const BUDGET_MIB: u64 = 16;
/// What the edge holds besides requests (its code, TLS state, buffers), as
/// measured idle, with room to spare.
const OVERHEAD_MIB: u64 = 32;
const STALL: Duration = Duration::from_secs(10);

/// The resident memory of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status");
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_keeps_to_its_request_budget_while_a_home_stalls() {
    let extra = format!(
        "[limits]\nrequest_memory = \"{BUDGET_MIB} MiB\"\n[link]\ntimeout = \"120s\"\nrequest_timeout = \"120s\"\n"
    );
    let (d, chat) = Deployment::start_processes_with(&extra).await;
    let edge = chat.child.id().unwrap();
    let idle = rss(edge);

    let body = Bytes::from(vec![5u8; BODY]);
    let mut clients = Vec::new();
    for i in 0..SENDERS {
        clients.push(d.client(&format!("s{i}"), Transport::Tcp).await);
    }
    let store = &d.store_process.as_ref().unwrap().child;
    support::cluster::signal(store, Signal::SIGSTOP);
    let mut senders = Vec::new();
    for (c, events) in clients {
        let mut ids: Vec<MessageId> = Vec::new();
        for _ in 0..N {
            ids.push(c.send("bob", body.clone()).await.unwrap());
        }
        senders.push((c, events, ids));
    }
    let mut peak = 0;
    let mut ticks = tokio::time::interval(Duration::from_millis(250));
    let until = tokio::time::Instant::now() + STALL;
    while tokio::time::Instant::now() < until {
        ticks.tick().await;
        peak = peak.max(rss(edge));
    }
    let mib = |b: u64| b / (1 << 20);
    println!(
        "edge memory: {SENDERS} senders × {N} × {BODY} bytes during a {STALL:?} stall: edge RSS idle {} MiB, peak {} MiB (budget {BUDGET_MIB} MiB + {OVERHEAD_MIB} MiB overhead allowed)",
        mib(idle),
        mib(peak)
    );
    assert!(
        peak < (BUDGET_MIB + OVERHEAD_MIB) << 20,
        "edge RSS {} MiB",
        mib(peak)
    );

    let store = &d.store_process.as_ref().unwrap().child;
    support::cluster::signal(store, Signal::SIGCONT);
    let mut all = HashSet::new();
    for (c, mut events, ids) in senders {
        let mut waiting: HashSet<MessageId> = ids.iter().copied().collect();
        tokio::time::timeout(4 * PATIENCE, async {
            while !waiting.is_empty() {
                match events.next().await.expect("the client runs") {
                    Event::Accepted { id, .. } => assert!(waiting.remove(&id), "{id:?}"),
                    Event::Connected { .. }
                    | Event::Disconnected { .. }
                    | Event::Waiting { .. }
                    | Event::Retrying { .. }
                    | Event::Receipt { .. } => {}
                    other => panic!("sender: {other:?}"),
                }
            }
        })
        .await
        .expect("every send accepted after SIGCONT");
        all.extend(ids);
        c.close().await;
    }
    let (bob, mut eb) = d.client("bob", Transport::Tcp).await;
    let mut got = HashSet::new();
    while got.len() < all.len() {
        let (seq, _, id, _) = next_message(&mut eb).await;
        assert!(got.insert(id), "delivered twice: {id:?}");
        bob.ack(&[seq]).await.unwrap();
    }
    assert_eq!(got, all);
    println!(
        "edge memory: all {} messages accepted and delivered once",
        got.len()
    );
    bob.close().await;
    d.stop().await;
    let mut chat = chat;
    support::sigterm(&chat.child);
    let st = tokio::time::timeout(PATIENCE, chat.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(st.success(), "wa-chat exited with {st}");
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// Readers that log in and then never read.
const READERS: usize = 12;
/// Messages to each: 12 × 200 × 60 KB = 144 MB, far past the budget and
/// what the sockets' buffers take (the readers' receive buffers are set
/// small); fewer than the push window (256), so that the window rule
/// (`slow_consumer_after`) never applies.
const PER: usize = 200;
const DELIVERY_BUDGET_MIB: u64 = 16;
const REQUEST_BUDGET_MIB: u64 = 4;

/// A session of `user` over a raw TLS connection with a small receive
/// buffer, after its `Welcome`; the caller never reads it.
async fn silent_reader(d: &Deployment, user: &str) -> common::wire::FrameReader<Tls> {
    use common::proto::{ClientFrame, Hello, ServerFrame, client_frame, frame, server_frame};
    use tokio::io::AsyncWriteExt;
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let tcp = sock.connect(d.chat_tcp).await.unwrap();
    let cfg = common::tls::client_config(&d.roots, &[common::proto::limits::ALPN]).unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(name, tcp)
        .await
        .unwrap();
    let hello = ClientFrame {
        kind: Some(client_frame::Kind::Hello(Hello {
            token: d.token(user),
            client: "edge-memory-test".into(),
        })),
    };
    tls.write_all(&frame::to_bytes(&hello)).await.unwrap();
    let mut r = common::wire::FrameReader::new(tls, common::proto::limits::MAX_FRAME);
    let first = tokio::time::timeout(PATIENCE, r.read::<ServerFrame>())
        .await
        .expect("Welcome within patience")
        .unwrap();
    assert!(
        matches!(
            first,
            Some(ServerFrame {
                kind: Some(server_frame::Kind::Welcome(_))
            })
        ),
        "{first:?}"
    );
    r
}

/// Reads `r` until the edge closes it (then `true`: it was cut) or nothing
/// comes for a second (`false`: still open).
async fn was_cut(r: &mut common::wire::FrameReader<Tls>) -> bool {
    loop {
        match tokio::time::timeout(
            Duration::from_secs(1),
            r.read::<common::proto::ServerFrame>(),
        )
        .await
        {
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None) | Err(_)) => return true,
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_keeps_to_its_delivery_budget_with_readers_that_stop_reading() {
    let extra = format!(
        "[limits]\ndelivery_memory = \"{DELIVERY_BUDGET_MIB} MiB\"\nrequest_memory = \"{REQUEST_BUDGET_MIB} MiB\"\nslow_consumer_after = \"600s\"\n"
    );
    let (d, chat) = Deployment::start_processes_with(&extra).await;
    let edge = chat.child.id().unwrap();
    let idle = rss(edge);

    let mut readers = Vec::new();
    for i in 0..READERS {
        readers.push(silent_reader(&d, &format!("r{i}")).await);
    }
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(idle));
    let sampler = tokio::spawn({
        let peak = std::sync::Arc::clone(&peak);
        async move {
            let mut ticks = tokio::time::interval(Duration::from_millis(100));
            loop {
                ticks.tick().await;
                peak.fetch_max(rss(edge), std::sync::atomic::Ordering::Relaxed);
            }
        }
    });
    let (alice, mut ea) = d.client("alice", Transport::Tcp).await;
    let body = Bytes::from(vec![7u8; BODY]);
    let mut sent: Vec<HashSet<MessageId>> = vec![HashSet::new(); READERS];
    for _ in 0..PER {
        for (i, ids) in sent.iter_mut().enumerate() {
            ids.insert(alice.send(&format!("r{i}"), body.clone()).await.unwrap());
        }
    }
    let mut accepted = 0;
    tokio::time::timeout(8 * PATIENCE, async {
        while accepted < READERS * PER {
            match ea.next().await.expect("the client runs") {
                Event::Accepted { .. } => accepted += 1,
                Event::Connected { .. }
                | Event::Waiting { .. }
                | Event::Retrying { .. }
                | Event::Receipt { .. }
                | Event::Presence { .. } => {}
                other => panic!("alice: {other:?}"),
            }
        }
    })
    .await
    .expect("every send accepted");
    // What is pushed after the last Accepted, and the cut writers' grace.
    tokio::time::sleep(Duration::from_secs(3)).await;
    sampler.abort();
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    let mut cut = 0;
    for r in &mut readers {
        cut += usize::from(was_cut(r).await);
    }
    drop(readers);
    let mib = |b: u64| b / (1 << 20);
    let allowed = DELIVERY_BUDGET_MIB + REQUEST_BUDGET_MIB + OVERHEAD_MIB;
    println!(
        "edge memory: {READERS} readers that stopped reading, {PER} × {BODY} bytes pushed to each ({} MiB): edge RSS idle {} MiB, peak {} MiB (delivery budget {DELIVERY_BUDGET_MIB} MiB + request budget {REQUEST_BUDGET_MIB} MiB + {OVERHEAD_MIB} MiB overhead allowed); {cut} of {READERS} cut as slow consumers",
        mib((READERS * PER * BODY) as u64),
        mib(idle),
        mib(peak)
    );
    assert!(
        cut > 0,
        "the budget never had to act: the test shows nothing"
    );
    assert!(peak < allowed << 20, "edge RSS {} MiB", mib(peak));

    // Reading again, each reader gets everything once.
    for (i, ids) in sent.iter().enumerate() {
        let (r, mut er) = d.client(&format!("r{i}"), Transport::Tcp).await;
        let mut got = HashSet::new();
        while got.len() < ids.len() {
            let (seq, _, id, _) = next_message(&mut er).await;
            assert!(got.insert(id), "r{i}: delivered twice: {id:?}");
            r.ack(&[seq]).await.unwrap();
        }
        assert_eq!(&got, ids, "r{i}");
        r.close().await;
    }
    println!(
        "edge memory: all {} messages delivered once after the readers read again",
        READERS * PER
    );
    alice.close().await;
    d.stop().await;
    let mut chat = chat;
    support::sigterm(&chat.child);
    let st = tokio::time::timeout(PATIENCE, chat.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(st.success(), "wa-chat exited with {st}");
}
