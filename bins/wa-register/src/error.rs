//! Errors. [`RegisterError`] is what [`crate::run`] returns to `main.rs`
//! (start-up failures, mapped to exit codes there). [`ApiError`] is what a
//! request can fail with; [`ApiError::status`] and [`ApiError::code`] are the
//! one place where errors become HTTP (docs/REGISTER.md, "Errors"): the body
//! is always `{"error": "<code>", "message": "<text>"}`, with a few extra
//! fields where the client needs them (`retry_after_secs`, `checks_left`,
//! `tries_left`).

use std::time::Duration;

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use crate::account::AccountError;
use crate::config::ConfigError;

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("TLS: {0}")]
    Tls(#[from] common::tls::TlsError),
    #[error("the cluster map from etcd: {0}")]
    Coordination(#[from] common::coordination::CoordinationError),
    #[error(transparent)]
    Cluster(#[from] common::cluster::ClusterError),
    #[error("cluster.secret_file: {0}")]
    Secret(crate::secret::SecretError),
    #[error("pin.pepper_file: {0}")]
    Pepper(crate::secret::SecretError),
    #[error("tokens.signing_key: {0}")]
    SigningKey(#[from] crate::tokens::KeyError),
    #[error("tokens.verify_keys ({id:?}): {source}")]
    VerifyKey {
        id: String,
        source: common::token::keyfile::KeyFileError,
    },
    #[error("the internal link: {0}")]
    Link(#[from] common::link_client::LinkClientError),
    #[error("sms: {0}")]
    Sms(#[from] crate::sms::SmsError),
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the request body must be JSON with Content-Type: application/json")]
    BadContentType,
    #[error("the request body is larger than {max} bytes")]
    BodyTooLarge { max: u64 },
    #[error("the request body is not valid JSON")]
    BadJson,
    #[error("a required field is missing: {0}")]
    MissingField(String),
    #[error("a field has the wrong type or value: {0}")]
    BadField(String),
    #[error("the number is not in E.164 form (+ and 8 to 15 digits)")]
    BadNumber,
    #[error("numbers with this prefix cannot register here")]
    PrefixNotAllowed,
    #[error("transport {0:?} is not offered; use \"sms\"")]
    BadTransport(String),
    #[error("the code must be 6 digits")]
    BadCode,
    #[error("session must be the 32 hex digits POST /v1/codes gave")]
    BadSession,
    #[error("the PIN must be 4 to 64 printable characters")]
    BadPin,
    #[error("the device name must be 1 to 64 characters")]
    BadDeviceName,
    #[error("a code was sent recently; ask again later")]
    ResendTooEarly { retry_after: Duration },
    #[error("too many requests ({limit} limit)")]
    RateLimited {
        limit: &'static str,
        retry_after: Duration,
    },
    #[error("no code was requested for this number, or it was already used")]
    NoCode,
    #[error("the code has expired; request a new one")]
    CodeExpired,
    #[error("the code is wrong")]
    CodeWrong { checks_left: u32 },
    #[error("too many wrong guesses; the code is dead, request a new one")]
    CodeExhausted,
    #[error("this number has a registration lock; send the PIN too")]
    PinRequired,
    #[error("the PIN is wrong")]
    PinWrong { tries_left: u32 },
    #[error("too many wrong PINs; the next try is allowed later")]
    PinLocked { retry_after: Duration },
    #[error("the SMS could not be sent; try again later")]
    SmsFailed,
    #[error("no bearer token in the Authorization header")]
    NoToken,
    #[error("the token is not valid")]
    TokenInvalid,
    #[error("the token has expired")]
    TokenExpired,
    #[error("this device was removed or the number was registered again elsewhere")]
    Revoked,
    #[error("no such device")]
    NoDevice,
    #[error("only the primary device (or a companion giving the current PIN) may do this")]
    PrimaryRequired,
    #[error("an account has at most {max} devices; remove one first")]
    TooManyDevices { max: usize },
    #[error("not found")]
    NotFound,
    #[error("this route does not take this method")]
    MethodNotAllowed,
    #[error("the home of this account cannot be reached; try again")]
    HomeUnavailable,
    #[error("the account changed during the request; try again")]
    Conflict,
    #[error("internal error")]
    Internal,
}

impl ApiError {
    /// The HTTP status of each error.
    pub fn status(&self) -> StatusCode {
        use ApiError::*;
        match self {
            BadContentType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BadJson | MissingField(_) | BadField(_) | BadNumber | BadTransport(_) | BadCode
            | BadSession | BadPin | BadDeviceName => StatusCode::BAD_REQUEST,
            PrefixNotAllowed => StatusCode::FORBIDDEN,
            ResendTooEarly { .. } | RateLimited { .. } | PinLocked { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            NoCode | NotFound | NoDevice => StatusCode::NOT_FOUND,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            CodeExpired | CodeExhausted => StatusCode::GONE,
            CodeWrong { .. } | TooManyDevices { .. } | PrimaryRequired => StatusCode::FORBIDDEN,
            PinRequired | PinWrong { .. } => StatusCode::LOCKED,
            SmsFailed => StatusCode::BAD_GATEWAY,
            NoToken | TokenInvalid | TokenExpired | Revoked => StatusCode::UNAUTHORIZED,
            HomeUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Conflict => StatusCode::CONFLICT,
            Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code in the JSON body.
    pub fn code(&self) -> &'static str {
        use ApiError::*;
        match self {
            BadContentType => "bad_content_type",
            BodyTooLarge { .. } => "body_too_large",
            BadJson => "bad_json",
            MissingField(_) => "missing_field",
            BadField(_) => "bad_field",
            BadNumber => "bad_number",
            PrefixNotAllowed => "prefix_not_allowed",
            BadTransport(_) => "bad_transport",
            BadCode => "bad_code",
            BadSession => "bad_session",
            BadPin => "bad_pin",
            BadDeviceName => "bad_device_name",
            ResendTooEarly { .. } => "resend_too_early",
            RateLimited { .. } => "rate_limited",
            NoCode => "no_code",
            CodeExpired => "code_expired",
            CodeWrong { .. } => "code_wrong",
            CodeExhausted => "code_exhausted",
            PinRequired => "pin_required",
            PinWrong { .. } => "pin_wrong",
            PinLocked { .. } => "pin_locked",
            SmsFailed => "sms_failed",
            NoToken => "no_token",
            TokenInvalid => "token_invalid",
            TokenExpired => "token_expired",
            Revoked => "revoked",
            NoDevice => "no_device",
            PrimaryRequired => "primary_required",
            TooManyDevices { .. } => "too_many_devices",
            NotFound => "not_found",
            MethodNotAllowed => "method_not_allowed",
            HomeUnavailable => "home_unavailable",
            Conflict => "conflict",
            Internal => "internal",
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::ResendTooEarly { retry_after }
            | ApiError::RateLimited { retry_after, .. }
            | ApiError::PinLocked { retry_after } => Some(*retry_after),
            ApiError::HomeUnavailable => Some(Duration::from_secs(1)),
            _ => None,
        }
    }
}

/// Whole seconds to wait, rounded up, at least 1.
pub fn secs(d: Duration) -> u64 {
    d.as_secs_f64().ceil().max(1.0) as u64
}

impl From<crate::pin::Busy> for ApiError {
    fn from(_: crate::pin::Busy) -> ApiError {
        ApiError::RateLimited {
            limit: "pin_workers",
            retry_after: crate::pin::BUSY_RETRY,
        }
    }
}

impl From<AccountError> for ApiError {
    fn from(e: AccountError) -> ApiError {
        match e {
            AccountError::Home(e) => {
                tracing::warn!(error = %e, "home request failed");
                ApiError::HomeUnavailable
            }
            AccountError::Contended => ApiError::Conflict,
            AccountError::Corrupt(e) => {
                tracing::error!(error = %e, "corrupt account record");
                ApiError::Internal
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        tracing::debug!(code = self.code(), "refused");
        let mut body = serde_json::json!({ "error": self.code(), "message": self.to_string() });
        if let Some(after) = self.retry_after() {
            body["retry_after_secs"] = secs(after).into();
        }
        match &self {
            ApiError::CodeWrong { checks_left } => body["checks_left"] = (*checks_left).into(),
            ApiError::PinWrong { tries_left } => body["tries_left"] = (*tries_left).into(),
            _ => {}
        }
        let mut resp = (status, Json(body)).into_response();
        let h = resp.headers_mut();
        if let Some(after) = self.retry_after() {
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs(after)));
        }
        if status == StatusCode::UNAUTHORIZED {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every error code is in REGISTER.md's table and in the OpenAPI enum.
    #[test]
    fn every_code_is_documented() {
        let d = Duration::from_secs(1);
        let all = [
            ApiError::BadContentType,
            ApiError::BodyTooLarge { max: 1 },
            ApiError::BadJson,
            ApiError::MissingField(String::new()),
            ApiError::BadField(String::new()),
            ApiError::BadNumber,
            ApiError::PrefixNotAllowed,
            ApiError::BadTransport(String::new()),
            ApiError::BadCode,
            ApiError::BadSession,
            ApiError::BadPin,
            ApiError::BadDeviceName,
            ApiError::ResendTooEarly { retry_after: d },
            ApiError::RateLimited {
                limit: "global",
                retry_after: d,
            },
            ApiError::NoCode,
            ApiError::CodeExpired,
            ApiError::CodeWrong { checks_left: 1 },
            ApiError::CodeExhausted,
            ApiError::PinRequired,
            ApiError::PinWrong { tries_left: 1 },
            ApiError::PinLocked { retry_after: d },
            ApiError::SmsFailed,
            ApiError::NoToken,
            ApiError::TokenInvalid,
            ApiError::TokenExpired,
            ApiError::Revoked,
            ApiError::NoDevice,
            ApiError::PrimaryRequired,
            ApiError::TooManyDevices { max: 8 },
            ApiError::NotFound,
            ApiError::MethodNotAllowed,
            ApiError::HomeUnavailable,
            ApiError::Conflict,
            ApiError::Internal,
        ];
        let md = include_str!("../../../docs/REGISTER.md");
        let api = include_str!("../../../docs/register.openapi.yaml");
        let enum_start = api.find("enum: [bad_json").expect("the Error enum");
        let enum_text = &api[enum_start..enum_start + api[enum_start..].find(']').unwrap()];
        for e in &all {
            let code = e.code();
            let status = format!("| {} |", e.status().as_u16());
            assert!(
                md.lines()
                    .any(|l| l.starts_with(&status) && l.contains(&format!("`{code}`"))),
                "{code} ({}) is not in REGISTER.md's error table",
                e.status()
            );
            assert!(
                enum_text
                    .split(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                    .any(|w| w == code),
                "{code} is not in the OpenAPI Error enum"
            );
        }
    }
}
