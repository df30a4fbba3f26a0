//! The store's metrics, built at start-up and shared by the home's shards,
//! the write-back task and the flusher. [`Metrics::render`] gives the
//! Prometheus text format for the admin listener and for tests and
//! benchmarks.

use std::sync::{Arc, Mutex};

use common::admin::metrics::{Registry, Sample, Scrape};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Default)]
pub struct Metrics {
    /// The edge of each link up, by link id (`wactl trace` names it).
    pub edges: crate::inspect::LinkNames,
    /// New items stored (not duplicates).
    pub appends: AtomicU64,
    pub duplicates: AtomicU64,
    pub mailbox_full: AtomicU64,
    /// Appends refused with STORAGE_FULL (short of disk space).
    pub storage_full: AtomicU64,
    /// The data directory's free bytes, as of the last check (`crate::disk`).
    pub disk_free_bytes: AtomicU64,
    /// Appends refused because the sending device was revoked.
    pub revoked_appends: AtomicU64,
    /// Journal syncs (group commits) run.
    pub journal_syncs: AtomicU64,
    /// Group messages refused with GROUP_BUSY (their group's fan-out queue
    /// was full).
    pub group_busy: AtomicU64,
    /// Items in the groups' fan-out queues (all groups whose home is this
    /// node), and the bytes of the cached group records.
    pub group_fanout_queue: AtomicU64,
    pub group_records_cached_bytes: AtomicU64,
    /// Items deleted after delivery while still only in memory: they never
    /// touched the engine.
    pub delivered_from_cache: AtomicU64,
    /// Items deleted after delivery that had been written to the engine.
    pub delivered_from_engine: AtomicU64,
    /// Items written to the engine by write-back (lingered, or memory pressure).
    pub written_back: AtomicU64,
    /// Items written straight to the engine because their mailbox was large
    /// or the cache was full.
    pub bypassed: AtomicU64,
    pub expired: AtomicU64,
    /// Dedupe entries dropped by the sweeper (older than the expiry age).
    pub dedupe_expired: AtomicU64,
    /// Items and bytes in the cache now (not yet in the engine: "dirty").
    pub cache_items: AtomicU64,
    pub cache_bytes: AtomicU64,
    /// Age in ms of the oldest item still only in memory, as of the last
    /// write-back round ("flush lag").
    pub oldest_dirty_ms: AtomicU64,
    pub engine_flushes: AtomicU64,
    /// Bytes the engine's files take, as of the last sweep.
    pub engine_disk_bytes: AtomicU64,
    /// Edges linked now.
    pub links: AtomicU64,
    /// Mailbox sizes as of the last sweep: histogram buckets and the largest.
    pub mailboxes: Mutex<MailboxReport>,
    /// The primary's replication figures, once it serves.
    pub replication: std::sync::OnceLock<Arc<crate::replication::Replication>>,
    /// The secondary's: 1 while it follows a primary, 1 once caught up,
    /// and the stream records it holds (in its journal's memory at least).
    pub following: AtomicU64,
    pub follower_caught_up: AtomicU64,
    pub follower_lsn: AtomicU64,
    /// How long the last stream frame took from the primary's send to its
    /// arrival here, in ms (both machines' clocks).
    pub follower_lag_ms: AtomicU64,
    /// The catch-up copy in progress: engine bytes received, and about how
    /// many the primary has (both 0 outside a copy).
    pub follower_copied_bytes: AtomicU64,
    pub follower_copy_total_bytes: AtomicU64,
    /// Push notifications (`crate::push`).
    pub push: Arc<crate::push::PushMetrics>,
}

/// Upper bounds of the mailbox length histogram.
pub const LENGTH_BUCKETS: [u64; 7] = [1, 10, 100, 1_000, 10_000, 100_000, u64::MAX];

#[derive(Default, Clone)]
pub struct MailboxReport {
    /// Count of mailboxes with at most `LENGTH_BUCKETS[i]` items (cumulative).
    pub buckets: [u64; LENGTH_BUCKETS.len()],
    /// The largest mailboxes (user, items, bytes), biggest first.
    pub largest: Vec<(String, u64, u64)>,
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn sub(gauge: &AtomicU64, n: u64) {
        // Gauges never go below zero even if a caller double-counts.
        let _ = gauge.fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_sub(n)));
    }

    /// Share of delivered items that never touched the engine.
    pub fn cache_hit_ratio(&self) -> f64 {
        let hit = self.delivered_from_cache.load(Relaxed) as f64;
        let miss = self.delivered_from_engine.load(Relaxed) as f64;
        if hit + miss == 0.0 {
            0.0
        } else {
            hit / (hit + miss)
        }
    }

    /// Prometheus text exposition of these metrics alone (tests and
    /// benchmarks; the admin listener serves them with the rest).
    pub fn render(self: &Arc<Self>) -> String {
        let mut r = Registry::default();
        let m = Arc::clone(self);
        r.register_collector(Box::new(Scrape(move |s: &mut Sample<'_>| m.sample(s))));
        common::admin::metrics::render(&r)
    }

    /// Adds every figure to a scrape (read now from the atomics the shards
    /// update).
    pub fn sample(&self, s: &mut Sample<'_>) {
        self.push.sample(s);
        for (name, help, v) in [
            ("appends", "New mailbox items stored", &self.appends),
            (
                "duplicates",
                "Appends recognised as duplicates",
                &self.duplicates,
            ),
            (
                "mailbox_full",
                "Appends refused with MAILBOX_FULL",
                &self.mailbox_full,
            ),
            (
                "storage_full",
                "Appends refused with STORAGE_FULL (the data directory is short of space, or the journal failed on a full disk)",
                &self.storage_full,
            ),
            (
                "revoked_appends",
                "Appends refused with REVOKED: the sending device was revoked",
                &self.revoked_appends,
            ),
            (
                "journal_syncs",
                "Group commits (journal syncs); appends / this = appends per flush",
                &self.journal_syncs,
            ),
            (
                "group_busy",
                "Group messages refused with GROUP_BUSY: their group's fan-out queue was full",
                &self.group_busy,
            ),
            (
                "delivered_from_cache",
                "Items delivered and deleted without touching the engine",
                &self.delivered_from_cache,
            ),
            (
                "delivered_from_engine",
                "Items delivered and deleted after being written to the engine",
                &self.delivered_from_engine,
            ),
            (
                "written_back",
                "Items written to the engine by write-back",
                &self.written_back,
            ),
            (
                "dedupe_expired",
                "Dedupe entries dropped by the sweeper after the expiry age",
                &self.dedupe_expired,
            ),
            (
                "bypassed",
                "Items written straight to the engine (large mailbox or full cache)",
                &self.bypassed,
            ),
            (
                "expired",
                "Undelivered items deleted for age",
                &self.expired,
            ),
            (
                "engine_flushes",
                "Engine flushes by write-back rounds",
                &self.engine_flushes,
            ),
        ] {
            s.counter(&format!("wa_store_{name}"), help, v.load(Relaxed));
        }
        for (name, help, v) in [
            (
                "dirty_items",
                "Items only in memory (journal), not yet in the engine",
                &self.cache_items,
            ),
            (
                "dirty_bytes",
                "Bytes of items only in memory",
                &self.cache_bytes,
            ),
            (
                "flush_lag_ms",
                "Age of the oldest item only in memory",
                &self.oldest_dirty_ms,
            ),
            (
                "engine_disk_bytes",
                "Bytes of the engine's files",
                &self.engine_disk_bytes,
            ),
            ("links", "Edges linked now", &self.links),
            (
                "group_fanout_queue",
                "Group log items not yet copied to every member, all groups of this home",
                &self.group_fanout_queue,
            ),
            (
                "group_records_cached_bytes",
                "Bytes of group records cached (at most [groups] record_cache)",
                &self.group_records_cached_bytes,
            ),
            (
                "disk_free_bytes",
                "Free bytes of the data directory's file system, as of the last check (every 250 ms)",
                &self.disk_free_bytes,
            ),
        ] {
            s.gauge(&format!("wa_store_{name}"), help, v.load(Relaxed) as f64);
        }
        s.gauge(
            "wa_store_cache_hit_ratio",
            "Share of delivered items that never touched the engine",
            self.cache_hit_ratio(),
        );
        let report = self.report();
        let buckets: Vec<_> = LENGTH_BUCKETS
            .iter()
            .zip(report.buckets)
            .map(|(le, n)| {
                let le = if *le == u64::MAX {
                    "+Inf".to_string()
                } else {
                    le.to_string()
                };
                (le, n as f64)
            })
            .collect();
        s.gauges(
            "wa_store_mailboxes_by_length",
            "Mailboxes with at most `le` items at the last sweep (cumulative)",
            "le",
            &buckets,
        );
        let largest: Vec<_> = report
            .largest
            .iter()
            .map(|(user, items, _)| (user.clone(), *items as f64))
            .collect();
        s.gauges(
            "wa_store_largest_mailbox_items",
            "The largest mailboxes at the last sweep",
            "user",
            &largest,
        );
        for (name, help, v) in [
            (
                "following",
                "1 while this node is a secondary following its primary",
                &self.following,
            ),
            (
                "follower_caught_up",
                "1 once this secondary holds a complete copy (it could take over)",
                &self.follower_caught_up,
            ),
            (
                "follower_lsn",
                "Stream records this secondary holds (compare the primary's wa_store_replica_sent_lsn)",
                &self.follower_lsn,
            ),
            (
                "follower_copied_bytes",
                "Engine bytes received by the catch-up copy in progress (0 outside one)",
                &self.follower_copied_bytes,
            ),
            (
                "follower_copy_total_bytes",
                "About how many engine bytes the catch-up copy in progress brings (0 outside one)",
                &self.follower_copy_total_bytes,
            ),
        ] {
            s.gauge(&format!("wa_store_{name}"), help, v.load(Relaxed) as f64);
        }
        s.gauge(
            "wa_store_follower_lag_seconds",
            "From the primary's send of the last stream frame to its arrival here (both machines' clocks; 0 before one came)",
            self.follower_lag_ms.load(Relaxed) as f64 / 1000.0,
        );
        if let Some(r) = self.replication.get() {
            r.sample(s);
        }
    }

    /// The catch-up copy's progress (both 0 outside a copy).
    pub fn copy_progress(&self, copied: u64, total: u64) {
        self.follower_copied_bytes.store(copied, Relaxed);
        self.follower_copy_total_bytes.store(total, Relaxed);
    }

    /// This node's part in replication, for `/admin/status` (`wactl
    /// cluster status`): as secondary, how far it follows; as primary, how
    /// far its secondary is behind.
    pub fn replication_status(&self, fenced: bool) -> serde_json::Value {
        if self.following.load(Relaxed) == 1 {
            return serde_json::json!({
                "role": "secondary",
                "caught_up": self.follower_caught_up.load(Relaxed) == 1,
                "lsn": self.follower_lsn.load(Relaxed),
                "lag_seconds": self.follower_lag_ms.load(Relaxed) as f64 / 1000.0,
                "copied_bytes": self.follower_copied_bytes.load(Relaxed),
                "copy_total_bytes": self.follower_copy_total_bytes.load(Relaxed),
            });
        }
        let role = if fenced { "fenced" } else { "primary" };
        match self.replication.get() {
            Some(r) => {
                let (connected, caught_up, lag) = r.status();
                serde_json::json!({
                    "role": role,
                    "lsn": r.lsn(),
                    "secondary_connected": connected,
                    "secondary_caught_up": caught_up,
                    "lag_records": lag,
                    "lag_seconds": r.lag().as_secs_f64(),
                    "alone": r.alone(),
                })
            }
            None => serde_json::json!({ "role": role }),
        }
    }

    /// The mailbox figures of the last sweep.
    pub fn report(&self) -> MailboxReport {
        self.mailboxes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_metric_with_help_and_type() {
        let m = Arc::new(Metrics::default());
        Metrics::add(&m.delivered_from_cache, 3);
        Metrics::add(&m.delivered_from_engine, 1);
        Metrics::add(&m.cache_items, 2);
        Metrics::sub(&m.cache_items, 5);
        let text = m.render();
        assert!(text.contains("wa_store_delivered_from_cache_total 3"));
        assert!(text.contains("wa_store_cache_hit_ratio 0.75"), "{text}");
        assert!(
            text.contains("wa_store_dirty_items 0"),
            "gauges saturate at zero"
        );
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{name} has a TYPE"
            );
        }
    }
}
