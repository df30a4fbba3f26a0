//! Automatic failover through etcd (`[coordination]`, docs/OPERATIONS.md
//! "Automatic failover"): the map lives in etcd, a primary serves only
//! while it surely holds its island's lease, and a caught-up secondary
//! takes over, with one compare-and-swap on the map, once that lease is
//! gone. The map change does the rest, as a `wactl promote` does: the
//! secondary reads it and serves, the old primary reads it and stops.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::coordination::{CoordinationError, Coordinator};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::ownership::Ownership;

/// Before the store opens: with `[coordination]`, etcd's map replaces the
/// local map file (or the local one is published, for the first node of a
/// new cluster). `None` without coordination.
pub async fn prepare(config: &Config) -> Result<Option<Coordinator>, CoordinationError> {
    if !config.coordination.enabled() {
        return Ok(None);
    }
    let mut c = Coordinator::connect(&config.coordination).await?;
    let map = c.adopt_map(&config.cluster.map).await?;
    tracing::info!(epoch = map.epoch, "cluster map from etcd");
    Ok(Some(c))
}

fn pause(c: &Coordinator) -> Duration {
    (c.ttl / 4).max(Duration::from_millis(100))
}

/// A primary's side: serves (unfenced) only while it surely holds its
/// island's lease; until `stop`.
pub async fn hold_lease(
    mut c: Coordinator,
    island: String,
    me: String,
    ownership: Arc<Ownership>,
    defer: bool,
    stop: CancellationToken,
) {
    if ownership.set_fenced(true) {
        tracing::info!(%island, "not serving until this primary holds its lease in etcd");
    }
    if defer {
        // Its secondary watches every quarter lease and takes over once
        // the old lease is gone: three leases are room for both.
        let wait = 3 * c.ttl;
        tracing::warn!(%island, ?wait, "this primary did not stop cleanly: its secondary may hold appends it lacks, so it gets the first chance to take over; this node takes the lease only if it has not by then");
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.cancelled() => return,
        }
    }
    loop {
        match c.hold_primary(&island, &me).await {
            Ok(Some(lease)) => {
                tracing::info!(%island, "holding the primary's lease in etcd");
                loop {
                    let fenced = !lease.safe();
                    if ownership.set_fenced(fenced) {
                        if fenced {
                            tracing::error!(%island, "the lease in etcd could not be renewed for half its time: serving nothing (fenced)");
                        } else {
                            tracing::info!(%island, "serving: the lease in etcd is renewed");
                        }
                    }
                    if lease.lost() {
                        break;
                    }
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(50)) => {}
                        () = stop.cancelled() => return,
                    }
                }
            }
            Ok(None) => tracing::info!(%island, "another node holds this island's lease; waiting"),
            Err(e) => tracing::warn!(error = %e, "cannot take the primary's lease"),
        }
        ownership.set_fenced(true);
        tokio::select! {
            () = tokio::time::sleep(pause(&c)) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// A primary's side, at `when_absent = "disk"`: keeps etcd's record that it
/// goes on without its secondary as the sync thread wants it
/// (`replication::alone`), until `stop`.
pub async fn record_alone(
    mut c: Coordinator,
    island: String,
    me: String,
    gate: Arc<crate::replication::alone::Alone>,
    stop: CancellationToken,
) {
    // Unknown at start: a record left by an earlier run is taken away
    // once the secondary is back (`together`).
    let mut recorded: Option<bool> = None;
    loop {
        let wanted = gate.wanted();
        if recorded != Some(wanted) {
            let r = if wanted {
                c.mark_alone(&island, &me).await
            } else {
                c.clear_alone(&island, &me).await
            };
            match r {
                Ok(true) if wanted => {
                    tracing::warn!(%island, "etcd records that this primary goes on without its secondary: appends are durable on this node's disk only, and no takeover happens until the secondary is back and caught up");
                    gate.set_recorded();
                    recorded = Some(true);
                }
                Ok(true) => {
                    if recorded == Some(true) {
                        tracing::info!(%island, "the secondary is back: etcd's record that this primary went on alone is taken away");
                    }
                    recorded = Some(false);
                }
                // Not holding the primary's key (fenced, or not yet): the
                // appends stay refused; looked at again below.
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot update etcd's record of this primary going on alone")
                }
            }
        }
        tokio::select! {
            () = gate.changed.notified() => {}
            () = tokio::time::sleep(pause(&c)) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// A secondary's side: once it has seen its primary hold the lease and is
/// caught up, takes over when the lease is gone, unless the primary went
/// on without it (`record_alone`). Writes the new map to
/// the local file and notifies `reload` (the follower then promotes).
pub async fn watch_primary(
    mut c: Coordinator,
    map_file: std::path::PathBuf,
    me: std::net::SocketAddr,
    metrics: Arc<crate::metrics::Metrics>,
    reload: Arc<Notify>,
    island: String,
    stop: CancellationToken,
) {
    let mut seen_held = false;
    let mut said_alone = false;
    loop {
        tokio::select! {
            () = tokio::time::sleep(pause(&c)) => {}
            () = stop.cancelled() => return,
        }
        let caught_up = metrics.follower_caught_up.load(Ordering::Relaxed) == 1;
        let held = match c.primary_held(&island).await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "cannot look at the primary's lease");
                continue;
            }
        };
        seen_held |= held;
        if held || !seen_held || !caught_up {
            continue;
        }
        match c.alone(&island).await {
            Ok(None) => {}
            Ok(Some(who)) => {
                if !said_alone {
                    tracing::error!(%island, primary = %who, "the primary's lease expired, but it had gone on without this secondary (etcd records it): not taking over, since appends it acknowledged are missing here. Bring that node back, or see docs/OPERATIONS.md, \"Automatic failover through etcd\"");
                    said_alone = true;
                }
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot look at the primary's record in etcd");
                continue;
            }
        }
        let Ok(Some((map, rev))) = c.map().await else {
            continue;
        };
        let Some(i) = map.islands.iter().position(|x| x.name == island) else {
            continue;
        };
        if map.islands[i].secondary != Some(me) {
            continue;
        }
        let mut promoted = map.clone();
        let isl = &mut promoted.islands[i];
        let old = isl.primary;
        isl.primary = me;
        isl.secondary = Some(old);
        promoted.epoch += 1;
        match c.take_over(&promoted, rev, &island).await {
            Ok(true) => {
                tracing::warn!(%island, epoch = promoted.epoch, old_primary = %old, "the primary's lease expired: this secondary took over");
                if let Err(e) = common::coordination::write_map_file(&map_file, &promoted) {
                    tracing::error!(error = %e, "cannot write the new map");
                }
                reload.notify_one();
                return;
            }
            Ok(false) => {
                tracing::info!(%island, "the map or the lease changed under the takeover; looking again")
            }
            Err(e) => tracing::warn!(error = %e, "takeover failed; trying again"),
        }
    }
}
