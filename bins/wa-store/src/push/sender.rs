//! The sender: takes the pushes that are due from the queue, asks the
//! provider, and by the answer marks them sent, retries them later
//! (exponential backoff with full jitter, never sooner than a provider's
//! `Retry-After` up to `backoff_max`), gives them up, or removes a dead
//! endpoint at the home. A push that ends (sent, given up) is no longer
//! owed at the home (`Op::PushOwed`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::link::{KvSpace, PushEndpoint, PushEndpoints};
use prost::Message as _;
use rand::Rng as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Pusher;
use super::providers::{self, Outcome, Providers};
use super::queue::{Entry, Key};
use crate::home::{Home, Op, SetPushBy};
use crate::storage::Storage;

/// How often the queue's log is synced to disk.
const SYNC_EVERY: Duration = Duration::from_secs(1);

/// The endpoint of `device` of `user`, as the home keeps it.
fn endpoint(
    storage: &dyn Storage,
    user: &str,
    device: u32,
) -> Result<Option<PushEndpoint>, String> {
    let (_, raw) = storage
        .kv_get(KvSpace::PushEndpoints as i32 as u8, user)
        .map_err(|e| e.to_string())?;
    let list = PushEndpoints::decode(raw.as_slice()).map_err(|e| e.to_string())?;
    Ok(list.endpoints.into_iter().find(|e| e.device == device))
}

struct Done {
    entry: Entry,
    provider: &'static str,
    token: String,
    outcome: Outcome,
}

/// Runs until `stop`: sends what is due, at most `push.concurrency` at once.
pub async fn run(
    pusher: Pusher,
    providers: Arc<Providers>,
    storage: Arc<dyn Storage>,
    home: Home,
    stop: CancellationToken,
) {
    let cfg = pusher.0.cfg.clone();
    let (tx, mut rx) = mpsc::channel::<Done>(cfg.concurrency);
    let mut inflight = 0usize;
    let mut sync = tokio::time::interval(SYNC_EVERY);
    sync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let now = common::fsutil::now_ms();
        let (due, next) = pusher.queue().take_due(now, cfg.concurrency - inflight);
        for entry in due {
            inflight += 1;
            let tx = tx.clone();
            let providers = Arc::clone(&providers);
            let storage = Arc::clone(&storage);
            let metrics = Arc::clone(&pusher.0.metrics);
            tokio::spawn(async move {
                let (user, device) = (entry.user.clone(), entry.device);
                // (An engine read: off the async threads.)
                let found = tokio::task::spawn_blocking(move || endpoint(&*storage, &user, device))
                    .await
                    .unwrap_or_else(|e| Err(e.to_string()));
                let (provider, token, outcome) = match found {
                    Ok(Some(e)) => {
                        let provider = providers::name(e.provider);
                        let started = Instant::now();
                        let outcome = providers.send(&e, entry.count).await;
                        metrics.request(provider, started.elapsed().as_secs_f64());
                        (provider, e.token, outcome)
                    }
                    Ok(None) => ("none", String::new(), Outcome::Failed("no_endpoint")),
                    Err(err) => {
                        tracing::error!(error = %err, "cannot read a push endpoint");
                        (
                            "none",
                            String::new(),
                            Outcome::Retry {
                                after: None,
                                reason: "storage",
                            },
                        )
                    }
                };
                let _ = tx
                    .send(Done {
                        entry,
                        provider,
                        token,
                        outcome,
                    })
                    .await;
            });
        }
        let sleep = next.map(|at| Duration::from_millis(at.saturating_sub(now)));
        tokio::select! {
            () = stop.cancelled() => break,
            () = pusher.0.wake.notified() => {}
            () = sleep_some(sleep) => {}
            Some(done) = rx.recv() => {
                inflight -= 1;
                finish(&pusher, &home, done).await;
            }
            _ = sync.tick() => {
                let q = pusher.clone();
                // (The fsync off the async threads and outside the lock the
                // dispatchers take.)
                let _ = tokio::task::spawn_blocking(move || {
                    let f = q.queue().to_sync();
                    if let Some(f) = f
                        && let Err(e) = f.sync_data()
                    {
                        tracing::error!(error = %e, "cannot sync the push queue's log");
                    }
                })
                .await;
            }
        }
    }
    if let Some(f) = pusher.queue().to_sync() {
        let _ = f.sync_data();
    }
}

async fn sleep_some(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// The retry delay after `attempts` failures: doubling from `initial`, at
/// most `max`, drawn uniformly from its upper half; never sooner than the
/// provider asked, unless it asked for more than `max`.
fn backoff(initial: Duration, max: Duration, attempts: u32, after: Option<Duration>) -> Duration {
    let exp = initial
        .saturating_mul(1u32 << attempts.min(20).saturating_sub(1))
        .min(max);
    let jittered = exp / 2 + exp.mul_f64(rand::rng().random::<f64>() / 2.0);
    after.map_or(jittered, |a| a.min(max).max(jittered))
}

async fn finish(pusher: &Pusher, home: &Home, done: Done) {
    let cfg = &pusher.0.cfg;
    let m = &pusher.0.metrics;
    let key: Key = (done.entry.user.clone(), done.entry.device);
    let id = done.entry.id;
    let now = common::fsutil::now_ms();
    let interval = cfg.min_interval.as_millis() as u64;
    let gone = done.outcome == Outcome::Gone;
    match done.outcome {
        Outcome::Sent => {
            m.sent(done.provider);
            tracing::debug!(
                provider = done.provider,
                count = done.entry.count,
                "push sent"
            );
            pusher.queue().done(&key, id, true, now, interval);
        }
        Outcome::Retry { after, reason } => {
            let delay = backoff(
                cfg.backoff_initial,
                cfg.backoff_max,
                done.entry.attempts + 1,
                after,
            );
            let attempts = pusher
                .queue()
                .retry(&key, id, now + delay.as_millis() as u64);
            if attempts >= cfg.max_attempts {
                m.failed(done.provider, "attempts");
                tracing::warn!(provider = done.provider, reason, attempts, "push given up");
                pusher.queue().done(&key, id, false, now, interval);
            } else {
                m.retried(done.provider);
                tracing::debug!(
                    provider = done.provider,
                    reason,
                    ?delay,
                    "push retried later"
                );
            }
        }
        Outcome::Gone => {
            m.removed(done.provider);
            tracing::info!(
                provider = done.provider,
                "the provider says the push token is dead; endpoint removed"
            );
            pusher.queue().forget(&key);
            let op = Op::SetPush {
                by: SetPushBy::DeadToken { token: done.token },
                user: key.0.clone(),
                device: key.1,
                endpoint: None,
            };
            if home.submit(op).await.is_err() {
                tracing::warn!(
                    "the home is closing; a dead endpoint stays until the next push finds it"
                );
            }
        }
        Outcome::Failed(reason) => {
            m.failed(done.provider, reason);
            tracing::warn!(provider = done.provider, reason, "push failed");
            pusher.queue().done(&key, id, false, now, interval);
        }
    }
    let (len, waiting) = {
        let q = pusher.queue();
        (q.len(), q.holds(&key))
    };
    m.set_queue(len);
    // Sent or given up: the home no longer records the device as owed a
    // push (a dead token's endpoint went with its record, above).
    if !waiting && !gone {
        let op = Op::PushOwed {
            user: key.0,
            device: key.1,
            owed: false,
        };
        if home.submit(op).await.is_err() {
            tracing::debug!("the home is closing; the device stays owed a push");
        }
    }
}

/// Sends one push to `device` of `user` now, outside the queue (`wactl push
/// test`): the provider's name and what it answered.
pub async fn test(
    providers: &Providers,
    storage: &dyn Storage,
    user: &str,
    device: u32,
) -> Result<(&'static str, Outcome), String> {
    let e = endpoint(storage, user, device)?.ok_or("the device has no push endpoint")?;
    Ok((providers::name(e.provider), providers.send(&e, 1).await))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_honoured_up_to_the_max_backoff() {
        let (i, max) = (Duration::from_millis(100), Duration::from_secs(10));
        for _ in 0..100 {
            let d = backoff(i, max, 1, Some(Duration::from_secs(3)));
            assert_eq!(d, Duration::from_secs(3));
            let d = backoff(i, max, 1, Some(Duration::from_secs(3600)));
            assert_eq!(d, max, "capped");
            let d = backoff(i, max, 1, None);
            assert!(d >= i / 2 && d <= i, "{d:?}");
        }
    }
}
