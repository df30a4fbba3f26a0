//! Secret files (cluster secret, PIN pepper, signing keys, gateway
//! credentials, the admin token): read only if no one but their owner can
//! read them. The one reader every service uses, at start and in
//! `--check-config` alike.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is readable by others (mode {mode:o}); chmod 600 it")]
    Permissions { path: String, mode: u32 },
    #[error("{path} holds {len} bytes; at least {min} are needed")]
    Short {
        path: String,
        len: usize,
        min: usize,
    },
}

/// The bytes of a private file of at least `min` bytes, refused if group
/// or others may read or write it (checked on the opened file, see
/// [`crate::fsutil::read_unless_mode`]).
pub fn read(path: &Path, min: usize) -> Result<Vec<u8>, SecretError> {
    use crate::fsutil::{ModeReadError, read_unless_mode};
    let data = read_unless_mode(path, 0o077).map_err(|e| match e {
        ModeReadError::Io(source) => SecretError::Io {
            path: path.display().to_string(),
            source,
        },
        ModeReadError::Mode(mode) => SecretError::Permissions {
            path: path.display().to_string(),
            mode,
        },
    })?;
    if data.len() < min {
        return Err(SecretError::Short {
            path: path.display().to_string(),
            len: data.len(),
            min,
        });
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_or_world_readable_secrets_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        crate::fsutil::write_private(&p, &[1; 32]).unwrap();
        assert_eq!(read(&p, 32).unwrap().len(), 32);
        assert!(matches!(read(&p, 33), Err(SecretError::Short { .. })));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for mode in [0o640, 0o604, 0o620, 0o602, 0o660] {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
                let e = read(&p, 1).unwrap_err();
                assert!(
                    matches!(e, SecretError::Permissions { mode: m, .. } if m == mode),
                    "{mode:o}: {e}"
                );
                assert!(e.to_string().contains("chmod 600"), "{e}");
            }
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o400)).unwrap();
            assert_eq!(read(&p, 32).unwrap(), [1; 32]);
        }
        assert!(matches!(
            read(&dir.path().join("missing"), 1),
            Err(SecretError::Io { .. })
        ));
    }
}
