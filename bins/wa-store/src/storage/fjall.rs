//! The fjall [`Engine`]: one keyspace. A batch is one fjall write batch
//! (atomic across its keys); journal writes are left to [`Engine::flush`],
//! which persists the journal with `fsync` (`PersistMode::SyncAll`), so many
//! appends share one sync. The only file that names fjall.

use std::path::Path;

use super::engine::{Batch, Engine, Visit, Write};
use super::{Mailboxes, StorageError};

/// Mailboxes kept by fjall.
pub type FjallStorage = Mailboxes<Fjall>;

impl Mailboxes<Fjall> {
    /// Opens (or creates) the database in `dir`; see [`Fjall::open`].
    pub fn open(dir: &Path) -> Result<FjallStorage, StorageError> {
        FjallStorage::open_with_cache(dir, super::TEST_ENGINE_CACHE)
    }

    /// [`FjallStorage::open`] with fjall's block cache at `cache` bytes.
    pub fn open_with_cache(dir: &Path, cache: u64) -> Result<FjallStorage, StorageError> {
        Ok(Mailboxes::new(Fjall::open(dir, cache)?))
    }
}

pub struct Fjall {
    db: fjall::Database,
    ks: fjall::Keyspace,
}

fn engine(op: &'static str) -> impl FnOnce(fjall::Error) -> StorageError {
    move |e| StorageError::Engine {
        op,
        source: Box::new(e),
    }
}

impl Fjall {
    /// Opens (or creates) the database in `dir`. Deletes nothing but the
    /// leftovers of an interrupted creation (see below).
    pub fn open(dir: &Path, cache: u64) -> Result<Fjall, StorageError> {
        let open_err = |source: Box<dyn std::error::Error + Send + Sync>| StorageError::Open {
            path: dir.to_owned(),
            source,
        };
        clear_unfinished_creation(dir).map_err(|e| open_err(Box::new(e)))?;
        std::fs::create_dir_all(dir).map_err(|e| open_err(Box::new(e)))?;
        let db = fjall::Database::builder(dir)
            // Durability is ours to decide: the group-commit flusher persists.
            .manual_journal_persist(true)
            .cache_size(cache)
            // Sealed memtables wait in memory for their flush until the
            // journal reaches this (fjall's default is 512 MiB: that much
            // memory under a stream of writes). 64 MiB is fjall's least.
            .max_journaling_size(64 << 20)
            .open()
            .map_err(|e| open_err(Box::new(e)))?;
        let ks = db
            .keyspace("wa", fjall::KeyspaceCreateOptions::default)
            .map_err(|e| open_err(Box::new(e)))?;
        Ok(Fjall { db, ks })
    }
}

/// fjall writes its `version` marker last when it creates a database, after
/// the lock file, the `keyspaces` folder and a preallocated `0.jnl`. A kill
/// in between leaves those behind without the marker, and the next open
/// then fails for good ("0.jnl: File exists") because fjall tries to create
/// the database again. Without the marker nothing was ever written, so the
/// leftovers are removed and creation starts over. Anything else in the
/// folder means it is not such a leftover, and nothing is touched.
fn clear_unfinished_creation(dir: &Path) -> std::io::Result<()> {
    if !dir.is_dir() || dir.join("version").exists() {
        return Ok(());
    }
    let mut leftovers = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let name = name.to_string_lossy();
        let known = name == "lock" || name == "keyspaces" || name.ends_with(".jnl");
        if !known {
            return Ok(());
        }
        leftovers.push(e.path());
    }
    if leftovers.is_empty() {
        return Ok(());
    }
    tracing::warn!(dir = %dir.display(), "removing an fjall database whose creation was interrupted (no version marker; it holds no data)");
    for p in leftovers {
        if p.is_dir() {
            std::fs::remove_dir_all(&p)?;
        } else {
            std::fs::remove_file(&p)?;
        }
    }
    Ok(())
}

impl Engine for Fjall {
    type Value = fjall::UserValue;

    fn get(&self, key: &[u8]) -> Result<Option<fjall::UserValue>, StorageError> {
        self.ks.get(key).map_err(engine("get"))
    }

    fn value_len(&self, key: &[u8]) -> Result<Option<u64>, StorageError> {
        Ok(self.ks.size_of(key).map_err(engine("get"))?.map(u64::from))
    }

    fn scan(&self, from: &[u8], to: &[u8], visit: &mut Visit<'_>) -> Result<(), StorageError> {
        if from >= to {
            return Ok(());
        }
        for guard in self.ks.range(from..to) {
            let (k, v) = guard.into_inner().map_err(engine("range"))?;
            if visit(&k, &v)?.is_break() {
                break;
            }
        }
        Ok(())
    }

    fn apply(&self, batch: Batch) -> Result<(), StorageError> {
        let mut writes = batch.into_writes();
        // A single write goes without a batch, as it did before batches
        // were the engine's only write: one write is atomic by itself.
        if writes.len() == 1 {
            return match writes.pop().expect("one write") {
                Write::Put(k, v) => self.ks.insert(k, v).map_err(engine("insert")),
                Write::Delete(k) => self.ks.remove(k).map_err(engine("remove")),
            };
        }
        if writes.is_empty() {
            return Ok(());
        }
        let mut b = self.db.batch();
        for w in writes {
            match w {
                Write::Put(k, v) => b.insert(&self.ks, k, v),
                Write::Delete(k) => b.remove(&self.ks, k),
            }
        }
        b.commit().map_err(engine("apply"))
    }

    fn flush(&self) -> Result<(), StorageError> {
        self.db
            .persist(fjall::PersistMode::SyncAll)
            .map_err(engine("flush"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Storage;

    /// What a kill during fjall's very first open leaves (seen in the crash
    /// loop's first-open reproducer): lock, keyspaces/, a preallocated 0.jnl,
    /// no version marker.
    fn leave_unfinished_creation(dir: &Path) {
        std::fs::create_dir_all(dir.join("keyspaces")).unwrap();
        std::fs::write(dir.join("lock"), b"").unwrap();
        let f = std::fs::File::create(dir.join("0.jnl")).unwrap();
        f.set_len(64 << 20).unwrap();
    }

    #[test]
    fn an_interrupted_creation_is_cleared_and_needed_to_be() {
        // Needed: fjall alone cannot open what the kill left.
        let raw = tempfile::tempdir().unwrap();
        leave_unfinished_creation(raw.path());
        let err = fjall::Database::builder(raw.path()).open().err();
        assert!(
            err.is_some(),
            "fjall opens the leftovers by itself; the cleanup is no longer needed"
        );

        // Sufficient: our open clears them and works, and the store is usable.
        let dir = tempfile::tempdir().unwrap();
        leave_unfinished_creation(dir.path());
        let s = FjallStorage::open(dir.path()).unwrap();
        s.set_last_seen("bob", 7).unwrap();
        s.flush().unwrap();
        assert_eq!(s.last_seen("bob").unwrap(), Some(7));
    }

    #[test]
    fn a_real_database_is_never_cleared() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = FjallStorage::open(dir.path()).unwrap();
            s.set_last_seen("bob", 7).unwrap();
            s.flush().unwrap();
        }
        let s = crate::storage::tests::retrying(|| FjallStorage::open(dir.path())).unwrap();
        assert_eq!(s.last_seen("bob").unwrap(), Some(7));
        // An unknown file in a folder without a marker: left alone (open fails
        // rather than deleting something we do not understand).
        let odd = tempfile::tempdir().unwrap();
        leave_unfinished_creation(odd.path());
        std::fs::write(odd.path().join("notes.txt"), b"keep me").unwrap();
        assert!(FjallStorage::open(odd.path()).is_err());
        assert_eq!(
            std::fs::read(odd.path().join("notes.txt")).unwrap(),
            b"keep me"
        );
    }
}
