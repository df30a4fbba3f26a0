//! The sled engine behind [`Storage`]: one tree, typed key prefixes, big-endian
//! numbers so that range scans come out in sequence order.
//!
//! | key | value |
//! |---|---|
//! | `01 len user seq:u64be` | encoded `Envelope` (mailbox item) |
//! | `02 len to len from kind id` | `seq:u64be server_ts_ms:u64be` (dedupe) |
//! | `03 len user` | last assigned `seq:u64be` |
//! | `04 len user` | last seen `ms:u64be` |
//!
//! `len` is one byte: user ids are at most 64 bytes, and a length byte in front
//! of each id keeps one user's keys from being a prefix of another's. An append
//! writes its item, dedupe entry and counter in one `apply_batch`, so a crash
//! leaves all three or none.

use std::path::Path;

use prost::Message;

use super::{DedupeKey, Item, Original, Storage, StorageError};
use common::proto::Envelope;

const ITEM: u8 = 1;
const DEDUPE: u8 = 2;
const SEQ: u8 = 3;
const SEEN: u8 = 4;

pub struct SledStorage {
    db: sled::Db,
}

fn engine(op: &'static str) -> impl FnOnce(sled::Error) -> StorageError {
    move |e| StorageError::Engine {
        op,
        source: Box::new(e),
    }
}

fn push_id(key: &mut Vec<u8>, id: &str) -> Result<(), StorageError> {
    let len = u8::try_from(id.len()).map_err(|_| StorageError::Corrupt {
        what: format!("user id of {} bytes cannot be a key", id.len()),
    })?;
    key.push(len);
    key.extend_from_slice(id.as_bytes());
    Ok(())
}

fn user_key(prefix: u8, user: &str) -> Result<Vec<u8>, StorageError> {
    let mut k = Vec::with_capacity(2 + user.len() + 8);
    k.push(prefix);
    push_id(&mut k, user)?;
    Ok(k)
}

fn item_key(user: &str, seq: u64) -> Result<Vec<u8>, StorageError> {
    let mut k = user_key(ITEM, user)?;
    k.extend_from_slice(&seq.to_be_bytes());
    Ok(k)
}

fn dedupe_key(key: &DedupeKey<'_>) -> Result<Vec<u8>, StorageError> {
    let mut k = Vec::with_capacity(4 + key.to.len() + key.from.len() + key.id.len());
    k.push(DEDUPE);
    push_id(&mut k, key.to)?;
    push_id(&mut k, key.from)?;
    k.push(key.kind as u8);
    k.extend_from_slice(key.id);
    Ok(k)
}

fn be_u64(v: &[u8], what: &str) -> Result<u64, StorageError> {
    let b: [u8; 8] =
        v.get(..8)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| StorageError::Corrupt {
                what: format!("{what}: {} bytes, expected at least 8", v.len()),
            })?;
    Ok(u64::from_be_bytes(b))
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
        let db = sled::Config::new()
            .path(dir)
            .open()
            .map_err(|e| open_err(Box::new(e)))?;
        Ok(SledStorage { db })
    }
}

impl Storage for SledStorage {
    fn dedupe(&self, key: &DedupeKey<'_>) -> Result<Option<Original>, StorageError> {
        let Some(v) = self.db.get(dedupe_key(key)?).map_err(engine("get"))? else {
            return Ok(None);
        };
        if v.len() != 16 {
            return Err(StorageError::Corrupt {
                what: format!("dedupe entry of {} bytes, expected 16", v.len()),
            });
        }
        Ok(Some(Original {
            seq: be_u64(&v[..8], "dedupe seq")?,
            server_ts_ms: be_u64(&v[8..], "dedupe server_ts")?,
        }))
    }

    fn last_seq(&self, user: &str) -> Result<u64, StorageError> {
        match self.db.get(user_key(SEQ, user)?).map_err(engine("get"))? {
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
        let mut original = [0u8; 16];
        original[..8].copy_from_slice(&seq.to_be_bytes());
        original[8..].copy_from_slice(&envelope.server_ts_ms.to_be_bytes());
        let mut batch = sled::Batch::default();
        batch.insert(item_key(user, seq)?, envelope.encode_to_vec());
        batch.insert(dedupe_key(key)?, &original[..]);
        batch.insert(user_key(SEQ, user)?, &seq.to_be_bytes()[..]);
        self.db.apply_batch(batch).map_err(engine("append"))
    }

    fn read(&self, user: &str, from: u64, limit: usize) -> Result<Vec<Item>, StorageError> {
        let start = item_key(user, from)?;
        let end = item_key(user, u64::MAX)?;
        let mut out = Vec::with_capacity(limit.min(256));
        for kv in self.db.range(start..=end).take(limit) {
            let (k, v) = kv.map_err(engine("range"))?;
            let seq = be_u64(&k[k.len() - 8..], "item key")?;
            let envelope = Envelope::decode(&*v).map_err(|e| StorageError::Corrupt {
                what: format!("item {seq} of a mailbox: {e}"),
            })?;
            out.push(Item { seq, envelope });
        }
        Ok(out)
    }

    fn delete(&self, user: &str, seqs: &[u64]) -> Result<(), StorageError> {
        if seqs.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for &s in seqs {
            batch.remove(item_key(user, s)?);
        }
        self.db.apply_batch(batch).map_err(engine("delete"))
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

    fn flush(&self) -> Result<(), StorageError> {
        self.db.flush().map_err(engine("flush"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use common::proto::{ItemKind, envelope::Content};

    fn env(from: &str, id: u8, ts: u64) -> Envelope {
        Envelope {
            from: from.into(),
            from_device: 1,
            id: Bytes::from(vec![id; 16]),
            server_ts_ms: ts,
            content: Some(Content::Body(Bytes::from_static(b"hi"))),
        }
    }

    fn key<'a>(to: &'a str, e: &'a Envelope) -> DedupeKey<'a> {
        DedupeKey {
            to,
            from: &e.from,
            kind: e.item_kind(),
            id: &e.id,
        }
    }

    #[test]
    fn append_dedupe_read_delete() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStorage::open(dir.path()).unwrap();
        assert_eq!(s.last_seq("bob").unwrap(), 0);
        let e1 = env("alice", 1, 100);
        let e2 = env("alice", 2, 200);
        assert_eq!(s.dedupe(&key("bob", &e1)).unwrap(), None);
        s.append("bob", 1, &e1, &key("bob", &e1)).unwrap();
        s.append("bob", 2, &e2, &key("bob", &e2)).unwrap();
        assert_eq!(
            s.dedupe(&key("bob", &e1)).unwrap(),
            Some(Original {
                seq: 1,
                server_ts_ms: 100
            })
        );
        // Same id, other kind, other recipient or other sender: different items.
        let mut receipt = key("bob", &e1);
        receipt.kind = ItemKind::Delivered;
        assert_eq!(s.dedupe(&receipt).unwrap(), None);
        assert_eq!(s.dedupe(&key("bo", &e1)).unwrap(), None);
        let mut other = key("bob", &e1);
        other.from = "alicia";
        assert_eq!(s.dedupe(&other).unwrap(), None);

        assert_eq!(s.last_seq("bob").unwrap(), 2);
        let items = s.read("bob", 1, 10).unwrap();
        assert_eq!(items.iter().map(|i| i.seq).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(items[1].envelope, e2);
        assert_eq!(s.read("bob", 2, 10).unwrap().len(), 1);
        assert_eq!(s.read("bob", 1, 1).unwrap().len(), 1);
        // A user whose id is a prefix of another's sees only its own items.
        assert!(s.read("bo", 0, 10).unwrap().is_empty());
        s.append("bobby", 1, &e1, &key("bobby", &e1)).unwrap();
        assert_eq!(s.read("bob", 0, 10).unwrap().len(), 2);

        s.delete("bob", &[1, 7]).unwrap();
        let left = s.read("bob", 0, 10).unwrap();
        assert_eq!(left.iter().map(|i| i.seq).collect::<Vec<_>>(), [2]);
        // The dedupe entry outlives the item.
        assert!(s.dedupe(&key("bob", &e1)).unwrap().is_some());
    }

    #[test]
    fn sequence_and_last_seen_survive_reopen_of_an_empty_mailbox() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStorage::open(dir.path()).unwrap();
            for seq in 1..=300u64 {
                let e = env("alice", (seq % 250) as u8, seq);
                let mut k = key("bob", &e);
                let id = seq.to_be_bytes().repeat(2);
                k.id = &id;
                s.append("bob", seq, &e, &k).unwrap();
            }
            // Big-endian keys: seq 256 sorts after 255, not after 1.
            let all = s.read("bob", 0, 1000).unwrap();
            assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
            assert_eq!(all.len(), 300);
            s.delete("bob", &(1..=300).collect::<Vec<_>>()).unwrap();
            s.set_last_seen("bob", 1234).unwrap();
            s.flush().unwrap();
        }
        let s = SledStorage::open(dir.path()).unwrap();
        assert!(s.read("bob", 0, 10).unwrap().is_empty());
        assert_eq!(s.last_seq("bob").unwrap(), 300);
        assert_eq!(s.last_seen("bob").unwrap(), Some(1234));
        assert_eq!(s.last_seen("alice").unwrap(), None);
    }

    #[test]
    fn open_failure_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        let err = SledStorage::open(&file).err().unwrap().to_string();
        assert!(err.contains("not-a-dir"), "{err}");
        // Nothing was deleted.
        assert_eq!(std::fs::read(&file).unwrap(), b"x");
    }
}
