//! Liveness of one internal link: a ping every `every`, and the peer counted
//! gone once nothing at all came from it for `timeout` (docs/ARCHITECTURE.md,
//! "The internal link"). Without it a frozen home (SIGSTOP, a VM paused, a
//! network that drops packets silently) held every client waiting until the
//! kernel gave up on TCP, about 15 minutes.
//!
//! A state machine: the caller passes the time in, tells it what it heard
//! ([`Liveness::heard`]), sleeps until [`Liveness::next`] and does what
//! [`Liveness::poll`] says.

use std::time::{Duration, Instant};

/// What the link's owner must do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beat {
    /// Send a ping.
    Ping,
    /// Nothing came from the peer for the timeout: close the link.
    Dead,
    /// Nothing to do before [`Liveness::next`].
    Wait,
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct Liveness {
    every: Duration,
    timeout: Duration,
    last_heard: Instant,
    next_ping: Instant,
}

impl Liveness {
    /// A link that just came up at `now`.
    pub fn new(now: Instant, every: Duration, timeout: Duration) -> Liveness {
        Liveness {
            every,
            timeout,
            last_heard: now,
            next_ping: now + every,
        }
    }

    /// A frame (any frame) came from the peer at `now`.
    pub fn heard(&mut self, now: Instant) {
        self.last_heard = self.last_heard.max(now);
    }

    /// When [`Liveness::poll`] must be called next.
    pub fn next(&self) -> Instant {
        self.next_ping.min(self.last_heard + self.timeout)
    }

    /// What to do at `now`.
    pub fn poll(&mut self, now: Instant) -> Beat {
        if now.saturating_duration_since(self.last_heard) >= self.timeout {
            return Beat::Dead;
        }
        if now >= self.next_ping {
            self.next_ping = now + self.every;
            return Beat::Ping;
        }
        Beat::Wait
    }

    /// How long the peer has been silent at `now`.
    pub fn silent_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last_heard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_every_period_and_is_dead_after_the_timeout_of_silence() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut l = Liveness::new(t0, s, 3 * s);
        assert_eq!(l.next(), t0 + s);
        assert_eq!(l.poll(t0 + s / 2), Beat::Wait);
        assert_eq!(l.poll(t0 + s), Beat::Ping);
        assert_eq!(l.poll(t0 + s), Beat::Wait);
        l.heard(t0 + s + s / 2);
        assert_eq!(l.poll(t0 + 2 * s), Beat::Ping);
        assert_eq!(l.poll(t0 + 3 * s), Beat::Ping);
        assert_eq!(l.poll(t0 + 4 * s), Beat::Ping);
        assert_eq!(l.next(), t0 + 4 * s + s / 2);
        assert_eq!(l.poll(t0 + 4 * s + s / 2), Beat::Dead);
        assert_eq!(l.silent_for(t0 + 4 * s + s / 2), 3 * s);
    }
}
