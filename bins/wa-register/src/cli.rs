//! The command line of `wa-register`, here rather than in `main.rs` so that the
//! man page generator (`cargo run -p wa-tests --example generate`) renders
//! the same definition.

use std::path::PathBuf;

use clap::Parser;

/// The wa registration service: phone number + one-time code signup over
/// HTTPS, registration-lock PINs, and the credentials wa-chat and wa-media
/// verify. Accounts live at their users' homes in wa-store (docs/REGISTER.md).
///
/// Prints `READY wa-register http=ADDR admin=ADDR` on stdout (the HTTPS
/// listener and the admin listener) and notifies systemd once both are
/// bound. SIGTERM or SIGINT: /readyz turns not-ready, stop accepting, finish
/// requests in flight up to the grace period, exit 0. SIGHUP: read the
/// cluster map, the TLS certificate, the log level and the admin token
/// again; never exits.
///
/// Exit codes: 0 clean stop, 64 bad arguments or configuration, 1 runtime failure.
#[derive(Parser)]
#[command(name = "wa-register", version)]
pub struct Args {
    /// Configuration file (TOML). See wa-register.toml(5) and docs/REGISTER.md.
    #[arg(
        long,
        short,
        env = "WA_REGISTER_CONFIG",
        default_value = "/etc/wa/wa-register.toml"
    )]
    pub config: PathBuf,
    #[command(flatten)]
    pub flags: common::service::Flags,
}
