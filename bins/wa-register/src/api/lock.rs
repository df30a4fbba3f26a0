//! The registration lock's guard. Checking a PIN at re-registration, and
//! who may change the lock or take devices off the account: changing or
//! clearing the PIN, removing another device and deleting the account are
//! for the primary device (the one the number was verified on), or for a
//! companion that gives the current PIN (`current_pin`). With no PIN set, a
//! companion may do none of them: otherwise a stolen or lent companion
//! could take the lock and keep the owner from registering the number
//! again (docs/REGISTER.md, "Registration lock").

use std::net::IpAddr;

use crate::App;
use crate::account::Change;
use crate::api::Caller;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::pin::Budget;

/// What a PIN check found.
#[derive(Debug, PartialEq, Eq)]
pub enum Checked {
    /// The PIN is right.
    Right,
    /// The account has no lock (cleared meanwhile): nothing to check.
    NoLock,
}

/// One PIN try at unix ms `now` within the budget ([`Budget`]): recorded
/// as wrong at the home first; the caller clears the count once it acted
/// on a right PIN.
pub async fn check_pin(app: &App, user: &str, pin: String, now: u64) -> Result<Checked, ApiError> {
    let m = &app.metrics;
    let budget = Budget {
        max_wrong: app.config.pin.max_wrong,
        lockout: app.config.pin.lockout,
    };
    let attempt = app
        .accounts
        .update(user, |s| {
            let s = s.ok_or(ApiError::Conflict)?;
            let mut a = s.account.clone();
            let Some(lock) = a.pin.as_mut() else {
                return Ok(Change::Keep(None));
            };
            let left = budget
                .try_at(lock, now)
                .map_err(|retry_after| ApiError::PinLocked { retry_after })?;
            let tried = (lock.hash.clone(), lock.wrong, left);
            Ok(Change::Write(Some(a), Some(tried)))
        })
        .await
        .inspect_err(|e| {
            if matches!(e, ApiError::PinLocked { .. }) {
                Metrics::inc(&m.pin_locked);
            }
        })?;
    let Some((hash, wrong, tries_left)) = attempt else {
        return Ok(Checked::NoLock);
    };
    if app.pins.verify(pin, hash).await? {
        return Ok(Checked::Right);
    }
    Metrics::inc(&m.pin_wrong);
    tracing::info!(%user, wrong, "wrong registration-lock PIN");
    Err(ApiError::PinWrong { tries_left })
}

/// Lets the caller change the lock or take devices off its account: the
/// primary device always; a companion only with the right current PIN
/// (counted against the PIN budget like a re-registration's try).
pub async fn authorize(
    app: &App,
    caller: &Caller,
    ip: IpAddr,
    current_pin: Option<String>,
    now: u64,
) -> Result<(), ApiError> {
    let a = &caller.stored.account;
    if a.is_primary(caller.claims.device) {
        return Ok(());
    }
    if a.pin.is_none() {
        return Err(ApiError::PrimaryRequired);
    }
    let Some(pin) = current_pin else {
        Metrics::inc(&app.metrics.pin_required);
        return Err(ApiError::PinRequired);
    };
    if !crate::pin::valid_pin(&pin) {
        return Err(ApiError::BadPin);
    }
    let user = &caller.claims.user;
    admit_hash(app, user, ip)?;
    match check_pin(app, user, pin, now).await? {
        Checked::NoLock => Err(ApiError::PrimaryRequired),
        Checked::Right => {
            app.accounts
                .update(user, |s| {
                    let mut a = s.ok_or(ApiError::Revoked)?.account.clone();
                    match a.pin.as_mut() {
                        Some(l) => {
                            Budget::right(l);
                            Ok::<_, ApiError>(Change::Write(Some(a), ()))
                        }
                        None => Ok(Change::Keep(())),
                    }
                })
                .await?;
            Ok(())
        }
    }
}

/// Admits one Argon2 hash (a PIN set or checked) for `user` from `ip`
/// against the per-account and per-address PIN limits; `429` beyond them.
/// (The worker pool bounds how many run at once: [`crate::pin::Pins`].)
pub fn admit_hash(app: &App, user: &str, ip: IpAddr) -> Result<(), ApiError> {
    app.limits.pin(user, ip).map_err(|r| {
        Metrics::inc(&app.metrics.rate_limited);
        ApiError::RateLimited {
            limit: r.limit.name(),
            retry_after: r.wait,
        }
    })
}
