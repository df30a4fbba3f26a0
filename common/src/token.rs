//! Credential tokens: Ed25519-signed [`TokenClaims`].
//!
//! Text form: `v1.` + base64url(claims protobuf) + `.` + base64url(signature),
//! unpadded. The signature covers `b"wa-token-v1\0"` followed by the claims
//! bytes exactly as they appear in the token. Verification is offline: a
//! [`KeyRing`] of public keys by key id, and `now` passed in by the caller.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use prost::Message;

pub use crate::proto::TokenClaims;

const CONTEXT: &[u8] = b"wa-token-v1\0";
const PREFIX: &str = "v1.";
/// Longest token accepted, in bytes.
pub const MAX_TOKEN_LEN: usize = 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token is malformed")]
    Malformed,
    #[error("token was signed with unknown key id {0:?}")]
    UnknownKey(String),
    #[error("token signature does not verify")]
    BadSignature,
    #[error("token expired at {expired_at} (now {now})")]
    Expired { expired_at: u64, now: u64 },
    #[error("token names an invalid user id")]
    BadUser,
}

/// A signing key with its id. Lives only where tokens are minted.
pub struct TokenSigner {
    key_id: String,
    key: SigningKey,
}

impl TokenSigner {
    pub fn new(key_id: impl Into<String>, key: SigningKey) -> Self {
        Self {
            key_id: key_id.into(),
            key,
        }
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// The private key, for writing it to a key file (`wactl`, test set-ups).
    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    /// Mints a token; `claims.key_id` is set to this signer's id.
    pub fn sign(&self, mut claims: TokenClaims) -> String {
        claims.key_id = self.key_id.clone();
        let payload = claims.encode_to_vec();
        let mut msg = Vec::with_capacity(CONTEXT.len() + payload.len());
        msg.extend_from_slice(CONTEXT);
        msg.extend_from_slice(&payload);
        let sig = self.key.sign(&msg);
        format!(
            "{PREFIX}{}.{}",
            B64.encode(&payload),
            B64.encode(sig.to_bytes())
        )
    }
}

/// Public keys by key id. Several keys verify at once so signing keys can rotate.
#[derive(Clone, Default)]
pub struct KeyRing {
    keys: HashMap<String, VerifyingKey>,
}

impl KeyRing {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, key_id: impl Into<String>, key: VerifyingKey) {
        self.keys.insert(key_id.into(), key);
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Verifies `token` at unix time `now_secs` and returns its claims.
    pub fn verify(&self, token: &str, now_secs: u64) -> Result<TokenClaims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let rest = token.strip_prefix(PREFIX).ok_or(TokenError::Malformed)?;
        let (p, s) = rest.split_once('.').ok_or(TokenError::Malformed)?;
        let payload = B64.decode(p).map_err(|_| TokenError::Malformed)?;
        let sig = B64.decode(s).map_err(|_| TokenError::Malformed)?;
        let sig = Signature::from_slice(&sig).map_err(|_| TokenError::Malformed)?;
        let claims = TokenClaims::decode(payload.as_slice()).map_err(|_| TokenError::Malformed)?;
        let key = self
            .keys
            .get(&claims.key_id)
            .ok_or_else(|| TokenError::UnknownKey(claims.key_id.clone()))?;
        let mut msg = Vec::with_capacity(CONTEXT.len() + payload.len());
        msg.extend_from_slice(CONTEXT);
        msg.extend_from_slice(&payload);
        key.verify_strict(&msg, &sig)
            .map_err(|_| TokenError::BadSignature)?;
        if claims.expires_at <= now_secs {
            return Err(TokenError::Expired {
                expired_at: claims.expires_at,
                now: now_secs,
            });
        }
        if !crate::proto::ids::valid_user_id(&claims.user) {
            return Err(TokenError::BadUser);
        }
        Ok(claims)
    }
}

/// Key files: PKCS#8 PEM for the private key, SPKI PEM for the public key.
///
/// A public key file must not be writable by group or others: whoever can
/// write it can make the service trust a key of their own. Each file is
/// opened once and the opened file's mode is checked, so it cannot be
/// swapped between the check and the read.
pub mod keyfile {
    use std::path::Path;

    use ed25519_dalek::pkcs8::{
        DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey,
    };
    use ed25519_dalek::{SigningKey, VerifyingKey};

    #[derive(Debug, thiserror::Error)]
    pub enum KeyFileError {
        #[error("cannot read {path}: {source}")]
        Io {
            path: String,
            source: std::io::Error,
        },
        #[error("{path} is not an Ed25519 key in PEM form")]
        Format { path: String },
        #[error("{path} is writable by group or others (mode {mode:o}); chmod go-w it")]
        Writable { path: String, mode: u32 },
    }

    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyFileError + '_ {
        move |source| KeyFileError::Io {
            path: path.display().to_string(),
            source,
        }
    }

    /// The text of `path`, opened once; with `no_write_by_others`, refused
    /// if the opened file is writable by group or others.
    fn read_text(path: &Path, no_write_by_others: bool) -> Result<String, KeyFileError> {
        use crate::fsutil::{ModeReadError, read_unless_mode};
        let forbidden = if no_write_by_others { 0o022 } else { 0 };
        let bytes = read_unless_mode(path, forbidden).map_err(|e| match e {
            ModeReadError::Io(source) => io(path)(source),
            ModeReadError::Mode(mode) => KeyFileError::Writable {
                path: path.display().to_string(),
                mode,
            },
        })?;
        String::from_utf8(bytes).map_err(|_| KeyFileError::Format {
            path: path.display().to_string(),
        })
    }

    /// Reads a private key. Who may read the file is the caller's check
    /// (wa-register reads it through its secret-file loader and then
    /// [`parse_signing`]).
    pub fn read_signing(path: &Path) -> Result<SigningKey, KeyFileError> {
        parse_signing(read_text(path, false)?.as_bytes(), path)
    }

    /// A private key from the PEM bytes read from `path` (named in errors).
    pub fn parse_signing(pem: &[u8], path: &Path) -> Result<SigningKey, KeyFileError> {
        let format = || KeyFileError::Format {
            path: path.display().to_string(),
        };
        let text = std::str::from_utf8(pem).map_err(|_| format())?;
        SigningKey::from_pkcs8_pem(text).map_err(|_| format())
    }

    /// Reads a public key, refusing a file that group or others may write.
    pub fn read_verifying(path: &Path) -> Result<VerifyingKey, KeyFileError> {
        let text = read_text(path, true)?;
        VerifyingKey::from_public_key_pem(&text).map_err(|_| KeyFileError::Format {
            path: path.display().to_string(),
        })
    }

    pub fn signing_pem(key: &SigningKey) -> String {
        key.to_pkcs8_pem(Default::default())
            .expect("ed25519 keys always encode")
            .to_string()
    }

    pub fn verifying_pem(key: &VerifyingKey) -> String {
        key.to_public_key_pem(Default::default())
            .expect("ed25519 keys always encode")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> SigningKey {
        SigningKey::from_bytes(&[b; 32])
    }

    fn claims(exp: u64) -> TokenClaims {
        TokenClaims {
            user: "alice".into(),
            device: 1,
            generation: 1,
            expires_at: exp,
            key_id: String::new(),
            issued_at: 0,
            account: String::new(),
        }
    }

    fn ring(id: &str, k: &SigningKey) -> KeyRing {
        let mut r = KeyRing::new();
        r.insert(id, k.verifying_key());
        r
    }

    #[test]
    fn sign_then_verify() {
        let s = TokenSigner::new("k1", key(1));
        let t = s.sign(claims(100));
        let c = ring("k1", &key(1)).verify(&t, 99).unwrap();
        assert_eq!(c.user, "alice");
        assert_eq!(c.key_id, "k1");
    }

    #[test]
    fn expired_forged_unknown_and_malformed() {
        let s = TokenSigner::new("k1", key(1));
        let t = s.sign(claims(100));
        assert_eq!(
            ring("k1", &key(1)).verify(&t, 100),
            Err(TokenError::Expired {
                expired_at: 100,
                now: 100
            })
        );
        // Same key id, different key: a forgery.
        let forged = TokenSigner::new("k1", key(2)).sign(claims(100));
        assert_eq!(
            ring("k1", &key(1)).verify(&forged, 1),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            ring("k9", &key(1)).verify(&t, 1),
            Err(TokenError::UnknownKey("k1".into()))
        );
        for bad in [
            "",
            "v1.",
            "v1.a.b",
            "v2.xx.yy",
            "garbage",
            &"v1.".repeat(400),
        ] {
            assert_eq!(
                ring("k1", &key(1)).verify(bad, 1),
                Err(TokenError::Malformed),
                "{bad:?}"
            );
        }
        // A flipped payload byte breaks the signature.
        let (head, sig) = t.rsplit_once('.').unwrap();
        let mut p = B64.decode(&head[3..]).unwrap();
        p[1] ^= 1;
        let tampered = format!("v1.{}.{}", B64.encode(&p), sig);
        assert!(ring("k1", &key(1)).verify(&tampered, 1).is_err());
    }

    #[test]
    fn rotation_keeps_old_keys_verifying() {
        let mut r = ring("k1", &key(1));
        r.insert("k2", key(2).verifying_key());
        let old = TokenSigner::new("k1", key(1)).sign(claims(100));
        let new = TokenSigner::new("k2", key(2)).sign(claims(100));
        assert!(r.verify(&old, 1).is_ok());
        assert!(r.verify(&new, 1).is_ok());
    }

    #[test]
    fn key_files_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let k = key(3);
        let sp = dir.path().join("k.key");
        let pp = dir.path().join("k.pub");
        std::fs::write(&sp, keyfile::signing_pem(&k)).unwrap();
        std::fs::write(&pp, keyfile::verifying_pem(&k.verifying_key())).unwrap();
        assert_eq!(keyfile::read_signing(&sp).unwrap().to_bytes(), k.to_bytes());
        assert_eq!(keyfile::read_verifying(&pp).unwrap(), k.verifying_key());
        assert!(keyfile::read_signing(&pp).is_err());
        let pem = keyfile::signing_pem(&k);
        assert_eq!(
            keyfile::parse_signing(pem.as_bytes(), &sp)
                .unwrap()
                .to_bytes(),
            k.to_bytes()
        );
        assert!(keyfile::parse_signing(b"\xff", &sp).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn public_key_files_others_may_write_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let k = key(4);
        let pp = dir.path().join("k.pub");
        std::fs::write(&pp, keyfile::verifying_pem(&k.verifying_key())).unwrap();
        for (mode, ok) in [
            (0o644, true),
            (0o444, true),
            (0o600, true),
            (0o664, false),
            (0o646, false),
            (0o666, false),
        ] {
            std::fs::set_permissions(&pp, std::fs::Permissions::from_mode(mode)).unwrap();
            match keyfile::read_verifying(&pp) {
                Ok(got) => {
                    assert!(ok, "{mode:o} was accepted");
                    assert_eq!(got, k.verifying_key());
                }
                Err(e) => {
                    assert!(!ok, "{mode:o}: {e}");
                    let text = e.to_string();
                    assert!(
                        text.contains(&pp.display().to_string())
                            && text.contains(&format!("{mode:o}"))
                            && text.contains("chmod go-w"),
                        "{text}"
                    );
                }
            }
        }
    }
}
