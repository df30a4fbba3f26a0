//! The edge's memory budgets, edge-wide, in bytes: one for client requests
//! in flight, the bytes of every `Send`, `SendMedia` and `MarkRead` that
//! waits for its home's answer, across all sessions (`[limits]
//! request_memory`); one for deliveries queued towards clients (`[limits]
//! delivery_memory`, enforced by `session::deliveries`).
//!
//! Each session also bounds its own requests by count (half its outbound
//! queue); that alone let 20 senders of 60 KB bodies hold 600 MB at an edge
//! whose homes stalled. Past the budget every session stops reading its
//! client (the client feels TCP or QUIC flow control, as with the
//! per-session bound) until answers free room. A session reads at most one
//! frame past the line, so the budget is exceeded by at most one frame per
//! session.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

/// See the module docs. Cheap to share through an `Arc`.
#[derive(Debug)]
pub struct Budget {
    limit: u64,
    used: AtomicU64,
    freed: Notify,
}

/// Bytes taken from a [`Budget`], given back on drop.
#[derive(Debug)]
pub struct Held {
    budget: Arc<Budget>,
    bytes: u64,
}

impl Budget {
    pub fn new(limit: u64) -> Budget {
        Budget {
            limit,
            used: AtomicU64::new(0),
            freed: Notify::new(),
        }
    }

    /// Counts `bytes` as held until the returned guard drops. Never waits
    /// and never refuses: callers look at [`Budget::over`] before they read
    /// the next request.
    pub fn take(self: &Arc<Self>, bytes: u64) -> Held {
        self.used.fetch_add(bytes, Ordering::Relaxed);
        Held {
            budget: Arc::clone(self),
            bytes,
        }
    }

    /// The configured limit.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes held now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// No new request may be read now.
    pub fn over(&self) -> bool {
        self.used() >= self.limit
    }

    /// Resolves once the budget has room again. Cancel safe.
    pub async fn room(&self) {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if !self.over() {
                return;
            }
            freed.await;
        }
    }
}

impl Held {
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let before = self.budget.used.fetch_sub(self.bytes, Ordering::Relaxed);
        if before >= self.budget.limit && before - self.bytes < self.budget.limit {
            self.budget.freed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn over_until_enough_is_given_back() {
        let b = Arc::new(Budget::new(100));
        let first = b.take(60);
        assert!(!b.over());
        let second = b.take(60);
        assert!(b.over());
        let waiter = tokio::spawn({
            let b = Arc::clone(&b);
            async move { b.room().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(second);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken once there is room")
            .unwrap();
        assert_eq!(b.used(), 60);
        drop(first);
        assert_eq!(b.used(), 0);
    }
}
