//! The sweeper: every `expiry.sweep_interval` it deletes the bytes of expired
//! blobs (leaving a tombstone, so their handles answer 410 Gone), forgets
//! tombstones older than `expiry.remember_gone` (404 from then on), and prunes
//! idle users from the upload limits. It works from the in-memory index, so a
//! sweep never walks the blob tree.

use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::App;

/// One sweep at `now_ms`: (blobs expired, tombstones forgotten).
pub async fn sweep(app: &App, now_ms: u64) -> (usize, usize) {
    let remember = app.expiry.remember_gone.as_millis() as u64;
    let (expired, forget) = app.store.due(now_ms, now_ms.saturating_sub(remember));
    let mut n = 0;
    for sha in &expired {
        match app.store.expire(sha, now_ms).await {
            Ok(true) => {
                app.cache.invalidate(sha);
                n += 1;
            }
            Ok(false) => {}
            Err(e) => tracing::error!(blob = %hex::encode(sha), error = %e, "cannot expire"),
        }
    }
    let mut m = 0;
    for sha in &forget {
        match app.store.forget(sha).await {
            Ok(()) => m += 1,
            Err(e) => tracing::error!(blob = %hex::encode(sha), error = %e, "cannot forget"),
        }
    }
    app.limits.prune(Instant::now());
    (n, m)
}

pub async fn run(app: Arc<App>, shutdown: CancellationToken) {
    let every = app.expiry.sweep_interval;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let (expired, forgotten) = sweep(&app, common::fsutil::now_ms()).await;
        if expired + forgotten > 0 {
            tracing::info!(expired, forgotten, "swept");
        }
    }
}
