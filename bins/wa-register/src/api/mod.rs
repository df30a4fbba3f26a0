//! The request handlers, one file per request kind, and what they share:
//! the JSON body extractor whose every rejection is an [`ApiError`] with a
//! documented code, the client address, and the authenticated [`Caller`].

pub mod account;
pub mod devices;
pub mod refresh;
pub mod request_code;
pub mod verify;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use common::token::{TokenClaims, TokenError};
use http::header::AUTHORIZATION;
use http::request::Parts;
use serde::de::DeserializeOwned;

use crate::App;
use crate::account::Stored;
use crate::error::ApiError;

/// Longest device name.
pub const MAX_DEVICE_NAME: usize = 64;
/// Longest device public key (opaque text, e.g. base64).
pub const MAX_PUBLIC_KEY: usize = 512;

pub fn now_ms() -> u64 {
    common::fsutil::now_ms()
}

pub fn now_secs() -> u64 {
    now_ms() / 1000
}

/// A JSON request body; wrong content type, oversize, bad JSON and missing
/// or mistyped fields are refused with their own codes.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Arc<App>> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<App>) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(t)) => Ok(Body(t)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::BadContentType),
            Err(JsonRejection::JsonSyntaxError(_)) => Err(ApiError::BadJson),
            Err(JsonRejection::JsonDataError(e)) => {
                let text = e.body_text();
                // serde's own words name the field ("missing field `number`").
                let detail = text.rsplit(": ").next().unwrap_or(&text).to_owned();
                if text.contains("missing field") {
                    Err(ApiError::MissingField(detail))
                } else {
                    Err(ApiError::BadField(detail))
                }
            }
            Err(JsonRejection::BytesRejection(_)) => Err(ApiError::BodyTooLarge {
                max: state.config.limits.max_body.as_u64(),
            }),
            Err(_) => Err(ApiError::BadJson),
        }
    }
}

/// The client's address (the TCP peer).
pub struct ClientAddr(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        Ok(ClientAddr(ip))
    }
}

/// The caller of an authenticated route: a valid token whose device is
/// still in the account at the token's generation.
pub struct Caller {
    pub claims: TokenClaims,
    pub stored: Stored,
}

impl FromRequestParts<Arc<App>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Caller, ApiError> {
        let h = parts.headers.get(AUTHORIZATION).ok_or(ApiError::NoToken)?;
        let h = h.to_str().map_err(|_| ApiError::TokenInvalid)?;
        let token = h
            .strip_prefix("Bearer ")
            .or_else(|| h.strip_prefix("bearer "))
            .ok_or(ApiError::NoToken)?
            .trim();
        let claims = app.tokens.verify(token, now_secs()).map_err(|e| match e {
            TokenError::Expired { .. } => ApiError::TokenExpired,
            _ => ApiError::TokenInvalid,
        })?;
        let stored = app
            .accounts
            .get(&claims.user)
            .await?
            .ok_or(ApiError::Revoked)?;
        let a = &stored.account;
        if a.generation != claims.generation || a.device(claims.device).is_none() {
            return Err(ApiError::Revoked);
        }
        Ok(Caller { claims, stored })
    }
}

/// Checks a device name and public key from a request.
pub fn check_device(name: &str, public_key: Option<&str>) -> Result<(), ApiError> {
    let name_ok = !name.trim().is_empty()
        && name.chars().count() <= MAX_DEVICE_NAME
        && !name.chars().any(char::is_control);
    let key_ok = public_key.is_none_or(|k| {
        !k.is_empty() && k.len() <= MAX_PUBLIC_KEY && k.bytes().all(|b| b.is_ascii_graphic())
    });
    if name_ok && key_ok {
        Ok(())
    } else {
        Err(ApiError::BadDeviceName)
    }
}
