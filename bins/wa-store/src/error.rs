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
}
