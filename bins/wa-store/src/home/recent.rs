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

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::storage::{DedupeKey, Original};

/// How long a key is remembered in memory.
pub const WINDOW: Duration = Duration::from_secs(300);
/// Most keys one shard remembers.
pub const MAX: usize = 200_000;

type Key = (String, String, u8, Bytes);

#[derive(Default)]
pub struct Recent {
    map: HashMap<Key, Original>,
    order: VecDeque<(Instant, Key)>,
}

fn owned(k: &DedupeKey<'_>) -> Key {
    (
        k.to.to_owned(),
        k.from.to_owned(),
        k.kind as u8,
        Bytes::copy_from_slice(k.id),
    )
}

impl Recent {
    pub fn get(&self, k: &DedupeKey<'_>) -> Option<Original> {
        self.map.get(&owned(k)).copied()
    }

    pub fn insert(&mut self, k: &DedupeKey<'_>, o: Original) {
        let key = owned(k);
        self.map.insert(key.clone(), o);
        self.order.push_back((Instant::now(), key));
        if self.order.len() > MAX {
            self.prune();
        }
    }

    /// Forgets keys older than the window, and the oldest beyond [`MAX`].
    pub fn prune(&mut self) {
        let now = Instant::now();
        while let Some((at, _)) = self.order.front() {
            if now.duration_since(*at) < WINDOW && self.order.len() <= MAX {
                break;
            }
            let (_, key) = self.order.pop_front().expect("front exists");
            self.map.remove(&key);
        }
    }
}
