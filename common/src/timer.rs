//! Optional deadlines in `select!` loops.

use tokio::time::Instant;

/// Sleeps until `at`, or for ever without one (a `select!` branch for a
/// deadline that may not be set).
pub async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
