//! `GET /v1/devices`, `POST /v1/devices`, `DELETE /v1/devices/{id}`: the
//! caller's own devices. Linking adds a companion device to the account
//! (credentials for it come back to the caller, which hands them over);
//! removing one revokes it at the home, which closes its sessions.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use http::StatusCode;
use serde::{Deserialize, Serialize};

use super::account::CurrentPin;
use super::{Body, Caller, ClientAddr, OptionalBody, Param, check_device, lock, now_ms, now_secs};
use crate::App;
use crate::account::{Change, Revocation};
use crate::error::ApiError;
use crate::metrics::Metrics;

#[derive(Debug, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub id: u32,
    pub name: String,
    pub public_key: Option<String>,
    pub created_ms: u64,
    /// The device making this request.
    pub current: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DeviceList {
    pub devices: Vec<DeviceInfo>,
}

pub async fn list(caller: Caller) -> Json<DeviceList> {
    let me = caller.claims.device;
    Json(DeviceList {
        devices: caller
            .stored
            .account
            .devices
            .iter()
            .map(|d| DeviceInfo {
                id: d.id,
                name: d.name.clone(),
                public_key: d.public_key.clone(),
                created_ms: d.created_ms,
                current: d.id == me,
            })
            .collect(),
    })
}

#[derive(Debug, Deserialize)]
pub struct LinkRequest {
    pub device_name: String,
    pub public_key: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Linked {
    pub device: u32,
    pub token: String,
    pub expires_at: u64,
}

/// Most devices per account.
pub const MAX_DEVICES: usize = 8;

pub async fn link(
    State(app): State<Arc<App>>,
    caller: Caller,
    Body(req): Body<LinkRequest>,
) -> Result<(StatusCode, Json<Linked>), ApiError> {
    check_device(&req.device_name, req.public_key.as_deref())?;
    let c = &caller.claims;
    let now = now_ms();
    let id = app
        .accounts
        .update(&c.user, |s| {
            let s = s.ok_or(ApiError::Revoked)?;
            if s.account.generation != c.generation || s.account.device(c.device).is_none() {
                return Err(ApiError::Revoked);
            }
            if s.account.devices.len() >= MAX_DEVICES {
                return Err(ApiError::TooManyDevices { max: MAX_DEVICES });
            }
            let mut a = s.account.clone();
            let id = a.add_device(req.device_name.clone(), req.public_key.clone(), now);
            a.seen_ms = now;
            Ok(Change::Write(Some(a), id))
        })
        .await?;
    Metrics::inc(&app.metrics.tokens_issued);
    let phone = &caller.stored.account.phone;
    let issued = app
        .tokens
        .issue(&c.user, id, c.generation, phone, now_secs());
    tracing::info!(user = %c.user, device = id, "device linked");
    Ok((
        StatusCode::CREATED,
        Json(Linked {
            device: id,
            token: issued.token,
            expires_at: issued.expires_at,
        }),
    ))
}

/// Removes a device: revoked at the home first, then taken off the account
/// ([`crate::revoke`]). Removing another device is for the primary device,
/// or a companion giving the current PIN ([`lock`]); any device may remove
/// itself.
pub async fn remove(
    State(app): State<Arc<App>>,
    ClientAddr(ip): ClientAddr,
    caller: Caller,
    Param(id): Param<u32>,
    OptionalBody(req): OptionalBody<CurrentPin>,
) -> Result<StatusCode, ApiError> {
    let c = &caller.claims;
    if caller.stored.account.device(id).is_none() {
        return Err(ApiError::NoDevice);
    }
    if id != c.device {
        lock::authorize(&app, &caller, ip, req.current_pin, now_ms()).await?;
    }
    app.accounts
        .update(&c.user, |s| {
            let s = s.ok_or(ApiError::Revoked)?;
            if s.account.device(id).is_none() {
                return Err(ApiError::NoDevice);
            }
            let mut a = s.account.clone();
            a.devices.retain(|d| d.id != id);
            // Device ids are never reused, so no generation of this one is
            // valid again.
            let revoked = Revocation {
                device: id,
                generation: u32::MAX,
            };
            Ok(Change::Revoke(vec![revoked], Some(a), ()))
        })
        .await?;
    Metrics::inc(&app.metrics.devices_revoked);
    tracing::info!(user = %c.user, device = id, "device removed");
    Ok(StatusCode::NO_CONTENT)
}
