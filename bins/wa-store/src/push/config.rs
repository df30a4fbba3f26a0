//! The `[push]` section: how pushes are paced and where each provider is
//! (docs/OPERATIONS.md, "Push notifications").

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PushConfig {
    /// How long after the first item for an offline device its push waits,
    /// gathering the rest of a burst into the same push.
    #[serde(with = "humantime_serde")]
    pub coalesce: Duration,
    /// At most one push per device per this long.
    #[serde(with = "humantime_serde")]
    pub min_interval: Duration,
    /// A device whose sessions were all pushed items and acknowledged none
    /// for this long counts as absent: a new item wakes it as if it had no
    /// session (its app may be suspended with its connection still open).
    /// `0s`: only devices without a session are woken.
    #[serde(with = "humantime_serde")]
    pub wake_idle_after: Duration,
    /// Most devices with a push waiting; a push decided beyond it is dropped
    /// (counted as failed, reason `queue_full`).
    pub queue_max: usize,
    /// Attempts of one push before it is given up (failed, reason
    /// `attempts`).
    pub max_attempts: u32,
    /// Retry delays after a provider error: doubling from `backoff_initial`
    /// up to `backoff_max`, with full jitter; a provider's `Retry-After` is
    /// honoured when it is longer.
    #[serde(with = "humantime_serde")]
    pub backoff_initial: Duration,
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    /// One request to a provider, connection included.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Requests to providers in flight at once.
    pub concurrency: usize,
    /// The CA certificates that verify the providers' HTTPS servers (and
    /// UnifiedPush distributors).
    pub ca_file: PathBuf,
    pub apns: ApnsConfig,
    pub fcm: FcmConfig,
    pub unifiedpush: UnifiedPushConfig,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            coalesce: Duration::from_secs(2),
            min_interval: Duration::from_secs(30),
            wake_idle_after: Duration::from_secs(20),
            queue_max: 100_000,
            max_attempts: 12,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(600),
            timeout: Duration::from_secs(10),
            concurrency: 64,
            ca_file: PathBuf::from("/etc/ssl/certs/ca-certificates.crt"),
            apns: ApnsConfig::default(),
            fcm: FcmConfig::default(),
            unifiedpush: UnifiedPushConfig::default(),
        }
    }
}

/// Apple Push Notification service, token (ES256 JWT) authentication.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ApnsConfig {
    /// `https://api.push.apple.com`, or `https://api.sandbox.push.apple.com`
    /// for development builds of the app.
    pub url: String,
    /// The `.p8` signing key from the Apple developer account (PKCS#8 PEM,
    /// P-256); empty: APNs is not used and its endpoints get no pushes.
    pub key_file: PathBuf,
    /// The key's id (10 characters, the JWT's `kid`).
    pub key_id: String,
    /// The developer team id (the JWT's `iss`).
    pub team_id: String,
    /// The app's bundle id (`apns-topic`).
    pub topic: String,
}

impl Default for ApnsConfig {
    fn default() -> Self {
        ApnsConfig {
            url: "https://api.push.apple.com".into(),
            key_file: PathBuf::new(),
            key_id: String::new(),
            team_id: String::new(),
            topic: String::new(),
        }
    }
}

/// Firebase Cloud Messaging, HTTP v1 API.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FcmConfig {
    /// `https://fcm.googleapis.com`.
    pub url: String,
    /// The service account's JSON key (`project_id`, `client_email`,
    /// `private_key`, `token_uri`); empty: FCM is not used.
    pub service_account_file: PathBuf,
}

impl Default for FcmConfig {
    fn default() -> Self {
        FcmConfig {
            url: "https://fcm.googleapis.com".into(),
            service_account_file: PathBuf::new(),
        }
    }
}

/// UnifiedPush (Web Push to the endpoint URL each device registered).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct UnifiedPushConfig {
    pub enabled: bool,
    /// Also post to plain `http://` endpoints (tests, closed networks);
    /// otherwise only `https://` ones get pushes.
    pub allow_http: bool,
    /// A P-256 key (PKCS#8 PEM) identifying this server to push services
    /// (VAPID, RFC 8292): every request carries `Authorization: vapid` signed
    /// with it. Empty: requests are not signed (most UnifiedPush
    /// distributors need no VAPID; some Web Push services do).
    pub vapid_key_file: PathBuf,
    /// Who runs this server, for the push service (`mailto:` or `https:`
    /// URI, the VAPID `sub` claim); needed with `vapid_key_file`.
    pub vapid_subject: String,
}

impl Default for UnifiedPushConfig {
    fn default() -> Self {
        UnifiedPushConfig {
            enabled: true,
            allow_http: false,
            vapid_key_file: PathBuf::new(),
            vapid_subject: String::new(),
        }
    }
}

impl PushConfig {
    /// Every problem, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut errs = Vec::new();
        if self.queue_max == 0 {
            errs.push("push.queue_max: must be more than zero".into());
        }
        if self.max_attempts == 0 {
            errs.push("push.max_attempts: must be more than zero".into());
        }
        if self.concurrency == 0 {
            errs.push("push.concurrency: must be more than zero".into());
        }
        if self.backoff_initial.is_zero() || self.backoff_max < self.backoff_initial {
            errs.push(
                "push.backoff_initial: must be more than zero and at most push.backoff_max".into(),
            );
        }
        if self.timeout.is_zero() {
            errs.push("push.timeout: must be more than zero".into());
        }
        for (key, url) in [
            ("push.apns.url", &self.apns.url),
            ("push.fcm.url", &self.fcm.url),
        ] {
            if reqwest::Url::parse(url).is_err() {
                errs.push(format!("{key}: {url:?} is not a URL"));
            }
        }
        if !self.apns.key_file.as_os_str().is_empty() {
            for (key, v) in [
                ("push.apns.key_id", &self.apns.key_id),
                ("push.apns.team_id", &self.apns.team_id),
                ("push.apns.topic", &self.apns.topic),
            ] {
                if v.is_empty() {
                    errs.push(format!("{key}: must be set with push.apns.key_file"));
                }
            }
        }
        if !self.unifiedpush.vapid_key_file.as_os_str().is_empty() {
            let sub = &self.unifiedpush.vapid_subject;
            if !(sub.starts_with("mailto:") || sub.starts_with("https:")) {
                errs.push(format!(
                    "push.unifiedpush.vapid_subject: {sub:?} must be a mailto: or https: URI with push.unifiedpush.vapid_key_file"
                ));
            }
        }
        errs
    }
}
