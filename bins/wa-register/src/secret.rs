//! Secret files (cluster secret, PIN pepper, signing key, gateway
//! credentials): read only if no one but their owner can read them.

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

/// Checks that `path` is not readable or writable by group or others.
pub fn check_private(path: &Path) -> Result<(), SecretError> {
    let meta = std::fs::metadata(path).map_err(|source| SecretError::Io {
        path: path.display().to_string(),
        source,
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(SecretError::Permissions {
                path: path.display().to_string(),
                mode,
            });
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    Ok(())
}

/// The bytes of a private file of at least `min` bytes.
pub fn read(path: &Path, min: usize) -> Result<Vec<u8>, SecretError> {
    check_private(path)?;
    let data = std::fs::read(path).map_err(|source| SecretError::Io {
        path: path.display().to_string(),
        source,
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
        common::fsutil::write_private(&p, &[1; 32]).unwrap();
        assert_eq!(read(&p, 32).unwrap().len(), 32);
        assert!(matches!(read(&p, 33), Err(SecretError::Short { .. })));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
            let e = read(&p, 1).unwrap_err();
            assert!(e.to_string().contains("640"), "{e}");
        }
    }
}
