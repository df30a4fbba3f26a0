//! Hot small blobs in memory.
//!
//! A blob that thousands of clients fetch at once (the seeds' New Year's Eve
//! image) must not cost a disk read per client. Blobs up to `cache.max_blob`
//! are served from here: the first request reads the file once, every
//! concurrent request for the same blob waits for that one read (single
//! flight), and later ones get the same `Bytes` (a reference count, no copy).
//! The memory budget is enforced with CLOCK eviction (second chance for
//! entries hit since the hand last passed). Larger blobs stream from the file
//! and lean on the kernel's page cache.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::OnceCell;

use crate::handle::Sha;

struct Slot {
    bytes: OnceCell<Bytes>,
    size: u64,
    referenced: AtomicBool,
}

#[derive(Default)]
struct Inner {
    map: HashMap<Sha, Arc<Slot>>,
    /// The CLOCK ring, in insertion order.
    ring: VecDeque<Sha>,
    used: u64,
}

pub struct HotCache {
    budget: u64,
    max_blob: u64,
    inner: Mutex<Inner>,
    /// Requests answered from memory, and file reads made to fill it.
    pub hits: AtomicU64,
    pub loads: AtomicU64,
}

impl HotCache {
    pub fn new(budget: u64, max_blob: u64) -> HotCache {
        HotCache {
            budget,
            max_blob: max_blob.min(budget),
            inner: Mutex::default(),
            hits: AtomicU64::new(0),
            loads: AtomicU64::new(0),
        }
    }

    /// Whether a blob of `size` bytes is served from memory.
    pub fn holds(&self, size: u64) -> bool {
        size <= self.max_blob && self.budget > 0
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("the cache lock is never poisoned")
    }

    /// The bytes of blob `sha` (`size` bytes, at `path`), read from the file
    /// at most once however many callers ask at the same time.
    pub async fn get(&self, sha: &Sha, size: u64, path: PathBuf) -> std::io::Result<Bytes> {
        let slot = {
            let mut inner = self.inner();
            match inner.map.get(sha) {
                Some(s) => {
                    s.referenced.store(true, Ordering::Relaxed);
                    s.clone()
                }
                None => {
                    let s = Arc::new(Slot {
                        bytes: OnceCell::new(),
                        size,
                        referenced: AtomicBool::new(false),
                    });
                    inner.map.insert(*sha, s.clone());
                    inner.ring.push_back(*sha);
                    inner.used += size;
                    evict(&mut inner, self.budget);
                    s
                }
            }
        };
        let mut loaded = false;
        let r = slot
            .bytes
            .get_or_try_init(|| async {
                loaded = true;
                self.loads.fetch_add(1, Ordering::Relaxed);
                tokio::fs::read(&path).await.map(Bytes::from)
            })
            .await
            .cloned();
        match &r {
            Ok(_) if !loaded => {
                self.hits.fetch_add(1, Ordering::Relaxed);
            }
            Ok(b) if b.len() as u64 != size => {
                // The file does not match its metadata; do not keep it.
                self.invalidate(sha);
            }
            Ok(_) => {}
            Err(_) => self.invalidate(sha),
        }
        r
    }

    /// Drops `sha` (deleted or expired).
    pub fn invalidate(&self, sha: &Sha) {
        let mut inner = self.inner();
        if let Some(s) = inner.map.remove(sha) {
            inner.used -= s.size;
            inner.ring.retain(|x| x != sha);
        }
    }

    /// Bytes accounted to cached blobs.
    pub fn used(&self) -> u64 {
        self.inner().used
    }
}

fn evict(inner: &mut Inner, budget: u64) {
    // Each pass either evicts or clears one reference bit, so this ends
    // within two turns of the ring.
    while inner.used > budget {
        let Some(sha) = inner.ring.pop_front() else {
            return;
        };
        let s = inner.map.get(&sha).expect("ring and map agree").clone();
        if s.referenced.swap(false, Ordering::Relaxed) {
            inner.ring.push_back(sha);
        } else {
            inner.map.remove(&sha);
            inner.used -= s.size;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_read_for_many_callers_and_budget_kept() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a");
        std::fs::write(&p, vec![1u8; 1000]).unwrap();
        let cache = Arc::new(HotCache::new(2500, 1000));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (c, p) = (cache.clone(), p.clone());
            tasks.push(tokio::spawn(async move { c.get(&[1; 32], 1000, p).await }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap().len(), 1000);
        }
        assert_eq!(cache.loads.load(Ordering::Relaxed), 1);
        assert_eq!(cache.hits.load(Ordering::Relaxed), 49);
        for i in 2..6u8 {
            cache.get(&[i; 32], 1000, p.clone()).await.unwrap();
            assert!(cache.used() <= 2500);
        }
        cache.invalidate(&[5; 32]);
        assert!(cache.used() <= 1500);
        // A missing file is an error and leaves nothing behind.
        assert!(
            cache
                .get(&[9; 32], 10, dir.path().join("no"))
                .await
                .is_err()
        );
        assert!(cache.used() <= 1500);
    }
}
