//! `GET`/`HEAD /v1/media/{handle}` (whole blob or one byte range) and
//! `DELETE /v1/media/{handle}` (by an uploader).
//!
//! Blobs are immutable, so the ETag is their SHA-256 and the response may be
//! cached privately until the blob expires. They are served as
//! `application/octet-stream` unless the uploader declared an allow-listed
//! type, always with `X-Content-Type-Options: nosniff` and a sandboxing CSP,
//! so a blob can never run as a page of this origin. Small blobs come from
//! the [`HotCache`](crate::cache::HotCache); larger ones stream from the file
//! in 64 KiB reads.

use std::io::SeekFrom;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::Response;
use http::{HeaderMap, Method, StatusCode, header};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::App;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::handle::{Handle, Sha};
use crate::range::{self, Want};
use crate::store::{Lookup, Meta};

/// Read size when streaming a blob from its file.
const READ_CHUNK: usize = 64 * 1024;

/// The handle in the path, for this node, or why not.
fn parse_handle(app: &App, text: &str) -> Result<Sha, ApiError> {
    let h =
        Handle::parse(text).ok_or_else(|| ApiError::BadHandle(text.chars().take(80).collect()))?;
    if h.node != app.node {
        return Err(ApiError::WrongNode(h.node));
    }
    Ok(h.sha)
}

fn live(app: &App, sha: &Sha) -> Result<Meta, ApiError> {
    match app.store.lookup(sha, common::fsutil::now_ms()) {
        Lookup::Live(m) => Ok(m),
        Lookup::Gone => Err(ApiError::Gone),
        Lookup::Missing => Err(ApiError::NotFound),
    }
}

pub async fn download(
    State(app): State<Arc<App>>,
    _caller: Caller,
    Path(handle): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let sha = parse_handle(&app, &handle)?;
    let meta = live(&app, &sha)?;
    let etag = format!("\"{}\"", hex::encode(sha));
    let now = common::fsutil::now_ms();
    let max_age = meta.expires_ms.saturating_sub(now) / 1000;

    let mut b = Response::builder()
        .header(header::ETAG, &etag)
        .header(
            header::CACHE_CONTROL,
            format!("private, max-age={max_age}, immutable"),
        )
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(
            header::CONTENT_SECURITY_POLICY,
            "sandbox; default-src 'none'",
        )
        .header(
            header::CONTENT_TYPE,
            meta.mime.as_deref().unwrap_or("application/octet-stream"),
        );
    let none_match = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok());
    if none_match.is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*")) {
        return Ok(b
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::empty())
            .expect("valid response"));
    }
    // A Range is honoured only while the validator in If-Range (if any) matches.
    let if_range_ok = headers
        .get(header::IF_RANGE)
        .is_none_or(|v| v.to_str().is_ok_and(|v| v.trim() == etag));
    let range_header = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .filter(|_| if_range_ok);
    let size = meta.size;
    let (start, len) = match range::parse(range_header, size) {
        Want::Whole => {
            b = b.status(StatusCode::OK);
            (0, size)
        }
        Want::Part { start, end } => {
            b = b
                .status(StatusCode::PARTIAL_CONTENT)
                .header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{size}"));
            (start, end - start + 1)
        }
        Want::Unsatisfiable => return Err(ApiError::RangeNotSatisfiable { size }),
    };
    b = b.header(header::CONTENT_LENGTH, len);
    if method == Method::HEAD {
        return Ok(b.body(Body::empty()).expect("valid response"));
    }
    let path = app.store.blob_path(&sha);
    let body = if app.cache.holds(size) {
        let bytes = app
            .cache
            .get(&sha, size, path)
            .await
            .map_err(gone_if_missing)?;
        Body::from(bytes.slice(start as usize..(start + len) as usize))
    } else {
        let mut f = tokio::fs::File::open(&path)
            .await
            .map_err(gone_if_missing)?;
        if start > 0 {
            f.seek(SeekFrom::Start(start))
                .await
                .map_err(ApiError::Storage)?;
        }
        Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
            f.take(len),
            READ_CHUNK,
        ))
    };
    Ok(b.body(body).expect("valid response"))
}

/// A blob file that vanished between the lookup and the open was expired or
/// deleted in between.
fn gone_if_missing(e: std::io::Error) -> ApiError {
    if e.kind() == std::io::ErrorKind::NotFound {
        ApiError::Gone
    } else {
        ApiError::Storage(e)
    }
}

pub async fn delete(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(handle): Path<String>,
) -> Result<Response, ApiError> {
    let sha = parse_handle(&app, &handle)?;
    let now = common::fsutil::now_ms();
    if app
        .store
        .delete(&sha, &caller.user, now)
        .await
        .map_err(ApiError::Storage)?
    {
        if !matches!(app.store.lookup(&sha, now), Lookup::Live(_)) {
            app.cache.invalidate(&sha);
        }
        tracing::info!(user = %caller.user, handle = %handle, "deleted");
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NO_CONTENT;
        return Ok(r);
    }
    live(&app, &sha)?;
    Err(ApiError::NotOwner)
}
