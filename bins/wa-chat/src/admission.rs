//! Login admission at the edge (DESIGN §6, "Overload"): how a reconnect
//! storm is made to pass instead of melting the edge.
//!
//! Every accepted connection asks [`Admission::decide`] *before* its TLS or
//! QUIC handshake:
//!
//! - Logins start at most `[limits] login_rate` per second, with a burst of
//!   `login_burst`. A connection whose start slot is at most
//!   `login_queue_wait` away is admitted and waits for its slot (it costs a
//!   socket and a task while it waits, no handshake yet).
//! - Past that the connection is refused: it gets the handshake (a refusal
//!   must reach the client, and only the TLS channel can carry it) and then
//!   `Goodbye{OVERLOADED, retry_after_ms}` at once, without reading `Hello`,
//!   verifying a token or attaching at a home. The `retry_after_ms` values
//!   handed out form a virtual queue: each refusal takes the next free slot
//!   after the ones already promised (one `login_rate` interval apart), plus
//!   jitter of up to `login_queue_wait`, so that a herd of 19,000 is spread
//!   over the time the edge needs to take it instead of coming back at once.
//! - At most `login_concurrency` handshakes and logins (up to `Welcome`) run
//!   at once, admitted or refused; the others wait their turn. That bounds
//!   the memory and CPU a storm can take at any moment.
//!
//! [`Admission::decide`] is pure over the clock it is given (tested below);
//! the listener does the waiting.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::config::LimitsConfig;

/// What a new connection is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Start the handshake at this instant (now or a little later).
    Admit(Instant),
    /// Handshake, then `Goodbye{OVERLOADED}` with this retry-after.
    Refuse(Duration),
}

/// The edge's login gate. One per edge, shared by both listeners.
#[derive(Debug)]
pub struct Admission {
    /// Time between two login starts (1 / `login_rate`).
    interval: Duration,
    /// How far behind now the next slot may lag: the burst.
    burst: Duration,
    /// Longest wait for a slot before a connection is refused instead.
    max_wait: Duration,
    slots: Mutex<Slots>,
    running: Arc<Semaphore>,
}

#[derive(Debug)]
struct Slots {
    /// When the next admitted login may start.
    next: Instant,
    /// The last slot promised to a refused client (the virtual queue's end).
    promised: Instant,
}

impl Admission {
    pub fn new(limits: &LimitsConfig) -> Admission {
        let rate = f64::from(limits.login_rate.max(1));
        let interval = Duration::from_secs_f64(1.0 / rate);
        let now = Instant::now();
        Admission {
            interval,
            burst: interval.saturating_mul(limits.login_burst.max(1) - 1),
            max_wait: limits.login_queue_wait,
            slots: Mutex::new(Slots {
                next: now,
                promised: now,
            }),
            running: Arc::new(Semaphore::new(limits.login_concurrency.max(1))),
        }
    }

    /// Decides for a connection accepted at `now`; `jitter` in `[0, 1]`
    /// spreads a refusal's retry-after (random in production).
    pub fn decide(&self, now: Instant, jitter: f64) -> Verdict {
        let mut s = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        // Unused capacity accumulates up to the burst, no further.
        let floor = now.checked_sub(self.burst).unwrap_or(now);
        if s.next < floor {
            s.next = floor;
        }
        let start = s.next;
        if start <= now + self.max_wait {
            s.next = start + self.interval;
            return Verdict::Admit(start.max(now));
        }
        // Refused: the next slot after those already promised and after
        // the admitted queue, with jitter on top.
        let slot = s.promised.max(start);
        s.promised = slot + self.interval;
        let spread = self.max_wait.mul_f64(jitter.clamp(0.0, 1.0));
        Verdict::Refuse(slot - now + spread)
    }

    /// [`Admission::decide`] with the clock and randomness of production.
    pub fn decide_now(&self) -> Verdict {
        self.decide(Instant::now(), rand::random::<f64>())
    }

    /// Waits for a turn among the handshakes and logins running at once.
    pub async fn turn(&self) -> OwnedSemaphorePermit {
        Arc::clone(&self.running)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed")
    }

    /// Handshakes and logins running now (for the admin API and tests).
    pub fn running(&self, limit: usize) -> usize {
        limit.saturating_sub(self.running.available_permits())
    }
}

/// What a connection carries from the accept loop into its session.
#[derive(Debug)]
pub enum Ticket {
    /// Log in; the permit is given back once the session is welcomed or
    /// refused.
    Admitted(OwnedSemaphorePermit),
    /// Say `Goodbye{OVERLOADED}` with this retry-after and end.
    Refused(Duration, OwnedSemaphorePermit),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rate: u32, burst: u32, wait_ms: u64) -> LimitsConfig {
        LimitsConfig {
            login_rate: rate,
            login_burst: burst,
            login_queue_wait: Duration::from_millis(wait_ms),
            ..LimitsConfig::default()
        }
    }

    #[tokio::test]
    async fn a_burst_passes_then_logins_are_paced_then_refused() {
        // 10 logins/s (100 ms apart), burst 5, up to 300 ms of waiting.
        let a = Admission::new(&limits(10, 5, 300));
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut admitted_now = 0;
        let mut waits = Vec::new();
        let mut refusals = Vec::new();
        for _ in 0..20 {
            match a.decide(t0, 0.0) {
                Verdict::Admit(at) if at == t0 => admitted_now += 1,
                Verdict::Admit(at) => waits.push(at - t0),
                Verdict::Refuse(after) => refusals.push(after),
            }
        }
        assert_eq!(admitted_now, 5, "the burst starts at once");
        let ms = |d: &Duration| d.as_millis();
        assert_eq!(waits.iter().map(ms).collect::<Vec<_>>(), [100, 200, 300]);
        assert_eq!(refusals.len(), 12);
        // The refused are spread one interval apart after the queue.
        for (i, r) in refusals.iter().enumerate() {
            assert_eq!(ms(r), 400 + 100 * i as u128, "{refusals:?}");
        }
    }

    #[tokio::test]
    async fn jitter_spreads_a_refusal_up_to_the_queue_wait() {
        let a = Admission::new(&limits(1, 1, 1000));
        let t0 = Instant::now() + Duration::from_secs(10);
        assert!(matches!(a.decide(t0, 0.0), Verdict::Admit(_)));
        assert!(matches!(a.decide(t0, 0.0), Verdict::Admit(_)));
        let Verdict::Refuse(low) = a.decide(t0, 0.0) else {
            panic!("refused")
        };
        let Verdict::Refuse(high) = a.decide(t0, 1.0) else {
            panic!("refused")
        };
        assert_eq!(low, Duration::from_secs(2));
        assert_eq!(high, Duration::from_secs(3) + Duration::from_secs(1));
    }

    #[tokio::test]
    async fn capacity_comes_back_with_time_but_not_past_the_burst() {
        let a = Admission::new(&limits(10, 2, 0));
        let t0 = Instant::now() + Duration::from_secs(10);
        assert!(matches!(a.decide(t0, 0.0), Verdict::Admit(_)));
        assert!(matches!(a.decide(t0, 0.0), Verdict::Admit(_)));
        assert!(matches!(a.decide(t0, 0.0), Verdict::Refuse(_)));
        // An hour idle still gives only the burst.
        let later = t0 + Duration::from_secs(3600);
        assert!(matches!(a.decide(later, 0.0), Verdict::Admit(_)));
        assert!(matches!(a.decide(later, 0.0), Verdict::Admit(_)));
        assert!(matches!(a.decide(later, 0.0), Verdict::Refuse(_)));
    }
}
