//! The errors `wa-store` returns from [`crate::run`]: one enum for the
//! boundary between the library and `main.rs`, which maps them to exit codes.

use std::path::PathBuf;

use crate::config::ConfigError;
use crate::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("link TLS: {0}")]
    Tls(#[from] common::tls::TlsError),
    #[error(transparent)]
    Cluster(#[from] common::cluster::ClusterError),
    #[error("cannot read cluster secret {path}: {source}")]
    SecretRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cluster secret {path} holds {len} bytes; at least {min} are required")]
    SecretShort {
        path: PathBuf,
        len: usize,
        min: usize,
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
}
