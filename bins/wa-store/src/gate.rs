//! The link port's door: a cap on connections that have not authenticated
//! yet, and a refusal log that cannot flood. Anyone who can reach the port
//! can open connections and leave a TLS handshake or an `Auth` frame
//! unfinished for the whole auth timeout (600 such connections held 81 MiB
//! for 10 s, and each refusal logged a WARN); at most
//! [`MAX_UNAUTHENTICATED`] wait at once, the rest are closed at accept, and
//! refusals are logged at most once per [`LOG_EVERY`] with a count of those
//! not logged.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Link connections that may be in their TLS handshake or before `Auth` at
/// once. Edges, wa-register and secondaries hold a handful of links each.
pub const MAX_UNAUTHENTICATED: usize = 64;
/// At most one refusal line per this long.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// Refusals of link connections, logged at a bounded rate.
#[derive(Default)]
pub struct Refusals {
    /// When a refusal was last logged.
    last: Mutex<Option<Instant>>,
    /// Refusals since then, not logged.
    quiet: AtomicU64,
    /// Every refusal so far.
    pub total: AtomicU64,
}

impl Refusals {
    /// Counts a refusal at `now`; returns how many to report in a log line
    /// now (this one and the ones kept quiet since the last line), or
    /// `None` to stay quiet.
    pub fn count(&self, now: Instant) -> Option<u64> {
        self.total.fetch_add(1, Ordering::Relaxed);
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| now.saturating_duration_since(t) < LOG_EVERY) {
            self.quiet.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(now);
        Some(self.quiet.swap(0, Ordering::Relaxed) + 1)
    }

    /// Logs a refusal for `reason` (at most once per [`LOG_EVERY`]).
    pub fn refused(&self, reason: &str, span: &tracing::Span) {
        if let Some(n) = self.count(Instant::now()) {
            span.in_scope(|| tracing::warn!(%reason, refusals = n, "link refused"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_period_with_the_count_of_the_quiet_ones() {
        let r = Refusals::default();
        let t0 = Instant::now();
        assert_eq!(r.count(t0), Some(1));
        for i in 1..600 {
            assert_eq!(r.count(t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(r.count(t0 + LOG_EVERY), Some(600));
        assert_eq!(r.count(t0 + LOG_EVERY + Duration::from_secs(1)), None);
        assert_eq!(r.total.load(Ordering::Relaxed), 602);
    }
}
