//! Clients that reconnect resume their TLS session from the ticket the edge
//! gave them at the first handshake (docs/PROTOCOL.md §1): the edge skips
//! its certificate and signature, a large part of a login's CPU. The
//! tickets are stateless (sealed with the edge's rotating key), so every
//! client can resume, not only the last 256 that rustls's default
//! per-server session cache would remember.

mod support;

use std::sync::Arc;

use common::proto::limits::{ALPN, MAX_FRAME};
use common::proto::{ClientFrame, Hello, ServerFrame, client_frame, frame, server_frame};
use common::wire::FrameReader;
use support::{Deployment, PATIENCE, admin_get, counter};
use tokio::io::AsyncWriteExt;

/// More clients than rustls's default session cache holds (256).
const CLIENTS: usize = 300;

/// Logs `user` in over TLS through `connector`, up to `Welcome`; whether the
/// handshake resumed a session.
async fn login(d: &Deployment, connector: &tokio_rustls::TlsConnector, user: &str) -> bool {
    let tcp = tokio::net::TcpStream::connect(d.chat_tcp).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.expect("TLS handshake");
    let resumed =
        tls.get_ref().1.handshake_kind() == Some(tokio_rustls::rustls::HandshakeKind::Resumed);
    let (r, mut w) = tokio::io::split(tls);
    let hello = ClientFrame {
        kind: Some(client_frame::Kind::Hello(Hello {
            token: d.token(user),
            client: "resumption-test".into(),
        })),
    };
    w.write_all(&frame::to_bytes(&hello)).await.unwrap();
    // (Reading up to Welcome also takes in the ticket, sent after the
    // handshake.)
    let mut r = FrameReader::new(r, MAX_FRAME);
    loop {
        let f = tokio::time::timeout(PATIENCE, r.read::<ServerFrame>())
            .await
            .expect("a frame within patience")
            .ok()
            .flatten()
            .and_then(|f| f.kind);
        match f {
            Some(server_frame::Kind::Welcome(_)) => break,
            Some(server_frame::Kind::Presence(_)) => {}
            other => panic!("expected Welcome, got {other:?}"),
        }
    }
    resumed
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
