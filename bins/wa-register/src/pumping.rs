//! The SMS-pumping signal. Bots that request codes to premium-rate numbers
//! earn from each SMS and never verify one, so per number prefix this counts
//! codes sent and codes verified over a window; a prefix with many sends and
//! few verifications raises a warning in the log and a metric, once per
//! window (docs/REGISTER.md, "Abuse").

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::config::PumpingConfig;

#[derive(Default)]
struct Counts {
    sent: u64,
    verified: u64,
    flagged: bool,
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
    pub prefix: String,
    pub sent: u64,
    pub verified: u64,
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

    /// A code went out to a number under `prefix`. Returns the prefix if
    /// this send made it suspect.
    pub fn sent(&self, prefix: &str, now: Instant) -> Option<Suspect> {
        let (min_sent, ratio) = (self.cfg.min_sent, self.cfg.min_verified_ratio);
        self.with(now, |p| {
            let c = p.entry(prefix.to_owned()).or_default();
            c.sent += 1;
            let suspect =
                !c.flagged && c.sent >= min_sent && (c.verified as f64) < ratio * c.sent as f64;
            suspect.then(|| {
                c.flagged = true;
                Suspect {
                    prefix: prefix.to_owned(),
                    sent: c.sent,
                    verified: c.verified,
                }
            })
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
            assert_eq!(p.sent("+1555", now), None);
            p.verified("+1555", now);
        }
        // A pumped one.
        let mut flagged = Vec::new();
        for _ in 0..30 {
            flagged.extend(p.sent("+8819", now));
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
        assert_eq!(p.sent("+8819", later), None);
    }
}
