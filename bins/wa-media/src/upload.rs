//! `POST /v1/media` (or `PUT`): stream the body to a temporary file while
//! hashing it, fsync, then hand it to the store, which renames it into place
//! or drops it when the same bytes are already stored.
//!
//! The body is never held in memory beyond one write buffer; anything that
//! ends the request early (the client goes away, the body stalls, it grows
//! past `max_blob_size`) drops the [`TempFile`], which deletes the partial
//! file, so an interrupted upload leaves nothing behind.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode, header};
use http_body_util::BodyExt;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::handle::Handle;
use crate::store::Written;
use crate::{App, BODY_TIMEOUT};

/// Write buffer between the body and the file.
const WRITE_BUFFER: usize = 256 * 1024;

/// The JSON answer to an upload (docs/MEDIA.md).
#[derive(Debug, Serialize)]
pub struct Uploaded {
    pub handle: String,
    pub size: u64,
    pub sha256: String,
    /// The type it is served with.
    pub mime: String,
    pub expires_at_ms: u64,
}

/// A file in `tmp/` that is deleted on drop unless [`TempFile::keep`] was called.
struct TempFile {
    path: PathBuf,
    keep: bool,
}

impl TempFile {
    fn keep(mut self) -> PathBuf {
        self.keep = true;
        std::mem::take(&mut self.path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The declared type if it is on the allow-list.
fn declared_type(app: &App, headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let t = v.split(';').next()?.trim().to_ascii_lowercase();
    app.allowed_types.contains(&t).then_some(t)
}

pub async fn upload(
    State(app): State<Arc<App>>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // Limits count per account (the phone number), not per user id: a
    // number that deletes its account and registers again keeps its state.
    let permit = app
        .limits
        .admit(&caller.account, declared, Instant::now())?;
    let max = app.limits.max_blob_size();
    let mime = declared_type(&app, &headers);

    let name = hex::encode(rand::random::<[u8; 16]>());
    let tmp = TempFile {
        path: app.store.tmp_dir().join(name),
        keep: false,
    };
    let file = tokio::fs::File::create(&tmp.path)
        .await
        .map_err(ApiError::Storage)?;
    let mut out = tokio::io::BufWriter::with_capacity(WRITE_BUFFER, file);
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut body = body;
    let start = Instant::now();
    loop {
        // The stall timer alone restarted on every byte, so one byte per
        // 20 s kept an upload (and its slot) forever: the body also has a
        // total deadline and a minimum average rate.
        let until = app
            .limits
            .body_deadline(start, size, Instant::now(), BODY_TIMEOUT);
        let frame = tokio::time::timeout_at(until.into(), body.frame())
            .await
            .map_err(|_| ApiError::BodyTimeout)?;
        let Some(frame) = frame else { break };
        let frame = frame.map_err(|_| ApiError::BodyBroken)?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        size = permit.add(data.len() as u64);
        if size > max {
            return Err(ApiError::TooLarge { max });
        }
        hasher.update(&data);
        out.write_all(&data).await.map_err(ApiError::Storage)?;
    }
    out.flush().await.map_err(ApiError::Storage)?;
    let file = out.into_inner();
    file.sync_all().await.map_err(ApiError::Storage)?;
    drop(file);
    drop(permit);

    let sha: [u8; 32] = hasher.finalize().into();
    let now = common::fsutil::now_ms();
    let expires = now + app.expiry.expire_after.as_millis() as u64;
    let written = Written {
        tmp: tmp.keep(),
        sha,
        size,
        mime,
    };
    let tmp_path = written.tmp.clone();
    let stored = app
        .store
        .commit(written, &caller.user, now, expires)
        .await
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp_path);
            ApiError::Storage(e)
        })?;
    let handle = Handle::new(&app.node, sha);
    tracing::info!(
        user = %caller.user,
        %handle,
        size,
        existed = stored.existed,
        "uploaded"
    );
    let status = if stored.existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let answer = Uploaded {
        handle: handle.to_string(),
        size,
        sha256: hex::encode(sha),
        mime: stored
            .meta
            .mime
            .clone()
            .unwrap_or_else(|| "application/octet-stream".into()),
        expires_at_ms: stored.meta.expires_ms,
    };
    let location = format!("/v1/media/{handle}");
    Ok((status, [(header::LOCATION, location)], Json(answer)).into_response())
}
