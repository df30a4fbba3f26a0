//! Reconnect delays: exponential with full jitter, so that a thousand
//! clients cut off by one edge restart do not all come back in the same
//! millisecond, and a refusal's `retry_after_ms` is honoured (never earlier)
//! with the same spread on top.

use std::time::Duration;

use rand::Rng;

/// Delay before each reconnect attempt. Attempt `n` (from 0) has the
/// ceiling `d = min(max, initial * 2^n)` and waits:
/// - with no retry-after: a uniform random time in `[0, d]` (full jitter);
/// - when the server named a retry-after `r`: `r` plus a uniform random time
///   in `[0, min(r, d)]`: never before the server asked, and a herd the
///   server told to come back at `r` arrives spread over up to as much again.
#[derive(Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
            attempt: 0,
        }
    }

    /// After a successful connection: the next failure starts over.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The upper bound of attempt `n`'s delay (without a retry-after).
    fn ceiling(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The delay before the next attempt (see the type's docs).
    pub fn next_delay(&mut self, retry_after: Option<Duration>, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        match retry_after {
            Some(floor) => floor + jitter(Duration::ZERO, floor.min(ceiling), rng),
            None => jitter(Duration::ZERO, ceiling, rng),
        }
    }
}

fn jitter(lo: Duration, hi: Duration, rng: &mut impl Rng) -> Duration {
    if hi <= lo {
        return lo;
    }
    let span = (hi - lo).as_micros() as u64;
    lo + Duration::from_micros(rng.random_range(0..=span))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn full_jitter_under_a_doubling_ceiling_up_to_the_max() {
        let mut rng = rand::rng();
        let ceilings = [100, 200, 400, 800, 1000, 1000, 1000];
        // Per attempt: every delay within [0, ceiling], and over many
        // clients the draws cover the whole range (full jitter: some near
        // 0, some near the ceiling, a mean near half of it).
        let mut per_attempt = vec![Vec::new(); ceilings.len()];
        for _ in 0..2000 {
            let mut b = Backoff::new(100 * MS, 1000 * MS);
            for (i, ceiling) in ceilings.iter().enumerate() {
                let d = b.next_delay(None, &mut rng);
                assert!(d <= *ceiling * MS, "{d:?} above {ceiling} ms");
                per_attempt[i].push(d);
            }
            b.reset();
            assert!(b.next_delay(None, &mut rng) <= 100 * MS);
        }
        for (draws, ceiling) in per_attempt.iter().zip(ceilings) {
            let c = ceiling * MS;
            let min = *draws.iter().min().unwrap();
            let max = *draws.iter().max().unwrap();
            let mean = draws.iter().sum::<Duration>() / draws.len() as u32;
            assert!(min < c / 20, "attempt with ceiling {c:?}: min {min:?}");
            assert!(max > c * 19 / 20, "attempt with ceiling {c:?}: max {max:?}");
            assert!(
                mean > c * 4 / 10 && mean < c * 6 / 10,
                "attempt with ceiling {c:?}: mean {mean:?}"
            );
        }
    }

    #[test]
    fn jitter_actually_varies() {
        let mut rng = rand::rng();
        let delays: std::collections::HashSet<_> = (0..50)
            .map(|_| Backoff::new(100 * MS, 100 * MS).next_delay(None, &mut rng))
            .collect();
        assert!(delays.len() > 1, "fifty draws all equal: no jitter");
    }

    #[test]
    fn retry_after_is_a_floor_with_full_jitter_on_top() {
        let mut rng = rand::rng();
        // A retry-after shorter than the ceiling: spread over [r, 2r].
        let mut b = Backoff::new(20 * MS, 10_000 * MS);
        b.attempt = 10; // ceiling 10 s
        let draws: Vec<_> = (0..500)
            .map(|_| b.next_delay(Some(3000 * MS), &mut rng))
            .collect();
        for d in &draws {
            assert!(*d >= 3000 * MS && *d <= 6000 * MS, "{d:?}");
        }
        assert!(
            draws.iter().any(|d| *d < 3300 * MS),
            "no draw near the floor"
        );
        assert!(draws.iter().any(|d| *d > 5700 * MS), "no draw near 2r");
        // Early attempts: the jitter is bounded by the backoff's ceiling.
        let mut b = Backoff::new(20 * MS, 500 * MS);
        let d = b.next_delay(Some(3000 * MS), &mut rng);
        assert!(d >= 3000 * MS && d <= 3020 * MS, "{d:?}");
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        b.attempt = u32::MAX - 1;
        let mut rng = rand::rng();
        assert!(b.next_delay(None, &mut rng) <= Duration::from_secs(30));
        assert!(b.next_delay(None, &mut rng) <= Duration::from_secs(30));
    }
}
