//! `wa-store`: the home of users (docs/ARCHITECTURE.md).
//!
//! [`run`] is the whole server: open the database, serve links until the
//! shutdown token is cancelled, drain, flush, return. `main.rs` and the tests
//! call the same function; `main.rs` uses [`Store::open`] and
//! [`Store::serve`] separately so that it can report readiness only once the
//! database is open.

pub mod admin;
pub mod backup;
pub mod cli;
pub mod coalesce;
pub mod config;
pub mod courier;
pub mod disk;
pub mod error;
pub mod failover;
pub mod flusher;
pub mod gate;
pub mod groups;
pub mod handoff;
pub mod home;
pub mod inspect;
pub mod journal;
pub mod listener;
pub mod metrics;
pub mod moves;
pub mod ownership;
pub mod push;
mod reload;
pub mod replication;
pub mod retire;
pub mod retry;
mod secondary;
pub mod standby;
mod stopping;
pub mod storage;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;
pub use error::StoreError;

use crate::flusher::{Commit, FlushFn};
use crate::home::Home;
use crate::listener::LinkCtx;
use crate::storage::Storage;

/// Shards per node: enough to keep both cores busy and one hot user from
/// holding up many others.
const SHARDS: usize = 16;

/// How long a home waits for another home to answer an append.
const COURIER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// An opened store, ready to serve.
pub struct Store {
    config: Config,
    /// The engine under `storage`: the configured one, or the one
    /// `engine = "auto"` resolved to for the data directory.
    engine: config::Engine,
    storage: Arc<dyn Storage>,
    /// `None` while this node is a secondary (the follower keeps its own).
    journal: Option<Arc<journal::Journal>>,
    metrics: Arc<metrics::Metrics>,
    secret: Vec<u8>,
    ownership: Arc<ownership::Ownership>,
    tls: Arc<rustls::ServerConfig>,
    /// The link certificate, read again on SIGHUP (`main.rs`).
    cert: Arc<common::tls::CertReloader>,
    /// The cluster CA, to reach other homes; `None` if unreadable (only a
    /// one-island map may do without).
    roots: Option<Vec<rustls_pki_types::CertificateDer<'static>>>,
    /// etcd, for automatic failover (`failover::prepare`).
    coordination: Option<common::coordination::Coordinator>,
    /// The data directory held data and its last run did not end with a
    /// clean stop (`CLEAN_STOP`): a crash, a kill, a power cut.
    crashed: bool,
    /// Asks the sweeper for a round now (`POST /admin/expire`); its other
    /// end goes to the sweeper once this store serves as primary.
    sweep_now: tokio::sync::mpsc::Sender<tokio::sync::oneshot::Sender<u64>>,
    sweep_requests: std::sync::Mutex<Option<home::SweepRequests>>,
    /// The shards while this store serves, for the operator's requests
    /// (`inspect.rs`); a weak handle, so it never keeps them open.
    home_slot: Arc<std::sync::Mutex<home::WeakHome>>,
    /// The journal while this store serves as primary (`wactl backup`).
    journal_slot: Arc<std::sync::Mutex<Option<Arc<journal::Journal>>>>,
    /// The push providers, their keys read at open.
    providers: Arc<push::providers::Providers>,
}

/// Written into the data directory when a primary stopped cleanly (its
/// journal synced); taken away when it starts.
pub const CLEAN_STOP: &str = "CLEAN_STOP";

impl Store {
    /// Reads the files the store needs and opens the database.
    pub fn open(config: Config) -> Result<Store, StoreError> {
        config.validate()?;
        let ownership = ownership::Ownership::load(
            config.cluster.map.clone(),
            config.cluster.island.clone(),
            Some(config.cluster.advertise.unwrap_or(config.link.listen)),
            Some(config.data_dir.join(moves::FILE)),
        )?;
        let secret = common::secret::read_cluster(&config.cluster.secret_file)
            .map_err(StoreError::Secret)?;
        let primary = ownership.current().primary;
        let roots = match common::tls::load_certs(&config.cluster.ca) {
            Ok(r) => Some(r),
            Err(_) if primary && ownership.current().map.islands.len() == 1 => None,
            Err(e) => return Err(StoreError::ClusterCa(e)),
        };
        let providers =
            Arc::new(push::providers::Providers::new(&config.push).map_err(StoreError::Push)?);
        let cert = common::tls::CertReloader::open(&config.link.cert, &config.link.key)?;
        let tls = cert.server_config(&[common::link::LINK_ALPN])?;
        let (sweep_now, sweep_requests) = tokio::sync::mpsc::channel(4);
        let had_data = config.data_dir.join("FORMAT").exists();
        let clean = config.data_dir.join(CLEAN_STOP);
        let crashed = had_data && !clean.exists();
        if clean.exists() {
            std::fs::remove_file(&clean).map_err(|source| StoreError::DataDir {
                op: "remove the clean-stop marker from",
                dir: config.data_dir.clone(),
                source,
            })?;
        }
        let journal = if primary {
            let marker = config.data_dir.join(replication::follower::INCOMPLETE);
            if marker.exists() {
                return Err(StoreError::ReplicaIncomplete { marker });
            }
            None
        } else {
            // A secondary starts from a fresh copy of its primary.
            retire::retire(&config.data_dir)?;
            Some(())
        };
        let engine = storage::format::resolve(&config.data_dir, config.engine)?;
        tracing::info!(
            engine = storage::format::name(engine),
            configured = ?config.engine,
            "storage engine"
        );
        let storage = storage::open(
            &config.data_dir,
            engine,
            storage::engine_cache(config.cache.memory.as_u64()),
        )?;
        // What this node serves, so that a map read at the next start tells
        // a move that happened meanwhile (`moves`).
        ownership.record().map_err(|source| StoreError::DataDir {
            op: "record the fragments served in",
            dir: config.data_dir.clone(),
            source,
        })?;
        let journal = match journal {
            None => Some(Arc::new(recover(
                &*storage,
                &config.data_dir.join("journal"),
                config.journal.segment_size.as_u64(),
            )?)),
            Some(()) => None,
        };
        Ok(Store {
            config,
            engine,
            storage,
            journal,
            metrics: Arc::default(),
            secret,
            ownership: Arc::new(ownership),
            tls: Arc::new(tls),
            cert,
            roots,
            coordination: None,
            crashed,
            sweep_now,
            sweep_requests: std::sync::Mutex::new(Some(sweep_requests)),
            home_slot: Arc::default(),
            journal_slot: Arc::default(),
            providers,
        })
    }

    /// Fails over automatically through `c` (from [`failover::prepare`],
    /// called before [`Store::open`]).
    pub fn with_coordination(mut self, c: Option<common::coordination::Coordinator>) -> Store {
        self.coordination = c;
        self
    }

    /// This node's address as the map names it.
    fn me(&self) -> std::net::SocketAddr {
        self.config
            .cluster
            .advertise
            .unwrap_or(self.config.link.listen)
    }

    pub(crate) fn island_name(&self) -> String {
        let o = self.ownership.current();
        o.map.islands[o.island].name.clone()
    }

    /// Serves links on `listener` until `shutdown`, then stops accepting,
    /// answers every append already received once its flush is done, flushes
    /// and returns. Everything is bounded by the configured grace period.
    ///
    /// An operation that panics on a home shard stops it the same way, but
    /// nothing of that shard is answered or written back, and the result is
    /// [`StoreError::ShardPanicked`]: the process must exit and start again,
    /// which replays the journal.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<(), StoreError> {
        self.serve_reloading(listener, shutdown, Arc::default())
            .await
    }

    /// [`Store::serve`], reading the cluster map again whenever `reload` is
    /// notified (`main.rs` does so on SIGHUP). A secondary follows its
    /// primary until the map names it primary, then serves.
    pub async fn serve_reloading(
        mut self,
        mut listener: TcpListener,
        shutdown: CancellationToken,
        reload: Arc<tokio::sync::Notify>,
    ) -> Result<(), StoreError> {
        if let Some(c) = &self.coordination {
            tokio::spawn(c.clone().follow_map(
                self.config.cluster.map.clone(),
                Arc::clone(&reload),
                shutdown.clone(),
            ));
        }
        if self.journal.is_none() {
            match self
                .follow_until_promoted(listener, &shutdown, &reload)
                .await?
            {
                Some(l) => listener = l,
                None => return Ok(()),
            }
        }
        self.serve_primary(listener, shutdown, reload).await
    }

    async fn serve_primary(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
        reload: Arc<tokio::sync::Notify>,
    ) -> Result<(), StoreError> {
        let journal_arc = Arc::clone(self.journal.as_ref().expect("a primary has a journal"));
        let commit = Arc::new(Commit::with_interval(self.config.journal.commit_interval));
        let alone = self
            .coordination
            .is_some()
            .then(|| Arc::new(replication::alone::Alone::default()));
        let mut replication = replication::Replication::new(
            Arc::clone(&journal_arc),
            self.config.replication.wait,
            self.config.replication.when_absent,
        );
        if let Some(a) = &alone {
            replication = replication.gated_by(Arc::clone(a));
        }
        let replication = Arc::new(replication);
        let _ = self.metrics.replication.set(Arc::clone(&replication));
        let metrics = Arc::clone(&self.metrics);
        let flush: FlushFn = match self.config.durability {
            config::Durability::Disk => {
                let journal = Arc::clone(&journal_arc);
                Arc::new(move || {
                    metrics::Metrics::add(&metrics.journal_syncs, 1);
                    #[cfg(debug_assertions)]
                    stall_while_marked();
                    journal.sync().map_err(|e| storage::StorageError::Engine {
                        op: "journal sync",
                        source: Box::new(e),
                    })
                })
            }
            config::Durability::Replicated => {
                let r = Arc::clone(&replication);
                Arc::new(move || {
                    metrics::Metrics::add(&metrics.journal_syncs, 1);
                    r.flush()
                })
            }
        };
        let flusher_stop = CancellationToken::new();
        let flusher = tokio::spawn(Arc::clone(&commit).run(flush, flusher_stop.clone()));
        // At `replicated` the journal reaches the disk off the path of the
        // acknowledgement, continuously.
        let disk_sync = (self.config.durability == config::Durability::Replicated)
            .then(|| replication::disk_sync::start(Arc::clone(&replication), flusher_stop.clone()));
        let limits = home::Limits {
            max_items: self.config.mailbox.max_items,
            max_bytes: self.config.mailbox.max_bytes.as_u64(),
        };
        let cache = home::CacheConfig {
            sync_delay: self.config.cache.sync_delay,
            bypass_items: self.config.cache.bypass_items,
            budget_bytes: self.config.cache.memory.as_u64(),
            expire_after: self.config.mailbox.expire_after,
            write_back_slice: home::WRITE_BACK_SLICE,
        };
        let (outbox, errands) = courier::outbox();
        // Cancelled by `shutdown`, or by a panic on a shard.
        let stop = shutdown.child_token();
        let fatal = home::Fatal::new(stop.clone());
        let pusher = push::Pusher::open(
            self.config.push.clone(),
            &self.config.data_dir,
            Arc::clone(&self.metrics.push),
        )
        .map_err(|source| StoreError::DataDir {
            op: "open the push queue in",
            dir: self.config.data_dir.clone(),
            source,
        })?;
        // The devices the replicated records say are owed a push (a
        // promoted secondary's queue is empty) are queued before the home
        // decides anything new.
        {
            let (p, storage) = (pusher.clone(), Arc::clone(&self.storage));
            match tokio::task::spawn_blocking(move || p.restore(&*storage)).await {
                Ok(Ok(n)) => tracing::info!(queued = n, "push queue restored"),
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "cannot read which devices are owed a push")
                }
                Err(e) => tracing::error!(error = %e, "restoring the push queue panicked"),
            }
        }
        let (home, shards) = Home::start(
            Arc::clone(&self.storage),
            Arc::clone(&journal_arc),
            Arc::clone(&commit),
            limits,
            cache,
            Arc::clone(&self.metrics),
            fatal.clone(),
            SHARDS,
            Some(outbox),
            Some(pusher.clone()),
        );
        *self.home_slot.lock().unwrap_or_else(|p| p.into_inner()) = home.downgrade();
        *self.journal_slot.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(Arc::clone(&journal_arc));
        let push_stop = stop.child_token();
        let push_sender = tokio::spawn(push::run(
            pusher,
            Arc::clone(&self.providers),
            Arc::clone(&self.storage),
            home.clone(),
            push_stop.clone(),
        ));
        let client = match &self.roots {
            Some(roots) => match common::link_client::LinkClient::new(
                self.ownership.current().map.clone(),
                roots,
                bytes::Bytes::from(self.secret.clone()),
                self.config.node.clone(),
                COURIER_TIMEOUT,
            ) {
                Ok(c) => Some(Arc::new(c.reloading_from(self.config.cluster.map.clone()))),
                Err(e) => {
                    tracing::error!(error = %e, "cannot reach other homes");
                    None
                }
            },
            None => None,
        };
        let other_homes = client.clone();
        let courier_stop = stop.child_token();
        let courier = tokio::spawn(courier::run(
            errands,
            home.clone(),
            Arc::clone(&self.ownership),
            client.clone(),
            courier::Aggregation {
                window: self.config.groups.receipt_window,
                max: self.config.groups.receipt_max,
            },
            courier_stop.clone(),
        ));
        let groups = groups::Groups::start(
            home.clone(),
            Arc::clone(&self.ownership),
            client.clone(),
            &self.config.groups,
            Arc::clone(&self.storage),
            Arc::clone(&self.metrics),
            courier_stop.clone(),
        );
        let writeback_stop = CancellationToken::new();
        let writeback = tokio::spawn(home::write_back(
            home.clone(),
            Arc::clone(&self.storage),
            Arc::clone(&journal_arc),
            self.config.cache.sync_delay,
            Arc::clone(&self.metrics),
            writeback_stop.clone(),
        ));
        let disk_watch = tokio::spawn(disk::watch(
            self.config.data_dir.clone(),
            self.config.disk.min_free.as_u64(),
            Arc::clone(&journal_arc),
            Arc::clone(&self.metrics),
            stop.child_token(),
        ));
        let sweeper_stop = shutdown.child_token();
        let requests = self
            .sweep_requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_else(|| tokio::sync::mpsc::channel(1).1);
        let sweeper = tokio::spawn(home::sweep(
            Arc::clone(&self.storage),
            home.clone(),
            self.config.mailbox.expire_after,
            self.config.mailbox.sweep_interval,
            (Arc::clone(&self.metrics), self.engine_dir()),
            requests,
            sweeper_stop.clone(),
        ));
        if let Some(c) = self.coordination.clone() {
            // A primary back from a crash may lack appends it acknowledged
            // (they were in its secondary's memory and its own journal
            // buffer): its secondary gets the first chance to take over.
            let o = self.ownership.current();
            let defer = self.crashed && o.map.islands[o.island].secondary.is_some();
            tokio::spawn(failover::hold_lease(
                c.clone(),
                self.island_name(),
                self.me().to_string(),
                Arc::clone(&self.ownership),
                defer,
                stop.clone(),
            ));
            if let Some(a) = alone {
                tokio::spawn(failover::record_alone(
                    c,
                    self.island_name(),
                    self.me().to_string(),
                    a,
                    stop.clone(),
                ));
            }
        }
        // Without etcd, a primary back from a crash at `replicated` with a
        // secondary may lack appends it acknowledged; serving (or sending
        // its secondary a fresh copy, which would replace the newer one)
        // would lose them. It waits, fenced, for the operator: promote the
        // secondary, or take it out of the map.
        let crash_fence = self.coordination.is_none()
            && self.crashed
            && self.config.durability == config::Durability::Replicated
            && {
                let o = self.ownership.current();
                o.map.islands[o.island].secondary.is_some()
            };
        if crash_fence {
            self.ownership.set_fenced(true);
            tracing::error!(
                island = %self.island_name(),
                "this primary did not stop cleanly and its island has a secondary, which may hold acknowledged appends this node lacks: serving nothing. Promote the secondary (wactl promote ISLAND; this node then rejoins as secondary), or, if the secondary is lost, remove it from the map (raise the epoch) and reload"
            );
        }
        let demoted = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reloader = tokio::spawn(reload::reload_loop(
            Arc::clone(&self.ownership),
            home.clone(),
            Arc::clone(&self.storage),
            client,
            reload,
            stop.clone(),
            (Arc::clone(&demoted), crash_fence),
        ));
        let mut ctx = LinkCtx::new(
            home,
            self.secret.clone(),
            self.config.node.clone(),
            Arc::clone(&self.ownership),
            tokio_rustls::TlsAcceptor::from(Arc::clone(&self.tls)),
        )
        .counting_links(Arc::clone(&self.metrics));
        ctx.groups = Some(groups);
        let engine_metrics = Arc::clone(&self.metrics);
        ctx.replication = Some(Arc::new(replication::sender::Source {
            replication: Arc::clone(&replication),
            journal: Arc::clone(&journal_arc),
            storage: Arc::clone(&self.storage),
            engine_bytes: Arc::new(move || {
                engine_metrics
                    .engine_disk_bytes
                    .load(std::sync::atomic::Ordering::Relaxed)
            }),
        }));
        let ctx = Arc::new(ctx);
        let writers = TaskTracker::new();
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, node = %self.config.node, "serving links");
        }
        listener::serve(listener, ctx, stop, writers.clone()).await;
        stopping::Running {
            reloader,
            push_stop,
            push_sender,
            courier,
            other_homes,
            sweeper_stop,
            sweeper,
            disk_watch,
            writeback_stop,
            writeback,
            shards,
            flusher_stop,
            flusher,
            disk_sync,
            writers,
            fatal,
            demoted,
        }
        .stop(&self)
        .await?;
        tracing::info!("stopped");
        Ok(())
    }
}

impl Store {
    /// Where the engine keeps its files.
    fn engine_dir(&self) -> std::path::PathBuf {
        storage::format::engine_dir(&self.config.data_dir, self.engine)
    }

    /// The store's metrics (Prometheus text via `render`).
    pub fn metrics(&self) -> Arc<metrics::Metrics> {
        Arc::clone(&self.metrics)
    }
}

/// Fault switch (debug builds only, for black-box tests): while the file
/// named by `WA_STORE_FAULT_STALL_FLUSH_WHILE` exists, journal syncs wait,
/// as on a disk that stopped answering. A release build has no such switch.
#[cfg(debug_assertions)]
fn stall_while_marked() {
    static MARK: std::sync::LazyLock<Option<std::path::PathBuf>> = std::sync::LazyLock::new(|| {
        std::env::var_os("WA_STORE_FAULT_STALL_FLUSH_WHILE").map(Into::into)
    });
    if let Some(mark) = MARK.as_ref() {
        while mark.exists() {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// Replays whatever the journal in `dir` holds into `storage` (items a crash
/// left only in memory), flushes the engine, and starts a fresh journal.
pub(crate) fn recover(
    storage: &dyn Storage,
    dir: &std::path::Path,
    segment_size: u64,
) -> Result<journal::Journal, StoreError> {
    let outcome = journal::replay(dir, |rec| replication::apply::apply_record(storage, rec))?;
    let (records, torn) = outcome?;
    if records > 0 || torn {
        tracing::info!(records, torn, "journal replayed into the engine");
    }
    storage.flush()?;
    Ok(journal::Journal::start_fresh(dir, segment_size)?)
}

/// Opens the store from `config` and serves `listener` until `shutdown`.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), StoreError> {
    Store::open(config)?.serve(listener, shutdown).await
}

/// Turns transparent huge pages off for this whole process. Call it first
/// thing in `main`, before the runtime's threads start allocating.
///
/// With them on, mimalloc asks for huge pages, and memory it handed back to
/// the kernel comes back as fresh 2 MiB pages that the faulting thread must
/// zero inside whatever append touched it: at 50,000 appends/s that was a
/// tenth of the store's CPU and most of its tail (docs/BENCHMARKS.md, the
/// run "huge pages"). Redis and MongoDB, among others, ask the same of the
/// system; this asks it of the process only (`prctl(PR_SET_THP_DISABLE)`,
/// Linux).
/// Elsewhere it does nothing.
pub fn disable_transparent_huge_pages() -> std::io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        nix::sys::prctl::set_thp_disable(true).map_err(std::io::Error::from)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        Ok(())
    }
}
