//! At level `replicated` an append is acknowledged once the secondary has
//! it in memory; the primary's own journal reaches the disk here, on a
//! thread of its own, continuously (a sync starts as soon as the last one
//! returned, at most every [`EVERY`]).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Replication;

/// The longest pause between two syncs.
pub const EVERY: Duration = Duration::from_millis(5);

/// Starts the thread; it syncs one last time after `stop`.
pub fn start(repl: Arc<Replication>, stop: CancellationToken) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("journal-disk".into())
        .spawn(move || {
            let mut failed = false;
            loop {
                let stopping = stop.is_cancelled();
                if let Err(e) = repl.sync_disk()
                    && !failed
                {
                    failed = true;
                    tracing::error!(error = %e, "syncing the journal failed; it refuses every append from now on until a restart replays it");
                }
                if stopping {
                    return;
                }
                std::thread::sleep(EVERY);
            }
        })
        .expect("a thread can be started at start-up")
}
