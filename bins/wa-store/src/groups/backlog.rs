//! Each group's fan-out queue, bounded (docs/ARCHITECTURE.md "Groups"):
//! the items a group's log holds that are not yet copied to every member
//! (`[groups] fanout_queue` at most). A message past the bound is refused
//! `GROUP_BUSY`, and so is every message to the group for the hold after
//! that (`retry_after_ms`), so that a sender's pipelined messages are all
//! refused and resent in their order rather than the later ones overtaking
//! the first. No clock of its own: the caller passes the time.
//!
//! The counts live in memory: after a restart they start at zero while the
//! logs may still hold what the last run accepted, so a group may then hold
//! up to twice the bound for a while.

use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Default)]
struct Backlog {
    items: usize,
    busy_until: Option<Instant>,
}

pub struct Backlogs {
    max: usize,
    hold: Duration,
    groups: HashMap<String, Backlog>,
    total: usize,
}

impl Backlogs {
    pub fn new(max: usize, hold: Duration) -> Backlogs {
        Backlogs {
            max,
            hold,
            groups: HashMap::new(),
            total: 0,
        }
    }

    /// Items queued for fan-out, all groups together.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Takes a place in `group`'s queue for a message, or says how long its
    /// sender should wait before resending.
    pub fn admit(&mut self, group: &str, now: Instant) -> Result<(), Duration> {
        let b = self.groups.entry(group.to_owned()).or_default();
        if let Some(until) = b.busy_until {
            if until > now {
                return Err(until - now);
            }
            b.busy_until = None;
        }
        if b.items >= self.max {
            b.busy_until = Some(now + self.hold);
            return Err(self.hold);
        }
        b.items += 1;
        self.total += 1;
        Ok(())
    }

    /// An item queued without asking (a change's event: never refused).
    pub fn add(&mut self, group: &str) {
        self.groups.entry(group.to_owned()).or_default().items += 1;
        self.total += 1;
    }

    /// `group`'s log is no longer this node's to fan out (its fragment
    /// moved away with its log): its count goes.
    pub fn forget(&mut self, group: &str) {
        if let Some(b) = self.groups.remove(group) {
            self.total -= b.items;
        }
    }

    /// An item of `group` left the queue (fanned out), or a place taken
    /// was not used (the append failed, or was a duplicate).
    pub fn done(&mut self, group: &str, now: Instant) {
        let Some(b) = self.groups.get_mut(group) else {
            return;
        };
        if b.items > 0 {
            b.items -= 1;
            self.total -= 1;
        }
        if b.items == 0 && b.busy_until.is_none_or(|u| u <= now) {
            self.groups.remove(group);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_refuses_for_the_hold_then_admits_again() {
        let t0 = Instant::now();
        let hold = Duration::from_secs(1);
        let mut b = Backlogs::new(2, hold);
        assert!(b.admit("#g", t0).is_ok());
        assert!(b.admit("#g", t0).is_ok());
        assert_eq!(b.admit("#g", t0), Err(hold));
        // Other groups are not affected.
        assert!(b.admit("#h", t0).is_ok());
        // Room again, but the hold is not over: still refused, so a
        // pipelined later message cannot overtake the refused one.
        b.done("#g", t0);
        let half = t0 + hold / 2;
        assert_eq!(b.admit("#g", half), Err(hold / 2));
        assert!(b.admit("#g", t0 + hold).is_ok());
        assert_eq!(b.total(), 3);
    }

    #[test]
    fn counts_never_go_negative_and_empty_groups_are_forgotten() {
        let t0 = Instant::now();
        let mut b = Backlogs::new(2, Duration::from_secs(1));
        b.done("#g", t0);
        b.add("#g");
        b.done("#g", t0);
        b.done("#g", t0);
        assert_eq!(b.total(), 0);
        assert!(b.groups.is_empty());
        b.add("#g");
        b.add("#h");
        b.forget("#g");
        assert_eq!(b.total(), 1);
    }
}
