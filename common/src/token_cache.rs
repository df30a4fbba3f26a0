//! Tokens already verified: a phone that reconnects (a network blip, a
//! reconnect storm, a resumed TLS session) presents the token it logged in
//! with a minute ago, and checking its Ed25519 signature again cost about a
//! tenth of a login's server CPU (docs/BENCHMARKS.md "Where the cost is").
//!
//! A hit needs a token verified before by the same [`KeyRing`], found by
//! the SHA-256 digest of its whole text (32 bytes where the text is about
//! 150: the cache holds one per recent session; two texts with one digest
//! would be a SHA-256 collision), and its expiry is checked again at every
//! use, so a hit answers what [`KeyRing::verify`] would. The ring is fixed for the cache's life: a
//! new ring (new keys) comes with a new cache. Bounded by `entries`: two
//! generations, the older dropped whole when the younger is full (an
//! approximate least-recently-used, with no bookkeeping per hit beyond
//! moving an old entry into the young generation).

use std::collections::HashMap;
use std::sync::Mutex;

use crate::token::{KeyRing, TokenClaims, TokenError};

/// A [`KeyRing`] that remembers the tokens it verified.
pub struct CachingKeyRing {
    ring: KeyRing,
    /// Most entries of one generation.
    half: usize,
    cache: Mutex<Generations>,
}

/// The SHA-256 digest of a token's text.
type Digest = [u8; 32];

fn digest(token: &str) -> Digest {
    use sha2::Digest as _;
    sha2::Sha256::digest(token.as_bytes()).into()
}

#[derive(Default)]
struct Generations {
    young: HashMap<Digest, TokenClaims>,
    old: HashMap<Digest, TokenClaims>,
}

impl CachingKeyRing {
    /// `ring`, remembering up to `entries` tokens (0: none).
    pub fn new(ring: KeyRing, entries: usize) -> CachingKeyRing {
        CachingKeyRing {
            ring,
            half: entries / 2,
            cache: Mutex::default(),
        }
    }

    /// [`KeyRing::verify`], without the signature check for a token this
    /// ring verified before.
    pub fn verify(&self, token: &str, now_secs: u64) -> Result<TokenClaims, TokenError> {
        if let Some(claims) = self.remembered(token) {
            if claims.expires_at <= now_secs {
                return Err(TokenError::Expired {
                    expired_at: claims.expires_at,
                    now: now_secs,
                });
            }
            return Ok(claims);
        }
        let claims = self.ring.verify(token, now_secs)?;
        self.remember(token, &claims);
        Ok(claims)
    }

    /// Tokens remembered now.
    pub fn len(&self) -> usize {
        let g = self.lock();
        g.young.len() + g.old.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generations> {
        // (Inserts and removes only: a panic cannot leave it half changed.)
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn remembered(&self, token: &str) -> Option<TokenClaims> {
        if self.half == 0 {
            return None;
        }
        let key = digest(token);
        let mut g = self.lock();
        if let Some(c) = g.young.get(&key) {
            return Some(c.clone());
        }
        let (key, claims) = g.old.remove_entry(&key)?;
        let found = claims.clone();
        self.insert(&mut g, key, claims);
        Some(found)
    }

    fn remember(&self, token: &str, claims: &TokenClaims) {
        if self.half == 0 {
            return;
        }
        let key = digest(token);
        let mut g = self.lock();
        self.insert(&mut g, key, claims.clone());
    }

    fn insert(&self, g: &mut Generations, token: Digest, claims: TokenClaims) {
        if g.young.len() >= self.half {
            g.old = std::mem::take(&mut g.young);
        }
        g.young.insert(token, claims);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::TokenSigner;
    use ed25519_dalek::SigningKey;

    fn signer(seed: u8) -> TokenSigner {
        TokenSigner::new("k1", SigningKey::from_bytes(&[seed; 32]))
    }

    fn ring(s: &TokenSigner) -> KeyRing {
        let mut r = KeyRing::new();
        r.insert("k1", s.verifying_key());
        r
    }

    fn token(s: &TokenSigner, user: &str, expires_at: u64) -> String {
        s.sign(TokenClaims {
            user: user.into(),
            device: 1,
            expires_at,
            ..Default::default()
        })
    }

    #[test]
    fn a_remembered_token_answers_as_the_ring_does() {
        let s = signer(1);
        let cached = CachingKeyRing::new(ring(&s), 8);
        let t = token(&s, "alice", 1000);
        let first = cached.verify(&t, 10).unwrap();
        assert_eq!(cached.len(), 1);
        assert_eq!(cached.verify(&t, 20).unwrap(), first);
        // Expiry is checked at every use, hit or not.
        assert_eq!(
            cached.verify(&t, 1000),
            Err(TokenError::Expired {
                expired_at: 1000,
                now: 1000
            })
        );
    }

    #[test]
    fn a_token_differing_in_one_byte_is_verified_and_refused() {
        let s = signer(1);
        let cached = CachingKeyRing::new(ring(&s), 8);
        let t = token(&s, "alice", 1000);
        cached.verify(&t, 10).unwrap();
        // The signature's last character changed: not the remembered token.
        let mut forged = t.clone();
        let last = forged.pop().unwrap();
        forged.push(if last == 'A' { 'B' } else { 'A' });
        assert!(cached.verify(&forged, 10).is_err());
        // Signed by another key with the same id: refused, not remembered.
        let other = token(&signer(2), "alice", 1000);
        assert_eq!(cached.verify(&other, 10), Err(TokenError::BadSignature));
        assert_eq!(cached.len(), 1);
    }

    #[test]
    fn the_cache_stays_within_its_entries_and_keeps_what_is_used() {
        let s = signer(1);
        let cached = CachingKeyRing::new(ring(&s), 4);
        let tokens: Vec<String> = (0..10).map(|i| token(&s, &format!("u{i}"), 1000)).collect();
        let hot = &tokens[0];
        for t in &tokens[1..] {
            cached.verify(hot, 10).unwrap();
            cached.verify(t, 10).unwrap();
            assert!(cached.len() <= 4, "{}", cached.len());
        }
        // The token used all along is still there; an early one is gone.
        let g = cached.lock();
        let hot = digest(hot);
        assert!(g.young.contains_key(&hot) || g.old.contains_key(&hot));
        assert!(
            !g.young.contains_key(&digest(&tokens[1])) && !g.old.contains_key(&digest(&tokens[1]))
        );
    }

    #[test]
    fn zero_entries_remembers_nothing() {
        let s = signer(1);
        let cached = CachingKeyRing::new(ring(&s), 0);
        cached.verify(&token(&s, "alice", 1000), 10).unwrap();
        assert!(cached.is_empty());
    }
}
