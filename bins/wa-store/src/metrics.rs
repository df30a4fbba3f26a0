//! The store's metrics, built at start-up and shared by the home's shards,
//! the write-back task and the flusher. [`Metrics::render`] gives the
//! Prometheus text format for the admin listener (operations issue) and for
//! tests and benchmarks.

use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Default)]
pub struct Metrics {
    /// New items stored (not duplicates).
    pub appends: AtomicU64,
    pub duplicates: AtomicU64,
    pub mailbox_full: AtomicU64,
    /// Journal syncs (group commits) run.
    pub journal_syncs: AtomicU64,
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
    /// Mailbox sizes as of the last sweep: histogram buckets and the largest.
    pub mailboxes: Mutex<MailboxReport>,
    /// The primary's replication figures, once it serves.
    pub replication: std::sync::OnceLock<std::sync::Arc<crate::replication::Replication>>,
    /// The secondary's: 1 while it follows a primary, 1 once caught up,
    /// and the stream records it holds (in its journal's memory at least).
    pub following: AtomicU64,
    pub follower_caught_up: AtomicU64,
    pub follower_lsn: AtomicU64,
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

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let mut counter = |name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(
                s,
                "# HELP wa_store_{name} {help}\n# TYPE wa_store_{name} counter\nwa_store_{name} {}",
                v.load(Relaxed)
            );
        };
        counter("appends_total", "New mailbox items stored.", &self.appends);
        counter(
            "duplicates_total",
            "Appends recognised as duplicates.",
            &self.duplicates,
        );
        counter(
            "mailbox_full_total",
            "Appends refused with MAILBOX_FULL.",
            &self.mailbox_full,
        );
        counter(
            "journal_syncs_total",
            "Group commits (journal syncs); appends_total / this = appends per flush.",
            &self.journal_syncs,
        );
        counter(
            "delivered_from_cache_total",
            "Items delivered and deleted without touching the engine.",
            &self.delivered_from_cache,
        );
        counter(
            "delivered_from_engine_total",
            "Items delivered and deleted after being written to the engine.",
            &self.delivered_from_engine,
        );
        counter(
            "written_back_total",
            "Items written to the engine by write-back.",
            &self.written_back,
        );
        counter(
            "dedupe_expired_total",
            "Dedupe entries dropped by the sweeper after the expiry age.",
            &self.dedupe_expired,
        );
        counter(
            "bypassed_total",
            "Items written straight to the engine (large mailbox or full cache).",
            &self.bypassed,
        );
        counter(
            "expired_total",
            "Undelivered items deleted for age.",
            &self.expired,
        );
        counter(
            "engine_flushes_total",
            "Engine flushes by write-back rounds.",
            &self.engine_flushes,
        );
        let mut gauge = |name: &str, help: &str, v: u64| {
            let _ = writeln!(
                s,
                "# HELP wa_store_{name} {help}\n# TYPE wa_store_{name} gauge\nwa_store_{name} {v}"
            );
        };
        gauge(
            "dirty_items",
            "Items only in memory (journal), not yet in the engine.",
            self.cache_items.load(Relaxed),
        );
        gauge(
            "dirty_bytes",
            "Bytes of items only in memory.",
            self.cache_bytes.load(Relaxed),
        );
        gauge(
            "flush_lag_ms",
            "Age of the oldest item only in memory.",
            self.oldest_dirty_ms.load(Relaxed),
        );
        gauge(
            "engine_disk_bytes",
            "Bytes of the engine's files.",
            self.engine_disk_bytes.load(Relaxed),
        );
        let _ = writeln!(
            s,
            "# HELP wa_store_cache_hit_ratio Share of delivered items that never touched the engine.\n# TYPE wa_store_cache_hit_ratio gauge\nwa_store_cache_hit_ratio {:.4}",
            self.cache_hit_ratio()
        );
        let report = self
            .mailboxes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let _ = writeln!(
            s,
            "# HELP wa_store_mailbox_items Mailbox lengths at the last sweep.\n# TYPE wa_store_mailbox_items histogram"
        );
        for (i, le) in LENGTH_BUCKETS.iter().enumerate() {
            let le = if *le == u64::MAX {
                "+Inf".to_string()
            } else {
                le.to_string()
            };
            let _ = writeln!(
                s,
                "wa_store_mailbox_items_bucket{{le=\"{le}\"}} {}",
                report.buckets[i]
            );
        }
        let _ = writeln!(
            s,
            "# HELP wa_store_largest_mailbox_items The largest mailboxes at the last sweep.\n# TYPE wa_store_largest_mailbox_items gauge"
        );
        for (user, items, _) in &report.largest {
            let _ = writeln!(
                s,
                "wa_store_largest_mailbox_items{{user=\"{user}\"}} {items}"
            );
        }
        for (name, help, v) in [
            (
                "following",
                "1 while this node is a secondary following its primary.",
                &self.following,
            ),
            (
                "follower_caught_up",
                "1 once this secondary holds a complete copy (it could take over).",
                &self.follower_caught_up,
            ),
            (
                "follower_lsn",
                "Stream records this secondary holds (compare the primary's wa_store_replica_sent_lsn).",
                &self.follower_lsn,
            ),
        ] {
            let _ = writeln!(
                s,
                "# HELP wa_store_{name} {help}\n# TYPE wa_store_{name} gauge\nwa_store_{name} {}",
                v.load(Relaxed)
            );
        }
        if let Some(r) = self.replication.get() {
            r.render(&mut s);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_metric_with_help_and_type() {
        let m = Metrics::default();
        Metrics::add(&m.delivered_from_cache, 3);
        Metrics::add(&m.delivered_from_engine, 1);
        Metrics::add(&m.cache_items, 2);
        Metrics::sub(&m.cache_items, 5);
        let text = m.render();
        assert!(text.contains("wa_store_delivered_from_cache_total 3"));
        assert!(text.contains("wa_store_cache_hit_ratio 0.7500"));
        assert!(
            text.contains("wa_store_dirty_items 0"),
            "gauges saturate at zero"
        );
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            let base = name.trim_end_matches("_bucket");
            assert!(
                text.contains(&format!("# TYPE {base} ")),
                "{name} has a TYPE"
            );
        }
    }
}
