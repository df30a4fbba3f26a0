//! `common`: what more than one wa binary needs.
//!
//! - [`proto`]: the client wire protocol (types, framing, error codes, limits);
//!   pure, no I/O, no clock.
//! - [`link`]: the internal edge <-> home messages.
//! - [`token`]: Ed25519 credential tokens.
//! - [`cluster`]: the cluster map and fragment hashing.
//! - [`group`]: groups as a pure state machine (ids, record, changes, recipients).
//! - [`secret`]: the one reader of secret files (owner-only).
//! - [`reminder`]: rate-limited log lines for a condition that lasts.
//! - [`sections`]: config sections the services share.
//! - with the `net` feature: [`wire`] (async frame I/O), [`tls`] (rustls/quinn
//!   configuration on the *ring* provider), [`client`] (the client library)
//!   [`link_dial`] and [`link_keeper`] (opening the internal link, and the
//!   one reconnect loop), [`link_liveness`] (its heartbeat), [`link_client`] (request/response over it), and
//!   [`rlimit`], the open-files limit every binary raises at start.
//! - with the `coordination` feature: `coordination` (the cluster map and
//!   primaries' leases in etcd, for automatic failover).
//! - with the `service` feature: [`service`] (the chassis every service
//!   binary runs in) and [`admin`] (the admin listener).

pub mod cluster;
pub mod config;
pub mod fsutil;
pub mod group;
pub mod link;
pub mod privacy;
pub mod proto;
pub mod reminder;
pub mod secret;
pub mod sections;
pub mod token;
pub mod token_cache;
pub mod user_groups;

#[cfg(feature = "service")]
pub mod admin;
#[cfg(feature = "net")]
pub mod client;
#[cfg(feature = "coordination")]
pub mod coordination;
#[cfg(feature = "https-server")]
pub mod https_server;
#[cfg(feature = "net")]
pub mod link_client;
#[cfg(feature = "net")]
pub mod link_dial;
#[cfg(feature = "net")]
pub mod link_keeper;
pub mod link_liveness;
#[cfg(feature = "net")]
pub mod rlimit;
#[cfg(feature = "service")]
pub mod service;
#[cfg(feature = "net")]
pub mod timer;
#[cfg(feature = "net")]
pub mod tls;
#[cfg(feature = "net")]
pub mod wire;
