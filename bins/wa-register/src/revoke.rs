//! Revocation that cannot fail open: every account change that drops a
//! device or supersedes its generation first makes the revocation durable
//! at the user's home (idempotent, retried), and only then writes the
//! account ([`crate::account::Accounts::update`] does both in that order).
//! If the revocation cannot be made durable, nothing is written and the
//! request fails with `503 home_unavailable`: the client retries, the
//! account still lists every device to revoke, and a device is never left
//! off the account yet accepted at its home.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::link_client::{LinkClient, LinkClientError};

/// Attempts per revocation before the request gives up (the home is down).
const ATTEMPTS: u32 = 4;
/// The pause after the first failed attempt; it doubles after each.
const FIRST_PAUSE: Duration = Duration::from_millis(100);

/// One device generation to refuse from now on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revocation {
    pub device: u32,
    /// The lowest generation still accepted (`u32::MAX`: none).
    pub generation: u32,
}

/// Faults a test can inject into a running service (through
/// [`crate::Register::app`]); nothing in the configuration or the API sets
/// them.
#[derive(Debug, Default)]
pub struct Faults {
    revokes_to_fail: AtomicU32,
}

impl Faults {
    /// Makes the next `n` revocation attempts fail as if the home did not
    /// answer.
    pub fn fail_revokes(&self, n: u32) {
        self.revokes_to_fail.store(n, Ordering::SeqCst);
    }

    fn revoke_fails(&self) -> bool {
        self.revokes_to_fail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// Makes every revocation of `user` durable at its home, each retried up to
/// [`ATTEMPTS`] times; returns the sessions closed.
pub async fn revoke_all(
    link: &LinkClient,
    faults: &Faults,
    user: &str,
    revocations: &[Revocation],
) -> Result<u32, LinkClientError> {
    let mut kicked = 0;
    for r in revocations {
        let mut pause = FIRST_PAUSE;
        let mut attempt = 1;
        kicked += loop {
            let answer = if faults.revoke_fails() {
                Err(LinkClientError::Refused {
                    code: common::proto::Code::Unavailable as u32,
                })
            } else {
                link.revoke(user, r.device, r.generation).await
            };
            match answer {
                Ok(k) => break k,
                Err(e) if attempt >= ATTEMPTS => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, device = r.device, attempt, "revocation failed; retrying");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                    attempt += 1;
                }
            }
        };
    }
    Ok(kicked)
}
