//! A fake APNs: HTTP/2 only, `POST /3/device/<hex token>`, provider
//! token authentication (an ES256 JWT whose signature, `kid`, `iss` and
//! `iat` it checks against the key it made), the `apns-*` headers, and a
//! JSON body with `aps`. Answers 200 with an `apns-id`, or its script.

use std::path::Path;
use std::sync::Arc;

use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
    UnparsedPublicKey,
};

use super::{Log, Reply, Taken, now_secs, parse_jwt, pem, serve, write_secret};

pub const KEY_ID: &str = "ABC123DEFG";
pub const TEAM_ID: &str = "TEAM123456";
pub const TOPIC: &str = "org.example.wa";

pub struct FakeApns {
    pub url: String,
    pub log: Arc<Log>,
}

impl FakeApns {
    /// Starts the fake and writes the signing key to `key_file` (the `.p8`
    /// the store is configured with).
    pub async fn start(key_file: &Path) -> FakeApns {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        write_secret(key_file, pem("PRIVATE KEY", pkcs8.as_ref()).as_bytes());
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let public = pair.public_key().as_ref().to_vec();
        let log = Arc::new(Log::default());
        let l = Arc::clone(&log);
        let addr = serve(
            true,
            Arc::new(move |parts, body| {
                let checked = check(parts, body, &public);
                let (status, headers, text, payload) = match checked {
                    Err((status, reason)) => {
                        l.problem(format!("APNs request refused: {reason}"));
                        (
                            status,
                            Vec::new(),
                            format!(r#"{{"reason":"{reason}"}}"#),
                            serde_json::Value::Null,
                        )
                    }
                    Ok(payload) => match l.next_reply() {
                        Some(r) => (r.status, r.headers, r.body, payload),
                        None => (
                            200,
                            vec![("apns-id", "9F1C2D3E-0000-4000-8000-000000000000".to_owned())],
                            String::new(),
                            payload,
                        ),
                    },
                };
                l.taken.lock().unwrap().push(Taken {
                    at: std::time::Instant::now(),
                    path: parts.uri.path().to_owned(),
                    headers: parts.headers.clone(),
                    body: body.clone(),
                    payload,
                    status,
                });
                (status, headers, text)
            }),
        )
        .await;
        FakeApns {
            url: format!("http://{addr}"),
            log,
        }
    }

    /// The store's `[push.apns]` section for this fake.
    pub fn config(&self, key_file: &Path) -> String {
        format!(
            "[push.apns]\nurl = \"{}\"\nkey_file = \"{}\"\nkey_id = \"{KEY_ID}\"\nteam_id = \"{TEAM_ID}\"\ntopic = \"{TOPIC}\"\n",
            self.url,
            key_file.display()
        )
    }

    /// APNs' answer to a token that is no longer valid.
    pub fn unregistered() -> Reply {
        Reply::new(
            410,
            r#"{"reason":"Unregistered","timestamp":1700000000000}"#,
        )
    }
}

/// Checks a request as APNs does; its JSON body, or (status, reason).
fn check(
    parts: &http::request::Parts,
    body: &bytes::Bytes,
    public: &[u8],
) -> Result<serde_json::Value, (u16, &'static str)> {
    if parts.version != http::Version::HTTP_2 {
        return Err((400, "NotHTTP2"));
    }
    if parts.method != http::Method::POST {
        return Err((405, "MethodNotAllowed"));
    }
    let token = parts
        .uri
        .path()
        .strip_prefix("/3/device/")
        .ok_or((404, "BadPath"))?;
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err((400, "BadDeviceToken"));
    }
    let h = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let auth = h("authorization");
    let jwt = auth
        .strip_prefix("bearer ")
        .ok_or((403, "MissingProviderToken"))?;
    let jwt = parse_jwt(jwt).map_err(|_| (403, "InvalidProviderToken"))?;
    if jwt.header["alg"] != "ES256" || jwt.header["kid"] != KEY_ID {
        return Err((403, "InvalidProviderToken"));
    }
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, public)
        .verify(jwt.input.as_bytes(), &jwt.signature)
        .map_err(|_| (403, "InvalidProviderToken"))?;
    if jwt.claims["iss"] != TEAM_ID {
        return Err((403, "InvalidProviderToken"));
    }
    let iat = jwt.claims["iat"]
        .as_u64()
        .ok_or((403, "InvalidProviderToken"))?;
    if iat + 3600 < now_secs() || iat > now_secs() + 60 {
        return Err((403, "ExpiredProviderToken"));
    }
    if h("apns-topic") != TOPIC {
        return Err((400, "TopicDisallowed"));
    }
    let (push_type, priority) = (h("apns-push-type"), h("apns-priority"));
    match (push_type.as_str(), priority.as_str()) {
        ("alert", "10" | "5") | ("background", "5") => {}
        _ => return Err((400, "InvalidPushType")),
    }
    if h("apns-collapse-id").is_empty() || h("apns-collapse-id").len() > 64 {
        return Err((400, "BadCollapseId"));
    }
    if !h("apns-expiration").is_empty() && h("apns-expiration").parse::<u64>().is_err() {
        return Err((400, "BadExpirationDate"));
    }
    if body.len() > 4096 {
        return Err((413, "PayloadTooLarge"));
    }
    let json: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| (400, "PayloadEmpty"))?;
    let aps = json.get("aps").ok_or((400, "PayloadEmpty"))?;
    if push_type == "background" && aps["content-available"] != 1 {
        return Err((400, "InvalidPushType"));
    }
    if push_type == "alert" && aps.get("alert").is_none() {
        return Err((400, "InvalidPushType"));
    }
    Ok(json)
}
