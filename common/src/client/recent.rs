//! A bounded set of recently seen keys: the client's second line of defence
//! against duplicates (the home dedupes first), for items pushed again after a
//! reconnect.

use std::collections::{HashSet, VecDeque};
use std::hash::Hash;

/// Remembers the last `capacity` distinct keys inserted; older ones are
/// forgotten in insertion order.
#[derive(Debug)]
pub(crate) struct Recent<K> {
    seen: HashSet<K>,
    order: VecDeque<K>,
    capacity: usize,
}

impl<K: Hash + Eq + Clone> Recent<K> {
    pub(crate) fn new(capacity: usize) -> Self {
        assert!(capacity > 0, "a window of zero remembers nothing");
        Self {
            seen: HashSet::with_capacity(capacity),
            order: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    /// Records `key`; `true` if it was not in the window.
    pub(crate) fn insert(&mut self, key: K) -> bool {
        if self.seen.contains(&key) {
            return false;
        }
        if self.order.len() == self.capacity {
            let old = self.order.pop_front().expect("full, so not empty");
            self.seen.remove(&old);
        }
        self.seen.insert(key.clone());
        self.order.push_back(key);
        true
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_inside_the_window_are_caught() {
        let mut r = Recent::new(3);
        assert!(r.insert("a"));
        assert!(r.insert("b"));
        assert!(!r.insert("a"));
        assert!(r.insert("c"));
        assert!(!r.insert("b"));
        assert_eq!(r.len(), 3);
    }

    #[test]
    fn the_oldest_is_forgotten_first() {
        let mut r = Recent::new(3);
        for k in 0..3 {
            assert!(r.insert(k));
        }
        assert!(r.insert(3)); // evicts 0
        assert_eq!(r.len(), 3);
        assert!(!r.insert(1) && !r.insert(2) && !r.insert(3));
        assert!(r.insert(0), "0 fell out of the window");
        assert!(r.insert(1), "and inserting 0 evicted 1");
    }

    #[test]
    fn a_repeat_does_not_refresh_or_grow() {
        let mut r = Recent::new(2);
        r.insert(1);
        r.insert(2);
        for _ in 0..10 {
            assert!(!r.insert(1));
        }
        assert_eq!(r.len(), 2);
        assert!(r.insert(3));
        assert!(r.insert(1), "1 was the oldest and was evicted");
    }
}
