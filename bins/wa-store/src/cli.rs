//! The command line of `wa-store`, here rather than in `main.rs` so that the
//! man page generator (`cargo run -p wa-tests --example generate`) renders
//! the same definition.

use std::path::PathBuf;

use clap::Parser;

/// The home of wa users: mailboxes, receipts, last seen.
///
/// Edges (wa-chat) connect over the internal link (TLS, cluster secret).
/// Prints `READY wa-store link=ADDR admin=ADDR` on stdout (and notifies
/// systemd) once the database is open and the link listener is bound.
/// SIGTERM or SIGINT: /readyz turns not-ready, stop accepting, answer
/// in-flight appends after their flush, flush, exit 0. SIGHUP: read the
/// cluster map (its epoch must rise with every change), the link
/// certificate, the log level and the admin token again; never exits.
///
/// A node the map names its island's secondary follows the primary and
/// serves nothing until a map names it primary (it prints `CAUGHT-UP
/// wa-store lsn=N` once its copy is complete); with `[coordination] etcd`
/// the map lives in etcd and a secondary takes over by itself.
///
/// Exit codes: 0 clean stop, 64 bad arguments or configuration, 1 runtime
/// failure (among them a panic in a home shard: start it again, and the
/// journal is replayed), 75 the map made this primary the secondary (start
/// it again: it catches up from the new primary).
#[derive(Parser)]
#[command(name = "wa-store", version)]
pub struct Args {
    /// Configuration file (TOML). See wa-store.toml(5) and docs/OPERATIONS.md.
    #[arg(
        long,
        short,
        env = "WA_STORE_CONFIG",
        default_value = "/etc/wa/wa-store.toml"
    )]
    pub config: PathBuf,
    #[command(flatten)]
    pub flags: common::service::Flags,
}
