//! Upload admission: uploads in progress (node and user), a per-user rate
//! (token bucket over `uploads_per_minute`) and a per-user byte quota over a
//! rolling day (24 hourly buckets). State is in memory: a restart forgets it,
//! which at worst lets a user upload one more day's quota.
//!
//! Bytes are charged as they arrive (an upload cut off or refused as too large
//! still counts what it sent); the quota is checked when an upload starts, so
//! the last upload of a day may overshoot it by at most one blob.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::LimitsConfig;
use crate::error::ApiError;

const HOUR: Duration = Duration::from_secs(3600);
/// How long an upload's body may send nothing before its minimum average
/// rate starts to count (TLS, slow start, a phone waking its radio).
pub const RATE_HEAD_START: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct User {
    in_flight: usize,
    tokens: f64,
    refilled: Instant,
    /// Bytes per hour, indexed by hour number mod 24, with the hour they hold.
    hours: [(u64, u64); 24],
}

impl User {
    fn used(&self, hour: u64) -> u64 {
        self.hours
            .iter()
            .filter(|(h, _)| hour.saturating_sub(*h) < 24)
            .map(|(_, b)| b)
            .sum()
    }
}

pub struct Limits {
    cfg: LimitsConfig,
    start: Instant,
    uploads: Arc<Semaphore>,
    users: Mutex<HashMap<String, User>>,
}

/// An admitted upload. Dropping it ends the upload: the slot is freed and the
/// bytes received are charged to the user's quota.
pub struct Permit {
    limits: Arc<Limits>,
    user: String,
    _slot: OwnedSemaphorePermit,
    pub received: AtomicU64,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let bytes = *self.received.get_mut();
        let hour = self.limits.hour(Instant::now());
        let mut users = self.limits.users();
        if let Some(u) = users.get_mut(&self.user) {
            u.in_flight -= 1;
            let b = &mut u.hours[(hour % 24) as usize];
            if b.0 != hour {
                *b = (hour, 0);
            }
            b.1 += bytes;
        }
    }
}

impl Limits {
    pub fn new(cfg: LimitsConfig) -> Limits {
        Limits {
            uploads: Arc::new(Semaphore::new(cfg.max_concurrent_uploads)),
            cfg,
            start: Instant::now(),
            users: Mutex::default(),
        }
    }

    fn users(&self) -> std::sync::MutexGuard<'_, HashMap<String, User>> {
        self.users
            .lock()
            .expect("the limits lock is never poisoned")
    }

    fn hour(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.start).as_secs()) / HOUR.as_secs()
    }

    /// Admits an upload by `user` announcing `declared` bytes (if known), or
    /// says why not.
    pub fn admit(
        self: &Arc<Self>,
        user: &str,
        declared: Option<u64>,
        now: Instant,
    ) -> Result<Permit, ApiError> {
        let max = self.cfg.max_blob_size.as_u64();
        if declared.is_some_and(|n| n > max) {
            return Err(ApiError::TooLarge { max });
        }
        let rate = f64::from(self.cfg.uploads_per_minute);
        let hour = self.hour(now);
        let mut users = self.users();
        let u = users.entry(user.to_string()).or_insert_with(|| User {
            in_flight: 0,
            tokens: rate,
            refilled: now,
            hours: [(0, 0); 24],
        });
        if u.in_flight >= self.cfg.max_uploads_per_user {
            return Err(ApiError::UserBusy);
        }
        let elapsed = now.saturating_duration_since(u.refilled).as_secs_f64();
        u.tokens = (u.tokens + elapsed * rate / 60.0).min(rate);
        u.refilled = now;
        if u.tokens < 1.0 {
            let wait = (1.0 - u.tokens) * 60.0 / rate;
            return Err(ApiError::RateLimited {
                retry_after: Duration::from_secs_f64(wait),
            });
        }
        let quota = self.cfg.quota_per_day.as_u64();
        if u.used(hour) + declared.unwrap_or(0) > quota {
            let into_hour = now.saturating_duration_since(self.start).as_secs() % HOUR.as_secs();
            return Err(ApiError::QuotaExceeded {
                quota,
                retry_after: Duration::from_secs(HOUR.as_secs() - into_hour),
            });
        }
        let slot = Arc::clone(&self.uploads)
            .try_acquire_owned()
            .map_err(|_| ApiError::Busy)?;
        u.tokens -= 1.0;
        u.in_flight += 1;
        Ok(Permit {
            limits: Arc::clone(self),
            user: user.to_string(),
            _slot: slot,
            received: AtomicU64::new(0),
        })
    }

    /// Forgets users with nothing in flight, a full bucket and no bytes in the
    /// last day, so the table does not grow with every user ever seen.
    pub fn prune(&self, now: Instant) {
        let hour = self.hour(now);
        let rate = f64::from(self.cfg.uploads_per_minute);
        self.users().retain(|_, u| {
            let full = u.tokens
                + now.saturating_duration_since(u.refilled).as_secs_f64() * rate / 60.0
                >= rate;
            u.in_flight > 0 || !full || u.used(hour) > 0
        });
    }

    pub fn max_blob_size(&self) -> u64 {
        self.cfg.max_blob_size.as_u64()
    }

    /// When an upload that began at `start` and has `received` bytes must
    /// have more, or be cut: the earliest of its total deadline, the moment
    /// its average rate falls below the minimum (after [`RATE_HEAD_START`]),
    /// and a stall of `stall` from `now`.
    pub fn body_deadline(
        &self,
        start: Instant,
        received: u64,
        now: Instant,
        stall: Duration,
    ) -> Instant {
        let rate = self.cfg.min_upload_rate.as_u64().max(1) as f64;
        let by_rate = start + RATE_HEAD_START + Duration::from_secs_f64(received as f64 / rate);
        (start + self.cfg.upload_deadline)
            .min(by_rate)
            .min(now + stall)
    }

    pub fn uploads_in_flight(&self) -> usize {
        self.cfg.max_concurrent_uploads - self.uploads.available_permits()
    }
}

impl Permit {
    pub fn add(&self, n: u64) -> u64 {
        self.received.fetch_add(n, Ordering::Relaxed) + n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytesize::ByteSize;

    fn limits() -> Arc<Limits> {
        Arc::new(Limits::new(LimitsConfig {
            max_blob_size: ByteSize::b(100),
            max_concurrent_uploads: 3,
            max_uploads_per_user: 2,
            uploads_per_minute: 4,
            quota_per_day: ByteSize::b(250),
            upload_deadline: Duration::from_secs(60),
            min_upload_rate: ByteSize::kib(1),
        }))
    }

    #[test]
    fn a_trickled_body_meets_its_deadline() {
        let l = limits();
        let t0 = Instant::now();
        let stall = Duration::from_secs(30);
        // Nothing yet: the head start, not the stall timer.
        assert_eq!(l.body_deadline(t0, 0, t0, stall), t0 + RATE_HEAD_START);
        // 5 KiB at 1 KiB/s buy 5 s more after the head start.
        assert_eq!(
            l.body_deadline(t0, 5 * 1024, t0 + Duration::from_secs(1), stall),
            t0 + RATE_HEAD_START + Duration::from_secs(5)
        );
        // One byte every 20 s (which restarted a stall timer forever) is
        // below the rate: its deadline does not move with the bytes.
        let trickled = l.body_deadline(t0, 3, t0 + Duration::from_secs(60), stall);
        assert!(trickled < t0 + Duration::from_secs(11), "{trickled:?}");
        // Fast enough, the total deadline still ends it.
        assert_eq!(
            l.body_deadline(t0, 1 << 30, t0 + Duration::from_secs(50), stall),
            t0 + Duration::from_secs(60)
        );
        // A stall is cut after `stall` whatever the rate allows.
        assert_eq!(
            l.body_deadline(t0, 1 << 20, t0 + Duration::from_secs(1), stall),
            t0 + Duration::from_secs(31)
        );
    }

    #[test]
    fn size_concurrency_rate_and_quota() {
        let l = limits();
        let t0 = Instant::now();
        assert!(matches!(
            l.admit("a", Some(101), t0),
            Err(ApiError::TooLarge { max: 100 })
        ));
        let p1 = l.admit("a", Some(100), t0).unwrap();
        let p2 = l.admit("a", None, t0).unwrap();
        assert!(matches!(l.admit("a", None, t0), Err(ApiError::UserBusy)));
        let p3 = l.admit("b", None, t0).unwrap();
        assert!(matches!(l.admit("c", None, t0), Err(ApiError::Busy)));
        assert_eq!(l.uploads_in_flight(), 3);
        p1.add(100);
        p2.add(100);
        drop((p1, p2, p3));
        // 2 of 4 tokens used; 200 of 250 bytes used.
        assert!(matches!(
            l.admit("a", Some(100), t0),
            Err(ApiError::QuotaExceeded { .. })
        ));
        drop(l.admit("a", Some(10), t0).unwrap());
        drop(l.admit("a", Some(10), t0).unwrap());
        match l.admit("a", Some(10), t0) {
            Err(ApiError::RateLimited { retry_after }) => {
                assert!(retry_after <= Duration::from_secs(15), "{retry_after:?}")
            }
            Err(e) => panic!("{e:?}"),
            Ok(_) => panic!("admitted beyond the rate"),
        }
        // A token comes back after 15 s; the quota after a day.
        let t1 = t0 + Duration::from_secs(15);
        drop(l.admit("a", Some(10), t1).unwrap());
        let t2 = t0 + Duration::from_secs(25 * 3600);
        drop(l.admit("a", Some(100), t2).unwrap());
        l.prune(t2 + Duration::from_secs(25 * 3600));
        assert!(l.users().is_empty());
    }
}
