//! The mailbox layer: every [`Storage`] operation, written once over an
//! ordered key-value [`Engine`] and the key layout of [`super::keys`].
//!
//! Each write is one [`Engine::apply`], so what belongs together (an item,
//! its dedupe entry, the sequence counter and the mailbox size) lands
//! together or not at all. What a call reads before it writes is the least
//! the operation needs: an append reads the mailbox size and the sequence
//! counter (once per batch), a delete the length of each item it removes.

use std::ops::ControlFlow;

use prost::Message;

use super::engine::{Batch, Engine};
use super::keys::{
    DEDUPES_END, DEDUPES_START, GENERATIONS_END, GENERATIONS_START, ITEMS_END, ITEMS_START,
    KVS_END, KVS_START, SEEN, SEQ, SIZE, SIZES_END, SIZES_START, be_u64, decode_generation,
    decode_item, decode_kv, decode_original, decode_size, dedupe_key, dedupe_prefix, item_key,
    item_prefix, kv_key, kv_value, min_generation_key, original_value, prefix_end, size_key_user,
    size_value, split_generation_key, split_item_key, split_kv_key, user_key,
};
use super::{DedupeKey, DedupePage, Expired, Item, MailboxSize, Original, Storage, StorageError};
use common::proto::Envelope;

/// Users' mailboxes and records in an engine `E`.
pub struct Mailboxes<E> {
    pub(super) engine: E,
}

impl<E: Engine> Mailboxes<E> {
    pub fn new(engine: E) -> Mailboxes<E> {
        Mailboxes { engine }
    }

    /// The engine underneath, for the conformance suite's call counts.
    #[cfg(test)]
    pub(crate) fn engine(&self) -> &E {
        &self.engine
    }

    /// Puts `key` -> `value` on its own (one write is atomic by itself).
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> Result<(), StorageError> {
        let mut b = Batch::with_capacity(1);
        b.put(key, value);
        self.engine.apply(b)
    }
}

impl<E: Engine> Storage for Mailboxes<E> {
    fn dedupe(&self, key: &DedupeKey<'_>) -> Result<Option<Original>, StorageError> {
        self.engine
            .get(&dedupe_key(key)?)?
            .map(|v| decode_original(v.as_ref()))
            .transpose()
    }

    fn last_seq(&self, user: &str) -> Result<u64, StorageError> {
        match self.engine.get(&user_key(SEQ, user)?)? {
            Some(v) => be_u64(v.as_ref(), "sequence counter"),
            None => Ok(0),
        }
    }

    fn append_batch(
        &self,
        user: &str,
        items: &[(u64, &Envelope, DedupeKey<'_>)],
    ) -> Result<(), StorageError> {
        let mut size = self.mailbox_size(user)?;
        let mut last = self.last_seq(user)?;
        let mut b = Batch::with_capacity(2 * items.len() + 2);
        for (seq, envelope, key) in items {
            let value = envelope.encode_to_vec();
            size.items += 1;
            size.bytes += value.len() as u64;
            last = last.max(*seq);
            b.put(item_key(user, *seq)?, value);
            b.put(
                dedupe_key(key)?,
                original_value(*seq, envelope.server_ts_ms).to_vec(),
            );
        }
        b.put(user_key(SEQ, user)?, last.to_be_bytes().to_vec());
        b.put(user_key(SIZE, user)?, size_value(size).to_vec());
        self.engine.apply(b)
    }

    fn read(&self, user: &str, from: u64, limit: usize) -> Result<Vec<Item>, StorageError> {
        let mut out = Vec::with_capacity(limit.min(256));
        if limit == 0 {
            return Ok(out);
        }
        let end = prefix_end(&item_prefix(user)?);
        self.engine
            .scan(&item_key(user, from)?, &end, &mut |k, v| {
                out.push(decode_item(k, v)?);
                Ok(if out.len() >= limit {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                })
            })?;
        Ok(out)
    }

    fn delete(&self, user: &str, seqs: &[u64]) -> Result<u64, StorageError> {
        let mut size = self.mailbox_size(user)?;
        let mut b = Batch::default();
        let mut deleted = 0;
        let unique: std::collections::BTreeSet<u64> = seqs.iter().copied().collect();
        for s in unique {
            let k = item_key(user, s)?;
            if let Some(len) = self.engine.value_len(&k)? {
                size.items = size.items.saturating_sub(1);
                size.bytes = size.bytes.saturating_sub(len);
                deleted += 1;
                b.delete(k);
            }
        }
        if deleted > 0 {
            b.put(user_key(SIZE, user)?, size_value(size).to_vec());
            self.engine.apply(b)?;
        }
        Ok(deleted)
    }

    fn mailbox_size(&self, user: &str) -> Result<MailboxSize, StorageError> {
        let v = self.engine.get(&user_key(SIZE, user)?)?;
        decode_size(v.as_ref().map(AsRef::as_ref))
    }

    fn has_dedupe(&self, to: &str) -> Result<bool, StorageError> {
        let prefix = dedupe_prefix(to)?;
        let mut found = false;
        self.engine
            .scan(&prefix, &prefix_end(&prefix), &mut |_, _| {
                found = true;
                Ok(ControlFlow::Break(()))
            })?;
        Ok(found)
    }

    fn expire_dedupe(
        &self,
        before_ms: u64,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<DedupePage, StorageError> {
        let start = after.unwrap_or(&DEDUPES_START);
        let mut doomed = Batch::default();
        let mut seen = 0;
        let mut next = None;
        self.engine.scan(start, &DEDUPES_END, &mut |k, v| {
            if after == Some(k) {
                return Ok(ControlFlow::Continue(()));
            }
            if decode_original(v)?.server_ts_ms < before_ms {
                doomed.delete(k.to_vec());
            }
            seen += 1;
            if seen >= limit {
                next = Some(k.to_vec());
                return Ok(ControlFlow::Break(()));
            }
            Ok(ControlFlow::Continue(()))
        })?;
        let deleted = doomed.len() as u64;
        self.engine.apply(doomed)?;
        Ok(DedupePage { deleted, next })
    }

    fn expired(
        &self,
        before_ms: u64,
        after: Option<&Expired>,
        limit: usize,
    ) -> Result<Vec<Expired>, StorageError> {
        let start = match after {
            Some(e) => item_key(&e.user, e.seq)?,
            None => ITEMS_START.to_vec(),
        };
        let mut out = Vec::new();
        self.engine.scan(&start, &ITEMS_END, &mut |k, v| {
            let (user, seq) = split_item_key(k)?;
            if after.is_some_and(|a| a.user == user && a.seq == seq) {
                return Ok(ControlFlow::Continue(()));
            }
            if decode_item(k, v)?.envelope.server_ts_ms < before_ms {
                out.push(Expired { user, seq });
                if out.len() >= limit {
                    return Ok(ControlFlow::Break(()));
                }
            }
            Ok(ControlFlow::Continue(()))
        })?;
        Ok(out)
    }

    fn last_seen(&self, user: &str) -> Result<Option<u64>, StorageError> {
        self.engine
            .get(&user_key(SEEN, user)?)?
            .map(|v| be_u64(v.as_ref(), "last seen"))
            .transpose()
    }

    fn set_last_seen(&self, user: &str, ms: u64) -> Result<(), StorageError> {
        self.put(user_key(SEEN, user)?, ms.to_be_bytes().to_vec())
    }

    fn visit_sizes(&self, f: &mut dyn FnMut(&str, MailboxSize)) -> Result<(), StorageError> {
        self.engine.scan(&SIZES_START, &SIZES_END, &mut |k, v| {
            f(size_key_user(k)?, decode_size(Some(v))?);
            Ok(ControlFlow::Continue(()))
        })
    }

    fn set_last_seq(&self, user: &str, seq: u64) -> Result<(), StorageError> {
        if self.last_seq(user)? < seq {
            self.put(user_key(SEQ, user)?, seq.to_be_bytes().to_vec())?;
        }
        Ok(())
    }

    fn kv_get(&self, space: u8, key: &str) -> Result<(u64, Vec<u8>), StorageError> {
        let v = self.engine.get(&kv_key(space, key)?)?;
        decode_kv(v.as_ref().map(AsRef::as_ref))
    }

    fn kv_put(&self, space: u8, key: &str, version: u64, value: &[u8]) -> Result<(), StorageError> {
        self.put(kv_key(space, key)?, kv_value(version, value))
    }

    fn min_generation(&self, user: &str, device: u32) -> Result<u32, StorageError> {
        let v = self.engine.get(&min_generation_key(user, device)?)?;
        decode_generation(v.as_ref().map(AsRef::as_ref))
    }

    fn set_min_generation(
        &self,
        user: &str,
        device: u32,
        generation: u32,
    ) -> Result<(), StorageError> {
        if self.min_generation(user, device)? < generation {
            self.put(
                min_generation_key(user, device)?,
                generation.to_be_bytes().to_vec(),
            )?;
        }
        Ok(())
    }

    fn page_after(
        &self,
        after: Option<&[u8]>,
        max_bytes: usize,
    ) -> Result<super::Pairs, StorageError> {
        Mailboxes::page_after(self, after, max_bytes)
    }

    fn put_raw(&self, pairs: super::Pairs) -> Result<(), StorageError> {
        Mailboxes::put_raw(self, pairs)
    }

    fn recount(&self) -> Result<u64, StorageError> {
        self.recount_all()
    }

    fn clear(&self) -> Result<(), StorageError> {
        self.clear_all()
    }

    fn flush(&self) -> Result<(), StorageError> {
        self.engine.flush()
    }

    fn visit_kv(&self, f: &mut dyn FnMut(u8, &str, u64, &[u8])) -> Result<(), StorageError> {
        self.engine.scan(&KVS_START, &KVS_END, &mut |k, v| {
            let (space, key) = split_kv_key(k)?;
            let (version, value) = decode_kv(Some(v))?;
            f(space, key, version, &value);
            Ok(ControlFlow::Continue(()))
        })
    }

    fn visit_kv_space(
        &self,
        space: u8,
        f: &mut dyn FnMut(&str, u64, &[u8]),
    ) -> Result<(), StorageError> {
        let (from, to) = (
            [KVS_START[0], space],
            [KVS_START[0], space.saturating_add(1)],
        );
        self.engine.scan(&from, &to, &mut |k, v| {
            let (_, key) = split_kv_key(k)?;
            let (version, value) = decode_kv(Some(v))?;
            f(key, version, &value);
            Ok(ControlFlow::Continue(()))
        })
    }

    fn generations_of(&self, user: &str) -> Result<Vec<(u32, u32)>, StorageError> {
        let from = user_key(GENERATIONS_START[0], user)?;
        let mut out = Vec::new();
        self.engine.scan(&from, &prefix_end(&from), &mut |k, v| {
            let (_, device) = split_generation_key(k)?;
            out.push((device, decode_generation(Some(v))?));
            Ok(ControlFlow::Continue(()))
        })?;
        Ok(out)
    }

    fn visit_generations(&self, f: &mut dyn FnMut(&str, u32, u32)) -> Result<(), StorageError> {
        self.engine
            .scan(&GENERATIONS_START, &GENERATIONS_END, &mut |k, v| {
                let (user, device) = split_generation_key(k)?;
                f(user, device, decode_generation(Some(v))?);
                Ok(ControlFlow::Continue(()))
            })
    }
}
