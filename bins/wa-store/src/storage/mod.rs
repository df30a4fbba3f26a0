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

pub mod fjall;
mod keys;
pub mod sled;

use std::path::PathBuf;

use common::proto::{Envelope, ItemKind};

pub use self::fjall::FjallStorage;
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

    /// Makes every write that returned before this call durable.
    fn flush(&self) -> Result<(), StorageError>;
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bytes::Bytes;
    use common::proto::{ItemKind, envelope::Content};
    use prost::Message;
    use std::path::Path;

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

    type Open = fn(&Path) -> Result<Box<dyn Storage>, StorageError>;

    /// Engines release their files from background threads a moment after
    /// the last handle is dropped; a reopen in the same process may have to
    /// wait for that (a new process never does).
    pub(crate) fn retrying<T>(
        mut open: impl FnMut() -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let started = std::time::Instant::now();
        loop {
            match open() {
                Err(e) if started.elapsed() < std::time::Duration::from_secs(10) => {
                    eprintln!("reopen failed, retrying: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                r => return r,
            }
        }
    }

    fn sled(p: &Path) -> Result<Box<dyn Storage>, StorageError> {
        if !p.exists() || p.is_dir() {
            return retrying(|| Ok(Box::new(SledStorage::open(p)?) as Box<dyn Storage>));
        }
        Ok(Box::new(SledStorage::open(p)?))
    }

    fn fjall(p: &Path) -> Result<Box<dyn Storage>, StorageError> {
        if !p.exists() || p.is_dir() {
            return retrying(|| Ok(Box::new(FjallStorage::open(p)?) as Box<dyn Storage>));
        }
        Ok(Box::new(FjallStorage::open(p)?))
    }

    const ENGINES: [(&str, Open); 2] = [("sled", sled), ("fjall", fjall)];

    #[test]
    fn append_dedupe_read_delete() {
        for (name, open) in ENGINES {
            eprintln!("engine {name}");
            append_dedupe_read_delete_on(open);
        }
    }

    fn append_dedupe_read_delete_on(open: Open) {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path()).unwrap();
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
        for (name, open) in ENGINES {
            eprintln!("engine {name}");
            survive_reopen_on(open);
        }
    }

    fn survive_reopen_on(open: Open) {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = open(dir.path()).unwrap();
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
        let s = open(dir.path()).unwrap();
        assert!(s.read("bob", 0, 10).unwrap().is_empty());
        assert_eq!(s.last_seq("bob").unwrap(), 300);
        assert_eq!(s.last_seen("bob").unwrap(), Some(1234));
        assert_eq!(s.last_seen("alice").unwrap(), None);
    }

    #[test]
    fn sizes_and_expiry() {
        for (name, open) in ENGINES {
            eprintln!("engine {name}");
            sizes_and_expiry_on(open);
        }
    }

    fn sizes_and_expiry_on(open: Open) {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path()).unwrap();
        assert_eq!(s.mailbox_size("bob").unwrap(), MailboxSize::default());
        let mut total = 0;
        for (seq, (user, ts)) in [("bob", 10), ("bob", 20), ("carol", 5), ("bob", 40)]
            .into_iter()
            .enumerate()
        {
            let e = env("alice", seq as u8, ts);
            total += e.encoded_len() as u64;
            let seq = s.last_seq(user).unwrap() + 1;
            s.append(user, seq, &e, &key(user, &e)).unwrap();
        }
        let bob = s.mailbox_size("bob").unwrap();
        let carol = s.mailbox_size("carol").unwrap();
        assert_eq!((bob.items, carol.items), (3, 1));
        assert_eq!(bob.bytes + carol.bytes, total);

        // Expiry scans every mailbox in pages.
        let first = s.expired(30, None, 1).unwrap();
        assert_eq!(
            first,
            [Expired {
                user: "bob".into(),
                seq: 1
            }]
        );
        let rest = s.expired(30, first.last(), 10).unwrap();
        assert_eq!(
            rest,
            [
                Expired {
                    user: "bob".into(),
                    seq: 2
                },
                Expired {
                    user: "carol".into(),
                    seq: 1
                }
            ]
        );

        // Deleting subtracts exactly what was there, once.
        assert_eq!(s.delete("bob", &[1, 2, 2, 99]).unwrap(), 2);
        assert_eq!(s.delete("bob", &[1]).unwrap(), 0);
        let after = s.mailbox_size("bob").unwrap();
        assert_eq!(after.items, 1);
        assert_eq!(after.bytes, env("alice", 3, 40).encoded_len() as u64);
        assert_eq!(
            s.expired(30, None, 10).unwrap(),
            [Expired {
                user: "carol".into(),
                seq: 1
            }]
        );
    }

    #[test]
    fn a_batch_is_the_same_as_its_appends() {
        for (name, open) in ENGINES {
            eprintln!("engine {name}");
            a_batch_is_the_same_as_its_appends_on(open);
        }
    }

    fn a_batch_is_the_same_as_its_appends_on(open: Open) {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path()).unwrap();
        let envs: Vec<Envelope> = (1..=4)
            .map(|i| env("alice", i, u64::from(i) * 10))
            .collect();
        // bob gets them one by one, carol in two batches (out of order inside one).
        for (i, e) in envs.iter().enumerate() {
            s.append("bob", i as u64 + 1, e, &key("bob", e)).unwrap();
        }
        s.append_batch(
            "carol",
            &[
                (2, &envs[1], key("carol", &envs[1])),
                (1, &envs[0], key("carol", &envs[0])),
            ],
        )
        .unwrap();
        s.append_batch(
            "carol",
            &[
                (3, &envs[2], key("carol", &envs[2])),
                (4, &envs[3], key("carol", &envs[3])),
            ],
        )
        .unwrap();
        assert_eq!(
            s.mailbox_size("carol").unwrap(),
            s.mailbox_size("bob").unwrap()
        );
        assert_eq!(s.mailbox_size("carol").unwrap().items, 4);
        assert_eq!(s.last_seq("carol").unwrap(), 4);
        let bob: Vec<u64> = s
            .read("bob", 1, 10)
            .unwrap()
            .iter()
            .map(|i| i.seq)
            .collect();
        let carol = s.read("carol", 1, 10).unwrap();
        assert_eq!(carol.iter().map(|i| i.seq).collect::<Vec<_>>(), bob);
        for (i, e) in envs.iter().enumerate() {
            assert_eq!(carol[i].envelope, *e);
            let o = s.dedupe(&key("carol", e)).unwrap().unwrap();
            assert_eq!((o.seq, o.server_ts_ms), (i as u64 + 1, e.server_ts_ms));
        }
        assert!(s.has_dedupe("carol").unwrap());
    }

    #[test]
    fn dedupe_entries_expire_in_pages() {
        for (name, open) in ENGINES {
            eprintln!("engine {name}");
            dedupe_entries_expire_in_pages_on(open);
        }
    }

    fn dedupe_entries_expire_in_pages_on(open: Open) {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path()).unwrap();
        assert!(!s.has_dedupe("bob").unwrap());
        // Old originals for bob and carol, new ones for bob; then delivered.
        let mut keys = Vec::new();
        for (user, id, ts) in [
            ("bob", 1, 10),
            ("bob", 2, 20),
            ("carol", 3, 15),
            ("bob", 4, 100),
            ("carol", 5, 200),
        ] {
            let e = env("alice", id, ts);
            let seq = s.last_seq(user).unwrap() + 1;
            s.append(user, seq, &e, &key(user, &e)).unwrap();
            s.delete(user, &[seq]).unwrap();
            keys.push((user, e));
        }
        assert!(s.has_dedupe("bob").unwrap() && s.has_dedupe("carol").unwrap());
        assert!(
            !s.has_dedupe("bo").unwrap(),
            "a prefix of a user is another user"
        );
        // Pages of two entries until the end: the three before 50 go.
        let (mut deleted, mut after, mut pages) = (0, None, 0);
        loop {
            let page = s.expire_dedupe(50, after.as_deref(), 2).unwrap();
            deleted += page.deleted;
            pages += 1;
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!((deleted, pages), (3, 3));
        for (user, e) in &keys {
            let kept = s.dedupe(&key(user, e)).unwrap().is_some();
            assert_eq!(kept, e.server_ts_ms >= 50, "{user} {:?}", e.id);
        }
        assert!(s.has_dedupe("bob").unwrap() && s.has_dedupe("carol").unwrap());
        assert_eq!(s.expire_dedupe(u64::MAX, None, 10).unwrap().deleted, 2);
        assert!(!s.has_dedupe("bob").unwrap() && !s.has_dedupe("carol").unwrap());
        // Nothing else was touched.
        assert_eq!(s.last_seq("bob").unwrap(), 3);
    }

    #[test]
    fn key_values_and_generations() {
        for (name, open) in ENGINES {
            eprintln!("engine {name}");
            key_values_and_generations_on(open);
        }
    }

    fn key_values_and_generations_on(open: Open) {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = open(dir.path()).unwrap();
            assert_eq!(s.kv_get(1, "+15550001").unwrap(), (0, vec![]));
            s.kv_put(1, "+15550001", 1, b"alice").unwrap();
            s.kv_put(2, "+15550001", 4, b"other space").unwrap();
            s.kv_put(1, "+1555000", 2, b"").unwrap();
            assert_eq!(s.kv_get(1, "+15550001").unwrap(), (1, b"alice".to_vec()));
            assert_eq!(s.kv_get(2, "+15550001").unwrap().0, 4);
            // A key that is a prefix of another is its own record.
            assert_eq!(s.kv_get(1, "+1555000").unwrap(), (2, vec![]));
            s.kv_put(1, "+15550001", 2, b"bob").unwrap();

            assert_eq!(s.min_generation("bob", 1).unwrap(), 0);
            s.set_min_generation("bob", 1, 3).unwrap();
            s.set_min_generation("bob", 1, 2).unwrap();
            s.set_min_generation("bob", 2, 9).unwrap();
            assert_eq!(s.min_generation("bob", 1).unwrap(), 3);
            assert_eq!(s.min_generation("bobby", 1).unwrap(), 0);
            // Not in the mailbox scans.
            assert!(s.expired(u64::MAX, None, 10).unwrap().is_empty());
            s.flush().unwrap();
        }
        let s = open(dir.path()).unwrap();
        assert_eq!(s.kv_get(1, "+15550001").unwrap(), (2, b"bob".to_vec()));
        assert_eq!(s.min_generation("bob", 1).unwrap(), 3);
        assert_eq!(s.min_generation("bob", 2).unwrap(), 9);
    }

    #[test]
    fn open_failure_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        for (name, open) in ENGINES {
            let err = open(&file).err().unwrap().to_string();
            assert!(err.contains("not-a-dir"), "{name}: {err}");
        }
        // Nothing was deleted.
        assert_eq!(std::fs::read(&file).unwrap(), b"x");
    }
}
