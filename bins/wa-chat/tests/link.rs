//! wa-chat against a scripted fake store: what the edge sends on the link for
//! what a client does, and what the client sees for what the store does
//! (acks and receipts in order, a broken link, a kick).

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::link::{
    AppendResult, Attached, Kick, LinkAuthOk, LinkDown, LinkUp, MAX_LINK_FRAME, Push, link_down,
    link_up,
};
use common::proto::limits::MAX_FRAME;
use common::proto::{
    Ack, ClientFrame, Code, Envelope, Hello, MarkRead, ReceiptKind, ServerFrame, client_frame,
    envelope, server_frame,
};
use common::token::{TokenClaims, TokenSigner, keyfile};
use common::wire::{FrameReader, write_frame};
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

const PATIENCE: Duration = Duration::from_secs(20);

type StoreTls = tokio_rustls::server::TlsStream<TcpStream>;
type ClientTls = tokio_rustls::client::TlsStream<TcpStream>;

struct Store {
    listener: TcpListener,
    acceptor: TlsAcceptor,
}

/// One accepted, authenticated link as the store sees it.
struct Link {
    r: FrameReader<ReadHalf<StoreTls>>,
    w: WriteHalf<StoreTls>,
}

impl Store {
    async fn accept(&self) -> Link {
        let (tcp, _) = tokio::time::timeout(PATIENCE, self.listener.accept())
            .await
            .unwrap()
            .unwrap();
        let tls = self.acceptor.accept(tcp).await.unwrap();
        let (r, w) = tokio::io::split(tls);
        let mut link = Link {
            r: FrameReader::new(r, MAX_LINK_FRAME),
            w,
        };
        match link.next().await {
            link_up::Kind::Auth(a) => {
                assert_eq!(&a.secret[..], &[7u8; 32]);
                assert_eq!(a.edge, "chat-test");
                assert_eq!(a.epoch, 1);
            }
            other => panic!("expected Auth, got {other:?}"),
        }
        link.send(link_down::Kind::AuthOk(LinkAuthOk {
            node: "fake".into(),
            epoch: 1,
            heartbeat: false,
        }))
        .await;
        link
    }
}

impl Link {
    async fn next(&mut self) -> link_up::Kind {
        let f: LinkUp = tokio::time::timeout(PATIENCE, self.r.read())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        f.kind.unwrap()
    }

    async fn send(&mut self, k: link_down::Kind) {
        write_frame(
            &mut self.w,
            &LinkDown { kind: Some(k) },
            &mut BytesMut::new(),
        )
        .await
        .unwrap();
        self.w.flush().await.unwrap();
    }
}

struct Edge {
    dir: tempfile::TempDir,
    addr: std::net::SocketAddr,
    signer: TokenSigner,
    store: Store,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), wa_chat::ChatError>>,
}

async fn start() -> Edge {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    common::tls::DevPki::generate(&["localhost", "127.0.0.1"])
        .unwrap()
        .write_to(d)
        .unwrap();
    let key = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
    common::fsutil::write_public(
        d.join("k1.pub"),
        keyfile::verifying_pem(&key.verifying_key()).as_bytes(),
    )
    .unwrap();
    common::fsutil::write_private(&d.join("cluster.secret"), &[7u8; 32]).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let map =
        common::cluster::ClusterMap::single(listener.local_addr().unwrap(), "localhost", [3; 16]);
    std::fs::write(d.join("cluster.toml"), map.to_toml()).unwrap();
    let certs = common::tls::load_certs(&d.join("cert.pem")).unwrap();
    let tls_key = common::tls::load_key(&d.join("key.pem")).unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(
        common::tls::server_config(certs, tls_key, &[common::link::LINK_ALPN]).unwrap(),
    ));

    let mut config = wa_chat::Config {
        name: "chat-test".into(),
        ..Default::default()
    };
    config.tls.cert = d.join("cert.pem");
    config.tls.key = d.join("key.pem");
    config.tokens.keys[0].public_key = d.join("k1.pub");
    config.cluster.map = d.join("cluster.toml");
    config.cluster.ca = d.join("ca.pem");
    config.cluster.secret_file = d.join("cluster.secret");
    config.shutdown.grace = Duration::from_secs(3);
    config.shutdown.retry_after = Duration::from_millis(100);
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let listeners = wa_chat::Listeners {
        tcp: Some(tcp),
        quic: Vec::new(),
    };
    let task = tokio::spawn(wa_chat::run(config, listeners, shutdown.clone()));
    Edge {
        dir,
        addr,
        signer: TokenSigner::new("k1", key),
        store: Store { listener, acceptor },
        shutdown,
        task,
    }
}

impl Edge {
    /// A client of `user` whose `Hello` is sent (and `frames` right
    /// behind it, before any answer).
    async fn hello(&self, user: &str, frames: Vec<client_frame::Kind>) -> FrameReader<ClientTls> {
        let roots = common::tls::load_certs(&self.dir.path().join("ca.pem")).unwrap();
        let mut tls = common::client::raw::connect_tls(self.addr, "localhost", &roots)
            .await
            .unwrap();
        let token = self.signer.sign(TokenClaims {
            user: user.into(),
            device: 2,
            generation: 1,
            expires_at: u64::MAX / 2,
            key_id: String::new(),
            issued_at: 0,
            account: String::new(),
        });
        send(
            &mut tls,
            client_frame::Kind::Hello(Hello {
                token,
                client: "link-test".into(),
            }),
        )
        .await;
        for k in frames {
            send(&mut tls, k).await;
        }
        FrameReader::new(tls, MAX_FRAME)
    }

    /// A client of `user` welcomed once the fake home confirmed its
    /// attach on `link`; with its session id.
    async fn client(&self, user: &str, link: &mut Link) -> (FrameReader<ClientTls>, u64) {
        let mut r = self.hello(user, Vec::new()).await;
        let session = attached(link, user).await;
        link.send(link_down::Kind::Attached(Attached { session }))
            .await;
        match next(&mut r).await {
            server_frame::Kind::Welcome(w) => {
                assert_eq!(
                    (w.user.as_str(), w.device, w.server.as_str()),
                    (user, 2, "chat-test")
                );
            }
            other => panic!("expected Welcome, got {other:?}"),
        }
        (r, session)
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

async fn send(tls: &mut ClientTls, k: client_frame::Kind) {
    tls.write_all(&common::proto::frame::to_bytes(&ClientFrame {
        kind: Some(k),
    }))
    .await
    .unwrap();
}

async fn next(r: &mut FrameReader<ClientTls>) -> server_frame::Kind {
    let f: ServerFrame = tokio::time::timeout(PATIENCE, r.read())
        .await
        .unwrap()
        .unwrap()
        .expect("a frame, not the end");
    f.kind.unwrap()
}

/// The connection ends (cleanly or by a reset) with nothing more.
async fn ends(r: &mut FrameReader<ClientTls>) {
    let end = tokio::time::timeout(PATIENCE, r.read::<ServerFrame>())
        .await
        .unwrap();
    assert!(!matches!(end, Ok(Some(_))), "expected the end, got {end:?}");
}

fn id(b: u8) -> Bytes {
    Bytes::from(vec![b; 16])
}

async fn attached(link: &mut Link, user: &str) -> u64 {
    match link.next().await {
        link_up::Kind::Attach(a) => {
            assert_eq!((a.user.as_str(), a.device, a.generation), (user, 2, 1));
            a.session
        }
        other => panic!("expected Attach, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_go_to_the_home_as_they_are_and_read_receipts_travel_like_sends() {
    let edge = start().await;
    let mut link = edge.store.accept().await;
    let (mut bob, session) = edge.client("bob", &mut link).await;

    let msg = Envelope {
        from: "alice".into(),
        from_device: 1,
        id: id(1),
        server_ts_ms: 10,
        content: Some(envelope::Content::Body(Bytes::from_static(b"hi"))),
        ..Default::default()
    };
    link.send(link_down::Kind::Push(Push {
        session,
        seq: 5,
        envelope: Some(msg.clone()),
    }))
    .await;
    match next(&mut bob).await {
        server_frame::Kind::Deliver(d) => assert_eq!((d.seq, d.envelope), (5, Some(msg))),
        other => panic!("expected Deliver, got {other:?}"),
    }
    // The home checks the seqs and makes the delivered receipt (DESIGN
    // §4): the edge forwards the ack untouched and appends nothing.
    send(
        bob.get_mut(),
        client_frame::Kind::Ack(Ack { seqs: vec![5, 77] }),
    )
    .await;
    send(
        bob.get_mut(),
        client_frame::Kind::MarkRead(MarkRead {
            id: id(3),
            to: "alice".into(),
            ids: vec![id(1)],
            group: String::new(),
        }),
    )
    .await;
    match link.next().await {
        link_up::Kind::Ack(a) => assert_eq!(
            (a.session, a.user.as_str(), a.seqs),
            (session, "bob", vec![5, 77])
        ),
        other => panic!("expected the ack, got {other:?}"),
    }
    let read_req = match link.next().await {
        link_up::Kind::Append(a) => {
            assert_eq!(a.to, "alice");
            let e = a.envelope.unwrap();
            assert_eq!((e.from.as_str(), &e.id), ("bob", &id(3)));
            assert!(
                matches!(e.content, Some(envelope::Content::Receipt(r)) if r.kind == ReceiptKind::Read as i32 && r.ids == vec![id(1)])
            );
            a.req
        }
        other => panic!("expected the read receipt, got {other:?}"),
    };
    link.send(link_down::Kind::AppendResult(AppendResult {
        req: read_req,
        code: 0,
        server_ts_ms: 21,
        duplicate: true,
        seq: 2,
        retry_after_ms: 0,
    }))
    .await;
    match next(&mut bob).await {
        server_frame::Kind::Accepted(a) => {
            assert_eq!((a.id, a.server_ts_ms, a.duplicate), (id(3), 21, true))
        }
        other => panic!("expected Accepted, got {other:?}"),
    }

    send(
        bob.get_mut(),
        client_frame::Kind::Goodbye(Default::default()),
    )
    .await;
    match link.next().await {
        link_up::Kind::Detach(d) => assert_eq!((d.session, d.user.as_str()), (session, "bob")),
        other => panic!("expected Detach, got {other:?}"),
    }
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_link_closes_its_sessions_with_unavailable_and_relinks() {
    let edge = start().await;
    let mut link = edge.store.accept().await;
    let (mut bob, _) = edge.client("bob", &mut link).await;
    drop(link);
    match next(&mut bob).await {
        server_frame::Kind::Goodbye(g) => {
            assert_eq!(Code::from_u32(g.code), Some(Code::Unavailable));
            assert!(g.retry_after_ms > 0);
        }
        other => panic!("expected Goodbye UNAVAILABLE, got {other:?}"),
    }
    ends(&mut bob).await;
    // The edge links again, and a new session attaches through the new link.
    let mut link = edge.store.accept().await;
    let _bob = edge.client("bob", &mut link).await;
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kick_closes_the_session_with_its_code() {
    let edge = start().await;
    let mut link = edge.store.accept().await;
    let (mut bob, session) = edge.client("bob", &mut link).await;
    link.send(link_down::Kind::Kick(Kick {
        session,
        code: Code::Revoked as u32,
    }))
    .await;
    match next(&mut bob).await {
        server_frame::Kind::Error(e) => {
            assert_eq!(Code::from_u32(e.code), Some(Code::Revoked));
            assert!(e.fatal);
        }
        other => panic!("expected Error REVOKED, got {other:?}"),
    }
    ends(&mut bob).await;
    match link.next().await {
        link_up::Kind::Detach(d) => assert_eq!(d.session, session),
        other => panic!("expected Detach, got {other:?}"),
    }
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_says_goodbye_with_a_jittered_retry() {
    let edge = start().await;
    let mut link = edge.store.accept().await;
    let (mut bob, _) = edge.client("bob", &mut link).await;
    edge.shutdown.cancel();
    match next(&mut bob).await {
        server_frame::Kind::Goodbye(g) => {
            assert_eq!(Code::from_u32(g.code), Some(Code::ShuttingDown));
            assert!(
                (100..=150).contains(&g.retry_after_ms),
                "{}",
                g.retry_after_ms
            );
        }
        other => panic!("expected Goodbye SHUTTING_DOWN, got {other:?}"),
    }
    ends(&mut bob).await;
    assert!(matches!(link.next().await, link_up::Kind::Detach(_)));
    tokio::time::timeout(PATIENCE, edge.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// The attack of a revoked device: sends pipelined right behind `Hello`.
/// The edge reads none of them before the home answers the attach; the
/// home refuses it, so the link carries no append at all and the client
/// gets `REVOKED` without a `Welcome`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_pipelined_behind_hello_wait_for_the_homes_answer() {
    let edge = start().await;
    let mut link = edge.store.accept().await;
    let sends = (0..50u8)
        .map(|n| {
            client_frame::Kind::Send(common::proto::Send {
                id: id(n),
                to: "alice".into(),
                body: Bytes::from_static(b"from a revoked phone"),
            })
        })
        .collect();
    let mut bob = edge.hello("bob", sends).await;
    let session = attached(&mut link, "bob").await;
    link.send(link_down::Kind::Kick(Kick {
        session,
        code: Code::Revoked as u32,
    }))
    .await;
    match next(&mut bob).await {
        server_frame::Kind::Error(e) => {
            assert_eq!(Code::from_u32(e.code), Some(Code::Revoked));
            assert!(e.fatal);
        }
        other => panic!("expected Error REVOKED and no Welcome, got {other:?}"),
    }
    ends(&mut bob).await;
    // Nothing but the session's end follows on the link: no append.
    match link.next().await {
        link_up::Kind::Detach(d) => assert_eq!(d.session, session),
        other => panic!("expected Detach and no append, got {other:?}"),
    }

    // Confirmed, the same pipelined frames go to the home in order, with
    // the credential's generation for the sender's home to check.
    let sends = (0..3u8)
        .map(|n| {
            client_frame::Kind::Send(common::proto::Send {
                id: id(n),
                to: "alice".into(),
                body: Bytes::from_static(b"hi"),
            })
        })
        .collect();
    let _bob = edge.hello("bob", sends).await;
    let session = attached(&mut link, "bob").await;
    link.send(link_down::Kind::Attached(Attached { session }))
        .await;
    for n in 0..3u8 {
        match link.next().await {
            link_up::Kind::Append(a) => {
                assert_eq!(a.envelope.unwrap().id, id(n));
                assert_eq!(a.from_generation, 1);
            }
            other => panic!("expected Append, got {other:?}"),
        }
    }
    edge.stop().await;
}
