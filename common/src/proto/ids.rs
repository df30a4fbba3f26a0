//! User ids and message ids: what is a valid one.

use super::limits::{ID_LEN, MAX_MEDIA_HANDLE, MAX_USER_ID};

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

/// Whether `h` is a valid media handle: `<node>-<64 lower-case hex digits>`,
/// the node 1 to 32 of `a-z 0-9 -`, not starting with `-` (docs/MEDIA.md).
pub fn valid_media_handle(h: &str) -> bool {
    let Some((node, hex)) = h.rsplit_once('-') else {
        return false;
    };
    h.len() <= MAX_MEDIA_HANDLE
        && !node.is_empty()
        && !node.starts_with('-')
        && node
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && hex.len() == 64
        && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
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

    #[test]
    fn media_handles() {
        let hex = "0f".repeat(32);
        for ok in [format!("m1-{hex}"), format!("media-eu-2-{hex}")] {
            assert!(valid_media_handle(&ok), "{ok:?}");
        }
        for bad in [
            hex.clone(),
            format!("-{hex}"),
            format!("M1-{hex}"),
            format!("m1-{}", &hex[1..]),
            format!("m1-{}", hex.to_uppercase()),
            format!("../m1-{hex}"),
            format!("{}-{hex}", "m".repeat(33)),
        ] {
            assert!(!valid_media_handle(&bad), "{bad:?}");
        }
    }
}
