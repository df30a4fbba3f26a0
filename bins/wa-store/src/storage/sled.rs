//! The sled [`Engine`]: one tree. A batch of several writes is one
//! `apply_batch`, so a crash leaves all of them or none (an append's item,
//! dedupe entry, counter and size). A flush is sled's `flush` followed by an
//! `fsync` of its log file. The only file that names sled.

use std::path::Path;

use super::engine::{Batch, Engine, Visit, Write};
use super::{Mailboxes, StorageError};

/// Mailboxes kept by sled.
pub type SledStorage = Mailboxes<Sled>;

impl Mailboxes<Sled> {
    /// Opens (or creates) the database in `dir`; see [`Sled::open`].
    pub fn open(dir: &Path) -> Result<SledStorage, StorageError> {
        SledStorage::open_with_cache(dir, super::TEST_ENGINE_CACHE)
    }

    /// [`SledStorage::open`] with sled's page cache at `cache` bytes (its
    /// own default is 1 GiB).
    pub fn open_with_cache(dir: &Path, cache: u64) -> Result<SledStorage, StorageError> {
        Ok(Mailboxes::new(Sled::open(dir, cache)?))
    }
}

pub struct Sled {
    db: sled::Db,
    /// sled's log file, opened again so that a flush can end with a real
    /// `fsync`: on Linux sled itself only calls `sync_file_range`, which
    /// neither flushes the drive's cache nor the file's metadata, so a power
    /// loss could take writes that sled's `flush` reported done.
    log: std::fs::File,
}

fn engine(op: &'static str) -> impl FnOnce(sled::Error) -> StorageError {
    move |e| StorageError::Engine {
        op,
        source: Box::new(e),
    }
}

impl Sled {
    /// Opens (or creates) the database in `dir`. Deletes nothing but an
    /// unfinished snapshot (see below): a database sled cannot open is
    /// reported with its path and left for an operator to inspect.
    pub fn open(dir: &Path, cache: u64) -> Result<Sled, StorageError> {
        let open_err = |source: Box<dyn std::error::Error + Send + Sync>| StorageError::Open {
            path: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(|e| open_err(Box::new(e)))?;
        remove_unfinished_snapshots(dir).map_err(|e| open_err(Box::new(e)))?;
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache)
            .open()
            .map_err(|e| open_err(Box::new(e)))?;
        let log = std::fs::File::open(dir.join("db")).map_err(|e| open_err(Box::new(e)))?;
        Ok(Sled { db, log })
    }
}

/// Removes the snapshot files sled was still writing when it stopped
/// (`snap.<lsn>.generating`).
///
/// sled 0.34 writes a snapshot under that name, syncs it and only then
/// renames it to `snap.<lsn>`, deleting the older ones after. But on open it
/// takes the newest name of either kind, so a kill in the middle of writing
/// one left a file whose CRC fails, and sled refused to open ("corrupt
/// snapshot file found", seen in the crash loop). Such a file is never
/// needed: the snapshot before it is still there (or there was none, and
/// sled replays its whole log), so removing it loses nothing.
fn remove_unfinished_snapshots(dir: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with("snap.") && name.ends_with(".generating") {
            tracing::warn!(file = %e.path().display(), "removing a sled snapshot an abrupt stop left unfinished");
            std::fs::remove_file(e.path())?;
        }
    }
    Ok(())
}

impl Engine for Sled {
    type Value = sled::IVec;

    fn get(&self, key: &[u8]) -> Result<Option<sled::IVec>, StorageError> {
        self.db.get(key).map_err(engine("get"))
    }

    fn scan(&self, from: &[u8], to: &[u8], visit: &mut Visit<'_>) -> Result<(), StorageError> {
        // sled panics on an inverted range.
        if from >= to {
            return Ok(());
        }
        for kv in self.db.range(from..to) {
            let (k, v) = kv.map_err(engine("range"))?;
            if visit(&k, &v)?.is_break() {
                break;
            }
        }
        Ok(())
    }

    fn apply(&self, batch: Batch) -> Result<(), StorageError> {
        let mut writes = batch.into_writes();
        // A single write goes without a batch: sled's `apply_batch` takes a
        // lock that excludes every other writer of the database, `insert`
        // does not, and one write is atomic by itself.
        if writes.len() == 1 {
            return match writes.pop().expect("one write") {
                Write::Put(k, v) => self.db.insert(k, v).map_err(engine("insert")),
                Write::Delete(k) => self.db.remove(k).map_err(engine("remove")),
            }
            .map(|_| ());
        }
        if writes.is_empty() {
            return Ok(());
        }
        let mut b = sled::Batch::default();
        for w in writes {
            match w {
                Write::Put(k, v) => b.insert(k, v),
                Write::Delete(k) => b.remove(k),
            }
        }
        self.db.apply_batch(b).map_err(engine("apply"))
    }

    fn flush(&self) -> Result<(), StorageError> {
        self.db.flush().map_err(engine("flush"))?;
        self.log.sync_all().map_err(|e| StorageError::Engine {
            op: "fsync",
            source: Box::new(e),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Storage;

    /// What a kill while sled writes a snapshot leaves: the start of a
    /// snapshot, under a name that sorts after every finished one.
    fn leave_unfinished_snapshot(dir: &Path) {
        std::fs::write(
            dir.join("snap.FFFFFFFFFFFFFFF0.generating"),
            vec![7u8; 64 << 10],
        )
        .unwrap();
    }

    #[test]
    fn an_unfinished_snapshot_is_removed_and_needed_to_be() {
        let with_data = |dir: &Path| {
            let s = SledStorage::open(dir).unwrap();
            s.set_last_seen("bob", 7).unwrap();
            s.flush().unwrap();
        };
        // Needed: sled alone cannot open what the kill left.
        let raw = tempfile::tempdir().unwrap();
        with_data(raw.path());
        leave_unfinished_snapshot(raw.path());
        // (An I/O error is the closed database's lock, not yet released.)
        let started = std::time::Instant::now();
        let raw_open = loop {
            match sled::Config::new().path(raw.path()).open() {
                Err(sled::Error::Io(_)) if started.elapsed().as_secs() < 10 => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                r => break r,
            }
        };
        assert!(
            matches!(raw_open, Err(sled::Error::Corruption { .. })),
            "sled opens past an unfinished snapshot by itself; the cleanup is no longer needed: {:?}",
            raw_open.map(|_| ())
        );

        // Sufficient: our open removes it, and the data is all there.
        let dir = tempfile::tempdir().unwrap();
        with_data(dir.path());
        leave_unfinished_snapshot(dir.path());
        let s = crate::storage::tests::retrying(|| SledStorage::open(dir.path())).unwrap();
        assert_eq!(s.last_seen("bob").unwrap(), Some(7));
        assert!(!dir.path().join("snap.FFFFFFFFFFFFFFF0.generating").exists());
    }
}
