//! The configuration of `wa-media`: a TOML file parsed into [`Config`], then
//! checked by [`Config::validate`] (pure) and [`Config::check_files`] (reads
//! every file the service needs), each reporting every problem at once with
//! the key it concerns. The shipped sample is `packaging/etc/wa-media.toml`,
//! which a test proves equal to [`Config::default`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;

pub use common::sections::{
    AdminConfig, ClusterClient, LogConfig, ShutdownConfig, TlsConfig, TokenKey,
};

/// The admin listener's default port on loopback.
pub const ADMIN_PORT: u16 = 9403;

/// Longest node name; it is part of every handle.
pub const MAX_NODE_NAME: usize = 32;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Name of this node. Every handle this node issues starts with it, so a
    /// client knows which node holds a blob (docs/MEDIA.md, "Several nodes").
    pub node: String,
    /// Blobs, their metadata and uploads in progress live here.
    pub data_dir: PathBuf,
    pub listen: ListenConfig,
    #[serde(deserialize_with = "tls")]
    pub tls: TlsConfig,
    pub tokens: TokensConfig,
    /// How to reach the homes, to ask whether a token's device was revoked.
    #[serde(deserialize_with = "cluster")]
    pub cluster: ClusterClient,
    pub revocation: RevocationConfig,
    pub limits: LimitsConfig,
    pub expiry: ExpiryConfig,
    pub cache: CacheConfig,
    pub types: TypesConfig,
    pub shutdown: ShutdownConfig,
    #[serde(deserialize_with = "admin")]
    pub admin: AdminConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ListenConfig {
    /// HTTPS (TLS 1.3, HTTP/1.1).
    pub https: SocketAddr,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TokensConfig {
    /// Public keys that verify tokens, by key id (the same keys as wa-chat).
    pub keys: Vec<TokenKey>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RevocationConfig {
    /// Ask the user's home whether a token's device is still accepted
    /// (false: trust tokens until they expire; development only).
    pub check: bool,
    /// How long an answer is kept: a revoked device is refused at most this
    /// long after its revocation.
    #[serde(with = "humantime_serde")]
    pub recheck_after: Duration,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest blob; larger uploads get 413.
    pub max_blob_size: ByteSize,
    /// Uploads in progress on this node; more get 429.
    pub max_concurrent_uploads: usize,
    /// Uploads in progress per user; more get 429.
    pub max_uploads_per_user: usize,
    /// Uploads a user may start per minute (token bucket); more get 429.
    pub uploads_per_minute: u32,
    /// Bytes a user may upload per day (rolling 24 h window); more get 429.
    pub quota_per_day: ByteSize,
    /// The longest one upload's body may take; then it is cut (408).
    #[serde(with = "humantime_serde")]
    pub upload_deadline: Duration,
    /// The lowest average rate of an upload's body, per second, counted
    /// from its start after a 10 s head start; below it the upload is cut
    /// (408). With `upload_deadline` it keeps a trickling client from
    /// holding an upload slot.
    pub min_upload_rate: ByteSize,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ExpiryConfig {
    /// A blob is deleted this long after its last upload.
    #[serde(with = "humantime_serde")]
    pub expire_after: Duration,
    /// After expiry, the handle answers 410 Gone for this long, then 404.
    #[serde(with = "humantime_serde")]
    pub remember_gone: Duration,
    /// How often the sweeper looks for expired blobs.
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Memory for hot small blobs (0 disables the cache).
    pub memory: ByteSize,
    /// Largest blob kept in memory; larger ones stream from the page cache.
    pub max_blob: ByteSize,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TypesConfig {
    /// Content types an uploader may declare and have served back; anything
    /// else is served as `application/octet-stream`.
    pub allowed: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node: "m1".into(),
            data_dir: "/var/lib/wa/media".into(),
            listen: ListenConfig::default(),
            tls: TlsConfig::of("wa-media"),
            tokens: TokensConfig::default(),
            cluster: ClusterClient::with_secret(common::sections::CLUSTER_SECRET),
            revocation: RevocationConfig::default(),
            limits: LimitsConfig::default(),
            expiry: ExpiryConfig::default(),
            cache: CacheConfig::default(),
            types: TypesConfig::default(),
            shutdown: ShutdownConfig::default(),
            admin: AdminConfig::loopback(ADMIN_PORT, "wa-media"),
            log: LogConfig::default(),
        }
    }
}

impl Default for ListenConfig {
    fn default() -> Self {
        ListenConfig {
            https: SocketAddr::from(([0, 0, 0, 0], 8443)),
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

impl Default for RevocationConfig {
    fn default() -> Self {
        RevocationConfig {
            check: true,
            recheck_after: Duration::from_secs(10),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_blob_size: ByteSize::mib(100),
            max_concurrent_uploads: 256,
            max_uploads_per_user: 4,
            uploads_per_minute: 60,
            quota_per_day: ByteSize::gib(5),
            upload_deadline: Duration::from_secs(15 * 60),
            min_upload_rate: ByteSize::kib(16),
        }
    }
}

impl Default for ExpiryConfig {
    fn default() -> Self {
        ExpiryConfig {
            expire_after: Duration::from_secs(30 * 24 * 3600),
            remember_gone: Duration::from_secs(30 * 24 * 3600),
            sweep_interval: Duration::from_secs(3600),
        }
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            memory: ByteSize::mib(256),
            max_blob: ByteSize::mib(1),
        }
    }
}

impl Default for TypesConfig {
    fn default() -> Self {
        TypesConfig {
            allowed: [
                "image/jpeg",
                "image/png",
                "image/gif",
                "image/webp",
                "video/mp4",
                "audio/mp4",
                "audio/mpeg",
                "audio/ogg",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

pub use common::config::ConfigError;
use common::config::finish;

/// Whether `node` can be a node name: 1 to 32 of `a-z 0-9 -`, starting with a
/// letter or digit. Handles are `<node>-<sha256 hex>`, split at the last `-`.
pub fn valid_node_name(node: &str) -> bool {
    !node.is_empty()
        && node.len() <= MAX_NODE_NAME
        && !node.starts_with('-')
        && node
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Whether `t` looks like a `type/subtype` media type without parameters.
fn valid_mime(t: &str) -> bool {
    let ok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
    };
    matches!(t.split_once('/'), Some((a, b)) if ok(a) && ok(b))
}

impl Config {
    /// Reads and parses `path`; does not validate.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        common::config::load(path)
    }

    /// Checks the values themselves, without touching the file system.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut errs = Vec::new();
        if !valid_node_name(&self.node) {
            errs.push(format!(
                "node: {:?} must be 1 to {MAX_NODE_NAME} of a-z 0-9 - (not starting with -)",
                self.node
            ));
        }
        if self.data_dir.as_os_str().is_empty() {
            errs.push("data_dir: must not be empty".to_string());
        }
        self.tls.validate(&mut errs);
        TokenKey::validate_list("tokens.keys", &self.tokens.keys, true, &mut errs);
        self.shutdown.validate(&mut errs);
        self.admin.validate(&mut errs);
        self.log.validate(&mut errs);
        if self.revocation.check {
            self.cluster.files().validate(&mut errs);
        }
        if self.revocation.recheck_after.is_zero() {
            errs.push("revocation.recheck_after: must be more than zero".to_string());
        }
        let l = &self.limits;
        if l.max_blob_size.as_u64() == 0 {
            errs.push("limits.max_blob_size: must be more than zero".to_string());
        }
        for (key, n) in [
            ("limits.max_concurrent_uploads", l.max_concurrent_uploads),
            ("limits.max_uploads_per_user", l.max_uploads_per_user),
            ("limits.uploads_per_minute", l.uploads_per_minute as usize),
        ] {
            if n == 0 {
                errs.push(format!("{key}: must be at least 1"));
            }
        }
        if l.upload_deadline.is_zero() {
            errs.push("limits.upload_deadline: must be more than zero".to_string());
        }
        if l.min_upload_rate.as_u64() == 0 {
            errs.push("limits.min_upload_rate: must be more than zero".to_string());
        }
        if l.quota_per_day < l.max_blob_size {
            errs.push(format!(
                "limits.quota_per_day: {} is less than limits.max_blob_size ({})",
                l.quota_per_day, l.max_blob_size
            ));
        }
        for (key, d) in [
            ("expiry.expire_after", self.expiry.expire_after),
            ("expiry.sweep_interval", self.expiry.sweep_interval),
        ] {
            if d.is_zero() {
                errs.push(format!("{key}: must be more than zero"));
            }
        }
        if self.cache.max_blob > self.cache.memory {
            errs.push(format!(
                "cache.max_blob: {} is more than cache.memory ({})",
                self.cache.max_blob, self.cache.memory
            ));
        }
        for t in &self.types.allowed {
            if !valid_mime(t) {
                errs.push(format!(
                    "types.allowed: {t:?} is not a lower-case type/subtype"
                ));
            }
        }
        finish(errs)
    }

    /// Loads every file the service reads at start and reports each one that
    /// would stop it; the data directory must exist or be creatable.
    pub fn check_files(&self) -> Result<(), ConfigError> {
        let mut errs = Vec::new();
        self.tls.check_files(&mut errs);
        TokenKey::check_list("tokens.keys", &self.tokens.keys, &mut errs);
        self.admin.check_files(&mut errs);
        if self.revocation.check {
            self.cluster.files().check_files(&mut errs);
        }
        if let Err(e) = std::fs::create_dir_all(&self.data_dir) {
            errs.push(format!(
                "data_dir: cannot create {}: {e}",
                self.data_dir.display()
            ));
        }
        finish(errs)
    }
}

/// `[admin]`, its token file defaulting to this service's own.
fn admin<'de, D: serde::Deserializer<'de>>(d: D) -> Result<AdminConfig, D::Error> {
    AdminConfig::of(d, "wa-media")
}

/// `[tls]`, its files defaulting to this service's own.
fn tls<'de, D: serde::Deserializer<'de>>(d: D) -> Result<TlsConfig, D::Error> {
    TlsConfig::for_service(d, "wa-media")
}

/// `[cluster]`: wa-media is on the cluster link (group `wa-cluster`), so
/// its secret is the shared one.
fn cluster<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ClusterClient, D::Error> {
    ClusterClient::of(d, common::sections::CLUSTER_SECRET)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_sample_is_the_defaults() {
        let shipped = include_str!("../../../packaging/etc/wa-media.toml");
        let c: Config = toml::from_str(shipped).unwrap();
        assert_eq!(c, Config::default());
        c.validate().unwrap();
        let empty: Config = toml::from_str("").unwrap();
        assert_eq!(empty, Config::default());
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        for (text, key) in [
            ("nod = \"x\"", "nod"),
            ("[limits]\nmax_blob = 1", "max_blob"),
            ("[expiry]\nttl = \"1d\"", "ttl"),
        ] {
            let e = toml::from_str::<Config>(text).unwrap_err().to_string();
            assert!(e.contains(key), "{key} missing from {e}");
        }
    }

    #[test]
    fn sizes_and_durations_are_typed() {
        let c: Config = toml::from_str(
            "[limits]\nmax_blob_size = \"2 MiB\"\n[expiry]\nexpire_after = \"1h\"\n",
        )
        .unwrap();
        assert_eq!(c.limits.max_blob_size, ByteSize::mib(2));
        assert_eq!(c.expiry.expire_after, Duration::from_secs(3600));
        assert!(toml::from_str::<Config>("[expiry]\nexpire_after = \"soon\"").is_err());
    }

    #[test]
    fn validate_names_every_problem() {
        let mut c = Config {
            node: "Bad_Node".into(),
            data_dir: PathBuf::new(),
            ..Config::default()
        };
        c.tokens.keys.push(c.tokens.keys[0].clone());
        c.limits.max_concurrent_uploads = 0;
        c.limits.quota_per_day = ByteSize::b(0);
        c.expiry.sweep_interval = Duration::ZERO;
        c.cache.max_blob = ByteSize::gib(1);
        c.types.allowed.push("Text/HTML; x".into());
        let e = c.validate().unwrap_err().to_string();
        for key in [
            "node",
            "data_dir",
            "tokens.keys.id",
            "limits.max_concurrent_uploads",
            "limits.quota_per_day",
            "expiry.sweep_interval",
            "cache.max_blob",
            "types.allowed",
        ] {
            assert!(e.contains(key), "{key} missing from {e}");
        }
        let mut c = Config::default();
        c.limits.max_blob_size = ByteSize::b(0);
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("limits.max_blob_size"), "{e}");
    }

    #[test]
    fn node_names() {
        for ok in ["m1", "media-eu-2", "0"] {
            assert!(valid_node_name(ok), "{ok}");
        }
        for bad in ["", "-m", "M1", "m_1", "m/1", "..", &"m".repeat(33)] {
            assert!(!valid_node_name(bad), "{bad}");
        }
    }
}
