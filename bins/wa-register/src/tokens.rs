//! Credentials: Ed25519 tokens (`common::token`) signed with the one private
//! key, which lives only here, in a file no one else can read. The key id
//! in every token lets wa-chat and wa-media hold several public keys, so a
//! new signing key can be rolled out while tokens of the old one still
//! verify until they expire; `tokens.verify_keys` keeps old keys usable for
//! refresh here too.

use std::path::Path;
use std::time::Duration;

use common::token::{KeyRing, TokenClaims, TokenError, TokenSigner, keyfile};
use ed25519_dalek::SigningKey;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Secret(#[from] crate::secret::SecretError),
    #[error(transparent)]
    File(#[from] keyfile::KeyFileError),
}

/// Reads the signing key, refusing a file others can read (opened once:
/// the mode checked is the one of the file read).
pub fn read_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    let pem = crate::secret::read(path, 1)?;
    Ok(keyfile::parse_signing(&pem, path)?)
}

pub struct Tokens {
    signer: TokenSigner,
    ring: KeyRing,
    ttl: Duration,
    /// Keys the `account` claim: HMAC-SHA256 under a key derived from the
    /// PIN pepper, so it is stable for a number across user ids and
    /// restarts, and reveals nothing of the number without the pepper.
    account_key: [u8; 32],
}

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    use hmac::Mac;
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data);
    m.finalize().into_bytes().into()
}

/// A freshly issued credential.
#[derive(Debug, Clone)]
pub struct Issued {
    pub token: String,
    /// Unix seconds.
    pub expires_at: u64,
}

impl Tokens {
    /// Signs with `signer`, refreshes tokens of `ring` too; `pepper` keys
    /// the `account` claim.
    pub fn new(signer: TokenSigner, mut ring: KeyRing, ttl: Duration, pepper: &[u8]) -> Tokens {
        ring.insert(signer.key_id().to_owned(), signer.verifying_key());
        Tokens {
            signer,
            ring,
            ttl,
            account_key: hmac(pepper, b"wa account claim v1"),
        }
    }

    /// The `account` claim of the number `phone`: 24 hex digits.
    pub fn account_of(&self, phone: &str) -> String {
        hex::encode(&hmac(&self.account_key, phone.as_bytes())[..12])
    }

    /// A token for `user`'s `device` at `generation`, of the account of
    /// the number `phone`.
    pub fn issue(
        &self,
        user: &str,
        device: u32,
        generation: u32,
        phone: &str,
        now_secs: u64,
    ) -> Issued {
        let expires_at = now_secs + self.ttl.as_secs();
        let token = self.signer.sign(TokenClaims {
            user: user.to_owned(),
            device,
            generation,
            expires_at,
            key_id: String::new(),
            issued_at: now_secs,
            account: self.account_of(phone),
        });
        Issued { token, expires_at }
    }

    pub fn verify(&self, token: &str, now_secs: u64) -> Result<TokenClaims, TokenError> {
        self.ring.verify(token, now_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_verify_and_world_readable_keys_are_refused() {
        let key = SigningKey::from_bytes(&[3; 32]);
        let t = Tokens::new(
            TokenSigner::new("k2", key.clone()),
            KeyRing::new(),
            Duration::from_secs(60),
            &[9; 32],
        );
        let i = t.issue("alice", 2, 3, "+15550000001", 1000);
        assert_eq!(i.expires_at, 1060);
        let c = t.verify(&i.token, 1001).unwrap();
        assert_eq!((c.user.as_str(), c.device, c.generation), ("alice", 2, 3));
        assert_eq!(c.key_id, "k2");
        // The account claim: stable per number, opaque, different per number.
        assert_eq!(c.account, t.account_of("+15550000001"));
        assert_eq!(c.account.len(), 24);
        assert!(!c.account.contains("5550000001"));
        assert_ne!(t.account_of("+15550000002"), c.account);
        assert!(t.verify(&i.token, 1060).is_err());

        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.key");
        common::fsutil::write_private(&p, keyfile::signing_pem(&key).as_bytes()).unwrap();
        assert_eq!(read_signing_key(&p).unwrap().to_bytes(), key.to_bytes());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert!(read_signing_key(&p).is_err());
        }
    }
}
