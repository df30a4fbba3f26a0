//! Web Push (UnifiedPush): RFC 8291 message encryption, in the
//! `aes128gcm` content coding of RFC 8188 (one record, the sender's
//! ephemeral P-256 key in the header), and the server's VAPID identity
//! (RFC 8292).

use ring::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::agreement::{self, ECDH_P256, EphemeralPrivateKey, UnparsedPublicKey};
use ring::hkdf::{self, HKDF_SHA256, KeyType, Salt};
use ring::rand::{SecureRandom, SystemRandom};

/// How long a VAPID token is valid (RFC 8292 allows at most 24 hours).
const VAPID_TTL_SECS: u64 = 12 * 3600;

/// This server's VAPID identity: its key and who runs it.
pub struct Vapid {
    signer: super::jwt::Signer,
    /// The public key, base64url (the `k` parameter).
    public: String,
    subject: String,
}

impl Vapid {
    /// The identity `cfg` names (none if `vapid_key_file` is empty).
    pub fn load(cfg: &super::config::UnifiedPushConfig) -> Result<Option<Vapid>, String> {
        use base64::Engine as _;
        if cfg.vapid_key_file.as_os_str().is_empty() {
            return Ok(None);
        }
        let pem = common::secret::read(&cfg.vapid_key_file, 1)
            .map_err(|e| format!("push.unifiedpush.vapid_key_file: {e}"))?;
        let signer = super::jwt::Signer::es256_pem(&pem)
            .map_err(|e| format!("push.unifiedpush.vapid_key_file: {e}"))?;
        let public = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(signer.es256_public().expect("an ES256 key has one"));
        Ok(Some(Vapid {
            signer,
            public,
            subject: cfg.vapid_subject.clone(),
        }))
    }

    /// The `Authorization` value for a request to `endpoint`: a token for
    /// its origin, valid 12 hours; `None` if it is not a URL.
    pub fn authorization(&self, endpoint: &str) -> Option<String> {
        let url = reqwest::Url::parse(endpoint).ok()?;
        let claims = serde_json::json!({
            "aud": url.origin().ascii_serialization(),
            "exp": common::fsutil::now_ms() / 1000 + VAPID_TTL_SECS,
            "sub": self.subject,
        });
        let t = self.signer.sign(None, &claims);
        Some(format!("vapid t={t}, k={}", self.public))
    }
}

/// The record size announced in the header (the message is one record,
/// far smaller).
const RECORD_SIZE: u32 = 4096;

struct Len(usize);

impl KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn expand(prk: &hkdf::Prk, info: &[&[u8]], len: usize) -> Vec<u8> {
    let mut out = vec![0; len];
    prk.expand(info, Len(len))
        .and_then(|okm| okm.fill(&mut out))
        .expect("HKDF output lengths are small");
    out
}

/// `plaintext` encrypted for the device whose public key is `ua_public` (65
/// bytes, uncompressed) and authentication secret `auth` (16 bytes): the
/// request body, `Content-Encoding: aes128gcm`.
pub fn encrypt(ua_public: &[u8], auth: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, String> {
    let rng = SystemRandom::new();
    let ephemeral = EphemeralPrivateKey::generate(&ECDH_P256, &rng)
        .map_err(|_| "cannot make an ephemeral key".to_string())?;
    let as_public = ephemeral
        .compute_public_key()
        .map_err(|_| "cannot derive the ephemeral public key".to_string())?;
    let mut salt = [0u8; 16];
    rng.fill(&mut salt)
        .map_err(|_| "no randomness for the salt".to_string())?;
    let ecdh_secret = agreement::agree_ephemeral(
        ephemeral,
        &UnparsedPublicKey::new(&ECDH_P256, ua_public),
        |s| s.to_vec(),
    )
    .map_err(|_| "the device's p256dh key is not a valid P-256 point".to_string())?;
    // IKM = HKDF(auth, ecdh_secret, "WebPush: info" 0 ua_public as_public, 32)
    let prk_key = Salt::new(HKDF_SHA256, auth).extract(&ecdh_secret);
    let ikm = expand(
        &prk_key,
        &[b"WebPush: info\0", ua_public, as_public.as_ref()],
        32,
    );
    let prk = Salt::new(HKDF_SHA256, &salt).extract(&ikm);
    let cek = expand(&prk, &[b"Content-Encoding: aes128gcm\0"], 16);
    let nonce = expand(&prk, &[b"Content-Encoding: nonce\0"], 12);
    let key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &cek).expect("16-byte key"));
    // One record, the last: the data, then the delimiter 2, no padding.
    let mut record = plaintext.to_vec();
    record.push(2);
    key.seal_in_place_append_tag(
        Nonce::try_assume_unique_for_key(&nonce).expect("12-byte nonce"),
        Aad::empty(),
        &mut record,
    )
    .map_err(|_| "encryption failed".to_string())?;
    let mut body = Vec::with_capacity(16 + 4 + 1 + 65 + record.len());
    body.extend_from_slice(&salt);
    body.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    body.push(as_public.as_ref().len() as u8);
    body.extend_from_slice(as_public.as_ref());
    body.extend_from_slice(&record);
    Ok(body)
}
