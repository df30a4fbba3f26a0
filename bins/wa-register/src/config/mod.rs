//! The configuration of `wa-register`: a TOML file parsed into [`Config`],
//! then checked by [`Config::validate`] (pure) and [`Config::check_files`]
//! (reads every file the service needs), each reporting every problem at once
//! with the key it concerns. The shipped sample is
//! `packaging/etc/wa-register.toml`, which a test proves equal to
//! [`Config::default`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;

use common::sections::ClusterClient;
pub use common::sections::{AdminConfig, LogConfig, ShutdownConfig, TlsConfig, TokenKey};

/// The admin listener's default port on loopback.
pub const ADMIN_PORT: u16 = 9404;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The name this service gives itself on the internal link.
    pub name: String,
    /// `production` refuses the development-only `log` SMS provider.
    pub mode: Mode,
    pub listen: ListenConfig,
    #[serde(deserialize_with = "admin")]
    pub admin: AdminConfig,
    #[serde(deserialize_with = "tls")]
    pub tls: TlsConfig,
    #[serde(deserialize_with = "cluster")]
    pub cluster: ClusterClient,
    /// With automatic failover: the cluster map comes from etcd and is
    /// followed (docs/OPERATIONS.md, "Automatic failover through etcd").
    pub coordination: common::coordination::CoordinationConfig,
    pub tokens: TokensConfig,
    pub codes: CodesConfig,
    pub pin: PinConfig,
    pub limits: LimitsConfig,
    pub countries: CountriesConfig,
    pub pumping: PumpingConfig,
    pub sms: SmsConfig,
    /// Numbers that get a fixed code and no SMS (app-store review, tests).
    pub test_numbers: Vec<TestNumber>,
    pub shutdown: ShutdownConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Production,
    Development,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ListenConfig {
    /// The public HTTPS API (TLS 1.3, HTTP/1.1).
    pub https: SocketAddr,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TokensConfig {
    /// The id of the signing key; every token names it.
    pub key_id: String,
    /// Ed25519 private key, PKCS#8 PEM, readable by its owner only.
    pub signing_key: PathBuf,
    /// How long an issued token is valid.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// Older public keys whose tokens may still be refreshed (rotation).
    pub verify_keys: Vec<TokenKey>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CodesConfig {
    /// How long a code may be used.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// Wrong guesses that kill a code.
    pub max_checks: u32,
    /// Wait after the 1st, 2nd, ... code sent to a number before the next;
    /// the last wait repeats.
    #[serde(deserialize_with = "durations")]
    pub resend_waits: Vec<Duration>,
    /// A number with no request for this long starts over at the first wait.
    #[serde(with = "humantime_serde")]
    pub forget_after: Duration,
    /// Wrong guesses a number may take over all its codes until it is
    /// forgotten (`forget_after` without a request): a new code does not
    /// bring fresh guesses beyond this.
    pub max_wrong_per_number: u32,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PinConfig {
    /// Server-side secret mixed into every PIN hash (Argon2id "secret"); at
    /// least 16 bytes, readable by its owner only.
    pub pepper_file: PathBuf,
    /// Wrong PINs before the account allows only one try per `lockout`.
    pub max_wrong: u32,
    #[serde(with = "humantime_serde")]
    pub lockout: Duration,
    /// The registration lock lapses when the account was not seen this long.
    #[serde(with = "humantime_serde")]
    pub lapse_after: Duration,
}

/// `count` requests per `per`, with bursts up to `count`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    pub count: u32,
    #[serde(with = "humantime_serde")]
    pub per: Duration,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Code requests per phone number.
    pub per_number: Rate,
    /// Code requests per client address (an IPv6 address counts by its /64).
    pub per_address: Rate,
    /// Code requests per client network: an IPv4 /24, an IPv6 /48.
    pub per_network: Rate,
    /// Code requests per number prefix (the first `prefix_digits` digits).
    pub per_prefix: Rate,
    pub prefix_digits: usize,
    /// Code requests of the whole service.
    pub global: Rate,
    /// Verification attempts per client address.
    pub verify_per_address: Rate,
    /// PIN hashes (setting or checking a registration-lock PIN) per account.
    pub pin_per_account: Rate,
    /// PIN hashes per client address (an IPv6 address counts by its /64).
    pub pin_per_address: Rate,
    /// Largest request body.
    pub max_body: ByteSize,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CountriesConfig {
    /// Number prefixes (`"+1"`, `"+44"`, `"+4930"`) that may register.
    /// Required in production (list the countries you serve, so premium
    /// ranges never get an SMS); empty allows every number, in development
    /// only.
    pub allow: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PumpingConfig {
    /// Codes sent and verified are counted per prefix over this window.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// A prefix is suspect once it had at least this many codes sent...
    pub min_sent: u64,
    /// ...and fewer than this share of them verified.
    pub min_verified_ratio: f64,
    /// Code requests per suspect prefix for the rest of the window (the
    /// prefix's limit tightens to this when the signal fires; an operator
    /// may release it: `POST /admin/pumping/release?prefix=...`).
    pub tightened: Rate,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SmsConfig {
    pub provider: Provider,
    pub log: LogSmsConfig,
    pub webhook: WebhookConfig,
    pub command: CommandConfig,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Log,
    Webhook,
    Command,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogSmsConfig {
    /// Each code is appended here as `NUMBER CODE` (development only).
    pub file: PathBuf,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// `http://` or `https://` URL the message is POSTed to.
    pub url: String,
    pub content_type: String,
    /// Body template: `{number}`, `{code}` and `{message}` are replaced.
    pub body: String,
    /// A file holding the `Authorization` header value, if the gateway wants one.
    pub auth_header_file: Option<PathBuf>,
    /// Roots for `https://` gateways (PEM bundle).
    pub ca_file: PathBuf,
    /// Per attempt, connect to answer.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Further attempts after a failure that may pass (network, 5xx, 429).
    pub retries: u32,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CommandConfig {
    /// Run with `args`; the number, code and message are in the environment
    /// (`WA_SMS_NUMBER`, `WA_SMS_CODE`, `WA_SMS_MESSAGE`), never in argv.
    pub program: PathBuf,
    pub args: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TestNumber {
    pub number: String,
    pub code: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            name: "register-1".into(),
            mode: Mode::Production,
            listen: ListenConfig::default(),
            admin: AdminConfig::loopback(ADMIN_PORT, "wa-register"),
            tls: TlsConfig::of("wa-register"),
            cluster: ClusterClient::with_secret(CLUSTER_SECRET),
            coordination: Default::default(),
            tokens: TokensConfig::default(),
            codes: CodesConfig::default(),
            pin: PinConfig::default(),
            limits: LimitsConfig::default(),
            countries: CountriesConfig::default(),
            pumping: PumpingConfig::default(),
            sms: SmsConfig::default(),
            test_numbers: Vec::new(),
            shutdown: ShutdownConfig::default(),
            log: LogConfig::default(),
        }
    }
}

impl Default for ListenConfig {
    fn default() -> Self {
        ListenConfig {
            https: SocketAddr::from(([0, 0, 0, 0], 8444)),
        }
    }
}

impl Default for TokensConfig {
    fn default() -> Self {
        TokensConfig {
            key_id: "k1".into(),
            signing_key: "/etc/wa/keys/k1.key".into(),
            ttl: Duration::from_secs(30 * 24 * 3600),
            verify_keys: Vec::new(),
        }
    }
}

impl Default for CodesConfig {
    fn default() -> Self {
        CodesConfig {
            ttl: Duration::from_secs(600),
            max_checks: 5,
            resend_waits: [1, 2, 5, 10].map(|m| Duration::from_secs(m * 60)).to_vec(),
            forget_after: Duration::from_secs(3600),
            max_wrong_per_number: 10,
        }
    }
}

impl Default for PinConfig {
    fn default() -> Self {
        PinConfig {
            pepper_file: "/etc/wa/register/pin.pepper".into(),
            max_wrong: 10,
            lockout: Duration::from_secs(24 * 3600),
            lapse_after: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let rate = |count, secs| Rate {
            count,
            per: Duration::from_secs(secs),
        };
        LimitsConfig {
            per_number: rate(6, 3600),
            per_address: rate(20, 3600),
            per_network: rate(100, 3600),
            per_prefix: rate(500, 3600),
            prefix_digits: 6,
            global: rate(100, 1),
            verify_per_address: rate(60, 3600),
            pin_per_account: rate(20, 3600),
            pin_per_address: rate(60, 3600),
            max_body: ByteSize::kib(4),
        }
    }
}

impl Default for CountriesConfig {
    fn default() -> Self {
        CountriesConfig {
            allow: ["+1", "+33", "+44", "+49"].map(String::from).to_vec(),
        }
    }
}

impl Default for PumpingConfig {
    fn default() -> Self {
        PumpingConfig {
            window: Duration::from_secs(3600),
            min_sent: 50,
            min_verified_ratio: 0.2,
            tightened: Rate {
                count: 10,
                per: Duration::from_secs(3600),
            },
        }
    }
}

impl Default for SmsConfig {
    fn default() -> Self {
        SmsConfig {
            provider: Provider::Webhook,
            log: LogSmsConfig::default(),
            webhook: WebhookConfig::default(),
            command: CommandConfig::default(),
        }
    }
}

impl Default for LogSmsConfig {
    fn default() -> Self {
        LogSmsConfig {
            file: "/var/lib/wa/register/codes.log".into(),
        }
    }
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            url: "https://sms-gateway.example/send".into(),
            content_type: "application/json".into(),
            body: r#"{"to": "{number}", "text": "{message}"}"#.into(),
            auth_header_file: None,
            ca_file: "/etc/ssl/certs/ca-certificates.crt".into(),
            timeout: Duration::from_secs(5),
            retries: 2,
        }
    }
}

impl Default for CommandConfig {
    fn default() -> Self {
        CommandConfig {
            program: "/usr/local/bin/wa-send-sms".into(),
            args: Vec::new(),
            timeout: Duration::from_secs(10),
        }
    }
}

pub use common::config::ConfigError;

mod check;
/// A list of human durations (`["1m", "2m"]`).
fn durations<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
    let v: Vec<humantime_serde::Serde<Duration>> = Deserialize::deserialize(d)?;
    Ok(v.into_iter().map(|s| s.into_inner()).collect())
}

/// wa-register's own copy of the cluster secret: the shared one is for the
/// group `wa-cluster`, which wa-register is not in (docs/INSTALL.md).
pub const CLUSTER_SECRET: &str = "/etc/wa/register/cluster.secret";

/// `[cluster]`, its secret defaulting to wa-register's own copy.
fn cluster<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ClusterClient, D::Error> {
    ClusterClient::of(d, CLUSTER_SECRET)
}

/// `[admin]`, its token file defaulting to this service's own.
fn admin<'de, D: serde::Deserializer<'de>>(d: D) -> Result<AdminConfig, D::Error> {
    AdminConfig::of(d, "wa-register")
}

/// `[tls]`, its files defaulting to this service's own.
fn tls<'de, D: serde::Deserializer<'de>>(d: D) -> Result<TlsConfig, D::Error> {
    TlsConfig::for_service(d, "wa-register")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_sample_is_the_defaults() {
        let shipped = include_str!("../../../../packaging/etc/wa-register.toml");
        let c: Config = toml::from_str(shipped).unwrap();
        assert_eq!(c, Config::default());
        c.validate().unwrap();
        let empty: Config = toml::from_str("").unwrap();
        assert_eq!(empty, Config::default());
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        for (text, key) in [
            ("nam = \"x\"", "nam"),
            ("[codes]\nlifetime = \"1m\"", "lifetime"),
            ("[sms.webhook]\nurl2 = \"x\"", "url2"),
        ] {
            let e = toml::from_str::<Config>(text).unwrap_err().to_string();
            assert!(e.contains(key), "{key} missing from {e}");
        }
    }

    #[test]
    fn production_needs_an_allow_list_and_an_https_webhook() {
        let c: Config = toml::from_str(
            "[countries]\nallow = []\n[sms.webhook]\nurl = \"http://gw.example/send\"\n",
        )
        .unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("countries.allow: required"), "{e}");
        assert!(e.contains("plain http://"), "{e}");
        let c: Config = toml::from_str(
            "mode = \"development\"\n[countries]\nallow = []\n[sms.webhook]\nurl = \"http://gw.example/send\"\n",
        )
        .unwrap();
        c.validate().unwrap();
    }

    #[test]
    fn log_provider_is_refused_in_production() {
        let c: Config = toml::from_str("[sms]\nprovider = \"log\"\n").unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("sms.provider"), "{e}");
        let c: Config =
            toml::from_str("mode = \"development\"\n[sms]\nprovider = \"log\"\n").unwrap();
        c.validate().unwrap();
    }

    #[test]
    fn every_problem_is_named() {
        let c: Config = toml::from_str(
            r#"
[codes]
max_checks = 0
resend_waits = []
[limits]
per_number = { count = 0, per = "1h" }
[countries]
allow = ["44"]
[sms.webhook]
url = "ftp://x"
body = "hello"
[[test_numbers]]
number = "12345"
code = "12"
"#,
        )
        .unwrap();
        let e = c.validate().unwrap_err().to_string();
        for key in [
            "codes.max_checks",
            "codes.resend_waits",
            "limits.per_number",
            "countries.allow",
            "sms.webhook.url",
            "sms.webhook.body",
            "test_numbers.number",
            "test_numbers.code",
        ] {
            assert!(e.contains(key), "{key} missing from {e}");
        }
    }
}
