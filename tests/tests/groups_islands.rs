//! Groups across two islands: members whose homes are on the other island
//! than the group's, connected through different edges, get what a
//! one-island group gives them.

mod support;

use common::client::Transport;
use support::cluster::Cluster;

/// The 5-member scenario (tests/groups.rs) with the creator and one member
/// on island 1 and three members on island 2, through two edges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_members_across_two_islands() {
    let c = Cluster::start(2, 2).await;
    let names = [
        c.user_on(1, "alice"),
        c.user_on(2, "bob"),
        c.user_on(1, "carol"),
        c.user_on(2, "dave"),
        c.user_on(2, "erin"),
    ];
    let edge = |u: &str| {
        if names[..2].iter().any(|n| n == u) {
            1
        } else {
            2
        }
    };
    let refs = [
        names[0].as_str(),
        names[1].as_str(),
        names[2].as_str(),
        names[3].as_str(),
        names[4].as_str(),
    ];
    support::groups::five_members(refs, |u| c.client_config(u, edge(u), Transport::Tcp)).await;
}
