//! The three push services, one request each: APNs (HTTP/2, ES256 token
//! authentication), FCM (HTTP v1 with an OAuth 2 access token from a
//! service-account JWT, cached until it expires) and UnifiedPush (an RFC
//! 8291 encrypted POST to the device's endpoint). Every request carries only
//! "N new items": never content, never a sender.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use common::link::PushEndpoint;
use common::proto::PushProvider;
use serde::Deserialize;

use super::config::PushConfig;
use super::jwt::Signer;

/// What became of one push.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The provider took it.
    Sent,
    /// Try again, not before `after` (the provider's `Retry-After`) if given.
    Retry {
        after: Option<Duration>,
        reason: &'static str,
    },
    /// The token or endpoint is dead (APNs 410/BadDeviceToken, FCM
    /// UNREGISTERED/404, UnifiedPush 404/410): remove it.
    Gone,
    /// Refused for good (a malformed request, a provider not configured).
    Failed(&'static str),
}

/// Collapse id / topic of every push: a newer one replaces an older one still
/// waiting at the provider or on the device.
pub const COLLAPSE_ID: &str = "wa-new-items";

/// The provider's name in metrics and logs.
pub fn name(provider: i32) -> &'static str {
    match PushProvider::try_from(provider) {
        Ok(PushProvider::Apns) => "apns",
        Ok(PushProvider::Fcm) => "fcm",
        Ok(PushProvider::Unifiedpush) => "unifiedpush",
        _ => "unknown",
    }
}

struct Apns {
    url: String,
    signer: Signer,
    key_id: String,
    team_id: String,
    topic: String,
    /// The provider token and when it was made (APNs wants it renewed at
    /// most every 20 minutes and refuses it after an hour).
    token: Mutex<Option<(String, Instant)>>,
}

#[derive(Deserialize)]
struct ServiceAccount {
    project_id: String,
    client_email: String,
    private_key: String,
    #[serde(default)]
    private_key_id: String,
    token_uri: String,
}

struct Fcm {
    url: String,
    project: String,
    email: String,
    key_id: String,
    token_uri: String,
    signer: Signer,
    /// The OAuth 2 access token and when it expires. (A miss fetches a new
    /// one without holding the lock: concurrent misses may each fetch one,
    /// at most `push.concurrency`, once an hour.)
    access: Mutex<Option<(String, Instant)>>,
}

pub struct Providers {
    /// HTTP/2 only (APNs speaks nothing else).
    h2: reqwest::Client,
    http: reqwest::Client,
    apns: Option<Apns>,
    fcm: Option<Fcm>,
    unifiedpush: bool,
    allow_http: bool,
    vapid: Option<super::webpush::Vapid>,
}

/// APNs tokens are renewed after this long.
const APNS_TOKEN_AGE: Duration = Duration::from_secs(30 * 60);

fn client(
    cfg: &PushConfig,
    roots: &[rustls_pki_types::CertificateDer<'static>],
    h2: bool,
) -> Result<reqwest::Client, String> {
    let alpn: &[&[u8]] = if h2 { &[b"h2"] } else { &[b"h2", b"http/1.1"] };
    let tls = common::tls::client_config(roots, alpn).map_err(|e| e.to_string())?;
    let mut b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(cfg.timeout)
        .connect_timeout(cfg.timeout)
        .tls_backend_preconfigured(tls);
    if h2 {
        b = b.http2_prior_knowledge();
    }
    b.build().map_err(|e| format!("HTTP client: {e}"))
}

impl Providers {
    /// Reads the keys `cfg` names; a provider whose key is not configured is
    /// off (its pushes fail with reason `not_configured`).
    pub fn new(cfg: &PushConfig) -> Result<Providers, String> {
        let roots = match common::tls::load_certs(&cfg.ca_file) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, file = %cfg.ca_file.display(), "no CA certificates for push providers: HTTPS pushes will fail");
                Vec::new()
            }
        };
        let apns = if cfg.apns.key_file.as_os_str().is_empty() {
            None
        } else {
            let pem = common::secret::read(&cfg.apns.key_file, 1)
                .map_err(|e| format!("push.apns.key_file: {e}"))?;
            Some(Apns {
                url: cfg.apns.url.trim_end_matches('/').to_owned(),
                signer: Signer::es256_pem(&pem).map_err(|e| format!("push.apns.key_file: {e}"))?,
                key_id: cfg.apns.key_id.clone(),
                team_id: cfg.apns.team_id.clone(),
                topic: cfg.apns.topic.clone(),
                token: Mutex::new(None),
            })
        };
        let fcm = if cfg.fcm.service_account_file.as_os_str().is_empty() {
            None
        } else {
            let raw = common::secret::read(&cfg.fcm.service_account_file, 1)
                .map_err(|e| format!("push.fcm.service_account_file: {e}"))?;
            let sa: ServiceAccount = serde_json::from_slice(&raw)
                .map_err(|e| format!("push.fcm.service_account_file: {e}"))?;
            Some(Fcm {
                url: cfg.fcm.url.trim_end_matches('/').to_owned(),
                signer: Signer::rs256_pem(sa.private_key.as_bytes())
                    .map_err(|e| format!("push.fcm.service_account_file: private_key: {e}"))?,
                project: sa.project_id,
                email: sa.client_email,
                key_id: sa.private_key_id,
                token_uri: sa.token_uri,
                access: Mutex::new(None),
            })
        };
        Ok(Providers {
            vapid: super::webpush::Vapid::load(&cfg.unifiedpush)?,
            h2: client(cfg, &roots, true)?,
            http: client(cfg, &roots, false)?,
            apns,
            fcm,
            unifiedpush: cfg.unifiedpush.enabled,
            allow_http: cfg.unifiedpush.allow_http,
        })
    }

    /// Wakes the device of `e`, telling it `count` items wait.
    pub async fn send(&self, e: &PushEndpoint, count: u32) -> Outcome {
        match PushProvider::try_from(e.provider) {
            Ok(PushProvider::Apns) => match &self.apns {
                Some(a) => self.apns(a, e, count).await,
                None => Outcome::Failed("not_configured"),
            },
            Ok(PushProvider::Fcm) => match &self.fcm {
                Some(f) => self.fcm(f, e, count).await,
                None => Outcome::Failed("not_configured"),
            },
            Ok(PushProvider::Unifiedpush) if self.unifiedpush => self.unifiedpush(e, count).await,
            Ok(PushProvider::Unifiedpush) => Outcome::Failed("not_configured"),
            _ => Outcome::Failed("bad_endpoint"),
        }
    }

    async fn apns(&self, a: &Apns, e: &PushEndpoint, count: u32) -> Outcome {
        let token = {
            let mut t = a.token.lock().unwrap_or_else(|p| p.into_inner());
            match &*t {
                Some((tok, at)) if at.elapsed() < APNS_TOKEN_AGE => tok.clone(),
                _ => {
                    let claims = serde_json::json!({
                        "iss": a.team_id,
                        "iat": common::fsutil::now_ms() / 1000,
                    });
                    let tok = a.signer.sign(Some(&a.key_id), &claims);
                    *t = Some((tok.clone(), Instant::now()));
                    tok
                }
            }
        };
        let (push_type, priority, body) = if e.alert {
            (
                "alert",
                "10",
                serde_json::json!({"aps": {
                    "alert": {"title": "wa", "body": text(count)},
                    "badge": count,
                    "sound": "default",
                }, "n": count}),
            )
        } else {
            (
                "background",
                "5",
                serde_json::json!({"aps": {"content-available": 1}, "n": count}),
            )
        };
        let expiration = common::fsutil::now_ms() / 1000 + 24 * 3600;
        let r = self
            .h2
            .post(format!("{}/3/device/{}", a.url, e.token))
            .header("authorization", format!("bearer {token}"))
            .header("apns-push-type", push_type)
            .header("apns-topic", &a.topic)
            .header("apns-priority", priority)
            .header("apns-collapse-id", COLLAPSE_ID)
            .header("apns-expiration", expiration.to_string())
            .json(&body)
            .send()
            .await;
        let r = match r {
            Ok(r) => r,
            Err(err) => return transport_error(&err),
        };
        let status = r.status().as_u16();
        let after = retry_after(&r);
        let reason = r
            .json::<serde_json::Value>()
            .await
            .ok()
            .and_then(|v| v["reason"].as_str().map(str::to_owned))
            .unwrap_or_default();
        match (status, reason.as_str()) {
            (200, _) => Outcome::Sent,
            (410, _) | (400, "BadDeviceToken" | "DeviceTokenNotForTopic") => Outcome::Gone,
            (403, "ExpiredProviderToken") => {
                *a.token.lock().unwrap_or_else(|p| p.into_inner()) = None;
                Outcome::Retry {
                    after: None,
                    reason: "expired_token",
                }
            }
            (429, _) => Outcome::Retry {
                after,
                reason: "too_many_requests",
            },
            (500..=599, _) => Outcome::Retry {
                after,
                reason: "unavailable",
            },
            (403, _) => Outcome::Failed("forbidden"),
            _ => Outcome::Failed("rejected"),
        }
    }

    /// The FCM access token, fetched again once expired (or `renew`).
    async fn access_token(&self, f: &Fcm, renew: bool) -> Result<String, Outcome> {
        if !renew {
            let access = f.access.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((tok, until)) = &*access
                && Instant::now() < *until
            {
                return Ok(tok.clone());
            }
        }
        let now = common::fsutil::now_ms() / 1000;
        let claims = serde_json::json!({
            "iss": f.email,
            "scope": "https://www.googleapis.com/auth/firebase.messaging",
            "aud": f.token_uri,
            "iat": now,
            "exp": now + 3600,
        });
        let kid = (!f.key_id.is_empty()).then_some(f.key_id.as_str());
        let assertion = f.signer.sign(kid, &claims);
        let r = self
            .http
            .post(&f.token_uri)
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", assertion.as_str()),
            ])
            .send()
            .await
            .map_err(|e| transport_error(&e))?;
        let status = r.status().as_u16();
        if status != 200 {
            tracing::warn!(
                status,
                "the OAuth 2 token endpoint refused the service account"
            );
            return Err(if status >= 500 || status == 429 {
                Outcome::Retry {
                    after: retry_after(&r),
                    reason: "oauth",
                }
            } else {
                Outcome::Failed("oauth")
            });
        }
        #[derive(Deserialize)]
        struct Token {
            access_token: String,
            expires_in: u64,
        }
        let t: Token = r.json().await.map_err(|_| Outcome::Retry {
            after: None,
            reason: "oauth",
        })?;
        // Renewed a minute before Google would refuse it.
        let until = Instant::now() + Duration::from_secs(t.expires_in.saturating_sub(60));
        *f.access.lock().unwrap_or_else(|p| p.into_inner()) = Some((t.access_token.clone(), until));
        Ok(t.access_token)
    }

    async fn fcm(&self, f: &Fcm, e: &PushEndpoint, count: u32) -> Outcome {
        let mut renewed = false;
        loop {
            let token = match self.access_token(f, renewed).await {
                Ok(t) => t,
                Err(o) => return o,
            };
            let mut message = serde_json::json!({
                "token": e.token,
                "data": {"wa": "new_items", "n": count.to_string()},
                "android": {
                    "priority": if e.alert { "HIGH" } else { "NORMAL" },
                    "collapse_key": COLLAPSE_ID,
                },
            });
            if e.alert {
                message["notification"] = serde_json::json!({"title": "wa", "body": text(count)});
            }
            let r = self
                .http
                .post(format!("{}/v1/projects/{}/messages:send", f.url, f.project))
                .bearer_auth(&token)
                .json(&serde_json::json!({ "message": message }))
                .send()
                .await;
            let r = match r {
                Ok(r) => r,
                Err(err) => return transport_error(&err),
            };
            let status = r.status().as_u16();
            let after = retry_after(&r);
            let body = r.json::<serde_json::Value>().await.unwrap_or_default();
            let unregistered = body["error"]["details"]
                .as_array()
                .is_some_and(|d| d.iter().any(|x| x["errorCode"] == "UNREGISTERED"))
                || body["error"]["status"] == "NOT_FOUND";
            return match status {
                200 => Outcome::Sent,
                404 => Outcome::Gone,
                _ if unregistered => Outcome::Gone,
                401 if !renewed => {
                    renewed = true;
                    continue;
                }
                429 => Outcome::Retry {
                    after,
                    reason: "too_many_requests",
                },
                500..=599 => Outcome::Retry {
                    after,
                    reason: "unavailable",
                },
                _ => Outcome::Failed("rejected"),
            };
        }
    }

    async fn unifiedpush(&self, e: &PushEndpoint, count: u32) -> Outcome {
        if !(e.token.starts_with("https://") || (self.allow_http && e.token.starts_with("http://")))
        {
            return Outcome::Failed("http_refused");
        }
        let plain = serde_json::json!({ "n": count }).to_string();
        let body = match super::webpush::encrypt(&e.p256dh, &e.auth, plain.as_bytes()) {
            Ok(b) => b,
            Err(err) => {
                tracing::warn!(error = %err, "cannot encrypt for a UnifiedPush endpoint");
                return Outcome::Failed("bad_endpoint");
            }
        };
        let mut req = self.http.post(&e.token);
        if let Some(v) = &self.vapid {
            let Some(auth) = v.authorization(&e.token) else {
                return Outcome::Failed("bad_endpoint");
            };
            req = req.header("authorization", auth);
        }
        let r = req
            .header("content-encoding", "aes128gcm")
            .header("content-type", "application/octet-stream")
            .header("ttl", "86400")
            .header("urgency", if e.alert { "high" } else { "normal" })
            .header("topic", COLLAPSE_ID)
            .body(body)
            .send()
            .await;
        let r = match r {
            Ok(r) => r,
            Err(err) => return transport_error(&err),
        };
        match r.status().as_u16() {
            200..=299 => Outcome::Sent,
            404 | 410 => Outcome::Gone,
            429 => Outcome::Retry {
                after: retry_after(&r),
                reason: "too_many_requests",
            },
            500..=599 => Outcome::Retry {
                after: retry_after(&r),
                reason: "unavailable",
            },
            _ => Outcome::Failed("rejected"),
        }
    }
}

/// The visible text of an alert.
fn text(count: u32) -> String {
    match count {
        1 => "You have 1 new item".into(),
        n => format!("You have {n} new items"),
    }
}

fn transport_error(e: &reqwest::Error) -> Outcome {
    tracing::debug!(error = %e, "push request failed");
    Outcome::Retry {
        after: None,
        reason: if e.is_timeout() { "timeout" } else { "connect" },
    }
}

fn retry_after(r: &reqwest::Response) -> Option<Duration> {
    parse_retry_after(
        r.headers().get("retry-after")?.to_str().ok()?,
        SystemTime::now(),
    )
}

/// A `Retry-After` value (RFC 9110, section 10.2.3) as a delay from `now`:
/// delay-seconds, or an HTTP-date (IMF-fixdate, or the obsolete RFC 850
/// and asctime forms); a date already past is no delay. Anything else is
/// treated as absent.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        let secs = |s| parse_retry_after(s, now).map(|d| d.as_secs());
        assert_eq!(secs("120"), Some(120));
        assert_eq!(secs(" 7 "), Some(7));
        assert_eq!(secs("Sun, 06 Nov 1994 08:51:37 GMT"), Some(120));
        assert_eq!(secs("Sunday, 06-Nov-94 08:49:47 GMT"), Some(10), "RFC 850");
        assert_eq!(secs("Sun Nov  6 08:49:57 1994"), Some(20), "asctime");
        assert_eq!(secs("Sun, 06 Nov 1994 08:00:00 GMT"), Some(0), "past");
        assert_eq!(secs("soon"), None);
        assert_eq!(secs("-5"), None);
    }
}
