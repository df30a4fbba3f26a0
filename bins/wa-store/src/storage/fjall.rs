//! The fjall engine behind [`Storage`]: one keyspace with the shared key
//! layout of [`super::keys`]. An append is one write batch (atomic across
//! its three keys); journal writes are left to [`Storage::flush`], which
//! persists the journal with `fsync` (`PersistMode::SyncAll`), so many
//! appends share one sync.

use std::path::Path;

use prost::Message;

use super::keys::{
    SEEN, SEQ, be_u64, decode_item, decode_original, dedupe_key, item_key, original_value, user_key,
};
use super::{DedupeKey, Item, Original, Storage, StorageError};
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

    fn append(
        &self,
        user: &str,
        seq: u64,
        envelope: &Envelope,
        key: &DedupeKey<'_>,
    ) -> Result<(), StorageError> {
        let original = original_value(seq, envelope.server_ts_ms);
        let mut batch = self.db.batch();
        batch.insert(&self.ks, item_key(user, seq)?, envelope.encode_to_vec());
        batch.insert(&self.ks, dedupe_key(key)?, original.to_vec());
        batch.insert(&self.ks, user_key(SEQ, user)?, seq.to_be_bytes().to_vec());
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

    fn delete(&self, user: &str, seqs: &[u64]) -> Result<(), StorageError> {
        if seqs.is_empty() {
            return Ok(());
        }
        let mut batch = self.db.batch();
        for &s in seqs {
            batch.remove(&self.ks, item_key(user, s)?);
        }
        batch.commit().map_err(engine("delete"))
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

    fn flush(&self) -> Result<(), StorageError> {
        self.db
            .persist(fjall::PersistMode::SyncAll)
            .map_err(engine("flush"))
    }
}
