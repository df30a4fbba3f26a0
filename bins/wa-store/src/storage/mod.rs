//! The storage seam: everything the home keeps on disk, in terms of mailboxes.
//!
//! The rest of `wa-store` calls [`Storage`] and never sees an engine's types;
//! the sled engine lives in [`sled`] (the only file that names sled). Calls are
//! synchronous and fast (they hit the engine's cache); durability comes from
//! [`Storage::flush`], which the group-commit flusher (`crate::flusher`) calls.
//!
//! A mailbox is the ordered list of items waiting for one user, numbered by a
//! per-user sequence that only rises, even across restarts and when the mailbox
//! is emptied.

pub mod sled;

use std::path::PathBuf;

use common::proto::{Envelope, ItemKind};

pub use self::sled::SledStorage;

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
    /// records `key` -> (`seq`, `envelope.server_ts_ms`) in the dedupe index and
    /// sets the user's last sequence number to `seq`.
    fn append(
        &self,
        user: &str,
        seq: u64,
        envelope: &Envelope,
        key: &DedupeKey<'_>,
    ) -> Result<(), StorageError>;

    /// Up to `limit` items of `user`'s mailbox with `seq >= from`, in order.
    fn read(&self, user: &str, from: u64, limit: usize) -> Result<Vec<Item>, StorageError>;

    /// Deletes these items of `user`'s mailbox (one atomic write); absent ones
    /// are ignored. Dedupe entries stay.
    fn delete(&self, user: &str, seqs: &[u64]) -> Result<(), StorageError>;

    /// When `user` was last seen online (unix ms), if ever recorded.
    fn last_seen(&self, user: &str) -> Result<Option<u64>, StorageError>;

    fn set_last_seen(&self, user: &str, ms: u64) -> Result<(), StorageError>;

    /// Makes every write that returned before this call durable.
    fn flush(&self) -> Result<(), StorageError>;
}
