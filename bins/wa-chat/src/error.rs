//! The errors `wa-chat` returns from [`crate::run`]: one enum for the boundary
//! between the library and `main.rs`, which maps them to exit codes.

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
    #[error("cluster.secret_file: {0}")]
    Secret(common::secret::SecretError),
    #[error(transparent)]
    Routing(crate::routing::BadServerName),
    #[error("QUIC endpoint: {0}")]
    Quic(std::io::Error),
}
