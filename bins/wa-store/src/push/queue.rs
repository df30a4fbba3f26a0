//! The durable queue of pushes decided and not yet sent: at most one entry
//! per device (a new item for a device already waiting raises its count:
//! coalescing), each due at a time (the coalescing delay, the per-device
//! interval, a retry's backoff).
//!
//! Durable: every change is a line appended to `push/queue.log` in the data
//! directory (written at once, so a kill -9 loses nothing; synced to disk
//! by the sender about every second, so a power cut may lose the last
//! second of decisions, never a sent push's record of being sent).
//! A start replays the log and rewrites it with only the live entries.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Which device: (user, device).
pub type Key = (String, u32);

/// One device's waiting push.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    /// Unique per decision (a sent push's entry is never reused).
    pub id: u64,
    pub user: String,
    pub device: u32,
    /// Items that landed for the device since it was decided.
    pub count: u32,
    /// Unix ms before which it is not sent.
    pub due_ms: u64,
    pub attempts: u32,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Line {
    Put(Entry),
    Del { id: u64 },
}

pub struct Queue {
    entries: BTreeMap<Key, Entry>,
    /// The count being sent, by entry id (not sent again meanwhile).
    sending: HashMap<u64, u32>,
    /// When each device was last pushed (unix ms), for the interval; memory
    /// only, forgotten once past the interval.
    last_sent: HashMap<Key, u64>,
    next_id: u64,
    log: File,
    path: PathBuf,
    /// Lines written since the log was last synced.
    dirty: bool,
    /// Lines in the log (live or not): it is rewritten when far above the
    /// live entries.
    lines: usize,
}

impl Queue {
    /// Opens (or creates) the queue in `dir`, replaying its log.
    pub fn open(dir: &Path) -> std::io::Result<Queue> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("queue.log");
        let mut entries: BTreeMap<u64, Entry> = BTreeMap::new();
        if let Ok(f) = File::open(&path) {
            for line in BufReader::new(f).lines() {
                let Ok(line) = line else { break };
                // (A line cut short by a crash ends the log.)
                match serde_json::from_str::<Line>(&line) {
                    Ok(Line::Put(e)) => {
                        entries.insert(e.id, e);
                    }
                    Ok(Line::Del { id }) => {
                        entries.remove(&id);
                    }
                    Err(_) => break,
                }
            }
        }
        let next_id = entries.keys().next_back().map_or(1, |id| id + 1);
        let mut q = Queue {
            entries: BTreeMap::new(),
            sending: HashMap::new(),
            last_sent: HashMap::new(),
            next_id,
            log: File::create(dir.join("queue.log.new"))?,
            path,
            dirty: false,
            lines: 0,
        };
        for e in entries.into_values() {
            q.next_id = q.next_id.max(e.id + 1);
            q.entries.insert((e.user.clone(), e.device), e);
        }
        q.rewrite()?;
        Ok(q)
    }

    /// Writes the live entries to a new log and puts it in place.
    fn rewrite(&mut self) -> std::io::Result<()> {
        let tmp = self.path.with_extension("log.new");
        let mut f = File::create(&tmp)?;
        let mut buf = Vec::new();
        for e in self.entries.values() {
            serde_json::to_writer(&mut buf, &Line::Put(e.clone()))?;
            buf.push(b'\n');
        }
        f.write_all(&buf)?;
        f.sync_data()?;
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        self.log = OpenOptions::new().append(true).open(&self.path)?;
        self.lines = self.entries.len();
        self.dirty = false;
        Ok(())
    }

    fn write(&mut self, line: &Line) {
        let mut buf = serde_json::to_vec(line).expect("queue lines serialize");
        buf.push(b'\n');
        if let Err(e) = self.log.write_all(&buf) {
            tracing::error!(error = %e, "cannot write the push queue's log");
        }
        self.dirty = true;
        self.lines += 1;
    }

    /// The log to sync if anything was written since the last sync (a
    /// handle, to sync outside the lock); compacts the log instead when it
    /// is mostly dead lines.
    pub fn to_sync(&mut self) -> Option<File> {
        if self.lines > 1024 && self.lines > 4 * self.entries.len() {
            if let Err(e) = self.rewrite() {
                tracing::error!(error = %e, "cannot compact the push queue's log");
            }
            return None;
        }
        if !self.dirty {
            return None;
        }
        self.dirty = false;
        self.log.try_clone().ok()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// An item landed for the device `key` at `now_ms`: a new entry, due
    /// after `coalesce` and at least `interval` after its last push, or one
    /// more item on its waiting entry. False if the queue is full.
    pub fn decide(
        &mut self,
        key: Key,
        now_ms: u64,
        coalesce: u64,
        interval: u64,
        max: usize,
    ) -> bool {
        if let Some(e) = self.entries.get_mut(&key) {
            e.count = e.count.saturating_add(1);
            let line = Line::Put(e.clone());
            self.write(&line);
            return true;
        }
        if self.entries.len() >= max {
            return false;
        }
        let earliest = self.last_sent.get(&key).map_or(0, |last| last + interval);
        let e = Entry {
            id: self.next_id,
            user: key.0.clone(),
            device: key.1,
            count: 1,
            due_ms: (now_ms + coalesce).max(earliest),
            attempts: 0,
        };
        self.next_id += 1;
        self.write(&Line::Put(e.clone()));
        self.entries.insert(key, e);
        true
    }

    /// The device connected: its waiting push is dropped (one being sent
    /// goes on; nothing is sent after it).
    pub fn cancel(&mut self, key: &Key) -> bool {
        match self.entries.get(key) {
            Some(e) if !self.sending.contains_key(&e.id) => {
                let id = e.id;
                self.entries.remove(key);
                self.write(&Line::Del { id });
                true
            }
            Some(e) => {
                // Sending: what arrived meanwhile is not pushed.
                let id = e.id;
                let n = self.sending[&id];
                if let Some(e) = self.entries.get_mut(key) {
                    e.count = n;
                }
                false
            }
            None => false,
        }
    }

    /// Up to `max` entries due at `now_ms`, now marked as being sent, and
    /// the earliest due time of the rest.
    pub fn take_due(&mut self, now_ms: u64, max: usize) -> (Vec<Entry>, Option<u64>) {
        let mut due = Vec::new();
        let mut next: Option<u64> = None;
        for e in self.entries.values() {
            if self.sending.contains_key(&e.id) {
                continue;
            }
            if e.due_ms <= now_ms && due.len() < max {
                due.push(e.clone());
            } else {
                next = Some(next.map_or(e.due_ms, |n| n.min(e.due_ms)));
            }
        }
        for e in &due {
            self.sending.insert(e.id, e.count);
        }
        (due, next)
    }

    /// Entry `id` of `key` was sent (or given up): removed, unless items
    /// arrived meanwhile, which wait for the next push, `interval` later.
    pub fn done(&mut self, key: &Key, id: u64, sent: bool, now_ms: u64, interval: u64) {
        let n = self.sending.remove(&id).unwrap_or(0);
        if sent {
            self.last_sent.insert(key.clone(), now_ms);
            if self.last_sent.len() > 100_000 {
                self.last_sent.retain(|_, at| *at + interval > now_ms);
            }
        }
        let Some(e) = self.entries.get_mut(key).filter(|e| e.id == id) else {
            return;
        };
        if e.count > n {
            // A new decision for the rest (its own id: the provider saw the
            // old one once).
            let rest = Entry {
                id: self.next_id,
                user: e.user.clone(),
                device: e.device,
                count: e.count - n,
                due_ms: now_ms + interval,
                attempts: 0,
            };
            self.next_id += 1;
            self.write(&Line::Del { id });
            self.write(&Line::Put(rest.clone()));
            self.entries.insert(key.clone(), rest);
        } else {
            self.entries.remove(key);
            self.write(&Line::Del { id });
        }
    }

    /// Entry `id` failed for now: tried again at `due_ms`.
    pub fn retry(&mut self, key: &Key, id: u64, due_ms: u64) -> u32 {
        self.sending.remove(&id);
        let Some(e) = self.entries.get_mut(key).filter(|e| e.id == id) else {
            return 0;
        };
        e.attempts += 1;
        e.due_ms = due_ms;
        let attempts = e.attempts;
        let line = Line::Put(e.clone());
        self.write(&line);
        attempts
    }

    /// Whether an entry of `key` waits (or is being sent).
    pub fn holds(&self, key: &Key) -> bool {
        self.entries.contains_key(key)
    }

    /// Makes the queue hold entries for exactly the devices of `owed`:
    /// entries of other devices go, and each owed device without one gets
    /// one for a single item, due at `due_ms`.
    pub fn reconcile(&mut self, owed: Vec<Key>, due_ms: u64) {
        let owed: std::collections::HashSet<Key> = owed.into_iter().collect();
        let stale: Vec<Key> = self
            .entries
            .keys()
            .filter(|k| !owed.contains(*k))
            .cloned()
            .collect();
        for key in stale {
            self.forget(&key);
        }
        for key in owed {
            if self.entries.contains_key(&key) {
                continue;
            }
            let e = Entry {
                id: self.next_id,
                user: key.0.clone(),
                device: key.1,
                count: 1,
                due_ms,
                attempts: 0,
            };
            self.next_id += 1;
            self.write(&Line::Put(e.clone()));
            self.entries.insert(key, e);
        }
    }

    /// Drops every entry of `key` (its endpoint is gone).
    pub fn forget(&mut self, key: &Key) {
        if let Some(e) = self.entries.remove(key) {
            self.sending.remove(&e.id);
            self.write(&Line::Del { id: e.id });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(d: u32) -> Key {
        ("alice".into(), d)
    }

    #[test]
    fn a_burst_is_one_entry_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut q = Queue::open(dir.path()).unwrap();
            for _ in 0..50 {
                assert!(q.decide(key(1), 1000, 100, 0, 10));
            }
            assert!(q.decide(key(2), 1000, 100, 0, 10));
            assert_eq!(q.len(), 2);
            let (due, next) = q.take_due(1050, 10);
            assert!(due.is_empty());
            assert_eq!(next, Some(1100));
            let (due, _) = q.take_due(1100, 10);
            assert_eq!(due.len(), 2);
            assert_eq!(due[0].count, 50);
            q.done(&key(2), due[1].id, true, 1100, 0);
            // (No sync: a kill -9 loses no written line.)
        }
        let mut q = Queue::open(dir.path()).unwrap();
        assert_eq!(q.len(), 1, "device 2's push was sent; device 1's was not");
        let (due, _) = q.take_due(2000, 10);
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].device, due[0].count), (1, 50));
    }

    #[test]
    fn cancel_and_items_during_a_send() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = Queue::open(dir.path()).unwrap();
        q.decide(key(1), 0, 0, 1000, 10);
        assert!(q.cancel(&key(1)));
        assert_eq!(q.len(), 0);
        q.decide(key(1), 0, 0, 1000, 10);
        let (due, _) = q.take_due(0, 10);
        q.decide(key(1), 0, 0, 1000, 10);
        q.done(&key(1), due[0].id, true, 10, 1000);
        let (due2, next) = q.take_due(10, 10);
        assert!(due2.is_empty());
        assert_eq!(next, Some(1010), "the rest waits the interval");
        assert!(!q.decide(key(2), 0, 0, 0, 1), "full");
    }

    #[test]
    fn reconcile_keeps_exactly_the_owed_devices() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut q = Queue::open(dir.path()).unwrap();
            for _ in 0..3 {
                q.decide(key(1), 0, 100, 0, 10);
            }
            q.decide(key(2), 0, 100, 0, 10);
            q.reconcile(vec![key(1), key(3)], 500);
            assert!(q.holds(&key(1)) && !q.holds(&key(2)) && q.holds(&key(3)));
        }
        let mut q = Queue::open(dir.path()).unwrap();
        let (due, _) = q.take_due(1000, 10);
        let got: Vec<_> = due.iter().map(|e| (e.device, e.count, e.due_ms)).collect();
        assert_eq!(got, [(1, 3, 100), (3, 1, 500)], "kept as it was; added");
    }
}
