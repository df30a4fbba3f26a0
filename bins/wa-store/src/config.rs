//! The configuration of `wa-store`: a TOML file parsed into [`Config`], then
//! checked by [`Config::validate`] (pure) and [`Config::check_files`] (reads the
//! files the store will need), each reporting every problem at once with the key
//! it concerns.
//!
//! ```toml
//! node = "store-1"
//! data_dir = "/var/lib/wa/store"
//! durability = "disk"
//! engine = "auto"    # or "fjall", "sled"
//! [link]
//! listen = "127.0.0.1:7401"
//! cert = "/etc/wa/link/cert.pem"
//! key = "/etc/wa/link/key.pem"
//! [cluster]
//! map = "/etc/wa/cluster.toml"
//! secret_file = "/etc/wa/cluster.secret"
//! island = ""       # this node's island in the map; empty: the map's only one
//! ca = "/etc/wa/link/ca.pem"  # to reach other islands' homes and the primary
//! # advertise = "10.0.0.5:7401"  # this node's address in the map; default link.listen
//! [replication]
//! wait = "1s"           # how long an append waits for the secondary (level replicated)
//! when_absent = "disk"  # or "refuse": what an append gets when it does not answer
//! [mailbox]
//! max_items = 100000
//! max_bytes = "256 MiB"
//! expire_after = "30days"
//! sweep_interval = "1h"
//! [cache]
//! sync_delay = "10s"
//! bypass_items = 1000
//! memory = "512 MiB"
//! [journal]
//! segment_size = "64 MiB"
//! commit_interval = "4ms"
//! [groups]
//! max_members = 1024
//! fanout_groups = 256
//! copies_in_flight = 1024
//! turn = "1ms"
//! fanout_queue = 256
//! record_cache = "64 MiB"
//! receipt_window = "50ms"
//! receipt_max = 256
//! max_groups_per_user = 512
//! [disk]
//! min_free = "1 GiB"
//! [shutdown]
//! grace = "10s"
//! [admin]
//! listen = "127.0.0.1:9401"
//! token_file = "/etc/wa/admin/wa-store.token"
//! [log]
//! level = "info"
//! ```
//!
//! `[shutdown]`, `[admin]` and `[log]` are sections every service shares
//! (`common::sections`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use common::sections::{AdminConfig, LogConfig, ShutdownConfig};

/// The admin listener's default port on loopback.
pub const ADMIN_PORT: u16 = 9401;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Name of this node, sent to edges in `AuthOk`.
    pub node: String,
    /// Directory of the data: the engine's files in `sled/` or `fjall/`, the
    /// journal in `journal/`, the marker `FORMAT` (`storage::format`);
    /// created if missing.
    pub data_dir: PathBuf,
    /// When an append counts as stored.
    pub durability: Durability,
    /// The storage engine under the mailboxes: `auto` keeps the engine the
    /// data directory records and gives a new one fjall; a named engine is
    /// that engine, and a data directory written by the other one is
    /// refused (`storage::format`).
    pub engine: EngineSetting,
    pub link: LinkConfig,
    pub cluster: ClusterConfig,
    pub mailbox: MailboxConfig,
    pub cache: CacheConfig,
    pub journal: JournalConfig,
    pub disk: DiskConfig,
    pub replication: ReplicationConfig,
    /// Groups at their homes (docs/ARCHITECTURE.md "Groups").
    pub groups: GroupsConfig,
    /// Automatic failover through etcd (docs/OPERATIONS.md).
    pub coordination: common::coordination::CoordinationConfig,
    /// Push notifications to devices that are not connected.
    pub push: crate::push::PushConfig,
    pub shutdown: ShutdownConfig,
    #[serde(deserialize_with = "admin")]
    pub admin: AdminConfig,
    pub log: LogConfig,
}

/// Replication to the island's secondary (docs/ARCHITECTURE.md,
/// "Replication").
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicationConfig {
    /// How long an append at level `replicated` waits for the secondary's
    /// acknowledgement before `when_absent` applies (and the secondary,
    /// too slow, is cut off and must catch up again).
    #[serde(with = "humantime_serde")]
    pub wait: Duration,
    /// What an append at level `replicated` gets while no caught-up
    /// secondary acknowledges it.
    pub when_absent: WhenAbsent,
}

/// See [`ReplicationConfig::when_absent`].
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum WhenAbsent {
    /// Made durable on the primary's disk instead (level `disk`), counted
    /// in the metrics and logged.
    #[default]
    Disk,
    /// Refused with `UNAVAILABLE`; the client resends.
    Refuse,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            wait: Duration::from_secs(1),
            when_absent: WhenAbsent::Disk,
        }
    }
}

/// Groups whose home is this node (docs/ARCHITECTURE.md "Groups").
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GroupsConfig {
    /// Most members of a group; adding more is refused with `GROUP_FULL`.
    pub max_members: usize,
    /// Groups whose logs are fanned out at once (each one item at a time);
    /// the others wait their turn in their logs.
    pub fanout_groups: usize,
    /// Copies of one group item on their way to members' homes at once.
    pub copies_in_flight: usize,
    /// How long the fan-out applies copies on this node's shards (on the
    /// thread it runs on) before it yields to the other tasks there (the
    /// link readers bringing one-to-one appends); zero yields before every
    /// copy.
    #[serde(with = "humantime_serde")]
    pub turn: Duration,
    /// Most items of one group's log not yet copied to every member; a
    /// message beyond is refused with `GROUP_BUSY` (resent after 1 s).
    pub fanout_queue: usize,
    /// Memory for cached group records; past it the least recently used
    /// are read again from the store when next needed.
    pub record_cache: bytesize::ByteSize,
    /// Receipts of group messages bound for the same sender, about the
    /// same group, are gathered this long into one item (docs/PROTOCOL.md
    /// "Group receipts"): delivered receipts at a member's home, read
    /// receipts at the sender's home (their `MarkRead`s answered once the
    /// item is stored); zero sends each on its own. At most 8 s, under
    /// wa-chat's `[link] request_timeout` (10 s by default).
    #[serde(with = "humantime_serde")]
    pub receipt_window: Duration,
    /// Most message ids in one aggregated receipt; a full one goes at once.
    pub receipt_max: usize,
    /// Most groups a user whose home is this node may belong to; a create
    /// or add beyond it is refused with `TOO_MANY_GROUPS`.
    pub max_groups_per_user: usize,
}

/// The longest `[groups] receipt_window`: a `MarkRead` waits for it, and
/// must be answered within wa-chat's `[link] request_timeout` (10 s).
pub const MAX_RECEIPT_WINDOW: Duration = Duration::from_secs(8);

impl Default for GroupsConfig {
    fn default() -> Self {
        GroupsConfig {
            max_members: common::group::DEFAULT_MAX_MEMBERS,
            fanout_groups: 256,
            copies_in_flight: 1024,
            turn: Duration::from_millis(1),
            fanout_queue: 256,
            record_cache: bytesize::ByteSize::mib(64),
            receipt_window: Duration::from_millis(50),
            receipt_max: 256,
            max_groups_per_user: common::user_groups::DEFAULT_MAX_GROUPS_PER_USER,
        }
    }
}

/// The journal of appends (docs/ARCHITECTURE.md, "Storage and durability").
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct JournalConfig {
    /// Size of a journal segment, zero-filled before use (the first after a
    /// start is at most 4 MiB).
    pub segment_size: bytesize::ByteSize,
    /// The least time from the start of one group commit (a `fdatasync` of
    /// the journal, or at `replicated` a round to the secondary) to the
    /// next, when the last one covered more than one write. An append after
    /// a quiet spell, or from a lone writer, is committed at once; under
    /// load commits come at most this often, each covering more appends, for
    /// up to this much more latency and far fewer wake-ups per message.
    /// Zero: a commit starts as soon as the last one returned.
    #[serde(with = "humantime_serde")]
    pub commit_interval: Duration,
}

/// Largest `journal.commit_interval`: every acknowledgement may wait for it.
pub const MAX_COMMIT_INTERVAL: Duration = Duration::from_millis(100);

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            segment_size: bytesize::ByteSize::mib(64),
            commit_interval: Duration::from_millis(4),
        }
    }
}

/// The data directory's disk (`crate::disk`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DiskConfig {
    /// Below this much free space in `data_dir`'s file system new messages
    /// are refused with `STORAGE_FULL` (until it is a quarter above again),
    /// so that deletes, the write-back and a restart's replay always have
    /// room (docs/OPERATIONS.md, "A full disk").
    pub min_free: bytesize::ByteSize,
}

impl Default for DiskConfig {
    fn default() -> Self {
        DiskConfig {
            min_free: bytesize::ByteSize::gib(1),
        }
    }
}

/// Smallest and largest `journal.segment_size`.
pub const SEGMENT_SIZE_RANGE: std::ops::RangeInclusive<u64> = (64 << 10)..=(1 << 30);

/// The write-back cache (docs/ARCHITECTURE.md, "Storage and durability").
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// An item still undelivered this long after it was stored is written
    /// from memory to the engine.
    #[serde(with = "humantime_serde")]
    pub sync_delay: Duration,
    /// A mailbox holding this many items in memory sends further items
    /// straight to the engine, so a few huge mailboxes cannot crowd out
    /// everyone else.
    pub bypass_items: usize,
    /// Memory the cache may use; beyond it, items go straight to the engine
    /// and the oldest cached items are written out first.
    pub memory: bytesize::ByteSize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            sync_delay: Duration::from_secs(10),
            bypass_items: 1000,
            memory: bytesize::ByteSize::mib(512),
        }
    }
}

/// Per-user mailbox limits and expiry.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MailboxConfig {
    /// Most messages waiting in one mailbox; a sender gets `MAILBOX_FULL`
    /// beyond it. Receipts may use twice the limit, so that a full mailbox
    /// never blocks the acknowledgement of messages elsewhere.
    pub max_items: u64,
    /// Most bytes waiting in one mailbox (same rule for receipts).
    pub max_bytes: bytesize::ByteSize,
    /// Undelivered items older than this are deleted by the sweeper.
    #[serde(with = "humantime_serde")]
    pub expire_after: Duration,
    /// How often the sweeper looks for expired items.
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
}

impl Default for MailboxConfig {
    fn default() -> Self {
        MailboxConfig {
            max_items: 100_000,
            max_bytes: bytesize::ByteSize::mib(256),
            expire_after: Duration::from_secs(30 * 24 * 3600),
            sweep_interval: Duration::from_secs(3600),
        }
    }
}

/// The durability level: what has happened to an append before its
/// `AppendResult` is sent.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Written to the database and covered by a flush that started after the
    /// write (group commit).
    #[default]
    Disk,
    /// In the primary's memory and journal buffer and acknowledged by the
    /// island's secondary (in its memory); both sync to disk later. Needs a
    /// `secondary` in the map (else `[replication] when_absent` applies).
    Replicated,
}

/// Which storage engine keeps the data (docs/ARCHITECTURE.md, "Storage").
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Sled,
    Fjall,
}

/// The `engine` key: an engine, or `auto`, which
/// `storage::format::resolve` turns into one for a data directory.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum EngineSetting {
    /// The engine the data directory records (its `FORMAT` marker, or the
    /// `sled/` or `fjall/` of a directory from before markers); fjall for
    /// a new directory. (fjall keeps to its cache budget; sled 0.34 grows
    /// with what it writes: docs/BENCHMARKS.md, "The store's memory".)
    #[default]
    Auto,
    Sled,
    Fjall,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LinkConfig {
    /// Address of the internal link listener (edges connect here).
    pub listen: SocketAddr,
    /// PEM certificate chain presented to edges, signed by the cluster CA.
    pub cert: PathBuf,
    /// PEM private key of `cert`.
    pub key: PathBuf,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// The cluster map (see `common::cluster`).
    pub map: PathBuf,
    /// Raw bytes of the cluster secret edges present in `LinkAuth`.
    pub secret_file: PathBuf,
    /// The island of the map this node is the primary of; empty: the map's
    /// only island (a map of several islands needs it named).
    pub island: String,
    /// PEM certificate of the cluster CA, to verify the other homes this
    /// home appends to (delivered receipts to senders on other islands).
    /// Needed by a map of several islands, and by a secondary.
    pub ca: PathBuf,
    /// This node's link address as the cluster map names it (as the
    /// island's `primary` or `secondary`); default `link.listen`. A node the
    /// map names as its island's secondary follows the primary instead of
    /// serving.
    pub advertise: Option<SocketAddr>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node: "store-1".into(),
            data_dir: "/var/lib/wa/store".into(),
            durability: Durability::Disk,
            engine: EngineSetting::Auto,
            link: LinkConfig::default(),
            cluster: ClusterConfig::default(),
            mailbox: MailboxConfig::default(),
            cache: CacheConfig::default(),
            journal: JournalConfig::default(),
            disk: DiskConfig::default(),
            replication: ReplicationConfig::default(),
            groups: GroupsConfig::default(),
            coordination: Default::default(),
            push: Default::default(),
            shutdown: ShutdownConfig::default(),
            admin: AdminConfig::loopback(ADMIN_PORT, "wa-store"),
            log: LogConfig::default(),
        }
    }
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7401)),
            cert: "/etc/wa/link/cert.pem".into(),
            key: "/etc/wa/link/key.pem".into(),
        }
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            map: "/etc/wa/cluster.toml".into(),
            secret_file: "/etc/wa/cluster.secret".into(),
            island: String::new(),
            ca: "/etc/wa/link/ca.pem".into(),
            advertise: None,
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
        let mut errs = Vec::new();
        if self.node.is_empty() {
            errs.push("node: must not be empty".to_string());
        }
        for (key, v) in [
            ("groups.max_members", self.groups.max_members),
            ("groups.fanout_groups", self.groups.fanout_groups),
            ("groups.copies_in_flight", self.groups.copies_in_flight),
            ("groups.fanout_queue", self.groups.fanout_queue),
            ("groups.receipt_max", self.groups.receipt_max),
            (
                "groups.max_groups_per_user",
                self.groups.max_groups_per_user,
            ),
        ] {
            if v == 0 {
                errs.push(format!("{key}: must be at least 1"));
            }
        }
        if self.groups.max_groups_per_user > common::user_groups::HIGHEST_MAX_GROUPS_PER_USER {
            errs.push(format!(
                "groups.max_groups_per_user: at most {} (a user's groups are one record)",
                common::user_groups::HIGHEST_MAX_GROUPS_PER_USER
            ));
        }
        let paths = [
            ("data_dir", &self.data_dir),
            ("link.cert", &self.link.cert),
            ("link.key", &self.link.key),
            ("cluster.map", &self.cluster.map),
            ("cluster.secret_file", &self.cluster.secret_file),
        ];
        for (key, p) in paths {
            if p.as_os_str().is_empty() {
                errs.push(format!("{key}: must not be empty"));
            }
        }
        if self.mailbox.max_items == 0 {
            errs.push("mailbox.max_items: must be more than zero".to_string());
        }
        if self.mailbox.max_bytes.as_u64() < common::proto::limits::MAX_FRAME as u64 {
            errs.push(format!(
                "mailbox.max_bytes: must hold at least one largest message ({} bytes)",
                common::proto::limits::MAX_FRAME
            ));
        }
        if self.mailbox.expire_after.is_zero() {
            errs.push("mailbox.expire_after: must be more than zero".to_string());
        }
        if self.mailbox.sweep_interval.is_zero() {
            errs.push("mailbox.sweep_interval: must be more than zero".to_string());
        }
        if self.groups.receipt_max > 1024 {
            errs.push("groups.receipt_max: must be at most 1024".to_string());
        }
        if self.groups.receipt_window > MAX_RECEIPT_WINDOW {
            errs.push(
                "groups.receipt_window: must be at most 8s (members' MarkReads wait for it, \
                 and wa-chat ends a session whose request waits past its \
                 [link] request_timeout)"
                    .to_string(),
            );
        }
        if self.cache.sync_delay.is_zero() {
            errs.push("cache.sync_delay: must be more than zero".to_string());
        }
        if !SEGMENT_SIZE_RANGE.contains(&self.journal.segment_size.as_u64()) {
            errs.push(format!(
                "journal.segment_size: {} is outside {} to {}",
                self.journal.segment_size,
                bytesize::ByteSize::b(*SEGMENT_SIZE_RANGE.start()),
                bytesize::ByteSize::b(*SEGMENT_SIZE_RANGE.end()),
            ));
        }
        if self.journal.commit_interval > MAX_COMMIT_INTERVAL {
            errs.push(format!(
                "journal.commit_interval: {:?} is more than {:?} (every acknowledgement may wait for it)",
                self.journal.commit_interval, MAX_COMMIT_INTERVAL,
            ));
        }
        self.shutdown.validate(&mut errs);
        self.admin.validate(&mut errs);
        self.log.validate(&mut errs);
        if self.replication.wait.is_zero() {
            errs.push("replication.wait: must be more than zero".to_string());
        }
        errs.extend(self.coordination.problems());
        errs.extend(self.push.problems());
        finish(errs)
    }

    /// Loads every file the store reads at start (certificate, key, cluster map,
    /// secret) and reports each one that would stop it.
    pub fn check_files(&self) -> Result<(), ConfigError> {
        let mut errs = Vec::new();
        if let Err(e) = common::tls::load_certs(&self.link.cert) {
            errs.push(format!("link.cert: {e}"));
        }
        if let Err(e) = common::tls::load_key(&self.link.key) {
            errs.push(format!("link.key: {e}"));
        }
        match common::cluster::ClusterMap::load(&self.cluster.map) {
            Ok(map) => {
                if let Err(e) = crate::ownership::island_of(&map, &self.cluster.island) {
                    errs.push(format!("cluster.island: {e}"));
                }
                let secondaries = map.islands.iter().any(|i| i.secondary.is_some());
                if (map.islands.len() > 1 || secondaries)
                    && let Err(e) = common::tls::load_certs(&self.cluster.ca)
                {
                    errs.push(format!(
                        "cluster.ca: needed to reach the other islands' homes and the primary: {e}"
                    ));
                }
            }
            Err(e) => errs.push(format!("cluster.map: {e}")),
        }
        if let Err(e) = common::secret::read_cluster(&self.cluster.secret_file) {
            errs.push(format!("cluster.secret_file: {e}"));
        }
        self.admin.check_files(&mut errs);
        if let Err(e) = crate::push::providers::Providers::new(&self.push) {
            errs.push(e);
        }
        finish(errs)
    }
}

/// `[admin]`, its token file defaulting to this service's own.
fn admin<'de, D: serde::Deserializer<'de>>(d: D) -> Result<AdminConfig, D::Error> {
    AdminConfig::of(d, "wa-store")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
node = "store-1"
data_dir = "/var/lib/wa/store"
durability = "disk"
engine = "auto"
[link]
listen = "127.0.0.1:7401"
cert = "/etc/wa/link/cert.pem"
key = "/etc/wa/link/key.pem"
[cluster]
map = "/etc/wa/cluster.toml"
secret_file = "/etc/wa/cluster.secret"
island = ""
ca = "/etc/wa/link/ca.pem"
[mailbox]
max_items = 100000
max_bytes = "256 MiB"
expire_after = "30days"
sweep_interval = "1h"
[cache]
sync_delay = "10s"
bypass_items = 1000
memory = "512 MiB"
[journal]
segment_size = "64 MiB"
commit_interval = "4ms"
[disk]
min_free = "1 GiB"
[shutdown]
grace = "10s"
[admin]
listen = "127.0.0.1:9401"
token_file = "/etc/wa/admin/wa-store.token"
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
    fn shipped_sample_config_is_the_defaults() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../packaging/etc/wa-store.toml"
        );
        let text = std::fs::read_to_string(path).unwrap();
        let c: Config = toml::from_str(&text).unwrap();
        assert_eq!(c, Config::default());
        c.validate().unwrap();
    }

    #[test]
    fn unknown_keys_and_levels_are_refused() {
        let e = toml::from_str::<Config>("nod = \"x\"").unwrap_err();
        assert!(e.to_string().contains("nod"), "{e}");
        let e = toml::from_str::<Config>("[link]\nlisen = \"1.2.3.4:5\"").unwrap_err();
        assert!(e.to_string().contains("lisen"), "{e}");
        let e = toml::from_str::<Config>("durability = \"ram\"").unwrap_err();
        assert!(e.to_string().contains("ram"), "{e}");
    }

    #[test]
    fn validate_names_every_key() {
        let mut c = Config::default();
        c.node.clear();
        c.data_dir = PathBuf::new();
        c.cluster.secret_file = PathBuf::new();
        c.shutdown.grace = Duration::ZERO;
        c.journal.segment_size = bytesize::ByteSize::kib(4);
        c.journal.commit_interval = Duration::from_millis(101);
        c.groups.receipt_max = 1025;
        c.groups.receipt_window = Duration::from_secs(9);
        let e = c.validate().unwrap_err().to_string();
        for key in [
            "node",
            "data_dir",
            "cluster.secret_file",
            "shutdown.grace",
            "journal.segment_size",
            "journal.commit_interval",
            "groups.receipt_max",
            "groups.receipt_window",
        ] {
            assert!(e.contains(key), "{key} missing from {e}");
        }
    }

    #[test]
    fn check_files_names_every_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Config::default();
        c.link.cert = dir.path().join("nope.pem");
        c.link.key = dir.path().join("nokey.pem");
        c.cluster.map = dir.path().join("map.toml");
        c.cluster.secret_file = dir.path().join("secret");
        common::fsutil::write_private(&c.cluster.secret_file, b"short").unwrap();
        let e = c.check_files().unwrap_err().to_string();
        for key in [
            "link.cert",
            "link.key",
            "cluster.map",
            "cluster.secret_file",
        ] {
            assert!(e.contains(key), "{key} missing from {e}");
        }
        assert!(e.contains("5 bytes"), "{e}");
    }
}
