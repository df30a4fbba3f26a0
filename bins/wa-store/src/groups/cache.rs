//! The groups module's cache of group records (docs/ARCHITECTURE.md
//! "Groups"): the last record read or written of each group, with its
//! key-value version, held to `[groups] record_cache` bytes (the records'
//! encoded sizes); past it the least recently used go, and the next use
//! reads them again from the store.

use std::collections::{BTreeMap, HashMap};

use common::group::GroupState;
use prost::Message as _;

/// What an entry costs beyond its record (the key twice, the maps' nodes).
const OVERHEAD: usize = 128;

struct Entry {
    version: u64,
    state: GroupState,
    size: usize,
    used: u64,
}

/// Group records by group id, least recently used first out.
pub struct Records {
    max_bytes: usize,
    bytes: usize,
    clock: u64,
    map: HashMap<String, Entry>,
    /// Entries by their last use.
    by_use: BTreeMap<u64, String>,
}

impl Records {
    pub fn new(max_bytes: usize) -> Records {
        Records {
            max_bytes,
            bytes: 0,
            clock: 0,
            map: HashMap::new(),
            by_use: BTreeMap::new(),
        }
    }

    /// The bytes the cached records take (as counted against the bound).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len()
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// `group`'s record and version, if cached (it becomes the most
    /// recently used).
    pub fn get(&mut self, group: &str) -> Option<(u64, GroupState)> {
        let now = self.tick();
        let e = self.map.get_mut(group)?;
        self.by_use.remove(&e.used);
        e.used = now;
        self.by_use.insert(now, group.to_owned());
        Some((e.version, e.state.clone()))
    }

    /// Caches `state` at `version` as `group`'s record, evicting the least
    /// recently used records beyond the bound. A record larger than the
    /// whole bound is not kept.
    pub fn insert(&mut self, group: &str, version: u64, state: GroupState) {
        self.remove(group);
        let size = state.encoded_len() + 2 * group.len() + OVERHEAD;
        if size > self.max_bytes {
            return;
        }
        while self.bytes + size > self.max_bytes {
            let Some((_, oldest)) = self.by_use.pop_first() else {
                break;
            };
            if let Some(e) = self.map.remove(&oldest) {
                self.bytes -= e.size;
            }
        }
        let used = self.tick();
        self.by_use.insert(used, group.to_owned());
        self.bytes += size;
        self.map.insert(
            group.to_owned(),
            Entry {
                version,
                state,
                size,
                used,
            },
        );
    }

    pub fn remove(&mut self, group: &str) {
        if let Some(e) = self.map.remove(group) {
            self.by_use.remove(&e.used);
            self.bytes -= e.size;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, members: usize) -> GroupState {
        GroupState {
            id: id.to_owned(),
            members: (0..members)
                .map(|i| common::group::StoredMember {
                    user: format!("user-{i:058}"),
                    since: 1,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn stays_within_its_bytes_and_keeps_the_recently_used() {
        let big = record("#big", 1024);
        let one = big.encoded_len() + 2 * 4 + OVERHEAD;
        let mut c = Records::new(3 * one);
        for i in 0..100 {
            c.insert(&format!("#g{i:02}"), i, record(&format!("#g{i:02}"), 1024));
            assert!(c.bytes() <= 3 * one, "{} > {}", c.bytes(), 3 * one);
            // #g00 is used all along: it stays.
            assert_eq!(c.get("#g00").map(|(v, _)| v), Some(0), "after {i}");
        }
        assert!(c.len() <= 3);
        assert!(c.get("#g98").is_some() || c.get("#g99").is_some());
        assert!(c.get("#g50").is_none());
    }

    #[test]
    fn replacing_and_removing_keep_the_count_right() {
        let mut c = Records::new(1 << 20);
        c.insert("#a", 1, record("#a", 10));
        let once = c.bytes();
        c.insert("#a", 2, record("#a", 10));
        assert_eq!(c.bytes(), once);
        assert_eq!(c.get("#a").map(|(v, _)| v), Some(2));
        c.remove("#a");
        assert_eq!((c.bytes(), c.len()), (0, 0));
        // Too big for the whole bound: not kept, nothing else lost.
        let mut c = Records::new(1000);
        c.insert("#s", 1, record("#s", 1));
        c.insert("#b", 1, record("#b", 100));
        assert!(c.get("#b").is_none());
        assert!(c.get("#s").is_some());
    }
}
