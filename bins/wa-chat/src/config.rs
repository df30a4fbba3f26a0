//! The configuration of `wa-chat`: a TOML file parsed into [`Config`], then
//! checked by [`Config::validate`] (pure) and [`Config::check_files`] (reads
//! every file the edge needs), each reporting every problem at once with the
//! key it concerns. The shipped sample is `packaging/etc/wa-chat.toml`.
//!
//! ```toml
//! name = "chat-1"
//! [listen]
//! tcp = "0.0.0.0:5222"
//! quic = "0.0.0.0:5222"
//! [tls]
//! cert = "/etc/wa/tls/wa-chat.pem"
//! key = "/etc/wa/tls/wa-chat.key"
//! [tokens]
//! keys = [{ id = "k1", public_key = "/etc/wa/keys/k1.pub" }]
//! [cluster]
//! map = "/etc/wa/cluster.toml"
//! ca = "/etc/wa/link/ca.pem"
//! secret_file = "/etc/wa/cluster.secret"
//! [limits]
//! auth_timeout = "10s"
//! idle_timeout = "600s"
//! keepalive = "240s"
//! outbound_queue = 1024
//! max_connections = 100000
//! request_memory = "256 MiB"
//! delivery_memory = "256 MiB"
//! slow_consumer_after = "60s"
//! [link]
//! heartbeat = "1s"
//! timeout = "3s"
//! request_timeout = "10s"
//! [shutdown]
//! grace = "10s"
//! retry_after = "5s"
//! [admin]
//! listen = "127.0.0.1:9402"
//! token_file = "/etc/wa/admin/wa-chat.token"
//! [log]
//! level = "info"
//! ```
//!
//! `[tls]`, the token keys, `[admin]`, `[log]` and the `[cluster]` files
//! are the sections every service shares (`common::sections`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use common::sections::ClusterFiles;
pub use common::sections::{AdminConfig, LogConfig, TlsConfig, TokenKey};

/// The admin listener's default port on loopback.
pub const ADMIN_PORT: u16 = 9402;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Name of this edge: logs, `Welcome.server`, link authentication.
    pub name: String,
    pub listen: ListenConfig,
    #[serde(deserialize_with = "tls")]
    pub tls: TlsConfig,
    pub tokens: TokensConfig,
    pub cluster: ClusterConfig,
    pub limits: LimitsConfig,
    pub quic: QuicConfig,
    pub link: LinkConfig,
    /// The cluster map from etcd, with automatic failover (docs/OPERATIONS.md).
    pub coordination: common::coordination::CoordinationConfig,
    pub shutdown: ShutdownConfig,
    #[serde(deserialize_with = "admin")]
    pub admin: AdminConfig,
    pub log: LogConfig,
}

/// The client listeners. Without a `[listen]` section both listen on 5222;
/// within one, a listener left out is disabled.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    /// TLS 1.3 over TCP.
    #[serde(default)]
    pub tcp: Option<SocketAddr>,
    /// QUIC over UDP.
    #[serde(default)]
    pub quic: Option<SocketAddr>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TokensConfig {
    /// Public keys that verify tokens, by key id.
    pub keys: Vec<TokenKey>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// The cluster map (see `common::cluster`).
    pub map: PathBuf,
    /// PEM CA that signed the stores' link certificates.
    pub ca: PathBuf,
    /// Raw bytes of the cluster secret presented to stores.
    pub secret_file: PathBuf,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// From accepting a connection (handshake included) to its `Hello`.
    #[serde(with = "humantime_serde")]
    pub auth_timeout: Duration,
    /// A client that sends nothing for this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// How often clients must send (announced in `Welcome`).
    #[serde(with = "humantime_serde")]
    pub keepalive: Duration,
    /// Frames buffered per client before it is cut as a slow consumer.
    pub outbound_queue: usize,
    /// Client connections on this edge; more are told `OVERLOADED`.
    pub max_connections: usize,
    /// Bytes of client requests (`Send` bodies and the rest) waiting for
    /// their homes' answers, across all sessions; past it the edge stops
    /// reading from clients until answers free room.
    pub request_memory: bytesize::ByteSize,
    /// Bytes of deliveries queued towards clients that do not read fast
    /// enough (written to no socket yet), across all sessions; past it the
    /// edge closes the session holding the most with `SLOW_CONSUMER` (its
    /// items stay in the mailbox and come again when it reconnects).
    pub delivery_memory: bytesize::ByteSize,
    /// The QUIC socket's kernel receive and send buffers. Every QUIC
    /// connection shares the one UDP socket: a burst of handshakes past
    /// what the receive buffer holds is dropped by the kernel. The kernel
    /// caps it at `net.core.rmem_max`/`wmem_max` (the edge warns when it
    /// did). 0 leaves the kernel's defaults.
    pub quic_socket_buffer: bytesize::ByteSize,
    /// A session whose every pushable delivery (the home's push window, 256)
    /// has stayed unacknowledged this long is closed with `SLOW_CONSUMER`.
    #[serde(with = "humantime_serde")]
    pub slow_consumer_after: Duration,
    /// Logins (TLS or QUIC handshakes) started per second, at most; past it
    /// and past `login_queue_wait`, new connections are told
    /// `OVERLOADED` with a jittered `retry_after_ms` (see
    /// docs/OPERATIONS.md, "Reconnect storms").
    pub login_rate: u32,
    /// Logins that may start at once after a quiet time.
    pub login_burst: u32,
    /// Longest a new connection waits for its login slot before it is
    /// refused instead; also the jitter added to a refusal's retry-after.
    #[serde(with = "humantime_serde")]
    pub login_queue_wait: Duration,
    /// Handshakes and logins (up to `Welcome`) running at once; the others
    /// wait their turn without a handshake.
    pub login_concurrency: usize,
}

/// The QUIC listener's handshake settings.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct QuicConfig {
    /// UDP sockets sharing the QUIC port, one quinn endpoint each, so that
    /// handshakes (which quinn runs under its endpoint's lock, the one its
    /// socket reader needs) run on several cores at once; the kernel spreads
    /// clients over them by address and port. 0: one per CPU core. Where the
    /// platform cannot share a port (not Linux or FreeBSD), one.
    pub quic_endpoints: usize,
    /// Connection attempts waiting for the edge to take them (quinn's
    /// `max_incoming`), over all endpoints; past it new attempts are
    /// refused at once.
    pub quic_handshake_max_incoming: usize,
    /// Address validation tokens (NEW_TOKEN) given to each client once its
    /// address is validated; a reconnecting client that presents one skips
    /// the anti-amplification limit, and with it a round trip. 0 turns them
    /// off.
    pub quic_token_sent: u32,
    /// How long such a token stays valid.
    #[serde(with = "humantime_serde")]
    pub quic_token_lifetime: Duration,
    /// Tokens already used that the edge remembers (a token is good once),
    /// about 48 bytes each; when full, tokens are refused until some expire.
    pub quic_token_log_entries: usize,
}

impl Default for QuicConfig {
    fn default() -> Self {
        QuicConfig {
            quic_endpoints: 0,
            quic_handshake_max_incoming: 16_384,
            quic_token_sent: 2,
            quic_token_lifetime: Duration::from_secs(3600),
            quic_token_log_entries: 262_144,
        }
    }
}

/// Most QUIC endpoints on one edge.
pub const MAX_QUIC_ENDPOINTS: usize = 64;

impl QuicConfig {
    /// The endpoints to open: `quic_endpoints`, or one per CPU core.
    pub fn endpoints(&self) -> usize {
        match self.quic_endpoints {
            0 => std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(MAX_QUIC_ENDPOINTS),
            n => n,
        }
    }
}

/// How long the edge waits on a home over the internal link.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LinkConfig {
    /// A ping to each home this often.
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
    /// A home that sent nothing (not even a pong) for this long is counted
    /// gone: its link is closed and every session depending on it gets
    /// `Goodbye{UNAVAILABLE}`; the edge reconnects with backoff.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// A `Send` or `MarkRead` the home has not answered for this long
    /// closes its session with `Goodbye{UNAVAILABLE}` (the client resends
    /// it on its next session): no client waits longer for `Accepted`.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            heartbeat: Duration::from_secs(1),
            timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// How long sessions get to finish after the shutdown signal.
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
    /// Base of the `retry_after_ms` told to clients on shutdown (jittered).
    #[serde(with = "humantime_serde")]
    pub retry_after: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            name: "chat-1".into(),
            listen: ListenConfig::default(),
            tls: TlsConfig::of("wa-chat"),
            tokens: TokensConfig::default(),
            cluster: ClusterConfig::default(),
            limits: LimitsConfig::default(),
            quic: QuicConfig::default(),
            link: LinkConfig::default(),
            coordination: Default::default(),
            shutdown: ShutdownConfig::default(),
            admin: AdminConfig::loopback(ADMIN_PORT, "wa-chat"),
            log: LogConfig::default(),
        }
    }
}

impl Default for ListenConfig {
    fn default() -> Self {
        let any = SocketAddr::from(([0, 0, 0, 0], 5222));
        ListenConfig {
            tcp: Some(any),
            quic: Some(any),
        }
    }
}

impl Default for TokensConfig {
    fn default() -> Self {
        TokensConfig {
            keys: vec![TokenKey::default_k1()],
        }
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            map: common::sections::CLUSTER_MAP.into(),
            ca: common::sections::CLUSTER_CA.into(),
            secret_file: common::sections::CLUSTER_SECRET.into(),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            auth_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(600),
            keepalive: Duration::from_secs(240),
            outbound_queue: 1024,
            max_connections: 100_000,
            request_memory: bytesize::ByteSize::mib(256),
            delivery_memory: bytesize::ByteSize::mib(256),
            quic_socket_buffer: bytesize::ByteSize::mib(8),
            slow_consumer_after: Duration::from_secs(60),
            login_rate: 1000,
            login_burst: 1000,
            login_queue_wait: Duration::from_secs(2),
            login_concurrency: 128,
        }
    }
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            grace: Duration::from_secs(10),
            retry_after: Duration::from_secs(5),
        }
    }
}

pub use common::config::ConfigError;
use common::config::finish;

impl Config {
    /// Reads and parses `path`; does not validate.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        common::config::load(path)
    }

    /// Checks the values themselves, without touching the file system.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut errs = self.coordination.problems();
        if self.name.is_empty() {
            errs.push("name: must not be empty".to_string());
        }
        if self.listen.tcp.is_none() && self.listen.quic.is_none() {
            errs.push("listen: at least one of tcp and quic is needed".to_string());
        }
        self.tls.validate(&mut errs);
        self.cluster_files().validate(&mut errs);
        TokenKey::validate_list("tokens.keys", &self.tokens.keys, true, &mut errs);
        self.admin.validate(&mut errs);
        self.log.validate(&mut errs);
        let l = &self.limits;
        for (key, d) in [
            ("limits.auth_timeout", l.auth_timeout),
            ("limits.idle_timeout", l.idle_timeout),
            ("limits.keepalive", l.keepalive),
            ("limits.slow_consumer_after", l.slow_consumer_after),
            ("link.heartbeat", self.link.heartbeat),
            ("link.request_timeout", self.link.request_timeout),
            ("shutdown.grace", self.shutdown.grace),
        ] {
            if d.is_zero() {
                errs.push(format!("{key}: must be more than zero"));
            }
        }
        if self.link.timeout <= self.link.heartbeat {
            errs.push(format!(
                "link.timeout: {} must be longer than link.heartbeat ({})",
                humantime::format_duration(self.link.timeout),
                humantime::format_duration(self.link.heartbeat)
            ));
        }
        if !l.keepalive.is_zero() && l.keepalive >= l.idle_timeout {
            errs.push(format!(
                "limits.keepalive: {} must be shorter than limits.idle_timeout ({})",
                humantime::format_duration(l.keepalive),
                humantime::format_duration(l.idle_timeout)
            ));
        }
        if l.outbound_queue < 16 {
            errs.push("limits.outbound_queue: must be at least 16".to_string());
        }
        if l.max_connections == 0 {
            errs.push("limits.max_connections: must be at least 1".to_string());
        }
        for (key, n) in [
            ("limits.login_rate", l.login_rate as usize),
            ("limits.login_burst", l.login_burst as usize),
            ("limits.login_concurrency", l.login_concurrency),
            (
                "quic.quic_handshake_max_incoming",
                self.quic.quic_handshake_max_incoming,
            ),
        ] {
            if n == 0 {
                errs.push(format!("{key}: must be at least 1"));
            }
        }
        if self.quic.quic_endpoints > MAX_QUIC_ENDPOINTS {
            errs.push(format!(
                "quic.quic_endpoints: {} is more than {MAX_QUIC_ENDPOINTS} (one UDP socket and one quinn endpoint each; 0 means one per CPU core)",
                self.quic.quic_endpoints
            ));
        }
        if l.login_queue_wait >= l.auth_timeout {
            errs.push(format!(
                "limits.login_queue_wait: {} must be shorter than limits.auth_timeout ({}), which counts it",
                humantime::format_duration(l.login_queue_wait),
                humantime::format_duration(l.auth_timeout)
            ));
        }
        if l.delivery_memory < bytesize::ByteSize::mib(1) {
            errs.push(format!(
                "limits.delivery_memory: {} is below 1 MiB, less than a few deliveries",
                l.delivery_memory
            ));
        }
        finish(errs)
    }

    /// Loads every file the edge reads at start (certificate, key, token keys,
    /// cluster map, CA, secret) and reports each one that would stop it.
    pub fn check_files(&self) -> Result<(), ConfigError> {
        let mut errs = Vec::new();
        self.tls.check_files(&mut errs);
        TokenKey::check_list("tokens.keys", &self.tokens.keys, &mut errs);
        self.cluster_files().check_files(&mut errs);
        self.admin.check_files(&mut errs);
        finish(errs)
    }

    fn cluster_files(&self) -> ClusterFiles<'_> {
        ClusterFiles {
            map: &self.cluster.map,
            ca: Some(&self.cluster.ca),
            secret_file: &self.cluster.secret_file,
        }
    }
}

/// `[admin]`, its token file defaulting to this service's own.
fn admin<'de, D: serde::Deserializer<'de>>(d: D) -> Result<AdminConfig, D::Error> {
    AdminConfig::of(d, "wa-chat")
}

/// `[tls]`, its files defaulting to this service's own.
fn tls<'de, D: serde::Deserializer<'de>>(d: D) -> Result<TlsConfig, D::Error> {
    TlsConfig::for_service(d, "wa-chat")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
name = "chat-1"
[listen]
tcp = "0.0.0.0:5222"
quic = "0.0.0.0:5222"
[tls]
cert = "/etc/wa/tls/wa-chat.pem"
key = "/etc/wa/tls/wa-chat.key"
[tokens]
keys = [{ id = "k1", public_key = "/etc/wa/keys/k1.pub" }]
[cluster]
map = "/etc/wa/cluster.toml"
ca = "/etc/wa/link/ca.pem"
secret_file = "/etc/wa/cluster.secret"
[limits]
auth_timeout = "10s"
idle_timeout = "600s"
keepalive = "240s"
outbound_queue = 1024
max_connections = 100000
request_memory = "256 MiB"
delivery_memory = "256 MiB"
quic_socket_buffer = "8 MiB"
slow_consumer_after = "60s"
login_rate = 1000
login_burst = 1000
login_queue_wait = "2s"
login_concurrency = 128
[quic]
quic_endpoints = 0
quic_handshake_max_incoming = 16384
quic_token_sent = 2
quic_token_lifetime = "1h"
quic_token_log_entries = 262144
[link]
heartbeat = "1s"
timeout = "3s"
request_timeout = "10s"
[shutdown]
grace = "10s"
retry_after = "5s"
[admin]
listen = "127.0.0.1:9402"
token_file = "/etc/wa/admin/wa-chat.token"
[log]
level = "info"
"#;

    #[test]
    fn sample_equals_defaults_and_validates() {
        let c: Config = toml::from_str(SAMPLE).unwrap();
        assert_eq!(c, Config::default());
        c.validate().unwrap();
        let empty: Config = toml::from_str("").unwrap();
        assert_eq!(empty, Config::default());
    }

    #[test]
    fn shipped_sample_is_the_defaults() {
        let shipped = include_str!("../../../packaging/etc/wa-chat.toml");
        let c: Config = toml::from_str(shipped).unwrap();
        assert_eq!(c, Config::default());
        c.validate().unwrap();
    }

    #[test]
    fn partial_sections_keep_other_defaults() {
        let c: Config =
            toml::from_str("[limits]\nidle_timeout = \"600ms\"\nkeepalive = \"200ms\"\n").unwrap();
        assert_eq!(c.limits.idle_timeout, Duration::from_millis(600));
        assert_eq!(c.limits.auth_timeout, Duration::from_secs(10));
        c.validate().unwrap();
        let c: Config = toml::from_str("[listen]\ntcp = \"127.0.0.1:1\"\n").unwrap();
        assert_eq!(c.listen.quic, None, "a listener left out is disabled");
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        for (text, key) in [
            ("nam = \"x\"", "nam"),
            ("[limits]\nidle = \"1s\"", "idle"),
            ("[cluster]\nsecret = \"x\"", "secret"),
            (
                "[tokens]\nkeys = [{ id = \"k\", public_key = \"p\", x = 1 }]",
                "x",
            ),
        ] {
            let e = toml::from_str::<Config>(text).unwrap_err().to_string();
            assert!(e.contains(key), "{key} missing from {e}");
        }
        let e = toml::from_str::<Config>("[limits]\nkeepalive = \"soon\"").unwrap_err();
        assert!(e.to_string().contains("keepalive"), "{e}");
    }

    #[test]
    fn validate_names_every_problem() {
        let mut c = Config::default();
        c.name.clear();
        c.listen = ListenConfig {
            tcp: None,
            quic: None,
        };
        c.tls.cert = PathBuf::new();
        c.tokens.keys.push(c.tokens.keys[0].clone());
        c.limits.auth_timeout = Duration::ZERO;
        c.limits.keepalive = Duration::from_secs(700);
        c.limits.outbound_queue = 0;
        c.limits.max_connections = 0;
        c.limits.delivery_memory = bytesize::ByteSize::kib(64);
        c.shutdown.grace = Duration::ZERO;
        c.quic.quic_endpoints = 65;
        let e = c.validate().unwrap_err().to_string();
        for key in [
            "quic.quic_endpoints: 65 is more than 64",
            "name",
            "listen",
            "tls.cert",
            "tokens.keys.id",
            "limits.auth_timeout",
            "limits.keepalive",
            "limits.outbound_queue",
            "limits.max_connections",
            "limits.delivery_memory",
            "shutdown.grace",
        ] {
            assert!(e.contains(key), "{key} missing from {e}");
        }
        let mut c = Config::default();
        c.tokens.keys.clear();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("tokens.keys"), "{e}");
    }

    #[test]
    fn quic_endpoints_zero_means_one_per_core() {
        let mut q = QuicConfig::default();
        assert_eq!(q.quic_endpoints, 0);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(q.endpoints(), cores.min(MAX_QUIC_ENDPOINTS));
        q.quic_endpoints = 3;
        assert_eq!(q.endpoints(), 3);
    }

    #[test]
    fn check_files_names_every_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Config::default();
        c.tls.cert = dir.path().join("nope.pem");
        c.tls.key = dir.path().join("nokey.pem");
        c.tokens.keys[0].public_key = dir.path().join("k1.pub");
        c.cluster.map = dir.path().join("map.toml");
        c.cluster.ca = dir.path().join("ca.pem");
        c.cluster.secret_file = dir.path().join("secret");
        common::fsutil::write_private(&c.cluster.secret_file, b"short").unwrap();
        let e = c.check_files().unwrap_err().to_string();
        for key in [
            "tls.cert",
            "tls.key",
            "tokens.keys (\"k1\").public_key",
            "cluster.map",
            "cluster.ca",
            "cluster.secret_file",
        ] {
            assert!(e.contains(key), "{key} missing from {e}");
        }
        assert!(e.contains("5 bytes"), "{e}");
    }
}
