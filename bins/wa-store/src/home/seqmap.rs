//! A user's cached items by sequence number, in a ring buffer.
//!
//! Sequence numbers are assigned in rising order and appended at the back;
//! items leave mostly from the front (delivered in order, written back or
//! expired oldest first). A `BTreeMap` did the same work with a node search
//! and, every few inserts, a node split: 3–4 % of the store's CPU at 50,000
//! appends/s. Here an append is a push at the back, and a lookup a binary
//! search. Removing from the middle (an acknowledgement out of order) shifts
//! the shorter side, which a mailbox's bypass size bounds.

use std::collections::VecDeque;
use std::ops::RangeFrom;

#[derive(Debug)]
pub struct SeqMap<V> {
    items: VecDeque<(u64, V)>,
}

impl<V> Default for SeqMap<V> {
    fn default() -> SeqMap<V> {
        SeqMap {
            items: VecDeque::new(),
        }
    }
}

impl<V> SeqMap<V> {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn find(&self, seq: u64) -> Result<usize, usize> {
        self.items.binary_search_by_key(&seq, |(s, _)| *s)
    }

    /// Inserts `v` at `seq`, returning the value it replaces. O(1) for a
    /// `seq` above every other (the append path).
    pub fn insert(&mut self, seq: u64, v: V) -> Option<V> {
        if self.items.back().is_none_or(|(last, _)| *last < seq) {
            self.items.push_back((seq, v));
            return None;
        }
        match self.find(seq) {
            Ok(i) => Some(std::mem::replace(&mut self.items[i].1, v)),
            Err(i) => {
                self.items.insert(i, (seq, v));
                None
            }
        }
    }

    pub fn remove(&mut self, seq: &u64) -> Option<V> {
        if self.items.front().is_some_and(|(first, _)| first == seq) {
            return self.items.pop_front().map(|(_, v)| v);
        }
        let i = self.find(*seq).ok()?;
        self.items.remove(i).map(|(_, v)| v)
    }

    pub fn get(&self, seq: &u64) -> Option<&V> {
        self.find(*seq).ok().map(|i| &self.items[i].1)
    }

    #[cfg(test)]
    pub fn contains_key(&self, seq: &u64) -> bool {
        self.find(*seq).is_ok()
    }

    /// In rising order of sequence number.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&u64, &V)> {
        self.items.iter().map(|(s, v)| (s, v))
    }

    /// From `range.start` on, in rising order.
    pub fn range(&self, range: RangeFrom<u64>) -> impl DoubleEndedIterator<Item = (&u64, &V)> {
        let from = self.items.partition_point(|(s, _)| *s < range.start);
        self.items.range(from..).map(|(s, v)| (s, v))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::SeqMap;

    #[derive(Debug, Clone)]
    enum Op {
        /// Insert at the next sequence number (after a gap of this many).
        Push(u8),
        /// Insert at this one (anywhere, maybe replacing).
        Insert(u8),
        Remove(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..3).prop_map(Op::Push),
            1 => any::<u8>().prop_map(Op::Insert),
            3 => any::<u8>().prop_map(Op::Remove),
        ]
    }

    proptest! {
        /// Whatever the order of inserts and removes, it answers as a
        /// `BTreeMap` does.
        #[test]
        fn it_answers_as_a_btreemap_does(ops in prop::collection::vec(op(), 0..200), from in any::<u8>()) {
            let (mut m, mut model) = (SeqMap::default(), BTreeMap::new());
            let mut next = 0u64;
            for (i, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Push(gap) => {
                        next += 1 + u64::from(gap);
                        prop_assert_eq!(m.insert(next, i), model.insert(next, i));
                    }
                    Op::Insert(s) => {
                        let s = u64::from(s);
                        next = next.max(s);
                        prop_assert_eq!(m.insert(s, i), model.insert(s, i));
                    }
                    Op::Remove(s) => {
                        let s = u64::from(s);
                        prop_assert_eq!(m.remove(&s), model.remove(&s));
                    }
                }
                prop_assert_eq!(m.len(), model.len());
            }
            for s in 0..=u64::from(u8::MAX) {
                prop_assert_eq!(m.get(&s), model.get(&s));
                prop_assert_eq!(m.contains_key(&s), model.contains_key(&s));
            }
            prop_assert!(m.iter().eq(model.iter()));
            let from = u64::from(from);
            prop_assert!(m.range(from..).eq(model.range(from..)));
            prop_assert!(m.range(from..).rev().eq(model.range(from..).rev()));
        }
    }
}
