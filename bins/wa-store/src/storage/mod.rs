//! The storage seam: everything the home keeps on disk, in terms of mailboxes.
//!
//! The rest of `wa-store` calls [`Storage`] and never sees an engine's types.
//! Underneath, in two layers:
//!
//! - [`Mailboxes`] (`mailboxes.rs`) implements [`Storage`] once, over the key
//!   layout of `keys.rs`, for any [`Engine`];
//! - an [`Engine`] (`engine.rs`) is an ordered key-value map with atomic
//!   batches and a durable flush: [`sled`] and [`fjall`] (the only files that
//!   name their engine).
//!
//! [`open`] opens the configured engine in the data directory after
//! [`format`] checked that the directory was written by that engine, in a
//! format this build reads. Calls are synchronous and fast (they hit the
//! engine's cache); durability comes from [`Storage::flush`], which the
//! group-commit flusher (`crate::flusher`) calls.
//!
//! A mailbox is the ordered list of items waiting for one user, numbered by a
//! per-user sequence that only rises, even across restarts and when the mailbox
//! is emptied.

mod copy;
pub mod engine;
pub mod fjall;
pub mod format;
mod keys;
mod mailboxes;
pub mod sled;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::proto::{Envelope, ItemKind};

use crate::config::Engine as EngineChoice;
use crate::error::StoreError;

pub use self::copy::Pairs;
pub use self::engine::Engine;
pub use self::fjall::FjallStorage;
pub use self::mailboxes::Mailboxes;
pub use self::sled::SledStorage;

/// Opens the mailboxes in `data_dir` with the configured engine, refusing a
/// directory another engine (or an unknown format) wrote; see [`format`].
pub fn open(
    data_dir: &Path,
    engine: EngineChoice,
    cache: u64,
) -> Result<Arc<dyn Storage>, StoreError> {
    format::prepare(data_dir, engine)?;
    let dir = format::engine_dir(data_dir, engine);
    Ok(match engine {
        EngineChoice::Sled => Arc::new(SledStorage::open_with_cache(&dir, cache)?),
        EngineChoice::Fjall => Arc::new(FjallStorage::open_with_cache(&dir, cache)?),
    })
}

/// The engine's own cache for a store whose `[cache] memory` is `memory`:
/// a quarter of it, at least 8 MiB. (sled's default was 1 GiB whatever the
/// budget; docs/OPERATIONS.md, "The store's memory".)
pub fn engine_cache(memory: u64) -> u64 {
    (memory / 4).max(8 << 20)
}

/// The engine cache of stores opened without a budget (tests, tools).
pub const TEST_ENGINE_CACHE: u64 = 64 << 20;

/// A mailbox item as stored: its sequence number and the envelope, with the
/// home's `server_ts_ms` stamped.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub seq: u64,
    pub envelope: Envelope,
}

/// What identifies an item for deduplication: the same sender sending the
/// same kind of item with the same id to the same recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DedupeKey<'a> {
    pub to: &'a str,
    pub from: &'a str,
    pub kind: ItemKind,
    pub id: &'a [u8],
}

/// How much a mailbox holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MailboxSize {
    pub items: u64,
    pub bytes: u64,
}

/// One page of [`Storage::expire_dedupe`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DedupePage {
    /// Entries deleted.
    pub deleted: u64,
    /// Where the next page starts (after this key); `None` once the scan
    /// reached the end.
    pub next: Option<Vec<u8>>,
}

/// A stored item old enough to expire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    pub user: String,
    pub seq: u64,
}

/// What the dedupe index remembers of the first append of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Original {
    pub seq: u64,
    pub server_ts_ms: u64,
}

type Source = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot open the database at {path}: {source}")]
    Open { path: PathBuf, source: Source },
    #[error("database {op} failed: {source}")]
    Engine { op: &'static str, source: Source },
    #[error("database record is corrupt: {what}")]
    Corrupt { what: String },
    /// Level `replicated` with `when_absent = "refuse"`: no caught-up
    /// secondary acknowledged the write within `replication.wait`.
    #[error("no secondary acknowledged the write within replication.wait")]
    Unreplicated,
}

/// A user's durable state. Every method is synchronous; none holds a lock
/// between calls. Writes become durable after the next successful
/// [`Storage::flush`] that starts after they return.
pub trait Storage: Send + Sync + 'static {
    /// The original append of `key`, if it was stored.
    fn dedupe(&self, key: &DedupeKey<'_>) -> Result<Option<Original>, StorageError>;

    /// The highest sequence number ever assigned in `user`'s mailbox (0 if none).
    fn last_seq(&self, user: &str) -> Result<u64, StorageError>;

    /// In one atomic write: stores `envelope` as item `seq` of `user`'s mailbox,
    /// records `key` -> (`seq`, `envelope.server_ts_ms`) in the dedupe index,
    /// raises the user's last sequence number to `seq` and adds the item to the
    /// mailbox's size. Only one task writes a given user's mailbox at a time.
    fn append(
        &self,
        user: &str,
        seq: u64,
        envelope: &Envelope,
        key: &DedupeKey<'_>,
    ) -> Result<(), StorageError> {
        self.append_batch(user, &[(seq, envelope, *key)])
    }

    /// [`Storage::append`] for several items of one mailbox, all in one atomic
    /// write that reads the mailbox's size and sequence counter once (what
    /// write-back uses: a per-item write read both for every item).
    fn append_batch(
        &self,
        user: &str,
        items: &[(u64, &Envelope, DedupeKey<'_>)],
    ) -> Result<(), StorageError>;

    /// Up to `limit` items of `user`'s mailbox with `seq >= from`, in order.
    fn read(&self, user: &str, from: u64, limit: usize) -> Result<Vec<Item>, StorageError>;

    /// Deletes these items of `user`'s mailbox and subtracts them from its
    /// size (one atomic write); absent ones are ignored. Dedupe entries stay.
    /// Returns how many items were deleted.
    fn delete(&self, user: &str, seqs: &[u64]) -> Result<u64, StorageError>;

    /// How many items and bytes `user`'s mailbox holds.
    fn mailbox_size(&self, user: &str) -> Result<MailboxSize, StorageError>;

    /// Whether the engine holds any dedupe entry for messages to `to`. (Only
    /// appends add them, so a shard that writes every append of `to` itself
    /// can remember a `false` until it writes one.)
    fn has_dedupe(&self, to: &str) -> Result<bool, StorageError>;

    /// Deletes dedupe entries of originals stored before `before_ms`, looking
    /// at up to `limit` entries from just after the key `after` (the `next`
    /// of the previous page). Entries are needed only while a sender may
    /// still resend: the sweeper drops them after the mailbox expiry age, so
    /// the index does not grow with every message that ever touched the
    /// engine.
    fn expire_dedupe(
        &self,
        before_ms: u64,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<DedupePage, StorageError>;

    /// Up to `limit` stored items (of any user) whose `server_ts_ms` is before
    /// `before_ms`, starting after `after` (the last one of a previous call).
    fn expired(
        &self,
        before_ms: u64,
        after: Option<&Expired>,
        limit: usize,
    ) -> Result<Vec<Expired>, StorageError>;

    /// When `user` was last seen online (unix ms), if ever recorded.
    fn last_seen(&self, user: &str) -> Result<Option<u64>, StorageError>;

    fn set_last_seen(&self, user: &str, ms: u64) -> Result<(), StorageError>;

    /// Calls `f` with every mailbox's size (mailboxes that were ever written
    /// to the engine; empty ones may be included).
    fn visit_sizes(&self, f: &mut dyn FnMut(&str, MailboxSize)) -> Result<(), StorageError>;

    /// Raises `user`'s last sequence number to `seq` (never lowers it).
    fn set_last_seq(&self, user: &str, seq: u64) -> Result<(), StorageError>;

    /// A key-value record: (version, value); (0, empty) if never written.
    /// `space` is a `common::link::KvSpace`.
    fn kv_get(&self, space: u8, key: &str) -> Result<(u64, Vec<u8>), StorageError>;

    /// Stores a key-value record as it is (the home does the compare-and-set).
    fn kv_put(&self, space: u8, key: &str, version: u64, value: &[u8]) -> Result<(), StorageError>;

    /// The lowest generation accepted for `user`'s `device` (0 if none was set).
    fn min_generation(&self, user: &str, device: u32) -> Result<u32, StorageError>;

    /// Raises the lowest accepted generation of `user`'s `device` (never lowers it).
    fn set_min_generation(
        &self,
        user: &str,
        device: u32,
        generation: u32,
    ) -> Result<(), StorageError>;

    /// Every key-value record: (space, key, version, value). For handing
    /// fragments over to another island.
    #[allow(clippy::type_complexity)]
    fn visit_kv(&self, f: &mut dyn FnMut(u8, &str, u64, &[u8])) -> Result<(), StorageError> {
        let _ = f;
        Ok(())
    }

    /// Every key-value record of `space`: (key, version, value).
    #[allow(clippy::type_complexity)]
    fn visit_kv_space(
        &self,
        space: u8,
        f: &mut dyn FnMut(&str, u64, &[u8]),
    ) -> Result<(), StorageError> {
        self.visit_kv(&mut |s, key, version, value| {
            if s == space {
                f(key, version, value);
            }
        })
    }

    /// Every device generation: (user, device, lowest accepted).
    fn visit_generations(&self, f: &mut dyn FnMut(&str, u32, u32)) -> Result<(), StorageError> {
        let _ = f;
        Ok(())
    }

    /// `user`'s devices with a lowest accepted generation: (device, lowest
    /// accepted), by device (`wactl user`).
    fn generations_of(&self, user: &str) -> Result<Vec<(u32, u32)>, StorageError> {
        let mut out = Vec::new();
        self.visit_generations(&mut |u, device, generation| {
            if u == user {
                out.push((device, generation));
            }
        })?;
        Ok(out)
    }

    /// Makes every write that returned before this call durable.
    fn flush(&self) -> Result<(), StorageError>;

    /// Raw entries after `after` (from the first if `None`) in key order,
    /// about `max_bytes` of them: a page of the copy a secondary catches
    /// up from (`crate::replication`).
    fn page_after(&self, after: Option<&[u8]>, max_bytes: usize) -> Result<Pairs, StorageError>;

    /// Writes raw entries a [`Storage::page_after`] of another store read.
    fn put_raw(&self, pairs: Pairs) -> Result<(), StorageError>;

    /// Makes mailbox sizes and sequence counters agree with the items
    /// (after a copy taken while the source changed); returns how many it
    /// corrected.
    fn recount(&self) -> Result<u64, StorageError>;

    /// Deletes everything (a secondary starting its catch-up again).
    fn clear(&self) -> Result<(), StorageError>;
}

#[cfg(test)]
pub(crate) mod tests;
