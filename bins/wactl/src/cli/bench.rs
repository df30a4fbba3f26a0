//! The arguments of `wactl bench`.

use std::time::Duration;

use clap::{Args, ValueEnum};

use super::{DirArg, EdgeArg};

/// What `wactl bench` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// SESSIONS log in (at most --concurrency at a time): logins per
    /// second, login latency, server CPU per login, RSS per session.
    Login,
    /// SESSIONS log in and stay idle for --duration, pinging on the
    /// keepalive the server announces: server CPU share of a core and RSS
    /// per idle session.
    Idle,
    /// SESSIONS/2 sender–receiver pairs, open loop at --rate messages a
    /// second for --duration (with --sweep, again at 1.5 times the rate
    /// until p99 exceeds --p99-limit or a message is lost): latency from
    /// the time each message was due to its delivery, server CPU per
    /// delivered message.
    Pairs,
    /// --messages queued for SESSIONS/2 offline receivers, then the
    /// receivers log in and drain them: drain time, CPU per message.
    Offline,
    /// SESSIONS connected are dropped at once (no Goodbye) and log in again
    /// at once, honouring retry-after with jitter: time until all are back,
    /// refusals, peak server memory.
    Storm,
}

/// The client transport of `wactl bench`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchTransport {
    /// TLS 1.3 over TCP.
    Tcp,
    /// QUIC.
    Quic,
}

/// Load a running `wactl up` deployment and measure it.
///
/// Sessions are users `bench-RUN-K` (RUN is new every run), with tokens
/// minted from DIR/keys/k1.pem, in pairs: session 2P sends to 2P+1. The
/// bench speaks the wire protocol itself (not through the client library,
/// whose resends and deduplication would hide faults) and counts, from the
/// raw frames, messages lost (handed to a sender, never received),
/// duplicated (received twice on one connection, or again after the server
/// confirmed reading the ack), redelivered (again on a later connection,
/// ack unconfirmed: at-least-once at work) and reordered (received after a
/// later message of the same sender). Every scenario but `pairs` and
/// `offline` ends with --check messages per pair to count them.
///
/// Server CPU and memory come from /proc/PID of the services named by
/// --servers (their pids in DIR/run/), the host's steal time from
/// /proc/stat, each sampled at the edges of every measured window; the
/// bench measures its own CPU the same way. Sessions are spread over
/// --workers processes (wactl bench runs itself again), by default one per
/// 16,000 sessions, since a process holds at most about 19,000 sockets.
///
/// Progress goes to stderr; stdout gets exactly one line, a JSON summary.
/// Exits 1 when the run cannot be made (no deployment, logins that never
/// succeed); faults found are reported in the summary, not by the exit
/// code.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    #[arg(value_enum)]
    pub scenario: Scenario,
    #[command(flatten)]
    pub dir: DirArg,
    #[command(flatten)]
    pub edge: EdgeArg,
    /// How the sessions connect.
    #[arg(long, value_enum, default_value = "tcp")]
    pub transport: BenchTransport,
    /// Sessions (an even number: pairs of sender and receiver).
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub sessions: usize,
    /// Worker processes the sessions are spread over (0: one per 16,000
    /// sessions).
    #[arg(long, default_value_t = 0, value_name = "W")]
    pub workers: usize,
    /// TCP sessions connect from 127.0.0.1 to 127.0.0.K in turn (0: the
    /// kernel's choice), for more than one address's ephemeral ports.
    #[arg(long, default_value_t = 0, value_name = "K")]
    pub source_addresses: u8,
    /// Logins in flight at most, over all workers.
    #[arg(long, default_value_t = 1000)]
    pub concurrency: usize,
    /// `pairs`: messages per second, over all pairs.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// `pairs`: raise the rate by half after every step that met
    /// --p99-limit without loss, until one does not (or --max-rate).
    #[arg(long)]
    pub sweep: bool,
    /// `pairs --sweep`: the highest rate tried.
    #[arg(long, default_value_t = 1_000_000.0)]
    pub max_rate: f64,
    /// `pairs --sweep`: the p99 latency a step must stay within.
    #[arg(long, default_value = "50ms", value_parser = humantime::parse_duration)]
    pub p99_limit: Duration,
    /// `pairs`: length of each step; `idle`: how long the sessions idle.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// `offline`: messages queued, over all pairs.
    #[arg(long, default_value_t = 10_000)]
    pub messages: u64,
    /// Messages per pair in the check that ends `login`, `idle` and
    /// `storm` (and opens the storm).
    #[arg(long, default_value_t = 5)]
    pub check: u64,
    /// Bytes per message body (at least 16: the number and the send time).
    #[arg(long, default_value_t = 64)]
    pub body: usize,
    /// Longest wait for all sessions to log in.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
    /// Longest wait for the messages sent to arrive, after which the
    /// missing ones count as lost.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,
    /// `storm`: longest wait for all sessions to be back.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub storm_timeout: Duration,
    /// The server processes measured: DIR/run/NAME*.pid.
    #[arg(long, value_delimiter = ',', default_value = "wa-chat,wa-store")]
    pub servers: Vec<String>,
    /// (Internal: this process is worker INDEX/COUNT/RUN of a bench.)
    #[arg(long, hide = true)]
    pub worker_of: Option<String>,
}
