//! The sled engine behind [`Storage`]: one tree with the shared key layout of
//! [`super::keys`]. An append writes its item, dedupe entry and counter in one
//! `apply_batch`, so a crash leaves all three or none. A flush is sled's
//! `flush` followed by an `fsync` of its log file.

use std::path::Path;

use super::keys::{
    DEDUPES_END, DEDUPES_START, ITEMS_END, ITEMS_START, SEEN, SEQ, SIZE, append_writes, be_u64,
    decode_generation, decode_item, decode_kv, decode_original, decode_size, dedupe_key,
    dedupe_page, dedupe_prefix, item_key, kv_key, kv_value, min_generation_key, size_key_user,
    size_value, split_item_key, user_key,
};
use super::{DedupeKey, DedupePage, Expired, Item, MailboxSize, Original, Storage, StorageError};
use common::proto::Envelope;

pub struct SledStorage {
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

impl SledStorage {
    /// Opens (or creates) the database in `dir`. Never deletes anything: a
    /// database sled cannot open is reported with its path and left for an
    /// operator to inspect.
    pub fn open(dir: &Path) -> Result<SledStorage, StorageError> {
        let open_err = |source: Box<dyn std::error::Error + Send + Sync>| StorageError::Open {
            path: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(|e| open_err(Box::new(e)))?;
        remove_unfinished_snapshots(dir).map_err(|e| open_err(Box::new(e)))?;
        let db = sled::Config::new()
            .path(dir)
            .open()
            .map_err(|e| open_err(Box::new(e)))?;
        let log = std::fs::File::open(dir.join("db")).map_err(|e| open_err(Box::new(e)))?;
        Ok(SledStorage { db, log })
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

impl Storage for SledStorage {
    fn dedupe(&self, key: &DedupeKey<'_>) -> Result<Option<Original>, StorageError> {
        self.db
            .get(dedupe_key(key)?)
            .map_err(engine("get"))?
            .map(|v| decode_original(&v))
            .transpose()
    }

    fn last_seq(&self, user: &str) -> Result<u64, StorageError> {
        match self.db.get(user_key(SEQ, user)?).map_err(engine("get"))? {
            Some(v) => be_u64(&v, "sequence counter"),
            None => Ok(0),
        }
    }

    fn append_batch(
        &self,
        user: &str,
        items: &[(u64, &Envelope, DedupeKey<'_>)],
    ) -> Result<(), StorageError> {
        let writes = append_writes(user, items, self.mailbox_size(user)?, self.last_seq(user)?)?;
        let mut batch = sled::Batch::default();
        for (k, v) in writes {
            batch.insert(k, v);
        }
        self.db.apply_batch(batch).map_err(engine("append"))
    }

    fn read(&self, user: &str, from: u64, limit: usize) -> Result<Vec<Item>, StorageError> {
        let start = item_key(user, from)?;
        let end = item_key(user, u64::MAX)?;
        let mut out = Vec::with_capacity(limit.min(256));
        for kv in self.db.range(start..=end).take(limit) {
            let (k, v) = kv.map_err(engine("range"))?;
            out.push(decode_item(&k, &v)?);
        }
        Ok(out)
    }

    fn delete(&self, user: &str, seqs: &[u64]) -> Result<u64, StorageError> {
        let mut size = self.mailbox_size(user)?;
        let mut batch = sled::Batch::default();
        let mut deleted = 0;
        let unique: std::collections::BTreeSet<u64> = seqs.iter().copied().collect();
        for s in unique {
            let k = item_key(user, s)?;
            if let Some(v) = self.db.get(&k).map_err(engine("get"))? {
                size.items = size.items.saturating_sub(1);
                size.bytes = size.bytes.saturating_sub(v.len() as u64);
                deleted += 1;
                batch.remove(k);
            }
        }
        if deleted > 0 {
            batch.insert(user_key(SIZE, user)?, &size_value(size)[..]);
            self.db.apply_batch(batch).map_err(engine("delete"))?;
        }
        Ok(deleted)
    }

    fn has_dedupe(&self, to: &str) -> Result<bool, StorageError> {
        Ok(self
            .db
            .scan_prefix(dedupe_prefix(to)?)
            .next()
            .transpose()
            .map_err(engine("scan"))?
            .is_some())
    }

    fn expire_dedupe(
        &self,
        before_ms: u64,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<DedupePage, StorageError> {
        let start = after.map_or(DEDUPES_START.to_vec(), <[u8]>::to_vec);
        let entries = self
            .db
            .range(start..DEDUPES_END.to_vec())
            .map(|kv| kv.map_err(engine("range")));
        let (doomed, next) = dedupe_page(entries, after, before_ms, limit)?;
        let deleted = doomed.len() as u64;
        if !doomed.is_empty() {
            let mut batch = sled::Batch::default();
            for k in doomed {
                batch.remove(k);
            }
            self.db.apply_batch(batch).map_err(engine("delete"))?;
        }
        Ok(DedupePage { deleted, next })
    }

    fn mailbox_size(&self, user: &str) -> Result<MailboxSize, StorageError> {
        let v = self.db.get(user_key(SIZE, user)?).map_err(engine("get"))?;
        decode_size(v.as_deref())
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
        for kv in self.db.range(start..ITEMS_END.to_vec()) {
            let (k, v) = kv.map_err(engine("range"))?;
            let (user, seq) = split_item_key(&k)?;
            if after.is_some_and(|a| a.user == user && a.seq == seq) {
                continue;
            }
            if decode_item(&k, &v)?.envelope.server_ts_ms < before_ms {
                out.push(Expired { user, seq });
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    fn last_seen(&self, user: &str) -> Result<Option<u64>, StorageError> {
        self.db
            .get(user_key(SEEN, user)?)
            .map_err(engine("get"))?
            .map(|v| be_u64(&v, "last seen"))
            .transpose()
    }

    fn set_last_seen(&self, user: &str, ms: u64) -> Result<(), StorageError> {
        self.db
            .insert(user_key(SEEN, user)?, &ms.to_be_bytes()[..])
            .map_err(engine("insert"))?;
        Ok(())
    }

    fn visit_sizes(&self, f: &mut dyn FnMut(&str, MailboxSize)) -> Result<(), StorageError> {
        for kv in self.db.scan_prefix([SIZE]) {
            let (k, v) = kv.map_err(engine("scan"))?;
            f(size_key_user(&k)?, decode_size(Some(&v))?);
        }
        Ok(())
    }

    fn set_last_seq(&self, user: &str, seq: u64) -> Result<(), StorageError> {
        if self.last_seq(user)? < seq {
            self.db
                .insert(user_key(SEQ, user)?, &seq.to_be_bytes()[..])
                .map_err(engine("insert"))?;
        }
        Ok(())
    }

    fn kv_get(&self, space: u8, key: &str) -> Result<(u64, Vec<u8>), StorageError> {
        let v = self.db.get(kv_key(space, key)?).map_err(engine("get"))?;
        decode_kv(v.as_deref())
    }

    fn kv_put(&self, space: u8, key: &str, version: u64, value: &[u8]) -> Result<(), StorageError> {
        self.db
            .insert(kv_key(space, key)?, kv_value(version, value))
            .map_err(engine("insert"))?;
        Ok(())
    }

    fn min_generation(&self, user: &str, device: u32) -> Result<u32, StorageError> {
        let v = self
            .db
            .get(min_generation_key(user, device)?)
            .map_err(engine("get"))?;
        decode_generation(v.as_deref())
    }

    fn set_min_generation(
        &self,
        user: &str,
        device: u32,
        generation: u32,
    ) -> Result<(), StorageError> {
        if self.min_generation(user, device)? < generation {
            self.db
                .insert(
                    min_generation_key(user, device)?,
                    &generation.to_be_bytes()[..],
                )
                .map_err(engine("insert"))?;
        }
        Ok(())
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
