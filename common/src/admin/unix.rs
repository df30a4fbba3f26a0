//! The admin API on a Unix socket (`[admin] socket`): the same endpoints as
//! the TCP listener, without a token. Who may use it is who may connect to
//! the socket file: it is made mode 0660 (the service's user and group; a
//! connect needs write permission), and its directory's permissions apply
//! too (the packaged units' `RuntimeDirectory`, mode 0750). To let an
//! operator in, add them to the service's group.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;

use super::{Admin, AdminError};

/// The socket file's mode.
pub const MODE: u32 = 0o660;

/// Binds `path`, replacing a socket file a stopped process left (one that
/// nothing answers on); refuses a path that is another kind of file or a
/// socket something still answers on.
pub async fn bind(path: &Path) -> Result<UnixListener, AdminError> {
    let err = |source| AdminError::Socket {
        path: path.to_owned(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if tokio::net::UnixStream::connect(path).await.is_ok() {
                return Err(err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "another process answers on it",
                )));
            }
            std::fs::remove_file(path).map_err(err)?;
        }
        Ok(_) => {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "exists and is not a socket",
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(MODE)).map_err(err)?;
    Ok(listener)
}

/// A socket file that is removed when dropped.
pub struct Bound {
    pub listener: UnixListener,
    pub path: PathBuf,
}

impl Admin {
    /// Serves the admin API without a token on `socket` until `shutdown`,
    /// then removes the socket file.
    pub async fn serve_unix(self, socket: Bound, shutdown: CancellationToken) {
        let router = self.trusted_router();
        let _ = axum::serve(socket.listener, router)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = std::fs::remove_file(&socket.path) {
            tracing::warn!(error = %e, path = %socket.path.display(), "cannot remove the admin socket");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_socket_answers_without_a_token_and_only_its_group_may_connect() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.sock");
        let admin = Admin::new("wa-test", "t1", "0");
        admin.set_phase(super::super::Phase::Ready);
        let listener = bind(&path).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, MODE, "{mode:o}");
        let stop = CancellationToken::new();
        let task = tokio::spawn(admin.clone().serve_unix(
            Bound {
                listener,
                path: path.clone(),
            },
            stop.clone(),
        ));
        // No token, yet the authenticated endpoints answer.
        let a = super::super::client::request(&path, http::Method::GET, "/admin/status", None)
            .await
            .unwrap();
        assert_eq!(a.status, 200, "{}", a.text());
        assert!(a.text().contains("\"t1\""), "{}", a.text());
        // Something answers on it: a second process may not take it.
        assert!(bind(&path).await.is_err());
        stop.cancel();
        task.await.unwrap();
        assert!(!path.exists(), "the socket file is removed at the end");
        // A socket file left by a process that died is replaced.
        let stale = std::os::unix::net::UnixListener::bind(&path).unwrap();
        drop(stale);
        assert!(path.exists());
        bind(&path).await.unwrap();
        // Not a socket: refused, left alone.
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        assert!(bind(&file).await.is_err());
        assert_eq!(std::fs::read(&file).unwrap(), b"x");
    }
}
