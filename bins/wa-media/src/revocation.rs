//! Revocation at wa-media: a token verifies offline for its whole life
//! (30 days), so on its own it would keep uploading and downloading after
//! its device was removed, its number registered again elsewhere or its
//! account deleted. Before acting on a token, wa-media asks the user's home
//! whether that device is still accepted at the token's generation (the
//! link's `CheckDevice`, answered from the same revocation records that
//! refuse the device's chat sessions) and keeps the answer for
//! `revocation.recheck_after` (10 s): so a revoked device is refused here at
//! most that long after its revocation was answered (docs/ARCHITECTURE.md,
//! "Credentials"). A home that cannot be reached, with no fresh answer
//! kept, fails the request with `503` (closed, not open).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::link_client::LinkClient;

use crate::error::ApiError;

/// Answers kept at most; past it the expired ones are dropped first, then
/// everything (a flood of distinct tokens costs only re-checks).
const MAX_KEPT: usize = 100_000;

/// One credential's device: (user, device, generation).
type Key = (String, u32, u32);

pub struct Revocations {
    /// `None`: checks are off (`revocation.check = false`, development).
    link: Option<LinkClient>,
    recheck_after: Duration,
    /// Accepted devices and when that was last confirmed. A revoked one is
    /// kept too (revocation is never undone), with its time.
    known: Mutex<HashMap<Key, (Instant, bool)>>,
}

impl Revocations {
    pub fn new(link: Option<LinkClient>, recheck_after: Duration) -> Revocations {
        Revocations {
            link,
            recheck_after,
            known: Mutex::default(),
        }
    }

    /// Refuses the credential with `REVOKED` once its home says so, within
    /// `recheck_after`; `503` when the home cannot say.
    pub async fn check(
        &self,
        user: &str,
        device: u32,
        generation: u32,
        now: Instant,
    ) -> Result<(), ApiError> {
        let Some(link) = &self.link else {
            return Ok(());
        };
        let key = (user.to_owned(), device, generation);
        if let Some((at, accepted)) = self.lock().get(&key).copied() {
            if !accepted {
                return Err(ApiError::Revoked);
            }
            if now.saturating_duration_since(at) < self.recheck_after {
                return Ok(());
            }
        }
        let accepted = link
            .device_accepted(user, device, generation)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "cannot ask the home about a device");
                ApiError::HomeUnavailable
            })?;
        let mut known = self.lock();
        if known.len() >= MAX_KEPT {
            let recheck = self.recheck_after;
            known.retain(|_, (at, accepted)| {
                !*accepted || now.saturating_duration_since(*at) < recheck
            });
            if known.len() >= MAX_KEPT {
                known.clear();
            }
        }
        known.insert(key, (now, accepted));
        if accepted {
            Ok(())
        } else {
            Err(ApiError::Revoked)
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, (Instant, bool)>> {
        self.known
            .lock()
            .expect("the revocation lock is never poisoned")
    }
}
