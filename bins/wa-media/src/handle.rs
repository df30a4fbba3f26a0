//! Blob handles: `<node>-<sha256 hex>`, e.g. `m1-9f86d0…0a08`.
//!
//! The node part tells a client which node holds the blob (docs/MEDIA.md,
//! "Several nodes"); the rest is the SHA-256 of the bytes, 64 lower-case hex
//! digits. [`Handle::parse`] accepts exactly that and nothing else, and the
//! on-disk path is rebuilt from the decoded 32 bytes, never from the text a
//! client sent: no `..`, `/`, `%2f` or NUL can reach the file system.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::config::valid_node_name;

/// SHA-256 of a blob.
pub type Sha = [u8; 32];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handle {
    pub node: String,
    pub sha: Sha,
}

impl Handle {
    pub fn new(node: &str, sha: Sha) -> Handle {
        Handle {
            node: node.to_string(),
            sha,
        }
    }

    /// Parses a handle; `None` for anything that is not exactly
    /// `<node>-<64 lower-case hex digits>`.
    pub fn parse(s: &str) -> Option<Handle> {
        let (node, hex) = s.rsplit_once('-')?;
        if !valid_node_name(node) || hex.len() != 64 {
            return None;
        }
        if !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let mut sha = [0u8; 32];
        hex::decode_to_slice(hex, &mut sha).ok()?;
        Some(Handle::new(node, sha))
    }
}

impl fmt::Display for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.node, hex::encode(self.sha))
    }
}

/// Where the blob `sha` lives under `blobs`: `<blobs>/<first 2 hex>/<64 hex>`.
pub fn blob_path(blobs: &Path, sha: &Sha) -> PathBuf {
    let h = hex::encode(sha);
    blobs.join(&h[..2]).join(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let h = Handle::new("media-2", [0xab; 32]);
        let s = h.to_string();
        assert_eq!(s, format!("media-2-{}", "ab".repeat(32)));
        assert_eq!(Handle::parse(&s), Some(h));
    }

    #[test]
    fn refuses_everything_else() {
        let hex = "ab".repeat(32);
        for bad in [
            String::new(),
            hex.clone(),
            format!("-{hex}"),
            format!("m1-{}", &hex[..63]),
            format!("m1-{hex}0"),
            format!("m1-{}", hex.to_uppercase()),
            format!("m1-../{}", &hex[3..]),
            format!("../m1-{hex}"),
            format!("m1/..-{hex}"),
            format!("m1-{}%2f", &hex[..61]),
            format!("m1-{}\0", &hex[..63]),
            format!("M1-{hex}"),
            "..".into(),
            "../../etc/passwd".into(),
        ] {
            assert_eq!(Handle::parse(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn path_is_built_from_bytes() {
        let p = blob_path(Path::new("/d/blobs"), &[0x0f; 32]);
        assert_eq!(p, Path::new("/d/blobs/0f").join("0f".repeat(32)));
    }
}
