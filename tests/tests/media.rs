//! Media end to end with the real wa-store, wa-chat and wa-media: A uploads a
//! blob, sends a media message through wa-chat, B receives it, downloads the
//! blob from the node its handle names and checks its SHA-256; A gets its
//! ticks as for any message.

mod support;

use bytes::Bytes;
use common::client::{Event, Transport};
use common::proto::ReceiptKind;
use sha2::{Digest, Sha256};
use support::*;

#[tokio::test]
async fn a_uploads_sends_the_reference_b_downloads_and_verifies() {
    let d = Deployment::start().await;
    let media = d.start_media().await;
    let (a, mut ea) = d.client("alice", Transport::Tcp).await;
    let (b, mut eb) = d.client("bob", Transport::Quic).await;

    let photo: Vec<u8> = (0..3 * 1024 * 1024 + 11)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let sha: [u8; 32] = Sha256::digest(&photo).into();
    let up = d
        .media_client("alice", &media)
        .upload(Bytes::from(photo.clone()), Some("image/jpeg"))
        .await
        .expect("upload");
    assert_eq!(up.sha256, sha);
    let thumb = Bytes::from_static(b"\xff\xd8\xff tiny jpeg");
    let id = a
        .send_media("bob", up.to_media(thumb.clone()))
        .await
        .unwrap();
    expect(&mut ea, "Accepted", |e| match e {
        Event::Accepted { id: got, .. } if *got == id => Some(()),
        _ => None,
    })
    .await;

    let (seq, m) = expect(&mut eb, "the media message", |e| match e {
        Event::Message {
            seq,
            from,
            id: got,
            media: Some(m),
            ..
        } if from == "alice" && *got == id => Some((*seq, m.clone())),
        _ => None,
    })
    .await;
    assert_eq!(m.handle, up.handle);
    assert_eq!(m.size, photo.len() as u64);
    assert_eq!(m.mime, "image/jpeg");
    assert_eq!(m.thumbnail, thumb);
    assert_eq!(&m.sha256[..], &sha[..]);
    let got = d
        .media_client("bob", &media)
        .download(&m.handle)
        .await
        .expect("download");
    let got_sha: [u8; 32] = Sha256::digest(&got).into();
    assert_eq!(&got_sha[..], &m.sha256[..], "B verifies the SHA-256");
    assert!(got == photo);
    b.ack(&[seq]).await.unwrap();

    // A media message is a message: it gets a delivered receipt.
    expect(&mut ea, "the delivered receipt", |e| match e {
        Event::Receipt {
            kind: ReceiptKind::Delivered,
            ids,
            ..
        } if ids.contains(&id) => Some(()),
        _ => None,
    })
    .await;

    // The library refuses a malformed reference before sending it (the edge
    // checks the same rules and answers BAD_MEDIA).
    let mut bad = up.to_media(Bytes::new());
    bad.sha256 = Bytes::from_static(&[0; 32]);
    assert!(
        a.send_media("bob", bad).await.is_err(),
        "the library checks too"
    );

    a.close().await;
    b.close().await;
    media.service.stop().await;
    d.stop().await;
}

/// The edge refuses malformed references with BAD_MEDIA (kept connection,
/// the SendMedia id echoed) and oversize ones with BODY_TOO_LARGE; nothing
/// reaches the recipient.
#[tokio::test]
async fn the_edge_checks_media_references() {
    use common::proto::limits::{MAX_BODY, MAX_FRAME};
    use common::proto::{
        ClientFrame, Code, Hello, Media, SendMedia, client_frame, frame, server_frame,
    };
    use common::wire::FrameReader;
    use tokio::io::AsyncWriteExt;

    let d = Deployment::start().await;
    let mut tls = common::client::raw::connect_tls(d.chat_tcp, "localhost", &d.roots)
        .await
        .unwrap();
    let enc = |k| frame::to_bytes(&ClientFrame { kind: Some(k) });
    tls.write_all(&enc(client_frame::Kind::Hello(Hello {
        token: d.token("alice"),
        client: "media-test".into(),
    })))
    .await
    .unwrap();
    let mut r = FrameReader::new(tls, MAX_FRAME);
    assert!(matches!(
        next_kind(&mut r).await,
        server_frame::Kind::Welcome(_)
    ));

    let sha = [7u8; 32];
    let good = Media {
        handle: format!("m1-{}", "07".repeat(32)),
        size: 10,
        sha256: Bytes::copy_from_slice(&sha),
        mime: "image/png".into(),
        thumbnail: Bytes::new(),
        opaque: Bytes::new(),
    };
    let cases: Vec<(Option<Media>, Code)> = vec![
        (None, Code::BadMedia),
        (
            Some(Media {
                handle: "../../etc/passwd".into(),
                ..good.clone()
            }),
            Code::BadMedia,
        ),
        (
            Some(Media {
                sha256: Bytes::from_static(&[8; 32]),
                ..good.clone()
            }),
            Code::BadMedia,
        ),
        (
            Some(Media {
                size: 0,
                ..good.clone()
            }),
            Code::BadMedia,
        ),
        (
            Some(Media {
                thumbnail: Bytes::from(vec![0; MAX_BODY]),
                ..good.clone()
            }),
            Code::BodyTooLarge,
        ),
    ];
    for (i, (media, code)) in cases.into_iter().enumerate() {
        let id = Bytes::from(vec![i as u8 + 1; 16]);
        r.get_mut()
            .write_all(&enc(client_frame::Kind::SendMedia(SendMedia {
                id: id.clone(),
                to: "bob".into(),
                media: media.map(Box::new),
            })))
            .await
            .unwrap();
        match next_kind(&mut r).await {
            server_frame::Kind::Error(e) => {
                assert_eq!(Code::from_u32(e.code), Some(code), "case {i}: {e:?}");
                assert_eq!(e.id, id, "case {i}");
                assert!(!e.fatal, "case {i}");
            }
            other => panic!("case {i}: expected an error, got {other:?}"),
        }
    }
    // A well-formed reference is accepted (the edge does not ask wa-media).
    let id = Bytes::from(vec![99; 16]);
    r.get_mut()
        .write_all(&enc(client_frame::Kind::SendMedia(SendMedia {
            id: id.clone(),
            to: "bob".into(),
            media: Some(Box::new(good)),
        })))
        .await
        .unwrap();
    match next_kind(&mut r).await {
        server_frame::Kind::Accepted(a) => assert_eq!(a.id, id),
        other => panic!("expected Accepted, got {other:?}"),
    }
    let (_b, mut eb) = d.client("bob", Transport::Tcp).await;
    let m = expect(&mut eb, "the one valid media message", |e| match e {
        Event::Message { media: Some(m), .. } => Some(m.clone()),
        _ => None,
    })
    .await;
    assert_eq!(m.mime, "image/png");
    d.stop().await;
}

/// The next frame from the edge that is not presence.
async fn next_kind<R: tokio::io::AsyncRead + Unpin>(
    r: &mut common::wire::FrameReader<R>,
) -> common::proto::server_frame::Kind {
    use common::proto::{ServerFrame, server_frame};
    loop {
        let f = tokio::time::timeout(PATIENCE, r.read::<ServerFrame>())
            .await
            .expect("an answer within patience")
            .unwrap()
            .expect("the connection stays open");
        match f.kind {
            Some(server_frame::Kind::Presence(_)) => {}
            Some(k) => return k,
            None => panic!("frame without kind"),
        }
    }
}

/// Waits that let a number ask again at once, for tests that register twice.
const NO_WAIT: &str = "[codes]\nresend_waits = [\"1ns\"]\n";

fn refused(e: &common::client::MediaError) -> (u16, &str) {
    match e {
        common::client::MediaError::Refused { status, code, .. } => (*status, code.as_str()),
        other => panic!("expected a refusal, got {other}"),
    }
}

/// Polls `attempt` (a media request of a just-revoked credential) until
/// wa-media refuses it with `401 revoked`, failing if that takes longer
/// than the documented bound (`revocation.recheck_after`, plus a second for
/// the home's answer and the requests themselves).
async fn refused_within_the_bound<F, Fut>(what: &str, mut attempt: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), common::client::MediaError>>,
{
    let bound = MEDIA_RECHECK + std::time::Duration::from_secs(1);
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        match attempt().await {
            Err(e) if refused(&e) == (401, "revoked") => return,
            other => assert!(
                tokio::time::Instant::now() < deadline,
                "{what} still not refused {bound:?} after the revocation: {other:?}"
            ),
        }
        // (Pacing between attempts, not a readiness wait: the bound is the
        // deadline above.)
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Finding 2: tokens of an old registration, a removed device or a deleted
/// account still uploaded (201) and downloaded (200) until they expired.
/// Now wa-media asks the user's home and refuses them within
/// `revocation.recheck_after`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_refuses_revoked_devices_and_deleted_accounts_within_the_bound() {
    let d = Deployment::start().await;
    let node = d.start_register(NO_WAIT).await;
    let rc = d.register_client(&node);
    let media = d.start_media().await;
    let owner = sign_up(&rc, &node, "+15550003001", "phone", None)
        .await
        .unwrap();
    let laptop = rc.link_device(&owner.token, "laptop", None).await.unwrap();
    let blob = Bytes::from_static(b"\xff\xd8\xff a photo");
    let up = d
        .media_client_with_token(&owner.token, &media)
        .upload(blob.clone(), Some("image/jpeg"))
        .await
        .unwrap();

    // A removed device.
    let lm = d.media_client_with_token(&laptop.token, &media);
    lm.download(&up.handle).await.unwrap();
    rc.remove_device(&owner.token, laptop.device, None)
        .await
        .unwrap();
    refused_within_the_bound("a removed device's download", || async {
        lm.download(&up.handle).await.map(|_| ())
    })
    .await;
    let e = lm.upload(blob.clone(), None).await.unwrap_err();
    assert_eq!(refused(&e), (401, "revoked"));

    // An old registration (the number registered again elsewhere).
    let om = d.media_client_with_token(&owner.token, &media);
    om.download(&up.handle).await.unwrap();
    let again = sign_up(&rc, &node, "+15550003001", "new phone", None)
        .await
        .unwrap();
    refused_within_the_bound("an old registration's upload", || async {
        om.upload(blob.clone(), None).await.map(|_| ())
    })
    .await;

    // A deleted account.
    let am = d.media_client_with_token(&again.token, &media);
    am.download(&up.handle).await.unwrap();
    rc.delete_account(&again.token, None).await.unwrap();
    refused_within_the_bound("a deleted account's download", || async {
        am.download(&up.handle).await.map(|_| ())
    })
    .await;
    media.service.stop().await;
    node.service.stop().await;
    d.stop().await;
}

/// Finding 6: deleting the account and registering the number again gave
/// a fresh user id with fresh upload limits. Now limits count per phone
/// number (the token's `account` claim), so the new user id inherits them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_user_id_for_the_same_number_keeps_its_upload_limits() {
    let d = Deployment::start().await;
    let node = d.start_register(NO_WAIT).await;
    let rc = d.register_client(&node);
    let media = d
        .start_media_with("[limits]\nuploads_per_minute = 2\n")
        .await;
    let number = "+15550003002";
    let first = sign_up(&rc, &node, number, "phone", None).await.unwrap();
    let m = d.media_client_with_token(&first.token, &media);
    for n in 0..2u8 {
        m.upload(Bytes::from(vec![n; 10]), None).await.unwrap();
    }
    let e = m.upload(Bytes::from(vec![2; 10]), None).await.unwrap_err();
    assert_eq!(refused(&e), (429, "rate_limited"));

    rc.delete_account(&first.token, None).await.unwrap();
    let second = sign_up(&rc, &node, number, "phone", None).await.unwrap();
    assert!(second.new_account);
    assert_ne!(second.user, first.user);
    let e = d
        .media_client_with_token(&second.token, &media)
        .upload(Bytes::from(vec![3; 10]), None)
        .await
        .unwrap_err();
    assert_eq!(
        refused(&e),
        (429, "rate_limited"),
        "the number's limit holds"
    );
    // Another number is not affected.
    let other = sign_up(&rc, &node, "+15550003003", "phone", None)
        .await
        .unwrap();
    d.media_client_with_token(&other.token, &media)
        .upload(Bytes::from(vec![4; 10]), None)
        .await
        .unwrap();
    media.service.stop().await;
    node.service.stop().await;
    d.stop().await;
}
