//! Push notifications: waking a device that is not connected through APNs,
//! FCM or UnifiedPush (docs/ARCHITECTURE.md, "Push notifications").
//!
//! The home decides (`home::shard::wake`: an item the user must see landed
//! for a device with an endpoint and no session, or only idle ones) and
//! the dispatcher hands the decision to the [`Pusher`], whose durable
//! [`queue`] coalesces a burst into one push per device and paces each
//! device; the [`sender`] task takes what is due, asks the [`providers`]
//! and retries, gives up or removes a dead endpoint (through the home) by
//! their answer. The home also records which devices are owed a push, in
//! a replicated record; [`Pusher::restore`] queues them at a primary's
//! start (a promoted secondary sends what its old primary decided).

pub mod config;
mod jwt;
mod metrics;
pub mod providers;
pub mod queue;
mod sender;
pub mod webpush;

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

pub use config::PushConfig;
pub use metrics::PushMetrics;
pub use sender::{run, test};

use common::link::{KvSpace, PushEndpoints};
use prost::Message as _;

use crate::storage::{Storage, StorageError};
use queue::Queue;

/// The handle the home's dispatcher and the sender share; clones share it.
#[derive(Clone)]
pub struct Pusher(Arc<Inner>);

struct Inner {
    queue: Mutex<Queue>,
    wake: tokio::sync::Notify,
    cfg: PushConfig,
    metrics: Arc<PushMetrics>,
}

impl Pusher {
    /// Opens the queue in `data_dir/push` (replaying what a previous run
    /// left in it).
    pub fn open(
        cfg: PushConfig,
        data_dir: &Path,
        metrics: Arc<PushMetrics>,
    ) -> std::io::Result<Pusher> {
        let queue = Queue::open(&data_dir.join("push"))?;
        metrics.set_queue(queue.len());
        Ok(Pusher(Arc::new(Inner {
            queue: Mutex::new(queue),
            wake: tokio::sync::Notify::new(),
            cfg,
            metrics,
        })))
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        // (Every change is whole before the lock goes: a panic elsewhere
        // leaves it consistent.)
        self.0.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An item landed for `device` of `user`, which is offline: push (once
    /// for a burst, no sooner than the device's interval allows).
    pub fn decide(&self, user: String, device: u32) {
        let cfg = &self.0.cfg;
        let now = common::fsutil::now_ms();
        let (taken, len) = {
            let mut q = self.queue();
            let taken = q.decide(
                (user, device),
                now,
                cfg.coalesce.as_millis() as u64,
                cfg.min_interval.as_millis() as u64,
                cfg.queue_max,
            );
            (taken, q.len())
        };
        self.0.metrics.set_queue(len);
        if taken {
            self.0.wake.notify_one();
        } else {
            self.0.metrics.failed("queue", "queue_full");
        }
    }

    /// `device` of `user` connected (or lost its endpoint): its waiting push
    /// is dropped.
    pub fn cancel(&self, user: String, device: u32) {
        let len = {
            let mut q = self.queue();
            if q.cancel(&(user, device)) {
                self.0.metrics.cancelled();
            }
            q.len()
        };
        self.0.metrics.set_queue(len);
    }

    /// Devices with a push waiting.
    pub fn queued(&self) -> usize {
        self.queue().len()
    }

    /// Whether a push waits for `device` of `user` (or is being sent).
    pub fn waiting(&self, user: &str, device: u32) -> bool {
        self.queue().holds(&(user.to_owned(), device))
    }

    /// `[push] wake_idle_after`, `None` when off.
    pub fn wake_idle_after(&self) -> Option<std::time::Duration> {
        Some(self.0.cfg.wake_idle_after).filter(|d| !d.is_zero())
    }

    /// Makes the queue hold a push for exactly the devices `storage`
    /// records as owed one (`PushEndpoints.owed`, replicated with the
    /// endpoints): a primary's start, before its home takes any operation.
    /// After a promotion that queues what the old primary decided and did
    /// not send; after a restart it also drops what this node's own queue
    /// held from a time it was primary before (a later primary sent it).
    pub fn restore(&self, storage: &dyn Storage) -> Result<usize, StorageError> {
        let mut owed = Vec::new();
        storage.visit_kv_space(KvSpace::PushEndpoints as i32 as u8, &mut |user, _, raw| {
            match PushEndpoints::decode(raw) {
                Ok(list) => owed.extend(list.owed.into_iter().map(|d| (user.to_owned(), d))),
                Err(e) => tracing::error!(error = %e, "an unreadable push endpoint record"),
            }
        })?;
        let now = common::fsutil::now_ms();
        let len = {
            let mut q = self.queue();
            q.reconcile(owed, now + self.0.cfg.coalesce.as_millis() as u64);
            q.len()
        };
        self.0.metrics.set_queue(len);
        Ok(len)
    }
}
