//! What a [`Client`](super::Client) needs to know before it connects.

use std::net::SocketAddr;
use std::time::Duration;

use rustls_pki_types::CertificateDer;

/// How the client reaches the edge. Both carry the same frames.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    /// TLS 1.3 over TCP.
    Tcp,
    /// QUIC, one bidirectional stream for all frames.
    Quic,
}

/// Client settings. [`ClientConfig::new`] fills in the defaults; the public
/// fields can be changed before [`Client::connect`](super::Client::connect).
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The edge (wa-chat) address for `transport`.
    pub addr: SocketAddr,
    pub transport: Transport,
    /// The name the edge's certificate must carry.
    pub server_name: String,
    /// Trust anchors for the edge's certificate.
    pub roots: Vec<CertificateDer<'static>>,
    /// The credential token sent in `Hello`.
    pub token: String,
    /// Sent in `Hello.client`, for the server's logs (at most 64 bytes).
    pub client_name: String,
    /// First reconnect delay; doubled per failed attempt, with jitter.
    pub backoff_initial: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// Most sends and read receipts waiting for `Accepted`; beyond it
    /// [`Client::send`](super::Client::send) fails with
    /// [`ClientError::TooManyPending`](super::ClientError::TooManyPending).
    pub max_pending: usize,
}

impl ClientConfig {
    pub fn new(
        addr: SocketAddr,
        transport: Transport,
        server_name: String,
        roots: Vec<CertificateDer<'static>>,
        token: String,
    ) -> Self {
        Self {
            addr,
            transport,
            server_name,
            roots,
            token,
            client_name: concat!("wa-client-rs/", env!("CARGO_PKG_VERSION")).to_string(),
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            max_pending: 10_000,
        }
    }
}
