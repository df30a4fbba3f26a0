//! Write-back: the task that, every quarter of the sync delay, has the shards
//! hand over the cached items that lingered, writes them to the engine off
//! the shards, flushes it, and releases the journal segments nothing needs
//! any more.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::proto::Envelope;
use common::reminder::{Reminder, Say};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::{Home, HomeClosed, Op};
use crate::journal::Journal;
use crate::metrics::Metrics;
use crate::storage::Storage;

/// One user's part of a write-back slice: its items to write (with their
/// dedupe entries) and then, if set, its sequence counter.
#[derive(Debug)]
pub struct UserBatch {
    pub user: String,
    pub items: Vec<(u64, Envelope)>,
    pub last_seq: Option<u64>,
}

/// What a shard hands the write-back task for one slice.
#[derive(Debug, Default)]
pub struct Slice {
    pub batch: Vec<UserBatch>,
    /// On the shard's last slice: when its oldest item not in this slice
    /// and still only in memory was appended.
    pub oldest: Option<Instant>,
    /// The shard stopped at `max` items: there is more to write this round.
    pub more: bool,
    /// A user due in this slice was left out (its mailbox size could not
    /// be read): the round must not count as covering the journal.
    pub incomplete: bool,
}

/// How the engine writes of one [`UserBatch`] went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub user: String,
    /// The items (if any) are in the engine.
    pub items: bool,
    /// The sequence counter (if any) is in the engine.
    pub last_seq: bool,
}

// Tests: set on the thread that writes a write-back slice, so that a test
// engine can hold those writes back and see what the shards do meanwhile.
#[cfg(test)]
thread_local! {
    pub static WRITING_BACK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Writes a slice to the engine (on a blocking thread: this is where a
/// slow engine waits). A user whose items fail keeps them in memory, and
/// its counter is not written either.
pub fn write_slice(storage: &dyn Storage, batch: &[UserBatch]) -> Vec<Outcome> {
    batch
        .iter()
        .map(|b| {
            let items = b.items.is_empty() || {
                let keyed: Vec<(u64, &Envelope, crate::storage::DedupeKey<'_>)> = b
                    .items
                    .iter()
                    .map(|(seq, e)| {
                        let key = crate::storage::DedupeKey {
                            to: &b.user,
                            from: &e.from,
                            kind: e.item_kind(),
                            id: &e.id,
                        };
                        (*seq, e, key)
                    })
                    .collect();
                match storage.append_batch(&b.user, &keyed) {
                    Ok(()) => {
                        if let Some(failures) = WRITE_FAILURES.clear() {
                            tracing::info!(failures, "write-back works again");
                        }
                        true
                    }
                    Err(e) => {
                        match WRITE_FAILURES.hit(std::time::Instant::now()) {
                            Say::First => tracing::error!(error = %e, items = keyed.len(), "write-back failed; the items stay in memory (logged again once a minute while it fails)"),
                            Say::Again { count } => tracing::error!(error = %e, failures = count, "write-back still fails; the items stay in memory"),
                            Say::Quiet => {}
                        }
                        false
                    }
                }
            };
            let last_seq = match b.last_seq {
                Some(seq) if items => match storage.set_last_seq(&b.user, seq) {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot record a sequence counter");
                        false
                    }
                },
                Some(_) => false,
                None => true,
            };
            Outcome {
                user: b.user.clone(),
                items,
                last_seq,
            }
        })
        .collect()
}

/// What a shard wrote to the engine in a write-back round.
#[derive(Debug, Default)]
pub struct RoundReport {
    /// Items written, by journal segment.
    pub written: HashMap<u64, u64>,
    /// When the oldest item still only in memory was appended.
    pub oldest: Option<Instant>,
    /// The shard stopped at `max` items: there is more to write this round.
    pub more: bool,
    /// Something due was not written (an engine error, or a shard an
    /// operation panicked on): the engine may lack a sequence counter the
    /// journal's older segments hold, so they must stay.
    pub incomplete: bool,
}

/// Items a shard writes to the engine per write-back slice. A round is cut
/// into slices so that the appends queued behind it wait for one slice (a
/// few milliseconds of engine writes), never for a whole round.
pub const WRITE_BACK_SLICE: usize = 1000;

impl Home {
    /// Runs one write-back round on every shard and gathers their reports:
    /// slice by slice, each shard hands over its items, `storage` takes them
    /// on a blocking thread while the shards go on with their operations,
    /// and each shard then drops what was written.
    ///
    /// A shard an operation panicked on is left out (its state may be half
    /// changed, so none of it goes to the engine) and makes the round
    /// incomplete: the journal keeps its items for the next start to replay.
    pub async fn write_back_round(
        &self,
        storage: &Arc<dyn Storage>,
        due: Instant,
        all: bool,
    ) -> RoundReport {
        let mut total = RoundReport::default();
        // Shards still writing; each gets its next slice once the last one
        // is written and dropped.
        let shards = &self.0.shards;
        let mut busy: Vec<usize> = (0..shards.len()).collect();
        while !busy.is_empty() {
            let mut slices = Vec::with_capacity(busy.len());
            for &i in &busy {
                let (reply, rx) = oneshot::channel();
                let op = Op::WriteBack {
                    due,
                    all,
                    max: self.0.write_back_slice,
                    reply,
                };
                if shards[i].run(Some(op)).is_err() {
                    total.incomplete = true;
                    continue;
                }
                slices.push((i, rx));
            }
            busy.clear();
            for (i, rx) in slices {
                // (A reply channel closes unanswered only when the shard
                // panicked.)
                let Ok(slice) = rx.await else {
                    total.incomplete = true;
                    continue;
                };
                let st = Arc::clone(storage);
                let batch = slice.batch;
                let outcomes = if batch.is_empty() {
                    Vec::new()
                } else {
                    tokio::task::spawn_blocking(move || {
                        #[cfg(test)]
                        WRITING_BACK.set(true);
                        let outcomes = write_slice(&*st, &batch);
                        #[cfg(test)]
                        WRITING_BACK.set(false);
                        outcomes
                    })
                    .await
                    .expect("write-back does not panic")
                };
                let outcomes_wrote = outcomes.iter().any(|o| o.items);
                total.incomplete |=
                    slice.incomplete || outcomes.iter().any(|o| !(o.items && o.last_seq));
                let (reply, rx) = oneshot::channel();
                let dropped = match shards[i].run(Some(Op::WrittenBack { outcomes, reply })) {
                    Ok(()) => rx.await.ok(),
                    Err(HomeClosed) => None,
                };
                // (What a poisoned shard wrote is in the engine but counts
                // for nothing: its segments stay, and replay skips the
                // items as duplicates.)
                let Some(dropped) = dropped else {
                    total.incomplete = true;
                    continue;
                };
                for (seg, n) in dropped {
                    *total.written.entry(seg).or_default() += n;
                }
                // (A slice the engine refused entirely ends the shard's
                // round: the next round tries again.)
                if slice.more && outcomes_wrote {
                    busy.push(i);
                } else {
                    // A shard's oldest counts once it wrote all it had due.
                    total.oldest = match (total.oldest, slice.oldest) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                }
            }
        }
        total
    }
}

/// Most cache bytes the shutdown writes to the engine (more stays in the
/// journal for the next start to replay).
const FINAL_WRITE_BACK_MAX: u64 = 32 << 20;

/// The write-back task: every quarter of the sync delay, asks every shard to
/// write the items that lingered to the engine, flushes the engine, then
/// settles those items' journal segments and deletes the segments nothing
/// needs any more. On `stop` it runs one last round, which writes the whole
/// cache if it is small (see [`FINAL_WRITE_BACK_MAX`]).
pub async fn write_back(
    home: Home,
    storage: Arc<dyn Storage>,
    journal: Arc<Journal>,
    sync_delay: Duration,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval((sync_delay / 4).max(Duration::from_millis(20)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let last = tokio::select! {
            _ = tick.tick() => false,
            () = stop.cancelled() => true,
        };
        // At shutdown a small cache is written out so the next start replays
        // nothing; a large one is left to the journal, which already holds it,
        // so that stopping never outlasts the grace period.
        let dirty = metrics
            .cache_bytes
            .load(std::sync::atomic::Ordering::Relaxed);
        let all = last && dirty <= FINAL_WRITE_BACK_MAX;
        if last && !all {
            tracing::info!(
                bytes = dirty,
                "leaving the cache to the journal; the next start replays it"
            );
        }
        if all && let Err(e) = journal.seal() {
            tracing::error!(error = %e, "cannot seal the journal at shutdown");
        }
        write_back_once(&home, &storage, &journal, sync_delay, all, &metrics).await;
        if last {
            return;
        }
    }
}

/// One write-back round: items older than `sync_delay` (all with `all`) go
/// to the engine, the engine is flushed, journal segments settle and go.
pub async fn write_back_once(
    home: &Home,
    storage: &Arc<dyn Storage>,
    journal: &Arc<Journal>,
    sync_delay: Duration,
    all: bool,
    metrics: &Metrics,
) {
    let begun = journal.round_begin();
    let now = Instant::now();
    let due = now.checked_sub(sync_delay).unwrap_or(now);
    let report = home.write_back_round(storage, due, all).await;
    let st = Arc::clone(storage);
    let flushed = tokio::task::spawn_blocking(move || st.flush())
        .await
        .expect("engine flush does not panic");
    Metrics::add(&metrics.engine_flushes, 1);
    let lag = report
        .oldest
        .map_or(0, |o| now.saturating_duration_since(o).as_millis() as u64);
    metrics
        .oldest_dirty_ms
        .store(lag, std::sync::atomic::Ordering::Relaxed);
    let flushed_ok = flushed.is_ok();
    match flushed {
        Ok(()) => {
            for (segment, n) in report.written {
                journal.settle(segment, n);
            }
            // (Older segments count as covered only if every counter and
            // item due made it; otherwise a later round covers them.)
            if !report.incomplete {
                journal.round_flushed(begun);
            }
            // Nothing goes once a shard panicked: the operation that
            // panicked may have counted items as settled before it stopped
            // halfway (a delete settles its items before it journals
            // itself), and the next start replays the journal anyway.
            if home.panicked() {
                return;
            }
            let j = Arc::clone(journal);
            let released = tokio::task::spawn_blocking(move || j.release())
                .await
                .expect("releasing journal segments does not panic");
            match released {
                Ok(n) if n > 0 => tracing::debug!(segments = n, "journal segments released"),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "cannot delete a journal segment"),
            }
        }
        // The items written stay counted in their segments, which are then
        // kept: the journal still covers them.
        Err(e) => match FLUSH_FAILURES.hit(std::time::Instant::now()) {
            Say::First => {
                tracing::error!(error = %e, "engine flush failed; journal segments kept (logged again once a minute while it fails)")
            }
            Say::Again { count } => {
                tracing::error!(error = %e, failures = count, "engine flushes still fail; journal segments kept")
            }
            Say::Quiet => {}
        },
    }
    if flushed_ok && let Some(failures) = FLUSH_FAILURES.clear() {
        tracing::info!(failures, "engine flushes work again");
    }
}

/// Failed writes of items to the engine, and failed engine flushes, logged
/// once and then once a minute (a full disk fails every round).
static WRITE_FAILURES: Reminder = Reminder::new(crate::journal::REMIND_EVERY);
static FLUSH_FAILURES: Reminder = Reminder::new(crate::journal::REMIND_EVERY);
