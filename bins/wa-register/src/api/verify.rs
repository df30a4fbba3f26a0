//! `POST /v1/verify`: prove the code, get an account (new, or the number's
//! existing one moved to this device) and a credential.
//!
//! A number seen for the first time gets a new account at the home of a
//! fresh user id, then the phone index at the home of the number points at
//! it (account first, so the index never names a missing account).
//! A number that already has an account is *re-registered*: the account's
//! generation rises, its devices are replaced by this one, and every older
//! device is revoked at the home, which closes its sessions with `REVOKED`
//! and refuses its old credentials from then on. If the account has a
//! registration lock that has not lapsed, the PIN is needed as well; each
//! try is recorded at the home before it is checked, so parallel guesses
//! cannot exceed the budget.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::{Body, ClientAddr, check_device, now_ms, now_secs};
use crate::App;
use crate::account::{Account, Change, Stored, new_user_id};
use crate::codes::{CheckError, valid_code};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::phone::Number;
use crate::pin::Budget;

#[derive(Debug, Deserialize)]
pub struct VerifyRequest {
    pub number: String,
    pub code: String,
    /// A name for the device ("Pixel 9"); or give `public_key`, or both.
    pub device_name: Option<String>,
    /// The device's own public key (opaque to the server, e.g. base64).
    pub public_key: Option<String>,
    /// The registration-lock PIN, when the answer was `pin_required`.
    pub pin: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Registered {
    pub user: String,
    pub device: u32,
    pub generation: u32,
    /// `Hello.token` for wa-chat; `Authorization: Bearer` for the rest.
    pub token: String,
    /// Unix seconds.
    pub expires_at: u64,
    /// False when the number's existing account moved to this device.
    pub new_account: bool,
}

pub async fn handle(
    State(app): State<Arc<App>>,
    ClientAddr(ip): ClientAddr,
    Body(req): Body<VerifyRequest>,
) -> Result<Json<Registered>, ApiError> {
    let m = &app.metrics;
    let number = Number::parse(&req.number).map_err(|_| ApiError::BadNumber)?;
    if !valid_code(&req.code) {
        return Err(ApiError::BadCode);
    }
    if req
        .pin
        .as_deref()
        .is_some_and(|p| !crate::pin::valid_pin(p))
    {
        return Err(ApiError::BadPin);
    }
    let name = match (&req.device_name, &req.public_key) {
        (None, None) => {
            return Err(ApiError::MissingField(
                "device_name or public_key".to_string(),
            ));
        }
        (Some(n), _) => n.clone(),
        (None, Some(_)) => "device".to_string(),
    };
    check_device(&name, req.public_key.as_deref())?;
    if let Err(r) = app.limits.verify(ip) {
        Metrics::inc(&m.rate_limited);
        return Err(ApiError::RateLimited {
            limit: r.limit.name(),
            retry_after: r.wait,
        });
    }
    // Held until the registration succeeds (then used up) or fails (then
    // valid again, e.g. for the try with the PIN).
    let claim = match app.codes.check(number.as_str(), &req.code, Instant::now()) {
        Ok(claim) => claim,
        Err(CheckError::Busy) => return Err(ApiError::Conflict),
        Err(CheckError::NoCode) => return Err(ApiError::NoCode),
        Err(CheckError::Expired) => return Err(ApiError::CodeExpired),
        Err(CheckError::Wrong { left }) => {
            Metrics::inc(&m.codes_wrong);
            return Err(ApiError::CodeWrong { checks_left: left });
        }
        Err(CheckError::Exhausted) => {
            Metrics::inc(&m.codes_exhausted);
            return Err(ApiError::CodeExhausted);
        }
    };

    let (indexed, phone_version) = app.accounts.phone(number.as_str()).await?;
    let existing = match &indexed {
        Some(user) => app.accounts.get(user).await?,
        None => None,
    };
    let device = NewDevice {
        name,
        public_key: req.public_key,
    };
    let (user, device_id, generation, new_account) = match existing {
        None => {
            let (user, id) = create(&app, &number, phone_version, device).await?;
            (user, id, 1, true)
        }
        Some(stored) => {
            let (id, generation) = reregister(&app, &number, stored, req.pin, device).await?;
            let user = indexed.expect("an existing account came from the index");
            (user, id, generation, false)
        }
    };

    claim.consume();
    app.pumping.verified(
        number.prefix(app.config.limits.prefix_digits),
        Instant::now(),
    );
    Metrics::inc(&m.codes_verified);
    Metrics::inc(&m.tokens_issued);
    let issued = app.tokens.issue(&user, device_id, generation, now_secs());
    tracing::info!(number = %number.masked(), %user, device = device_id, generation, new_account, "registered");
    Ok(Json(Registered {
        user,
        device: device_id,
        generation,
        token: issued.token,
        expires_at: issued.expires_at,
        new_account,
    }))
}

struct NewDevice {
    name: String,
    public_key: Option<String>,
}

/// A new account for `number` with its first device.
async fn create(
    app: &App,
    number: &Number,
    phone_version: u64,
    device: NewDevice,
) -> Result<(String, u32), ApiError> {
    let now = now_ms();
    let user = new_user_id();
    let mut account = Account::new(user.clone(), number.as_str().to_owned(), now);
    account.generation = 1;
    let id = account.add_device(device.name, device.public_key, now);
    if !app.accounts.put(&user, Some(&account), 0).await? {
        // 96 random bits collided: vanishingly unlikely; let the client retry.
        return Err(ApiError::Conflict);
    }
    if !app
        .accounts
        .set_phone(number.as_str(), Some(&user), phone_version)
        .await?
    {
        // Another registration of this number won the race; undo ours.
        let _ = app.accounts.put(&user, None, 1).await;
        return Err(ApiError::Conflict);
    }
    Metrics::inc(&app.metrics.accounts_created);
    Ok((user, id))
}

/// Whether the registration lock of `stored` still holds at `now_ms`.
fn lock_holds(app: &App, stored: &Stored, now_ms: u64) -> bool {
    let seen = stored.account.seen_ms.max(stored.last_seen_ms);
    stored.account.pin.is_some()
        && now_ms.saturating_sub(seen) < app.config.pin.lapse_after.as_millis() as u64
}

/// Moves the number's account to this device: checks the PIN if the lock
/// holds, raises the generation, replaces the devices, revokes the old ones.
async fn reregister(
    app: &App,
    number: &Number,
    stored: Stored,
    pin: Option<String>,
    device: NewDevice,
) -> Result<(u32, u32), ApiError> {
    let m = &app.metrics;
    let user = stored.account.user.clone();
    let now = now_ms();
    let locked = lock_holds(app, &stored, now);
    if locked {
        let Some(pin) = pin else {
            Metrics::inc(&m.pin_required);
            return Err(ApiError::PinRequired);
        };
        check_pin(app, &user, pin, now).await?;
    } else if stored.account.pin.is_some() {
        tracing::info!(%user, "registration lock lapsed: the account was not seen for pin.lapse_after");
    }

    let (id, generation, old) = app
        .accounts
        .update(&user, |s| {
            let s = s.ok_or(ApiError::Conflict)?;
            let mut a = s.account.clone();
            let old: Vec<u32> = a.devices.iter().map(|d| d.id).collect();
            a.generation += 1;
            a.devices.clear();
            let id = a.add_device(device.name.clone(), device.public_key.clone(), now);
            a.seen_ms = now;
            if locked {
                if let Some(l) = a.pin.as_mut() {
                    Budget::right(l);
                }
            } else {
                a.pin = None;
            }
            let generation = a.generation;
            Ok::<_, ApiError>(Change::Write(Some(a), (id, generation, old)))
        })
        .await?;
    for d in old {
        let kicked = app
            .accounts
            .link
            .revoke(&user, d, generation)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "revoking an old device failed");
                ApiError::HomeUnavailable
            })?;
        Metrics::inc(&m.devices_revoked);
        tracing::info!(%user, device = d, kicked, "old device revoked");
    }
    Metrics::inc(&m.reregistrations);
    tracing::info!(number = %number.masked(), %user, generation, "number registered again on a new device");
    Ok((id, generation))
}

/// One PIN try at unix ms `now` within the budget ([`Budget`]): recorded
/// as wrong first, cleared once the registration succeeds.
async fn check_pin(app: &App, user: &str, pin: String, now: u64) -> Result<(), ApiError> {
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
                // Cleared meanwhile by the owner: nothing to check.
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
        return Ok(());
    };
    if app.pins.verify(pin, hash).await {
        return Ok(());
    }
    Metrics::inc(&m.pin_wrong);
    tracing::info!(%user, wrong, "wrong registration-lock PIN");
    Err(ApiError::PinWrong { tries_left })
}
