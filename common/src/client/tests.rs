//! The client against a scripted fake edge over real TLS: reconnects, resends,
//! dedupe and refusals, without a wa-chat.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::*;
use crate::proto::limits::{ALPN, MAX_FRAME};
use crate::proto::{
    Accepted, ClientFrame, Code, Deliver, Envelope, Error, Goodbye, ReceiptKind, ServerFrame,
    Welcome, client_frame, envelope, frame, server_frame,
};
use crate::tls::DevPki;
use crate::wire::FrameReader;

const PATIENCE: Duration = Duration::from_secs(10);

struct Fake {
    listener: TcpListener,
    acceptor: TlsAcceptor,
}

struct FakeConn {
    r: FrameReader<Box<dyn AsyncRead + Send + Unpin>>,
    w: Box<dyn AsyncWrite + Send + Unpin>,
    hello: crate::proto::Hello,
    _quic: Option<quinn::Connection>,
}

fn pem_certs(pem: &str) -> Vec<rustls_pki_types::CertificateDer<'static>> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap()
}

async fn fake() -> (Fake, ClientConfig) {
    use rustls_pki_types::pem::PemObject;
    let pki = DevPki::generate(&["localhost"]).unwrap();
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(pki.key_pem.as_bytes()).unwrap();
    let server = crate::tls::server_config(pem_certs(&pki.cert_pem), key, &[ALPN]).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut cfg = ClientConfig::new(
        listener.local_addr().unwrap(),
        Transport::Tcp,
        "localhost".into(),
        pem_certs(&pki.ca_cert_pem),
        "v1.token".into(),
    );
    cfg.backoff_initial = Duration::from_millis(10);
    cfg.backoff_max = Duration::from_millis(50);
    let acceptor = TlsAcceptor::from(std::sync::Arc::new(server));
    (Fake { listener, acceptor }, cfg)
}

impl Fake {
    /// Accepts a connection and reads its Hello.
    async fn accept(&self) -> FakeConn {
        let (tcp, _) = tokio::time::timeout(PATIENCE, self.listener.accept())
            .await
            .expect("the client connects")
            .unwrap();
        let tls = self.acceptor.accept(tcp).await.unwrap();
        let (r, w) = tokio::io::split(tls);
        FakeConn::new(Box::new(r), Box::new(w), None).await
    }

    /// Accepts and welcomes.
    async fn session(&self) -> FakeConn {
        let mut c = self.accept().await;
        c.welcome().await;
        c
    }
}

impl FakeConn {
    async fn new(
        r: Box<dyn AsyncRead + Send + Unpin>,
        w: Box<dyn AsyncWrite + Send + Unpin>,
        quic: Option<quinn::Connection>,
    ) -> FakeConn {
        let mut c = FakeConn {
            r: FrameReader::new(r, MAX_FRAME),
            w,
            hello: Default::default(),
            _quic: quic,
        };
        match c.recv().await {
            client_frame::Kind::Hello(h) => c.hello = h,
            other => panic!("expected Hello, got {other:?}"),
        }
        c
    }

    async fn welcome(&mut self) {
        self.send(server_frame::Kind::Welcome(Welcome {
            user: "alice".into(),
            device: 1,
            keepalive_secs: 30,
            idle_timeout_secs: 120,
            server: "fake".into(),
            ..Default::default()
        }))
        .await;
    }
    /// The next frame other than Ping.
    async fn recv(&mut self) -> client_frame::Kind {
        loop {
            let f: ClientFrame = tokio::time::timeout(PATIENCE, self.r.read())
                .await
                .expect("a frame within patience")
                .unwrap()
                .expect("the client did not close");
            match f.kind.unwrap() {
                client_frame::Kind::Ping(_) => continue,
                k => return k,
            }
        }
    }

    async fn send(&mut self, kind: server_frame::Kind) {
        let mut b = BytesMut::new();
        frame::encode(&ServerFrame { kind: Some(kind) }, &mut b);
        self.w.write_all(&b).await.unwrap();
        self.w.flush().await.unwrap();
    }

    async fn recv_send(&mut self) -> crate::proto::Send {
        match self.recv().await {
            client_frame::Kind::Send(s) => s,
            other => panic!("expected Send, got {other:?}"),
        }
    }

    async fn accept_send(&mut self, id: &[u8], duplicate: bool) {
        self.send(server_frame::Kind::Accepted(Accepted {
            id: Bytes::copy_from_slice(id),
            server_ts_ms: 5,
            duplicate,
        }))
        .await;
    }
}

async fn next(events: &mut Events) -> Event {
    tokio::time::timeout(PATIENCE, events.next())
        .await
        .expect("an event within patience")
        .expect("events go on")
}

/// The next event that is not Connected/Disconnected.
async fn next_app(events: &mut Events) -> Event {
    loop {
        match next(events).await {
            Event::Connected { .. } | Event::Disconnected { .. } => {}
            e => return e,
        }
    }
}

async fn connected(fake: &Fake, cfg: ClientConfig) -> (Client, Events, FakeConn) {
    let (client, server) = tokio::join!(Client::connect(cfg), fake.session());
    let (client, mut events) = client.unwrap();
    assert!(matches!(next(&mut events).await, Event::Connected { server } if server == "fake"));
    (client, events, server)
}

#[tokio::test]
async fn hello_send_accepted_and_goodbye_on_close() {
    let (fake, cfg) = fake().await;
    let (client, mut events, mut srv) = connected(&fake, cfg).await;
    assert_eq!(srv.hello.token, "v1.token");
    assert!(srv.hello.client.starts_with("wa-client-rs/"));
    let id = client.send("bob", Bytes::from_static(b"hi")).await.unwrap();
    let s = srv.recv_send().await;
    assert_eq!(
        (&s.id[..], s.to.as_str(), &s.body[..]),
        (&id[..], "bob", &b"hi"[..])
    );
    srv.accept_send(&id, false).await;
    match next_app(&mut events).await {
        Event::Accepted {
            id: got,
            server_ts_ms: 5,
            duplicate: false,
        } => assert_eq!(got, id),
        e => panic!("{e:?}"),
    }
    client.close().await;
    assert!(matches!(srv.recv().await, client_frame::Kind::Goodbye(_)));
    assert!(events.next().await.is_none(), "events end after close");
}

#[tokio::test]
async fn refused_token_fails_the_first_connect_with_its_code() {
    let (fake, cfg) = fake().await;
    let server = async {
        let mut c = fake.accept().await;
        c.send(server_frame::Kind::Error(Error {
            code: Code::TokenInvalid as u32,
            message: "bad token".into(),
            fatal: true,
            ..Default::default()
        }))
        .await;
    };
    let (r, ()) = tokio::join!(Client::connect(cfg), server);
    assert_eq!(r.unwrap_err().code(), Some(Code::TokenInvalid));
}

#[tokio::test]
async fn local_validation() {
    let (fake, cfg) = fake().await;
    let (client, _events, _srv) = connected(&fake, cfg).await;
    assert!(matches!(
        client.send("not a user", Bytes::new()).await,
        Err(ClientError::BadUser(_))
    ));
    let big = Bytes::from(vec![0u8; crate::proto::limits::MAX_BODY + 1]);
    assert!(matches!(
        client.send("bob", big).await,
        Err(ClientError::BodyTooLarge { .. })
    ));
}

#[tokio::test]
async fn pending_sends_are_resent_in_order_with_the_same_ids_after_a_drop() {
    let (fake, cfg) = fake().await;
    let (client, mut events, mut srv) = connected(&fake, cfg).await;
    let a = client.send("bob", Bytes::from_static(b"a")).await.unwrap();
    let b = client.send("bob", Bytes::from_static(b"b")).await.unwrap();
    assert_eq!(&srv.recv_send().await.id[..], &a[..]);
    assert_eq!(&srv.recv_send().await.id[..], &b[..]);
    srv.accept_send(&a, false).await;
    assert!(matches!(next_app(&mut events).await, Event::Accepted { id, .. } if id == a));
    drop(srv); // b was never accepted

    let mut srv = fake.session().await;
    let c = client.send("bob", Bytes::from_static(b"c")).await.unwrap();
    assert_eq!(&srv.recv_send().await.id[..], &b[..], "b again, first");
    assert_eq!(&srv.recv_send().await.id[..], &c[..]);
    srv.accept_send(&b, true).await;
    srv.accept_send(&b, true).await; // a crossed answer: no second event
    srv.accept_send(&c, false).await;
    assert!(
        matches!(next_app(&mut events).await, Event::Accepted { id, duplicate: true, .. } if id == b)
    );
    assert!(
        matches!(next_app(&mut events).await, Event::Accepted { id, duplicate: false, .. } if id == c)
    );
    client.close().await;
}

#[tokio::test]
async fn goodbye_reports_its_code_and_the_client_comes_back() {
    let (fake, cfg) = fake().await;
    let (client, mut events, mut srv) = connected(&fake, cfg).await;
    srv.send(server_frame::Kind::Goodbye(Goodbye {
        code: Code::ShuttingDown as u32,
        retry_after_ms: 30,
        reason: "bye".into(),
    }))
    .await;
    drop(srv);
    assert!(matches!(
        next(&mut events).await,
        Event::Disconnected {
            code: Some(Code::ShuttingDown),
            ..
        }
    ));
    let _srv = fake.session().await;
    assert!(matches!(next(&mut events).await, Event::Connected { .. }));
    client.close().await;
}

#[tokio::test]
async fn fatal_codes_end_the_client() {
    let (fake, cfg) = fake().await;
    let (client, mut events, mut srv) = connected(&fake, cfg).await;
    srv.send(server_frame::Kind::Error(Error {
        code: Code::Revoked as u32,
        message: "revoked".into(),
        fatal: true,
        ..Default::default()
    }))
    .await;
    assert!(matches!(
        next(&mut events).await,
        Event::Fatal {
            code: Code::Revoked,
            ..
        }
    ));
    assert!(
        tokio::time::timeout(PATIENCE, events.next())
            .await
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        client.send("bob", Bytes::new()).await,
        Err(ClientError::Closed)
    ));
    client.close().await;
}

fn deliver(seq: u64, id: [u8; 16], content: envelope::Content) -> server_frame::Kind {
    server_frame::Kind::Deliver(Deliver {
        seq,
        envelope: Some(Envelope {
            from: "bob".into(),
            from_device: 1,
            id: Bytes::copy_from_slice(&id),
            server_ts_ms: 9,
            content: Some(content),
            ..Default::default()
        }),
    })
}

#[tokio::test]
async fn duplicate_deliveries_are_acked_and_not_shown() {
    let (fake, cfg) = fake().await;
    let (client, mut events, mut srv) = connected(&fake, cfg).await;
    let id = [7u8; 16];
    srv.send(deliver(
        1,
        id,
        envelope::Content::Body(Bytes::from_static(b"x")),
    ))
    .await;
    srv.send(deliver(
        2,
        id,
        envelope::Content::Body(Bytes::from_static(b"x")),
    ))
    .await;
    // Same id, other kind: a different item.
    let receipt = crate::proto::Receipt {
        kind: ReceiptKind::Delivered as i32,
        ids: vec![Bytes::copy_from_slice(&id)],
        members: Vec::new(),
    };
    srv.send(deliver(3, id, envelope::Content::Receipt(receipt)))
        .await;
    match next_app(&mut events).await {
        Event::Message {
            seq: 1,
            from,
            id: got,
            body,
            ..
        } => {
            assert_eq!((from.as_str(), got, &body[..]), ("bob", id, &b"x"[..]))
        }
        e => panic!("{e:?}"),
    }
    match next_app(&mut events).await {
        Event::Receipt {
            seq: 3,
            kind: ReceiptKind::Delivered,
            ids,
            ..
        } => assert_eq!(ids, vec![id]),
        e => panic!("{e:?}"),
    }
    match srv.recv().await {
        client_frame::Kind::Ack(a) => assert_eq!(
            a.seqs,
            vec![2],
            "the duplicate is acknowledged by the library"
        ),
        other => panic!("{other:?}"),
    }
    client.ack(&[1, 3]).await.unwrap();
    match srv.recv().await {
        client_frame::Kind::Ack(a) => assert_eq!(a.seqs, vec![1, 3]),
        other => panic!("{other:?}"),
    }
    client.close().await;
}

#[tokio::test]
async fn unavailable_keeps_the_send_and_resends_it_and_later_ones_in_order() {
    let (fake, cfg) = fake().await;
    let (client, mut events, mut srv) = connected(&fake, cfg).await;
    let a = client.send("bob", Bytes::from_static(b"a")).await.unwrap();
    assert_eq!(&srv.recv_send().await.id[..], &a[..]);
    srv.send(server_frame::Kind::Error(Error {
        code: Code::Unavailable as u32,
        message: "home down".into(),
        id: Bytes::copy_from_slice(&a),
        fatal: false,
        retry_after_ms: 50,
    }))
    .await;
    // A later send waits behind the held one.
    tokio::time::sleep(Duration::from_millis(10)).await;
    let b = client.send("bob", Bytes::from_static(b"b")).await.unwrap();
    assert_eq!(&srv.recv_send().await.id[..], &a[..]);
    assert_eq!(&srv.recv_send().await.id[..], &b[..]);
    // A permanent refusal is final.
    srv.send(server_frame::Kind::Error(Error {
        code: Code::BadRecipient as u32,
        message: "no such user".into(),
        id: Bytes::copy_from_slice(&a),
        ..Default::default()
    }))
    .await;
    srv.accept_send(&b, false).await;
    assert!(
        matches!(next_app(&mut events).await, Event::Retrying { id, code: Code::Unavailable, after, .. } if id == a && after >= Duration::from_millis(40))
    );
    assert!(
        matches!(next_app(&mut events).await, Event::Rejected { id, code: Code::BadRecipient, .. } if id == a)
    );
    assert!(matches!(next_app(&mut events).await, Event::Accepted { id, .. } if id == b));
    client.close().await;
}

#[tokio::test]
async fn max_pending_is_enforced() {
    let (fake, mut cfg) = fake().await;
    cfg.max_pending = 2;
    let (client, _events, mut srv) = connected(&fake, cfg).await;
    let a = client.send("bob", Bytes::new()).await.unwrap();
    client.send("bob", Bytes::new()).await.unwrap();
    assert!(matches!(
        client.send("bob", Bytes::new()).await,
        Err(ClientError::TooManyPending(2))
    ));
    srv.recv_send().await;
    srv.accept_send(&a, false).await;
    tokio::time::timeout(PATIENCE, async {
        while client.send("bob", Bytes::new()).await.is_err() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("room again after an Accepted");
    client.close().await;
}

#[tokio::test]
async fn watches_are_renewed_after_a_reconnect() {
    let (fake, cfg) = fake().await;
    let (client, _events, mut srv) = connected(&fake, cfg).await;
    client.watch_presence("bob", true).await.unwrap();
    assert!(
        matches!(srv.recv().await, client_frame::Kind::WatchPresence(w) if w.user == "bob" && w.watch)
    );
    drop(srv);
    let mut srv = fake.session().await;
    assert!(
        matches!(srv.recv().await, client_frame::Kind::WatchPresence(w) if w.user == "bob" && w.watch)
    );
    client.close().await;
}

#[tokio::test]
async fn quic_carries_the_same_frames() {
    use rustls_pki_types::pem::PemObject;
    let pki = DevPki::generate(&["localhost"]).unwrap();
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(pki.key_pem.as_bytes()).unwrap();
    let tls = crate::tls::server_config(pem_certs(&pki.cert_pem), key, &[ALPN]).unwrap();
    let crypto = crate::tls::quic_server_crypto(tls).unwrap();
    let endpoint = quinn::Endpoint::server(
        quinn::ServerConfig::with_crypto(crypto),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let mut cfg = ClientConfig::new(
        endpoint.local_addr().unwrap(),
        Transport::Quic,
        "localhost".into(),
        pem_certs(&pki.ca_cert_pem),
        "v1.token".into(),
    );
    cfg.backoff_initial = Duration::from_millis(10);
    let server = async {
        let conn = endpoint.accept().await.unwrap().await.unwrap();
        let (send, recv) = conn.accept_bi().await.unwrap();
        let mut c = FakeConn::new(Box::new(recv), Box::new(send), Some(conn)).await;
        c.welcome().await;
        c
    };
    let (client, mut srv) = tokio::join!(Client::connect(cfg), server);
    let (client, mut events) = client.unwrap();
    let id = client.send("bob", Bytes::from_static(b"q")).await.unwrap();
    assert_eq!(&srv.recv_send().await.id[..], &id[..]);
    srv.accept_send(&id, false).await;
    assert!(matches!(next_app(&mut events).await, Event::Accepted { id: got, .. } if got == id));
    client.close().await;
    assert!(matches!(srv.recv().await, client_frame::Kind::Goodbye(_)));
}
