//! The log of QUIC address validation tokens already used (quinn's
//! [`TokenLog`]): the edge hands each client `[quic] quic_token_sent`
//! tokens (NEW_TOKEN frames) once its address is validated; a client that
//! reconnects presents one in its first packet, and the edge then treats its
//! address as validated at once (no anti-amplification limit on the
//! server's first flight, whose certificate chain would otherwise wait for
//! the client's next packet: a round trip).
//!
//! A token may be used once: a replayed token would let a spoofed source
//! address skip validation. The log remembers every token used until it
//! expires, in at most `[quic] quic_token_log_entries` entries (about 48
//! bytes each); when full and nothing has expired, a token is refused (the
//! client simply does the full validation), so memory stays bounded. (quinn's
//! own Bloom-filter log needs a crate this workspace does not carry.)

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use quinn::{TokenLog, TokenReuseError};

#[derive(Debug)]
pub struct UsedTokens {
    max: usize,
    /// Nonce of each token used, and when it expires.
    used: Mutex<HashMap<u128, SystemTime>>,
}

impl UsedTokens {
    pub fn new(max: usize) -> UsedTokens {
        UsedTokens {
            max,
            used: Mutex::new(HashMap::new()),
        }
    }

    /// Tokens remembered now.
    pub fn len(&self) -> usize {
        self.used.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn check(
        &self,
        nonce: u128,
        issued: SystemTime,
        lifetime: Duration,
        now: SystemTime,
    ) -> Result<(), TokenReuseError> {
        let expires = issued + lifetime;
        if expires <= now {
            return Err(TokenReuseError);
        }
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        if used.contains_key(&nonce) {
            return Err(TokenReuseError);
        }
        if used.len() >= self.max {
            used.retain(|_, e| *e > now);
            if used.len() >= self.max {
                return Err(TokenReuseError);
            }
        }
        used.insert(nonce, expires);
        Ok(())
    }
}

impl TokenLog for UsedTokens {
    fn check_and_insert(
        &self,
        nonce: u128,
        issued: SystemTime,
        lifetime: Duration,
    ) -> Result<(), TokenReuseError> {
        self.check(nonce, issued, lifetime, SystemTime::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn a_token_is_good_once_and_memory_is_bounded() {
        let log = UsedTokens::new(2);
        let now = SystemTime::now();
        assert!(log.check(1, now, HOUR, now).is_ok());
        assert!(log.check(1, now, HOUR, now).is_err(), "replayed");
        assert!(log.check(2, now, HOUR, now).is_ok());
        // Full of live tokens: refused, not remembered.
        assert!(log.check(3, now, HOUR, now).is_err());
        assert_eq!(log.len(), 2);
        // Once those expired, room again.
        let later = now + 2 * HOUR;
        assert!(log.check(3, later, HOUR, later).is_ok());
        assert_eq!(log.len(), 1);
        // An expired token is refused.
        assert!(log.check(4, now, HOUR, later).is_err());
    }
}
