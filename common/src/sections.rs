//! Config sections that several services share, declared once: `[tls]`,
//! a token key of `[tokens]`, `[shutdown]`, `[admin]` and `[log]`, and the
//! defaults and file checks of `[cluster]` (whose extra keys differ by
//! service). Each service's `Config` embeds these types, so a key means the
//! same thing, has the same default and is checked the same way everywhere.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Fewest bytes a cluster secret may have.
pub const MIN_CLUSTER_SECRET: usize = 32;
/// Where the cluster map lives in a packaged install.
pub const CLUSTER_MAP: &str = "/etc/wa/cluster.toml";
/// The CA that signed the stores' link certificates (every service that
/// dials a store trusts this one file).
pub const CLUSTER_CA: &str = "/etc/wa/link/ca.pem";
/// The cluster secret edges and wa-register present to stores.
pub const CLUSTER_SECRET: &str = "/etc/wa/cluster.secret";
/// Where each service's copy of the admin token is, by default: a file per
/// service (`/etc/wa/admin/<service>.token`), since each runs as its own
/// user and a secret file is its owner's only; the packages make the
/// copies of one token (wactl's is `/etc/wa/admin/wactl.token`).
pub fn admin_token(service: &str) -> PathBuf {
    format!("/etc/wa/admin/{service}.token").into()
}

/// `[tls]`: the certificate clients see, and its key. Each service has its
/// own by default, `/etc/wa/tls/<service>.pem` and `.key`, since each runs
/// as its own user and a key file is its owner's only.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key of `cert`.
    pub key: PathBuf,
}

/// `[tls]` as written: either key may be left out.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsToml {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

impl TlsConfig {
    /// The default of `service`.
    pub fn of(service: &str) -> TlsConfig {
        TlsConfig {
            cert: format!("/etc/wa/tls/{service}.pem").into(),
            key: format!("/etc/wa/tls/{service}.key").into(),
        }
    }

    /// Reads `[tls]` of `service` (for `#[serde(deserialize_with)]`): a key
    /// left out gets the service's own default.
    pub fn for_service<'de, D: serde::Deserializer<'de>>(
        d: D,
        service: &str,
    ) -> Result<TlsConfig, D::Error> {
        let t = TlsToml::deserialize(d)?;
        let dflt = TlsConfig::of(service);
        Ok(TlsConfig {
            cert: t.cert.unwrap_or(dflt.cert),
            key: t.key.unwrap_or(dflt.key),
        })
    }

    /// Empty paths (pure).
    pub fn validate(&self, errs: &mut Vec<String>) {
        empty_path("tls.cert", &self.cert, errs);
        empty_path("tls.key", &self.key, errs);
    }

    /// Reads both files, as the service will at start and on SIGHUP.
    #[cfg(feature = "net")]
    pub fn check_files(&self, errs: &mut Vec<String>) {
        if let Err(e) = crate::tls::load_certs(&self.cert) {
            errs.push(format!("tls.cert: {e}"));
        }
        if let Err(e) = crate::tls::load_key(&self.key) {
            errs.push(format!("tls.key: {e}"));
        }
    }
}

/// One public key of a `[tokens]` key list.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokenKey {
    pub id: String,
    /// Ed25519 public key, SPKI PEM.
    pub public_key: PathBuf,
}

impl TokenKey {
    /// The default key of a packaged install.
    pub fn default_k1() -> TokenKey {
        TokenKey {
            id: "k1".into(),
            public_key: "/etc/wa/keys/k1.pub".into(),
        }
    }

    /// Empty and duplicate ids, empty paths, an empty list (pure); `key`
    /// names the list (`tokens.keys`).
    pub fn validate_list(key: &str, keys: &[TokenKey], required: bool, errs: &mut Vec<String>) {
        if required && keys.is_empty() {
            errs.push(format!("{key}: at least one key is needed"));
        }
        let mut ids = std::collections::HashSet::new();
        for k in keys {
            if k.id.is_empty() {
                errs.push(format!("{key}.id: must not be empty"));
            } else if !ids.insert(&k.id) {
                errs.push(format!("{key}.id: {:?} appears twice", k.id));
            }
            empty_path(&format!("{key}.public_key"), &k.public_key, errs);
        }
    }

    /// Reads every key file.
    pub fn check_list(key: &str, keys: &[TokenKey], errs: &mut Vec<String>) {
        for k in keys {
            if let Err(e) = crate::token::keyfile::read_verifying(&k.public_key) {
                errs.push(format!("{key} ({:?}).public_key: {e}", k.id));
            }
        }
    }
}

/// `[shutdown]` of the services whose shutdown is one grace period.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// How long work in flight gets to finish after SIGTERM.
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            grace: Duration::from_secs(10),
        }
    }
}

impl ShutdownConfig {
    pub fn validate(&self, errs: &mut Vec<String>) {
        if self.grace.is_zero() {
            errs.push("shutdown.grace: must be more than zero".into());
        }
    }
}

/// The `[cluster]` files every service that talks to stores reads.
pub struct ClusterFiles<'a> {
    pub map: &'a Path,
    /// `None` where the service needs no CA (a store of a one-island map).
    pub ca: Option<&'a Path>,
    pub secret_file: &'a Path,
}

impl ClusterFiles<'_> {
    pub fn validate(&self, errs: &mut Vec<String>) {
        empty_path("cluster.map", self.map, errs);
        if let Some(ca) = self.ca {
            empty_path("cluster.ca", ca, errs);
        }
        empty_path("cluster.secret_file", self.secret_file, errs);
    }

    /// Loads the map and the CA, and reads the secret with
    /// [`crate::secret::read_cluster`] (its owner and group only, at least
    /// [`MIN_CLUSTER_SECRET`] bytes).
    #[cfg(feature = "net")]
    pub fn check_files(&self, errs: &mut Vec<String>) {
        if let Err(e) = crate::cluster::ClusterMap::load(self.map) {
            errs.push(format!("cluster.map: {e}"));
        }
        if let Some(ca) = self.ca
            && let Err(e) = crate::tls::load_certs(ca)
        {
            errs.push(format!("cluster.ca: {e}"));
        }
        if let Err(e) = crate::secret::read_cluster(self.secret_file) {
            errs.push(format!("cluster.secret_file: {e}"));
        }
    }
}

/// `[cluster]` of a service that reaches the homes as a client (wa-media,
/// wa-register): the map, the CA of the stores' link certificates, the
/// cluster secret and how long a home may take to answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterClient {
    pub map: PathBuf,
    /// The CA that signed the stores' link certificates.
    pub ca: PathBuf,
    pub secret_file: PathBuf,
    /// How long a home may take to answer.
    pub timeout: Duration,
}

/// `[cluster]` as written: every key may be left out.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterClientToml {
    map: Option<PathBuf>,
    ca: Option<PathBuf>,
    secret_file: Option<PathBuf>,
    #[serde(default, with = "humantime_serde")]
    timeout: Option<Duration>,
}

impl ClusterClient {
    /// The defaults, the secret at `secret_file`.
    pub fn with_secret(secret_file: &str) -> ClusterClient {
        ClusterClient {
            map: CLUSTER_MAP.into(),
            ca: CLUSTER_CA.into(),
            secret_file: secret_file.into(),
            timeout: Duration::from_secs(5),
        }
    }

    /// Reads `[cluster]` (for `#[serde(deserialize_with)]`): a key left out
    /// gets its default, the secret the file at `secret_file`.
    pub fn of<'de, D: serde::Deserializer<'de>>(
        d: D,
        secret_file: &str,
    ) -> Result<ClusterClient, D::Error> {
        let t = ClusterClientToml::deserialize(d)?;
        let dflt = ClusterClient::with_secret(secret_file);
        Ok(ClusterClient {
            map: t.map.unwrap_or(dflt.map),
            ca: t.ca.unwrap_or(dflt.ca),
            secret_file: t.secret_file.unwrap_or(dflt.secret_file),
            timeout: t.timeout.unwrap_or(dflt.timeout),
        })
    }

    pub fn files(&self) -> ClusterFiles<'_> {
        ClusterFiles {
            map: &self.map,
            ca: Some(&self.ca),
            secret_file: &self.secret_file,
        }
    }
}

/// `[admin]`: the admin listener (`/metrics`, `/healthz`, `/readyz` and the
/// operations `wactl` uses). Plain HTTP meant for loopback; every request
/// but the health checks carries `Authorization: Bearer <token>` with the
/// contents of `token_file`.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    /// Address of the admin listener; loopback unless you mean otherwise.
    pub listen: SocketAddr,
    /// The admin token (owner-only file). Without it the listener answers
    /// health checks only and refuses everything else.
    pub token_file: PathBuf,
    /// The admin API on a Unix socket too, without a token: the socket's
    /// file permissions (0660, the service's user and group) and its
    /// directory's are the access control (`crate::admin::unix`).
    pub socket: Option<PathBuf>,
}

/// `[admin]` as written: `token_file` may be left out.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminToml {
    listen: SocketAddr,
    token_file: Option<PathBuf>,
    socket: Option<PathBuf>,
}

impl AdminConfig {
    /// The default of `service`: loopback, on `port`, its own token file.
    pub fn loopback(port: u16, service: &str) -> AdminConfig {
        AdminConfig {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
            token_file: admin_token(service),
            socket: None,
        }
    }

    /// Reads `[admin]` of `service` (for `#[serde(deserialize_with)]`): a
    /// table without `token_file` gets the service's own default.
    pub fn of<'de, D: serde::Deserializer<'de>>(
        d: D,
        service: &str,
    ) -> Result<AdminConfig, D::Error> {
        let t = AdminToml::deserialize(d)?;
        Ok(AdminConfig {
            listen: t.listen,
            token_file: t.token_file.unwrap_or_else(|| admin_token(service)),
            socket: t.socket,
        })
    }

    pub fn validate(&self, errs: &mut Vec<String>) {
        empty_path("admin.token_file", &self.token_file, errs);
        if let Some(s) = &self.socket
            && !s.is_absolute()
        {
            errs.push(format!(
                "admin.socket = {:?}: must be an absolute path",
                s.display()
            ));
        }
    }

    /// A token file that exists must be the owner's only; a missing one is
    /// allowed (the listener then refuses every authenticated request).
    pub fn check_files(&self, errs: &mut Vec<String>) {
        match crate::secret::read(&self.token_file, MIN_ADMIN_TOKEN) {
            Ok(_) => {}
            Err(crate::secret::SecretError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => errs.push(format!("admin.token_file: {e}")),
        }
    }
}

/// Fewest bytes an admin token may have.
pub const MIN_ADMIN_TOKEN: usize = 16;

/// `[log]`: what the service logs. Read again on SIGHUP.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter: `info`, `warn,wa_chat=debug`, ... `RUST_LOG`,
    /// when set, wins over it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
        }
    }
}

impl LogConfig {
    pub fn validate(&self, errs: &mut Vec<String>) {
        if self.level.trim().is_empty() {
            errs.push("log.level: must not be empty".into());
        }
    }
}

fn empty_path(key: &str, p: &Path, errs: &mut Vec<String>) {
    if p.as_os_str().is_empty() {
        errs.push(format!("{key}: must not be empty"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_defaults_to_loopback_and_needs_a_listen_address() {
        let a = AdminConfig::loopback(9401, "wa-store");
        assert!(a.listen.ip().is_loopback());
        assert_eq!(a.token_file, PathBuf::from("/etc/wa/admin/wa-store.token"));
        let of = |text: &str| AdminConfig::of(toml::de::ValueDeserializer::new(text), "wa-chat");
        let e = of("{ token_file = \"/x\" }").unwrap_err();
        assert!(e.to_string().contains("listen"), "{e}");
        let a = of("{ listen = \"127.0.0.1:1\" }").unwrap();
        assert_eq!(a.token_file, PathBuf::from("/etc/wa/admin/wa-chat.token"));
        let a = of("{ listen = \"127.0.0.1:1\", token_file = \"/x\" }").unwrap();
        assert_eq!(a.token_file, PathBuf::from("/x"));
    }

    #[test]
    fn admin_token_file_missing_is_fine_but_readable_by_others_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = AdminConfig::loopback(1, "wa-store");
        a.token_file = dir.path().join("admin.token");
        let mut errs = Vec::new();
        a.check_files(&mut errs);
        assert!(errs.is_empty(), "{errs:?}");
        crate::fsutil::write_private(&a.token_file, &[b'a'; 32]).unwrap();
        a.check_files(&mut errs);
        assert!(errs.is_empty(), "{errs:?}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&a.token_file, std::fs::Permissions::from_mode(0o644))
                .unwrap();
            a.check_files(&mut errs);
            assert!(
                errs.len() == 1 && errs[0].contains("admin.token_file"),
                "{errs:?}"
            );
        }
    }

    #[test]
    fn token_key_lists_name_every_problem() {
        let mut errs = Vec::new();
        TokenKey::validate_list("tokens.keys", &[], true, &mut errs);
        let k = TokenKey::default_k1();
        let blank = TokenKey {
            id: String::new(),
            public_key: PathBuf::new(),
        };
        TokenKey::validate_list("tokens.keys", &[k.clone(), k, blank], true, &mut errs);
        let all = errs.join("\n");
        for want in [
            "at least one key",
            "appears twice",
            "tokens.keys.id: must not be empty",
            "tokens.keys.public_key: must not be empty",
        ] {
            assert!(all.contains(want), "{want} missing from {all}");
        }
    }
}
