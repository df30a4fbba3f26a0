//! Secret files (cluster secret, PIN pepper, signing keys, gateway
//! credentials, the admin token): read only if no one but their owner can
//! read them, or for the cluster secret, which the services on the cluster
//! link share through a group, their owner and that group. The one reader
//! every service uses, at start and in `--check-config` alike.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is open to others (mode {mode:o}); chmod {fix} it")]
    Permissions {
        path: String,
        mode: u32,
        /// The mode to give it.
        fix: &'static str,
    },
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
    read_forbidding(path, min, 0o077, "600")
}

fn read_forbidding(
    path: &Path,
    min: usize,
    forbidden: u32,
    fix: &'static str,
) -> Result<Vec<u8>, SecretError> {
    use crate::fsutil::{ModeReadError, read_unless_mode};
    let data = read_unless_mode(path, forbidden).map_err(|e| match e {
        ModeReadError::Io(source) => SecretError::Io {
            path: path.display().to_string(),
            source,
        },
        ModeReadError::Mode(mode) => SecretError::Permissions {
            path: path.display().to_string(),
            mode,
            fix,
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

/// The bytes of a secret a group of services shares (the cluster secret,
/// `root:wa-cluster 0640` in a packaged install), of at least `min` bytes:
/// its group may read it, nobody else may, and no group may write it.
pub fn read_shared(path: &Path, min: usize) -> Result<Vec<u8>, SecretError> {
    read_forbidding(path, min, 0o027, "640")
}

/// The cluster secret at `path`: shared with [`read_shared`], at least
/// [`crate::sections::MIN_CLUSTER_SECRET`] bytes. Every service that dials
/// or serves the cluster link reads it here.
pub fn read_cluster(path: &Path) -> Result<Vec<u8>, SecretError> {
    read_shared(path, crate::sections::MIN_CLUSTER_SECRET)
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

    #[test]
    #[cfg(unix)]
    fn a_shared_secret_may_be_read_by_its_group_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        crate::fsutil::write_private(&p, &[2; 32]).unwrap();
        for mode in [0o600, 0o640, 0o440, 0o400] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            assert_eq!(read_shared(&p, 32).unwrap(), [2; 32], "{mode:o}");
        }
        for mode in [0o644, 0o660, 0o642, 0o641] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = read_shared(&p, 1).unwrap_err();
            assert!(
                matches!(e, SecretError::Permissions { mode: m, .. } if m == mode),
                "{mode:o}: {e}"
            );
            assert!(e.to_string().contains("chmod 640"), "{e}");
        }
    }
}
