//! The fjall engine behind [`Storage`]: one keyspace with the shared key
//! layout of [`super::keys`]. An append is one write batch (atomic across
//! its three keys); journal writes are left to [`Storage::flush`], which
//! persists the journal with `fsync` (`PersistMode::SyncAll`), so many
//! appends share one sync.

use std::path::Path;

use super::keys::{
    DEDUPES_END, DEDUPES_START, ITEMS_END, ITEMS_START, SEEN, SEQ, SIZE, append_writes, be_u64,
    decode_generation, decode_item, decode_kv, decode_original, decode_size, dedupe_key,
    dedupe_page, dedupe_prefix, item_key, kv_key, kv_value, min_generation_key, size_key_user,
    size_value, split_item_key, user_key,
};
use super::{DedupeKey, DedupePage, Expired, Item, MailboxSize, Original, Storage, StorageError};
use common::proto::Envelope;

pub struct FjallStorage {
    db: fjall::Database,
    ks: fjall::Keyspace,
}

fn engine(op: &'static str) -> impl FnOnce(fjall::Error) -> StorageError {
    move |e| StorageError::Engine {
        op,
        source: Box::new(e),
    }
}

impl FjallStorage {
    /// Opens (or creates) the database in `dir`. Never deletes anything.
    pub fn open(dir: &Path) -> Result<FjallStorage, StorageError> {
        let open_err = |source: Box<dyn std::error::Error + Send + Sync>| StorageError::Open {
            path: dir.to_owned(),
            source,
        };
        clear_unfinished_creation(dir).map_err(|e| open_err(Box::new(e)))?;
        std::fs::create_dir_all(dir).map_err(|e| open_err(Box::new(e)))?;
        let db = fjall::Database::builder(dir)
            // Durability is ours to decide: the group-commit flusher persists.
            .manual_journal_persist(true)
            .open()
            .map_err(|e| open_err(Box::new(e)))?;
        let ks = db
            .keyspace("wa", fjall::KeyspaceCreateOptions::default)
            .map_err(|e| open_err(Box::new(e)))?;
        Ok(FjallStorage { db, ks })
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

impl Storage for FjallStorage {
    fn dedupe(&self, key: &DedupeKey<'_>) -> Result<Option<Original>, StorageError> {
        self.ks
            .get(dedupe_key(key)?)
            .map_err(engine("get"))?
            .map(|v| decode_original(&v))
            .transpose()
    }

    fn last_seq(&self, user: &str) -> Result<u64, StorageError> {
        match self.ks.get(user_key(SEQ, user)?).map_err(engine("get"))? {
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
        let mut batch = self.db.batch();
        for (k, v) in writes {
            batch.insert(&self.ks, k, v);
        }
        batch.commit().map_err(engine("append"))
    }

    fn read(&self, user: &str, from: u64, limit: usize) -> Result<Vec<Item>, StorageError> {
        let start = item_key(user, from)?;
        let end = item_key(user, u64::MAX)?;
        let mut out = Vec::with_capacity(limit.min(256));
        for guard in self.ks.range(start..=end).take(limit) {
            let (k, v) = guard.into_inner().map_err(engine("range"))?;
            out.push(decode_item(&k, &v)?);
        }
        Ok(out)
    }

    fn delete(&self, user: &str, seqs: &[u64]) -> Result<u64, StorageError> {
        let mut size = self.mailbox_size(user)?;
        let mut batch = self.db.batch();
        let mut deleted = 0;
        let unique: std::collections::BTreeSet<u64> = seqs.iter().copied().collect();
        for s in unique {
            let k = item_key(user, s)?;
            if let Some(len) = self.ks.size_of(&k).map_err(engine("get"))? {
                size.items = size.items.saturating_sub(1);
                size.bytes = size.bytes.saturating_sub(u64::from(len));
                deleted += 1;
                batch.remove(&self.ks, k);
            }
        }
        if deleted > 0 {
            batch.insert(&self.ks, user_key(SIZE, user)?, size_value(size).to_vec());
            batch.commit().map_err(engine("delete"))?;
        }
        Ok(deleted)
    }

    fn has_dedupe(&self, to: &str) -> Result<bool, StorageError> {
        match self.ks.prefix(dedupe_prefix(to)?).next() {
            Some(guard) => guard.into_inner().map(|_| true).map_err(engine("scan")),
            None => Ok(false),
        }
    }

    fn expire_dedupe(
        &self,
        before_ms: u64,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<DedupePage, StorageError> {
        let start = after.map_or(DEDUPES_START.to_vec(), <[u8]>::to_vec);
        let entries = self
            .ks
            .range(start..DEDUPES_END.to_vec())
            .map(|g| g.into_inner().map_err(engine("range")));
        let (doomed, next) = dedupe_page(entries, after, before_ms, limit)?;
        let deleted = doomed.len() as u64;
        if !doomed.is_empty() {
            let mut batch = self.db.batch();
            for k in doomed {
                batch.remove(&self.ks, k);
            }
            batch.commit().map_err(engine("delete"))?;
        }
        Ok(DedupePage { deleted, next })
    }

    fn mailbox_size(&self, user: &str) -> Result<MailboxSize, StorageError> {
        let v = self.ks.get(user_key(SIZE, user)?).map_err(engine("get"))?;
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
        for guard in self.ks.range(start..ITEMS_END.to_vec()) {
            let (k, v) = guard.into_inner().map_err(engine("range"))?;
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
        self.ks
            .get(user_key(SEEN, user)?)
            .map_err(engine("get"))?
            .map(|v| be_u64(&v, "last seen"))
            .transpose()
    }

    fn set_last_seen(&self, user: &str, ms: u64) -> Result<(), StorageError> {
        self.ks
            .insert(user_key(SEEN, user)?, ms.to_be_bytes().to_vec())
            .map_err(engine("insert"))
    }

    fn visit_sizes(&self, f: &mut dyn FnMut(&str, MailboxSize)) -> Result<(), StorageError> {
        for guard in self.ks.prefix([SIZE]) {
            let (k, v) = guard.into_inner().map_err(engine("scan"))?;
            f(size_key_user(&k)?, decode_size(Some(&v))?);
        }
        Ok(())
    }

    fn set_last_seq(&self, user: &str, seq: u64) -> Result<(), StorageError> {
        if self.last_seq(user)? < seq {
            self.ks
                .insert(user_key(SEQ, user)?, seq.to_be_bytes().to_vec())
                .map_err(engine("insert"))?;
        }
        Ok(())
    }

    fn kv_get(&self, space: u8, key: &str) -> Result<(u64, Vec<u8>), StorageError> {
        let v = self.ks.get(kv_key(space, key)?).map_err(engine("get"))?;
        decode_kv(v.as_deref())
    }

    fn kv_put(&self, space: u8, key: &str, version: u64, value: &[u8]) -> Result<(), StorageError> {
        self.ks
            .insert(kv_key(space, key)?, kv_value(version, value))
            .map_err(engine("insert"))
    }

    fn min_generation(&self, user: &str, device: u32) -> Result<u32, StorageError> {
        let v = self
            .ks
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
            self.ks
                .insert(
                    min_generation_key(user, device)?,
                    generation.to_be_bytes().to_vec(),
                )
                .map_err(engine("insert"))?;
        }
        Ok(())
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
