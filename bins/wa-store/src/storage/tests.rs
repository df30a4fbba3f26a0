//! The conformance suite: the same tests against every engine, at both
//! layers. The engine tests check what [`Engine`] promises (ordered scans,
//! batches, flush across a reopen); the mailbox tests check every
//! [`Storage`] operation of [`Mailboxes`] over each engine, and that an
//! append and a delete cost the engine calls they should.

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::engine::{Batch, Engine, Visit};
use super::fjall::Fjall;
use super::keys::prefix_end;
use super::sled::Sled;
use super::*;
use bytes::Bytes;
use common::proto::{ItemKind, envelope::Content};
use prost::Message;

fn env(from: &str, id: u8, ts: u64) -> Envelope {
    Envelope {
        from: from.into(),
        from_device: 1,
        id: Bytes::from(vec![id; 16]),
        server_ts_ms: ts,
        content: Some(Content::Body(Bytes::from_static(b"hi"))),
        ..Default::default()
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

    // All of them, as a hand-over to another island lists them.
    let mut kvs = Vec::new();
    s.visit_kv(&mut |space, key, version, value| {
        kvs.push((space, key.to_owned(), version, value.to_vec()))
    })
    .unwrap();
    kvs.sort();
    assert_eq!(
        kvs,
        [
            (1, "+1555000".to_owned(), 2, vec![]),
            (1, "+15550001".to_owned(), 2, b"bob".to_vec()),
            (2, "+15550001".to_owned(), 4, b"other space".to_vec()),
        ]
    );
    let mut generations = Vec::new();
    s.visit_generations(&mut |user, device, generation| {
        generations.push((user.to_owned(), device, generation))
    })
    .unwrap();
    generations.sort();
    assert_eq!(
        generations,
        [("bob".to_owned(), 1, 3), ("bob".to_owned(), 2, 9)]
    );
    // One user's, not those of a user whose id it begins ("bobby").
    s.set_min_generation("bobby", 1, 4).unwrap();
    s.set_min_generation("bo", 7, 1).unwrap();
    assert_eq!(s.generations_of("bob").unwrap(), [(1, 3), (2, 9)]);
    assert_eq!(s.generations_of("bo").unwrap(), [(7, 1)]);
    assert!(s.generations_of("carol").unwrap().is_empty());
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

/// Every entry of `from..to`, as `scan` visits them.
fn entries<E: Engine>(e: &E, from: &[u8], to: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    e.scan(from, to, &mut |k, v| {
        out.push((k.to_vec(), v.to_vec()));
        Ok(ControlFlow::Continue(()))
    })
    .unwrap();
    out
}

fn engine_contract_on<E: Engine>(open: fn(&Path) -> Result<E, StorageError>) {
    let dir = tempfile::tempdir().unwrap();
    // Keys chosen to sort differently as bytes than by length or insertion.
    let keys: [&[u8]; 7] = [
        &[2],
        &[1, 0xff],
        &[1],
        &[0xff, 0xff],
        &[1, 0],
        &[1, 0, 0],
        &[0],
    ];
    {
        let e = retrying(|| open(dir.path())).unwrap();
        assert!(e.get(&[1]).unwrap().is_none());
        assert_eq!(e.value_len(&[1]).unwrap(), None);
        // One batch with several puts, then single writes.
        let mut b = Batch::default();
        for k in &keys[..4] {
            b.put(k.to_vec(), k.repeat(3));
        }
        assert_eq!(b.len(), 4);
        e.apply(b).unwrap();
        for k in &keys[4..] {
            let mut b = Batch::default();
            b.put(k.to_vec(), k.repeat(3));
            e.apply(b).unwrap();
        }
        e.apply(Batch::default()).unwrap();

        // Ordered, `from` included, `to` excluded.
        let mut sorted: Vec<Vec<u8>> = keys.iter().map(|k| k.to_vec()).collect();
        sorted.sort();
        let all = entries(&e, &[], &[0xff, 0xff, 0xff]);
        assert_eq!(
            all.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
            sorted
        );
        assert!(all.iter().all(|(k, v)| *v == k.repeat(3)));
        let ones = entries(&e, &[1], &prefix_end(&[1]));
        assert_eq!(
            ones.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
            [vec![1], vec![1, 0], vec![1, 0, 0], vec![1, 0xff]]
        );
        assert_eq!(entries(&e, &[1, 0], &[1, 0xff]).len(), 2);
        assert!(entries(&e, &[2], &[1]).is_empty(), "inverted");
        assert!(entries(&e, &[1], &[1]).is_empty(), "empty");
        // Break ends the scan after the entry that returned it.
        let mut visited = 0;
        let visit: &mut Visit<'_> = &mut |_, _| {
            visited += 1;
            Ok(ControlFlow::Break(()))
        };
        e.scan(&[], &[0xff], visit).unwrap();
        assert_eq!(visited, 1);
        // An error from the visitor ends the scan and comes back.
        let err = e
            .scan(&[], &[0xff], &mut |_, _| {
                Err(StorageError::Corrupt {
                    what: "visitor".into(),
                })
            })
            .unwrap_err();
        assert!(err.to_string().contains("visitor"));
        assert_eq!(e.value_len(&[1, 0, 0]).unwrap(), Some(9));

        // Deletes and puts of one batch land together.
        let mut b = Batch::default();
        b.delete(vec![1]);
        b.delete(vec![1, 0]);
        b.delete(vec![9]);
        b.put(vec![1, 0, 0], b"new".to_vec());
        e.apply(b).unwrap();
        assert!(e.get(&[1]).unwrap().is_none());
        assert_eq!(e.get(&[1, 0, 0]).unwrap().unwrap().as_ref(), b"new");
        let mut b = Batch::default();
        b.delete(vec![0]);
        e.apply(b).unwrap();
        e.flush().unwrap();
    }
    // Everything flushed is there after a reopen, deletes included.
    let e = retrying(|| open(dir.path())).unwrap();
    assert_eq!(
        entries(&e, &[], &[0xff, 0xff, 0xff])
            .into_iter()
            .map(|(k, _)| k)
            .collect::<Vec<_>>(),
        [vec![1, 0, 0], vec![1, 0xff], vec![2], vec![0xff, 0xff]]
    );
    assert_eq!(e.get(&[1, 0, 0]).unwrap().unwrap().as_ref(), b"new");
}

#[test]
fn engine_contract() {
    eprintln!("engine sled");
    engine_contract_on(|d| Sled::open(d, crate::storage::TEST_ENGINE_CACHE));
    eprintln!("engine fjall");
    engine_contract_on(|d| Fjall::open(d, crate::storage::TEST_ENGINE_CACHE));
}

#[test]
fn prefix_ends() {
    assert_eq!(prefix_end(&[1, 3, b'b']), [1, 3, b'c']);
    assert_eq!(prefix_end(&[1, 0xfe, 0xff, 0xff]), [1, 0xff]);
}

/// An engine that counts the calls made to it.
struct Counting<E> {
    inner: E,
    gets: AtomicUsize,
    scans: AtomicUsize,
    applies: AtomicUsize,
}

impl<E: Engine> Engine for Counting<E> {
    type Value = E::Value;

    fn get(&self, key: &[u8]) -> Result<Option<E::Value>, StorageError> {
        self.gets.fetch_add(1, Ordering::Relaxed);
        self.inner.get(key)
    }

    fn value_len(&self, key: &[u8]) -> Result<Option<u64>, StorageError> {
        self.gets.fetch_add(1, Ordering::Relaxed);
        self.inner.value_len(key)
    }

    fn scan(&self, from: &[u8], to: &[u8], visit: &mut Visit<'_>) -> Result<(), StorageError> {
        self.scans.fetch_add(1, Ordering::Relaxed);
        self.inner.scan(from, to, visit)
    }

    fn apply(&self, batch: Batch) -> Result<(), StorageError> {
        self.applies.fetch_add(1, Ordering::Relaxed);
        self.inner.apply(batch)
    }

    fn flush(&self) -> Result<(), StorageError> {
        self.inner.flush()
    }
}

impl<E> Counting<E> {
    /// (gets, scans, applies) since the last call.
    fn take(&self) -> (usize, usize, usize) {
        (
            self.gets.swap(0, Ordering::Relaxed),
            self.scans.swap(0, Ordering::Relaxed),
            self.applies.swap(0, Ordering::Relaxed),
        )
    }
}

/// The hot path: an append (or a batch of them) reads the size and the
/// counter once and writes one atomic batch; a delete reads the size and
/// each item's length and writes one batch.
#[test]
fn an_append_is_two_reads_and_one_batch() {
    let dir = tempfile::tempdir().unwrap();
    let s = Mailboxes::new(Counting {
        inner: Sled::open(dir.path(), crate::storage::TEST_ENGINE_CACHE).unwrap(),
        gets: AtomicUsize::new(0),
        scans: AtomicUsize::new(0),
        applies: AtomicUsize::new(0),
    });
    let envs: Vec<Envelope> = (1..=3).map(|i| env("alice", i, 10)).collect();
    s.append("bob", 1, &envs[0], &key("bob", &envs[0])).unwrap();
    assert_eq!(s.engine().take(), (2, 0, 1));
    s.append_batch(
        "bob",
        &[
            (2, &envs[1], key("bob", &envs[1])),
            (3, &envs[2], key("bob", &envs[2])),
        ],
    )
    .unwrap();
    assert_eq!(s.engine().take(), (2, 0, 1));
    assert_eq!(s.delete("bob", &[1, 2, 9]).unwrap(), 2);
    assert_eq!(s.engine().take(), (1 + 3, 0, 1));
    assert_eq!(s.delete("bob", &[1]).unwrap(), 0);
    assert_eq!(
        s.engine().take(),
        (2, 0, 0),
        "nothing to delete, nothing written"
    );
}
