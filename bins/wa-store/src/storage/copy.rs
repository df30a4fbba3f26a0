//! Copying a whole engine to another store: what a secondary's catch-up
//! (`crate::replication`) needs of the mailbox layer. Raw pages of every
//! key in order, written as they are, and a recount of the aggregates a
//! copy taken while the engine changed may have got wrong.

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use super::engine::{Batch, Engine};
use super::keys::{
    ITEMS_END, ITEMS_START, SEQ, SIZE, SIZES_END, SIZES_START, be_u64, decode_size, size_key_user,
    size_value, split_item_key, user_key,
};
use super::{MailboxSize, Mailboxes, StorageError};

/// Raw pairs of keys and values.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

impl<E: Engine> Mailboxes<E> {
    /// The entries after `after` (from the first one if `None`), in key
    /// order, until about `max_bytes` of keys and values.
    pub(super) fn page_after(
        &self,
        after: Option<&[u8]>,
        max_bytes: usize,
    ) -> Result<Pairs, StorageError> {
        let mut out = Vec::new();
        let mut bytes = 0;
        let from = match after {
            // The smallest key above `after`.
            Some(a) => {
                let mut k = a.to_vec();
                k.push(0);
                k
            }
            None => Vec::new(),
        };
        self.engine.scan(&from, &[0xff], &mut |k, v| {
            bytes += k.len() + v.len();
            out.push((k.to_vec(), v.to_vec()));
            Ok(if bytes >= max_bytes {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            })
        })?;
        Ok(out)
    }

    /// Writes `pairs` as they are, in one batch.
    pub(super) fn put_raw(&self, pairs: Pairs) -> Result<(), StorageError> {
        let mut b = Batch::with_capacity(pairs.len());
        for (k, v) in pairs {
            b.put(k, v);
        }
        self.engine.apply(b)
    }

    /// Makes every mailbox size agree with the items there, and every
    /// sequence counter at least the highest item's number. Returns how many
    /// aggregates it corrected.
    pub(super) fn recount_all(&self) -> Result<u64, StorageError> {
        // user -> (size, highest seq)
        let mut counted: BTreeMap<String, (MailboxSize, u64)> = BTreeMap::new();
        self.engine.scan(&ITEMS_START, &ITEMS_END, &mut |k, v| {
            let (user, seq) = split_item_key(k)?;
            let e = counted.entry(user).or_default();
            e.0.items += 1;
            e.0.bytes += v.len() as u64;
            e.1 = e.1.max(seq);
            Ok(ControlFlow::Continue(()))
        })?;
        let mut stored: BTreeMap<String, MailboxSize> = BTreeMap::new();
        self.engine.scan(&SIZES_START, &SIZES_END, &mut |k, v| {
            stored.insert(size_key_user(k)?.to_string(), decode_size(Some(v))?);
            Ok(ControlFlow::Continue(()))
        })?;
        let mut b = Batch::default();
        let mut fixed = 0;
        for (user, size) in &stored {
            if !counted.contains_key(user) && *size != MailboxSize::default() {
                b.put(
                    user_key(SIZE, user)?,
                    size_value(MailboxSize::default()).to_vec(),
                );
                fixed += 1;
            }
        }
        for (user, (size, top)) in &counted {
            if stored.get(user) != Some(size) {
                b.put(user_key(SIZE, user)?, size_value(*size).to_vec());
                fixed += 1;
            }
            let seq_key = user_key(SEQ, user)?;
            let last = match self.engine.get(&seq_key)? {
                Some(v) => be_u64(v.as_ref(), "sequence counter")?,
                None => 0,
            };
            if last < *top {
                b.put(seq_key, top.to_be_bytes().to_vec());
                fixed += 1;
            }
        }
        self.engine.apply(b)?;
        Ok(fixed)
    }

    /// Deletes every entry (a secondary starting its catch-up again).
    pub(super) fn clear_all(&self) -> Result<(), StorageError> {
        loop {
            let page = self.page_after(None, 4 << 20)?;
            if page.is_empty() {
                return Ok(());
            }
            let mut b = Batch::with_capacity(page.len());
            for (k, _) in page {
                b.delete(k);
            }
            self.engine.apply(b)?;
        }
    }
}
