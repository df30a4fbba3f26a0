//! Going on without the secondary, safely, under automatic failover
//! (docs/ARCHITECTURE.md, "Replication"): with `when_absent = "disk"`, a
//! primary acknowledges appends only it has while its secondary is away.
//! Were its lease then to lapse, the secondary would take over without
//! them. So such an append is acknowledged only once etcd records that
//! the primary goes on alone (`Coordinator::mark_alone`, done under the
//! primary's lease); the record blocks every takeover until the primary,
//! its secondary back and caught up, takes it away. A primary cut off from
//! etcd cannot record it, refuses with `UNAVAILABLE`, and its secondary
//! may take over: the partition case.
//!
//! This is the state the group commit's sync thread and the etcd task
//! share; the etcd calls are `failover::record_alone`'s.

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

#[derive(Default)]
pub struct Alone {
    /// etcd records that this primary goes on alone: appends it alone has
    /// may be acknowledged.
    recorded: AtomicBool,
    /// The sync thread needs the record (true) or no longer does (false).
    wanted: AtomicBool,
    /// Wakes the etcd task when `wanted` changed.
    pub changed: Notify,
    /// Wakes the sync thread when the record is in.
    lock: Mutex<()>,
    recorded_cv: Condvar,
}

impl Alone {
    /// The sync thread, about to fall back to disk: may it? If not, asks
    /// for the record (the append is refused meanwhile).
    pub fn may_fall_back(&self) -> bool {
        if self.recorded.load(SeqCst) {
            return true;
        }
        if !self.wanted.swap(true, SeqCst) {
            self.changed.notify_one();
        }
        false
    }

    /// The sync thread: the secondary acknowledged a flush; acknowledging
    /// alone ends here, before the record goes (so nothing is acknowledged
    /// alone once the record may be gone).
    pub fn together(&self) {
        if self.wanted.load(SeqCst) || self.recorded.load(SeqCst) {
            self.recorded.store(false, SeqCst);
            self.wanted.store(false, SeqCst);
            self.changed.notify_one();
        }
    }

    /// The etcd task: whether the record is wanted now.
    pub fn wanted(&self) -> bool {
        self.wanted.load(SeqCst)
    }

    /// The etcd task: the record is in etcd (if still wanted).
    pub fn set_recorded(&self) {
        if self.wanted.load(SeqCst) {
            let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
            self.recorded.store(true, SeqCst);
            self.recorded_cv.notify_all();
        }
    }

    /// The sync thread: [`Alone::may_fall_back`], waiting up to `wait` for
    /// etcd's record (one round trip) rather than refusing at once.
    pub fn may_fall_back_within(&self, wait: Duration) -> bool {
        if self.may_fall_back() {
            return true;
        }
        let deadline = Instant::now() + wait;
        let mut g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        while !self.recorded.load(SeqCst) {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            g = self
                .recorded_cv
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }

    /// For the metrics.
    pub fn recorded(&self) -> bool {
        self.recorded.load(SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alone_only_once_recorded_and_never_after_together() {
        let a = Alone::default();
        assert!(!a.may_fall_back(), "not before etcd records it");
        assert!(a.wanted());
        a.set_recorded();
        assert!(a.may_fall_back());
        a.together();
        assert!(!a.wanted());
        assert!(!a.may_fall_back(), "a new outage needs a new record");
        // A record that lands after `together` does not count.
        a.together();
        a.set_recorded();
        assert!(!a.recorded());
    }

    #[test]
    fn the_sync_thread_waits_for_the_record_within_its_bound() {
        let a = std::sync::Arc::new(Alone::default());
        assert!(
            !a.may_fall_back_within(Duration::from_millis(10)),
            "no record: refused"
        );
        let b = std::sync::Arc::clone(&a);
        let t = std::thread::spawn(move || b.may_fall_back_within(Duration::from_secs(30)));
        while !a.wanted() {
            std::thread::yield_now();
        }
        a.set_recorded();
        assert!(t.join().unwrap(), "woken by the record");
    }
}
