//! The HTTP API against a running node (docs/MEDIA.md): round trips, ranges,
//! dedupe, interrupted and oversize uploads, authentication, expiry, delete,
//! limits and path traversal.

mod support;

use sha2::{Digest, Sha256};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn sha_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

#[tokio::test]
async fn upload_then_download_gives_the_same_bytes_and_sha256() {
    let node = start("").await;
    let alice = node.client("alice");
    let bob = node.client("bob");
    // One blob served from memory (<= 1 MiB), one streamed from its file.
    for n in [1, 300 * 1024, 3 * 1024 * 1024 + 7] {
        let data = random_bytes(n);
        let r = alice
            .upload(data.clone().into(), Some("image/png"))
            .await
            .unwrap();
        assert_eq!(r.size, n as u64);
        assert_eq!(hex::encode(r.sha256), sha_hex(&data));
        assert_eq!(r.handle, format!("m1-{}", sha_hex(&data)));
        assert_eq!(r.mime, "image/png");
        assert!(!r.existed);
        let got = bob.download(&r.handle).await.unwrap();
        assert_eq!(got.len(), n);
        assert_eq!(sha_hex(&got), sha_hex(&data));
        assert!(got == data, "same bytes");

        let head = node
            .get("HEAD", &format!("/v1/media/{}", r.handle), "bob", &[])
            .await;
        assert_eq!(head.status, 200);
        assert_eq!(head.header("content-length"), Some(n.to_string().as_str()));
        assert_eq!(head.header("content-type"), Some("image/png"));
        assert_eq!(head.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(head.header("accept-ranges"), Some("bytes"));
        let etag = format!("\"{}\"", sha_hex(&data));
        assert_eq!(head.header("etag"), Some(etag.as_str()));
        let cc = head.header("cache-control").unwrap();
        assert!(cc.contains("immutable") && cc.contains("max-age="), "{cc}");
        assert!(head.body.is_empty());

        let again = node
            .get(
                "GET",
                &format!("/v1/media/{}", r.handle),
                "bob",
                &[&format!("If-None-Match: {etag}")],
            )
            .await;
        assert_eq!(again.status, 304);
    }
    // A type off the allow-list is served as bytes, never as a page.
    let r = alice
        .upload(
            b"<script>alert(1)</script>".to_vec().into(),
            Some("text/html"),
        )
        .await
        .unwrap();
    assert_eq!(r.mime, "application/octet-stream");
    let a = node
        .get("GET", &format!("/v1/media/{}", r.handle), "bob", &[])
        .await;
    assert_eq!(a.header("content-type"), Some("application/octet-stream"));
    assert_eq!(a.header("x-content-type-options"), Some("nosniff"));
    node.stop().await;
}

#[tokio::test]
async fn range_requests() {
    let node = start("").await;
    let alice = node.client("alice");
    for n in [1000usize, 2 * 1024 * 1024] {
        let data = random_bytes(n);
        let h = alice
            .upload(data.clone().into(), None)
            .await
            .unwrap()
            .handle;
        let path = format!("/v1/media/{h}");
        for (range, start, end) in [
            ("bytes=0-9", 0, 9),
            ("bytes=100-199", 100, 199),
            ("bytes=-50", n - 50, n - 1),
            ("bytes=500-", 500, n - 1),
            (&format!("bytes={}-{}", n - 3, n + 100), n - 3, n - 1),
        ] {
            let a = node
                .get("GET", &path, "bob", &[&format!("Range: {range}")])
                .await;
            assert_eq!(a.status, 206, "{range}");
            let want = format!("bytes {start}-{end}/{n}");
            assert_eq!(a.header("content-range"), Some(want.as_str()), "{range}");
            assert!(a.body == data[start..=end], "{range} body");
        }
        for range in [
            format!("bytes={n}-"),
            format!("bytes={}-{}", n + 5, n + 9),
            "bytes=5-2".into(),
            "bytes=-0".into(),
            "bytes=abc".into(),
        ] {
            let a = node
                .get("GET", &path, "bob", &[&format!("Range: {range}")])
                .await;
            assert_eq!(a.status, 416, "{range}");
            let want = format!("bytes */{n}");
            assert_eq!(a.header("content-range"), Some(want.as_str()));
            assert_eq!(a.code(), "range_not_satisfiable");
        }
        // Several ranges, or another unit: the whole blob.
        let a = node
            .get("GET", &path, "bob", &["Range: bytes=0-1,5-6"])
            .await;
        assert_eq!(a.status, 200);
        assert_eq!(a.body.len(), n);
    }
    node.stop().await;
}

#[tokio::test]
async fn identical_uploads_are_stored_once() {
    let node = start("").await;
    let data = random_bytes(200_000);
    let a = node
        .client("alice")
        .upload(data.clone().into(), None)
        .await
        .unwrap();
    let b = node
        .client("bob")
        .upload(data.clone().into(), None)
        .await
        .unwrap();
    assert_eq!(a.handle, b.handle);
    assert!(!a.existed && b.existed);
    let (blobs, tmp) = node.files();
    let hex = sha_hex(&data);
    let bodies: Vec<_> = blobs
        .iter()
        .filter(|p| p.file_name().unwrap().to_str() == Some(hex.as_str()))
        .collect();
    assert_eq!(bodies.len(), 1, "{blobs:?}");
    assert_eq!(blobs.len(), 2, "one blob and its metadata: {blobs:?}");
    assert!(tmp.is_empty(), "{tmp:?}");
    node.stop().await;
}

#[tokio::test]
async fn an_interrupted_upload_leaves_nothing_behind() {
    let node = start("").await;
    let mut tls = node.connect().await;
    let head = format!(
        "POST /v1/media HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\n\r\n",
        node.token("alice"),
        4 * 1024 * 1024
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(&random_bytes(512 * 1024)).await.unwrap();
    tls.flush().await.unwrap();
    // The partial upload is on disk, in tmp/ ...
    eventually("the upload is being written", || !node.files().1.is_empty()).await;
    // ... until the client goes away.
    drop(tls);
    eventually("the partial upload is removed", || {
        node.files().1.is_empty()
    })
    .await;
    assert!(node.files().0.is_empty(), "{:?}", node.files().0);
    // The node still works.
    let r = node
        .client("alice")
        .upload(vec![1, 2, 3].into(), None)
        .await;
    assert!(r.is_ok(), "{r:?}");
    node.stop().await;
}

#[tokio::test]
async fn oversize_uploads_get_413() {
    let node = start("[limits]\nmax_blob_size = \"1 MiB\"\nquota_per_day = \"1 GiB\"\n").await;
    let alice = node.client("alice");
    // Announced too large: refused before the body is read.
    let e = alice
        .upload(random_bytes(1024 * 1024 + 1).into(), None)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(413), "{e}");
    // Exactly the limit is fine.
    alice
        .upload(random_bytes(1024 * 1024).into(), None)
        .await
        .unwrap();
    // Not announced (chunked): cut off once it passes the limit.
    let mut tls = node.connect().await;
    let head = format!(
        "POST /v1/media HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nTransfer-Encoding: chunked\r\n\r\n",
        node.token("alice")
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    let chunk = random_bytes(64 * 1024);
    for _ in 0..40 {
        let mut c = format!("{:x}\r\n", chunk.len()).into_bytes();
        c.extend_from_slice(&chunk);
        c.extend_from_slice(b"\r\n");
        if tls.write_all(&c).await.is_err() {
            break; // the node answered and closed
        }
    }
    let _ = tls.write_all(b"0\r\n\r\n").await;
    let a = read_answer(&mut tls).await;
    assert_eq!(a.status, 413);
    assert_eq!(a.code(), "too_large");
    eventually("no partial upload is left", || node.files().1.is_empty()).await;
    assert_eq!(
        node.files().0.len(),
        2,
        "only the 1 MiB blob and its metadata"
    );
    node.stop().await;
}

#[tokio::test]
async fn no_token_or_a_forged_token_gets_401() {
    let node = start("").await;
    let h = node
        .client("alice")
        .upload(vec![9; 100].into(), None)
        .await
        .unwrap()
        .handle;
    let forger = common::token::TokenSigner::new(
        "k1",
        ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>()),
    );
    let forged = forger.sign(common::token::TokenClaims {
        user: "mallory".into(),
        device: 1,
        generation: 1,
        expires_at: now_secs() + 3600,
        key_id: String::new(),
        issued_at: now_secs(),
        account: String::new(),
    });
    let expired = node.token_expiring("alice", now_secs() - 1);
    let get = format!("GET /v1/media/{h} HTTP/1.1");
    let post = "POST /v1/media HTTP/1.1\r\nContent-Length: 3".to_string();
    for (auth, code) in [
        (String::new(), "no_token"),
        (
            format!("\r\nAuthorization: Bearer {forged}"),
            "token_invalid",
        ),
        (
            "\r\nAuthorization: Bearer v1.garbage".into(),
            "token_invalid",
        ),
        (format!("\r\nAuthorization: Basic {forged}"), "no_token"),
        (
            format!("\r\nAuthorization: Bearer {expired}"),
            "token_expired",
        ),
    ] {
        for (req, body) in [(&get, &b""[..]), (&post, &b"abc"[..])] {
            let a = node.raw(&format!("{req}{auth}"), body).await;
            assert_eq!(a.status, 401, "{req} {code}");
            assert_eq!(a.code(), code);
            assert_eq!(a.header("www-authenticate"), Some("Bearer"));
        }
    }
    assert_eq!(
        node.files().0.len(),
        2,
        "nothing was stored by the refused uploads"
    );
    node.stop().await;
}

#[tokio::test]
async fn expired_blobs_answer_410_then_404() {
    let node = start(
        "[expiry]\nexpire_after = \"1s\"\nremember_gone = \"2s\"\nsweep_interval = \"100ms\"\n",
    )
    .await;
    let r = node
        .client("alice")
        .upload(random_bytes(5000).into(), None)
        .await
        .unwrap();
    let path = format!("/v1/media/{}", r.handle);
    let body = node
        .data()
        .join("blobs")
        .join(&r.handle[3..5])
        .join(&r.handle[3..]);
    assert!(body.exists());
    eventually("the sweeper deletes the expired blob", || !body.exists()).await;
    let a = node.get("GET", &path, "bob", &[]).await;
    assert_eq!(a.status, 410);
    assert_eq!(a.code(), "gone");
    let e = node.client("bob").download(&r.handle).await.unwrap_err();
    assert_eq!(e.status(), Some(410));
    // After remember_gone the handle is simply unknown.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let a = node.get("GET", &path, "bob", &[]).await;
        if a.status == 404 {
            assert_eq!(a.code(), "not_found");
            break;
        }
        assert_eq!(a.status, 410);
        assert!(tokio::time::Instant::now() < deadline, "never forgotten");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(node.files().0.is_empty(), "{:?}", node.files().0);
    node.stop().await;
}

#[tokio::test]
async fn path_traversal_is_refused_and_touches_nothing() {
    let node = start("").await;
    let outside = node.dir.path().join("secret.txt");
    std::fs::write(&outside, b"keep me").unwrap();
    let hex = "ab".repeat(32);
    for (method, path, status) in [
        ("GET", "/v1/media/..%2F..%2Fsecret.txt", 400),
        ("GET", "/v1/media/%2e%2e%2fsecret.txt", 400),
        ("GET", "/v1/media/../../secret.txt", 404),
        ("GET", "/v1/media/..", 400),
        ("GET", &format!("/v1/media/m1-..%2F..%2F{}", &hex[6..]), 400),
        ("GET", &format!("/v1/media/m1-{}%00", &hex[..63]), 400),
        ("GET", &format!("/v1/media/m1-{}", hex.to_uppercase()), 400),
        (
            "GET",
            &format!("/v1/media/m1-{hex}/..%2F..%2Fsecret.txt"),
            404,
        ),
        ("DELETE", "/v1/media/..%2F..%2Fsecret.txt", 400),
        ("DELETE", "/v1/media/m1-..%2F..%2Fdata", 400),
        ("GET", &format!("/v1/media/m1-{hex}"), 404),
        ("GET", &format!("/v1/media/m2-{hex}"), 421),
    ] {
        let a = node.get(method, path, "alice", &[]).await;
        assert_eq!(a.status, status, "{method} {path}");
        a.code();
    }
    assert_eq!(std::fs::read(&outside).unwrap(), b"keep me");
    assert!(node.files().0.is_empty());
    node.stop().await;
}

#[tokio::test]
async fn only_uploaders_delete_and_the_blob_goes_with_the_last() {
    let node = start("").await;
    let data = random_bytes(10_000);
    let (alice, bob, carol) = (
        node.client("alice"),
        node.client("bob"),
        node.client("carol"),
    );
    let h = alice
        .upload(data.clone().into(), None)
        .await
        .unwrap()
        .handle;
    bob.upload(data.clone().into(), None).await.unwrap();
    let e = carol.delete(&h).await.unwrap_err();
    assert_eq!(e.status(), Some(403));
    alice.delete(&h).await.unwrap();
    assert_eq!(carol.download(&h).await.unwrap(), data, "bob still has it");
    bob.delete(&h).await.unwrap();
    let e = carol.download(&h).await.unwrap_err();
    assert_eq!(e.status(), Some(410));
    assert_eq!(node.files().0.len(), 1, "only the tombstone");
    node.stop().await;
}

#[tokio::test]
async fn upload_rate_and_quota_get_429_with_retry_after() {
    let node = start(
        "[limits]\nuploads_per_minute = 2\nmax_blob_size = \"100 KiB\"\nquota_per_day = \"150 KiB\"\n",
    )
    .await;
    let alice = node.client("alice");
    alice
        .upload(random_bytes(100 * 1024).into(), None)
        .await
        .unwrap();
    // Within the rate, beyond the quota.
    let e = alice
        .upload(random_bytes(60 * 1024).into(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, common::client::MediaError::Refused { status: 429, code, .. } if code == "quota_exceeded"),
        "{e}"
    );
    alice.upload(random_bytes(10).into(), None).await.unwrap();
    // Beyond the rate.
    let post = format!(
        "POST /v1/media HTTP/1.1\r\nAuthorization: Bearer {}\r\nContent-Length: 1",
        node.token("alice")
    );
    let a = node.raw(&post, b"x").await;
    assert_eq!(a.status, 429);
    assert_eq!(a.code(), "rate_limited");
    let secs: u64 = a.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&secs), "{secs}");
    // Another user is not affected.
    node.client("bob")
        .upload(vec![1].into(), None)
        .await
        .unwrap();
    node.stop().await;
}

#[tokio::test]
async fn shutdown_stops_accepting_and_lets_an_upload_in_flight_finish() {
    let node = start("").await;
    let data = random_bytes(1024 * 1024);
    let mut tls = node.connect().await;
    let head = format!(
        "POST /v1/media HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        node.token("alice"),
        data.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(&data[..512 * 1024]).await.unwrap();
    tls.flush().await.unwrap();
    eventually("the upload is being written", || !node.files().1.is_empty()).await;

    node.begin_stop();
    let addr = node.addr;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "still accepting");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tls.write_all(&data[512 * 1024..]).await.unwrap();
    tls.flush().await.unwrap();
    let a = read_answer(&mut tls).await;
    assert_eq!(a.status, 201, "{}", String::from_utf8_lossy(&a.body));
    let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(v["sha256"], sha_hex(&data));
    let blobs = node.files().0;
    node.stop().await;
    assert_eq!(blobs.len(), 2, "the blob and its metadata: {blobs:?}");
}

/// Finding 5: the 30 s stall timer restarted on every byte, so one byte per
/// 20 s held an upload slot forever (64 users × 4 slots made every upload of
/// the node `429 busy`). Now an upload has a total deadline and a minimum
/// average rate: a trickled upload is cut (408) at its deadline, and its
/// slot is free again at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_upload_is_cut_at_its_deadline_and_frees_its_slot() {
    let node = start("[limits]\nmax_concurrent_uploads = 1\nupload_deadline = \"2s\"\n").await;
    let mut tls = node.connect().await;
    let head = format!(
        "POST /v1/media HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nContent-Length: 100000\r\nConnection: close\r\n\r\n",
        node.token("slowpoke")
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(b"x").await.unwrap();
    tls.flush().await.unwrap();
    let (mut rd, mut wr) = tokio::io::split(tls);
    let started = std::time::Instant::now();
    // One byte every 200 ms, until the node stops taking them.
    let trickle = tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
        loop {
            tick.tick().await;
            if wr.write_all(b"x").await.is_err() || wr.flush().await.is_err() {
                return;
            }
        }
    });
    // While it trickles, it holds the node's only slot (once the node has
    // read its head: until then another upload may still pass).
    let someone = node.client("someone");
    loop {
        match someone
            .upload(bytes::Bytes::from_static(b"hello"), None)
            .await
        {
            Ok(_) => assert!(started.elapsed() < std::time::Duration::from_secs(1)),
            Err(e) => {
                assert_eq!(e.status(), Some(429), "{e}");
                break;
            }
        }
    }
    // The node cuts it at its deadline: it answers 408 and closes (the
    // client, still sending, may see the close as a reset that swallows the
    // answer; the close is what matters).
    let mut got = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = rd.read(&mut buf).await {
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("the node closes the trickled upload");
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&got);
    assert!(got.is_empty() || text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(
        took < std::time::Duration::from_millis(3500),
        "cut after {took:?}, the deadline is 2 s"
    );
    trickle.abort();
    // ...and the slot is free again.
    node.client("someone")
        .upload(bytes::Bytes::from_static(b"hello"), None)
        .await
        .unwrap();
    node.stop().await;
}
