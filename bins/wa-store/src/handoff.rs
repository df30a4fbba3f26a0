//! Moving fragments: when a new map gives fragments this node owned to
//! another island, their mailboxes go to their new home (docs/OPERATIONS.md,
//! "Moving fragments").
//!
//! The move is stop, copy, switch. From the moment this node reads the map
//! it refuses the fragments (`WRONG_HOME`) and closes their sessions (stop);
//! the new owner refuses them too until told they arrived. Here every item
//! of every mailbox in them is appended at the new home with `handoff` set
//! (it keeps its time; the new home dedupes, so a retry stores nothing
//! twice), in order, then deleted here (copy). Last, the new owner hears
//! `Handoff` and serves them (switch). Edges retry what was refused in the
//! meantime, so clients see a delay. Nothing is deleted here before the new
//! home has it durably, so a crash of either side repeats a step rather
//! than losing an item.

use std::sync::Arc;

use bytes::Bytes;
use common::link::KvSpace;
use common::link_client::LinkClient;
use tokio_util::sync::CancellationToken;

use crate::home::{Home, HomeClosed, Op};
use crate::ownership::{Owned, Ownership};
use crate::retry::until_done;
use crate::storage::Storage;

/// Hands the mailboxes of fragments `lost` over to their owners in
/// `owned.map`, then tells those owners, and then `ownership` that nothing
/// of `lost` is left here to hand over. Returns how many items went; gives
/// up only when `stop`ped (the next start resumes it: `crate::moves`).
pub async fn hand_off(
    lost: Vec<[u32; 2]>,
    ownership: Arc<Ownership>,
    owned: Arc<Owned>,
    home: Home,
    storage: Arc<dyn Storage>,
    client: Option<Arc<LinkClient>>,
    stop: CancellationToken,
) -> Result<u64, HomeClosed> {
    let Some(client) = client else {
        tracing::error!("fragments moved away, but other homes cannot be reached (cluster.ca)");
        return Ok(0);
    };
    client.follow(&owned.map);
    let map = &owned.map;
    let moving = |user: &str| {
        let f = map.fragment(user);
        lost.iter().any(|[a, b]| (*a..=*b).contains(&f))
    };
    let st = Arc::clone(&storage);
    let mut users = tokio::task::spawn_blocking(move || {
        let mut users = Vec::new();
        let visited = st.visit_sizes(&mut |user, size| {
            if size.items > 0 {
                users.push(user.to_owned());
            }
        });
        if let Err(e) = visited {
            tracing::error!(error = %e, "cannot list the mailboxes to hand over");
        }
        users
    })
    .await
    .expect("listing mailboxes does not panic");
    users.extend(home.cached_users().await?);
    users.retain(|u| moving(u));
    users.sort();
    users.dedup();
    tracing::info!(?lost, mailboxes = users.len(), "handing fragments over");
    let mut moved = 0u64;
    for user in users {
        let (reply, rx) = tokio::sync::oneshot::channel();
        home.submit(Op::Export {
            user: user.clone(),
            reply,
        })
        .await?;
        let items = rx.await.map_err(|_| HomeClosed)?;
        let seqs: Vec<u64> = items.iter().map(|i| i.seq).collect();
        for item in items {
            until_done(&stop, "an item to its new home", || {
                client.hand_over(&user, item.envelope.clone())
            })
            .await?;
        }
        moved += seqs.len() as u64;
        home.submit(Op::HandedOff { user, seqs }).await?;
    }
    let (records, generations) = records_of(&storage, &moving).await;
    let n_records = records.len() + generations.len();
    for (space, key, value) in records {
        until_done(&stop, "a key-value record", || {
            client.hand_over_kv(space, &key, value.clone())
        })
        .await?;
    }
    for (user, device, generation) in generations {
        until_done(&stop, "a device generation", || {
            client.hand_over_generation(&user, device, generation)
        })
        .await?;
    }
    for [a, b] in &lost {
        for island in &map.islands {
            let [c, d] = island.fragments;
            let (first, last) = ((*a).max(c), (*b).min(d));
            if first > last {
                continue;
            }
            until_done(&stop, "the end of a hand-over", || {
                client.handoff_done(island, first, last, map.epoch)
            })
            .await?;
            tracing::info!(first, last, to = %island.name, items = moved, records = n_records, "fragments handed over");
        }
    }
    ownership.handed_off(&lost);
    Ok(moved)
}

/// The key-value records (accounts, phone numbers, push endpoints, groups,
/// bans; deleted ones too, so that a stale copy at the new home, from an
/// earlier time it owned them, goes) and device generations whose keys
/// `moving` says go. (They stay here too, unread: this node refuses their
/// fragments from now on; a move back replaces them.)
#[allow(clippy::type_complexity)]
async fn records_of(
    storage: &Arc<dyn Storage>,
    moving: &(dyn Fn(&str) -> bool + Sync),
) -> (Vec<(KvSpace, String, Bytes)>, Vec<(String, u32, u32)>) {
    let st = Arc::clone(storage);
    let (records, generations) = tokio::task::spawn_blocking(move || {
        let mut records = Vec::new();
        let mut generations = Vec::new();
        if let Err(e) = st.visit_kv(&mut |space, key, _, value| {
            records.push((space, key.to_owned(), Bytes::copy_from_slice(value)));
        }) {
            tracing::error!(error = %e, "cannot list the key-value records to hand over");
        }
        if let Err(e) = st.visit_generations(&mut |user, device, generation| {
            generations.push((user.to_owned(), device, generation));
        }) {
            tracing::error!(error = %e, "cannot list the device generations to hand over");
        }
        (records, generations)
    })
    .await
    .expect("listing records does not panic");
    let records = records
        .into_iter()
        .filter(|(_, key, _)| moving(key))
        .filter_map(|(space, key, value)| {
            Some((KvSpace::try_from(i32::from(space)).ok()?, key, value))
        })
        .collect();
    let generations = generations
        .into_iter()
        .filter(|(u, _, _)| moving(u))
        .collect();
    (records, generations)
}
