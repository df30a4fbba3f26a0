//! Retrying an operation on another home until it succeeds: the courier's
//! receipts and the hand-over of moving fragments both must not give up,
//! since an item is deleted here only once the other home has it.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

const BACKOFF_INITIAL: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The operation was not done: `stop` came first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped;

/// Runs `f` until it succeeds, with jittered exponential backoff (50 ms to
/// 5 s), logging the first failures and then every twentieth, naming
/// `what`; `Err` only if `stop`ped.
pub async fn until_done<T, E, F>(
    stop: &CancellationToken,
    what: &str,
    mut f: impl FnMut() -> F,
) -> Result<T, Stopped>
where
    E: std::fmt::Display,
    F: std::future::Future<Output = Result<T, E>>,
{
    let mut backoff = BACKOFF_INITIAL;
    let mut failures = 0u32;
    loop {
        match f().await {
            Ok(t) => return Ok(t),
            Err(_) if stop.is_cancelled() => return Err(Stopped),
            Err(e) => {
                failures += 1;
                if failures <= 3 || failures.is_multiple_of(20) {
                    tracing::warn!(error = %e, failures, "cannot store {what} at its home yet; retrying");
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff.mul_f64(rand::random_range(0.5..=1.0))) => {}
            () = stop.cancelled() => return Err(Stopped),
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// (Stopping is the home shutting down, for callers that speak of that.)
impl From<Stopped> for crate::home::HomeClosed {
    fn from(_: Stopped) -> Self {
        crate::home::HomeClosed
    }
}
