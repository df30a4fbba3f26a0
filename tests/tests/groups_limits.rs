//! Groups per user across two islands (docs/PROTOCOL.md, `TOO_MANY_GROUPS`):
//! a user's groups are counted at the user's home, whichever island the
//! groups' homes are on; the group beyond the limit is refused naming the
//! user, and leaving or being removed makes room again.

mod support;

use common::client::Transport;
use common::link::KvSpace;
use common::proto::Code;
use support::cluster::Cluster;
use support::groups::{Answer, Member};

const LIMIT: &str = "[groups]\nmax_groups_per_user = 3\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fourth_group_is_refused_until_one_is_left() {
    let c = Cluster::start_with(2, 1, LIMIT).await;
    // Bob's home is island 2, carol's island 1; the groups' homes fall on
    // either (their ids are hashes).
    let alice = c.user_on(1, "alice");
    let bob = c.user_on(2, "bob");
    let carol = c.user_on(1, "carol");
    let dave = c.user_on(2, "dave");
    let erin = c.user_on(2, "erin");
    let cfg = |u: &str| c.client_config(u, 1, Transport::Tcp);
    let mut a = Member::connect(&alice, cfg(&alice)).await;
    let mut d = Member::connect(&dave, cfg(&dave)).await;

    let mut groups = Vec::new();
    for i in 0..3 {
        let (req, g) = a
            .client
            .create_group(&alice, &format!("g{i}"), &[&bob, &carol])
            .await
            .unwrap();
        assert_eq!(a.info(req).await.members.len(), 3, "group {i}");
        groups.push(g);
    }

    // A fourth for bob (island 2): refused, naming him, and nothing of it
    // stays counted for the others it named (erin is counted at the same
    // home, dave, the creator, at his).
    let (req, _) = d
        .client
        .create_group(&dave, "too many", &[&erin, &bob])
        .await
        .unwrap();
    assert_eq!(d.refused(req).await, Code::TooManyGroups);
    let why = &d.seen.refusals[&req];
    assert!(why.contains(&bob), "the refusal names bob: {why:?}");
    for g in &groups {
        let req = a.client.add_members(g, &[&erin]).await.unwrap();
        assert_eq!(a.info(req).await.members.len(), 4, "erin into {g}");
    }

    // A fourth for carol (island 1), by an add.
    let (req, g4) = d.client.create_group(&dave, "g4", &[]).await.unwrap();
    assert_eq!(d.info(req).await.members.len(), 1);
    let req = d.client.add_members(&g4, &[&carol]).await.unwrap();
    assert_eq!(d.refused(req).await, Code::TooManyGroups);
    assert!(d.seen.refusals[&req].contains(&carol));
    // A retry is refused the same (nothing was counted).
    let req = d.client.add_members(&g4, &[&carol, &bob]).await.unwrap();
    assert_eq!(d.refused(req).await, Code::TooManyGroups);

    // Bob leaves one, carol is removed from one: each has room for g4.
    let mut b = Member::connect(&bob, cfg(&bob)).await;
    let req = b.client.leave_group(&groups[0]).await.unwrap();
    b.info(req).await;
    let req = a
        .client
        .remove_members(&groups[1], &[&carol])
        .await
        .unwrap();
    a.info(req).await;
    let req = d.client.add_members(&g4, &[&bob, &carol]).await.unwrap();
    assert_eq!(d.info(req).await.members.len(), 3);
    // And g4 was their third again: a fourth is refused.
    let req = b.client.group_info(&groups[0]).await.unwrap();
    assert_eq!(b.refused(req).await, Code::NotAMember);
    let req = a.client.add_members(&groups[0], &[&bob]).await.unwrap();
    assert_eq!(a.refused(req).await, Code::TooManyGroups);

    for m in [a, b, d] {
        m.close().await;
    }
    c.stop().await;
}

/// Creates a group of `m` with `members`, resending while the answer is
/// `UNAVAILABLE` (a member's home in the middle of a hand-over): its
/// answer, the group's info or the code that refused it.
async fn create(m: &mut Member, subject: &str, members: &[&str]) -> Result<usize, Code> {
    let deadline = tokio::time::Instant::now() + support::PATIENCE;
    loop {
        let me = m.name.clone();
        let (req, _) = m.client.create_group(&me, subject, members).await.unwrap();
        match m.answer(req).await {
            Answer::Group(i) => return Ok(i.members.len()),
            Answer::Rejected(Code::Unavailable) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Answer::Rejected(c) => return Err(c),
            other => panic!("{me}: {other:?}"),
        }
    }
}

/// A user's groups move with the user's fragment: counted at island 2,
/// still counted at island 1 after the move (a third group is refused
/// there), and released there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_groups_move_with_its_fragment() {
    let mut c = Cluster::start_with(2, 1, "[groups]\nmax_groups_per_user = 2\n").await;
    // A user of island 2 below its last fragment (island 2 keeps those
    // above the user's).
    let bob = (0..)
        .map(|i| c.user_on(2, &format!("bob{i}x")))
        .find(|u| c.map.fragment(u) < 255)
        .unwrap();
    let f = c.map.fragment(&bob);
    let mut x = Vec::new();
    for i in 0..3 {
        let u = c.user_on(1, &format!("x{i}y"));
        x.push(Member::connect(&u, c.client_config(&u, 1, Transport::Tcp)).await);
    }
    assert_eq!(create(&mut x[0], "g0", &[&bob]).await, Ok(2));
    assert_eq!(create(&mut x[1], "g1", &[&bob]).await, Ok(2));

    let mut moved = c.map.clone();
    moved.epoch = 2;
    moved.islands[0].fragments = [0, f];
    moved.islands[1].fragments = [f + 1, 255];
    c.publish(moved);
    assert_eq!(c.map.home(&bob).name, "island-1");
    // Island 1 serves bob's fragment once the hand-over has arrived.
    let link = c.link_client();
    let deadline = tokio::time::Instant::now() + support::PATIENCE;
    while let Err(e) = link.kv_get(KvSpace::Account, &bob).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "island 1 never served bob: {e}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // Counted at the new home: a third is refused.
    assert_eq!(
        create(&mut x[2], "g2", &[&bob]).await,
        Err(Code::TooManyGroups)
    );
    // Removed from one (released at the new home), bob has room again.
    let g0 = x[0].seen.answers.values().find_map(|a| match a {
        Answer::Group(i) => Some(i.group.clone()),
        _ => None,
    });
    let g0 = g0.expect("x0's group");
    let req = x[0].client.remove_members(&g0, &[&bob]).await.unwrap();
    x[0].info(req).await;
    assert_eq!(create(&mut x[2], "g2", &[&bob]).await, Ok(2));
    for m in x {
        m.close().await;
    }
    c.stop().await;
}
