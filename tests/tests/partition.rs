//! A partition, black box, across network namespaces: an island's primary
//! and one edge live in a namespace of their own (with a map file of their
//! own); etcd, the secondary and a second edge live outside. Clients on
//! both sides keep sending at level `replicated` (with the default
//! `when_absent = "disk"`) while the primary's cluster link is set down: it
//! can still hear its own edge's clients but neither etcd nor its
//! secondary. It must stop accepting (it cannot record in etcd that it goes
//! on alone, and it fences itself within its lease), the secondary must
//! take over and go on alone (recorded in etcd), and after the link comes
//! back the old primary must step down (exit 75), rejoin as the secondary
//! and catch up. A checker over every
//! client's log then finds every acknowledged message delivered once, in
//! the order sent: had the cut-off primary acknowledged anything once the
//! secondary took over, that message would be missing (the rejoining node
//! sets its old data aside), and had both accepted at one epoch, the same.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::client::{Client, Event, Events, MessageId};
use support::cluster::Cluster;
use support::netns::Netns;
use support::{PATIENCE, next_message};

const LEASE: Duration = Duration::from_secs(2);

/// When each of a sender's messages was acknowledged, in order.
type Log = Arc<Mutex<Vec<(MessageId, Instant)>>>;

/// Sends `n` messages to `to`, one at a time, each until Accepted (the
/// client resends by itself across refusals, reconnects and the failover);
/// logs each acknowledgement.
fn sender(
    client: Client,
    mut events: Events,
    to: &'static str,
    n: usize,
    log: Log,
) -> tokio::task::JoinHandle<Client> {
    tokio::spawn(async move {
        for i in 0..n {
            let id = client.send(to, Bytes::from(format!("m{i}"))).await.unwrap();
            // A partition can hold one send for a while: the bound is the
            // lease, the takeover and the healing, within two patiences.
            tokio::time::timeout(2 * PATIENCE, async {
                loop {
                    match events.next().await.expect("events go on") {
                        Event::Accepted { id: got, .. } if got == id => break,
                        Event::Rejected {
                            id: got,
                            code,
                            message,
                        } if got == id => {
                            panic!("send {i} to {to} refused for good: {code:?} {message}")
                        }
                        _ => {}
                    }
                }
            })
            .await
            .unwrap_or_else(|_| panic!("send {i} to {to} not accepted within {:?}", 2 * PATIENCE));
            log.lock().unwrap().push((id, Instant::now()));
        }
        client
    })
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let t = Instant::now();
    while !done() {
        assert!(t.elapsed() < PATIENCE, "{what}: not within {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_primary_fences_itself_the_secondary_takes_over_and_nothing_acknowledged_is_lost()
 {
    if let Some(why) = Netns::unavailable() {
        println!("SKIPPED: {why}");
        return;
    }
    let mut ns = Netns::create("part");
    let cluster_link = ns.veth();
    let client_link = ns.veth();
    let etcd = support::etcd::Etcd::start_on(cluster_link.outside.into()).await;
    let etcd_section = etcd.section("2s");
    let mut c = Cluster::start_split(&ns, &cluster_link, &client_link, &etcd_section, "").await;

    // alice is beside the primary (edge 1, inside), bob outside (edge 2).
    const N: usize = 400;
    let (alog, blog): (Log, Log) = Default::default();
    let (ca, ea) = c.client("alice", 1).await;
    let (cb, eb) = c.client("bob", 2).await;
    let a = sender(ca, ea, "carol", N, Arc::clone(&alog));
    let b = sender(cb, eb, "dave", N, Arc::clone(&blog));
    let count = |l: &Log| l.lock().unwrap().len();
    until("100 accepted on each side", || {
        count(&alog) >= 100 && count(&blog) >= 100
    })
    .await;

    // The partition: the primary hears its edge, not etcd nor its secondary.
    println!("cutting the primary's cluster link");
    ns.set(&cluster_link, false);
    let cut = Instant::now();
    let (a_at_cut, b_at_cut) = (count(&alog), count(&blog));
    // The secondary takes over; bob's side goes on through it.
    until("bob accepted again after the cut", || {
        count(&blog) > b_at_cut + 50
    })
    .await;
    // Hold the partition past two leases, so that a primary that did not
    // fence itself would have acknowledged alice's sends meanwhile.
    while cut.elapsed() < 2 * LEASE + Duration::from_secs(1) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let during: Vec<Duration> = alog.lock().unwrap()[a_at_cut..]
        .iter()
        .map(|(_, t)| *t - cut)
        .collect();
    ns.set(&cluster_link, true);
    let healed = Instant::now();
    // bob's outage: the longest wait between two acknowledgements around
    // the cut (the old primary's lease running out, the takeover, the map
    // reaching bob's edge).
    let outage = {
        let l = blog.lock().unwrap();
        let from = b_at_cut.saturating_sub(1);
        l[from..]
            .windows(2)
            .map(|w| w[1].1 - w[0].1)
            .max()
            .unwrap_or_default()
    };
    println!(
        "partition: alice (beside the old primary) had {} acknowledged at the cut, {} more during it (at {:?}); bob {} at the cut, then at most {:?} without an acknowledgement (lease {LEASE:?})",
        a_at_cut,
        during.len(),
        during,
        b_at_cut,
        outage
    );
    // Anything acknowledged on the primary's side after half a lease would
    // be an acknowledgement by a node that had to assume it was fenced.
    assert!(
        during.iter().all(|d| *d < LEASE / 2),
        "the cut-off primary acknowledged after half its lease: {during:?}"
    );

    // Healed: the old primary reads the new map and steps down (75), then
    // rejoins as the secondary, set apart from its old data, and catches up.
    let st = tokio::time::timeout(PATIENCE, c.stores[0].child.wait())
        .await
        .expect("the old primary steps down once it reads the new map")
        .unwrap();
    assert_eq!(
        st.code(),
        Some(75),
        "the old primary exits 75 (stepped down)"
    );
    println!(
        "the old primary stepped down {:?} after the link came back",
        healed.elapsed()
    );
    c.restart_replicated_in(1, Some(&ns), Some("CAUGHT-UP"))
        .await;
    println!(
        "the old primary caught up as the secondary {:?} after the link came back",
        healed.elapsed()
    );

    let ca = tokio::time::timeout(3 * PATIENCE, a)
        .await
        .unwrap()
        .unwrap();
    let cb = tokio::time::timeout(3 * PATIENCE, b)
        .await
        .unwrap()
        .unwrap();

    // The checker: every acknowledged message once, in the order sent.
    for (from, to, log) in [("alice", "carol", &alog), ("bob", "dave", &blog)] {
        let sent: Vec<MessageId> = log.lock().unwrap().iter().map(|(id, _)| *id).collect();
        assert_eq!(sent.len(), N);
        let (cr, mut er) = c.client(to, 2).await;
        let mut got = Vec::with_capacity(N);
        for _ in 0..N {
            let (seq, who, id, _) = next_message(&mut er).await;
            assert_eq!(who, from);
            cr.ack(&[seq]).await.unwrap();
            got.push(id);
        }
        assert_eq!(
            got, sent,
            "{to}: every message {from} saw accepted, once, in order"
        );
        let extra = tokio::time::timeout(Duration::from_millis(500), async {
            loop {
                match er.next().await {
                    Some(Event::Message { id, .. }) => return Some(id),
                    Some(_) => continue,
                    None => return None,
                }
            }
        })
        .await;
        assert!(
            !matches!(extra, Ok(Some(_))),
            "{to}: a message twice: {extra:?}"
        );
        cr.close().await;
    }
    ca.close().await;
    cb.close().await;
    c.stop().await;
    drop(etcd);
    drop(ns);
}
