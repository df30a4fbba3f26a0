//! Bad input at the edge: each case gets its documented error code and outcome
//! (docs/PROTOCOL.md, "Error codes"), the server stays up, and nothing already
//! accepted is lost.

mod support;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::client::Transport;
use common::proto::limits::{MAX_BODY, MAX_FRAME};
use common::proto::{
    ClientFrame, Code, Hello, Ping, Send, ServerFrame, client_frame, frame, server_frame,
};
use common::token::{TokenClaims, TokenSigner};
use common::wire::FrameReader;
use support::{Deployment, PATIENCE, expect, next_message};
use tokio::io::{AsyncRead, AsyncWriteExt};

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn raw(d: &Deployment) -> Tls {
    common::client::raw::connect_tls(d.chat_tcp, "localhost", &d.roots)
        .await
        .expect("TLS connect")
}

fn enc(kind: client_frame::Kind) -> BytesMut {
    frame::to_bytes(&ClientFrame { kind: Some(kind) })
}

async fn next<R: AsyncRead + Unpin>(r: &mut FrameReader<R>) -> Option<ServerFrame> {
    tokio::time::timeout(PATIENCE, r.read::<ServerFrame>())
        .await
        .expect("server answers within patience")
        .ok()
        .flatten()
}

/// Expects an Error frame with `code`, then (for fatal codes) the end of the
/// connection.
async fn expect_error<R: AsyncRead + Unpin>(
    r: &mut FrameReader<R>,
    code: Code,
) -> server_frame::Kind {
    let f = loop {
        match next(r).await {
            // Server-sent presence or the like may come first; skip it.
            Some(ServerFrame {
                kind: Some(server_frame::Kind::Presence(_)),
            }) => continue,
            Some(ServerFrame { kind: Some(k) }) => break k,
            other => panic!("expected error {code:?}, got {other:?}"),
        }
    };
    match &f {
        server_frame::Kind::Error(e) => {
            assert_eq!(Code::from_u32(e.code), Some(code), "{e:?}");
            assert_eq!(e.fatal, code.is_fatal(), "fatal flag of {code:?}");
            assert!(!e.message.is_empty(), "errors say what went wrong");
        }
        other => panic!("expected error {code:?}, got {other:?}"),
    }
    if code.is_fatal() {
        // Closed: the stream ends (cleanly or with a reset), nothing more.
        let end = tokio::time::timeout(PATIENCE, r.read::<ServerFrame>())
            .await
            .expect("closed within patience");
        assert!(
            !matches!(end, Ok(Some(_))),
            "connection must close after {code:?}, got {end:?}"
        );
    }
    f
}

async fn hello(tls: &mut Tls, token: String) {
    tls.write_all(&enc(client_frame::Kind::Hello(Hello {
        token,
        client: "bad-input-test".into(),
    })))
    .await
    .unwrap();
}

/// A connection that stays open answers a ping.
async fn still_open(tls: &mut FrameReader<Tls>) {
    tls.get_mut()
        .write_all(&enc(client_frame::Kind::Ping(Ping { nonce: 77 })))
        .await
        .unwrap();
    loop {
        match next(tls).await {
            Some(ServerFrame {
                kind: Some(server_frame::Kind::Pong(p)),
            }) => {
                assert_eq!(p.nonce, 77);
                return;
            }
            Some(ServerFrame {
                kind: Some(server_frame::Kind::Presence(_)),
            }) => {}
            other => panic!("expected Pong on a kept connection, got {other:?}"),
        }
    }
}

async fn authed(d: &Deployment, user: &str) -> FrameReader<Tls> {
    let mut tls = raw(d).await;
    hello(&mut tls, d.token(user)).await;
    let mut r = FrameReader::new(tls, MAX_FRAME);
    match next(&mut r).await {
        Some(ServerFrame {
            kind: Some(server_frame::Kind::Welcome(w)),
        }) => assert_eq!(w.user, user),
        other => panic!("expected Welcome, got {other:?}"),
    }
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_documented_errors_and_loses_nothing() {
    let d = Deployment::start().await;

    // Something accepted before the abuse starts.
    let (a, mut ea) = d.client("alice", Transport::Tcp).await;
    let kept = a
        .send("bob", Bytes::from_static(b"before the storm"))
        .await
        .unwrap();
    expect(&mut ea, "Accepted", |e| match e {
        common::client::Event::Accepted { id, .. } if *id == kept => Some(()),
        _ => None,
    })
    .await;

    // Garbage: a length prefix and bytes that are not protobuf.
    let mut tls = raw(&d).await;
    tls.write_all(&[0, 0, 0, 6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    expect_error(&mut FrameReader::new(tls, MAX_FRAME), Code::BadFrame).await;

    // Oversized: refused from the header alone, the payload never sent.
    let mut tls = raw(&d).await;
    tls.write_all(&((MAX_FRAME as u32) + 1).to_be_bytes())
        .await
        .unwrap();
    expect_error(&mut FrameReader::new(tls, MAX_FRAME), Code::FrameTooLarge).await;

    // Anything before Hello.
    let mut tls = raw(&d).await;
    tls.write_all(&enc(client_frame::Kind::Ping(Ping { nonce: 1 })))
        .await
        .unwrap();
    expect_error(
        &mut FrameReader::new(tls, MAX_FRAME),
        Code::NotAuthenticated,
    )
    .await;

    // An expired token.
    let mut tls = raw(&d).await;
    hello(
        &mut tls,
        d.token_expiring("alice", support::now_secs() - 60),
    )
    .await;
    expect_error(&mut FrameReader::new(tls, MAX_FRAME), Code::TokenExpired).await;

    // A forged token: right shape and key id, signed by someone else's key.
    let forger = TokenSigner::new(
        "k1",
        ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>()),
    );
    let forged = forger.sign(TokenClaims {
        user: "alice".into(),
        device: 1,
        generation: 1,
        expires_at: support::now_secs() + 3600,
        key_id: String::new(),
        issued_at: support::now_secs(),
        account: String::new(),
    });
    let mut tls = raw(&d).await;
    hello(&mut tls, forged).await;
    expect_error(&mut FrameReader::new(tls, MAX_FRAME), Code::TokenInvalid).await;

    // Not a token at all.
    let mut tls = raw(&d).await;
    hello(&mut tls, "v1.not-base64!.x".into()).await;
    expect_error(&mut FrameReader::new(tls, MAX_FRAME), Code::TokenInvalid).await;

    // After authentication: a malformed recipient and an oversized body are
    // refused with the message id echoed, and the connection is kept.
    let mut r = authed(&d, "mallory").await;
    let id = Bytes::from(vec![9u8; 16]);
    for (to, body, code) in [
        ("not a user!", Bytes::from_static(b"x"), Code::BadRecipient),
        ("", Bytes::from_static(b"x"), Code::BadRecipient),
        (
            "bob",
            Bytes::from(vec![0u8; MAX_BODY + 1]),
            Code::BodyTooLarge,
        ),
    ] {
        let send = enc(client_frame::Kind::Send(Send {
            id: id.clone(),
            to: to.into(),
            body,
        }));
        r.get_mut().write_all(&send).await.unwrap();
        let server_frame::Kind::Error(e) = expect_error(&mut r, code).await else {
            unreachable!()
        };
        assert_eq!(e.id, id, "the error names the refused message");
        still_open(&mut r).await;
    }
    // A read receipt naming something that is not a group: the same.
    let read = enc(client_frame::Kind::MarkRead(common::proto::MarkRead {
        id: id.clone(),
        to: "bob".into(),
        ids: vec![id.clone()],
        group: "not a group".into(),
    }));
    r.get_mut().write_all(&read).await.unwrap();
    let server_frame::Kind::Error(e) = expect_error(&mut r, Code::BadRecipient).await else {
        unreachable!()
    };
    assert_eq!(e.id, id);
    still_open(&mut r).await;
    // A bad message id is refused too, and the connection kept.
    let send = enc(client_frame::Kind::Send(Send {
        id: Bytes::from_static(b"short"),
        to: "bob".into(),
        body: Bytes::new(),
    }));
    r.get_mut().write_all(&send).await.unwrap();
    expect_error(&mut r, Code::BadId).await;
    still_open(&mut r).await;
    // A second Hello is a protocol violation: closed.
    hello(r.get_mut(), d.token("mallory")).await;
    expect_error(&mut r, Code::ProtocolViolation).await;

    // The server is still up, and what was accepted before is delivered.
    let (b, mut eb) = d.client("bob", Transport::Quic).await;
    let (seq, from, got, body) = next_message(&mut eb).await;
    assert_eq!(
        (from.as_str(), got, &body[..]),
        ("alice", kept, &b"before the storm"[..])
    );
    b.ack(&[seq]).await.unwrap();
    // Nothing from mallory's refused sends reached bob.
    let after = a
        .send("bob", Bytes::from_static(b"after the storm"))
        .await
        .unwrap();
    let (_, _, got, _) = next_message(&mut eb).await;
    assert_eq!(got, after);

    a.close().await;
    b.close().await;
    d.stop().await;
}

/// A connection that never says Hello is closed after the auth timeout with
/// NOT_AUTHENTICATED; one that says nothing after Hello is closed after the
/// idle timeout with IDLE_TIMEOUT, and one that pings is not. (The timeouts
/// are shortened in this test's deployment config.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_by_the_timeouts() {
    let d = Deployment::start_with(|chat| {
        chat.push_str(
            "[limits]\nauth_timeout = \"300ms\"\nidle_timeout = \"600ms\"\nkeepalive = \"200ms\"\nlogin_queue_wait = \"100ms\"\n",
        );
    })
    .await;
    let tls = raw(&d).await;
    expect_error(
        &mut FrameReader::new(tls, MAX_FRAME),
        Code::NotAuthenticated,
    )
    .await;
    // A client that pings within the idle timeout is never cut, over
    // several timeouts (the session's idle deadline moves later with each
    // frame; its timer fires at the old one and finds nothing due).
    let mut lively = authed(&d, "lively").await;
    for nonce in 0..8 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        lively
            .get_mut()
            .write_all(&enc(client_frame::Kind::Ping(Ping { nonce })))
            .await
            .unwrap();
        match next(&mut lively).await {
            Some(ServerFrame {
                kind: Some(server_frame::Kind::Pong(p)),
            }) => assert_eq!(p.nonce, nonce),
            other => panic!("a pinging client got {other:?} instead of its Pong"),
        }
    }
    drop(lively);
    let mut r = authed(&d, "sleepy").await;
    let started = tokio::time::Instant::now();
    expect_error(&mut r, Code::IdleTimeout).await;
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "not before the idle timeout"
    );
    d.stop().await;
}
