//! Errors. [`MediaError`] is what [`crate::run`] returns to `main.rs` (start-up
//! failures, mapped to exit codes there). [`ApiError`] is what a request can
//! fail with; [`ApiError::status`] and [`ApiError::code`] are the one place
//! where errors become HTTP (docs/MEDIA.md, "Errors"): the body is always
//! `{"error": "<code>", "message": "<text>"}`.

use std::path::PathBuf;
use std::time::Duration;

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use crate::config::ConfigError;

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("TLS: {0}")]
    Tls(common::tls::TlsError),
    #[error("token key {id:?}: {source}")]
    TokenKey {
        id: String,
        source: common::token::keyfile::KeyFileError,
    },
    #[error("data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("blob metadata {path}: {reason}")]
    BadMeta { path: PathBuf, reason: String },
    #[error("accepting connections: {0}")]
    Accept(std::io::Error),
    #[error("cluster.map: {0}")]
    Cluster(common::cluster::ClusterError),
    #[error("cluster.secret_file: {0}")]
    Secret(common::secret::SecretError),
    #[error("the internal link: {0}")]
    Link(common::link_client::LinkClientError),
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("no bearer token in the Authorization header")]
    NoToken,
    #[error("the token is not valid")]
    TokenInvalid,
    #[error("the token has expired")]
    TokenExpired,
    #[error(
        "this device was removed, its number registered again elsewhere, or its account deleted"
    )]
    Revoked,
    #[error("the home of this account cannot be reached to check the device; try again")]
    HomeUnavailable,
    #[error("{0:?} is not a media handle")]
    BadHandle(String),
    #[error("the handle names node {0:?}; ask that node")]
    WrongNode(String),
    #[error("no such blob")]
    NotFound,
    #[error("the blob has expired or was deleted")]
    Gone,
    #[error("only an uploader of the blob may delete it")]
    NotOwner,
    #[error("the range is not satisfiable for a blob of {size} bytes")]
    RangeNotSatisfiable { size: u64 },
    #[error("the blob exceeds the limit of {max} bytes")]
    TooLarge { max: u64 },
    #[error("too many uploads in progress on this node")]
    Busy,
    #[error("too many uploads in progress for this user")]
    UserBusy,
    #[error("upload rate exceeded")]
    RateLimited { retry_after: Duration },
    #[error("daily upload quota of {quota} bytes exceeded")]
    QuotaExceeded { quota: u64, retry_after: Duration },
    #[error("the upload body stalled, was too slow, or took longer than the upload deadline")]
    BodyTimeout,
    #[error("the upload body was cut off")]
    BodyBroken,
    #[error("storage failed")]
    Storage(#[source] std::io::Error),
}

impl ApiError {
    /// The HTTP status of each error.
    pub fn status(&self) -> StatusCode {
        use ApiError::*;
        match self {
            NoToken | TokenInvalid | TokenExpired | Revoked => StatusCode::UNAUTHORIZED,
            HomeUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            BadHandle(_) => StatusCode::BAD_REQUEST,
            WrongNode(_) => StatusCode::MISDIRECTED_REQUEST,
            NotFound => StatusCode::NOT_FOUND,
            Gone => StatusCode::GONE,
            NotOwner => StatusCode::FORBIDDEN,
            RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Busy | UserBusy | RateLimited { .. } | QuotaExceeded { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            BodyBroken => StatusCode::BAD_REQUEST,
            Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code in the JSON body.
    pub fn code(&self) -> &'static str {
        use ApiError::*;
        match self {
            NoToken => "no_token",
            TokenInvalid => "token_invalid",
            TokenExpired => "token_expired",
            Revoked => "revoked",
            HomeUnavailable => "home_unavailable",
            BadHandle(_) => "bad_handle",
            WrongNode(_) => "wrong_node",
            NotFound => "not_found",
            Gone => "gone",
            NotOwner => "not_owner",
            RangeNotSatisfiable { .. } => "range_not_satisfiable",
            TooLarge { .. } => "too_large",
            Busy => "busy",
            UserBusy => "user_busy",
            RateLimited { .. } => "rate_limited",
            QuotaExceeded { .. } => "quota_exceeded",
            BodyTimeout => "body_timeout",
            BodyBroken => "body_broken",
            Storage(_) => "internal",
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::Busy | ApiError::UserBusy | ApiError::HomeUnavailable => {
                Some(Duration::from_secs(1))
            }
            ApiError::RateLimited { retry_after } | ApiError::QuotaExceeded { retry_after, .. } => {
                Some(*retry_after)
            }
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let ApiError::Storage(e) = &self {
            tracing::error!(error = %e, "storage failed");
        } else {
            tracing::debug!(code = self.code(), "refused");
        }
        let body = serde_json::json!({ "error": self.code(), "message": self.to_string() });
        let mut resp = (status, Json(body)).into_response();
        let h = resp.headers_mut();
        if let Some(after) = self.retry_after() {
            let secs = after.as_secs_f64().ceil().max(1.0) as u64;
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if status == StatusCode::UNAUTHORIZED {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let ApiError::RangeNotSatisfiable { size } = self {
            let v = HeaderValue::from_str(&format!("bytes */{size}"))
                .expect("a number is a valid header value");
            h.insert(header::CONTENT_RANGE, v);
        }
        resp
    }
}
