//! Who is calling: `Authorization: Bearer <token>`, the same Ed25519 tokens
//! that wa-chat accepts (PROTOCOL.md section 11), verified offline against the
//! configured key ring, then checked against revocation at the user's home
//! ([`crate::revocation`]). Every route but `/healthz` needs one, downloads
//! included (docs/MEDIA.md, "Authentication").

use std::sync::Arc;

use axum::extract::FromRequestParts;
use http::header::AUTHORIZATION;
use http::request::Parts;

use crate::App;
use crate::error::ApiError;
use common::token::TokenError;

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: String,
    pub device: u32,
    pub generation: u32,
    /// What per-account limits count by: the token's `account` claim (the
    /// phone number's key, the same for every user id the number had), or
    /// the user id in tokens without one.
    pub account: String,
}

/// Verifies the bearer token in `header` at `now_secs`.
pub fn verify(app: &App, header: Option<&[u8]>, now_secs: u64) -> Result<Caller, ApiError> {
    let h = header.ok_or(ApiError::NoToken)?;
    let h = std::str::from_utf8(h).map_err(|_| ApiError::TokenInvalid)?;
    let token = h
        .strip_prefix("Bearer ")
        .or_else(|| h.strip_prefix("bearer "))
        .ok_or(ApiError::NoToken)?
        .trim();
    match app.keys.verify(token, now_secs) {
        Ok(c) => Ok(Caller {
            account: if c.account.is_empty() {
                format!("user:{}", c.user)
            } else {
                format!("number:{}", c.account)
            },
            user: c.user,
            device: c.device,
            generation: c.generation,
        }),
        Err(TokenError::Expired { .. }) => Err(ApiError::TokenExpired),
        Err(_) => Err(ApiError::TokenInvalid),
    }
}

impl FromRequestParts<Arc<App>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Caller, ApiError> {
        let now = common::fsutil::now_ms() / 1000;
        let caller = verify(
            app,
            parts.headers.get(AUTHORIZATION).map(|v| v.as_bytes()),
            now,
        )?;
        app.revocations
            .check(
                &caller.user,
                caller.device,
                caller.generation,
                std::time::Instant::now(),
            )
            .await?;
        Ok(caller)
    }
}
