//! What the bench counts, without I/O: a latency histogram cheap enough to
//! record every message into from many tasks, and the per-receiver tracker
//! that tells a first copy from a duplicate, a redelivery or a reordering.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Buckets: exact below 128 µs, then 64 per power of two (≤ 1.6 % wide),
/// up to 2^40 µs (12 days).
const BUCKETS: usize = 128 + 34 * 64;

fn index(us: u64) -> usize {
    if us < 128 {
        return us as usize;
    }
    let msb = 63 - us.leading_zeros();
    let shift = msb - 6;
    let i = 128 + (shift as usize - 1) * 64 + ((us >> shift) as usize - 64);
    i.min(BUCKETS - 1)
}

/// The middle of bucket `i`, in µs.
fn value(i: usize) -> u64 {
    if i < 128 {
        return i as u64;
    }
    let k = i - 128;
    let shift = k / 64 + 1;
    let mant = (k % 64 + 64) as u64;
    (mant << shift) + (1 << (shift - 1))
}

/// A histogram many tasks record into at once.
pub(crate) struct AtomicHist {
    buckets: Box<[AtomicU64]>,
}

impl AtomicHist {
    pub(crate) fn new() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub(crate) fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.buckets[index(us)].fetch_add(1, Relaxed);
    }

    /// What was recorded since the last take, and start again.
    pub(crate) fn take(&self) -> Hist {
        let mut h = Hist::default();
        for (i, b) in self.buckets.iter().enumerate() {
            let n = b.swap(0, Relaxed);
            if n > 0 {
                h.counts.push((i as u32, n));
            }
        }
        h
    }
}

/// A histogram as it travels between processes: (bucket, count), sorted.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Hist {
    pub(crate) counts: Vec<(u32, u64)>,
}

impl Hist {
    pub(crate) fn merge(&mut self, other: &Hist) {
        let mut all: std::collections::BTreeMap<u32, u64> = self.counts.iter().copied().collect();
        for &(i, n) in &other.counts {
            *all.entry(i).or_default() += n;
        }
        self.counts = all.into_iter().collect();
    }

    pub(crate) fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.1).sum()
    }

    /// The `q` quantile (0..=1) in milliseconds; 0 when empty.
    pub(crate) fn quantile_ms(&self, q: f64) -> f64 {
        let total = self.count();
        if total == 0 {
            return 0.0;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for &(i, n) in &self.counts {
            seen += n;
            if seen >= rank {
                return value(i as usize) as f64 / 1000.0;
            }
        }
        unreachable!("rank is at most the total")
    }

    pub(crate) fn max_ms(&self) -> f64 {
        self.counts
            .last()
            .map_or(0.0, |&(i, _)| value(i as usize) as f64 / 1000.0)
    }
}

/// How one received copy of a bench message counts.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Seen {
    /// The first copy; `reordered` when a later message of the same sender
    /// came first.
    First { reordered: bool },
    /// Another copy of a message already received on this connection, or
    /// whose acknowledgement the server had confirmed reading (a `Pong`
    /// after the `Ack`): the server sent it twice.
    Duplicate,
    /// Another copy, on a later connection, of a message whose
    /// acknowledgement was never confirmed: at-least-once delivery doing
    /// its job, not a fault.
    Redelivered,
}

/// What one receiver has seen of its sender's messages (numbered 0, 1, ...).
#[derive(Default)]
pub(crate) struct Tracker {
    /// Per message: 0 unseen, else `connection << 32 | ack batch`.
    marks: Vec<u64>,
    /// Highest message number seen.
    max: Option<u64>,
}

impl Tracker {
    /// A copy of message `n` arrived on connection `conn` (counted from 1);
    /// its ack goes out in ack batch `batch` (from 1); the server has
    /// confirmed reading the ack batches up to `confirmed`.
    pub(crate) fn see(&mut self, n: u64, conn: u32, batch: u32, confirmed: u32) -> Seen {
        let i = n as usize;
        if self.marks.len() <= i {
            self.marks.resize(i + 1, 0);
        }
        let mark = self.marks[i];
        if mark != 0 {
            let (c, b) = ((mark >> 32) as u32, mark as u32);
            return if c == conn || b <= confirmed {
                Seen::Duplicate
            } else {
                // (Its ack is the later copy's now.)
                self.marks[i] = u64::from(conn) << 32 | u64::from(batch);
                Seen::Redelivered
            };
        }
        self.marks[i] = u64::from(conn) << 32 | u64::from(batch);
        let reordered = self.max.is_some_and(|m| n < m);
        self.max = Some(self.max.map_or(n, |m| m.max(n)));
        Seen::First { reordered }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_continuous_and_close() {
        let mut last = 0;
        for us in [0u64, 1, 127, 128, 129, 255, 256, 1000, 50_000, 1 << 30] {
            let i = index(us);
            assert!(i >= last, "{us}");
            last = i;
            let v = value(i);
            assert!(
                v.abs_diff(us) as f64 <= us as f64 * 0.016 + 1.0,
                "{us} -> {v}"
            );
        }
        for i in 0..BUCKETS - 1 {
            assert_eq!(index(value(i)), i, "bucket {i}");
        }
    }

    #[test]
    fn quantiles_of_a_known_spread() {
        let h = AtomicHist::new();
        for ms in 1..=100 {
            h.record(Duration::from_millis(ms));
        }
        let mut got = h.take();
        assert_eq!(got.count(), 100);
        assert!(
            (got.quantile_ms(0.5) - 50.0).abs() < 1.0,
            "{}",
            got.quantile_ms(0.5)
        );
        assert!((got.quantile_ms(0.99) - 99.0).abs() < 1.6);
        assert!((got.max_ms() - 100.0).abs() < 1.6);
        assert_eq!(h.take().count(), 0, "take starts again");
        got.merge(&got.clone());
        assert_eq!(got.count(), 200);
    }

    #[test]
    fn tracker_tells_faults_from_redelivery() {
        let mut t = Tracker::default();
        assert_eq!(t.see(0, 1, 1, 0), Seen::First { reordered: false });
        assert_eq!(t.see(2, 1, 1, 0), Seen::First { reordered: false });
        assert_eq!(t.see(1, 1, 1, 0), Seen::First { reordered: true });
        // The same connection: the server sent it twice.
        assert_eq!(t.see(2, 1, 2, 0), Seen::Duplicate);
        // A later connection, ack never confirmed: a redelivery...
        assert_eq!(t.see(0, 2, 3, 0), Seen::Redelivered);
        // ...but once the server confirmed reading the ack, a duplicate.
        assert_eq!(t.see(0, 3, 5, 3), Seen::Duplicate);
        assert_eq!(t.see(3, 3, 5, 3), Seen::First { reordered: false });
    }
}
