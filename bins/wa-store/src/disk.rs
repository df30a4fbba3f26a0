//! The data directory's free space, watched so that a disk filling up
//! stops new items before it is full (docs/OPERATIONS.md, "The store's
//! disk").
//!
//! [`watch`] reads the free space of `data_dir`'s file system every
//! [`CHECK_EVERY`] (and the journal counts what is appended in between
//! against it). Below `[disk] min_free` the journal refuses new items
//! ([`crate::journal::Refusal::LowSpace`]: senders get `STORAGE_FULL` with a
//! retry delay, `/readyz` says not ready); deletes, the write-back of what is
//! already held and a restart's replay still have the reserve to work in.
//! Once the free space is back above [`resume_at`] the journal admits items
//! again, with no restart: nothing failed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::reminder::{Reminder, Say};
use tokio_util::sync::CancellationToken;

use crate::journal::{Journal, REMIND_EVERY};
use crate::metrics::Metrics;

/// How often the free space is read.
pub const CHECK_EVERY: Duration = Duration::from_millis(250);

/// Free bytes of the file system holding `dir` (for an unprivileged
/// process: what it may still write).
pub fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    let st = nix::sys::statvfs::statvfs(dir).map_err(std::io::Error::from)?;
    #[allow(clippy::useless_conversion)] // (the types differ between platforms)
    let (avail, frag) = (
        u64::from(st.blocks_available()),
        u64::from(st.fragment_size()),
    );
    Ok(avail.saturating_mul(frag))
}

/// Free space at which a store short of space admits items again: a
/// quarter above `min_free`, so that the store does not flap at the line.
pub fn resume_at(min_free: u64) -> u64 {
    min_free.saturating_add(min_free / 4)
}

/// Whether the store is short of space, given what it was before.
fn low(was_low: bool, free: u64, min_free: u64) -> bool {
    if was_low {
        free < resume_at(min_free)
    } else {
        free < min_free
    }
}

/// Watches `dir` until `stop`, telling `journal` whether it is short of space.
pub async fn watch(
    dir: PathBuf,
    min_free: u64,
    journal: Arc<Journal>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let unreadable = Reminder::new(REMIND_EVERY);
    let short = Reminder::new(REMIND_EVERY);
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_low = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let d = dir.clone();
        let free = match tokio::task::spawn_blocking(move || free_bytes(&d)).await {
            Ok(Ok(free)) => {
                unreadable.clear();
                free
            }
            Ok(Err(e)) => {
                if unreadable.hit(std::time::Instant::now()) == Say::First {
                    tracing::warn!(error = %e, dir = %dir.display(), "cannot read the data directory's free space; logged once until it can");
                }
                continue;
            }
            Err(_) => continue,
        };
        metrics
            .disk_free_bytes
            .store(free, std::sync::atomic::Ordering::Relaxed);
        let now_low = low(was_low, free, min_free);
        if now_low {
            match short.hit(std::time::Instant::now()) {
                Say::First => tracing::error!(
                    free,
                    min_free,
                    resume_at = resume_at(min_free),
                    "the data directory is short of space: new messages are refused with STORAGE_FULL until it has room again (logged again once a minute)"
                ),
                Say::Again { .. } => tracing::error!(
                    free,
                    min_free,
                    refused = metrics
                        .storage_full
                        .load(std::sync::atomic::Ordering::Relaxed),
                    "the data directory is still short of space"
                ),
                Say::Quiet => {}
            }
        } else if was_low {
            short.clear();
            tracing::info!(
                free,
                "the data directory has room again: new messages are stored"
            );
        }
        journal.space_checked(free, min_free, now_low);
        was_low = now_low;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn low_below_min_free_and_again_only_above_a_quarter_more() {
        let min = 1000;
        assert!(!low(false, 1000, min));
        assert!(low(false, 999, min));
        assert!(low(true, 1000, min));
        assert!(low(true, 1249, min));
        assert!(!low(true, 1250, min));
    }

    #[test]
    fn free_bytes_of_a_real_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert!(free_bytes(dir.path()).unwrap() > 0);
    }
}
