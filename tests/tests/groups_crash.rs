//! kill -9 of a group's home in the middle of a fan-out to 200 members:
//! after a restart every member has the message exactly once (the log is
//! streamed again and the members' homes deduplicate the copies).

mod support;

use std::time::Duration;

use bytes::Bytes;
use common::client::Transport;
use common::proto::limits::MAX_FRAME;
use common::proto::{
    ClientFrame, Envelope, Hello, ServerFrame, client_frame, envelope, frame, server_frame,
};
use common::wire::FrameReader;
use support::groups::Member;
use support::{Deployment, PATIENCE};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// Copies go one at a time, so that the kill lands mid-way.
const STORE: &str = "[groups]\ncopies_in_flight = 1\n";

type Raw = FrameReader<TlsStream<TcpStream>>;

/// A bare connection of `user` that reads its deliveries and never
/// acknowledges them (so that the copies stay in its mailbox, and every
/// copy stored shows, duplicates included: the client library would hide
/// those).
async fn raw(d: &Deployment, user: &str) -> Raw {
    let mut tls = common::client::raw::connect_tls(d.chat_tcp, "localhost", &d.roots)
        .await
        .unwrap();
    let hello = ClientFrame {
        kind: Some(client_frame::Kind::Hello(Hello {
            token: d.token(user),
            client: "groups-crash".into(),
        })),
    };
    tls.write_all(&frame::to_bytes(&hello)).await.unwrap();
    let mut r = FrameReader::new(tls, MAX_FRAME);
    match next(&mut r, PATIENCE).await {
        Some(server_frame::Kind::Welcome(_)) => r,
        other => panic!("{user}: expected Welcome, got {other:?}"),
    }
}

/// The next frame within `wait`; `None` if none came or the connection ended.
async fn next(r: &mut Raw, wait: Duration) -> Option<server_frame::Kind> {
    match tokio::time::timeout(wait, r.read::<ServerFrame>()).await {
        Ok(Ok(Some(f))) => f.kind,
        _ => None,
    }
}

fn body(e: &Envelope) -> Option<&[u8]> {
    match &e.content {
        Some(envelope::Content::Body(b)) => Some(b),
        _ => None,
    }
}

/// Reads deliveries until the group message `until`; how many copies of
/// `count` came before it.
async fn copies_before(r: &mut Raw, user: &str, count: &[u8], until: &[u8]) -> usize {
    let mut n = 0;
    loop {
        match next(r, PATIENCE).await {
            Some(server_frame::Kind::Deliver(d)) => {
                let e = d.envelope.expect("an envelope");
                match body(&e) {
                    Some(b) if b == until => return n,
                    Some(b) if b == count => n += 1,
                    _ => {}
                }
            }
            Some(_) => {}
            None => panic!("{user}: no {until:?} within patience ({n} copies before)"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_fan_out_to_200_members_leaves_each_one_copy() {
    let mut d = Deployment::start_with_store_config(STORE, |_| {}).await;
    let members: Vec<String> = (1..200).map(|i| format!("m{i:03}")).collect();
    let mut alice = Member::connect("alice", d.client_config("alice", Transport::Tcp)).await;
    let names: Vec<&str> = members.iter().map(String::as_str).collect();
    let (req, group) = alice
        .client
        .create_group("alice", "crash", &names)
        .await
        .unwrap();
    assert_eq!(alice.info(req).await.members.len(), 200);

    // The first member after the creator, and the last.
    let mut first = raw(&d, &members[0]).await;
    let mut last = raw(&d, &members[198]).await;
    let id = alice
        .client
        .send_group(&group, Bytes::from_static(b"M"))
        .await
        .unwrap();
    alice.accepted(id).await;
    copies_before(&mut first, &members[0], b"-", b"M").await;

    let mut sp = d.store_process.take().unwrap();
    sp.child.start_kill().unwrap(); // SIGKILL
    sp.child.wait().await.unwrap();
    // The last member had not got it yet: the fan-out was cut mid-way.
    let mut last_had_it = false;
    while let Some(k) = next(&mut last, Duration::from_secs(2)).await {
        if let server_frame::Kind::Deliver(d) = k {
            last_had_it |= d.envelope.as_ref().and_then(body) == Some(b"M");
        }
    }
    assert!(
        !last_had_it,
        "the fan-out ended before the kill; the test proves nothing"
    );
    drop((first, last));

    let log = d.dir.path().join("wa-store.log");
    d.store_process = Some(
        support::spawn_store_process_with(d.dir.path(), sp.addr, STORE, Some(&log), &[]).await,
    );
    // A second message: every copy of the first is stored before any of it.
    let id = alice
        .client
        .send_group(&group, Bytes::from_static(b"N"))
        .await
        .unwrap();
    alice.accepted(id).await;
    for m in &members {
        let mut r = raw(&d, m).await;
        assert_eq!(copies_before(&mut r, m, b"M", b"N").await, 1, "{m}");
    }
    alice.close().await;
    d.stop().await;
}
