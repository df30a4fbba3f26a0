//! Groups on one island (docs/PROTOCOL.md "Groups"): real wa-store and
//! wa-chat, real sockets, the real client library.

mod support;

use bytes::Bytes;
use common::client::Transport;
use common::proto::{Code, GroupOp};
use support::Deployment;
use support::groups::Member;

async fn member(d: &Deployment, name: &str) -> Member {
    Member::connect(name, d.client_config(name, Transport::Tcp)).await
}

/// A 5-member group: every member gets every message once, in order, the
/// one offline at the time too; the sender gets every member's delivered
/// and read receipts, those made while it was offline too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_members_get_every_message_once_in_order_and_receipts_come_back() {
    let d = Deployment::start().await;
    support::groups::five_members(["alice", "bob", "carol", "dave", "erin"], |u| {
        d.client_config(u, Transport::Tcp)
    })
    .await;
    d.stop().await;
}

/// Only admins add and remove (`NOT_ADMIN`); a non-member can do nothing
/// (`NOT_A_MEMBER`), nor can anyone with a group that does not exist
/// (`NO_SUCH_GROUP`); a bad request is `BAD_GROUP_REQUEST`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissions_are_enforced_with_their_codes() {
    let d = Deployment::start().await;
    let mut alice = member(&d, "alice").await;
    let mut bob = member(&d, "bob").await;
    let mut zed = member(&d, "zed").await;
    let (req, group) = alice
        .client
        .create_group("alice", "g", &["bob"])
        .await
        .unwrap();
    alice.info(req).await;

    let id = bob.client.add_members(&group, &["carol"]).await.unwrap();
    assert_eq!(bob.refused(id).await, Code::NotAdmin);
    let id = bob.client.remove_members(&group, &["alice"]).await.unwrap();
    assert_eq!(bob.refused(id).await, Code::NotAdmin);
    let id = bob.client.set_subject(&group, "mine").await.unwrap();
    assert_eq!(bob.refused(id).await, Code::NotAdmin);
    let id = zed
        .client
        .send_group(&group, Bytes::from_static(b"hi"))
        .await
        .unwrap();
    assert_eq!(zed.refused(id).await, Code::NotAMember);
    let id = zed.client.group_info(&group).await.unwrap();
    assert_eq!(zed.refused(id).await, Code::NotAMember);
    let missing = common::group::group_id("nobody", &[9; 16]);
    let id = alice.client.group_info(&missing).await.unwrap();
    assert_eq!(alice.refused(id).await, Code::NoSuchGroup);
    let id = alice.client.remove_members(&group, &["zed"]).await.unwrap();
    assert_eq!(alice.refused(id).await, Code::BadGroupRequest);

    // Promoted, bob may.
    let id = alice
        .client
        .set_admins(&group, &["bob"], true)
        .await
        .unwrap();
    alice.info(id).await;
    let id = bob.client.add_members(&group, &["carol"]).await.unwrap();
    let info = bob.info(id).await;
    assert_eq!(info.members.len(), 3);
    for m in [alice, bob, zed] {
        m.close().await;
    }
    d.stop().await;
}

/// A real 1,024-member group: the 1,025th member is refused with
/// `GROUP_FULL` (at the default `[groups] max_members`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_1025th_member_is_refused() {
    let d = Deployment::start().await;
    let mut alice = member(&d, "alice").await;
    let users: Vec<String> = (1..=1024).map(|i| format!("u{i}")).collect();
    let (req, group) = alice
        .client
        .create_group("alice", "big", &[])
        .await
        .unwrap();
    alice.info(req).await;
    // 1,023 more, at most 256 named per request.
    for chunk in users[..1023].chunks(256) {
        let names: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let id = alice.client.add_members(&group, &names).await.unwrap();
        alice.info(id).await;
    }
    let id = alice.client.group_info(&group).await.unwrap();
    assert_eq!(alice.info(id).await.members.len(), 1024);
    let id = alice.client.add_members(&group, &["u1024"]).await.unwrap();
    assert_eq!(alice.refused(id).await, Code::GroupFull);
    alice.close().await;
    d.stop().await;
}

/// With `[groups] max_members = 5`, the 6th member is refused, by create
/// and by add alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_members_is_configurable() {
    let d = Deployment::start_with_store_config("[groups]\nmax_members = 5\n", |_| {}).await;
    let mut alice = member(&d, "alice").await;
    let (req, _) = alice
        .client
        .create_group("alice", "six", &["b", "c", "d", "e", "f"])
        .await
        .unwrap();
    assert_eq!(alice.refused(req).await, Code::GroupFull);
    let (req, group) = alice
        .client
        .create_group("alice", "five", &["b", "c", "d", "e"])
        .await
        .unwrap();
    assert_eq!(alice.info(req).await.members.len(), 5);
    let id = alice.client.add_members(&group, &["f"]).await.unwrap();
    assert_eq!(alice.refused(id).await, Code::GroupFull);
    alice.close().await;
    d.stop().await;
}

/// A member removed while messages are in flight gets those accepted
/// before the removal and none after; its own message after is refused
/// with `NOT_A_MEMBER`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_gets_what_was_accepted_before_and_nothing_after() {
    let d = Deployment::start().await;
    let mut alice = member(&d, "alice").await;
    let mut bob = member(&d, "bob").await;
    let mut carol = member(&d, "carol").await;
    let (req, group) = alice
        .client
        .create_group("alice", "race", &["bob", "carol"])
        .await
        .unwrap();
    alice.info(req).await;
    // All pipelined: five messages, the removal, four more.
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            alice
                .client
                .send_group(&group, Bytes::from(format!("m{i}")))
                .await
                .unwrap(),
        );
    }
    let removal = alice
        .client
        .remove_members(&group, &["carol"])
        .await
        .unwrap();
    for i in 5..9 {
        ids.push(
            alice
                .client
                .send_group(&group, Bytes::from(format!("m{i}")))
                .await
                .unwrap(),
        );
    }
    for id in &ids {
        alice.accepted(*id).await;
    }
    assert_eq!(alice.info(removal).await.members.len(), 2);
    let id = carol
        .client
        .send_group(&group, Bytes::from_static(b"still here?"))
        .await
        .unwrap();
    assert_eq!(carol.refused(id).await, Code::NotAMember);

    // Bob has the last one: every earlier item of the log is at every
    // recipient's home (the fan-out goes item by item).
    bob.messages(9).await;
    let want: Vec<String> = (0..9).map(|i| format!("m{i}")).collect();
    assert_eq!(bob.seen.bodies(), want);
    // A marker after them in carol's mailbox.
    let marker = alice
        .client
        .send("carol", Bytes::from_static(b"marker"))
        .await
        .unwrap();
    alice.accepted(marker).await;
    carol.until("the marker", |s| !s.direct.is_empty()).await;
    assert_eq!(carol.seen.bodies(), want[..5]);
    let ops: Vec<_> = carol.seen.events.iter().map(|e| e.2.op()).collect();
    assert_eq!(ops, [GroupOp::Create, GroupOp::Remove]);
    for m in [alice, bob, carol] {
        m.close().await;
    }
    d.stop().await;
}
