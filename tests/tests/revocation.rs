//! Revocation holds everywhere (issue 20): the attacks of a revoked or
//! removed device, performed end to end against real wa-store, wa-chat and
//! wa-register on port 0, each of which must now do no harm.

mod support;

use bytes::Bytes;
use common::client::{Client, Event, RegisterError, Transport};
use common::proto::{
    ClientFrame, Code, Hello, Send, ServerFrame, client_frame, frame, server_frame,
};
use common::wire::FrameReader;
use support::{Deployment, PATIENCE, expect, sign_up};
use tokio::io::AsyncWriteExt;

/// Waits that let a number ask again at once, for tests that register twice.
const NO_WAIT: &str = "[codes]\nresend_waits = [\"1ns\"]\n";
/// Sends each attacking connection pipelines behind its `Hello`.
const PIPELINED: u8 = 50;
/// Attacking connections at once.
const CONNECTIONS: u8 = 3;

/// One connection of `token`'s device that writes `Hello` and, in the same
/// write, [`PIPELINED`] sends to `to`, before reading anything; returns the
/// first frame the edge answers with and how many `Accepted` came.
async fn pipelined_attack(
    addr: std::net::SocketAddr,
    roots: Vec<rustls_pki_types::CertificateDer<'static>>,
    token: String,
    to: String,
    tag: u8,
) -> (server_frame::Kind, usize) {
    let mut tls = common::client::raw::connect_tls(addr, "localhost", &roots)
        .await
        .expect("TLS connect");
    let mut bytes = frame::to_bytes(&ClientFrame {
        kind: Some(client_frame::Kind::Hello(Hello {
            token,
            client: "attacker".into(),
        })),
    });
    for n in 0..PIPELINED {
        let mut id = [tag; 16];
        id[15] = n;
        bytes.extend_from_slice(&frame::to_bytes(&ClientFrame {
            kind: Some(client_frame::Kind::Send(Send {
                id: Bytes::copy_from_slice(&id),
                to: to.clone(),
                body: Bytes::from_static(b"sent from a revoked device"),
            })),
        }));
    }
    tls.write_all(&bytes).await.unwrap();
    let mut r = FrameReader::new(tls, common::proto::limits::MAX_FRAME);
    let mut first = None;
    let mut accepted = 0;
    // Every frame until the edge closes the connection.
    loop {
        let f = tokio::time::timeout(PATIENCE, r.read::<ServerFrame>())
            .await
            .expect("the edge answers and closes within patience");
        let Ok(Some(ServerFrame { kind: Some(k) })) = f else {
            break;
        };
        if matches!(k, server_frame::Kind::Accepted(_)) {
            accepted += 1;
        }
        first.get_or_insert(k);
    }
    (first.expect("the edge says why it closes"), accepted)
}

fn assert_revoked(first: &server_frame::Kind) {
    match first {
        server_frame::Kind::Error(e) => {
            assert_eq!(Code::from_u32(e.code), Some(Code::Revoked), "{e:?}");
            assert!(e.fatal);
        }
        other => panic!("expected Error REVOKED before anything else, got {other:?}"),
    }
}

/// [`CONNECTIONS`] attacks of `token` on `to` at once; each must get
/// `REVOKED` first and no `Accepted`.
async fn attack_at_once(d: &Deployment, token: &str, to: &str) {
    let mut set = tokio::task::JoinSet::new();
    for tag in 0..CONNECTIONS {
        set.spawn(pipelined_attack(
            d.chat_tcp,
            d.roots.clone(),
            token.to_owned(),
            to.to_owned(),
            tag,
        ));
    }
    while let Some(r) = set.join_next().await {
        let (first, accepted) = r.unwrap();
        assert_revoked(&first);
        assert_eq!(accepted, 0, "Accepted frames for a revoked device");
    }
}

/// Reads `user`'s mailbox through a real client up to the marker message
/// `marker` (sent after every attack ended, on the same edge and link, so it
/// is stored behind whatever the attacks got stored) and counts the messages
/// from `attacker` before it.
async fn delivered_from(d: &Deployment, token: &str, attacker: &str, marker: Bytes) -> usize {
    let (c, mut e) = Client::connect(d.client_config_with_token(token, Transport::Tcp))
        .await
        .unwrap();
    let mut from_attacker = 0;
    loop {
        let (_, from, _, body) = support::next_message(&mut e).await;
        if body == marker {
            break;
        }
        if from == attacker {
            from_attacker += 1;
        }
    }
    c.close().await;
    from_attacker
}

/// Finding 1: bob got 50 of 50 messages from a re-registered (revoked)
/// phone that pipelined its sends right behind `Hello`, 960 of 3,000 over
/// three connections. Now the edge acts on nothing before the home confirms
/// the device: every connection gets `REVOKED` (no `Welcome`, no
/// `Accepted`) and bob gets none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_pipelined_behind_hello_from_a_revoked_device_are_never_delivered() {
    let d = Deployment::start().await;
    let node = d.start_register(NO_WAIT).await;
    let rc = d.register_client(&node);
    let old = sign_up(&rc, &node, "+15550002001", "old phone", None)
        .await
        .unwrap();
    let bob = sign_up(&rc, &node, "+15550002002", "bob", None)
        .await
        .unwrap();
    // The number registers again elsewhere: the old phone is revoked.
    let new = sign_up(&rc, &node, "+15550002001", "new phone", None)
        .await
        .unwrap();
    assert_eq!(new.user, old.user);

    attack_at_once(&d, &old.token, &bob.user).await;

    // The new phone marks the end of bob's mailbox.
    let (c, mut e) = Client::connect(d.client_config_with_token(&new.token, Transport::Tcp))
        .await
        .unwrap();
    let marker = Bytes::from_static(b"marker");
    let id = c.send(&bob.user, marker.clone()).await.unwrap();
    expect(&mut e, "the marker accepted", |e| match e {
        Event::Accepted { id: got, .. } if *got == id => Some(()),
        _ => None,
    })
    .await;
    c.close().await;
    assert_eq!(delivered_from(&d, &bob.token, &old.user, marker).await, 0);
    node.service.stop().await;
    d.stop().await;
}

/// Finding 1, for a removed companion device: the same attack with the
/// token of a device its owner removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_companion_device_cannot_send_pipelined_either() {
    let d = Deployment::start().await;
    let node = d.start_register(NO_WAIT).await;
    let rc = d.register_client(&node);
    let owner = sign_up(&rc, &node, "+15550002003", "phone", None)
        .await
        .unwrap();
    let laptop = rc.link_device(&owner.token, "laptop", None).await.unwrap();
    let bob = sign_up(&rc, &node, "+15550002004", "bob", None)
        .await
        .unwrap();
    rc.remove_device(&owner.token, laptop.device, None)
        .await
        .unwrap();

    attack_at_once(&d, &laptop.token, &bob.user).await;
    let (c, mut e) = Client::connect(d.client_config_with_token(&owner.token, Transport::Tcp))
        .await
        .unwrap();
    let marker = Bytes::from_static(b"marker");
    let id = c.send(&bob.user, marker.clone()).await.unwrap();
    expect(&mut e, "the marker accepted", |e| match e {
        Event::Accepted { id: got, .. } if *got == id => Some(()),
        _ => None,
    })
    .await;
    c.close().await;
    // (The owner's own messages come from the same user id; the laptop's
    // would carry its device number.)
    let (bc, mut be) = Client::connect(d.client_config_with_token(&bob.token, Transport::Tcp))
        .await
        .unwrap();
    let mut from_laptop = 0;
    loop {
        let got = expect(&mut be, "a message", |e| match e {
            Event::Message {
                from_device, body, ..
            } => Some((*from_device, body.clone())),
            _ => None,
        })
        .await;
        if got.1 == marker {
            break;
        }
        if got.0 == laptop.device {
            from_laptop += 1;
        }
    }
    assert_eq!(from_laptop, 0);
    bc.close().await;
    node.service.stop().await;
    d.stop().await;
}

fn refused(e: &RegisterError) -> (u16, &str) {
    (e.status().unwrap_or(0), e.code().unwrap_or(""))
}

/// A revoked credential is refused at the edge: the connect itself ends
/// with `REVOKED` (the edge answers only once the home confirmed the
/// device).
async fn assert_refused_at_the_edge(d: &Deployment, token: &str) {
    match Client::connect(d.client_config_with_token(token, Transport::Tcp)).await {
        Err(common::client::ClientError::Refused { code, .. }) => {
            assert_eq!(code, Code::Revoked)
        }
        Err(e) => panic!("the revoked credential: {e}"),
        Ok(_) => panic!("a revoked credential was welcomed"),
    }
}

/// Finding 8: re-registration and device removal wrote the account first
/// and revoked at the home second, so a failed revoke left the old device
/// accepted at its home for good (a retry found it gone from the account).
/// Now the revocation is made durable first, retried, and nothing is
/// written unless it is: a revoke failing once (a test-only fault) is
/// retried within the request, and one failing every attempt fails the
/// request with nothing written, so its retry still revokes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_revoke_never_leaves_the_old_device_accepted() {
    let d = Deployment::start().await;
    let (node, app) = d.start_register_with_app(NO_WAIT).await;
    let rc = d.register_client(&node);
    let number = "+15550002005";
    let first = sign_up(&rc, &node, number, "old phone", None)
        .await
        .unwrap();

    // Fails once: retried within the request.
    app.accounts.faults.fail_revokes(1);
    let second = sign_up(&rc, &node, number, "new phone", None)
        .await
        .unwrap();
    assert_eq!(second.generation, first.generation + 1);
    assert_refused_at_the_edge(&d, &first.token).await;

    // Fails every attempt: 503 and nothing written; the number still
    // belongs to the second phone, and the retry revokes it.
    app.accounts.faults.fail_revokes(u32::MAX);
    let e = sign_up(&rc, &node, number, "third phone", None)
        .await
        .unwrap_err();
    assert_eq!(refused(&e), (503, "home_unavailable"));
    let devices = rc.devices(&second.token).await.unwrap();
    assert_eq!(devices.len(), 1, "the account is unchanged");
    app.accounts.faults.fail_revokes(0);
    let third = sign_up(&rc, &node, number, "third phone", None)
        .await
        .unwrap();
    assert_eq!(third.generation, second.generation + 1);
    assert_refused_at_the_edge(&d, &second.token).await;

    // Removing a companion: the same.
    let laptop = rc.link_device(&third.token, "laptop", None).await.unwrap();
    app.accounts.faults.fail_revokes(u32::MAX);
    let e = rc
        .remove_device(&third.token, laptop.device, None)
        .await
        .unwrap_err();
    assert_eq!(refused(&e), (503, "home_unavailable"));
    assert_eq!(rc.devices(&third.token).await.unwrap().len(), 2);
    app.accounts.faults.fail_revokes(1);
    rc.remove_device(&third.token, laptop.device, None)
        .await
        .unwrap();
    assert_refused_at_the_edge(&d, &laptop.token).await;
    node.service.stop().await;
    d.stop().await;
}

/// Finding 7: a companion device's token cleared or replaced the PIN and
/// removed the primary device without the current PIN. Now those (and
/// deleting the account) are for the primary device, or a companion that
/// gives the current PIN; with no PIN set, a companion cannot take the lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_companion_device_cannot_take_the_registration_lock() {
    let d = Deployment::start().await;
    let node = d.start_register(NO_WAIT).await;
    let rc = d.register_client(&node);
    let owner = sign_up(&rc, &node, "+15550002006", "phone", None)
        .await
        .unwrap();
    let thief = rc
        .link_device(&owner.token, "stolen laptop", None)
        .await
        .unwrap();

    // No PIN yet: the companion can neither set one nor remove the primary
    // nor delete the account.
    let e = rc.set_pin(&thief.token, "6666", None).await.unwrap_err();
    assert_eq!(refused(&e), (403, "primary_required"));
    let e = rc
        .remove_device(&thief.token, owner.device, None)
        .await
        .unwrap_err();
    assert_eq!(refused(&e), (403, "primary_required"));
    let e = rc.delete_account(&thief.token, None).await.unwrap_err();
    assert_eq!(refused(&e), (403, "primary_required"));

    // The owner sets a PIN; the companion cannot change or clear it, nor
    // remove the primary, without it.
    rc.set_pin(&owner.token, "2580", None).await.unwrap();
    let e = rc.set_pin(&thief.token, "6666", None).await.unwrap_err();
    assert_eq!(refused(&e), (423, "pin_required"));
    let e = rc.clear_pin(&thief.token, None).await.unwrap_err();
    assert_eq!(refused(&e), (423, "pin_required"));
    let e = rc.clear_pin(&thief.token, Some("1111")).await.unwrap_err();
    assert_eq!(refused(&e), (423, "pin_wrong"));
    let e = rc
        .remove_device(&thief.token, owner.device, Some("1111"))
        .await
        .unwrap_err();
    assert_eq!(refused(&e), (423, "pin_wrong"));
    assert_eq!(rc.devices(&owner.token).await.unwrap().len(), 2);
    // The owner re-registers with the PIN it set: the lock is still its.
    let again = sign_up(&rc, &node, "+15550002006", "phone", Some("2580"))
        .await
        .unwrap();
    assert!(!again.new_account);

    // A companion that knows the PIN may change it; any device may remove
    // itself; the primary removes companions.
    let laptop = rc.link_device(&again.token, "laptop", None).await.unwrap();
    rc.set_pin(&laptop.token, "3690", Some("2580"))
        .await
        .unwrap();
    let tablet = rc.link_device(&again.token, "tablet", None).await.unwrap();
    rc.remove_device(&tablet.token, tablet.device, None)
        .await
        .unwrap();
    rc.remove_device(&again.token, laptop.device, None)
        .await
        .unwrap();
    assert_eq!(rc.devices(&again.token).await.unwrap().len(), 1);
    node.service.stop().await;
    d.stop().await;
}
