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
