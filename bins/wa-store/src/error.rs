//! The errors `wa-store` returns from [`crate::run`]: one enum for the
//! boundary between the library and `main.rs`, which maps them to exit codes.

use std::path::PathBuf;

use crate::config::ConfigError;
use crate::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cluster.ca (needed to reach other islands' homes): {0}")]
    ClusterCa(common::tls::TlsError),
    #[error("link TLS: {0}")]
    Tls(#[from] common::tls::TlsError),
    #[error(transparent)]
    Cluster(#[from] common::cluster::ClusterError),
    #[error("cluster map: {0}")]
    Ownership(#[from] crate::ownership::OwnershipError),
    #[error("cluster.secret_file: {0}")]
    Secret(common::secret::SecretError),
    #[error(
        "data directory {dir} was written by engine {found} (format {format}); this store is configured with engine = \"{configured}\": set engine = \"{found}\" or point data_dir elsewhere"
    )]
    EngineMismatch {
        dir: PathBuf,
        found: String,
        format: i64,
        configured: &'static str,
    },
    #[error(
        "data directory {dir} holds a {found} database ({found}/) and no {configured} one; this store is configured with engine = \"{configured}\": set engine = \"{found}\" or point data_dir elsewhere"
    )]
    EngineDirMismatch {
        dir: PathBuf,
        found: &'static str,
        configured: &'static str,
    },
    #[error(
        "data directory {dir} was written by engine {found} (format {format}), which this wa-store does not know: run the wa-store release that wrote it, or point data_dir elsewhere"
    )]
    EngineUnknown {
        dir: PathBuf,
        found: String,
        format: i64,
    },
    #[error(
        "data directory {dir} holds both a sled/ and a fjall/ database and no FORMAT marker naming the one in use; engine = \"auto\" cannot choose: set engine = \"sled\" or \"fjall\" (the one this store ran with)"
    )]
    EngineAmbiguous { dir: PathBuf },
    #[error(
        "data directory {dir} is in on-disk format {format} (engine {engine}); this wa-store reads format {supported} only: run the wa-store release that wrote it, or point data_dir elsewhere"
    )]
    FormatUnsupported {
        dir: PathBuf,
        format: i64,
        engine: String,
        supported: i64,
    },
    #[error("data directory marker {path} is not valid: {what}")]
    FormatCorrupt { path: PathBuf, what: String },
    #[error("cannot {op} data directory marker {path}: {source}")]
    FormatIo {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    #[error("link listener: {0}")]
    Listener(std::io::Error),
    /// An operation panicked on a home shard; the store stopped after the
    /// other shards answered what was durable.
    #[error(
        "an operation panicked on home shard {shard}; stopped without writing that shard back: the next start replays the journal"
    )]
    ShardPanicked { shard: usize },
    /// The map now names this node its island's secondary: it stopped
    /// serving, and must start again to follow the new primary (exit 75).
    #[error(
        "the cluster map (epoch {epoch}) names this node the secondary of its island: stopped serving; start it again to catch up from the new primary"
    )]
    Demoted { epoch: u64 },
    /// A secondary named primary before its catch-up copy was complete.
    #[error(
        "this node is named its island's primary, but its copy of the data is incomplete ({marker} exists: the catch-up from the old primary never finished); serving it would lose data. Promote another copy, or restore this one from a backup and remove the marker"
    )]
    ReplicaIncomplete { marker: PathBuf },
    #[error("push: {0}")]
    Push(String),
    #[error("data directory {dir}: cannot {op}: {source}")]
    DataDir {
        op: &'static str,
        dir: PathBuf,
        source: std::io::Error,
    },
}
