//! `common`: what more than one wa binary needs.
//!
//! - [`proto`]: the client wire protocol (types, framing, error codes, limits);
//!   pure, no I/O, no clock.
//! - [`link`]: the internal edge <-> home messages.
//! - [`token`]: Ed25519 credential tokens.
//! - [`cluster`]: the cluster map and fragment hashing.
//! - with the `net` feature: [`wire`] (async frame I/O), [`tls`] (rustls/quinn
//!   configuration on the *ring* provider), [`client`] (the client library)
//!   [`link_dial`] and [`link_keeper`] (opening the internal link, and the
//!   one reconnect loop) and [`link_client`] (request/response over it).

pub mod cluster;
pub mod config;
pub mod fsutil;
pub mod link;
pub mod proto;
pub mod token;

#[cfg(feature = "net")]
pub mod client;
#[cfg(feature = "https-server")]
pub mod https_server;
#[cfg(feature = "net")]
pub mod link_client;
#[cfg(feature = "net")]
pub mod link_dial;
#[cfg(feature = "net")]
pub mod link_keeper;
#[cfg(feature = "service")]
pub mod service;
#[cfg(feature = "net")]
pub mod tls;
#[cfg(feature = "net")]
pub mod wire;
