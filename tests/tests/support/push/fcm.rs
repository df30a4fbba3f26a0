//! A fake FCM: Google's OAuth 2 token endpoint (`POST /token`, the
//! service-account grant: an RS256 JWT whose signature and claims it checks
//! against the service account's key) and the HTTP v1 API (`POST
//! /v1/projects/<id>/messages:send` with a bearer token it issued, and a
//! `message` of the documented shape). Answers 200 with a message name, or
//! its script.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ring::signature::{RSA_PKCS1_2048_8192_SHA256, RsaKeyPair, UnparsedPublicKey};
use rustls_pki_types::PrivatePkcs8KeyDer;
use rustls_pki_types::pem::PemObject;

use super::{Log, Reply, Taken, now_secs, parse_jwt, serve, write_secret};

pub const PROJECT: &str = "wa-test-project";
pub const EMAIL: &str = "wa-push@wa-test-project.iam.gserviceaccount.com";
const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// A test-only RSA key (never used anywhere else).
const KEY_PEM: &str = include_str!("fcm-test-key.pem");

pub struct FakeFcm {
    pub url: String,
    pub log: Arc<Log>,
    /// Access tokens granted.
    pub grants: Arc<AtomicU64>,
}

impl FakeFcm {
    /// Starts the fake and writes the service account's JSON key to
    /// `account_file`, its `token_uri` pointing at the fake.
    pub async fn start(account_file: &Path) -> FakeFcm {
        let der = PrivatePkcs8KeyDer::from_pem_slice(KEY_PEM.as_bytes()).unwrap();
        let public = RsaKeyPair::from_pkcs8(der.secret_pkcs8_der())
            .unwrap()
            .public()
            .as_ref()
            .to_vec();
        let log = Arc::new(Log::default());
        let grants = Arc::new(AtomicU64::new(0));
        let issued: Arc<Mutex<Vec<String>>> = Arc::default();
        let token_uri: Arc<Mutex<String>> = Arc::default();
        let (l, g, tu) = (
            Arc::clone(&log),
            Arc::clone(&grants),
            Arc::clone(&token_uri),
        );
        let addr = serve(
            false,
            Arc::new(move |parts, body| {
                let path = parts.uri.path().to_owned();
                if path == "/token" {
                    return match check_grant(parts, body, &public, &tu.lock().unwrap()) {
                        Ok(()) => {
                            let n = g.fetch_add(1, Ordering::SeqCst) + 1;
                            let tok = format!("ya29.fake-{n}");
                            issued.lock().unwrap().push(tok.clone());
                            let json = serde_json::json!({"access_token": tok, "expires_in": 3599, "token_type": "Bearer"});
                            (200, vec![("content-type", "application/json".into())], json.to_string())
                        }
                        Err(e) => {
                            l.problem(format!("OAuth grant refused: {e}"));
                            (400, Vec::new(), r#"{"error":"invalid_grant"}"#.into())
                        }
                    };
                }
                let checked = check_send(parts, body, &issued.lock().unwrap());
                let (status, headers, text, payload) = match checked {
                    Err((status, e)) => {
                        l.problem(format!("FCM send refused: {e}"));
                        (status, Vec::new(), format!(r#"{{"error":{{"code":{status},"message":"{e}"}}}}"#), serde_json::Value::Null)
                    }
                    Ok(payload) => match l.next_reply() {
                        Some(r) => (r.status, r.headers, r.body, payload),
                        None => (
                            200,
                            vec![("content-type", "application/json".into())],
                            format!(r#"{{"name":"projects/{PROJECT}/messages/0:1"}}"#),
                            payload,
                        ),
                    },
                };
                l.taken.lock().unwrap().push(Taken {
                    at: std::time::Instant::now(),
                    path,
                    headers: parts.headers.clone(),
                    body: body.clone(),
                    payload,
                    status,
                });
                (status, headers, text)
            }),
        )
        .await;
        let url = format!("http://{addr}");
        *token_uri.lock().unwrap() = format!("{url}/token");
        let account = serde_json::json!({
            "type": "service_account",
            "project_id": PROJECT,
            "private_key_id": "0123456789abcdef",
            "private_key": KEY_PEM,
            "client_email": EMAIL,
            "token_uri": format!("{url}/token"),
        });
        write_secret(account_file, account.to_string().as_bytes());
        FakeFcm { url, log, grants }
    }

    pub fn config(&self, account_file: &Path) -> String {
        format!(
            "[push.fcm]\nurl = \"{}\"\nservice_account_file = \"{}\"\n",
            self.url,
            account_file.display()
        )
    }

    /// FCM's answer to a registration token that is no longer valid.
    pub fn unregistered() -> Reply {
        Reply::new(
            404,
            r#"{"error":{"code":404,"message":"Requested entity was not found.","status":"NOT_FOUND","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"UNREGISTERED"}]}}"#,
        )
    }

    pub fn quota_exceeded(secs: u64) -> Reply {
        Reply::new(
            429,
            r#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"QUOTA_EXCEEDED"}]}}"#,
        )
        .retry_after(secs)
    }
}

fn form(body: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            let dec = |s: &str| {
                let s = s.replace('+', " ");
                let mut out = Vec::new();
                let b = s.as_bytes();
                let mut i = 0;
                while i < b.len() {
                    if b[i] == b'%' && i + 2 < b.len() {
                        out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap_or(b'?'));
                        i += 3;
                    } else {
                        out.push(b[i]);
                        i += 1;
                    }
                }
                String::from_utf8_lossy(&out).into_owned()
            };
            Some((dec(k), dec(v)))
        })
        .collect()
}

fn check_grant(
    parts: &http::request::Parts,
    body: &[u8],
    public: &[u8],
    token_uri: &str,
) -> Result<(), String> {
    if parts.method != http::Method::POST {
        return Err("not a POST".into());
    }
    let ct = parts
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.starts_with("application/x-www-form-urlencoded") {
        return Err(format!("content-type {ct:?}"));
    }
    let f = form(body);
    let get = |k: &str| f.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    if get("grant_type").as_deref() != Some("urn:ietf:params:oauth:grant-type:jwt-bearer") {
        return Err(format!("grant_type {:?}", get("grant_type")));
    }
    let jwt = parse_jwt(&get("assertion").ok_or("no assertion")?)?;
    if jwt.header["alg"] != "RS256" {
        return Err(format!("alg {}", jwt.header["alg"]));
    }
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, public)
        .verify(jwt.input.as_bytes(), &jwt.signature)
        .map_err(|_| "the assertion's signature does not verify".to_string())?;
    let c = &jwt.claims;
    if c["iss"] != EMAIL || c["aud"] != token_uri || c["scope"] != SCOPE {
        return Err(format!("claims {c}"));
    }
    let (iat, exp) = (
        c["iat"].as_u64().unwrap_or(0),
        c["exp"].as_u64().unwrap_or(0),
    );
    if exp <= iat || exp - iat > 3600 || iat > now_secs() + 60 || exp < now_secs() {
        return Err(format!("iat {iat} exp {exp}"));
    }
    Ok(())
}

fn check_send(
    parts: &http::request::Parts,
    body: &[u8],
    issued: &[String],
) -> Result<serde_json::Value, (u16, String)> {
    if parts.method != http::Method::POST
        || parts.uri.path() != format!("/v1/projects/{PROJECT}/messages:send")
    {
        return Err((404, format!("{} {}", parts.method, parts.uri.path())));
    }
    let auth = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match auth.strip_prefix("Bearer ") {
        Some(t) if issued.iter().any(|i| i == t) => {}
        _ => return Err((401, format!("authorization {auth:?}"))),
    }
    let json: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| (400, format!("body: {e}")))?;
    let m = &json["message"];
    if !m["token"].is_string() {
        return Err((400, "message.token missing".into()));
    }
    // Data values must be strings (FCM refuses anything else).
    if let Some(data) = m.get("data") {
        let ok = data
            .as_object()
            .is_some_and(|o| o.values().all(serde_json::Value::is_string));
        if !ok {
            return Err((400, "message.data values must be strings".into()));
        }
    }
    if let Some(a) = m.get("android")
        && !matches!(a["priority"].as_str(), Some("HIGH" | "NORMAL") | None)
    {
        return Err((400, "android.priority".into()));
    }
    Ok(json)
}
