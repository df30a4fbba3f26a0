//! `POST /v1/tokens/refresh`: a new credential for the same device, before
//! the current one expires. Refused once the device was removed or the
//! number registered elsewhere (the token's generation is then stale).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::{Caller, now_ms, now_secs};
use crate::App;
use crate::account::Change;
use crate::error::ApiError;
use crate::metrics::Metrics;

#[derive(Debug, Serialize, Deserialize)]
pub struct Refreshed {
    pub token: String,
    pub expires_at: u64,
}

pub async fn handle(
    State(app): State<Arc<App>>,
    caller: Caller,
) -> Result<Json<Refreshed>, ApiError> {
    let c = &caller.claims;
    let now = now_ms();
    // Seen now: keeps the registration lock from lapsing. A conflict here
    // only means someone else just wrote the account; the refresh stands.
    let seen = app
        .accounts
        .update(&c.user, |s| {
            let Some(s) = s else {
                return Ok::<_, ApiError>(Change::Keep(false));
            };
            if s.account.generation != c.generation || s.account.device(c.device).is_none() {
                return Ok(Change::Keep(false));
            }
            let mut a = s.account.clone();
            a.seen_ms = now;
            Ok(Change::Write(Some(a), true))
        })
        .await;
    match seen {
        Ok(true) | Err(ApiError::Conflict) => {}
        Ok(false) => return Err(ApiError::Revoked),
        Err(e) => return Err(e),
    }
    Metrics::inc(&app.metrics.tokens_issued);
    let issued = app.tokens.issue(
        &c.user,
        c.device,
        c.generation,
        &caller.stored.account.phone,
        now_secs(),
    );
    Ok(Json(Refreshed {
        token: issued.token,
        expires_at: issued.expires_at,
    }))
}
