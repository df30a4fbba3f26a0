//! The command line: every subcommand and flag, documented here so that
//! `--help` and the man pages (`wactl man`) teach the tool.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

mod bench;
mod ops;

pub use bench::*;
pub use ops::*;

/// Admin and developer tool of wa.
///
/// Start a local deployment with `wactl up`, then talk through it with
/// `wactl watch` and `wactl send` from other terminals; sign up through its
/// wa-register with `wactl register` (`wactl code` shows the development SMS
/// code). `keygen` and `token` manage token signing keys and mint
/// credentials directly, for tests and demos.
///
/// For operators: `status`, `cluster`, `sessions`, `kick`, `queues`, `expire`, `drain`, `backup`, `user` and `trace` ask the admin
/// listeners of the nodes in the node list (--nodes FILE, default
/// /etc/wa/wactl.toml, or DIR/wactl.toml of a `wactl up` directory with
/// --dir), and print a table, or JSON with --output json. `config defaults`
/// prints a service's full default configuration, `completions` a shell
/// completion script. `bench` loads a running deployment and measures it
/// (one JSON line on stdout).
///
/// Exit codes: 0 success, 1 failure (the message says why), 2 `status`
/// found a node down or not ready (or `drain` left sessions), 3 `user show`
/// or `trace` found nothing, 64 bad arguments.
#[derive(Debug, Parser)]
#[command(name = "wactl", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Keygen(KeygenArgs),
    Token(TokenArgs),
    Up(UpArgs),
    Home(HomeArgs),
    Promote(PromoteArgs),
    Send(SendArgs),
    Group(GroupArgs),
    Watch(WatchArgs),
    Register(RegisterArgs),
    Code(CodeArgs),
    Man(ManArgs),
    Status(StatusArgs),
    #[command(subcommand)]
    Cluster(ClusterCommand),
    Sessions(SessionsArgs),
    Kick(KickArgs),
    Queues(QueuesArgs),
    Expire(ExpireArgs),
    Pumping(PumpingArgs),
    #[command(subcommand)]
    Push(PushCommand),
    Drain(DrainArgs),
    Backup(BackupArgs),
    Restore(RestoreArgs),
    User(UserArgs),
    Trace(TraceArgs),
    Bench(BenchArgs),
    Config(ConfigArgs),
    Completions(CompletionsArgs),
}

/// Which nodes to operate: the node list.
#[derive(Debug, Args)]
pub struct NodesArg {
    /// The node list: TOML with `token_file` (the admin token) and one
    /// `[[node]]` per service (`name`, `service`, `admin` = its admin
    /// listener). Default: /etc/wa/wactl.toml.
    #[arg(long, value_name = "FILE", env = "WACTL_NODES", conflicts_with = "dir")]
    pub nodes: Option<PathBuf>,
    /// A `wactl up` directory: its DIR/wactl.toml.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// How operator commands print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// One JSON document for scripts.
    Json,
}

#[derive(Debug, Args)]
pub struct OutputArg {
    /// Table for people, or JSON for scripts.
    #[arg(long, short, value_enum, default_value = "table")]
    pub output: Output,
}

/// Configuration files.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub command: ConfigCommand,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print SERVICE's full default configuration, every key with a comment
    /// (the sample shipped in packages; tests prove it equals the defaults).
    Defaults {
        #[arg(value_enum)]
        service: ServiceName,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ServiceName {
    WaChat,
    WaStore,
    WaMedia,
    WaRegister,
}

/// Print a completion script for SHELL on stdout.
///
/// For bash: `wactl completions bash > /etc/bash_completion.d/wactl`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Make an island's secondary its primary (failover or switchover by hand).
///
/// Rewrites the cluster map (DIR/cluster.toml, or --map) with ISLAND's
/// primary and secondary swapped and the epoch raised, then sends SIGHUP to
/// every service of a `wactl up` deployment in DIR (their pids are in
/// DIR/run/). On other machines, reload every wa-store, wa-chat and
/// wa-register that reads the map (`systemctl reload`, or SIGHUP) after
/// copying it there. The secondary starts serving once it reads the map
/// (it refuses to if it never finished catching up); the old primary stops
/// serving as soon as it reads it, exits with code 75, and started again
/// follows the new primary.
#[derive(Debug, Args)]
pub struct PromoteArgs {
    /// The island whose secondary takes over (its `name` in the map).
    pub island: String,
    #[command(flatten)]
    pub dir: DirArg,
    /// The cluster map to rewrite, if not DIR/cluster.toml.
    #[arg(long, value_name = "FILE")]
    pub map: Option<PathBuf>,
}

/// Create an Ed25519 token signing key pair.
///
/// Writes DIR/ID.pem (the private signing key, PKCS#8 PEM, mode 0600) and
/// DIR/ID.pub (the public key, SPKI PEM). Edges list the public key under
/// `[tokens] keys` with the same id; `wactl token` signs with the private one.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Directory for the key files (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Key id: the file names and the `key_id` that tokens will name.
    #[arg(long, default_value = "k1")]
    pub id: String,
    /// Replace key files that already exist.
    #[arg(long)]
    pub force: bool,
}

/// Mint a credential token and print it on stdout.
///
/// The token is `v1.<claims>.<signature>`, verified offline by every edge
/// whose key ring holds the public key of KEY-ID.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The private signing key (from `wactl keygen`).
    #[arg(long, value_name = "SIGNING.pem")]
    pub key: PathBuf,
    /// The id the edges know the matching public key by.
    #[arg(long, default_value = "k1")]
    pub key_id: String,
    /// The user id the token authenticates.
    #[arg(long)]
    pub user: String,
    /// The device number of the user.
    #[arg(long, default_value_t = 1)]
    pub device: u32,
    /// The device's credential generation (a newer one revokes older ones).
    #[arg(long, default_value_t = 1)]
    pub generation: u32,
    /// How long the token is valid, e.g. `30m`, `24h`, `7days`.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
}

/// Run a local deployment: one wa-store, wa-chat, wa-media and wa-register.
///
/// Creates DIR if needed with a development PKI (pki/), a token signing key
/// (keys/k1.pem, keys/k1.pub), a cluster secret, a cluster map of N islands
/// (fragments split evenly), a PIN pepper (register/) and config files for
/// the services (existing keys, PKI, secret and map are kept), then starts N
/// wa-stores, M wa-chats, wa-media and wa-register (found next to wactl,
/// else on PATH), waits until all are ready and prints where they listen,
/// which island is whose home and how to try them. With several edges,
/// `send` and `watch` pick one with --edge K. wa-register runs in
/// development mode: SMS codes go to DIR/register/codes.log (`wactl code`)
/// and are printed here as `SMS code for NUMBER: CODE` as they go out.
/// Ctrl-C or SIGTERM stops wa-register, wa-media, wa-chat, then wa-store, and
/// exits 0; if one exits on its own, the others are stopped and wactl exits 1.
#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub dir: DirArg,
    /// Address both services listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,
    /// Port of wa-store's internal link listener (island K listens on
    /// LINK_PORT + K - 1).
    #[arg(long, default_value_t = 7401)]
    pub link_port: u16,
    /// Port of wa-chat for clients, TCP (TLS) and UDP (QUIC) alike (edge K
    /// listens on PORT + K - 1).
    #[arg(long, default_value_t = 7443)]
    pub port: u16,
    /// Islands: wa-store nodes, each the home of an even share of the
    /// fragments. A directory keeps the number it was created with.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub islands: usize,
    /// Edges: wa-chat nodes, each linked to every island.
    #[arg(long, default_value_t = 1, value_name = "M")]
    pub edges: usize,
    /// Give every island a secondary wa-store (island K's listens on
    /// LINK_PORT + N + K - 1) that follows its primary, at durability
    /// `replicated`. Kill a primary (`kill -9`), then `wactl promote
    /// island-K --dir DIR`: the secondary takes over, and the old primary,
    /// started again by wactl up, catches up as the new secondary. A
    /// directory keeps whether it was created with secondaries.
    #[arg(long)]
    pub secondaries: bool,
    /// With --secondaries: start a local etcd (Debian's etcd-server; its
    /// data in DIR/etcd, emptied at every start, its log in DIR/etcd.log)
    /// and run with automatic failover, a 2 s lease: kill a primary and its
    /// secondary takes over by itself within seconds, no `wactl promote`.
    #[arg(long, requires = "secondaries")]
    pub etcd: bool,
    /// Port of wa-media (HTTPS); 0 picks a free one, shown when ready.
    #[arg(long, default_value_t = 0)]
    pub media_port: u16,
    /// Port of wa-register (HTTPS); 0 picks a free one, shown when ready.
    #[arg(long, default_value_t = 0)]
    pub register_port: u16,
    /// TOML tables added to every wa-chat config this writes, e.g. a file
    /// holding `[limits]` `max_connections = 120000` for a bench past the
    /// default 100,000 (see wa-chat.toml(5)). Tables wactl up writes itself
    /// ([listen], [tls], [tokens], [cluster], [shutdown], [admin]) cannot be
    /// repeated; the configs are rewritten at every start, so this is how a
    /// setting stays.
    #[arg(long, value_name = "FILE")]
    pub chat_toml: Option<std::path::PathBuf>,
    /// TOML tables added to every wa-store config this writes, e.g.
    /// `[groups]` or `[cache]` settings (see wa-store.toml(5)); tables wactl
    /// up writes itself ([link], [cluster], [shutdown], [admin]) cannot be
    /// repeated.
    #[arg(long, value_name = "FILE")]
    pub store_toml: Option<std::path::PathBuf>,
}

/// Sign up through a `wactl up` deployment's wa-register.
///
/// Asks wa-register for a code for NUMBER, reads it from the development
/// code file (DIR/register/codes.log), verifies it for a device named NAME
/// and prints the user id, device, generation and the credential. With
/// --pin, sends the registration-lock PIN too.
#[derive(Debug, Args)]
pub struct RegisterArgs {
    #[command(flatten)]
    pub dir: DirArg,
    /// The phone number, E.164 (`+15550001234`).
    #[arg(long)]
    pub number: String,
    /// A name for the device.
    #[arg(long, default_value = "wactl")]
    pub name: String,
    /// The registration-lock PIN, if the number has one.
    #[arg(long)]
    pub pin: Option<String>,
    /// wa-register's address (default: the one the running `wactl up`
    /// wrote to DIR/register/addr).
    #[arg(long)]
    pub addr: Option<std::net::SocketAddr>,
}

/// Print the last development SMS code sent to a number.
///
/// Reads DIR/register/codes.log, where a `wactl up` deployment's
/// wa-register (development mode, `log` SMS provider) writes every code.
/// Exits 1 if no code was sent to NUMBER.
#[derive(Debug, Args)]
pub struct CodeArgs {
    #[command(flatten)]
    pub dir: DirArg,
    /// The phone number, E.164 (`+15550001234`).
    #[arg(long)]
    pub number: String,
}

/// The deployment directory shared by `up`, `send` and `watch`.
#[derive(Debug, Clone, Args)]
pub struct DirArg {
    /// Deployment directory created by `wactl up`.
    #[arg(long, default_value = "./wa-dev", value_name = "DIR")]
    pub dir: PathBuf,
}

/// What `wactl send` waits for before it exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WaitFor {
    /// One tick: the recipient's home stored the message.
    Accepted,
    /// Two ticks: the recipient's device acknowledged it.
    Delivered,
    /// Blue ticks: the recipient marked it read.
    Read,
}

/// Send one text message through a `wactl up` deployment.
///
/// Mints a token for FROM with DIR/keys/k1.pem, connects to the wa-chat of
/// DIR/wa-chat.toml, sends TEXT to TO, prints the message's id on stderr
/// (`id HEX`, for `wactl trace`) and `accepted`, then, as --wait
/// asks, `delivered` and `read` when those receipts arrive (acknowledging
/// them). Exits 1 if the message is rejected or the wait times out.
#[derive(Debug, Args)]
pub struct SendArgs {
    #[command(flatten)]
    pub dir: DirArg,
    /// The sender's user id.
    #[arg(long)]
    pub from: String,
    /// The recipient's user id.
    #[arg(long)]
    pub to: String,
    #[command(flatten)]
    pub transport: TransportArg,
    #[command(flatten)]
    pub edge: EdgeArg,
    /// Wait until the message is accepted, delivered or read.
    #[arg(long, value_enum, default_value = "accepted")]
    pub wait: WaitFor,
    /// Give up (exit 1) when the wait takes longer than this.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// The message text.
    pub text: String,
}

/// Make, change, read and send to a group through a `wactl up` deployment.
///
/// Connects as USER (a token minted with DIR/keys/k1.pem) to the wa-chat of
/// DIR/wa-chat.toml and makes one request: prints the group after a change
/// (`group ID`, `subject`, `version`, then one `USER ROLE` line per member),
/// `accepted` after a send. Exits 1 if the request is refused (the code
/// says why: NOT_ADMIN, GROUP_FULL, NOT_A_MEMBER...) or takes longer than
/// --timeout. `wactl watch` prints group messages as `GROUP FROM: TEXT`.
#[derive(Debug, Args)]
pub struct GroupArgs {
    #[command(flatten)]
    pub dir: DirArg,
    /// The user id to act as.
    #[arg(long)]
    pub user: String,
    #[command(flatten)]
    pub transport: TransportArg,
    #[command(flatten)]
    pub edge: EdgeArg,
    /// Give up (exit 1) when the answer takes longer than this.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    #[command(subcommand)]
    pub op: GroupOp,
}

#[derive(Debug, Subcommand)]
pub enum GroupOp {
    /// A new group of USER (its admin) and MEMBERS; prints its id.
    Create {
        /// The group's subject (at most 100 bytes).
        #[arg(long, default_value = "")]
        subject: String,
        /// User ids of the first members (at most 256).
        members: Vec<String>,
    },
    /// Add MEMBERS to GROUP (admins only).
    Add {
        group: String,
        #[arg(required = true)]
        members: Vec<String>,
    },
    /// Remove MEMBERS from GROUP (admins only).
    Remove {
        group: String,
        #[arg(required = true)]
        members: Vec<String>,
    },
    /// Send TEXT to every member of GROUP.
    Send { group: String, text: String },
    /// Print GROUP and its members (members only).
    Show { group: String },
}

/// Tell which island is the home of each USER in a `wactl up` deployment.
///
/// Reads DIR/cluster.toml and prints, per user, its fragment, the island
/// that owns it and that island's primary store.
#[derive(Debug, Args)]
pub struct HomeArgs {
    #[command(flatten)]
    pub dir: DirArg,
    /// User ids (or phone numbers: a number's record lives at its own home).
    #[arg(required = true)]
    pub users: Vec<String>,
}

/// Which edge of a `wactl up --edges M` deployment to connect to.
#[derive(Debug, Clone, Args)]
pub struct EdgeArg {
    /// Edge number, 1 to M (DIR/wa-chat.toml is edge 1, DIR/wa-chat-K.toml edge K).
    #[arg(long, default_value_t = 1, value_name = "K")]
    pub edge: usize,
}

/// Receive as a user through a `wactl up` deployment, until Ctrl-C.
///
/// Prints every message as `FROM: TEXT` and every receipt, acknowledging each
/// (which sends the delivered receipt to the sender); with --read also marks
/// each message read (blue ticks). For the group messages USER sent, every
/// change prints `GROUP ID receipts: delivered N/M read K/M`, with
/// `delivered to all`, `read by all` and `read by: MEMBERS` as they come; an
/// aggregated receipt item prints as `GROUP delivered MEMBER:COUNT ...`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub dir: DirArg,
    /// The user id to receive as.
    #[arg(long)]
    pub user: String,
    /// Mark every message read as soon as it is printed.
    #[arg(long)]
    pub read: bool,
    #[command(flatten)]
    pub transport: TransportArg,
    #[command(flatten)]
    pub edge: EdgeArg,
}

#[derive(Debug, Args)]
#[group(multiple = false)]
pub struct TransportArg {
    /// Connect with TLS over TCP (the default).
    #[arg(long)]
    pub tcp: bool,
    /// Connect with QUIC.
    #[arg(long)]
    pub quic: bool,
}

/// Write man pages for wactl and each subcommand.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Directory for the pages (created if missing): wactl.1, wactl-up.1, ...
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}
