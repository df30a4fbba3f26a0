//! The SMS-pumping signal. Bots that request codes to premium-rate numbers
//! earn from each SMS and never verify one, so per number prefix this counts
//! codes sent and codes verified over a window; a prefix with many sends and
//! few verifications raises a warning in the log and a metric, once per
//! window, and *tightens* the prefix: until the window ends its code
//! requests also pass `pumping.tightened` (10 per hour), unless an
//! operator releases it (`POST /admin/pumping/release`) (docs/REGISTER.md,
//! "Abuse").
//!
//! The prefix in that log line is cut short where it would tell more than
//! the masked numbers do: next to a number's masked form (`+155******67`,
//! see [`crate::phone`]) at least four of its digits stay hidden, for every
//! number counted under the prefix in the window ([`loggable_prefix`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::config::PumpingConfig;

#[derive(Default)]
struct Counts {
    sent: u64,
    verified: u64,
    flagged: bool,
    /// Flagged and not released: its requests pass the tightened rate.
    tightened: bool,
    /// Digits of the shortest number sent a code under this prefix.
    shortest: usize,
}

struct Window {
    start: Instant,
    prefixes: HashMap<String, Counts>,
}

pub struct Pumping {
    cfg: PumpingConfig,
    window: Mutex<Window>,
}

/// A prefix that just crossed the threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct Suspect {
    /// The prefix as it may be logged ([`loggable_prefix`]).
    pub prefix: String,
    pub sent: u64,
    pub verified: u64,
}

/// Digits a log line may never leave visible of a number, beside its
/// masked form.
pub const HIDDEN_DIGITS: usize = 4;
/// Digits the masked form shows: three after the `+`, the last two.
const MASK_HEAD: usize = 3;
const MASK_TAIL: usize = 2;

/// `prefix` (`+` and digits) cut so that a number of `shortest` digits
/// under it keeps [`HIDDEN_DIGITS`] hidden when this is read beside its
/// masked form; each digit cut is a `*`. The masked head is never cut:
/// it is in every masked number already.
pub fn loggable_prefix(prefix: &str, shortest: usize) -> String {
    let digits = prefix.len().saturating_sub(1);
    let room = shortest.saturating_sub(HIDDEN_DIGITS + MASK_TAIL);
    let keep = digits.min(room.max(MASK_HEAD));
    let mut out = prefix[..1 + keep].to_owned();
    out.extend(std::iter::repeat_n('*', digits - keep));
    out
}

impl Pumping {
    pub fn new(cfg: PumpingConfig) -> Pumping {
        Pumping {
            cfg,
            window: Mutex::new(Window {
                start: Instant::now(),
                prefixes: HashMap::new(),
            }),
        }
    }

    fn with<T>(&self, now: Instant, f: impl FnOnce(&mut HashMap<String, Counts>) -> T) -> T {
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        if now.saturating_duration_since(w.start) >= self.cfg.window {
            w.start = now;
            w.prefixes.clear();
        }
        f(&mut w.prefixes)
    }

    /// A code went out to a number of `digits` digits under `prefix`.
    /// Returns the prefix if this send made it suspect.
    pub fn sent(&self, prefix: &str, digits: usize, now: Instant) -> Option<Suspect> {
        let (min_sent, ratio) = (self.cfg.min_sent, self.cfg.min_verified_ratio);
        self.with(now, |p| {
            let c = p.entry(prefix.to_owned()).or_default();
            c.sent += 1;
            c.shortest = if c.shortest == 0 {
                digits
            } else {
                c.shortest.min(digits)
            };
            let suspect =
                !c.flagged && c.sent >= min_sent && (c.verified as f64) < ratio * c.sent as f64;
            suspect.then(|| {
                c.flagged = true;
                c.tightened = true;
                Suspect {
                    prefix: loggable_prefix(prefix, c.shortest),
                    sent: c.sent,
                    verified: c.verified,
                }
            })
        })
    }

    /// Whether `prefix` is tightened now.
    pub fn tightened(&self, prefix: &str, now: Instant) -> bool {
        self.with(now, |p| p.get(prefix).is_some_and(|c| c.tightened))
    }

    /// An operator releases `prefix` (it goes back to its normal limit for
    /// the rest of the window, and is not flagged again in it); false if it
    /// was not tightened. `prefix` may be the shown form of
    /// [`Pumping::tightened_prefixes`] (digits cut to `*`): every tightened
    /// prefix shown so is released.
    pub fn release(&self, prefix: &str, now: Instant) -> bool {
        self.with(now, |p| {
            if !prefix.contains('*') {
                return p
                    .get_mut(prefix)
                    .is_some_and(|c| std::mem::replace(&mut c.tightened, false));
            }
            let mut any = false;
            for (k, c) in p.iter_mut() {
                if c.tightened && loggable_prefix(k, c.shortest) == prefix {
                    c.tightened = false;
                    any = true;
                }
            }
            any
        })
    }

    /// Prefixes tightened now, as they may be shown ([`loggable_prefix`]).
    pub fn tightened_prefixes(&self, now: Instant) -> Vec<String> {
        self.with(now, |p| {
            let mut v: Vec<_> = p
                .iter()
                .filter(|(_, c)| c.tightened)
                .map(|(k, c)| loggable_prefix(k, c.shortest))
                .collect();
            v.sort();
            v
        })
    }

    /// A code for a number under `prefix` was verified.
    pub fn verified(&self, prefix: &str, now: Instant) {
        self.with(now, |p| {
            p.entry(prefix.to_owned()).or_default().verified += 1
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_sent_few_verified_is_flagged_once() {
        let p = Pumping::new(PumpingConfig {
            min_sent: 10,
            ..PumpingConfig::default()
        });
        let now = Instant::now();
        // An honest prefix: most codes are verified.
        for _ in 0..30 {
            assert_eq!(p.sent("+1555", 11, now), None);
            p.verified("+1555", now);
        }
        // A pumped one.
        let mut flagged = Vec::new();
        for _ in 0..30 {
            flagged.extend(p.sent("+8819", 12, now));
        }
        assert_eq!(
            flagged,
            [Suspect {
                prefix: "+8819".into(),
                sent: 10,
                verified: 0
            }]
        );
        // A new window starts clean.
        let later = now + std::time::Duration::from_secs(3600);
        assert_eq!(p.sent("+8819", 12, later), None);
    }

    #[test]
    fn the_logged_prefix_leaves_four_digits_of_every_number_hidden() {
        // (prefix, shortest number's digits, as logged)
        for (prefix, shortest, logged) in [
            // 12 digits: 6 + the last 2 shown, 4 hidden.
            ("+881912", 12, "+881912"),
            ("+881912", 15, "+881912"),
            // 11 digits (+1 555 …): one digit of the prefix must go.
            ("+155503", 11, "+15550*"),
            // 10 digits: two.
            ("+493012", 10, "+4930**"),
            // 8 or 9 digits: nothing past what the masked form shows.
            ("+493012", 9, "+493***"),
            ("+493012", 8, "+493***"),
            // A short prefix is kept whole.
            ("+44", 8, "+44"),
        ] {
            assert_eq!(
                loggable_prefix(prefix, shortest),
                logged,
                "{prefix} {shortest}"
            );
        }
        // Numbers of every length: what the log line and the masked form
        // show together leaves at least four digits (or what the masked
        // form alone leaves, if that is fewer).
        for digits in 8..=15usize {
            let number = format!("+{}", "1234567890123456".get(..digits).unwrap());
            let masked = crate::phone::Number::parse(&number)
                .unwrap()
                .masked()
                .to_string();
            let logged = loggable_prefix(&number[..7], digits);
            let shown = (1..=digits)
                .filter(|&i| {
                    masked.as_bytes()[i] != b'*'
                        || logged.as_bytes().get(i).is_some_and(|&b| b != b'*')
                })
                .count();
            let hidden_by_mask = masked.bytes().filter(|&b| b == b'*').count();
            assert!(
                digits - shown >= HIDDEN_DIGITS.min(hidden_by_mask),
                "{number}: {logged} beside {masked}"
            );
        }
    }

    #[test]
    fn the_shortest_number_under_a_prefix_decides_the_cut() {
        let p = Pumping::new(PumpingConfig {
            min_sent: 3,
            ..PumpingConfig::default()
        });
        let now = Instant::now();
        assert_eq!(p.sent("+493012", 12, now), None);
        assert_eq!(p.sent("+493012", 10, now), None);
        let s = p.sent("+493012", 12, now).unwrap();
        assert_eq!(s.prefix, "+4930**");
    }
}
