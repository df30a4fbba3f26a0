//! Hand-over of a fragment to another island: export a mailbox, delete what
//! arrived at its new home, list the users cached here.

use std::sync::Arc;

use super::Shard;
use crate::storage::Item;

impl Shard {
    /// These items are at their new home: delete them here.
    pub(super) fn handed_off(&mut self, user: &str, seqs: &[u64]) {
        self.remove(user, seqs, false);
        self.refill(user, seqs);
    }

    /// The users this shard holds items of in memory.
    pub(super) fn cached_users(&self) -> Vec<String> {
        self.users
            .iter()
            .filter(|(_, u)| !u.cache.is_empty())
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Every item of `user`'s mailbox, memory and engine merged in order
    /// (items deleted while a write-back slice is in flight left out).
    pub(super) fn export(&mut self, user: &str) -> Vec<Item> {
        let storage = Arc::clone(&self.storage);
        let Ok(u) = self.load(user) else {
            return Vec::new();
        };
        let mut items = match storage.read(user, 1, usize::MAX) {
            Ok(items) => items,
            Err(e) => {
                tracing::error!(error = %e, "cannot read a mailbox to hand it over");
                Vec::new()
            }
        };
        if let Some(f) = &u.flight {
            items.retain(|i| !f.doomed.contains_key(&i.seq));
        }
        items.extend(u.cache.iter().map(|(&seq, c)| Item {
            seq,
            envelope: c.envelope.clone(),
        }));
        items.sort_by_key(|i| i.seq);
        items.dedup_by_key(|i| i.seq);
        self.evict_if_idle(user);
        items
    }
}
