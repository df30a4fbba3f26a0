//! Reconnect delays: exponential with jitter, so that a thousand clients cut
//! off by one edge restart do not all come back in the same millisecond.

use std::time::Duration;

use rand::Rng;

/// Delay before each reconnect attempt. Attempt `n` (from 0) waits a uniform
/// random time in `[d/2, d]` where `d = min(max, initial * 2^n)`.
#[derive(Debug)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
            attempt: 0,
        }
    }

    /// After a successful connection: the next failure starts over.
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The upper bound of attempt `n`'s delay.
    fn ceiling(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The delay before the next attempt. `retry_after`, when the server
    /// named one, is a floor: the result is at least that plus jitter of up to
    /// `initial`.
    pub(crate) fn next_delay(
        &mut self,
        retry_after: Option<Duration>,
        rng: &mut impl Rng,
    ) -> Duration {
        let ceiling = self.ceiling(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        match retry_after {
            Some(floor) => floor + jitter(Duration::ZERO, self.initial, rng),
            None => jitter(ceiling / 2, ceiling, rng),
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
    fn doubles_with_jitter_up_to_the_max() {
        let mut rng = rand::rng();
        for _ in 0..200 {
            let mut b = Backoff::new(100 * MS, 1000 * MS);
            for ceiling in [100, 200, 400, 800, 1000, 1000, 1000] {
                let d = b.next_delay(None, &mut rng);
                assert!(
                    d >= ceiling * MS / 2 && d <= ceiling * MS,
                    "{d:?} not in [{ceiling}/2, {ceiling}] ms"
                );
            }
            b.reset();
            assert!(b.next_delay(None, &mut rng) <= 100 * MS);
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
    fn retry_after_is_a_floor() {
        let mut rng = rand::rng();
        let mut b = Backoff::new(20 * MS, 500 * MS);
        for _ in 0..100 {
            let d = b.next_delay(Some(3000 * MS), &mut rng);
            assert!(d >= 3000 * MS && d <= 3020 * MS, "{d:?}");
        }
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
