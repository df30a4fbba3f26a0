//! The ordered key-value engine under the mailboxes: point reads, ordered
//! scans, atomic batches and a durable flush, nothing more.
//!
//! [`super::Mailboxes`] builds every mailbox operation out of these calls
//! over the key layout of [`super::keys`], so an engine ([`super::sled`],
//! [`super::fjall`]) only maps them onto its own API. Everything an engine
//! must guarantee is checked by the conformance suite in `storage/tests.rs`.

use std::ops::ControlFlow;

use super::StorageError;

/// One write of a [`Batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

/// Writes applied all together or not at all, even across a crash.
///
/// A batch names each key at most once: the engines do not agree on which
/// of two writes of one key in one batch wins (sled keeps the last, fjall
/// gives both the same sequence number), and no caller needs it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Batch {
    writes: Vec<Write>,
}

impl Batch {
    pub fn with_capacity(n: usize) -> Batch {
        Batch {
            writes: Vec::with_capacity(n),
        }
    }

    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.writes.push(Write::Put(key, value));
    }

    pub fn delete(&mut self, key: Vec<u8>) {
        self.writes.push(Write::Delete(key));
    }

    pub fn len(&self) -> usize {
        self.writes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// The writes, in the order they were added.
    pub fn into_writes(self) -> Vec<Write> {
        self.writes
    }
}

/// What a scan's visitor sees: one key and its value, borrowed from the
/// engine for the length of the call; returning `Break` ends the scan.
pub type Visit<'a> = dyn FnMut(&[u8], &[u8]) -> Result<ControlFlow<()>, StorageError> + 'a;

/// An ordered map of byte strings to byte strings, kept on disk.
///
/// Keys compare as bytes (lexicographically). Calls are synchronous and hit
/// the engine's cache; none holds a lock between calls. A write (an
/// [`Engine::apply`] that returned) is visible to every later read at once
/// and durable after the next [`Engine::flush`] that starts after it.
pub trait Engine: Send + Sync + 'static {
    /// A value as the engine hands it out (sled's and fjall's are reference
    /// counted, so a read copies nothing).
    type Value: AsRef<[u8]>;

    /// The value of `key`, if present.
    fn get(&self, key: &[u8]) -> Result<Option<Self::Value>, StorageError>;

    /// The length of `key`'s value, if present. An engine that can answer
    /// without reading the value (fjall with large values kept apart) says so
    /// here; deletes use it to keep mailbox sizes.
    fn value_len(&self, key: &[u8]) -> Result<Option<u64>, StorageError> {
        Ok(self.get(key)?.map(|v| v.as_ref().len() as u64))
    }

    /// Calls `visit` with every entry whose key is in `from..to`, in key
    /// order, until it returns `Break`. An empty or inverted range visits
    /// nothing.
    fn scan(&self, from: &[u8], to: &[u8], visit: &mut Visit<'_>) -> Result<(), StorageError>;

    /// Applies every write of `batch` atomically: after a crash either all of
    /// them are there or none. An empty batch does nothing.
    fn apply(&self, batch: Batch) -> Result<(), StorageError>;

    /// Makes every write applied before this call durable (on the disk, not
    /// in a cache that a power loss empties).
    fn flush(&self) -> Result<(), StorageError>;
}
