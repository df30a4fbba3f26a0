//! Idle sessions hold no buffers (issue 22, "idle sessions that cost almost
//! nothing"): the edge takes a session's read buffer and its writer's buffer
//! when there are bytes to move and gives them back when the session is idle
//! again. `wa_chat_session_buffer_bytes` counts them; the test watches it go
//! from 0 (idle) to more (a writer blocked on a receiver that does not
//! read), back to 0 once everything is read, and the sessions keep working
//! through idle, busy, idle, busy.

mod support;

use std::time::Duration;

use bytes::Bytes;
use common::client::Transport;
use common::proto::{ClientFrame, Hello, ServerFrame, client_frame, frame, server_frame};
use common::wire::FrameReader;
use support::{Deployment, PATIENCE, admin_get};
use tokio::io::AsyncWriteExt;

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// Big enough that the writer's batch outgrows its first buffer; and so
/// many (4.8 MB, under the push window of 256) that they fill the receiver's
/// small socket buffer and the edge's send buffer even at its largest
/// (`net.ipv4.tcp_wmem` autotunes it up to 4 MiB here): with 40 the writer
/// sometimes never blocked, and the gauge's busy moment was missed.
const BODY: usize = 20_000;
const MESSAGES: usize = 240;

const GAUGE: &str = "wa_chat_session_buffer_bytes";

fn gauge(page: &str, name: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} is not in\n{page}"))
}

/// Polls the edge's gauge until `ok` holds for it, within patience.
async fn wait_gauge(
    d: &Deployment,
    admin: std::net::SocketAddr,
    what: &str,
    ok: impl Fn(f64) -> bool,
) -> f64 {
    let until = tokio::time::Instant::now() + PATIENCE;
    loop {
        let v = gauge(&admin_get(d.dir.path(), admin, "/metrics").await, GAUGE);
        if ok(v) {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "{GAUGE} = {v}, expected {what} within {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `user`'s session over raw TLS with a small receive buffer, after its
/// `Welcome`: the test decides when it reads.
async fn raw_session(d: &Deployment, user: &str) -> FrameReader<Tls> {
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
            client: "idle-sessions-test".into(),
        })),
    };
    tls.write_all(&frame::to_bytes(&hello)).await.unwrap();
    let mut r = FrameReader::new(tls, common::proto::limits::MAX_FRAME);
    let first = next_kind(&mut r).await;
    assert!(matches!(first, server_frame::Kind::Welcome(_)), "{first:?}");
    r
}

async fn next_kind(r: &mut FrameReader<Tls>) -> server_frame::Kind {
    tokio::time::timeout(PATIENCE, r.read::<ServerFrame>())
        .await
        .expect("a frame within patience")
        .expect("a frame")
        .and_then(|f| f.kind)
        .expect("a frame, not the end")
}

/// Reads `bob` until `n` deliveries came, checking their bodies in order.
async fn read_deliveries(bob: &mut FrameReader<Tls>, bodies: &[Bytes]) {
    let mut got = 0;
    while got < bodies.len() {
        match next_kind(bob).await {
            server_frame::Kind::Deliver(d) => {
                let env = d.envelope.expect("an envelope");
                match env.content {
                    Some(common::proto::envelope::Content::Body(b)) => {
                        assert_eq!(b, bodies[got], "delivery {got} in order");
                    }
                    other => panic!("expected a body, got {other:?}"),
                }
                got += 1;
            }
            server_frame::Kind::Presence(_) => {}
            other => panic!("expected deliveries, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_hold_no_buffers_and_give_back_what_a_burst_took() {
    let (d, chat) = Deployment::start_processes().await;
    let mut bob = raw_session(&d, "bob").await;
    let (alice, _events) = d.client("alice", Transport::Quic).await;
    let (carol, _carol_events) = d.client("carol", Transport::Tcp).await;

    // Idle: three sessions (TCP and QUIC), no buffer held.
    wait_gauge(&d, chat.admin, "0 while idle", |v| v == 0.0).await;

    // Busy: bob does not read, so his writer waits with its batch encoded.
    let bodies: Vec<Bytes> = (0..MESSAGES)
        .map(|i| Bytes::from(vec![i as u8; BODY]))
        .collect();
    for b in &bodies {
        alice.send("bob", b.clone()).await.unwrap();
    }
    let held = wait_gauge(&d, chat.admin, "> 0 while bob's writer is blocked", |v| {
        v > 0.0
    })
    .await;
    println!("{GAUGE} while bob does not read: {held}");

    // Bob reads everything; then idle again: everything given back.
    read_deliveries(&mut bob, &bodies).await;
    wait_gauge(&d, chat.admin, "0 once idle again", |v| v == 0.0).await;

    // The sessions work after giving their buffers back: busy once more,
    // from another sender and transport.
    let more = [Bytes::from_static(b"after idle")];
    carol.send("bob", more[0].clone()).await.unwrap();
    read_deliveries(&mut bob, &more).await;
    wait_gauge(&d, chat.admin, "0 idle at the end", |v| v == 0.0).await;
}
