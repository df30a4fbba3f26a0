//! What can go wrong calling the client library.

use std::net::SocketAddr;
use std::time::Duration;

use crate::proto::Code;
use crate::tls::TlsError;
use crate::wire::ReadError;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    TlsConfig(#[from] TlsError),
    #[error("{0:?} is not a valid TLS server name")]
    ServerName(String),
    #[error("cannot bind a local UDP socket for QUIC: {0}")]
    Bind(std::io::Error),
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS handshake with {addr} failed: {source}")]
    Handshake {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("QUIC connection to {addr} failed: {reason}")]
    Quic { addr: SocketAddr, reason: String },
    #[error("connecting to {addr} took longer than {after:?}")]
    Timeout { addr: SocketAddr, after: Duration },
    #[error("the server refused the connection: {code}: {message}")]
    Refused {
        code: Code,
        message: String,
        /// When the server said a new attempt may be made.
        retry_after: Option<Duration>,
    },
    #[error("the server closed the connection before its Welcome")]
    ClosedBeforeWelcome,
    #[error("the server sent something other than Welcome first")]
    UnexpectedFrame,
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("write failed: {0}")]
    Write(std::io::Error),
    #[error("{0:?} is not a valid user id")]
    BadUser(String),
    #[error("{0:?} is not a group id")]
    BadGroup(String),
    #[error("a body of {len} bytes exceeds the limit of {max}")]
    BodyTooLarge { len: usize, max: usize },
    #[error("{0}")]
    BadMedia(&'static str),
    #[error("bad push endpoint: {0}")]
    BadPushEndpoint(&'static str),
    #[error("{len} ids in one receipt exceed the limit of {max}")]
    TooManyIds { len: usize, max: usize },
    #[error("{0} sends are waiting for Accepted already")]
    TooManyPending(usize),
    #[error("the client is closed")]
    Closed,
}

impl ClientError {
    /// The protocol code the server answered with, if it was the server that refused.
    pub fn code(&self) -> Option<Code> {
        match self {
            ClientError::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }
}
