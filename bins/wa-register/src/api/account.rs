//! `DELETE /v1/account`, `PUT /v1/account/pin`, `DELETE /v1/account/pin`:
//! the caller's own account and its registration lock.

use std::sync::Arc;

use axum::extract::State;
use http::StatusCode;
use serde::Deserialize;

use super::{Body, Caller};
use crate::App;
use crate::account::Change;
use crate::error::ApiError;
use crate::metrics::Metrics;

/// Deletes the account: every device is revoked at the home (sessions
/// close), the account record and the phone index entry go. Messages still
/// waiting in the mailbox expire like any others.
pub async fn delete(State(app): State<Arc<App>>, caller: Caller) -> Result<StatusCode, ApiError> {
    let c = &caller.claims;
    let a = &caller.stored.account;
    for d in &a.devices {
        app.accounts
            .link
            .revoke(&c.user, d.id, u32::MAX)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "revoking a device of a deleted account failed");
                ApiError::HomeUnavailable
            })?;
    }
    app.accounts
        .update(&c.user, |s| {
            Ok::<_, ApiError>(match s {
                Some(_) => Change::Write(None, ()),
                None => Change::Keep(()),
            })
        })
        .await?;
    let (indexed, version) = app.accounts.phone(&a.phone).await?;
    if indexed.as_deref() == Some(c.user.as_str()) {
        // A conflict means the number was just registered again: leave it.
        let _ = app.accounts.set_phone(&a.phone, None, version).await?;
    }
    Metrics::inc(&app.metrics.accounts_deleted);
    tracing::info!(user = %c.user, "account deleted");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
pub struct PinRequest {
    pub pin: String,
}

/// Sets (or replaces) the registration-lock PIN.
pub async fn set_pin(
    State(app): State<Arc<App>>,
    caller: Caller,
    Body(req): Body<PinRequest>,
) -> Result<StatusCode, ApiError> {
    if !crate::pin::valid_pin(&req.pin) {
        return Err(ApiError::BadPin);
    }
    let hash = app.pins.hash(req.pin).await;
    let c = &caller.claims;
    let now = super::now_ms();
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
    caller: Caller,
) -> Result<StatusCode, ApiError> {
    let c = &caller.claims;
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
