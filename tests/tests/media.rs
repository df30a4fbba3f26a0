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
