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
//! - Above 100 logins a second, a login that has to wait for its slot starts
//!   on the next 10 ms tick ([`TICK`]) instead of at its own millisecond: the
//!   same rate, but the queued handshakes run ten or more per wake-up of the
//!   edge rather than one, which made a paced login cost 1.5 times an
//!   unpaced one (docs/BENCHMARKS.md "Logins paced by admission").
//!
//! [`Admission::decide`] is pure over the clock it is given (tested below);
//! the listener does the waiting.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::config::LimitsConfig;

/// Queued logins start on multiples of this (from the gate's creation)
/// when their slots are closer together than it.
pub const TICK: Duration = Duration::from_millis(10);

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
    /// Where [`TICK`]s are counted from.
    epoch: Instant,
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
            epoch: now,
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
            return Verdict::Admit(self.on_tick(start, now));
        }
        // Refused: the next slot after those already promised and after
        // the admitted queue, with jitter on top.
        let slot = s.promised.max(start);
        s.promised = slot + self.interval;
        let spread = self.max_wait.mul_f64(jitter.clamp(0.0, 1.0));
        Verdict::Refuse(slot - now + spread)
    }

    /// When a login whose slot is `start` begins: now if the slot has come;
    /// else at the slot, or at the first [`TICK`] after it when slots come
    /// faster than ticks (never before its slot, so the rate holds).
    fn on_tick(&self, start: Instant, now: Instant) -> Instant {
        if start <= now {
            return now;
        }
        if self.interval >= TICK {
            return start;
        }
        let since = start.duration_since(self.epoch).as_nanos();
        let tick = TICK.as_nanos();
        let ticks = since.div_ceil(tick);
        self.epoch + Duration::from_nanos((ticks * tick) as u64)
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
    async fn fast_paced_logins_start_together_on_ticks_at_the_same_rate() {
        // 1,000 logins/s (1 ms apart), burst 1, up to 1 s of waiting.
        let a = Admission::new(&limits(1000, 1, 1000));
        let t0 = a.epoch + Duration::from_millis(3) + Duration::from_micros(500);
        let starts: Vec<Duration> = (0..500)
            .map(|_| match a.decide(t0, 0.0) {
                Verdict::Admit(at) => at - a.epoch,
                Verdict::Refuse(_) => panic!("500 ms of queue is within the wait"),
            })
            .collect();
        assert_eq!(starts[0], t0 - a.epoch, "a free slot starts at once");
        let mut groups = std::collections::BTreeMap::<Duration, usize>::new();
        for (i, at) in starts.iter().enumerate().skip(1) {
            // Never before its slot (t0 + i ms), at most one tick after it.
            let slot = t0 - a.epoch + Duration::from_millis(i as u64);
            assert!(
                *at >= slot && *at < slot + TICK,
                "login {i}: {at:?} for {slot:?}"
            );
            assert!(
                at.as_nanos() % TICK.as_nanos() == 0,
                "login {i} off the tick: {at:?}"
            );
            *groups.entry(*at).or_default() += 1;
        }
        // Ten a tick: the rate is kept, the wake-ups are a tenth.
        let sizes: Vec<usize> = groups.values().copied().collect();
        assert!(
            sizes[1..sizes.len() - 1].iter().all(|&n| n == 10),
            "{sizes:?}"
        );
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
