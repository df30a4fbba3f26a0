//! A primary following the cluster map while it serves.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::home::{self, Home};
use crate::storage::Storage;
use crate::{handoff, ownership};

/// Reads the cluster map again on every `reload` until `stop`, and
/// carries out what every reload changed (this one, or one a request with
/// a newer epoch caused): the shards close the sessions of users this node
/// no longer serves, and the mailboxes of fragments it lost are handed over
/// to their new home ([`handoff`]). (Requests are checked against the new
/// map from the moment it is read: `Ownership::check`.)
pub(crate) async fn reload_loop(
    ownership: Arc<ownership::Ownership>,
    home: Home,
    storage: Arc<dyn Storage>,
    client: Option<Arc<common::link_client::LinkClient>>,
    reload: Arc<tokio::sync::Notify>,
    stop: CancellationToken,
    (demoted, mut crash_fence): (Arc<std::sync::atomic::AtomicBool>, bool),
) {
    let handoffs = TaskTracker::new();
    loop {
        tokio::select! {
            () = reload.notified() => {
                let o = Arc::clone(&ownership);
                let reloaded = tokio::task::spawn_blocking(move || o.reload())
                    .await
                    .expect("reading the map does not panic");
                match reloaded {
                    Ok(Some(_)) => {}
                    Ok(None) => tracing::info!("cluster map unchanged"),
                    Err(e) => {
                        tracing::error!(error = %e, "cluster map not reloaded; keeping the current one")
                    }
                }
            }
            () = ownership.changed.notified() => {}
            () = stop.cancelled() => break,
        }
        if !ownership.current().primary {
            // Fenced: from this moment every request is refused
            // (`Ownership::check`); stop, and start again as the secondary.
            tracing::error!(
                epoch = ownership.current().epoch(),
                "the cluster map names this node its island's secondary: stopping"
            );
            demoted.store(true, std::sync::atomic::Ordering::SeqCst);
            stop.cancel();
            break;
        }
        let o = ownership.current();
        if crash_fence && o.map.islands[o.island].secondary.is_none() {
            crash_fence = false;
            ownership.set_fenced(false);
            tracing::warn!(
                epoch = o.epoch(),
                "the map no longer names a secondary for this island: serving what this node has"
            );
        }
        for change in ownership.changes() {
            // (The link client routes to other homes by the map this node
            // goes by: a fan-out or a courier must not address members by
            // a map the other homes refuse as stale.)
            if let Some(c) = &client {
                c.follow(&change.owned.map);
            }
            let owned = Arc::clone(&change.owned);
            if home.submit(home::Op::Rehome { owned }).await.is_err() {
                break;
            }
            if !change.lost.is_empty() {
                handoffs.spawn(handoff::hand_off(
                    change.lost,
                    Arc::clone(&ownership),
                    change.owned,
                    home.clone(),
                    Arc::clone(&storage),
                    client.clone(),
                    stop.clone(),
                ));
            }
        }
    }
    handoffs.close();
    handoffs.wait().await;
}
