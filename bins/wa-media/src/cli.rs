//! The command line of `wa-media`, here rather than in `main.rs` so that the
//! man page generator (`cargo run -p wa-tests --example generate`) renders
//! the same definition.

use std::path::PathBuf;

use clap::Parser;

/// The wa media node: HTTPS upload and download of media blobs, stored once
/// per content (SHA-256), authenticated with the same tokens as wa-chat, and
/// deleted when they expire (docs/MEDIA.md).
///
/// Prints `READY wa-media http=ADDR admin=ADDR` on stdout and notifies
/// systemd once both listeners are bound. SIGTERM or SIGINT: /readyz turns
/// not-ready, stop accepting, finish requests in flight up to the grace
/// period, exit 0. SIGHUP: read the TLS certificate, the log level and the
/// admin token again; never exits.
///
/// Exit codes: 0 clean stop, 64 bad arguments or configuration, 1 runtime failure.
#[derive(Parser)]
#[command(name = "wa-media", version)]
pub struct Args {
    /// Configuration file (TOML). See wa-media.toml(5) and docs/MEDIA.md.
    #[arg(
        long,
        short,
        env = "WA_MEDIA_CONFIG",
        default_value = "/etc/wa/wa-media.toml"
    )]
    pub config: PathBuf,
    #[command(flatten)]
    pub flags: common::service::Flags,
}
