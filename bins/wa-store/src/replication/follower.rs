//! The secondary's end: follow the island's primary, keep a copy of its
//! journal and engine, serve nothing, until the map names this node
//! primary (docs/ARCHITECTURE.md, "Replication").

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use common::link::{Follow, LinkDown, LinkUp, ReplicaAck, link_down, link_up};
use common::link_dial::Dialer;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{blocking, frames};
use crate::error::StoreError;
use crate::flusher::{Commit, FlushFn};
use crate::journal::Journal;
use crate::ownership::Ownership;
use crate::storage::Storage;

/// The marker of a copy that is not (yet) complete: a secondary's data
/// directory from the start of a catch-up until its end. A store refuses
/// to serve as primary while it is there.
pub const INCOMPLETE: &str = "REPLICA_INCOMPLETE";
/// The marker of a data directory that holds only a copy made by following
/// (written when following begins, removed at promotion): at the next
/// start as a secondary it is emptied rather than set aside
/// (`crate::retire`).
pub const REPLICA: &str = "REPLICA";

/// How long a connection attempt to the primary may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between attempts.
const RETRY: Duration = Duration::from_secs(1);

/// How following ended.
pub enum Followed {
    /// Shut down.
    Stopped,
    /// The map names this node primary, and its copy is complete: its
    /// journal is synced and closed; replay it and serve.
    Promoted,
}

/// Everything a secondary needs.
pub struct Follower {
    pub storage: Arc<dyn Storage>,
    pub data_dir: PathBuf,
    pub segment_size: u64,
    pub sync_delay: Duration,
    pub dialer: Dialer,
    pub ownership: Arc<Ownership>,
    pub metrics: Arc<crate::metrics::Metrics>,
}

#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("cannot reach the primary: {0}")]
    Dial(String),
    #[error("replication link: {0}")]
    Io(#[from] std::io::Error),
    #[error("replication link: {0}")]
    Read(#[from] common::wire::ReadError),
    #[error("the primary closed the replication link")]
    Closed,
    #[error("the primary sent {0}")]
    Unexpected(String),
    #[error("local storage: {0}")]
    Local(String),
}

impl From<String> for LinkError {
    fn from(s: String) -> Self {
        LinkError::Local(s)
    }
}

/// Follows the primary until promoted or `stop`; reads the map again on
/// every `reload`.
pub async fn follow(
    f: Follower,
    reload: Arc<Notify>,
    stop: CancellationToken,
) -> Result<Followed, StoreError> {
    let marker = f.data_dir.join(INCOMPLETE);
    let mut dirty = false;
    let gauge =
        |g: &std::sync::atomic::AtomicU64, v: u64| g.store(v, std::sync::atomic::Ordering::Relaxed);
    gauge(&f.metrics.following, 1);
    let _stop_following = scopeguard(|| {
        gauge(&f.metrics.following, 0);
        gauge(&f.metrics.follower_caught_up, 0);
    });
    loop {
        if f.ownership.current().primary {
            if marker.exists() {
                return Err(StoreError::ReplicaIncomplete { marker });
            }
            return Ok(Followed::Promoted);
        }
        let promoted = stop.child_token();
        let watcher = tokio::spawn(watch_map(
            Arc::clone(&f.ownership),
            Arc::clone(&reload),
            promoted.clone(),
        ));
        // (Returns, with the journal synced and closed, once `promoted`
        // is cancelled: by promotion or by `stop`.)
        let outcome = session(&f, &mut dirty, &marker, &promoted).await;
        watcher.abort();
        if stop.is_cancelled() {
            return Ok(Followed::Stopped);
        }
        if promoted.is_cancelled() {
            continue;
        }
        if let Err(e) = outcome {
            tracing::warn!(error = %e, "following the primary; trying again in 1 s");
        }
        tokio::select! {
            () = tokio::time::sleep(RETRY) => {}
            () = reload.notified() => { reload_map(&f.ownership).await; }
            () = stop.cancelled() => return Ok(Followed::Stopped),
        }
    }
}

async fn reload_map(ownership: &Arc<Ownership>) {
    let o = Arc::clone(ownership);
    match tokio::task::spawn_blocking(move || o.reload()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::error!(error = %e, "cluster map not reloaded; keeping the current one")
        }
        Err(e) => tracing::error!(error = %e, "cluster map reload task failed"),
    }
}

/// Reads the map on every `reload` and cancels `promoted` once it names
/// this node primary.
async fn watch_map(ownership: Arc<Ownership>, reload: Arc<Notify>, promoted: CancellationToken) {
    loop {
        reload.notified().await;
        reload_map(&ownership).await;
        if ownership.current().primary {
            tracing::info!(
                epoch = ownership.current().epoch(),
                "the cluster map names this node primary"
            );
            promoted.cancel();
            return;
        }
    }
}

/// One connection to the primary: a fresh copy, then the stream. Leaves
/// the journal synced and closed whenever it returns or is dropped.
async fn session(
    f: &Follower,
    dirty: &mut bool,
    marker: &Path,
    quit: &CancellationToken,
) -> Result<(), LinkError> {
    let owned = f.ownership.current();
    let island = &owned.map.islands[owned.island];
    let name = rustls_pki_types::ServerName::try_from(island.server_name.clone())
        .map_err(|_| LinkError::Dial(format!("bad server name {:?}", island.server_name)))?;
    let follow = Follow {
        island: island.name.clone(),
    };
    let dial = tokio::time::timeout(
        DIAL_TIMEOUT,
        f.dialer
            .dial_as(island.primary, name, owned.epoch(), Some(follow)),
    );
    let dialed = tokio::select! {
        d = dial => d,
        () = quit.cancelled() => return Ok(()),
    }
    .map_err(|_| LinkError::Dial(format!("{} did not answer within 5 s", island.primary)))?
    .map_err(|e| LinkError::Dial(format!("{}: {e}", island.primary)))?;
    tracing::info!(primary = %island.primary, node = %dialed.node, "following the primary");
    // A fresh copy every time: what an earlier link left may be behind or
    // ahead of what this one starts from.
    marker_write(marker).map_err(|e| LinkError::Local(e.to_string()))?;
    marker_write(&f.data_dir.join(REPLICA)).map_err(|e| LinkError::Local(e.to_string()))?;
    if *dirty {
        let storage = Arc::clone(&f.storage);
        blocking(move || storage.clear().map_err(|e| e.to_string())).await?;
    }
    *dirty = true;
    f.metrics
        .follower_caught_up
        .store(0, std::sync::atomic::Ordering::Relaxed);
    f.metrics.copy_progress(0, 0);
    let dir = f.data_dir.join("journal");
    let seg = f.segment_size;
    let journal = Arc::new(
        blocking(move || Journal::start_fresh(&dir, seg).map_err(|e| e.to_string())).await?,
    );
    let commit = Arc::new(Commit::new());
    let j = Arc::clone(&journal);
    let flush: FlushFn = Arc::new(move || {
        j.sync().map_err(|e| crate::storage::StorageError::Engine {
            op: "journal sync",
            source: Box::new(e),
        })
    });
    let flusher_stop = CancellationToken::new();
    let flusher = tokio::spawn(Arc::clone(&commit).run(flush, flusher_stop.clone()));
    let applier_stop = CancellationToken::new();
    let mut applier = None;
    let result = tokio::select! {
        r = receive(f, dialed, &journal, &commit, marker, &mut applier, &applier_stop) => r,
        () = quit.cancelled() => Ok(()),
    };
    applier_stop.cancel();
    if let Some(a) = applier {
        let _ = a.await;
    }
    flusher_stop.cancel();
    let _ = flusher.await;
    result
}

async fn receive(
    f: &Follower,
    dialed: common::link_dial::Dialed,
    journal: &Arc<Journal>,
    commit: &Arc<Commit>,
    marker: &Path,
    applier: &mut Option<tokio::task::JoinHandle<()>>,
    applier_stop: &CancellationToken,
) -> Result<(), LinkError> {
    let mut reader = dialed.reader;
    let mut w = dialed.writer;
    let mut scratch = BytesMut::new();
    let mut expected: Option<u64> = None;
    let mut caught_up = false;
    let mut last_report = 0u64;
    loop {
        let frame = reader.read::<LinkDown>().await?;
        let kind = match frame {
            Some(LinkDown { kind: Some(k) }) => k,
            Some(LinkDown { kind: None }) => unreachable!("decode_kinded refuses kindless frames"),
            None => return Err(LinkError::Closed),
        };
        match kind {
            link_down::Kind::Replicate(r) if r.base => {
                // (Unnumbered: they come before the stream's first LSN.)
                check_whole(&r.records)?;
                journal
                    .append_framed(&r.records, 0)
                    .map_err(|e| LinkError::Local(e.to_string()))?;
            }
            link_down::Kind::Replicate(r) => {
                let next = expected.unwrap_or(r.first_lsn);
                if r.first_lsn != next {
                    return Err(LinkError::Unexpected(format!(
                        "records from {} where {next} was next",
                        r.first_lsn
                    )));
                }
                frames::check(&r.records, r.count).map_err(LinkError::Unexpected)?;
                journal
                    .append_framed(&r.records, r.count)
                    .map_err(|e| LinkError::Local(e.to_string()))?;
                expected = Some(next + r.count);
                f.metrics
                    .follower_lsn
                    .store(next + r.count, std::sync::atomic::Ordering::Relaxed);
                if r.sent_at_ms > 0 && r.count > 0 {
                    let lag = common::fsutil::now_ms().saturating_sub(r.sent_at_ms);
                    f.metrics
                        .follower_lag_ms
                        .store(lag, std::sync::atomic::Ordering::Relaxed);
                }
                // Synced soon (the group commit), not before the ack: the
                // level is "in the secondary's memory".
                let _ = commit.ticket();
                ack(&mut w, &mut scratch, next + r.count, caught_up).await?;
            }
            link_down::Kind::SnapshotPage(p) => {
                if p.keys.len() != p.values.len() {
                    return Err(LinkError::Unexpected("a page with unpaired keys".into()));
                }
                let storage = Arc::clone(&f.storage);
                let pairs = p.keys.into_iter().zip(p.values).collect();
                blocking(move || storage.put_raw(pairs).map_err(|e| e.to_string())).await?;
                f.metrics.copy_progress(p.sent_bytes, p.total_bytes);
                let pct = p.sent_bytes * 100 / p.total_bytes.max(1);
                if pct >= last_report + 10 {
                    last_report = pct;
                    tracing::info!(
                        copied = p.sent_bytes,
                        of_about = p.total_bytes,
                        "catching up: {pct}%"
                    );
                }
            }
            link_down::Kind::SnapshotDone(d) => {
                let storage = Arc::clone(&f.storage);
                let fixed = blocking(move || {
                    let n = storage.recount().map_err(|e| e.to_string())?;
                    storage.flush().map_err(|e| e.to_string())?;
                    Ok(n)
                })
                .await?;
                let j = Arc::clone(journal);
                blocking(move || j.sync().map_err(|e| e.to_string())).await?;
                marker_remove(marker).map_err(|e| LinkError::Local(e.to_string()))?;
                caught_up = true;
                f.metrics.copy_progress(0, 0);
                f.metrics
                    .follower_caught_up
                    .store(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(
                    pages = d.pages,
                    recounted = fixed,
                    "caught up with the primary"
                );

                *applier = Some(tokio::spawn(apply_loop(
                    Arc::clone(journal),
                    Arc::clone(&f.storage),
                    f.sync_delay,
                    applier_stop.clone(),
                )));
                ack(&mut w, &mut scratch, expected.unwrap_or(0), true).await?;
                // (Beside `READY`: the line a supervisor or a test waits for.)
                println!("CAUGHT-UP wa-store lsn={}", expected.unwrap_or(0));
            }
            other => {
                return Err(LinkError::Unexpected(
                    format!("{other:?}").chars().take(80).collect(),
                ));
            }
        }
    }
}

/// Checks that `bytes` is whole records with good CRCs, however many.
fn check_whole(bytes: &[u8]) -> Result<(), LinkError> {
    let n = frames::split(bytes, usize::MAX).first().map_or(0, |p| p.1);
    frames::check(bytes, n).map_err(LinkError::Unexpected)
}

async fn ack<W: AsyncWrite + Unpin>(
    w: &mut W,
    scratch: &mut BytesMut,
    lsn: u64,
    caught_up: bool,
) -> Result<(), LinkError> {
    let frame = LinkUp {
        kind: Some(link_up::Kind::ReplicaAck(ReplicaAck { lsn, caught_up })),
    };
    common::wire::write_frame(w, &frame, scratch).await?;
    w.flush().await?;
    Ok(())
}

/// Every `sync_delay`, applies the sealed part of the journal to the
/// engine ([`super::apply::round`]).
async fn apply_loop(
    journal: Arc<Journal>,
    storage: Arc<dyn Storage>,
    every: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let j = Arc::clone(&journal);
        let s = Arc::clone(&storage);
        match tokio::task::spawn_blocking(move || super::apply::round(&j, &*s)).await {
            Ok(Ok(n)) if n > 0 => tracing::debug!(records = n, "applied the stream to the engine"),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "applying the stream to the engine failed; the journal keeps it")
            }
            Err(e) => tracing::error!(error = %e, "the apply round panicked; the journal keeps it"),
        }
    }
}

fn marker_write(marker: &Path) -> std::io::Result<()> {
    common::fsutil::write_atomic(
        marker,
        b"written by wa-store: see docs/OPERATIONS.md, \"Secondaries and failover\"\n",
    )
}

pub(crate) fn marker_remove(marker: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(marker) {
        Ok(()) => match marker.parent() {
            Some(d) => std::fs::File::open(d)?.sync_all(),
            None => Ok(()),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Runs `f` when dropped.
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}
