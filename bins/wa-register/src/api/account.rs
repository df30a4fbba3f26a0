//! `DELETE /v1/account`, `PUT /v1/account/pin`, `DELETE /v1/account/pin`:
//! the caller's own account and its registration lock. Each is for the
//! primary device, or a companion giving the current PIN ([`lock`]).

use std::sync::Arc;

use axum::extract::State;
use http::StatusCode;
use serde::Deserialize;

use super::{Body, Caller, ClientAddr, OptionalBody, lock, now_ms};
use crate::App;
use crate::account::{Change, Revocation};
use crate::error::ApiError;
use crate::metrics::Metrics;

/// The body of the routes that need the current PIN from a companion.
#[derive(Debug, Default, Deserialize)]
pub struct CurrentPin {
    pub current_pin: Option<String>,
}

/// Deletes the account: every device is revoked at the home (sessions
/// close) before the account record goes (see [`crate::revoke`]), then the
/// phone index entry. Messages still waiting in the mailbox expire like
/// any others.
pub async fn delete(
    State(app): State<Arc<App>>,
    ClientAddr(ip): ClientAddr,
    caller: Caller,
    OptionalBody(req): OptionalBody<CurrentPin>,
) -> Result<StatusCode, ApiError> {
    let c = &caller.claims;
    lock::authorize(&app, &caller, ip, req.current_pin, now_ms()).await?;
    let revoked = app
        .accounts
        .update(&c.user, |s| {
            Ok::<_, ApiError>(match s {
                Some(s) => {
                    let all: Vec<Revocation> = s
                        .account
                        .devices
                        .iter()
                        .map(|d| Revocation {
                            device: d.id,
                            generation: u32::MAX,
                        })
                        .collect();
                    let n = all.len();
                    Change::Revoke(all, None, n)
                }
                None => Change::Keep(0),
            })
        })
        .await?;
    Metrics::add(&app.metrics.devices_revoked, revoked as u64);
    let phone = &caller.stored.account.phone;
    let (indexed, version) = app.accounts.phone(phone).await?;
    if indexed.as_deref() == Some(c.user.as_str()) {
        // A conflict means the number was just registered again: leave it.
        let _ = app.accounts.set_phone(phone, None, version).await?;
    }
    Metrics::inc(&app.metrics.accounts_deleted);
    tracing::info!(user = %c.user, "account deleted");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
pub struct PinRequest {
    pub pin: String,
    /// A companion device's proof that it may change the lock.
    pub current_pin: Option<String>,
}

/// Sets (or replaces) the registration-lock PIN.
pub async fn set_pin(
    State(app): State<Arc<App>>,
    ClientAddr(ip): ClientAddr,
    caller: Caller,
    Body(req): Body<PinRequest>,
) -> Result<StatusCode, ApiError> {
    if !crate::pin::valid_pin(&req.pin) {
        return Err(ApiError::BadPin);
    }
    let c = &caller.claims;
    let now = now_ms();
    lock::authorize(&app, &caller, ip, req.current_pin, now).await?;
    lock::admit_hash(&app, &c.user, ip)?;
    let hash = app.pins.hash(req.pin).await?;
    app.accounts
        .update(&c.user, |s| {
            let s = s.ok_or(ApiError::Revoked)?;
            let mut a = s.account.clone();
            a.pin = Some(crate::account::PinLock {
                hash: hash.clone(),
                wrong: 0,
                next_try_ms: 0,
            });
            a.seen_ms = now;
            Ok::<_, ApiError>(Change::Write(Some(a), ()))
        })
        .await?;
    tracing::info!(user = %c.user, "registration lock set");
    Ok(StatusCode::NO_CONTENT)
}

/// Removes the registration lock.
pub async fn clear_pin(
    State(app): State<Arc<App>>,
    ClientAddr(ip): ClientAddr,
    caller: Caller,
    OptionalBody(req): OptionalBody<CurrentPin>,
) -> Result<StatusCode, ApiError> {
    let c = &caller.claims;
    lock::authorize(&app, &caller, ip, req.current_pin, now_ms()).await?;
    app.accounts
        .update(&c.user, |s| {
            let s = s.ok_or(ApiError::Revoked)?;
            let mut a = s.account.clone();
            a.pin = None;
            Ok::<_, ApiError>(Change::Write(Some(a), ()))
        })
        .await?;
    tracing::info!(user = %c.user, "registration lock removed");
    Ok(StatusCode::NO_CONTENT)
}
