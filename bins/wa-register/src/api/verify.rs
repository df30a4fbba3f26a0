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
use crate::account::{Account, Change, Revocation, Stored, new_user_id};
use crate::codes::{CheckError, parse_session, valid_code};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::phone::Number;
use crate::pin::Budget;

#[derive(Debug, Deserialize)]
pub struct VerifyRequest {
    pub number: String,
    /// The `session` of the code request (`POST /v1/codes`) whose code this is.
    pub session: Option<String>,
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
    let Some(session) = req.session.as_deref() else {
        return Err(ApiError::MissingField("session".to_string()));
    };
    let session = parse_session(session).ok_or(ApiError::BadSession)?;
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
    let claim = match app
        .codes
        .check(number.as_str(), &session, &req.code, Instant::now())
    {
        Ok(claim) => claim,
        Err(CheckError::Busy) => return Err(ApiError::Conflict),
        Err(CheckError::NoCode) => return Err(ApiError::NoCode),
        Err(CheckError::Expired) => return Err(ApiError::CodeExpired),
        Err(CheckError::Wrong { left }) => {
            Metrics::inc(&m.codes_wrong);
            return Err(ApiError::CodeWrong { checks_left: left });
        }
        Err(CheckError::NumberLocked { retry_after }) => {
            Metrics::inc(&m.codes_exhausted);
            return Err(ApiError::RateLimited {
                limit: "number_guesses",
                retry_after,
            });
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
            let (id, generation) = reregister(&app, ip, &number, stored, req.pin, device).await?;
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
    let issued = app
        .tokens
        .issue(&user, device_id, generation, number.as_str(), now_secs());
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
    account.primary = Some(id);
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
    ip: std::net::IpAddr,
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
        super::lock::admit_hash(app, &user, ip)?;
        // (Cleared by the owner meanwhile: nothing left to check.)
        super::lock::check_pin(app, &user, pin, now).await?;
    } else if stored.account.pin.is_some() {
        tracing::info!(%user, "registration lock lapsed: the account was not seen for pin.lapse_after");
    }

    // The old devices are revoked at the new generation before the account
    // moves to it (`Change::Revoke`): if a revocation fails nothing is
    // written, and a retry still finds every old device to revoke.
    let (id, generation, revoked) = app
        .accounts
        .update(&user, |s| {
            let s = s.ok_or(ApiError::Conflict)?;
            let mut a = s.account.clone();
            a.generation += 1;
            let revoked: Vec<Revocation> = a
                .devices
                .iter()
                .map(|d| Revocation {
                    device: d.id,
                    generation: a.generation,
                })
                .collect();
            a.devices.clear();
            let id = a.add_device(device.name.clone(), device.public_key.clone(), now);
            a.primary = Some(id);
            a.seen_ms = now;
            if locked {
                if let Some(l) = a.pin.as_mut() {
                    Budget::right(l);
                }
            } else {
                a.pin = None;
            }
            let generation = a.generation;
            let n = revoked.len();
            Ok::<_, ApiError>(Change::Revoke(revoked, Some(a), (id, generation, n)))
        })
        .await?;
    Metrics::add(&m.devices_revoked, revoked as u64);
    tracing::info!(%user, revoked, "old devices revoked");
    Metrics::inc(&m.reregistrations);
    tracing::info!(number = %number.masked(), %user, generation, "number registered again on a new device");
    Ok((id, generation))
}
