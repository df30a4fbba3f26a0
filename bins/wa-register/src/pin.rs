//! Registration-lock PINs: Argon2id with a server-side pepper (the Argon2
//! "secret"), so a copy of the accounts without the pepper file does not
//! allow offline guessing. Hashing is slow on purpose and runs off the
//! async threads. The try budget (`pin.max_wrong`, then one try per
//! `pin.lockout`) is enforced by the verify handler, which records each
//! attempt before checking it.

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// Shortest and longest PIN accepted.
pub const MIN_PIN: usize = 4;
pub const MAX_PIN: usize = 64;

pub fn valid_pin(pin: &str) -> bool {
    (MIN_PIN..=MAX_PIN).contains(&pin.len()) && pin.bytes().all(|b| b.is_ascii_graphic())
}

#[derive(Clone)]
pub struct Pins {
    pepper: Arc<Vec<u8>>,
}

impl Pins {
    pub fn new(pepper: Vec<u8>) -> Pins {
        Pins {
            pepper: Arc::new(pepper),
        }
    }

    fn argon(pepper: &[u8]) -> Argon2<'_> {
        Argon2::new_with_secret(
            pepper,
            Algorithm::Argon2id,
            Version::V0x13,
            Params::default(),
        )
        .expect("the default parameters and any pepper are valid")
    }

    /// The PHC string of `pin` with a fresh salt.
    pub async fn hash(&self, pin: String) -> String {
        let pepper = Arc::clone(&self.pepper);
        tokio::task::spawn_blocking(move || {
            let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
                .expect("16 bytes make a valid salt");
            Self::argon(&pepper)
                .hash_password(pin.as_bytes(), &salt)
                .expect("hashing with valid parameters succeeds")
                .to_string()
        })
        .await
        .expect("hashing does not panic")
    }

    /// Whether `pin` matches `phc` (constant time in the comparison).
    pub async fn verify(&self, pin: String, phc: String) -> bool {
        let pepper = Arc::clone(&self.pepper);
        tokio::task::spawn_blocking(move || {
            let Ok(parsed) = PasswordHash::new(&phc) else {
                return false;
            };
            Self::argon(&pepper)
                .verify_password(pin.as_bytes(), &parsed)
                .is_ok()
        })
        .await
        .expect("verifying does not panic")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn right_pin_wrong_pin_wrong_pepper() {
        let pins = Pins::new(vec![7; 32]);
        let h = pins.hash("2580".into()).await;
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(!h.contains("2580"));
        assert!(pins.verify("2580".into(), h.clone()).await);
        assert!(!pins.verify("2581".into(), h.clone()).await);
        assert!(
            !Pins::new(vec![8; 32])
                .verify("2580".into(), h.clone())
                .await
        );
        // Salted: the same PIN hashes differently.
        assert_ne!(pins.hash("2580".into()).await, h);
        assert!(valid_pin("2580") && !valid_pin("123") && !valid_pin("12 34"));
    }
}
