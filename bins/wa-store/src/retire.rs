//! Setting a data directory's contents aside: a store that starts as its
//! island's secondary begins with an empty copy and fills it from the
//! primary, but what the directory held may be the only copy of something
//! (a former primary's appends that never reached the new one, or a
//! misconfigured map), so it is moved to `retired/<seconds>/`, never
//! deleted. Only a directory marked `REPLICA` (it only ever held a copy
//! made by following a primary, and was never promoted) is emptied
//! outright: nothing in it exists nowhere else.

use std::path::{Path, PathBuf};

use crate::error::StoreError;

/// What a store writes into its data directory.
const CONTENTS: [&str; 7] = [
    "sled",
    "fjall",
    "journal",
    "FORMAT",
    crate::CLEAN_STOP,
    crate::replication::follower::INCOMPLETE,
    crate::replication::follower::REPLICA,
];

/// Moves the store's files in `data_dir` to `data_dir/retired/<now>/`, or
/// deletes them if the directory is marked `REPLICA`. Returns where they
/// went, or `None` if there was nothing to move.
pub fn retire(data_dir: &Path) -> Result<Option<PathBuf>, StoreError> {
    let present: Vec<&str> = CONTENTS
        .into_iter()
        .filter(|n| data_dir.join(n).exists())
        .collect();
    if present.is_empty() {
        return Ok(None);
    }
    let fail = |op: &'static str, dir: &Path| {
        let dir = dir.to_owned();
        move |source| StoreError::DataDir { op, dir, source }
    };
    if data_dir
        .join(crate::replication::follower::REPLICA)
        .exists()
    {
        for name in present {
            let p = data_dir.join(name);
            if p.is_dir() {
                std::fs::remove_dir_all(&p).map_err(fail("empty", data_dir))?;
            } else {
                std::fs::remove_file(&p).map_err(fail("empty", data_dir))?;
            }
        }
        return Ok(None);
    }
    let retired = data_dir.join("retired");
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut to = retired.join(secs.to_string());
    let mut n = 1;
    while to.exists() {
        to = retired.join(format!("{secs}.{n}"));
        n += 1;
    }
    std::fs::create_dir_all(&to).map_err(fail("create", &to))?;
    for name in present {
        std::fs::rename(data_dir.join(name), to.join(name))
            .map_err(fail("move aside", data_dir))?;
    }
    std::fs::File::open(data_dir)
        .and_then(|d| d.sync_all())
        .map_err(fail("sync", data_dir))?;
    tracing::warn!(to = %to.display(), "this node starts as a secondary: the data it held as a primary was moved aside; it may hold appends the new primary never had (delete it once you know it does not)");
    Ok(Some(to))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_primary_s_files_move_aside_and_are_never_deleted() {
        let d = tempfile::tempdir().unwrap();
        assert!(retire(d.path()).unwrap().is_none());
        std::fs::create_dir_all(d.path().join("sled")).unwrap();
        std::fs::write(d.path().join("sled/db"), b"x").unwrap();
        std::fs::write(d.path().join("FORMAT"), b"f").unwrap();
        std::fs::write(d.path().join("other"), b"kept").unwrap();
        let to = retire(d.path()).unwrap().unwrap();
        assert_eq!(std::fs::read(to.join("sled/db")).unwrap(), b"x");
        assert!(!d.path().join("sled").exists());
        assert!(d.path().join("other").exists());
        std::fs::create_dir_all(d.path().join("journal")).unwrap();
        let to2 = retire(d.path()).unwrap().unwrap();
        assert!(to2.join("journal").exists());
        assert!(to.join("sled/db").exists(), "an earlier copy stays");
    }

    #[test]
    fn a_replica_s_files_are_deleted() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("fjall")).unwrap();
        std::fs::write(d.path().join(crate::replication::follower::REPLICA), b"").unwrap();
        assert!(retire(d.path()).unwrap().is_none());
        assert!(!d.path().join("fjall").exists());
        assert!(!d.path().join("retired").exists());
    }
}
