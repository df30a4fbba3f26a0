//! The errors `wa-chat` returns from [`crate::run`]: one enum for the boundary
//! between the library and `main.rs`, which maps them to exit codes.

use std::path::PathBuf;

use crate::config::ConfigError;

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("client TLS: {0}")]
    Tls(common::tls::TlsError),
    #[error("cluster CA: {0}")]
    ClusterCa(common::tls::TlsError),
    #[error(transparent)]
    Cluster(#[from] common::cluster::ClusterError),
    #[error("token key {id:?}: {source}")]
    TokenKey {
        id: String,
        source: common::token::keyfile::KeyFileError,
    },
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
    Routing(crate::routing::BadServerName),
    #[error("QUIC endpoint: {0}")]
    Quic(std::io::Error),
}
