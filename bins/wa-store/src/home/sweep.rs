//! The sweeper: expiry of undelivered items and old dedupe entries in the
//! engine, and the mailbox size report.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{Home, HomeClosed, Op};
use crate::metrics::Metrics;
use crate::storage::Storage;

/// Deletes undelivered items older than `expire_after`, every `interval`,
/// until `stop`. Runs the scan off the async threads and hands deletions to
/// the shards, which own the mailboxes.
pub async fn sweep(
    storage: Arc<dyn Storage>,
    home: Home,
    expire_after: std::time::Duration,
    interval: std::time::Duration,
    report: (Arc<Metrics>, std::path::PathBuf),
    mut now: SweepRequests,
    stop: CancellationToken,
) {
    let (metrics, engine_dir) = report;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // A round on the timer, or asked for (`wactl expire --now`), whose
        // asker hears how many items went.
        let asked = tokio::select! {
            _ = tick.tick() => None,
            Some(reply) = now.recv() => Some(reply),
            () = stop.cancelled() => return,
        };
        let before = common::fsutil::now_ms().saturating_sub(expire_after.as_millis() as u64);
        match expire_before(&storage, &home, before, &stop).await {
            Ok(n) => {
                if n > 0 {
                    tracing::info!(items = n, "expired undelivered items");
                }
                if let Some(reply) = asked {
                    let _ = reply.send(n as u64);
                }
            }
            Err(HomeClosed) => return,
        }
        match expire_dedupe_before(&storage, before, &stop).await {
            Ok(0) => {}
            Ok(n) => {
                Metrics::add(&metrics.dedupe_expired, n);
                tracing::info!(entries = n, "dropped old dedupe entries");
            }
            Err(HomeClosed) => return,
        }
        let st = Arc::clone(&storage);
        let m = Arc::clone(&metrics);
        let dir = engine_dir.clone();
        let _ = tokio::task::spawn_blocking(move || report_sizes(&*st, &m, &dir)).await;
    }
}

/// Requests for a sweep round now; each gets the number of items expired.
pub type SweepRequests = tokio::sync::mpsc::Receiver<tokio::sync::oneshot::Sender<u64>>;

/// How many of the largest mailboxes the metrics name.
const LARGEST: usize = 10;

/// Mailbox length histogram, the largest mailboxes and the engine's disk use,
/// into `metrics`.
fn report_sizes(storage: &dyn Storage, metrics: &Metrics, engine_dir: &std::path::Path) {
    use crate::metrics::{LENGTH_BUCKETS, MailboxReport};
    let mut r = MailboxReport::default();
    let mut largest: Vec<(String, u64, u64)> = Vec::new();
    let visited = storage.visit_sizes(&mut |user, size| {
        if size.items == 0 {
            return;
        }
        for (i, le) in LENGTH_BUCKETS.iter().enumerate() {
            if size.items <= *le {
                r.buckets[i] += 1;
            }
        }
        if largest.len() < LARGEST || largest.last().is_some_and(|l| l.1 < size.items) {
            largest.push((user.to_owned(), size.items, size.bytes));
            largest.sort_by_key(|l| std::cmp::Reverse(l.1));
            largest.truncate(LARGEST);
        }
    });
    if let Err(e) = visited {
        tracing::warn!(error = %e, "cannot read mailbox sizes");
        return;
    }
    r.largest = largest;
    *metrics.mailboxes.lock().unwrap_or_else(|p| p.into_inner()) = r;
    metrics
        .engine_disk_bytes
        .store(dir_bytes(engine_dir), std::sync::atomic::Ordering::Relaxed);
}

/// Bytes of the files under `dir`.
pub fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Drops the engine's dedupe entries of originals stored before
/// `before_ms`, a page at a time off the async threads; returns how many.
/// (A resend older than the expiry age is stored again: the client library
/// still removes the duplicate.) `Err` only if stopped.
pub async fn expire_dedupe_before(
    storage: &Arc<dyn Storage>,
    before_ms: u64,
    stop: &CancellationToken,
) -> Result<u64, HomeClosed> {
    const PAGE: usize = 4096;
    let mut after: Option<Vec<u8>> = None;
    let mut total = 0;
    loop {
        if stop.is_cancelled() {
            return Err(HomeClosed);
        }
        let st = Arc::clone(storage);
        let from = after.take();
        let page =
            tokio::task::spawn_blocking(move || st.expire_dedupe(before_ms, from.as_deref(), PAGE))
                .await
                .expect("dedupe expiry does not panic");
        match page {
            Ok(p) => {
                total += p.deleted;
                match p.next {
                    Some(n) => after = Some(n),
                    None => return Ok(total),
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "dedupe expiry failed");
                return Ok(total);
            }
        }
    }
}

/// Hands every engine item stored before `before_ms` to its shard for
/// deletion; returns how many were found.
pub async fn expire_before(
    storage: &Arc<dyn Storage>,
    home: &Home,
    before_ms: u64,
    stop: &CancellationToken,
) -> Result<usize, HomeClosed> {
    const PAGE: usize = 1024;
    let mut after = None;
    let mut total = 0usize;
    loop {
        let st = Arc::clone(storage);
        let from = after.clone();
        let page = tokio::task::spawn_blocking(move || st.expired(before_ms, from.as_ref(), PAGE))
            .await
            .expect("expiry scan does not panic");
        let page = match page {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "expiry scan failed");
                return Ok(total);
            }
        };
        let full = page.len() == PAGE;
        after = page.last().cloned();
        total += page.len();
        let mut by_user: HashMap<String, Vec<u64>> = HashMap::new();
        for e in page {
            by_user.entry(e.user).or_default().push(e.seq);
        }
        for (user, seqs) in by_user {
            if stop.is_cancelled() {
                return Err(HomeClosed);
            }
            home.submit(Op::Expire { user, seqs }).await?;
        }
        if !full {
            return Ok(total);
        }
    }
}
