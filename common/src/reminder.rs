//! Logging a condition that lasts: the first occurrence in full, then at
//! most one reminder per period with how many occurrences it stands for,
//! so that a failure repeated thousands of times a second (a full disk)
//! costs a few lines a minute of log, not the next disk.
//!
//! The caller passes the time in; this module reads no clock.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What to log for one occurrence (see [`Reminder::hit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Say {
    /// The first occurrence since the condition (re)started: log it in full.
    First,
    /// A reminder: `count` occurrences since the last line (this one included).
    Again { count: u64 },
    /// Nothing now.
    Quiet,
}

#[derive(Debug, Default)]
struct State {
    /// When the last line was logged, while the condition lasts.
    last: Option<Instant>,
    /// Occurrences since the last line.
    since: u64,
}

/// Rate-limits the log lines of one condition to one per `period`.
#[derive(Debug)]
pub struct Reminder {
    period: Duration,
    state: Mutex<State>,
}

impl Reminder {
    pub const fn new(period: Duration) -> Reminder {
        Reminder {
            period,
            state: Mutex::new(State {
                last: None,
                since: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One occurrence at `now`: what to log.
    pub fn hit(&self, now: Instant) -> Say {
        let mut s = self.lock();
        s.since += 1;
        match s.last {
            None => {
                s.last = Some(now);
                s.since = 0;
                Say::First
            }
            Some(last) if now.saturating_duration_since(last) >= self.period => {
                let count = s.since;
                s.last = Some(now);
                s.since = 0;
                Say::Again { count }
            }
            Some(_) => Say::Quiet,
        }
    }

    /// The condition ended: returns how many occurrences went unlogged
    /// (`None` if it was not going on), and the next one is a
    /// [`Say::First`] again.
    pub fn clear(&self) -> Option<u64> {
        let mut s = self.lock();
        let was = s.last.take().map(|_| s.since);
        s.since = 0;
        was
    }

    /// Whether the condition is going on (something was logged since the
    /// last [`Reminder::clear`]).
    pub fn active(&self) -> bool {
        self.lock().last.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_then_one_reminder_per_period_with_the_count() {
        let r = Reminder::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(r.hit(t0), Say::First);
        for i in 1..1000 {
            assert_eq!(r.hit(t0 + Duration::from_millis(i)), Say::Quiet);
        }
        assert_eq!(
            r.hit(t0 + Duration::from_secs(60)),
            Say::Again { count: 1000 }
        );
        assert_eq!(r.hit(t0 + Duration::from_secs(61)), Say::Quiet);
        assert!(r.active());
        assert_eq!(r.clear(), Some(1));
        assert!(!r.active());
        assert_eq!(r.clear(), None);
        assert_eq!(r.hit(t0 + Duration::from_secs(62)), Say::First);
    }
}
