//! The end of a primary's service (`Store::serve_primary`): every part
//! it started, stopped in the order that loses nothing, all within the
//! shutdown grace period.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::{CLEAN_STOP, Store, StoreError, home};

/// What a serving primary runs, to be stopped once its links are.
pub(crate) struct Running {
    pub(crate) reloader: JoinHandle<()>,
    pub(crate) push_stop: CancellationToken,
    pub(crate) push_sender: JoinHandle<()>,
    pub(crate) courier: JoinHandle<()>,
    pub(crate) other_homes: Option<Arc<common::link_client::LinkClient>>,
    pub(crate) sweeper_stop: CancellationToken,
    pub(crate) sweeper: JoinHandle<()>,
    pub(crate) disk_watch: JoinHandle<()>,
    pub(crate) writeback_stop: CancellationToken,
    pub(crate) writeback: JoinHandle<()>,
    pub(crate) shards: Vec<JoinHandle<()>>,
    pub(crate) flusher_stop: CancellationToken,
    pub(crate) flusher: JoinHandle<()>,
    pub(crate) disk_sync: Option<std::thread::JoinHandle<()>>,
    pub(crate) writers: TaskTracker,
    pub(crate) fatal: home::Fatal,
    pub(crate) demoted: Arc<AtomicBool>,
}

impl Running {
    /// Stops everything after the links have stopped reading; an error if
    /// a shard panicked or the node was demoted meanwhile. A clean stop
    /// (the journal synced) is marked in the data directory.
    pub(crate) async fn stop(self, store: &Store) -> Result<(), StoreError> {
        // Everything below is bounded by the grace period. The engine is
        // never on the path of an acknowledgement (the journal is), and a
        // journal segment goes only after an engine flush returned, so an
        // engine flush that hangs (sled 0.34 has open reports of that) costs
        // a slower next start, never data.
        let grace = store.config.shutdown.grace;
        let deadline = tokio::time::Instant::now() + grace;
        let _ = self.reloader.await;
        self.push_stop.cancel();
        let _ = tokio::time::timeout_at(deadline, self.push_sender).await;
        let _ = tokio::time::timeout_at(deadline, self.courier).await;
        if let Some(c) = &self.other_homes {
            let _ = tokio::time::timeout_at(deadline, c.close()).await;
        }
        self.sweeper_stop.cancel();
        let _ = tokio::time::timeout_at(deadline, self.sweeper).await;
        let _ = tokio::time::timeout_at(deadline, self.disk_watch).await;
        // Every operation the links delivered is queued on the shards ahead
        // of this last round.
        self.writeback_stop.cancel();
        if tokio::time::timeout_at(deadline, self.writeback)
            .await
            .is_err()
        {
            tracing::error!(
                "the last write-back round did not finish within the grace period; the journal keeps its items"
            );
        }

        // Drain: readers are gone; the shards answer what they hold as the
        // flusher covers it, then end; the final journal sync follows; the
        // writers deliver the last answers.
        let mut cut = 0;
        for s in self.shards {
            if tokio::time::timeout_at(deadline, s).await.is_err() {
                cut += 1;
            }
        }
        self.flusher_stop.cancel();
        let synced = tokio::time::timeout_at(deadline, self.flusher)
            .await
            .is_ok();
        if !synced {
            tracing::error!("final journal sync did not finish within the grace period");
        }
        if let Some(t) = self.disk_sync {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        self.writers.close();
        if tokio::time::timeout_at(deadline, self.writers.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                links = self.writers.len(),
                "links cut at the end of the grace period"
            );
        }
        if cut > 0 {
            tracing::warn!(
                shards = cut,
                "shards still busy at the end of the grace period"
            );
        }
        let storage = Arc::clone(&store.storage);
        let flush = tokio::task::spawn_blocking(move || storage.flush());
        match tokio::time::timeout_at(deadline, flush).await {
            Ok(r) => r.expect("flush task does not panic")?,
            Err(_) => tracing::error!(
                "the engine's last flush did not finish within the grace period; the journal keeps everything it needs"
            ),
        }
        if let Some(shard) = self.fatal.shard() {
            return Err(StoreError::ShardPanicked { shard });
        }
        if self.demoted.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::Demoted {
                epoch: store.ownership.current().epoch(),
            });
        }
        if synced {
            let marker = store.config.data_dir.join(CLEAN_STOP);
            if let Err(e) = common::fsutil::write_atomic(&marker, b"") {
                tracing::warn!(error = %e, "cannot mark the clean stop; the next start counts as one after a crash");
            }
        }
        tracing::info!("stopped");
        Ok(())
    }
}
