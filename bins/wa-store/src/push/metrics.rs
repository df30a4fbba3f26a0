//! What the pushes did, per provider (docs/OPERATIONS.md, "Push
//! notifications"): sent, failed by reason, retried, endpoints removed,
//! request latency, and the queue's length.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use common::admin::metrics::Sample;

#[derive(Default)]
pub struct PushMetrics {
    queued: AtomicU64,
    cancelled: AtomicU64,
    by: Mutex<By>,
}

#[derive(Default)]
struct By {
    sent: BTreeMap<&'static str, u64>,
    retried: BTreeMap<&'static str, u64>,
    removed: BTreeMap<&'static str, u64>,
    failed: BTreeMap<(&'static str, &'static str), u64>,
    /// Requests and their total seconds, per provider.
    requests: BTreeMap<&'static str, (u64, f64)>,
}

impl PushMetrics {
    fn by(&self) -> std::sync::MutexGuard<'_, By> {
        self.by.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_queue(&self, n: usize) {
        self.queued.store(n as u64, Relaxed);
    }

    pub fn cancelled(&self) {
        self.cancelled.fetch_add(1, Relaxed);
    }

    pub fn sent(&self, provider: &'static str) {
        *self.by().sent.entry(provider).or_default() += 1;
    }

    pub fn retried(&self, provider: &'static str) {
        *self.by().retried.entry(provider).or_default() += 1;
    }

    pub fn removed(&self, provider: &'static str) {
        *self.by().removed.entry(provider).or_default() += 1;
    }

    pub fn failed(&self, provider: &'static str, reason: &'static str) {
        *self.by().failed.entry((provider, reason)).or_default() += 1;
    }

    pub fn request(&self, provider: &'static str, seconds: f64) {
        let mut by = self.by();
        let r = by.requests.entry(provider).or_default();
        r.0 += 1;
        r.1 += seconds;
    }

    pub fn sample(&self, s: &mut Sample<'_>) {
        s.gauge(
            "wa_store_push_queue",
            "Devices with a push waiting (coalesced, paced or retrying)",
            self.queued.load(Relaxed) as f64,
        );
        s.counter(
            "wa_store_push_cancelled",
            "Waiting pushes dropped because the device connected or lost its endpoint",
            self.cancelled.load(Relaxed),
        );
        let by = self.by();
        let one = |m: &BTreeMap<&'static str, u64>| -> Vec<(String, u64)> {
            m.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
        };
        s.counters(
            "wa_store_push_sent",
            "Pushes a provider accepted",
            "provider",
            &one(&by.sent),
        );
        s.counters(
            "wa_store_push_retried",
            "Push attempts that failed for now and are retried (429, 5xx, timeouts)",
            "provider",
            &one(&by.retried),
        );
        s.counters(
            "wa_store_push_endpoints_removed",
            "Endpoints removed because the provider said the token is dead",
            "provider",
            &one(&by.removed),
        );
        let failed: Vec<(Vec<(String, String)>, u64)> = by
            .failed
            .iter()
            .map(|((p, r), v)| {
                (
                    vec![
                        ("provider".to_owned(), (*p).to_owned()),
                        ("reason".to_owned(), (*r).to_owned()),
                    ],
                    *v,
                )
            })
            .collect();
        s.labeled_counters(
            "wa_store_push_failed",
            "Pushes given up, by provider and reason",
            &failed,
        );
        let count: Vec<(String, u64)> = by
            .requests
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.0))
            .collect();
        let secs: Vec<(String, f64)> = by
            .requests
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.1))
            .collect();
        s.counters(
            "wa_store_push_requests",
            "Requests made to the provider",
            "provider",
            &count,
        );
        s.gauges(
            "wa_store_push_request_seconds_sum",
            "Total seconds of the requests made to the provider (divide by wa_store_push_requests for the mean latency)",
            "provider",
            &secs,
        );
    }
}
