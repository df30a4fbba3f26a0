//! Signup end to end: real wa-store, wa-chat and wa-register on port 0, the
//! real client library. Codes are read from the development `log`
//! provider's file, as `wactl code` does.

mod support;

use std::time::Duration;

use bytes::Bytes;
use common::client::{Client, Event, RegisterError, Transport, Verify};
use common::link::KvSpace;
use http::Method;
use support::{Deployment, code_for, expect, next_message, sign_up};

/// Waits that let a number ask again at once, for tests that register twice.
const NO_WAIT: &str = "[codes]\nresend_waits = [\"1ns\"]\n";

fn refused(e: &RegisterError) -> (u16, &str) {
    (e.status().unwrap_or(0), e.code().unwrap_or(""))
}

/// Reads the phone index at the number's home directly over the link.
async fn indexed(d: &Deployment, number: &str) -> u64 {
    let dir = d.dir.path();
    let map = common::cluster::ClusterMap::load(&dir.join("cluster.toml")).unwrap();
    let secret = std::fs::read(dir.join("cluster.secret")).unwrap();
    let link = common::link_client::LinkClient::new(
        map,
        &d.roots,
        secret.into(),
        "test".into(),
        Duration::from_secs(10),
    )
    .unwrap();
    link.kv_get(KvSpace::Phone, number).await.unwrap().version
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_sign_up_and_talk() {
    let d = Deployment::start().await;
    let node = d.start_register("").await;
    let rc = d.register_client(&node);

    let alice_code = code_for(&rc, &node, "+15550000001").await;
    let alice = rc
        .verify(&Verify {
            device_name: Some("alice's phone".into()),
            ..alice_code.clone()
        })
        .await
        .unwrap();
    let bob = sign_up(&rc, &node, "+15550000002", "bob's phone", None)
        .await
        .unwrap();
    assert!(alice.new_account && bob.new_account);
    assert_ne!(alice.user, bob.user);
    assert_eq!((alice.device, alice.generation), (1, 1));
    // The code was single use.
    let again = rc
        .verify(&Verify {
            device_name: Some("x".into()),
            ..alice_code
        })
        .await
        .unwrap_err();
    assert_eq!(refused(&again), (404, "no_code"));

    let (a, mut ea) = Client::connect(d.client_config_with_token(&alice.token, Transport::Tcp))
        .await
        .unwrap();
    let (b, mut eb) = Client::connect(d.client_config_with_token(&bob.token, Transport::Quic))
        .await
        .unwrap();
    let id = a
        .send(&bob.user, Bytes::from_static(b"hi bob"))
        .await
        .unwrap();
    expect(&mut ea, "Accepted", |e| match e {
        Event::Accepted { id: got, .. } if *got == id => Some(()),
        _ => None,
    })
    .await;
    let (seq, from, got, body) = next_message(&mut eb).await;
    assert_eq!(
        (from.as_str(), got, &body[..]),
        (alice.user.as_str(), id, &b"hi bob"[..])
    );
    b.ack(&[seq]).await.unwrap();
    let reply = b
        .send(&alice.user, Bytes::from_static(b"hi alice"))
        .await
        .unwrap();
    let (_, from, got, body) = loop {
        match tokio::time::timeout(support::PATIENCE, ea.next())
            .await
            .unwrap()
            .unwrap()
        {
            Event::Message {
                seq,
                from,
                id,
                body,
                ..
            } => break (seq, from, id, body),
            Event::Receipt { .. } | Event::Presence { .. } | Event::Connected { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(
        (from.as_str(), got, &body[..]),
        (bob.user.as_str(), reply, &b"hi alice"[..])
    );

    // Refresh and the device list work with the issued credential.
    let fresh = rc.refresh(&alice.token).await.unwrap();
    assert!(fresh.expires_at >= alice.expires_at);
    let devices = rc.devices(&fresh.token).await.unwrap();
    assert_eq!(devices.len(), 1);
    assert!(devices[0].current && devices[0].name == "alice's phone");

    a.close().await;
    b.close().await;
    node.service.stop().await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_wrong_codes_kill_the_code() {
    let d = Deployment::start().await;
    let node = d.start_register("").await;
    let rc = d.register_client(&node);
    let number = "+15550000003";
    let sent = rc.request_code(number).await.unwrap();
    let right = node.last_code(number).unwrap();
    let wrong = if right == "000000" {
        "111111"
    } else {
        "000000"
    };
    let attempt = |code: &str| Verify {
        number: number.into(),
        session: sent.session.clone(),
        code: code.into(),
        device_name: Some("phone".into()),
        ..Verify::default()
    };
    for left in (1..5).rev() {
        let e = rc.verify(&attempt(wrong)).await.unwrap_err();
        assert_eq!(refused(&e), (403, "code_wrong"));
        let RegisterError::Refused { checks_left, .. } = e else {
            unreachable!()
        };
        assert_eq!(checks_left, Some(left));
    }
    let e = rc.verify(&attempt(wrong)).await.unwrap_err();
    assert_eq!(refused(&e), (410, "code_exhausted"));
    // Dead: even the right code no longer works, and nothing was created.
    let e = rc.verify(&attempt(&right)).await.unwrap_err();
    assert_eq!(refused(&e), (410, "code_exhausted"));
    assert_eq!(indexed(&d, number).await, 0);
    node.service.stop().await;
    d.stop().await;
}

/// Finding 9 of the abuse review: five wrong guesses by a stranger killed
/// the owner's pending code. A code now belongs to the session of the
/// request that asked for it: guesses without it, or in a session of the
/// stranger's own asking, never touch it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strangers_guesses_never_kill_the_owners_code() {
    let d = Deployment::start().await;
    let node = d.start_register(NO_WAIT).await;
    let rc = d.register_client(&node);
    let number = "+15550000013";
    let owner = code_for(&rc, &node, number).await;
    let wrong = if owner.code == "000000" {
        "111111"
    } else {
        "000000"
    };
    // The stranger guesses in a session nobody asked for: no such code,
    // and nothing counted.
    for _ in 0..5 {
        let e = rc
            .verify(&Verify {
                session: "00112233445566778899aabbccddeeff".into(),
                code: wrong.into(),
                device_name: Some("stranger".into()),
                ..owner.clone()
            })
            .await
            .unwrap_err();
        assert_eq!(refused(&e), (404, "no_code"));
    }
    // Then asks for a code of their own and spends its five guesses.
    let theirs = rc.request_code(number).await.unwrap().session;
    assert_ne!(theirs, owner.session);
    for _ in 0..5 {
        let e = rc
            .verify(&Verify {
                session: theirs.clone(),
                code: wrong.into(),
                device_name: Some("stranger".into()),
                ..owner.clone()
            })
            .await
            .unwrap_err();
        assert!(
            matches!(refused(&e), (403, "code_wrong") | (410, "code_exhausted")),
            "{e}"
        );
    }
    // The owner's code, in the owner's session, still registers.
    let r = rc
        .verify(&Verify {
            device_name: Some("owner".into()),
            ..owner
        })
        .await
        .unwrap();
    assert!(r.new_account);
    node.service.stop().await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_code_fails() {
    let d = Deployment::start().await;
    let node = d.start_register("[codes]\nttl = \"1ns\"\n").await;
    let rc = d.register_client(&node);
    let e = sign_up(&rc, &node, "+15550000004", "phone", None)
        .await
        .unwrap_err();
    assert_eq!(refused(&e), (410, "code_expired"));
    assert_eq!(indexed(&d, "+15550000004").await, 0);
    node.service.stop().await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resend_too_early_gets_429_with_the_wait() {
    let d = Deployment::start().await;
    let node = d.start_register("").await;
    let rc = d.register_client(&node);
    let first = rc.request_code("+15550000005").await.unwrap();
    assert_eq!(first.retry_after_secs, 60);
    let body = Bytes::from_static(br#"{"number": "+15550000005"}"#);
    let a = rc
        .raw(
            Method::POST,
            "/v1/codes",
            Some("application/json"),
            body,
            None,
        )
        .await
        .unwrap();
    assert_eq!(a.status, 429);
    let wait: u64 = a.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(v["error"], "resend_too_early");
    assert_eq!(v["retry_after_secs"], wait);
    assert_eq!(node.codes_sent(), 1, "no second SMS");
    node.service.stop().await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_device_revokes_the_first() {
    let d = Deployment::start().await;
    let node = d.start_register(NO_WAIT).await;
    let rc = d.register_client(&node);
    let number = "+15550000006";
    let first = sign_up(&rc, &node, number, "old phone", None)
        .await
        .unwrap();
    let (old, mut eo) = Client::connect(d.client_config_with_token(&first.token, Transport::Tcp))
        .await
        .unwrap();

    let second = sign_up(&rc, &node, number, "new phone", None)
        .await
        .unwrap();
    assert!(!second.new_account);
    assert_eq!(second.user, first.user);
    assert_eq!(second.generation, first.generation + 1);
    assert_ne!(second.device, first.device);

    // The old session is closed with REVOKED, and the client gives up.
    let code = expect(&mut eo, "REVOKED", |e| match e {
        Event::Fatal { code, .. } => Some(*code),
        _ => None,
    })
    .await;
    assert_eq!(code, common::proto::Code::Revoked);
    old.close().await;
    // Its credential no longer attaches, nor refreshes. The edge may
    // welcome the session before the home refuses the attach, so REVOKED
    // comes either as the refusal of the connect or as the session's end;
    // anything else (a session that lives, another error) fails.
    match Client::connect(d.client_config_with_token(&first.token, Transport::Tcp)).await {
        Ok((c, mut e)) => {
            let code = expect(&mut e, "REVOKED again", |e| match e {
                Event::Fatal { code, .. } => Some(*code),
                _ => None,
            })
            .await;
            assert_eq!(code, common::proto::Code::Revoked);
            c.close().await;
        }
        Err(common::client::ClientError::Refused { code, .. }) => {
            assert_eq!(code, common::proto::Code::Revoked);
        }
        Err(e) => panic!("the revoked credential: {e}"),
    }
    let e = rc.refresh(&first.token).await.unwrap_err();
    assert_eq!(refused(&e), (401, "revoked"));

    // The new device talks.
    let (new, mut en) = Client::connect(d.client_config_with_token(&second.token, Transport::Tcp))
        .await
        .unwrap();
    let id = new
        .send(&second.user, Bytes::from_static(b"note to self"))
        .await
        .unwrap();
    expect(&mut en, "Accepted", |e| match e {
        Event::Accepted { id: got, .. } if *got == id => Some(()),
        _ => None,
    })
    .await;
    new.close().await;
    node.service.stop().await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pin_lock_blocks_reregistration_and_counts_tries() {
    let d = Deployment::start().await;
    let node = d.start_register(NO_WAIT).await;
    let rc = d.register_client(&node);
    let number = "+15550000007";
    let first = sign_up(&rc, &node, number, "phone", None).await.unwrap();
    rc.set_pin(&first.token, "2580", None).await.unwrap();

    // Without the PIN: refused, the account untouched.
    let v = code_for(&rc, &node, number).await;
    let e = rc
        .verify(&Verify {
            device_name: Some("thief".into()),
            ..v.clone()
        })
        .await
        .unwrap_err();
    assert_eq!(refused(&e), (423, "pin_required"));
    rc.refresh(&first.token).await.unwrap();

    // The same code, now with PINs: two wrong, then the right one passes.
    let with_pin = |pin: &str| Verify {
        device_name: Some("new phone".into()),
        pin: Some(pin.into()),
        ..v.clone()
    };
    for left in [9, 8] {
        let e = rc.verify(&with_pin("0000")).await.unwrap_err();
        assert_eq!(refused(&e), (423, "pin_wrong"));
        let RegisterError::Refused { tries_left, .. } = e else {
            unreachable!()
        };
        assert_eq!(tries_left, Some(left));
    }
    let second = rc.verify(&with_pin("2580")).await.unwrap();
    assert_eq!(second.generation, 2);

    // The lock stays with the account; ten wrong PINs use up the budget,
    // after which even the right PIN must wait a day.
    let v = code_for(&rc, &node, number).await;
    let e = rc
        .verify(&Verify {
            device_name: Some("thief".into()),
            ..v.clone()
        })
        .await
        .unwrap_err();
    assert_eq!(refused(&e), (423, "pin_required"));
    let with_pin = |pin: &str| Verify {
        device_name: Some("thief".into()),
        pin: Some(pin.into()),
        ..v.clone()
    };
    // The right PIN above reset the count: the budget starts again at 10.
    for left in (0..10).rev() {
        let e = rc.verify(&with_pin("1111")).await.unwrap_err();
        assert_eq!(refused(&e), (423, "pin_wrong"), "{left} left");
        let RegisterError::Refused { tries_left, .. } = e else {
            unreachable!()
        };
        assert_eq!(tries_left, Some(left));
    }
    let e = rc.verify(&with_pin("2580")).await.unwrap_err();
    assert_eq!(refused(&e), (429, "pin_locked"));
    let RegisterError::Refused {
        retry_after_secs, ..
    } = e
    else {
        unreachable!()
    };
    let wait = retry_after_secs.unwrap();
    assert!((86_000..=86_400).contains(&wait), "{wait}");
    // The owner's device was never displaced.
    rc.refresh(&second.token).await.unwrap();
    node.service.stop().await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_documented_4xx_and_creates_nothing() {
    let d = Deployment::start().await;
    let node = d.start_register("").await;
    let rc = d.register_client(&node);
    let json = Some("application/json");
    // 1 MiB, 256 times the 4 KiB limit: the server reads it (up to 2 MiB)
    // before answering, so the client gets the 413 rather than a reset.
    let huge = Bytes::from(format!(
        r#"{{"number": "+15550000008", "pad": "{}"}}"#,
        "x".repeat(1 << 20)
    ));
    // (what, path, content type, body, status, error code)
    type Case<'a> = (&'a str, &'a str, Option<&'a str>, Bytes, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "malformed number",
            "/v1/codes",
            json,
            Bytes::from_static(br#"{"number": "555-0101"}"#),
            400,
            "bad_number",
        ),
        (
            "missing field",
            "/v1/codes",
            json,
            Bytes::from_static(br#"{"transport": "sms"}"#),
            400,
            "missing_field",
        ),
        ("huge body", "/v1/codes", json, huge, 413, "body_too_large"),
        (
            "wrong content type",
            "/v1/codes",
            Some("text/plain"),
            Bytes::from_static(br#"{"number": "+15550000008"}"#),
            415,
            "bad_content_type",
        ),
        (
            "no content type",
            "/v1/codes",
            None,
            Bytes::from_static(br#"{"number": "+15550000008"}"#),
            415,
            "bad_content_type",
        ),
        (
            "not JSON",
            "/v1/codes",
            json,
            Bytes::from_static(b"number=+15550000008"),
            400,
            "bad_json",
        ),
        (
            "wrong type",
            "/v1/codes",
            json,
            Bytes::from_static(br#"{"number": 15550000008}"#),
            400,
            "bad_field",
        ),
        (
            "unknown transport",
            "/v1/codes",
            json,
            Bytes::from_static(br#"{"number": "+15550000008", "transport": "pigeon"}"#),
            400,
            "bad_transport",
        ),
        (
            "verify without a code",
            "/v1/verify",
            json,
            Bytes::from_static(br#"{"number": "+15550000008", "device_name": "x"}"#),
            400,
            "missing_field",
        ),
        (
            "verify without a device",
            "/v1/verify",
            json,
            Bytes::from_static(br#"{"number": "+15550000008", "code": "123456"}"#),
            400,
            "missing_field",
        ),
        (
            "a code of letters",
            "/v1/verify",
            json,
            Bytes::from_static(
                br#"{"number": "+15550000008", "session": "00112233445566778899aabbccddeeff", "code": "12ab56", "device_name": "x"}"#,
            ),
            400,
            "bad_code",
        ),
        (
            "a session that is not 32 hex digits",
            "/v1/verify",
            json,
            Bytes::from_static(
                br#"{"number": "+15550000008", "session": "x", "code": "123456", "device_name": "x"}"#,
            ),
            400,
            "bad_session",
        ),
        (
            "a code never requested",
            "/v1/verify",
            json,
            Bytes::from_static(
                br#"{"number": "+15550000008", "session": "00112233445566778899aabbccddeeff", "code": "123456", "device_name": "x"}"#,
            ),
            404,
            "no_code",
        ),
        (
            "an unknown route",
            "/v1/nothing",
            json,
            Bytes::from_static(b"{}"),
            404,
            "not_found",
        ),
    ];
    for (what, path, ct, body, status, code) in cases {
        let a = rc.raw(Method::POST, path, ct, body, None).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&a.body)
            .unwrap_or_else(|_| panic!("{what}: body is not JSON: {:?}", a.body));
        assert_eq!(
            (a.status, v["error"].as_str().unwrap()),
            (status, code),
            "{what}"
        );
        assert!(
            v["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}"
        );
    }
    for (what, token) in [("no token", None), ("forged token", Some("v1.AAAA.BBBB"))] {
        let a = rc
            .raw(Method::GET, "/v1/devices", None, Bytes::new(), token)
            .await
            .unwrap();
        assert_eq!(a.status, 401, "{what}");
    }
    // Known routes, wrong method: 405 with the JSON body and Allow.
    for (method, path, allowed) in [
        (Method::GET, "/v1/codes", "POST"),
        (Method::PUT, "/v1/verify", "POST"),
        (Method::PATCH, "/v1/account", "DELETE"),
        (Method::POST, "/v1/devices/1", "DELETE"),
    ] {
        let a = rc
            .raw(method.clone(), path, json, Bytes::from_static(b"{}"), None)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&a.body)
            .unwrap_or_else(|_| panic!("{method} {path}: body is not JSON: {:?}", a.body));
        assert_eq!(
            (a.status, v["error"].as_str()),
            (405, Some("method_not_allowed")),
            "{method} {path}"
        );
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
        let allow = a.headers.get("allow").map(|h| h.to_str().unwrap());
        assert!(
            allow.is_some_and(|h| h.contains(allowed)),
            "{method} {path}: allow {allow:?}"
        );
    }
    assert_eq!(node.codes_sent(), 0, "no SMS went out");
    assert_eq!(indexed(&d, "+15550000008").await, 0, "no account");

    // A path parameter that is not a device id, with a valid credential.
    let me = sign_up(&rc, &node, "+15550000014", "phone", None)
        .await
        .unwrap();
    for path in [
        "/v1/devices/abc",
        "/v1/devices/-1",
        "/v1/devices/4294967296",
    ] {
        let a = rc
            .raw(Method::DELETE, path, None, Bytes::new(), Some(&me.token))
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&a.body)
            .unwrap_or_else(|_| panic!("{path}: body is not JSON: {:?}", a.body));
        assert_eq!(
            (a.status, v["error"].as_str()),
            (400, Some("bad_field")),
            "{path}"
        );
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // The account and its one device are untouched.
    assert_eq!(rc.devices(&me.token).await.unwrap().len(), 1);
    node.service.stop().await;
    d.stop().await;
}

/// The real binary: its log never holds a whole number, a code (but the
/// development provider's own line), a PIN or a token; SIGTERM exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_hold_no_secrets_and_sigterm_exits_zero() {
    let d = Deployment::start().await;
    let log = d.dir.path().join("wa-register.log");
    let mut p = d.spawn_register_process(NO_WAIT, &log).await;
    let rc = d.register_client_at(p.node_addr);
    let codes = d.register_codes();
    let code_of = |number: &str| {
        std::fs::read_to_string(&codes)
            .unwrap()
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix(&format!("{number} ")).map(String::from))
            .unwrap()
    };
    let number = "+15550000010";
    let verify = |session: &str, code: String, pin: Option<&str>| Verify {
        number: number.into(),
        session: session.into(),
        code,
        device_name: Some("phone".into()),
        pin: pin.map(String::from),
        ..Verify::default()
    };
    let s = rc.request_code(number).await.unwrap().session;
    let wrong = rc.verify(&verify(&s, "000000".into(), None)).await;
    let first = match wrong {
        Err(_) => rc.verify(&verify(&s, code_of(number), None)).await.unwrap(),
        // 000000 was the code itself.
        Ok(r) => r,
    };
    // PINs no log line can hold by chance: a 4-digit PIN turns up now and
    // then inside a timestamp's microseconds, a port or a hex user id.
    rc.set_pin(&first.token, "pin-8642-right", None)
        .await
        .unwrap();
    let s = rc.request_code(number).await.unwrap().session;
    let code = code_of(number);
    let e = rc
        .verify(&verify(&s, code.clone(), None))
        .await
        .unwrap_err();
    assert_eq!(refused(&e), (423, "pin_required"));
    let e = rc
        .verify(&verify(&s, code.clone(), Some("pin-1357-wrong")))
        .await
        .unwrap_err();
    assert_eq!(refused(&e), (423, "pin_wrong"));
    let second = rc
        .verify(&verify(&s, code, Some("pin-8642-right")))
        .await
        .unwrap();
    let third = rc.refresh(&second.token).await.unwrap();

    support::sigterm(&p.child);
    let st = tokio::time::timeout(support::PATIENCE, p.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(st.success(), "wa-register exited with {st}");

    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("+155******10"), "numbers are logged masked");
    for secret in [
        number,
        "pin-8642-right",
        "pin-1357-wrong",
        &first.token,
        &second.token,
        &third.token,
    ] {
        assert!(!text.contains(secret), "{secret:?} is in the log");
    }
    let sent = std::fs::read_to_string(&codes).unwrap();
    for line in sent.lines() {
        let code = line.split_once(' ').unwrap().1;
        for l in text.lines().filter(|l| l.contains(code)) {
            assert!(
                l.contains("development SMS written"),
                "a code outside the development provider's line: {l}"
            );
        }
    }
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_allow_list_and_test_numbers() {
    let d = Deployment::start().await;
    let node = d
        .start_register(
            r#"[codes]
resend_waits = ["1ns"]
[limits]
per_number = { count = 2, per = "1h" }
[countries]
allow = ["+1555", "+44"]
[[test_numbers]]
number = "+15550000099"
code = "424242"
"#,
        )
        .await;
    let rc = d.register_client(&node);
    // Outside the allow-list: refused, no SMS.
    let e = rc.request_code("+33612345678").await.unwrap_err();
    assert_eq!(refused(&e), (403, "prefix_not_allowed"));
    // The per-number limit, with the wait.
    rc.request_code("+15550000011").await.unwrap();
    rc.request_code("+15550000011").await.unwrap();
    let e = rc.request_code("+15550000011").await.unwrap_err();
    assert_eq!(refused(&e), (429, "rate_limited"));
    let RegisterError::Refused {
        retry_after_secs, ..
    } = e
    else {
        unreachable!()
    };
    assert!(retry_after_secs.unwrap() > 60);
    assert_eq!(node.codes_sent(), 2);
    // A test number: its fixed code, and no SMS.
    let sent = rc.request_code("+15550000099").await.unwrap();
    assert_eq!(node.codes_sent(), 2);
    let r = rc
        .verify(&Verify {
            number: "+15550000099".into(),
            session: sent.session,
            code: "424242".into(),
            device_name: Some("review".into()),
            ..Verify::default()
        })
        .await
        .unwrap();
    assert!(r.new_account);
    node.service.stop().await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linked_devices_removal_and_account_deletion() {
    let d = Deployment::start().await;
    let node = d.start_register(NO_WAIT).await;
    let rc = d.register_client(&node);
    let number = "+15550000012";
    let main = sign_up(&rc, &node, number, "phone", None).await.unwrap();
    let laptop = rc
        .link_device(&main.token, "laptop", Some("cHVi"))
        .await
        .unwrap();
    assert_eq!(laptop.device, 2);
    let devices = rc.devices(&laptop.token).await.unwrap();
    assert_eq!(devices.len(), 2);
    assert!(devices.iter().any(|d| d.id == 2 && d.current));
    // At most 8 devices: six more fit, the ninth is refused.
    for n in 3..=8 {
        let l = rc
            .link_device(&main.token, &format!("tablet {n}"), None)
            .await;
        assert_eq!(l.unwrap().device, n);
    }
    let e = rc
        .link_device(&main.token, "one too many", None)
        .await
        .unwrap_err();
    assert_eq!(refused(&e), (403, "too_many_devices"));
    assert_eq!(rc.devices(&main.token).await.unwrap().len(), 8);
    for n in 3..=8 {
        rc.remove_device(&main.token, n, None).await.unwrap();
    }

    // Removing the laptop closes its session with REVOKED.
    let (lc, mut le) = Client::connect(d.client_config_with_token(&laptop.token, Transport::Tcp))
        .await
        .unwrap();
    // (Removed before or after its attach: either way the home refuses it.)
    rc.remove_device(&main.token, 2, None).await.unwrap();
    let code = expect(&mut le, "REVOKED", |e| match e {
        Event::Fatal { code, .. } => Some(*code),
        _ => None,
    })
    .await;
    assert_eq!(code, common::proto::Code::Revoked);
    lc.close().await;
    let e = rc.refresh(&laptop.token).await.unwrap_err();
    assert_eq!(refused(&e), (401, "revoked"));
    let e = rc.remove_device(&main.token, 2, None).await.unwrap_err();
    assert_eq!(refused(&e), (404, "no_device"));

    // Deleting the account: its credential is dead, the number is free.
    rc.delete_account(&main.token, None).await.unwrap();
    let e = rc.refresh(&main.token).await.unwrap_err();
    assert_eq!(refused(&e), (401, "revoked"));
    let again = sign_up(&rc, &node, number, "phone", None).await.unwrap();
    assert!(again.new_account);
    assert_ne!(again.user, main.user);
    node.service.stop().await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pin_lock_lapses_when_the_account_is_not_seen() {
    let d = Deployment::start().await;
    let node = d
        .start_register(&format!("{NO_WAIT}[pin]\nlapse_after = \"1ns\"\n"))
        .await;
    let rc = d.register_client(&node);
    let number = "+15550000013";
    let first = sign_up(&rc, &node, number, "phone", None).await.unwrap();
    rc.set_pin(&first.token, "2580", None).await.unwrap();
    // Not seen for longer than lapse_after: the code alone is enough, and
    // the lock is gone for the new owner.
    let second = sign_up(&rc, &node, number, "new phone", None)
        .await
        .unwrap();
    assert_eq!(second.generation, 2);
    let third = sign_up(&rc, &node, number, "newer phone", None)
        .await
        .unwrap();
    assert_eq!(third.generation, 3);
    node.service.stop().await;
    d.stop().await;
}

/// The per-address, per-prefix and global limits, each alone with a count
/// of 2: the third code request gets `429 rate_limited` naming the limit,
/// with `Retry-After`, and no SMS goes out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_rate_limit_refuses_with_retry_after_and_sends_nothing() {
    let d = Deployment::start().await;
    // (limit, three numbers: the first two pass, the third is refused)
    let cases = [
        // One client address, numbers under different prefixes.
        (
            "per_address",
            "address",
            ["+15550000021", "+4930000021", "+33600000021"],
        ),
        // One prefix (+155501), different numbers.
        (
            "per_prefix",
            "prefix",
            ["+15550100001", "+15550100002", "+15550100003"],
        ),
        // Everything counts.
        (
            "global",
            "global",
            ["+15550200001", "+4930200001", "+33600200001"],
        ),
    ];
    for (key, limit, numbers) in cases {
        let node = d
            .start_register(&format!(
                "[limits]\n{key} = {{ count = 2, per = \"1h\" }}\n"
            ))
            .await;
        let rc = d.register_client(&node);
        let before = node.codes_sent();
        for n in &numbers[..2] {
            rc.request_code(n).await.unwrap();
        }
        assert_eq!(node.codes_sent(), before + 2, "{key}");
        let body = Bytes::from(format!(r#"{{"number": "{}"}}"#, numbers[2]));
        let a = rc
            .raw(
                Method::POST,
                "/v1/codes",
                Some("application/json"),
                body,
                None,
            )
            .await
            .unwrap();
        assert_eq!(a.status, 429, "{key}");
        let wait: u64 = a
            .headers
            .get("retry-after")
            .unwrap_or_else(|| panic!("{key}: no Retry-After"))
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        // Two per hour: the next request is allowed in about half an hour.
        assert!((60..=3600).contains(&wait), "{key}: {wait}");
        let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
        assert_eq!(v["error"], "rate_limited", "{key}");
        assert_eq!(v["retry_after_secs"], wait, "{key}");
        let message = v["message"].as_str().unwrap();
        assert!(message.contains(limit), "{key}: {message}");
        assert_eq!(node.codes_sent(), before + 2, "{key}: no SMS when refused");
        assert_eq!(node.last_code(numbers[2]), None, "{key}");
        node.service.stop().await;
    }
    d.stop().await;
}

/// The SMS-pumping signal against the real binary: with `min_sent = 3`, the
/// third unverified code under one prefix counts
/// `wa_register_pumping_suspected_total` on the admin listener and logs a
/// WARN line whose prefix leaves four digits of each number hidden beside
/// its masked form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sms_pumping_is_counted_and_logged_without_revealing_numbers() {
    let d = Deployment::start().await;
    let log = d.dir.path().join("wa-register.log");
    let extra = "[pumping]\nmin_sent = 3\n";
    let mut p = d.spawn_register_process(extra, &log).await;
    let admin = p.admin_addr.expect("READY names the admin listener");
    let rc = d.register_client_at(p.node_addr);
    let metric = "wa_register_pumping_suspected_total";
    // 11-digit numbers under the 6-digit prefix +155503.
    for n in ["+15550300001", "+15550300002"] {
        rc.request_code(n).await.unwrap();
    }
    assert_eq!(
        support::counter(
            &support::admin_get(d.dir.path(), admin, "/metrics").await,
            metric
        ),
        0
    );
    rc.request_code("+15550300003").await.unwrap();
    let page = support::admin_get(d.dir.path(), admin, "/metrics").await;
    assert_eq!(support::counter(&page, metric), 1);
    assert_eq!(support::counter(&page, "wa_register_codes_sent_total"), 3);
    // Once per window: more sends do not count again.
    rc.request_code("+15550300004").await.unwrap();
    assert_eq!(
        support::counter(
            &support::admin_get(d.dir.path(), admin, "/metrics").await,
            metric
        ),
        1
    );

    support::sigterm(&p.child);
    let st = tokio::time::timeout(support::PATIENCE, p.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(st.success(), "wa-register exited with {st}");
    let text = std::fs::read_to_string(&log).unwrap();
    let warn: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("possible SMS pumping"))
        .collect();
    assert_eq!(warn.len(), 1, "{text}");
    let line = warn[0];
    assert!(line.contains("WARN"), "{line}");
    assert!(
        line.contains("sent=3") && line.contains("verified=0"),
        "{line}"
    );
    // +155******01 and the prefix together: 11 digits, the prefix cut to
    // five so that four stay hidden.
    assert!(line.contains("prefix=+15550*"), "{line}");
    assert!(!text.contains("+155503"), "the whole prefix is in the log");
    d.stop().await;
}

/// Signing-key rotation: wa-register switches from k1 to k2 with k1 still
/// in `verify_keys`; a k1 token is refreshed into a k2 token, and wa-chat
/// (trusting both) attaches either. Without k1 in `verify_keys` the old
/// token cannot be refreshed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_refreshes_old_tokens_and_chat_takes_both() {
    let d = Deployment::start_rotating().await;
    let now = support::now_secs();
    let old_node = d.start_register("").await;
    let rc = d.register_client(&old_node);
    let alice = sign_up(&rc, &old_node, "+15550000015", "phone", None)
        .await
        .unwrap();
    let c1 = d.key_ring(&["k1"]).verify(&alice.token, now).unwrap();
    assert_eq!(c1.key_id, "k1");
    old_node.service.stop().await;

    let node = d.start_register_signing("k2", &["k1"], "").await;
    let rc = d.register_client(&node);
    // The k1 token still works here, for refresh and the other routes.
    assert_eq!(rc.devices(&alice.token).await.unwrap().len(), 1);
    let fresh = rc.refresh(&alice.token).await.unwrap();
    assert!(
        d.key_ring(&["k1"]).verify(&fresh.token, now).is_err(),
        "not signed with k1"
    );
    let c2 = d.key_ring(&["k2"]).verify(&fresh.token, now).unwrap();
    assert_eq!(c2.key_id, "k2");
    assert_eq!(
        (c2.user.as_str(), c2.device, c2.generation),
        (c1.user.as_str(), c1.device, c1.generation)
    );
    rc.devices(&fresh.token).await.unwrap();

    // wa-chat takes both until they expire: each attaches and sends.
    for (what, token) in [("k1", &alice.token), ("k2", &fresh.token)] {
        let (c, mut e) = Client::connect(d.client_config_with_token(token, Transport::Tcp))
            .await
            .unwrap_or_else(|err| panic!("{what} token: {err}"));
        let id = c
            .send(&alice.user, Bytes::from(format!("note signed by {what}")))
            .await
            .unwrap();
        // (The note to self comes back too, to this session or the next.)
        while !expect(&mut e, "Accepted", |e| match e {
            Event::Accepted { id: got, .. } if *got == id => Some(true),
            Event::Message { .. } | Event::Receipt { .. } => Some(false),
            _ => None,
        })
        .await
        {}
        c.close().await;
    }
    node.service.stop().await;

    // Once k1 is out of verify_keys, its tokens are not refreshed.
    let node = d.start_register_signing("k2", &[], "").await;
    let rc = d.register_client(&node);
    let e = rc.refresh(&alice.token).await.unwrap_err();
    assert_eq!(refused(&e), (401, "token_invalid"));
    rc.refresh(&fresh.token).await.unwrap();
    node.service.stop().await;
    d.stop().await;
}
