//! Routing through the cluster map: which [`Link`] reaches the home of a
//! user, under which epoch. One link per store address, shared by every
//! island that names it.
//!
//! The map is read again on SIGHUP and when a home refuses a request with
//! `WRONG_HOME` or `STALE_EPOCH` ([`Router::reload_soon`]); a map that adds
//! a store address starts a link to it, one that no longer names a store as
//! any island's primary retires that store's link. Who a user's home is, is decided by
//! `ClusterMap::home_index` alone.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use common::cluster::ClusterMap;
use rustls::pki_types::ServerName;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::hub::Hub;
use crate::links::{Link, LinkSettings};

/// Refusals make the edge read the map at most once per this.
const RELOAD_EVERY: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
#[error("island {island:?}: server_name {name:?} is not a valid DNS name or IP address")]
pub struct BadServerName {
    pub island: String,
    pub name: String,
}

/// What starting a link needs.
pub struct LinkSpawner {
    pub settings: Arc<LinkSettings>,
    pub hub: Arc<Hub>,
    pub stop: CancellationToken,
    pub tasks: TaskTracker,
}

impl LinkSpawner {
    fn spawn(&self, link: &Arc<Link>) {
        let span = tracing::info_span!("link", addr = %link.addr);
        self.tasks.spawn(tracing::Instrument::instrument(
            Arc::clone(link).run(
                Arc::clone(&self.settings),
                Arc::clone(&self.hub),
                self.stop.clone(),
            ),
            span,
        ));
    }
}

/// One version of the map with a link for each of its islands.
struct Table {
    map: ClusterMap,
    /// For each island of the map, in order, its link.
    island_link: Vec<Arc<Link>>,
}

pub struct Router {
    table: RwLock<Arc<Table>>,
    /// The link to every primary of the current map, by address (a store
    /// that is no longer any island's primary has its link retired).
    links: Mutex<HashMap<SocketAddr, Arc<Link>>>,
    path: PathBuf,
    spawner: Option<LinkSpawner>,
    last_try: Mutex<Option<Instant>>,
}

impl Router {
    /// A router over `map` (read from `path`); with a `spawner`, each new link
    /// is started at once.
    pub fn new(
        map: ClusterMap,
        path: PathBuf,
        spawner: Option<LinkSpawner>,
    ) -> Result<Router, BadServerName> {
        let router = Router {
            table: RwLock::new(Arc::new(Table {
                map: map.clone(),
                island_link: Vec::new(),
            })),
            links: Mutex::default(),
            path,
            spawner,
            last_try: Mutex::new(None),
        };
        router.install(map)?;
        Ok(router)
    }

    fn table(&self) -> Arc<Table> {
        Arc::clone(&self.table.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Makes `map` current, starting links to addresses not seen before.
    fn install(&self, map: ClusterMap) -> Result<(), BadServerName> {
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        let mut island_link = Vec::with_capacity(map.islands.len());
        let mut fresh = Vec::new();
        for isl in &map.islands {
            let link = match links.get(&isl.primary) {
                Some(l) => Arc::clone(l),
                None => {
                    let name = ServerName::try_from(isl.server_name.clone()).map_err(|_| {
                        BadServerName {
                            island: isl.name.clone(),
                            name: isl.server_name.clone(),
                        }
                    })?;
                    let l = Arc::new(Link::new(isl.primary, name));
                    links.insert(isl.primary, Arc::clone(&l));
                    fresh.push(Arc::clone(&l));
                    l
                }
            };
            island_link.push(link);
        }
        // A primary that lost its islands (a failover, a move) may be gone
        // from the network without closing anything: what waits on its link
        // would wait until TCP gives up. Close it; its sessions start again
        // at their new homes.
        links.retain(|addr, link| {
            let kept = map.islands.iter().any(|i| i.primary == *addr);
            if !kept {
                link.retire();
            }
            kept
        });
        if let Some(s) = &self.spawner {
            s.settings.set_epoch(map.epoch);
            for l in &fresh {
                s.spawn(l);
            }
        }
        *self.table.write().unwrap_or_else(|p| p.into_inner()) =
            Arc::new(Table { map, island_link });
        Ok(())
    }

    /// The link to the home of `user` (a valid user id), and the epoch of the
    /// map that says so.
    pub fn route(&self, user: &str) -> (Arc<Link>, u64) {
        let t = self.table();
        let i = t.map.home_index(user);
        (Arc::clone(&t.island_link[i]), t.map.epoch)
    }

    /// The link to the home of `user`.
    pub fn home(&self, user: &str) -> Arc<Link> {
        self.route(user).0
    }

    /// Every link, one per store address.
    pub fn links(&self) -> Vec<Arc<Link>> {
        let links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        links.values().cloned().collect()
    }

    pub fn epoch(&self) -> u64 {
        self.table().map.epoch
    }

    /// Reads the map again; true if it had a newer epoch and is now current.
    /// A map with an older or the same epoch is left alone.
    pub fn reload(&self) -> bool {
        let map = match ClusterMap::load(&self.path) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "cannot reload the cluster map; keeping the current one");
                return false;
            }
        };
        let current = self.epoch();
        if map.epoch <= current {
            if map != self.table().map {
                tracing::warn!(
                    epoch = map.epoch,
                    current,
                    "the cluster map changed without a higher epoch; ignored"
                );
            }
            return false;
        }
        let epoch = map.epoch;
        match self.install(map) {
            Ok(()) => {
                tracing::info!(epoch, "cluster map reloaded");
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "cluster map not reloaded");
                false
            }
        }
    }

    /// A home refused a request for the wrong home or epoch: read the map
    /// again, unless that was done moments ago.
    pub fn reload_soon(&self) {
        {
            let mut last = self.last_try.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            if last.is_some_and(|t| now.duration_since(t) < RELOAD_EVERY) {
                return;
            }
            *last = Some(now);
        }
        self.reload();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAP: &str = r#"epoch = 3
fragments = 4
hash_seed = "00112233445566778899aabbccddeeff"
[[island]]
name = "a"
primary = "127.0.0.1:1"
fragments = [0, 1]
[[island]]
name = "b"
primary = "127.0.0.1:1"
fragments = [2, 2]
[[island]]
name = "c"
primary = "127.0.0.1:2"
fragments = [3, 3]
"#;

    #[test]
    fn islands_sharing_a_primary_share_a_link_and_a_raised_map_reroutes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("map.toml");
        std::fs::write(&path, MAP).unwrap();
        let map = ClusterMap::load(&path).unwrap();
        let r = Router::new(map.clone(), path.clone(), None).unwrap();
        assert_eq!(r.links().len(), 2);
        assert_eq!(r.epoch(), 3);
        for i in 0..200 {
            let u = format!("user{i}");
            assert_eq!(r.home(&u).addr, map.home(&u).primary);
        }
        // Same epoch, other content: ignored.
        std::fs::write(&path, MAP.replace("127.0.0.1:2", "127.0.0.1:3")).unwrap();
        assert!(!r.reload());
        // Fragment 3 moves to a new store under epoch 4.
        let moved = MAP
            .replace("epoch = 3", "epoch = 4")
            .replace("127.0.0.1:2", "127.0.0.1:3");
        std::fs::write(&path, &moved).unwrap();
        assert!(r.reload());
        assert_eq!(r.epoch(), 4);
        // (The store at :2 is no island's primary any more: its link is
        // retired.)
        assert_eq!(r.links().len(), 2);
        assert!(r.links().iter().all(|l| l.addr.port() != 2));
        let map: ClusterMap = toml::from_str(&moved).unwrap();
        for i in 0..200 {
            let u = format!("user{i}");
            let (link, epoch) = r.route(&u);
            assert_eq!(link.addr, map.home(&u).primary);
            assert_eq!(epoch, 4);
        }
    }
}
