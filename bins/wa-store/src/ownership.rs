//! Which users this node is home to: the fragments of its island in the
//! cluster map, and the map's epoch (docs/ARCHITECTURE.md, "Islands").
//!
//! Every request from a link is checked here before it reaches the home: a
//! request routed by another epoch than this node's is refused with
//! `STALE_EPOCH` (an older one is the fencing DESIGN §6 asks for: a sender
//! that has not seen the newest map must not write), and one for a user
//! whose fragment this island does not own with `WRONG_HOME`. Either way the
//! sender reloads its map and retries at the home it names. The map is
//! reloaded on SIGHUP, and when a request names a newer epoch than this node
//! has (the file may have changed before the signal came).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use common::cluster::{ClusterError, ClusterMap};
use common::proto::Code;

/// Reloads that a request's newer epoch may cause, at most one per this.
const RELOAD_EVERY: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum OwnershipError {
    #[error("no island is named {name:?} in the cluster map (it has {islands})")]
    NoIsland { name: String, islands: String },
    #[error("the cluster map has {count} islands; name this node's (cluster.island)")]
    Unnamed { count: usize },
    #[error(transparent)]
    Map(#[from] ClusterError),
    #[error("the cluster map's epoch {new} is below this node's {current}; refusing to go back")]
    Older { current: u64, new: u64 },
    #[error("the cluster map changed but its epoch stayed {epoch}; raise it with every change")]
    SameEpoch { epoch: u64 },
    #[error(transparent)]
    Behind(#[from] crate::moves::Behind),
    #[error(transparent)]
    Moves(#[from] crate::moves::MovesError),
}

/// The index of this node's island in `map`: the one named `name`, or the
/// only one if `name` is empty.
pub fn island_of(map: &ClusterMap, name: &str) -> Result<usize, OwnershipError> {
    if name.is_empty() {
        return match map.islands.len() {
            1 => Ok(0),
            count => Err(OwnershipError::Unnamed { count }),
        };
    }
    map.islands
        .iter()
        .position(|i| i.name == name)
        .ok_or_else(|| OwnershipError::NoIsland {
            name: name.to_owned(),
            islands: map
                .islands
                .iter()
                .map(|i| format!("{:?}", i.name))
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// One version of the map, seen from this node.
#[derive(Debug)]
pub struct Owned {
    pub map: ClusterMap,
    /// This node's island in `map.islands`.
    pub island: usize,
    /// Fragments of this island whose items the previous owner is still
    /// handing over: refused to everything but that hand-over (sorted).
    arriving: Vec<u32>,
    /// This node is its island's primary under this map (not the
    /// secondary): only a primary serves anything.
    pub primary: bool,
}

/// Whether the node reachable at `advertise` is the primary of island
/// `island` in `map`: it is, unless the map names it the island's
/// secondary (`crate::replication`).
pub fn is_primary(
    map: &ClusterMap,
    island: usize,
    advertise: Option<std::net::SocketAddr>,
) -> bool {
    advertise.is_none() || map.islands[island].secondary != advertise
}

impl Owned {
    pub fn epoch(&self) -> u64 {
        self.map.epoch
    }

    /// This node is the home of `user` (or of the key-value key `user`).
    pub fn owns(&self, user: &str) -> bool {
        self.primary && self.map.home_index(user) == self.island
    }

    /// This node serves `user` now: owns it, and (unless this is the
    /// hand-over itself) its fragment is not still arriving.
    fn serves(&self, user: &str, handoff: bool) -> bool {
        let f = self.map.fragment(user);
        self.primary
            && self.map.islands[self.island].owns(f)
            && (handoff || self.arriving.binary_search(&f).is_err())
    }

    /// This island's fragments, first and last.
    pub fn fragments(&self) -> [u32; 2] {
        self.map.islands[self.island].fragments
    }
}

/// The map this node goes by, and where to read it again.
pub struct Ownership {
    path: PathBuf,
    island: String,
    /// This node's link address as the map names it (`[cluster] advertise`).
    advertise: Option<std::net::SocketAddr>,
    current: RwLock<Arc<Owned>>,
    /// When a request last made this node read the map.
    last_try: Mutex<Option<Instant>>,
    moves: Mutex<Moves>,
    /// Where moves in progress are recorded (`crate::moves`); none in
    /// unit tests.
    record: Option<PathBuf>,
    /// A reload left changes to carry out ([`Ownership::changes`]).
    pub changed: tokio::sync::Notify,
    /// Serving nothing for now: a primary that does not (yet, or any more)
    /// surely hold its lease in etcd (`crate::failover`).
    fenced: std::sync::atomic::AtomicBool,
}

/// Fragments changing hands (docs/OPERATIONS.md, "Moving fragments"), apart
/// from the ones arriving under the current map (in [`Owned`]).
#[derive(Default)]
struct Moves {
    /// Hand-overs finished under an epoch this node has not read yet:
    /// `[epoch, first, last]`.
    early: Vec<[u64; 3]>,
    /// Fragments lost whose items are not all at their new home yet.
    leaving: Vec<crate::moves::Range>,
    /// Reloads whose consequences (sessions to close, items to hand over)
    /// are still to be carried out, oldest first.
    changes: Vec<Reloaded>,
}

/// What a reload changed.
pub struct Reloaded {
    pub owned: Arc<Owned>,
    /// Fragment ranges this node owned before and no longer does: their
    /// items go to their new home.
    pub lost: Vec<[u32; 2]>,
}

impl Ownership {
    /// Reads the map at `path`; this node belongs to `island` and is
    /// reached at `advertise` (which tells primary from secondary). With a
    /// `record` (the data directory's `MOVES`), a move that was in progress
    /// when the node stopped goes on (`crate::moves`): fragments still
    /// arriving stay refused, and the hand-over of lost ones starts again
    /// ([`Ownership::changes`]). The caller writes the record back
    /// ([`Ownership::record`]) once the data directory is there.
    pub fn load(
        path: PathBuf,
        island: String,
        advertise: Option<std::net::SocketAddr>,
        record: Option<PathBuf>,
    ) -> Result<Ownership, OwnershipError> {
        let map = ClusterMap::load(&path)?;
        let index = island_of(&map, &island)?;
        let primary = is_primary(&map, index, advertise);
        let rec = match &record {
            Some(p) => crate::moves::Served::read(p)?,
            None => None,
        };
        let fragments = map.islands[index].fragments;
        let mut resumed = crate::moves::resume(rec.as_ref(), map.epoch, fragments)?;
        if !primary && (!resumed.arriving.is_empty() || !resumed.leaving.is_empty()) {
            // A secondary serves nothing and hands nothing over; its data
            // comes from its primary.
            tracing::warn!(
                ?resumed,
                "this node is now a secondary: the fragment move it recorded is left to its primary"
            );
            resumed = crate::moves::Resumed::default();
        }
        let owned = Arc::new(Owned {
            map,
            island: index,
            arriving: resumed.arriving,
            primary,
        });
        let mut moves = Moves {
            early: resumed.done_early,
            leaving: resumed.leaving.clone(),
            changes: Vec::new(),
        };
        if !moves.leaving.is_empty() || !owned.arriving.is_empty() {
            tracing::info!(
                epoch = owned.epoch(),
                arriving = owned.arriving.len(),
                leaving = ?moves.leaving,
                "a fragment move was in progress when this node stopped: going on with it"
            );
        }
        if !resumed.leaving.is_empty() {
            moves.changes.push(Reloaded {
                owned: Arc::clone(&owned),
                lost: resumed.leaving,
            });
        }
        let o = Ownership {
            path,
            island,
            advertise,
            current: RwLock::new(owned),
            last_try: Mutex::new(None),
            moves: Mutex::new(moves),
            record,
            changed: tokio::sync::Notify::new(),
            fenced: std::sync::atomic::AtomicBool::new(false),
        };
        if !o.moves().changes.is_empty() {
            o.changed.notify_one();
        }
        Ok(o)
    }

    /// Writes where moves stand (`crate::moves`) before anything acts on it.
    fn persist(&self, cur: &Owned, m: &Moves) -> std::io::Result<()> {
        let Some(path) = &self.record else {
            return Ok(());
        };
        crate::moves::Served {
            epoch: cur.epoch(),
            fragments: cur.fragments(),
            arriving: crate::moves::ranges(&cur.arriving),
            leaving: m.leaving.clone(),
            done_early: m.early.clone(),
        }
        .write(path)
    }

    /// Writes what this node serves now and where moves stand
    /// (`crate::moves`).
    pub fn record(&self) -> std::io::Result<()> {
        self.persist(&self.current(), &self.moves())
    }

    /// [`Ownership::persist`], logging a failure (the change holds in
    /// memory; a restart before the next successful write forgets it).
    fn persist_or_log(&self, cur: &Owned, m: &Moves) {
        if let Err(e) = self.persist(cur, m) {
            tracing::error!(error = %e, "cannot record the fragment move in the data directory; a restart now would forget it");
        }
    }

    /// Fences this node (it serves nothing) or lifts the fence; `true` if
    /// that changed anything.
    pub fn set_fenced(&self, fenced: bool) -> bool {
        self.fenced
            .swap(fenced, std::sync::atomic::Ordering::SeqCst)
            != fenced
    }

    pub fn fenced(&self) -> bool {
        self.fenced.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn current(&self) -> Arc<Owned> {
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Whether a request for `user` routed by `epoch` may be served here;
    /// `handoff`: it is an item or record handed over by the fragment's
    /// previous owner, taken while the fragment is arriving.
    pub fn check(&self, user: &str, epoch: u64, handoff: bool) -> Result<(), Code> {
        let mut cur = self.current();
        if epoch > cur.epoch() && self.may_try() {
            match self.reload() {
                Ok(Some(new)) => cur = new,
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "cannot reload the cluster map"),
            }
        }
        if epoch != cur.epoch() {
            return Err(Code::StaleEpoch);
        }
        if self.fenced() || !cur.serves(user, handoff) {
            return Err(Code::WrongHome);
        }
        Ok(())
    }

    fn moves(&self) -> std::sync::MutexGuard<'_, Moves> {
        self.moves.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The previous owner handed fragments `[first, last]` over, under the
    /// map of `epoch`: serve them (now, or once this node reads that map).
    /// Told under an older epoch (this node read a newer map meanwhile),
    /// the fragments that are still arriving are served too: their items
    /// are here.
    pub fn handoff_done(&self, first: u32, last: u32, epoch: u64) {
        // (Lock order: `current`, then `moves`, as in `reload`.)
        let mut cur = self.current.write().unwrap_or_else(|p| p.into_inner());
        let mut m = self.moves();
        if epoch <= cur.epoch() {
            let arriving = cur
                .arriving
                .iter()
                .copied()
                .filter(|f| !(first..=last).contains(f))
                .collect();
            *cur = Arc::new(Owned {
                map: cur.map.clone(),
                island: cur.island,
                arriving,
                primary: cur.primary,
            });
        } else {
            m.early.push([epoch, u64::from(first), u64::from(last)]);
        }
        self.persist_or_log(&cur, &m);
        tracing::info!(first, last, epoch, "fragments handed over to this node");
    }

    /// Every item and record of fragment ranges `lost` is at its new home
    /// (`crate::handoff`): nothing of them is left to hand over.
    pub fn handed_off(&self, lost: &[crate::moves::Range]) {
        let cur = self.current();
        let mut m = self.moves();
        for r in lost {
            m.leaving = m
                .leaving
                .iter()
                .flat_map(|l| crate::moves::minus(*l, *r))
                .collect();
        }
        self.persist_or_log(&cur, &m);
    }

    /// Another home said this node's map is behind (`STALE_EPOCH`) or
    /// sent to the wrong island (`WRONG_HOME`): reads the map again, at
    /// most once per `RELOAD_EVERY`, as a request with a newer epoch does.
    pub fn refresh(&self) {
        if self.may_try()
            && let Err(e) = self.reload()
        {
            tracing::warn!(error = %e, "cannot reload the cluster map");
        }
    }

    fn may_try(&self) -> bool {
        let mut last = self.last_try.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < RELOAD_EVERY) {
            return false;
        }
        *last = Some(now);
        true
    }

    /// Reads the map again. `Some` with the new view if it changed; a map
    /// with a lower epoch, or another map under the same epoch, is refused
    /// and the current one kept. Fragments this node gains are refused
    /// until their previous owner has handed them over.
    pub fn reload(&self) -> Result<Option<Arc<Owned>>, OwnershipError> {
        let map = ClusterMap::load(&self.path)?;
        let island = island_of(&map, &self.island)?;
        let mut cur = self.current.write().unwrap_or_else(|p| p.into_inner());
        if map == cur.map {
            return Ok(None);
        }
        if map.epoch < cur.epoch() {
            return Err(OwnershipError::Older {
                current: cur.epoch(),
                new: map.epoch,
            });
        }
        if map.epoch == cur.epoch() {
            return Err(OwnershipError::SameEpoch { epoch: map.epoch });
        }
        let old = cur.fragments();
        let own = map.islands[island].fragments;
        let epoch = map.epoch;
        let mut m = self.moves();
        let early = std::mem::take(&mut m.early);
        // Gained now, or still arriving from an earlier move.
        let mut arriving: Vec<u32> = crate::moves::gained(old, own);
        arriving.extend(cur.arriving.iter().copied());
        arriving.retain(|f| {
            (own[0]..=own[1]).contains(f)
                && !early
                    .iter()
                    .any(|&[e, x, y]| e == epoch && (x..=y).contains(&u64::from(*f)))
        });
        arriving.sort_unstable();
        arriving.dedup();
        m.early = early.into_iter().filter(|e| e[0] > epoch).collect();
        let primary = is_primary(&map, island, self.advertise);
        let new = Arc::new(Owned {
            map,
            island,
            arriving,
            primary,
        });
        let lost = crate::moves::lost(old, own);
        let leaving: Vec<_> = m.leaving.iter().chain(&lost).copied().collect();
        m.leaving = leaving
            .into_iter()
            .flat_map(|l| crate::moves::minus(l, own))
            .collect();
        self.persist_or_log(&new, &m);
        tracing::info!(
            epoch = new.epoch(),
            fragments = ?new.fragments(),
            arriving = new.arriving.len(),
            "cluster map reloaded"
        );
        m.changes.push(Reloaded {
            owned: Arc::clone(&new),
            lost,
        });
        drop(m);
        *cur = Arc::clone(&new);
        self.changed.notify_one();
        Ok(Some(new))
    }

    /// What reloads changed since the last call, oldest first.
    pub fn changes(&self) -> Vec<Reloaded> {
        std::mem::take(&mut self.moves().changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(epoch: u64, split: u32) -> String {
        format!(
            "epoch = {epoch}\nfragments = 16\nhash_seed = \"00112233445566778899aabbccddeeff\"\n\
             [[island]]\nname = \"a\"\nprimary = \"127.0.0.1:1\"\nfragments = [0, {}]\n\
             [[island]]\nname = \"b\"\nprimary = \"127.0.0.1:2\"\nfragments = [{split}, 15]\n",
            split - 1
        )
    }

    #[test]
    fn refuses_other_users_and_other_epochs_and_follows_a_raised_map() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("map.toml");
        std::fs::write(&path, map(3, 8)).unwrap();
        assert!(matches!(
            Ownership::load(path.clone(), String::new(), None, None),
            Err(OwnershipError::Unnamed { count: 2 })
        ));
        assert!(matches!(
            Ownership::load(path.clone(), "c".into(), None, None),
            Err(OwnershipError::NoIsland { .. })
        ));
        let o = Ownership::load(path.clone(), "a".into(), None, None).unwrap();
        let cur = o.current();
        let mine = (0..1000)
            .map(|i| format!("u{i}"))
            .find(|u| cur.owns(u))
            .unwrap();
        let theirs = (0..1000)
            .map(|i| format!("u{i}"))
            .find(|u| !cur.owns(u))
            .unwrap();
        assert_eq!(o.check(&mine, 3, false), Ok(()));
        assert_eq!(o.check(&theirs, 3, false), Err(Code::WrongHome));
        assert_eq!(o.check(&mine, 2, false), Err(Code::StaleEpoch));
        assert_eq!(o.check(&mine, 0, false), Err(Code::StaleEpoch));
        // A newer epoch than the file holds: still refused.
        assert_eq!(o.check(&mine, 4, false), Err(Code::StaleEpoch));

        // Island a gives every fragment to b under epoch 4; a request that
        // names epoch 4 makes the node read the map.
        std::fs::write(&path, map(4, 1)).unwrap();
        std::thread::sleep(RELOAD_EVERY);
        assert_eq!(o.check(&mine, 4, false).is_ok(), o.current().owns(&mine));
        assert_eq!(o.current().epoch(), 4);
        assert_eq!(o.check(&mine, 3, false), Err(Code::StaleEpoch));

        // Going back, or changing the map without raising the epoch, is refused.
        std::fs::write(&path, map(2, 8)).unwrap();
        assert!(matches!(o.reload(), Err(OwnershipError::Older { .. })));
        std::fs::write(&path, map(4, 2)).unwrap();
        assert!(matches!(o.reload(), Err(OwnershipError::SameEpoch { .. })));
        std::fs::write(&path, map(4, 1)).unwrap();
        assert!(o.reload().unwrap().is_none());
        assert_eq!(o.current().epoch(), 4);
        assert_eq!(o.changes().len(), 1, "the move to epoch 4");
    }

    #[test]
    fn gained_fragments_are_refused_until_handed_over_even_when_told_early() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("map.toml");
        std::fs::write(&path, map(1, 4)).unwrap();
        let o = Ownership::load(path.clone(), "a".into(), None, None).unwrap();
        // Island a gains fragments 4..=7 under epoch 2, and 8..=9 under 3.
        let of = |f: u32| {
            (0..)
                .map(|i| format!("u{i}"))
                .find(|u| o.current().map.fragment(u) == f)
                .unwrap()
        };
        let (u5, u9) = (of(5), of(9));
        std::fs::write(&path, map(2, 8)).unwrap();
        o.reload().unwrap().unwrap();
        assert_eq!(
            o.check(&u5, 2, false),
            Err(Code::WrongHome),
            "still arriving"
        );
        assert_eq!(o.check(&u5, 2, true), Ok(()), "the hand-over itself");
        o.handoff_done(4, 7, 2);
        assert_eq!(o.check(&u5, 2, false), Ok(()));
        // Told before this node read the map of epoch 3.
        o.handoff_done(8, 9, 3);
        std::fs::write(&path, map(3, 10)).unwrap();
        o.reload().unwrap().unwrap();
        assert_eq!(o.check(&u9, 3, false), Ok(()));
        let lost: Vec<_> = o.changes().into_iter().map(|c| c.lost).collect();
        assert!(
            lost.iter().all(Vec::is_empty),
            "nothing lost, only gained: {lost:?}"
        );
        assert_eq!(lost.len(), 2);
    }

    #[test]
    fn a_restart_mid_move_keeps_refusing_what_arrives_and_hands_over_what_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("map.toml");
        let record = dir.path().join(crate::moves::FILE);
        let start = || {
            let o = Ownership::load(path.clone(), "a".into(), None, Some(record.clone())).unwrap();
            o.record().unwrap();
            o
        };
        std::fs::write(&path, map(1, 4)).unwrap();
        let o = start();
        let of = |o: &Ownership, f: u32| {
            (0..)
                .map(|i| format!("u{i}"))
                .find(|u| o.current().map.fragment(u) == f)
                .unwrap()
        };
        let u5 = of(&o, 5);
        // Epoch 2: island a gains 4..=7. A restart before the hand-over ends
        // still refuses them.
        std::fs::write(&path, map(2, 8)).unwrap();
        o.reload().unwrap().unwrap();
        drop(o);
        let o = start();
        assert_eq!(
            o.check(&u5, 2, false),
            Err(Code::WrongHome),
            "still arriving"
        );
        o.handoff_done(4, 7, 2);
        drop(o);
        let o = start();
        assert_eq!(
            o.check(&u5, 2, false),
            Ok(()),
            "handed over before the restart"
        );

        // Epoch 3, read only at a start (the node was stopped when it came):
        // a loses 0..=1 and gains 8..=9. The loss is handed over after the
        // start, again after a restart that came too early, and no more once
        // done.
        drop(o);
        let three = map(3, 10).replace("fragments = [0, 9]", "fragments = [2, 9]")
            + "[[island]]\nname = \"c\"\nprimary = \"127.0.0.1:3\"\nfragments = [0, 1]\n";
        std::fs::write(&path, three).unwrap();
        let o = start();
        let lost: Vec<_> = o.changes().into_iter().map(|c| c.lost).collect();
        assert_eq!(lost, vec![vec![[0, 1]]]);
        assert_eq!(o.check(&of(&o, 9), 3, false), Err(Code::WrongHome));
        drop(o);
        let o = start();
        let lost: Vec<_> = o.changes().into_iter().map(|c| c.lost).collect();
        assert_eq!(lost, vec![vec![[0, 1]]], "not handed over yet");
        o.handed_off(&[[0, 1]]);
        drop(o);
        let o = start();
        assert!(o.changes().is_empty(), "nothing left to hand over");

        // A map older than the one served under is refused at start.
        drop(o);
        std::fs::write(&path, map(2, 8)).unwrap();
        let e = Ownership::load(path.clone(), "a".into(), None, Some(record.clone()))
            .err()
            .unwrap();
        assert!(e.to_string().contains("below 3"), "{e}");
    }
}
