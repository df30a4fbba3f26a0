//! Small file helpers shared by the binaries.

use std::io::Write;
use std::path::Path;

/// Writes a secret file readable by its owner only (0600 on Unix), replacing
/// any previous file atomically.
pub fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Replaces `path` with `data` so that a reader (or a crash) sees the old
/// file or the new one, never half: a temporary file beside it, synced,
/// renamed over it, and the directory synced. For files other programs
/// read whole (the cluster map, markers).
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp-atomic");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => std::fs::File::open(d)?.sync_all(),
        _ => Ok(()),
    }
}

/// Writes a file anyone may read and only its owner may change (0644 on
/// Unix, whatever the umask): public keys, which the services refuse when
/// group or others could write them.
pub fn write_public(path: impl AsRef<Path>, data: impl AsRef<[u8]>) -> std::io::Result<()> {
    let path = path.as_ref();
    std::fs::write(path, data)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))?;
    }
    Ok(())
}

/// Why [`read_unless_mode`] gave no bytes.
#[derive(Debug)]
pub enum ModeReadError {
    Io(std::io::Error),
    /// The file's permission bits (`& 0o777`), which include a forbidden one.
    Mode(u32),
}

/// The bytes of `path`, refused if the opened file has any of the
/// permission bits in `forbidden` (on Unix; 0 checks nothing). The file is
/// opened once and the opened file's mode is checked, not the path's, so it
/// cannot be swapped between the check and the read.
pub fn read_unless_mode(path: &Path, forbidden: u32) -> Result<Vec<u8>, ModeReadError> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(ModeReadError::Io)?;
    #[cfg(unix)]
    if forbidden != 0 {
        use std::os::unix::fs::PermissionsExt;
        let mode = f
            .metadata()
            .map_err(ModeReadError::Io)?
            .permissions()
            .mode()
            & 0o777;
        if mode & forbidden != 0 {
            return Err(ModeReadError::Mode(mode));
        }
    }
    #[cfg(not(unix))]
    let _ = forbidden;
    let mut data = Vec::new();
    f.read_to_end(&mut data).map_err(ModeReadError::Io)?;
    Ok(data)
}

/// Current unix time in milliseconds. Kept out of the codec: callers pass it in.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
