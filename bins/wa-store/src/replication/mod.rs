//! One-way replication from an island's primary to its secondary
//! (docs/ARCHITECTURE.md, "Replication").
//!
//! The stream is the journal: the primary's [`Journal`] copies every record
//! it buffers into a tap once a secondary follows, [`sender`] ships them
//! over the link the secondary opened, after a catch-up copy; the
//! secondary ([`follower`]) writes them to its own journal, acknowledges,
//! and applies them to its engine later ([`apply`]). [`Replication`] is the
//! primary's side of the bargain the group commit relies on at level
//! `replicated`: [`Replication::flush`] returns once the secondary has every
//! record buffered so far, or falls back as configured.

pub mod alone;
pub mod apply;
pub mod disk_sync;
pub mod follower;
pub mod frames;
pub mod sender;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::config::WhenAbsent;
use crate::journal::Journal;
use crate::storage::StorageError;

/// Send times kept for the lag in seconds; beyond this many unacknowledged
/// frames the oldest kept stands for the rest (the lag only reads higher).
const SENT_TIMES: usize = 4096;

/// The primary's view of its follower.
#[derive(Debug, Default, Clone, Copy)]
struct Follower {
    /// Which follower link this is (a newer one replaces an older one).
    id: u64,
    /// Every record below this LSN is in the secondary's memory.
    acked: u64,
    /// The secondary finished its catch-up copy: it could take over.
    caught_up: bool,
    /// Records sent so far (the end of the last `Replicate`).
    sent: u64,
}

/// Counters for the metrics (`Replication::sample`).
#[derive(Default)]
pub struct Stats {
    /// Group-commit flushes made durable by the secondary's ack.
    pub flushes_replicated: AtomicU64,
    /// ... by a sync of the primary's own journal instead (`when_absent =
    /// "disk"`, or level `disk`).
    pub flushes_disk: AtomicU64,
    /// ... refused (`when_absent = "refuse"`).
    pub flushes_refused: AtomicU64,
    /// Journal records covered by each kind of flush.
    pub records_replicated: AtomicU64,
    pub records_disk: AtomicU64,
    pub records_refused: AtomicU64,
    /// Followers cut off for missing `replication.wait` or overflowing.
    pub followers_cut: AtomicU64,
    /// Catch-up copies sent, and engine bytes they carried.
    pub catch_ups: AtomicU64,
    pub catch_up_bytes: AtomicU64,
}

/// The primary's replication state, shared by the follower's link tasks
/// and the group commit's sync thread.
pub struct Replication {
    journal: Arc<Journal>,
    follower: Mutex<Option<Follower>>,
    acked: Condvar,
    wait: Duration,
    when_absent: WhenAbsent,
    next_id: AtomicU64,
    /// Records covered by the last flush (to count records per level).
    flushed_lsn: AtomicU64,
    /// Cancelled to cut the current follower off (it was too slow).
    cut: Mutex<Option<tokio_util::sync::CancellationToken>>,
    /// When the fallback was last logged (once per outage).
    fallback_since: Mutex<Option<Instant>>,
    /// When each frame not yet acknowledged was sent: (its end LSN, when).
    sent_at: Mutex<VecDeque<(u64, Instant)>>,
    /// With automatic failover: falling back to disk waits for etcd's
    /// record ([`alone`]).
    alone: Option<Arc<alone::Alone>>,
    pub stats: Stats,
}

impl Replication {
    pub fn new(journal: Arc<Journal>, wait: Duration, when_absent: WhenAbsent) -> Replication {
        Replication {
            journal,
            follower: Mutex::new(None),
            acked: Condvar::new(),
            wait,
            when_absent,
            next_id: AtomicU64::new(1),
            flushed_lsn: AtomicU64::new(0),
            cut: Mutex::new(None),
            fallback_since: Mutex::new(None),
            sent_at: Mutex::new(VecDeque::new()),
            alone: None,
            stats: Stats::default(),
        }
    }

    /// Under automatic failover: the fallback to disk needs etcd's record
    /// that this primary goes on alone, kept through `gate`.
    pub fn gated_by(mut self, gate: Arc<alone::Alone>) -> Replication {
        self.alone = Some(gate);
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Follower>> {
        self.follower.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A follower link begins (replacing any other): its id, and the token
    /// that cuts it off.
    pub(crate) fn attach(&self) -> (u64, tokio_util::sync::CancellationToken) {
        let id = self.next_id.fetch_add(1, Relaxed);
        let token = tokio_util::sync::CancellationToken::new();
        if let Some(old) = self
            .cut
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace(token.clone())
        {
            old.cancel();
        }
        *self.lock() = Some(Follower {
            id,
            ..Follower::default()
        });
        self.sent_times().clear();
        self.acked.notify_all();
        (id, token)
    }

    /// Follower `id` acknowledged every record below `lsn`.
    pub(crate) fn ack(&self, id: u64, lsn: u64, caught_up: bool) {
        let mut g = self.lock();
        let mut whole = false;
        if let Some(f) = g.as_mut().filter(|f| f.id == id) {
            f.acked = f.acked.max(lsn);
            f.caught_up |= caught_up;
            let mut times = self.sent_times();
            while times.front().is_some_and(|(end, _)| *end <= lsn) {
                times.pop_front();
            }
            whole = f.caught_up && f.acked >= self.journal.lsn();
        }
        drop(g);
        // The secondary has everything, appends acknowledged without it
        // included: going on alone ends here even with no append to flush.
        if whole && let Some(a) = &self.alone {
            a.together();
        }
        self.acked.notify_all();
    }

    /// Follower `id` was sent records up to `lsn`.
    pub(crate) fn sent(&self, id: u64, lsn: u64) {
        if let Some(f) = self.lock().as_mut().filter(|f| f.id == id) {
            f.sent = f.sent.max(lsn);
            let mut times = self.sent_times();
            if times.len() < SENT_TIMES {
                times.push_back((lsn, Instant::now()));
            }
        }
    }

    fn sent_times(&self) -> std::sync::MutexGuard<'_, VecDeque<(u64, Instant)>> {
        self.sent_at.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long the oldest record the secondary has not acknowledged has
    /// been on its way (zero when it has everything sent).
    pub fn lag(&self) -> Duration {
        self.sent_times()
            .front()
            .map_or(Duration::ZERO, |(_, t)| t.elapsed())
    }

    /// The LSN of this primary's stream.
    pub fn lsn(&self) -> u64 {
        self.journal.lsn()
    }

    /// Whether etcd records that this primary goes on alone.
    pub fn alone(&self) -> bool {
        self.alone.as_ref().is_some_and(|a| a.recorded())
    }

    /// Follower `id` is gone.
    pub(crate) fn detach(&self, id: u64) {
        let mut g = self.lock();
        if g.is_some_and(|f| f.id == id) {
            *g = None;
            self.journal.tap_off();
            self.sent_times().clear();
        }
        drop(g);
        self.acked.notify_all();
    }

    /// (connected, caught up, records sent but not acknowledged).
    pub fn status(&self) -> (bool, bool, u64) {
        match *self.lock() {
            Some(f) => (true, f.caught_up, f.sent.saturating_sub(f.acked)),
            None => (false, false, 0),
        }
    }

    /// The group commit's flush at level `replicated`, on its sync thread:
    /// returns once a caught-up secondary has every record buffered before
    /// the call; otherwise (none, not caught up, or no ack within
    /// `replication.wait`) as `when_absent` says.
    pub fn flush(&self) -> Result<(), StorageError> {
        let target = self.journal.lsn();
        let before = self.flushed_lsn.swap(target, Relaxed);
        let records = target.saturating_sub(before);
        let deadline = Instant::now() + self.wait;
        let mut g = self.lock();
        let mut waited_out = false;
        loop {
            match *g {
                Some(f) if f.caught_up && f.acked >= target => {
                    drop(g);
                    if let Some(a) = &self.alone {
                        a.together();
                    }
                    self.count(
                        &self.stats.flushes_replicated,
                        &self.stats.records_replicated,
                        records,
                    );
                    if self
                        .fallback_since
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .take()
                        .is_some()
                    {
                        tracing::warn!("appends are replicated again");
                    }
                    return Ok(());
                }
                Some(f) if f.caught_up => {
                    let now = Instant::now();
                    if now >= deadline {
                        waited_out = true;
                        break;
                    }
                    g = self
                        .acked
                        .wait_timeout(g, deadline - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                _ => break,
            }
        }
        drop(g);
        if waited_out {
            // Too slow: cut it off, so that the next flushes do not wait
            // too; it connects again and catches up.
            self.stats.followers_cut.fetch_add(1, Relaxed);
            if let Some(t) = self.cut.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                t.cancel();
            }
        }
        self.fall_back(records, waited_out)
    }

    fn fall_back(&self, records: u64, waited_out: bool) -> Result<(), StorageError> {
        {
            let mut since = self
                .fallback_since
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if since.is_none() {
                *since = Some(Instant::now());
                let why = if waited_out {
                    "the secondary did not acknowledge within replication.wait"
                } else {
                    "no caught-up secondary follows this primary"
                };
                match self.when_absent {
                    WhenAbsent::Disk if self.alone.is_some() => tracing::error!(
                        reason = why,
                        "appends are refused with UNAVAILABLE until etcd records that this primary goes on without its secondary; then durable on this node's disk only (replication.when_absent = \"disk\")"
                    ),
                    WhenAbsent::Disk => tracing::error!(
                        reason = why,
                        "appends are NOT replicated: durable on this node's disk only (replication.when_absent = \"disk\")"
                    ),
                    WhenAbsent::Refuse => tracing::error!(
                        reason = why,
                        "appends are refused with UNAVAILABLE until a secondary follows (replication.when_absent = \"refuse\")"
                    ),
                }
            }
        }
        let gated = self
            .alone
            .as_ref()
            .is_some_and(|a| !a.may_fall_back_within(self.wait));
        match self.when_absent {
            WhenAbsent::Disk if gated => {
                // (Until etcd records it: `alone`.)
                self.count(
                    &self.stats.flushes_refused,
                    &self.stats.records_refused,
                    records,
                );
                Err(StorageError::Unreplicated)
            }
            WhenAbsent::Disk => {
                self.sync_disk()?;
                self.count(&self.stats.flushes_disk, &self.stats.records_disk, records);
                Ok(())
            }
            WhenAbsent::Refuse => {
                self.count(
                    &self.stats.flushes_refused,
                    &self.stats.records_refused,
                    records,
                );
                Err(StorageError::Unreplicated)
            }
        }
    }

    /// Writes and syncs the primary's journal (level `disk`, and the
    /// background sync at level `replicated`).
    pub fn sync_disk(&self) -> Result<(), StorageError> {
        self.journal.sync().map_err(|e| StorageError::Engine {
            op: "journal sync",
            source: Box::new(e),
        })
    }

    fn count(&self, flushes: &AtomicU64, records_counter: &AtomicU64, records: u64) {
        flushes.fetch_add(1, Relaxed);
        records_counter.fetch_add(records, Relaxed);
    }

    /// The replication figures, into a metrics scrape.
    pub fn sample(&self, s: &mut common::admin::metrics::Sample<'_>) {
        let (connected, caught_up, lag) = self.status();
        let st = &self.stats;
        s.gauge(
            "wa_store_replica_connected",
            "A secondary follows this primary",
            f64::from(u8::from(connected)),
        );
        s.gauge(
            "wa_store_replica_caught_up",
            "The secondary finished its catch-up copy",
            f64::from(u8::from(caught_up)),
        );
        s.gauge(
            "wa_store_replica_alone",
            "etcd records that this primary acknowledges appends without its secondary (no takeover until it is back)",
            f64::from(u8::from(self.alone())),
        );
        s.gauge(
            "wa_store_replica_lag_seconds",
            "How long the oldest record sent to the secondary has waited for its acknowledgement",
            self.lag().as_secs_f64(),
        );
        s.gauge(
            "wa_store_replica_lag_records",
            "Journal records sent to the secondary and not yet acknowledged",
            lag as f64,
        );
        s.gauge(
            "wa_store_replica_sent_lsn",
            "Journal records of this primary's stream (its LSN)",
            self.journal.lsn() as f64,
        );
        let by_level = |f: [&AtomicU64; 3]| -> Vec<(String, u64)> {
            ["replicated", "disk", "refused"]
                .iter()
                .zip(f)
                .map(|(l, v)| (l.to_string(), v.load(Relaxed)))
                .collect()
        };
        s.counters(
            "wa_store_commit_flushes",
            "Group commits by the durability they achieved",
            "level",
            &by_level([
                &st.flushes_replicated,
                &st.flushes_disk,
                &st.flushes_refused,
            ]),
        );
        s.counters(
            "wa_store_commit_records",
            "Journal records (appends, deletes, records) by the durability their commit achieved",
            "level",
            &by_level([
                &st.records_replicated,
                &st.records_disk,
                &st.records_refused,
            ]),
        );
        s.counter(
            "wa_store_replica_cut",
            "Secondaries cut off for missing replication.wait or overflowing the stream",
            st.followers_cut.load(Relaxed),
        );
        s.counter(
            "wa_store_catch_ups",
            "Catch-up copies sent to a secondary",
            st.catch_ups.load(Relaxed),
        );
        s.counter(
            "wa_store_catch_up_bytes",
            "Engine bytes sent in catch-up copies",
            st.catch_up_bytes.load(Relaxed),
        );
    }
}

/// `f` on a blocking thread; its error, or its panic, as text (the
/// replication link's error types take it with `?`: `From<String>`).
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| e.to_string())?
}
