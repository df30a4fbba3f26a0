//! A fake UnifiedPush distributor endpoint: `POST /up/<name>` with an RFC
//! 8291 `aes128gcm` body, decrypted here with the device's private key and
//! authentication secret (the keys the device registered). Answers 201, or
//! its script.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use ring::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf::{HKDF_SHA256, KeyType, Salt};

use super::{Log, Taken, serve};

/// A device's Web Push keys.
#[derive(Clone)]
pub struct DeviceKeys {
    pub secret: p256::SecretKey,
    pub auth: [u8; 16],
}

impl DeviceKeys {
    pub fn generate() -> DeviceKeys {
        loop {
            if let Ok(secret) = p256::SecretKey::from_slice(&rand::random::<[u8; 32]>()) {
                return DeviceKeys {
                    secret,
                    auth: rand::random(),
                };
            }
        }
    }

    /// The uncompressed public key (65 bytes) the device registers.
    pub fn public(&self) -> Vec<u8> {
        self.secret
            .public_key()
            .to_encoded_point(false)
            .as_bytes()
            .to_vec()
    }
}

pub struct FakeUnifiedPush {
    pub base: String,
    pub log: Arc<Log>,
    keys: Arc<Mutex<HashMap<String, DeviceKeys>>>,
}

/// What a push service that wants VAPID (RFC 8292) checks: the server's
/// public key it knows, its own origin (the token's audience).
#[derive(Clone)]
struct VapidCheck {
    public: Vec<u8>,
    origin: Arc<Mutex<String>>,
}

impl FakeUnifiedPush {
    pub async fn start() -> FakeUnifiedPush {
        FakeUnifiedPush::serve(None).await
    }

    /// A distributor that requires VAPID: writes a new P-256 key to
    /// `key_file` (the store's `vapid_key_file`) and accepts only requests
    /// signed with it for its own origin.
    pub async fn start_vapid(key_file: &std::path::Path) -> FakeUnifiedPush {
        use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        super::write_secret(
            key_file,
            super::pem("PRIVATE KEY", pkcs8.as_ref()).as_bytes(),
        );
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let check = VapidCheck {
            public: pair.public_key().as_ref().to_vec(),
            origin: Arc::default(),
        };
        let fake = FakeUnifiedPush::serve(Some(check.clone())).await;
        *check.origin.lock().unwrap() = fake.base.clone();
        fake
    }

    async fn serve(vapid: Option<VapidCheck>) -> FakeUnifiedPush {
        let log = Arc::new(Log::default());
        let keys: Arc<Mutex<HashMap<String, DeviceKeys>>> = Arc::default();
        let (l, k) = (Arc::clone(&log), Arc::clone(&keys));
        let addr = serve(
            false,
            Arc::new(move |parts, body| {
                let path = parts.uri.path().to_owned();
                let device = k.lock().unwrap().get(&path).cloned();
                let checked = match device {
                    None => Err(format!("no device at {path}")),
                    Some(d) => match &vapid {
                        Some(v) => check_vapid(parts, v).and_then(|()| check(parts, body, &d)),
                        None => check(parts, body, &d),
                    },
                };
                let (status, headers, text, payload) = match checked {
                    Err(e) => {
                        l.problem(format!("UnifiedPush request refused: {e}"));
                        (400, Vec::new(), String::new(), serde_json::Value::Null)
                    }
                    Ok(plain) => match l.next_reply() {
                        Some(r) => (r.status, r.headers, r.body, plain),
                        None => (201, Vec::new(), String::new(), plain),
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
        FakeUnifiedPush {
            base: format!("http://{addr}"),
            log,
            keys,
        }
    }

    /// A new device endpoint: its URL and keys.
    pub fn device(&self, name: &str) -> (String, DeviceKeys) {
        let keys = DeviceKeys::generate();
        let path = format!("/up/{name}");
        self.keys.lock().unwrap().insert(path.clone(), keys.clone());
        (format!("{}{path}", self.base), keys)
    }
}

/// Checks `Authorization: vapid t=JWT, k=KEY` as a push service would
/// (RFC 8292): the key is the server's, the ES256 signature verifies with
/// it, `aud` is this service's origin, `exp` within the next 24 hours, and
/// `sub` a `mailto:` or `https:` URI.
fn check_vapid(parts: &http::request::Parts, v: &VapidCheck) -> Result<(), String> {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let auth = parts
        .headers
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        .ok_or("no Authorization header (VAPID required)")?;
    let rest = auth
        .strip_prefix("vapid ")
        .ok_or_else(|| format!("not a vapid Authorization: {auth:?}"))?;
    let (mut t, mut k) = (None, None);
    for param in rest.split(',') {
        match param.trim().split_once('=') {
            Some(("t", val)) => t = Some(val),
            Some(("k", val)) => k = Some(val),
            _ => return Err(format!("unexpected vapid parameter {param:?}")),
        }
    }
    let (t, k) = (t.ok_or("no t=")?, k.ok_or("no k=")?);
    let key = URL_SAFE_NO_PAD
        .decode(k)
        .map_err(|e| format!("k: base64url: {e}"))?;
    if key != v.public {
        return Err("k is not the server's VAPID key".into());
    }
    let jwt = super::parse_jwt(t)?;
    if jwt.header["alg"] != "ES256" || jwt.header["typ"] != "JWT" {
        return Err(format!("JWT header {}", jwt.header));
    }
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, &key)
        .verify(jwt.input.as_bytes(), &jwt.signature)
        .map_err(|_| "the VAPID signature does not verify with k")?;
    let origin = v.origin.lock().unwrap().clone();
    if jwt.claims["aud"] != origin.as_str() {
        return Err(format!("aud {} is not {origin}", jwt.claims["aud"]));
    }
    let exp = jwt.claims["exp"].as_u64().ok_or("no exp")?;
    let now = super::now_secs();
    if exp <= now || exp > now + 24 * 3600 {
        return Err(format!("exp {exp} is not within 24 h of {now}"));
    }
    let sub = jwt.claims["sub"].as_str().unwrap_or("");
    if !(sub.starts_with("mailto:") || sub.starts_with("https:")) {
        return Err(format!("sub {sub:?} is not a mailto: or https: URI"));
    }
    Ok(())
}

struct Len(usize);

impl KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn expand(prk: &ring::hkdf::Prk, info: &[&[u8]], len: usize) -> Vec<u8> {
    let mut out = vec![0; len];
    prk.expand(info, Len(len)).unwrap().fill(&mut out).unwrap();
    out
}

/// Checks the headers and decrypts the body (RFC 8291 / RFC 8188) with the
/// device's keys; the plaintext as JSON.
fn check(
    parts: &http::request::Parts,
    body: &Bytes,
    d: &DeviceKeys,
) -> Result<serde_json::Value, String> {
    let h = |n: &str| {
        parts
            .headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    if parts.method != http::Method::POST {
        return Err("not a POST".into());
    }
    if h("content-encoding") != "aes128gcm" {
        return Err(format!("content-encoding {:?}", h("content-encoding")));
    }
    if h("ttl").parse::<u64>().is_err() {
        return Err("TTL missing (RFC 8030 requires it)".into());
    }
    if !matches!(
        h("urgency").as_str(),
        "" | "very-low" | "low" | "normal" | "high"
    ) {
        return Err(format!("urgency {:?}", h("urgency")));
    }
    if body.len() < 16 + 4 + 1 + 65 + 17 {
        return Err("body too short for an aes128gcm record".into());
    }
    let salt = &body[..16];
    let idlen = body[20] as usize;
    if idlen != 65 {
        return Err(format!("keyid of {idlen} bytes, not a P-256 key"));
    }
    let as_public = &body[21..21 + 65];
    let ciphertext = &body[21 + 65..];
    let as_key =
        p256::PublicKey::from_sec1_bytes(as_public).map_err(|e| format!("sender key: {e}"))?;
    let shared = p256::ecdh::diffie_hellman(d.secret.to_nonzero_scalar(), as_key.as_affine());
    let ua_public = d.public();
    let prk_key = Salt::new(HKDF_SHA256, &d.auth).extract(shared.raw_secret_bytes());
    let ikm = expand(&prk_key, &[b"WebPush: info\0", &ua_public, as_public], 32);
    let prk = Salt::new(HKDF_SHA256, salt).extract(&ikm);
    let cek = expand(&prk, &[b"Content-Encoding: aes128gcm\0"], 16);
    let nonce = expand(&prk, &[b"Content-Encoding: nonce\0"], 12);
    let key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &cek).unwrap());
    let mut buf = ciphertext.to_vec();
    let plain = key
        .open_in_place(
            Nonce::try_assume_unique_for_key(&nonce).unwrap(),
            Aad::empty(),
            &mut buf,
        )
        .map_err(|_| "the record does not decrypt with the device's keys".to_string())?;
    // The last record ends with the delimiter 2, then padding zeros.
    let end = plain
        .iter()
        .rposition(|&b| b != 0)
        .ok_or("an all-zero record")?;
    if plain[end] != 2 {
        return Err("the last record lacks its delimiter 2".into());
    }
    serde_json::from_slice(&plain[..end]).map_err(|e| format!("plaintext is not JSON: {e}"))
}
