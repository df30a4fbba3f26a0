//! User ids and message ids: what is a valid one.

use super::limits::{ID_LEN, MAX_USER_ID};

/// Whether `s` is a valid user id: 1 to 64 bytes of `[A-Za-z0-9._-]`, not
/// starting with `.` or `-`.
pub fn valid_user_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_USER_ID
        && !s.starts_with(['.', '-'])
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Whether `id` is a valid message id (exactly 16 bytes).
pub fn valid_message_id(id: &[u8]) -> bool {
    id.len() == ID_LEN
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids() {
        for ok in ["alice", "a", "u_1.2-3", "447700900123", &"x".repeat(64)] {
            assert!(valid_user_id(ok), "{ok:?} should be valid");
        }
        for bad in ["", "-a", ".a", "a b", "a/b", "ä", &"x".repeat(65), "a\0"] {
            assert!(!valid_user_id(bad), "{bad:?} should be invalid");
        }
    }

    #[test]
    fn message_ids() {
        assert!(valid_message_id(&[0; 16]));
        assert!(!valid_message_id(&[0; 15]));
        assert!(!valid_message_id(&[]));
        assert!(!valid_message_id(&[0; 17]));
    }
}
