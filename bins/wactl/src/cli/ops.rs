//! The operator's commands over the admin listeners (`wactl status`,
//! `sessions`, `kick`, `queues`, `expire`, `pumping`, `push`, `drain`,
//! `user`, `trace`, `backup`, `restore`): their arguments, documented here
//! so that `--help` and the man pages teach them.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::{NodesArg, OutputArg};

/// Show every node: up or down, ready or not, version, uptime, connections,
/// cluster epoch and link queues.
///
/// A node that does not answer or is not ready is shown in capitals and
/// makes the exit code 2.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub nodes: NodesArg,
    #[command(flatten)]
    pub output: OutputArg,
}

/// The islands of the cluster, as their wa-store nodes report them.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    Status(ClusterStatusArgs),
    CatchUp(CatchUpArgs),
}

/// Show every island: its epoch, each wa-store node's role (primary,
/// secondary, or fenced: a primary that may not serve), how far the stream
/// has come (LSN) and how far the secondary is behind (records and seconds).
///
/// Reads the wa-store nodes of the node list. Exit code 2 if a node does
/// not answer, an island has no serving primary, a secondary is not caught
/// up (it could not take over), or a primary goes on without its secondary.
#[derive(Debug, Args)]
pub struct ClusterStatusArgs {
    #[command(flatten)]
    pub nodes: NodesArg,
    #[command(flatten)]
    pub output: OutputArg,
}

/// Wait until every secondary has caught up with its primary, with a
/// progress bar for each catch-up copy under way.
///
/// A new, wiped or long-absent secondary first receives a copy of its
/// primary's data, then the stream; it could take over only once that copy
/// is complete. Exit code 0 once every secondary of the node list is caught
/// up, 2 if one is not by --timeout, 1 if a node cannot be asked.
#[derive(Debug, Args)]
pub struct CatchUpArgs {
    #[command(flatten)]
    pub nodes: NodesArg,
    /// How long to wait.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// List USER's sessions on every edge: edge, session id, device, since when.
#[derive(Debug, Args)]
pub struct SessionsArgs {
    #[command(flatten)]
    pub nodes: NodesArg,
    #[command(flatten)]
    pub output: OutputArg,
    /// The user id.
    pub user: String,
}

/// End USER's sessions (of one DEVICE, or all) on every edge.
///
/// The clients hear UNAVAILABLE and reconnect after a pause; to keep a user
/// out, revoke the device's credentials instead.
#[derive(Debug, Args)]
pub struct KickArgs {
    #[command(flatten)]
    pub nodes: NodesArg,
    #[command(flatten)]
    pub output: OutputArg,
    /// The user id.
    pub user: String,
    /// Only this device.
    pub device: Option<u32>,
}

/// Show the longest mailboxes of every store (as of each store's last sweep).
#[derive(Debug, Args)]
pub struct QueuesArgs {
    #[command(flatten)]
    pub nodes: NodesArg,
    #[command(flatten)]
    pub output: OutputArg,
    /// Mailboxes shown per store.
    #[arg(long, default_value_t = 10)]
    pub limit: usize,
}

/// Delete, on every store now, the undelivered items older than its
/// `[mailbox] expire_after`, instead of waiting for its next sweep
/// (`[mailbox] sweep_interval`).
///
/// Prints how many items each store deleted. Secondaries are skipped
/// (their primary's deletions reach them through replication).
#[derive(Debug, Args)]
pub struct ExpireArgs {
    #[command(flatten)]
    pub nodes: NodesArg,
    #[command(flatten)]
    pub output: OutputArg,
    /// Run the expiry sweep now (required: there is no other mode yet).
    #[arg(long, required = true)]
    pub now: bool,
}

/// The SMS-pumping signal of every wa-register: which number prefixes it
/// holds to `pumping.tightened` now, and their release by an operator.
///
/// A prefix is tightened when many codes go to it and few are verified
/// (docs/REGISTER.md, "SMS pumping"); it stays so for `pumping.window`
/// unless released here. Without --release, lists the tightened prefixes.
#[derive(Debug, Args)]
pub struct PumpingArgs {
    #[command(flatten)]
    pub nodes: NodesArg,
    #[command(flatten)]
    pub output: OutputArg,
    /// Release this prefix on every wa-register: its code requests get the
    /// normal per-prefix rate again. Either the prefix (`+881912`) or the
    /// form the list shows (`+8819**`, digits hidden so that logs and
    /// screens never show most of a number).
    #[arg(long, value_name = "PREFIX")]
    pub release: Option<String>,
}

/// Push notifications.
#[derive(Debug, Subcommand)]
pub enum PushCommand {
    Test(PushTestArgs),
}

/// Send one push now to a device's registered endpoint (APNs, FCM or
/// UnifiedPush), outside the queue, and print what the provider answered.
///
/// Asks every store of the node list; the user's home answers. Exit 1 if
/// the device has no endpoint or the provider refused the push.
#[derive(Debug, Args)]
pub struct PushTestArgs {
    #[command(flatten)]
    pub nodes: NodesArg,
    #[command(flatten)]
    pub output: OutputArg,
    /// The user id.
    pub user: String,
    /// The device number.
    pub device: u32,
}

/// Take an edge out of service: it turns not ready, refuses new clients and
/// ends its sessions spread over --over, so that they reconnect to the
/// other edges a few at a time.
///
/// Shows progress on stderr and returns when no session is left; exit 2 if
/// some remain after the window and --grace.
#[derive(Debug, Args)]
pub struct DrainArgs {
    #[command(flatten)]
    pub nodes: NodesArg,
    #[command(flatten)]
    pub output: OutputArg,
    /// The edge's name in the node list (`chat-1`).
    pub edge: String,
    /// The window over which the sessions are ended.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub over: Duration,
    /// How long after the window to wait for the last sessions.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub grace: Duration,
}

/// An account at its home: show it, ban or unban it, delete it.
///
/// Asks every wa-store of the node list; the one that is USER's home
/// answers (the node list must name it).
#[derive(Debug, Args)]
pub struct UserArgs {
    #[command(subcommand)]
    pub command: UserCommand,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    Show(UserShowArgs),
    Ban(UserBanArgs),
    Unban(UserShowArgs),
    Delete(UserDeleteArgs),
}

/// Show USER: account (phone number, devices, registration), device
/// generations, sessions, mailbox length, last seen, ban. Never message
/// contents.
///
/// Exit 3 if the home knows nothing of USER (no account, no device, an
/// empty mailbox).
#[derive(Debug, Args)]
pub struct UserShowArgs {
    #[command(flatten)]
    pub nodes: NodesArg,
    #[command(flatten)]
    pub output: OutputArg,
    /// The user id.
    pub user: String,
}

/// Ban USER: its sessions end with BANNED and every new login is refused
/// with BANNED (code 34) until `wactl user unban`. Messages to USER are
/// still stored.
#[derive(Debug, Args)]
pub struct UserBanArgs {
    #[command(flatten)]
    pub nodes: NodesArg,
    #[command(flatten)]
    pub output: OutputArg,
    /// The user id.
    pub user: String,
    /// Why (kept with the ban, shown by `user show`).
    #[arg(long, default_value = "")]
    pub reason: String,
}

/// Delete USER: the account record, its phone number's record, the
/// mailbox; every device is revoked (its sessions end with REVOKED and its
/// credentials are refused for good). The number can then register again,
/// as a new account.
#[derive(Debug, Args)]
pub struct UserDeleteArgs {
    #[command(flatten)]
    pub nodes: NodesArg,
    #[command(flatten)]
    pub output: OutputArg,
    /// The user id.
    pub user: String,
    /// Really delete (there is no undo but a restore).
    #[arg(long, required = true)]
    pub yes: bool,
}

/// Where the message MESSAGE_ID from FROM to TO is now, from the records
/// of TO's home: stored (accepted or not yet), in memory (and the
/// journal) or in the engine, pushed to which session, acknowledged,
/// deleted, and its delivered receipt.
///
/// MESSAGE_ID is the 32 hex digits of the message id (`wactl send` prints
/// it). A home remembers ids of messages delivered from memory for 5
/// minutes; older ones are found only while in the engine. Exit 3 if the
/// home has no record of the message.
#[derive(Debug, Args)]
pub struct TraceArgs {
    #[command(flatten)]
    pub nodes: NodesArg,
    #[command(flatten)]
    pub output: OutputArg,
    /// The message id, 32 hex digits.
    pub message_id: String,
    /// The sender's user id.
    #[arg(long)]
    pub from: String,
    /// The recipient's user id.
    #[arg(long)]
    pub to: String,
}

/// Copy a running store's data (every mailbox and every account, phone
/// number and device generation) into DIR on the store's machine, while it
/// serves.
///
/// The copy is consistent: it holds everything the store had accepted
/// when the backup began (and more). DIR is a data directory a fresh store
/// can start from (`wactl restore`); it must be absent or empty, and the
/// store's user must be able to create it. A relative DIR is taken from
/// wactl's working directory (so as the store's own path when wactl runs on
/// the store's machine). Shows progress on stderr; exit 0 once the copy is
/// complete, 1 if it failed or the store refused (a secondary, a backup
/// already under way, DIR not empty).
#[derive(Debug, Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub nodes: NodesArg,
    #[command(flatten)]
    pub output: OutputArg,
    /// The store's name in the node list (`store-1`); it must be a primary.
    pub store: String,
    /// Where the copy goes, on the store's machine.
    #[arg(value_name = "DIR")]
    pub into: PathBuf,
    /// How long to wait for the copy to complete.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// Make DATA_DIR a copy of the backup BACKUP, for a store to start from.
///
/// Run it on the store's machine with the store stopped, as the store's
/// user (or chown the result to it). DATA_DIR must be absent or empty: a
/// restore never mixes a backup with other data. The store's `engine`
/// must be `auto` (the default) or the one the backup names. Copies into DATA_DIR.restoring first
/// and renames it, so an interrupted restore leaves no half data directory.
/// Exit 0 when done, 1 if BACKUP is not a complete backup or DATA_DIR is
/// not empty.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub output: OutputArg,
    /// A directory `wactl backup` wrote.
    pub backup: PathBuf,
    /// The store's `data_dir` (absent or empty).
    pub data_dir: PathBuf,
}
