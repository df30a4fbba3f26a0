//! The request handlers, one file per request kind, and what they share:
//! the JSON body extractor whose every rejection is an [`ApiError`] with a
//! documented code, the client address, and the authenticated [`Caller`].

pub mod account;
pub mod devices;
pub mod lock;
pub mod privacy;
pub mod refresh;
pub mod request_code;
pub mod verify;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Request};
use common::token::{TokenClaims, TokenError};
use http::header::{AUTHORIZATION, CONTENT_LENGTH};
use http::request::Parts;
use http_body_util::BodyExt;
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

/// Most bytes of an oversize body read (and dropped) before the `413`.
const DRAIN_MAX: usize = 2 << 20;
/// Longest time spent reading them.
const DRAIN_TIME: Duration = Duration::from_secs(5);

/// Reads and drops up to [`DRAIN_MAX`] bytes of `body` within
/// [`DRAIN_TIME`] (a "lingering close"). Answering while the client is still
/// sending and then closing makes the kernel reset the connection under the
/// unread bytes, and the client loses the answer (or fails writing): with
/// the body read, the client gets its `413`. A longer or slower body is cut.
async fn drain(body: axum::body::Body) {
    let mut body = std::pin::pin!(body);
    let mut left = DRAIN_MAX;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(Ok(frame)) = body.frame().await {
            left = left.saturating_sub(frame.data_ref().map_or(0, |d| d.len()));
            if left == 0 {
                return;
            }
        }
    })
    .await;
}

impl<T: DeserializeOwned> FromRequest<Arc<App>> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<App>) -> Result<Self, ApiError> {
        let max = state.config.limits.max_body.as_u64();
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max) {
            drain(req.into_body()).await;
            return Err(ApiError::BodyTooLarge { max });
        }
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

/// An optional JSON request body (of a `DELETE`): none at all (no
/// `Content-Type` and no bytes) is `T::default()`; anything else is read
/// as [`Body`] is.
pub struct OptionalBody<T>(pub T);

impl<T: DeserializeOwned + Default> FromRequest<Arc<App>> for OptionalBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<App>) -> Result<Self, ApiError> {
        let empty = !req.headers().contains_key(http::header::CONTENT_TYPE)
            && req
                .headers()
                .get(CONTENT_LENGTH)
                .is_none_or(|v| v.as_bytes() == b"0");
        if empty {
            return Ok(OptionalBody(T::default()));
        }
        let Body(t) = Body::<T>::from_request(req, state).await?;
        Ok(OptionalBody(t))
    }
}

/// A path parameter; one that does not parse (`/v1/devices/abc`) is
/// `400 bad_field`, naming it.
pub struct Param<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Param<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(t)) => Ok(Param(t)),
            Err(e) => Err(ApiError::BadField(format!(
                "in the path: {}",
                e.body_text()
            ))),
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
