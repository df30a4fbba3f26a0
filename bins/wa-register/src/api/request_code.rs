//! `POST /v1/codes`: send a one-time code to a number.
//!
//! Order of refusals: malformed input (400), the country allow-list (403),
//! the number's resend schedule (429 `resend_too_early`, which costs no rate
//! limit), then the rate limits from broadest to narrowest (429
//! `rate_limited`). Test numbers get their fixed code and no SMS.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::{Body, ClientAddr};
use crate::App;
use crate::codes::CODE_LEN;
use crate::error::{ApiError, secs};
use crate::metrics::Metrics;
use crate::phone::Number;

#[derive(Debug, Deserialize)]
pub struct CodeRequest {
    /// E.164, e.g. `+15551234567`.
    pub number: String,
    /// Only `sms` for now.
    #[serde(default = "sms")]
    pub transport: String,
}

fn sms() -> String {
    "sms".into()
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CodeSent {
    /// The number, masked.
    pub number: String,
    pub transport: String,
    /// Digits in the code.
    pub length: usize,
    /// How long the code may be used.
    pub expires_in_secs: u64,
    /// When the client may ask for another code.
    pub retry_after_secs: u64,
    /// This request's session: `POST /v1/verify` names it with the code.
    pub session: String,
}

pub async fn handle(
    State(app): State<Arc<App>>,
    ClientAddr(ip): ClientAddr,
    Body(req): Body<CodeRequest>,
) -> Result<Json<CodeSent>, ApiError> {
    let m = &app.metrics;
    Metrics::inc(&m.codes_requested);
    let number = Number::parse(&req.number).map_err(|_| ApiError::BadNumber)?;
    if req.transport != "sms" {
        return Err(ApiError::BadTransport(req.transport));
    }
    if !number.allowed(&app.config.countries.allow) {
        return Err(ApiError::PrefixNotAllowed);
    }
    let now = Instant::now();
    let early = |retry_after| {
        Metrics::inc(&m.resend_too_early);
        ApiError::ResendTooEarly { retry_after }
    };
    let wait = app.codes.wait(number.as_str(), now);
    if !wait.is_zero() {
        return Err(early(wait));
    }
    let prefix = number.prefix(app.config.limits.prefix_digits);
    let tightened = app.pumping.tightened(prefix, now);
    if let Err(r) = app
        .limits
        .code_request(number.as_str(), prefix, ip, tightened)
    {
        Metrics::inc(&m.rate_limited);
        tracing::info!(limit = r.limit.name(), number = %number.masked(), "code request rate limited");
        return Err(ApiError::RateLimited {
            limit: r.limit.name(),
            retry_after: r.wait,
        });
    }
    let fixed = app.test_numbers.get(number.as_str()).map(String::as_str);
    let (code, session, next) = app
        .codes
        .issue(number.as_str(), fixed, now)
        .map_err(early)?;
    if fixed.is_none()
        && let Err(e) = app.sms.send(&number, &code).await
    {
        app.codes.withdraw(number.as_str(), &session);
        Metrics::inc(&m.sms_failed);
        tracing::warn!(provider = app.sms.name(), number = %number.masked(), error = %e, "SMS not sent");
        return Err(ApiError::SmsFailed);
    }
    Metrics::inc(&m.codes_sent);
    let digits = number.as_str().len() - 1;
    if let Some(s) = app.pumping.sent(prefix, digits, now) {
        Metrics::inc(&m.pumping_suspected);
        tracing::warn!(
            prefix = %s.prefix,
            sent = s.sent,
            verified = s.verified,
            "many codes sent to this prefix and few verified: possible SMS pumping; its limit is tightened"
        );
    }
    tracing::info!(number = %number.masked(), test = fixed.is_some(), "code sent");
    Ok(Json(CodeSent {
        number: number.masked().to_string(),
        transport: req.transport,
        length: CODE_LEN,
        expires_in_secs: app.config.codes.ttl.as_secs(),
        retry_after_secs: secs(next),
        session: crate::codes::session_text(&session),
    }))
}
