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

impl FakeUnifiedPush {
    pub async fn start() -> FakeUnifiedPush {
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
                    Some(d) => check(parts, body, &d),
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
