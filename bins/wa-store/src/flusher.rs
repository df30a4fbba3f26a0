//! Group commit: many appends share one flush, none waits for a flush of its own.
//!
//! Every storage write that must become durable bumps the write generation and
//! takes the new value as its ticket ([`Commit::ticket`]). One flusher task
//! ([`Commit::run`]) reads the generation, flushes, and publishes that
//! generation as covered: a flush that starts after a write returned makes it
//! durable, so every ticket up to the generation read before the flush is
//! released by it. Writes that land during a flush get the next one. A failed
//! flush publishes its generation as failed, and waiters at or below it get an
//! error rather than an acknowledgement.
//!
//! The home's shards (`crate::home`) hold their tickets in order and learn
//! through [`Settled`] which are covered before they send `AppendResult` and
//! push the items.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::reminder::{Reminder, Say};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::storage::StorageError;

/// The flush outcome so far: the highest generation a successful flush
/// covered, and the highest one a failed flush was attempting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Covered {
    ok: u64,
    failed: u64,
    /// The highest generation a flush could not make durable at the
    /// configured level for want of a secondary (`replicated`, with
    /// `when_absent = "refuse"`).
    unavailable: u64,
    /// The flusher has exited; nothing beyond `ok` will ever be covered.
    stopped: bool,
}

/// The first pause after a flush that did not succeed; it doubles while
/// flushes do not...
const FAILED_PAUSE_MIN: Duration = Duration::from_millis(10);
/// ...up to this.
const FAILED_PAUSE_MAX: Duration = Duration::from_secs(1);

/// A flush that did not cover a ticket.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum FlushError {
    #[error("the flush covering this write failed")]
    Failed,
    #[error("the flusher stopped before covering this write")]
    Stopped,
    #[error("no secondary acknowledged this write in time")]
    Unreplicated,
}

/// The function that makes earlier writes durable.
pub type FlushFn = Arc<dyn Fn() -> Result<(), StorageError> + Send + Sync>;

/// Shared group-commit state; cheap to clone through an `Arc`.
pub struct Commit {
    generation: AtomicU64,
    covered_tx: watch::Sender<Covered>,
    covered: watch::Receiver<Covered>,
    flushes: AtomicU64,
    /// The sync thread, once started (see [`Commit::run`]).
    thread: OnceLock<std::thread::Thread>,
    stopping: AtomicBool,
    /// Failed flushes, logged once and then once a minute.
    failures: Reminder,
    /// The least time from one flush's start to the next's (see
    /// [`Commit::with_interval`]).
    interval: Duration,
    /// The sync thread is parked with nothing to flush: a ticket must wake
    /// it. While it flushes or waits out the interval, tickets do not wake
    /// it (it reads the generation when it is done), so a busy store pays
    /// one wake-up per flush, not one per append.
    idle: AtomicBool,
}

impl Default for Commit {
    fn default() -> Self {
        Self::new()
    }
}

impl Commit {
    /// Flushes start the moment tickets wait (no interval).
    pub fn new() -> Commit {
        Commit::with_interval(Duration::ZERO)
    }

    /// A flush starts no sooner than `interval` after the previous one
    /// started if that one covered more than one ticket (writes from many
    /// writers at once). A ticket taken after a quiet spell, or by a lone
    /// writer waiting for each write before the next, is flushed at once;
    /// under load the flushes (each a `fdatasync` and wake-ups of the sync
    /// thread and of the shards) are at most `1 / interval` a second, each
    /// covering more tickets, for at most `interval` more latency
    /// (`[journal] commit_interval`).
    pub fn with_interval(interval: Duration) -> Commit {
        let (covered_tx, covered) = watch::channel(Covered::default());
        Commit {
            generation: AtomicU64::new(0),
            covered_tx,
            covered,
            flushes: AtomicU64::new(0),
            thread: OnceLock::new(),
            stopping: AtomicBool::new(false),
            failures: Reminder::new(crate::journal::REMIND_EVERY),
            interval,
            idle: AtomicBool::new(false),
        }
    }

    /// Call after a write returned: the ticket a flush must cover for that
    /// write to be durable. Wakes the flusher.
    pub fn ticket(&self) -> u64 {
        let t = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        self.wake_if_idle();
        t
    }

    /// A ticket covering every write that already returned, without counting a
    /// new write (for answers that rest on an earlier write, such as a
    /// duplicate whose original may not be flushed yet).
    pub fn current(&self) -> u64 {
        let t = self.generation.load(Ordering::SeqCst);
        if t > self.covered.borrow().ok {
            self.wake_if_idle();
        }
        t
    }

    /// How many flushes have been run (successful or not).
    pub fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }

    /// A handle for tasks that keep many tickets and want to learn, without a
    /// task per ticket, which of them are settled (see [`Settled`]).
    pub fn settled(&self) -> Settled {
        Settled(self.covered.clone())
    }

    /// Waits until a flush that started after `ticket`'s write has returned.
    pub async fn wait(&self, ticket: u64) -> Result<(), FlushError> {
        let mut rx = self.covered.clone();
        loop {
            let c = *rx.borrow_and_update();
            if c.ok >= ticket {
                return Ok(());
            }
            if c.failed >= ticket {
                return Err(FlushError::Failed);
            }
            if c.unavailable >= ticket {
                return Err(FlushError::Unreplicated);
            }
            if c.stopped || rx.changed().await.is_err() {
                return Err(FlushError::Stopped);
            }
        }
    }

    /// The flusher: flushes whenever tickets wait, until `stop`, then runs
    /// one last flush for anything written before it.
    ///
    /// The flushes run on a thread of their own, which a ticket wakes
    /// directly: a flush starts the moment the last one returned, never
    /// after waiting for a runtime worker busy with links and shards (that
    /// wait, twice per flush through `spawn_blocking`, was a millisecond or
    /// more of the 99th percentile of an append). This future only waits for
    /// that thread; dropping it stops the thread too.
    pub async fn run(self: Arc<Self>, flush: FlushFn, stop: CancellationToken) {
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let me = Arc::clone(&self);
        let spawned = std::thread::Builder::new()
            .name("journal-sync".into())
            .spawn(move || {
                // Known before the first look at the generation, so that a
                // ticket either is seen by that look or wakes the thread.
                let _ = me.thread.set(std::thread::current());
                std::sync::atomic::fence(Ordering::SeqCst);
                // However the loop ends, even by a panic outside the flush
                // (which is caught), nothing beyond `ok` will be covered:
                // waiting appends then fail instead of waiting forever.
                // (Marked before `done_tx` goes, so that `run` returns only
                // after; on unwinding, locals drop before captures too.)
                let stopped = MarkStopped(&me);
                me.sync_loop(&flush);
                drop(stopped);
                drop(done_tx);
            });
        match spawned {
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "cannot start the journal sync thread; refusing appends");
                self.covered_tx.send_modify(|c| c.stopped = true);
                return;
            }
        }
        let _stop_on_drop = StopOnDrop(&self);
        stop.cancelled().await;
        self.stopping.store(true, Ordering::SeqCst);
        self.wake();
        let _ = done_rx.await;
    }

    /// Tests: runs one flush of every ticket taken so far on the calling
    /// thread, as the sync thread would, with no sync thread (never call
    /// [`Commit::run`] on the same `Commit`). The shard's model test decides
    /// this way when each flush happens and how it ends.
    #[cfg(test)]
    pub(crate) fn flush_now(&self, flush: &FlushFn) {
        let target = self.generation.load(Ordering::SeqCst);
        self.flush_to(target, flush);
    }

    /// Wakes the sync thread if it is parked for want of tickets (pairs
    /// with the `idle` store and generation load in [`Commit::sync_loop`]:
    /// either that load sees this ticket or this swap sees `idle`).
    /// (A load first: a busy store's tickets then only read the flag's
    /// cache line instead of each writing it.)
    fn wake_if_idle(&self) {
        if self.idle.load(Ordering::SeqCst) && self.idle.swap(false, Ordering::SeqCst) {
            self.wake();
        }
    }

    fn wake(&self) {
        let thread = self.thread.get().or_else(|| {
            // Not started yet, or just starting: pairs with the fence after
            // the thread records itself (its first look at the generation
            // then sees this ticket).
            std::sync::atomic::fence(Ordering::SeqCst);
            self.thread.get()
        });
        if let Some(t) = thread {
            t.unpark();
        }
    }

    /// The sync thread's loop. Before it parks for want of tickets it marks
    /// itself `idle` and reads the generation again, so a ticket taken
    /// meanwhile is either seen or wakes it (and `park` returns at once if
    /// that wake came first).
    ///
    /// A failed flush fails the tickets it covered (their waiters get an
    /// error), and the flush is tried again for them: an answer that rests
    /// on earlier writes (a duplicate, [`Commit::current`]) takes no ticket
    /// of its own and needs a later flush to succeed. After a failure, or a
    /// flush without the secondary, the next one waits a little, doubling
    /// up to [`FAILED_PAUSE_MAX`]: a disk that fails every write costs a
    /// few attempts a second, not a core (it was 233,000 a second, each
    /// logged).
    fn sync_loop(&self, flush: &FlushFn) {
        let mut pause = Duration::ZERO;
        let mut last_start: Option<Instant> = None;
        let mut last_target = 0;
        let mut last_batch = 0;
        loop {
            let target = self.generation.load(Ordering::SeqCst);
            if target > self.covered.borrow().ok {
                if !pause.is_zero() && !self.stopping.load(Ordering::SeqCst) {
                    std::thread::park_timeout(pause);
                }
                // Until the interval since the last start has passed, if
                // that flush covered more than one ticket (a lone writer
                // waiting for each append before the next is never held
                // back); a stop ends the wait, `park_timeout` may return
                // early.
                if let Some(started) = last_start.filter(|_| last_batch > 1) {
                    let due = started + self.interval;
                    loop {
                        let now = Instant::now();
                        if now >= due || self.stopping.load(Ordering::SeqCst) {
                            break;
                        }
                        std::thread::park_timeout(due - now);
                    }
                }
                // Tickets taken during the wait ride along.
                let target = self.generation.load(Ordering::SeqCst);
                if !self.interval.is_zero() {
                    last_start = Some(Instant::now());
                    last_batch = target - last_target;
                }
                last_target = target;
                pause = if self.flush_to(target, flush) {
                    Duration::ZERO
                } else {
                    (pause * 2).clamp(FAILED_PAUSE_MIN, FAILED_PAUSE_MAX)
                };
                continue;
            }
            if self.stopping.load(Ordering::SeqCst) {
                break;
            }
            self.idle.store(true, Ordering::SeqCst);
            let target = self.generation.load(Ordering::SeqCst);
            if target <= self.covered.borrow().ok && !self.stopping.load(Ordering::SeqCst) {
                std::thread::park();
            }
            self.idle.store(false, Ordering::SeqCst);
        }
        // (Always: records journaled without a ticket of their own, such as
        // deletes, reach the disk with it.)
        let target = self.generation.load(Ordering::SeqCst);
        self.flush_to(target, flush);
    }

    /// Flushes every write up to `target`; false if it did not make them
    /// durable (failed, or no secondary acknowledged them).
    fn flush_to(&self, target: u64, flush: &FlushFn) -> bool {
        self.flushes.fetch_add(1, Ordering::Relaxed);
        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| flush()))
            .unwrap_or_else(|_| {
                Err(StorageError::Engine {
                    op: "flush",
                    source: "the flush panicked".into(),
                })
            });
        match res {
            Ok(()) => {
                if let Some(failed) = self.failures.clear() {
                    tracing::info!(failed, "flushes succeed again");
                }
                self.covered_tx.send_modify(|c| c.ok = c.ok.max(target));
                true
            }
            Err(StorageError::Unreplicated) => {
                self.covered_tx
                    .send_modify(|c| c.unavailable = c.unavailable.max(target));
                false
            }
            Err(e) => {
                match self.failures.hit(std::time::Instant::now()) {
                    Say::First => {
                        tracing::error!(error = %e, generation = target, "flush failed; failing the appends it covered (logged again once a minute while flushes fail)")
                    }
                    Say::Again { count } => {
                        tracing::error!(error = %e, failed = count, "flushes still fail")
                    }
                    Say::Quiet => {}
                }
                self.covered_tx
                    .send_modify(|c| c.failed = c.failed.max(target));
                false
            }
        }
    }
}

/// Marks the flusher stopped when the sync thread's loop ends, by return or
/// by unwinding.
struct MarkStopped<'a>(&'a Commit);

impl Drop for MarkStopped<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            tracing::error!("the journal sync thread panicked; appends fail until a restart");
        }
        self.0.covered_tx.send_modify(|c| c.stopped = true);
    }
}

/// Stops the sync thread when the future waiting for it goes away.
struct StopOnDrop<'a>(&'a Commit);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.stopping.store(true, Ordering::SeqCst);
        self.0.wake();
    }
}

/// Follows flush outcomes for a task holding tickets in rising order.
pub struct Settled(watch::Receiver<Covered>);

impl Settled {
    /// The outcome for `ticket`, or `None` while no flush has settled it.
    pub fn outcome(&self, ticket: u64) -> Option<Result<(), FlushError>> {
        let c = *self.0.borrow();
        if c.ok >= ticket {
            Some(Ok(()))
        } else if c.failed >= ticket {
            Some(Err(FlushError::Failed))
        } else if c.unavailable >= ticket {
            Some(Err(FlushError::Unreplicated))
        } else if c.stopped {
            Some(Err(FlushError::Stopped))
        } else {
            None
        }
    }

    /// Resolves when a flush settled more tickets. Cancel safe. Never resolves
    /// once the flusher has stopped.
    pub async fn changed(&mut self) {
        if self.0.borrow().stopped || self.0.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counting(delay: Duration, fail: Arc<AtomicBool>) -> (FlushFn, Arc<AtomicU64>) {
        let n = Arc::new(AtomicU64::new(0));
        let n2 = Arc::clone(&n);
        let f: FlushFn = Arc::new(move || {
            n2.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(delay);
            if fail.load(Ordering::SeqCst) {
                Err(StorageError::Corrupt {
                    what: "injected".into(),
                })
            } else {
                Ok(())
            }
        });
        (f, n)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_waiters_share_few_flushes() {
        let commit = Arc::new(Commit::new());
        let (f, count) = counting(Duration::from_millis(5), Arc::default());
        let stop = CancellationToken::new();
        let flusher = tokio::spawn(Arc::clone(&commit).run(f, stop.clone()));
        const APPENDS: u64 = 2000;
        let mut tasks = Vec::new();
        for _ in 0..APPENDS {
            let c = Arc::clone(&commit);
            tasks.push(tokio::spawn(async move {
                let t = c.ticket();
                c.wait(t).await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let flushes = count.load(Ordering::SeqCst);
        assert!(flushes >= 1);
        assert!(
            flushes < APPENDS / 10,
            "{flushes} flushes for {APPENDS} appends"
        );
        assert_eq!(commit.flushes(), flushes);
        stop.cancel();
        flusher.await.unwrap();
    }

    /// `[journal] commit_interval`: flushes of several tickets each are
    /// spaced by the interval, a lone writer is not held back by it, and a
    /// stop ends the wait for it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_commit_interval_spaces_shared_flushes_only() {
        const INTERVAL: Duration = Duration::from_millis(100);
        let commit = Arc::new(Commit::with_interval(INTERVAL));
        let (f, count) = counting(Duration::ZERO, Arc::default());
        let stop = CancellationToken::new();
        let flusher = tokio::spawn(Arc::clone(&commit).run(f, stop.clone()));
        let bound = Duration::from_secs(10);

        // Three writers, each taking its next ticket as soon as the last is
        // flushed, for WINDOW: with an instant flush and no interval that is
        // thousands of flushes. Spaced, a flush covering the others' waiting
        // tickets comes at most once an INTERVAL (a flush that raced ahead
        // of them and covered one ticket is followed by at most one more
        // before the spacing holds again: twice the count, plus slack).
        const WINDOW: Duration = Duration::from_millis(700);
        let began = Instant::now();
        let writers: Vec<_> = (0..3)
            .map(|_| {
                let c = Arc::clone(&commit);
                tokio::spawn(async move {
                    let mut tickets = 0u64;
                    while began.elapsed() < WINDOW {
                        let t = c.ticket();
                        tokio::time::timeout(bound, c.wait(t))
                            .await
                            .expect("a flush within the bound")
                            .unwrap();
                        tickets += 1;
                    }
                    tickets
                })
            })
            .collect();
        let mut tickets = 0;
        for w in writers {
            tickets += w.await.unwrap();
        }
        let window = began.elapsed();
        let flushes = count.load(Ordering::SeqCst);
        let most = 2 * (window.as_millis() / INTERVAL.as_millis() + 1) as u64 + 2;
        assert!(
            flushes <= most,
            "{flushes} flushes of {tickets} tickets in {window:?}: more than {most} with {INTERVAL:?} between starts"
        );

        // A lone writer: each flush covers its one ticket, and the next
        // starts at once. 100 of them held back would take 10 s, past the
        // test's bound on the whole loop.
        let lone = tokio::time::timeout(bound, async {
            for _ in 0..100 {
                let t = commit.ticket();
                commit.wait(t).await.unwrap();
            }
        });
        lone.await
            .expect("a lone writer's 100 flushes are not spaced by the interval");
        stop.cancel();
        flusher.await.unwrap();

        // A stop ends the wait for the interval, and the last flush covers
        // what waited. Two tickets taken before the sync thread starts are
        // its first flush (two: the next one waits the interval, here far
        // longer than the test's bound).
        let commit = Arc::new(Commit::with_interval(Duration::from_secs(60)));
        let (f, _) = counting(Duration::ZERO, Arc::default());
        let (_, b) = (commit.ticket(), commit.ticket());
        let stop = CancellationToken::new();
        let flusher = tokio::spawn(Arc::clone(&commit).run(f, stop.clone()));
        commit.wait(b).await.unwrap();
        let c = commit.ticket();
        stop.cancel();
        tokio::time::timeout(bound, flusher)
            .await
            .expect("the stop ends the wait for the interval")
            .unwrap();
        assert_eq!(
            Settled(commit.covered.clone()).outcome(c),
            Some(Ok(())),
            "the stop's last flush covered the ticket taken during the interval"
        );
    }

    #[tokio::test]
    async fn a_write_during_a_flush_waits_for_the_next_one() {
        let commit = Arc::new(Commit::new());
        let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let go_rx = std::sync::Mutex::new(go_rx);
        let started_tx = std::sync::Mutex::new(started_tx);
        let count = Arc::new(AtomicU64::new(0));
        let c2 = Arc::clone(&count);
        let f: FlushFn = Arc::new(move || {
            c2.fetch_add(1, Ordering::SeqCst);
            // The test stops listening after the first flush.
            let _ = started_tx.lock().unwrap().send(());
            go_rx.lock().unwrap().recv().unwrap();
            Ok(())
        });
        let stop = CancellationToken::new();
        let flusher = tokio::spawn(Arc::clone(&commit).run(f, stop.clone()));
        let t1 = commit.ticket();
        tokio::task::spawn_blocking(move || started_rx.recv().unwrap())
            .await
            .unwrap();
        // The first flush is running; this write landed after it started.
        let t2 = commit.ticket();
        go_tx.send(()).unwrap();
        commit.wait(t1).await.unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(50), commit.wait(t2))
                .await
                .is_err(),
            "t2 must not be released by the flush that started before it"
        );
        go_tx.send(()).unwrap();
        commit.wait(t2).await.unwrap();
        assert_eq!(count.load(Ordering::SeqCst), 2);
        stop.cancel();
        go_tx.send(()).unwrap();
        flusher.await.unwrap();
        // Writes after the final flush are refused, not left waiting forever.
        let late = commit.ticket();
        assert_eq!(commit.wait(late).await, Err(FlushError::Stopped));
    }

    #[tokio::test]
    async fn a_flush_that_keeps_failing_is_tried_again_with_growing_pauses() {
        let commit = Arc::new(Commit::new());
        let fail = Arc::new(AtomicBool::new(true));
        let (f, count) = counting(Duration::ZERO, Arc::clone(&fail));
        let stop = CancellationToken::new();
        let flusher = tokio::spawn(Arc::clone(&commit).run(f, stop.clone()));
        let t = commit.ticket();
        assert_eq!(commit.wait(t).await, Err(FlushError::Failed));
        // Pauses of 10, 20, 40, ... ms: a handful of attempts in 700 ms
        // (without them, hundreds of thousands).
        tokio::time::sleep(Duration::from_millis(700)).await;
        let tries = count.load(Ordering::SeqCst);
        assert!((2..=10).contains(&tries), "{tries} flushes");
        // Once the flush works again the next try covers the same writes
        // (until then, an answer resting on them is refused at once).
        fail.store(false, Ordering::SeqCst);
        tokio::time::timeout(Duration::from_secs(5), async {
            while commit.wait(commit.current()).await.is_err() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the retried flush covers the failed writes");
        stop.cancel();
        flusher.await.unwrap();
    }

    #[tokio::test]
    async fn failed_flush_fails_its_waiters_and_later_ones_recover() {
        let commit = Arc::new(Commit::new());
        let fail = Arc::new(AtomicBool::new(true));
        let (f, _count) = counting(Duration::ZERO, Arc::clone(&fail));
        let stop = CancellationToken::new();
        let flusher = tokio::spawn(Arc::clone(&commit).run(f, stop.clone()));
        let t = commit.ticket();
        assert_eq!(commit.wait(t).await, Err(FlushError::Failed));
        fail.store(false, Ordering::SeqCst);
        let t = commit.ticket();
        assert_eq!(commit.wait(t).await, Ok(()));
        // Nothing new written: an already covered `current` returns at once.
        let c = commit.current();
        commit.wait(c).await.unwrap();
        stop.cancel();
        flusher.await.unwrap();
    }
}
