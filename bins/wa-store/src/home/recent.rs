//! Recently stored dedupe keys, in memory.
//!
//! An item that is delivered straight from the cache never reaches the engine,
//! and neither does its dedupe entry. A sender resends only what it has not
//! seen accepted, which is seconds to minutes after the original, so the
//! shard remembers each key for [`WINDOW`] (at most [`MAX`] keys). Items that
//! linger are written to the engine with their dedupe entry long before the
//! window ends. After a restart, the journal replay puts every item it still
//! holds into the engine, dedupe entry included. (The client library
//! deduplicates too, over its own window.)
//!
//! The keys are kept in [`PARTS`] maps and the queue in chunks, so that no
//! single append pays for growing the whole window: one map of 28,000 keys
//! doubling took 5–15 ms on the test machine (rehashing, and first touches
//! of the new table's memory), and every shard's map doubled at about the
//! same moment, since they fill at the same rate.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use foldhash::HashMap;

use crate::storage::{DedupeKey, Original};

/// How long a key is remembered in memory.
pub const WINDOW: Duration = Duration::from_secs(300);
/// Most keys one shard remembers.
pub const MAX: usize = 200_000;
/// Maps the keys are spread over (by a CRC of the key: a sender who crafts
/// ids to land in one map only makes that map grow like a single one would).
const PARTS: usize = 32;
/// Keys per chunk of the queue.
const CHUNK: usize = 1024;

/// A dedupe key flattened into one buffer: recipient and sender each with a
/// one-byte length (user ids are at most 64 bytes), the kind, then the id.
/// One allocation per remembered key, shared by the map and the queue.
type Key = Bytes;

pub struct Recent {
    maps: Box<[HashMap<Key, Original>]>,
    /// Keys in the order they came, oldest first, in chunks of [`CHUNK`].
    order: VecDeque<VecDeque<(Instant, Key)>>,
    len: usize,
    /// Reused to build the key of a lookup without allocating.
    scratch: Vec<u8>,
}

impl Default for Recent {
    fn default() -> Recent {
        Recent {
            maps: (0..PARTS).map(|_| HashMap::default()).collect(),
            order: VecDeque::new(),
            len: 0,
            scratch: Vec::new(),
        }
    }
}

fn part(key: &[u8]) -> usize {
    crc32fast::hash(key) as usize % PARTS
}

fn flatten(k: &DedupeKey<'_>, out: &mut Vec<u8>) {
    out.clear();
    for part in [k.to, k.from] {
        // Appends validate user ids (at most 64 bytes) before they get here.
        debug_assert!(part.len() <= 255, "user ids are validated first");
        let len = part.len().min(255);
        out.push(len as u8);
        out.extend_from_slice(&part.as_bytes()[..len]);
    }
    out.push(k.kind as u8);
    out.extend_from_slice(k.id);
}

impl Recent {
    pub fn get(&mut self, k: &DedupeKey<'_>) -> Option<Original> {
        flatten(k, &mut self.scratch);
        self.maps[part(&self.scratch)]
            .get(self.scratch.as_slice())
            .copied()
    }

    /// Remembers `k` from `now` on (the caller's clock reading, shared
    /// with the rest of the append).
    pub fn insert(&mut self, k: &DedupeKey<'_>, o: Original, now: Instant) {
        flatten(k, &mut self.scratch);
        let key = Bytes::copy_from_slice(&self.scratch);
        self.maps[part(&key)].insert(key.clone(), o);
        if self.order.back().is_none_or(|c| c.len() == CHUNK) {
            self.order.push_back(VecDeque::with_capacity(CHUNK));
        }
        self.order
            .back_mut()
            .expect("pushed above")
            .push_back((now, key));
        self.len += 1;
    }

    /// More keys than [`MAX`]: time to [`Recent::prune`].
    pub fn full(&self) -> bool {
        self.len > MAX
    }

    fn pop_oldest(&mut self) -> Option<(Instant, Key)> {
        let first = self.order.front_mut()?;
        let oldest = first.pop_front();
        if first.is_empty() {
            self.order.pop_front();
        }
        if oldest.is_some() {
            self.len -= 1;
        }
        oldest
    }

    /// Tests: forgets every key but those `keep` (given the recipient and
    /// the original) says to keep, telling `forgot` the recipient of each.
    #[cfg(test)]
    pub fn forget_unless(
        &mut self,
        mut keep: impl FnMut(&str, &Original) -> bool,
        mut forgot: impl FnMut(&str),
    ) {
        for map in self.maps.iter_mut() {
            map.retain(|k, o| {
                let kept = keep(recipient(k), o);
                if !kept {
                    forgot(recipient(k));
                }
                kept
            });
        }
        let maps = &self.maps;
        for chunk in self.order.iter_mut() {
            chunk.retain(|(_, k)| maps[part(k)].contains_key(k));
        }
        self.order.retain(|c| !c.is_empty());
        self.len = self.order.iter().map(VecDeque::len).sum();
    }

    /// Forgets keys older than the window at `now`, and the oldest beyond
    /// [`MAX`], telling `forgot` the recipient of each (whose shard must
    /// ask the engine about that user's keys from then on). (The time is
    /// the operation's, passed in like every time the shard reads.)
    pub fn prune(&mut self, now: Instant, mut forgot: impl FnMut(&str)) {
        while let Some((at, _)) = self.order.front().and_then(|c| c.front()) {
            if now.duration_since(*at) < WINDOW && self.len <= MAX {
                break;
            }
            let (_, key) = self.pop_oldest().expect("front exists");
            self.maps[part(&key)].remove(&key);
            forgot(recipient(&key));
        }
    }
}

/// The recipient a flattened key starts with.
fn recipient(k: &Key) -> &str {
    let len = usize::from(k[0]);
    std::str::from_utf8(&k[1..1 + len]).expect("flattened from a str")
}

#[cfg(test)]
mod tests {
    use common::proto::ItemKind;

    use super::*;

    fn key<'a>(to: &'a str, from: &'a str, kind: ItemKind, id: &'a [u8]) -> DedupeKey<'a> {
        DedupeKey { to, from, kind, id }
    }

    #[test]
    fn pruning_names_the_recipient_of_every_key_it_forgets() {
        let mut r = Recent::default();
        let o = Original {
            seq: 1,
            server_ts_ms: 1,
        };
        let first = key("ann", "bo", ItemKind::Message, b"first");
        r.insert(&first, o, Instant::now());
        for n in 0..MAX as u32 {
            r.insert(
                &key("cy", "bo", ItemKind::Message, &n.to_be_bytes()),
                o,
                Instant::now(),
            );
        }
        assert!(r.full());
        let mut forgot = Vec::new();
        r.prune(Instant::now(), |to| forgot.push(to.to_owned()));
        assert_eq!(
            forgot,
            ["ann"],
            "only the oldest goes, and its recipient is named"
        );
        assert!(!r.full());
        assert_eq!(r.get(&first), None);
        let mut again = Vec::new();
        r.prune(Instant::now(), |to| again.push(to.to_owned()));
        assert!(again.is_empty(), "nothing younger than the window goes");
    }

    #[test]
    fn every_field_counts_and_boundaries_do_not_blur() {
        let mut r = Recent::default();
        let o = Original {
            seq: 7,
            server_ts_ms: 9,
        };
        r.insert(&key("ab", "c", ItemKind::Message, b"id"), o, Instant::now());
        assert_eq!(r.get(&key("ab", "c", ItemKind::Message, b"id")), Some(o));
        for other in [
            key("a", "bc", ItemKind::Message, b"id"),
            key("ab", "c", ItemKind::Delivered, b"id"),
            key("ab", "c", ItemKind::Message, b"i"),
            key("ab", "ci", ItemKind::Message, b"d"),
            key("ba", "c", ItemKind::Message, b"id"),
        ] {
            assert_eq!(r.get(&other), None, "{other:?}");
        }
    }
}
