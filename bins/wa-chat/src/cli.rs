//! The command line of `wa-chat`, here rather than in `main.rs` so that the
//! man page generator (`cargo run -p wa-tests --example generate`) renders
//! the same definition.

use std::path::PathBuf;

use clap::Parser;

/// The wa edge: holds client connections (TLS 1.3 over TCP and QUIC, ALPN
/// `wa/1`), authenticates them by token and relays their traffic to the homes
/// of the users involved over the internal link.
///
/// Prints `READY wa-chat tcp=ADDR quic=ADDR admin=ADDR` on stdout (`-` for a
/// disabled listener) and notifies systemd once the listeners are bound.
/// SIGTERM or SIGINT: /readyz turns not-ready, stop accepting, tell every
/// client Goodbye, wait for the sessions up to the grace period, exit 0.
/// SIGHUP: read the cluster map, the TLS certificate, the log level and the
/// admin token again; never exits.
///
/// Exit codes: 0 clean stop, 64 bad arguments or configuration, 1 runtime failure.
#[derive(Parser)]
#[command(name = "wa-chat", version)]
pub struct Args {
    /// Configuration file (TOML). See wa-chat.toml(5) and docs/OPERATIONS.md.
    #[arg(
        long,
        short,
        env = "WA_CHAT_CONFIG",
        default_value = "/etc/wa/wa-chat.toml"
    )]
    pub config: PathBuf,
    #[command(flatten)]
    pub flags: common::service::Flags,
}
