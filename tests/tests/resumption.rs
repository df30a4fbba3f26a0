//! Clients that reconnect resume their TLS session from the ticket the edge
//! gave them at the first handshake (docs/PROTOCOL.md §1): the edge skips
//! its certificate and signature, a large part of a login's CPU. The
//! tickets are stateless (sealed with the edge's rotating key), so every
//! client can resume, not only the last 256 that rustls's default
//! per-server session cache would remember. Over QUIC the same, whichever
//! of the edge's endpoints on the QUIC port (`[quic] quic_endpoints`) the
//! kernel hands a client to.

mod support;

use std::sync::Arc;

use common::proto::limits::{ALPN, MAX_FRAME};
use common::proto::{ClientFrame, Hello, ServerFrame, client_frame, frame, server_frame};
use common::wire::FrameReader;
use support::{Deployment, PATIENCE, admin_get, counter};
use tokio::io::AsyncWriteExt;

/// More clients than rustls's default session cache holds (256).
const CLIENTS: usize = 300;

/// Reads frames up to `Welcome`.
async fn welcome<R: tokio::io::AsyncRead + Unpin>(r: R) {
    let mut r = FrameReader::new(r, MAX_FRAME);
    loop {
        let f = tokio::time::timeout(PATIENCE, r.read::<ServerFrame>())
            .await
            .expect("a frame within patience")
            .ok()
            .flatten()
            .and_then(|f| f.kind);
        match f {
            Some(server_frame::Kind::Welcome(_)) => return,
            Some(server_frame::Kind::Presence(_)) => {}
            other => panic!("expected Welcome, got {other:?}"),
        }
    }
}

fn hello(d: &Deployment, user: &str) -> bytes::BytesMut {
    frame::to_bytes(&ClientFrame {
        kind: Some(client_frame::Kind::Hello(Hello {
            token: d.token(user),
            client: "resumption-test".into(),
        })),
    })
}

/// Logs `user` in over TLS through `connector`, up to `Welcome`; whether the
/// handshake resumed a session.
async fn login(d: &Deployment, connector: &tokio_rustls::TlsConnector, user: &str) -> bool {
    let tcp = tokio::net::TcpStream::connect(d.chat_tcp).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.expect("TLS handshake");
    let resumed =
        tls.get_ref().1.handshake_kind() == Some(tokio_rustls::rustls::HandshakeKind::Resumed);
    let (r, mut w) = tokio::io::split(tls);
    w.write_all(&hello(d, user)).await.unwrap();
    // (Reading up to Welcome also takes in the ticket, sent after the
    // handshake.)
    welcome(r).await;
    resumed
}

/// Logs `user` in over QUIC from `endpoint` with `cfg` (its tickets), up to
/// `Welcome`, then closes the connection.
async fn login_quic(
    d: &Deployment,
    endpoint: &quinn::Endpoint,
    cfg: &quinn::ClientConfig,
    user: &str,
) {
    let conn = tokio::time::timeout(
        PATIENCE,
        endpoint
            .connect_with(cfg.clone(), d.chat_quic, "localhost")
            .unwrap(),
    )
    .await
    .expect("a QUIC handshake within patience")
    .expect("QUIC handshake");
    let (mut send, recv) = conn.open_bi().await.unwrap();
    send.write_all(&hello(d, user)).await.unwrap();
    welcome(recv).await;
    conn.close(0u32.into(), b"bye");
}

/// The `endpoint` series of a labeled metric.
fn by_endpoint(page: &str, name: &str) -> Vec<u64> {
    page.lines()
        .filter(|l| l.starts_with(name) && l.contains("endpoint=\""))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reconnecting_client_resumes_its_tls_session() {
    let (d, chat) = Deployment::start_processes().await;
    // One connector per client, kept across its reconnects, as the client
    // library keeps one per `Client`.
    let connectors: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let cfg = common::tls::client_config(&d.roots, &[ALPN]).unwrap();
            tokio_rustls::TlsConnector::from(Arc::new(cfg))
        })
        .collect();
    for (i, c) in connectors.iter().enumerate() {
        assert!(
            !login(&d, c, &format!("u{i}")).await,
            "a first handshake is full"
        );
    }
    let mut resumed = 0;
    for (i, c) in connectors.iter().enumerate() {
        resumed += usize::from(login(&d, c, &format!("u{i}")).await);
    }
    let page = admin_get(d.dir.path(), chat.admin, "/metrics").await;
    println!("{resumed} of {CLIENTS} second handshakes resumed");
    assert_eq!(resumed, CLIENTS, "every second handshake resumed");
    assert_eq!(counter(&page, "wa_chat_tls_resumed_total"), CLIENTS as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_clients_spread_over_four_endpoints_and_every_reconnect_resumes() {
    const QUIC_CLIENTS: usize = 40;
    let (d, chat) = Deployment::start_processes_with("[quic]\nquic_endpoints = 4\n").await;
    // One UDP socket (so one source port, which the kernel hashes to one
    // of the edge's sockets) and one configuration (its tickets) per
    // client, kept across its reconnects.
    let clients: Vec<_> = (0..QUIC_CLIENTS)
        .map(|_| {
            let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
            let tls = common::tls::client_config(&d.roots, &[ALPN]).unwrap();
            (endpoint, common::tls::quic_client_config(tls).unwrap())
        })
        .collect();
    for (i, (e, c)) in clients.iter().enumerate() {
        login_quic(&d, e, c, &format!("q{i}")).await;
    }
    let page = admin_get(d.dir.path(), chat.admin, "/metrics").await;
    assert_eq!(counter(&page, "wa_chat_quic_resumed_total"), 0);
    for (i, (e, c)) in clients.iter().enumerate() {
        login_quic(&d, e, c, &format!("q{i}")).await;
    }
    let page = admin_get(d.dir.path(), chat.admin, "/metrics").await;
    let handshakes = by_endpoint(&page, "wa_chat_quic_handshakes");
    println!("handshakes by endpoint: {handshakes:?}");
    assert_eq!(handshakes.len(), 4, "four endpoints: {page}");
    assert_eq!(handshakes.iter().sum::<u64>(), 2 * QUIC_CLIENTS as u64);
    // 40 clients on one of four sockets by chance: 4 in 4^40.
    assert!(
        handshakes.iter().filter(|n| **n > 0).count() > 1,
        "the kernel spread the clients: {handshakes:?}"
    );
    assert_eq!(
        counter(&page, "wa_chat_quic_resumed_total"),
        QUIC_CLIENTS as u64,
        "every second QUIC handshake resumed"
    );
}
