//! Push notifications (issue 24) end to end: a real wa-store (a process, so
//! it can be killed) and wa-chat, devices registering endpoints through the
//! real client library, and fake APNs, FCM and UnifiedPush servers that
//! check every request as the provider would (tests/tests/support/push).

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::client::{PushRegistration, Transport};
use common::proto::PushProvider;
use support::push::Reply;
use support::push::apns::FakeApns;
use support::push::devices::{
    assert_no_content, no_more_than, push_toml, register_offline, sample, send_accepted, token_of,
    unifiedpush,
};
use support::push::fcm::FakeFcm;
use support::push::unifiedpush::FakeUnifiedPush;
use support::{Deployment, PATIENCE};

/// The store's metrics page.
async fn metrics(d: &Deployment) -> String {
    let admin = d.store_process.as_ref().unwrap().admin;
    support::admin_get(d.dir.path(), admin, "/metrics").await
}

/// `POST /admin/push/test` (what `wactl push test USER DEVICE` calls).
async fn push_test(d: &Deployment, user: &str, device: u32) -> (u16, String) {
    let admin = d.store_process.as_ref().unwrap().admin;
    let token = std::fs::read(d.dir.path().join("admin.token")).unwrap();
    let a = common::admin::client::request(
        admin,
        http::Method::POST,
        &format!("/admin/push/test?user={user}&device={device}"),
        Some(&token),
    )
    .await
    .unwrap();
    (a.status, a.text())
}

#[tokio::test(flavor = "multi_thread")]
async fn unifiedpush_a_burst_is_one_encrypted_push_without_content_and_connecting_cancels() {
    let up = FakeUnifiedPush::start().await;
    let d = Deployment::start_with_store_config(&push_toml("500ms", "60s", ""), |_| {}).await;
    let (url, keys) = up.device("bob-1");
    let (alice, mut ea) = d.client("alice", Transport::Tcp).await;
    register_offline(
        d.client("bob", Transport::Tcp).await,
        "bob",
        unifiedpush(&url, &keys),
        &alice,
        &mut ea,
    )
    .await;

    send_accepted(&alice, &mut ea, "bob", 50, "secret words").await;
    let got = up.log.wait_accepted(1).await;
    no_more_than(&up.log, 1).await;
    up.log.assert_no_problems();
    // Decrypted by the fake with bob's keys: only a count.
    let n = got[0].payload["n"].as_u64().expect("a count");
    assert!((1..=50).contains(&n), "{}", got[0].payload);
    assert_eq!(
        got[0].payload.as_object().unwrap().len(),
        1,
        "{}",
        got[0].payload
    );
    assert_no_content(&up.log, "secret words", "alice");

    // Another message waits out bob's interval (60 s); bob connecting
    // cancels it.
    send_accepted(&alice, &mut ea, "bob", 1, "later").await;
    let deadline = Instant::now() + PATIENCE;
    while sample(&metrics(&d).await, "wa_store_push_queue") != 1.0 {
        assert!(Instant::now() < deadline, "the push was never queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (bob, _eb) = d.client("bob", Transport::Tcp).await;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let page = metrics(&d).await;
        if sample(&page, "wa_store_push_queue") == 0.0 {
            assert!(
                sample(&page, "wa_store_push_cancelled_total") >= 1.0,
                "{page}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "connecting did not cancel the push"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(up.log.taken().len(), 1);
    let page = metrics(&d).await;
    assert_eq!(
        sample(&page, "wa_store_push_sent_total{provider=\"unifiedpush\"}"),
        1.0,
        "{page}"
    );
    bob.close().await;
    alice.close().await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn apns_checks_the_jwt_and_headers_503_is_retried_and_410_removes_the_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("apns.p8");
    let apns = FakeApns::start(&key).await;
    let d = Deployment::start_with_store_config(
        &push_toml("200ms", "200ms", &apns.config(&key)),
        |_| {},
    )
    .await;
    let (alice, mut ea) = d.client("alice", Transport::Tcp).await;
    let token = "a1b2c3d4e5f6a7b8c9d0a1b2c3d4e5f6a7b8c9d0a1b2c3d4e5f6a7b8c9d0a1b2";
    register_offline(
        d.client("bob", Transport::Tcp).await,
        "bob",
        token_of(PushProvider::Apns, token, true),
        &alice,
        &mut ea,
    )
    .await;

    apns.log
        .script([Reply::new(503, r#"{"reason":"ServiceUnavailable"}"#).retry_after(1)]);
    send_accepted(&alice, &mut ea, "bob", 3, "secret words").await;
    let got = apns.log.wait_accepted(1).await;
    apns.log.assert_no_problems();
    let taken = apns.log.taken();
    assert_eq!(taken[0].status, 503);
    assert!(
        got[0].at - taken[0].at >= Duration::from_secs(1),
        "retried {:?} after a 503 with Retry-After: 1",
        got[0].at - taken[0].at
    );
    let h = &got[0].headers;
    assert_eq!(h["apns-push-type"], "alert");
    assert_eq!(h["apns-priority"], "10");
    assert_eq!(h["apns-topic"], support::push::apns::TOPIC);
    assert!(got[0].path.ends_with(token));
    assert!(
        got[0].payload["aps"]["alert"].is_object(),
        "{}",
        got[0].payload
    );
    assert_no_content(&apns.log, "secret words", "alice");

    // The token died: 410 removes the endpoint, and nothing more is tried.
    apns.log.script([FakeApns::unregistered()]);
    send_accepted(&alice, &mut ea, "bob", 1, "to a dead token").await;
    let deadline = Instant::now() + PATIENCE;
    while !apns.log.taken().iter().any(|t| t.status == 410) {
        assert!(Instant::now() < deadline, "no push after the first");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (status, text) = push_test(&d, "bob", 1).await;
        if status == 404 {
            assert!(text.contains("no push endpoint"), "{text}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the endpoint was not removed: {status} {text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = apns.log.taken().len();
    send_accepted(&alice, &mut ea, "bob", 1, "after removal").await;
    no_more_than(&apns.log, before).await;
    let page = metrics(&d).await;
    assert_eq!(
        sample(
            &page,
            "wa_store_push_endpoints_removed_total{provider=\"apns\"}"
        ),
        1.0,
        "{page}"
    );
    assert!(
        sample(&page, "wa_store_push_retried_total{provider=\"apns\"}") >= 1.0,
        "{page}"
    );
    alice.close().await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fcm_oauth_token_is_cached_429_is_retried_after_retry_after_and_unregistered_removes() {
    let dir = tempfile::tempdir().unwrap();
    let account = dir.path().join("service-account.json");
    let fcm = FakeFcm::start(&account).await;
    let d = Deployment::start_with_store_config(
        &push_toml("200ms", "200ms", &fcm.config(&account)),
        |_| {},
    )
    .await;
    let (alice, mut ea) = d.client("alice", Transport::Tcp).await;
    register_offline(
        d.client("bob", Transport::Tcp).await,
        "bob",
        token_of(PushProvider::Fcm, "fcm-registration-token-1", false),
        &alice,
        &mut ea,
    )
    .await;

    fcm.log.script([FakeFcm::quota_exceeded(2)]);
    send_accepted(&alice, &mut ea, "bob", 1, "secret words").await;
    let got = fcm.log.wait_accepted(1).await;
    fcm.log.assert_no_problems();
    let first = &fcm.log.taken()[0];
    assert_eq!(first.status, 429);
    assert!(
        got[0].at - first.at >= Duration::from_secs(2),
        "retried after {:?}",
        got[0].at - first.at
    );
    let m = &got[0].payload["message"];
    assert_eq!(m["token"], "fcm-registration-token-1");
    assert_eq!(m["android"]["collapse_key"], "wa-new-items");
    assert!(
        m.get("notification").is_none(),
        "a silent wake has no notification: {m}"
    );
    assert_no_content(&fcm.log, "secret words", "alice");

    // A second push, the same access token.
    send_accepted(&alice, &mut ea, "bob", 1, "again").await;
    fcm.log.wait_accepted(2).await;
    assert_eq!(
        fcm.grants.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the OAuth token is cached"
    );

    // UNREGISTERED: removed, nothing more tried.
    fcm.log.script([FakeFcm::unregistered()]);
    send_accepted(&alice, &mut ea, "bob", 1, "to a dead token").await;
    let deadline = Instant::now() + PATIENCE;
    while !fcm.log.taken().iter().any(|t| t.status == 404) {
        assert!(Instant::now() < deadline, "no push after the second");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // (Only now: a test push would take the scripted answer itself.)
    while push_test(&d, "bob", 1).await.0 != 404 {
        assert!(Instant::now() < deadline, "the endpoint was not removed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = fcm.log.taken().len();
    send_accepted(&alice, &mut ea, "bob", 1, "after removal").await;
    no_more_than(&fcm.log, before).await;
    fcm.log.assert_no_problems();
    alice.close().await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pushes_queued_before_a_kill_9_are_each_sent_once_after_the_restart() {
    let up = FakeUnifiedPush::start().await;
    // Each device's first attempt is refused (503, retry in 2 s), so that
    // every push is decided, tried and still queued when the store dies.
    up.log
        .script((0..3).map(|_| Reply::new(503, "").retry_after(2)));
    let toml = push_toml("300ms", "60s", "");
    let mut d = Deployment::start_with_store_config(&toml, |_| {}).await;
    let (alice, mut ea) = d.client("alice", Transport::Tcp).await;
    let users = ["bob", "carol", "dave"];
    for u in users {
        let (url, keys) = up.device(u);
        register_offline(
            d.client(u, Transport::Tcp).await,
            u,
            unifiedpush(&url, &keys),
            &alice,
            &mut ea,
        )
        .await;
    }
    for u in users {
        send_accepted(&alice, &mut ea, u, 5, "before the kill").await;
    }
    let deadline = Instant::now() + PATIENCE;
    while up.log.taken().len() < 3 {
        assert!(Instant::now() < deadline, "three first attempts expected");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    alice.close().await;
    let mut sp = d.store_process.take().unwrap();
    sp.child.start_kill().unwrap(); // SIGKILL
    sp.child.wait().await.unwrap();
    assert!(up.log.accepted().is_empty(), "{:?}", up.log.taken());
    let log = d.dir.path().join("wa-store.log");
    d.store_process = Some(
        support::spawn_store_process_with(d.dir.path(), sp.addr, &toml, Some(&log), &[]).await,
    );
    let got = up.log.wait_accepted(3).await;
    no_more_than(&up.log, 6).await;
    up.log.assert_no_problems();
    let mut paths: Vec<_> = got.iter().map(|t| t.path.clone()).collect();
    paths.sort();
    assert_eq!(paths, ["/up/bob", "/up/carol", "/up/dave"], "each once");
    for t in &got {
        assert_eq!(t.payload["n"], 5, "{}", t.payload);
    }
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn revoking_a_device_removes_its_endpoint_and_nothing_is_pushed_to_it() {
    let up = FakeUnifiedPush::start().await;
    let d = Deployment::start_with_store_config(&push_toml("100ms", "100ms", ""), |_| {}).await;
    let (url, keys) = up.device("bob");
    let (alice, mut ea) = d.client("alice", Transport::Tcp).await;
    register_offline(
        d.client("bob", Transport::Tcp).await,
        "bob",
        unifiedpush(&url, &keys),
        &alice,
        &mut ea,
    )
    .await;
    let (status, text) = push_test(&d, "bob", 1).await;
    assert_eq!(status, 200, "wactl push test: {text}");
    up.log.wait_accepted(1).await;

    let map = common::cluster::ClusterMap::load(&d.dir.path().join("cluster.toml")).unwrap();
    let secret = std::fs::read(d.dir.path().join("cluster.secret")).unwrap();
    let link =
        common::link_client::LinkClient::new(map, &d.roots, secret.into(), "test".into(), PATIENCE)
            .unwrap();
    link.revoke("bob", 1, 2).await.unwrap();
    let (status, text) = push_test(&d, "bob", 1).await;
    assert_eq!(status, 404, "{text}");
    send_accepted(&alice, &mut ea, "bob", 3, "to a revoked device").await;
    no_more_than(&up.log, 1).await;
    up.log.assert_no_problems();
    alice.close().await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_endpoint_is_refused_with_bad_push_endpoint() {
    let d = Deployment::start_with_store_config(&push_toml("1s", "1s", ""), |_| {}).await;
    let (c, mut e) = d.client("bob", Transport::Tcp).await;
    let bad = PushRegistration {
        provider: PushProvider::Unifiedpush,
        token: "ftp://example.invalid/x".into(),
        alert: false,
        p256dh: Bytes::new(),
        auth: Bytes::new(),
    };
    assert!(
        c.set_push_endpoint(Some(bad)).await.is_err(),
        "the library checks first"
    );
    // A raw frame past the library's check.
    use common::proto::{ClientFrame, Hello, SetPushEndpoint, client_frame, frame};
    let mut tls = common::client::raw::connect_tls(d.chat_tcp, "localhost", &d.roots)
        .await
        .unwrap();
    use tokio::io::AsyncWriteExt;
    let mut bytes = frame::to_bytes(&ClientFrame {
        kind: Some(client_frame::Kind::Hello(Hello {
            token: d.token("carol"),
            client: "raw".into(),
        })),
    });
    bytes.extend_from_slice(&frame::to_bytes(&ClientFrame {
        kind: Some(client_frame::Kind::SetPushEndpoint(SetPushEndpoint {
            id: Bytes::from_static(&[7; 16]),
            provider: PushProvider::Apns as i32,
            token: "not hex".into(),
            ..Default::default()
        })),
    }));
    tls.write_all(&bytes).await.unwrap();
    let mut r = common::wire::FrameReader::new(tls, common::proto::limits::MAX_FRAME);
    let err = tokio::time::timeout(PATIENCE, async {
        loop {
            match r.read::<common::proto::ServerFrame>().await {
                Ok(Some(common::proto::ServerFrame {
                    kind: Some(common::proto::server_frame::Kind::Error(e)),
                })) => return e,
                Ok(Some(_)) => {}
                other => panic!("connection ended: {other:?}"),
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(
        err.code,
        common::proto::Code::BadPushEndpoint as u32,
        "{err:?}"
    );
    assert!(!err.fatal);
    c.close().await;
    let _ = &mut e;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unifiedpush_requests_carry_a_vapid_token_the_push_service_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("vapid.pem");
    let up = FakeUnifiedPush::start_vapid(&key).await;
    let vapid = format!(
        "vapid_key_file = \"{}\"\nvapid_subject = \"mailto:ops@example.org\"\n",
        key.display()
    );
    let d = Deployment::start_with_store_config(&push_toml("100ms", "100ms", &vapid), |_| {}).await;
    let (url, keys) = up.device("bob");
    let (alice, mut ea) = d.client("alice", Transport::Tcp).await;
    register_offline(
        d.client("bob", Transport::Tcp).await,
        "bob",
        unifiedpush(&url, &keys),
        &alice,
        &mut ea,
    )
    .await;
    send_accepted(&alice, &mut ea, "bob", 1, "m").await;
    let got = up.log.wait_accepted(1).await;
    up.log.assert_no_problems();
    assert!(
        got[0].headers["authorization"]
            .to_str()
            .unwrap()
            .starts_with("vapid t="),
        "{:?}",
        got[0].headers
    );
    alice.close().await;
    d.stop().await;
}
