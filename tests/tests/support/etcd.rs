//! A real etcd (Debian's `etcd-server`, installed by `.ci/run`) on
//! loopback ports in a temp dir, for the automatic failover tests; stopped
//! when dropped.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::PATIENCE;

pub struct Etcd {
    child: tokio::process::Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

fn free(ip: std::net::IpAddr) -> SocketAddr {
    std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Where Debian puts etcd (`/usr/bin/etcd`), or on PATH.
fn binary() -> std::path::PathBuf {
    let debian = std::path::PathBuf::from("/usr/bin/etcd");
    if debian.exists() {
        return debian;
    }
    "etcd".into()
}

impl Etcd {
    /// Starts etcd and waits until it answers a read.
    pub async fn start() -> Etcd {
        Etcd::start_on(std::net::Ipv4Addr::LOCALHOST.into()).await
    }

    /// [`Etcd::start`], serving clients on `ip` (its peer port stays on
    /// loopback).
    pub async fn start_on(ip: std::net::IpAddr) -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        let local = std::net::Ipv4Addr::LOCALHOST.into();
        let (client, peer) = (free(ip), free(local));
        let url = format!("http://{client}");
        let peer_url = format!("http://{peer}");
        let child = tokio::process::Command::new(binary())
            .args(["--name", "t", "--data-dir"])
            .arg(dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args([
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
            ])
            .args(["--initial-cluster", &format!("t={peer_url}")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("etcd is installed (.ci/run installs Debian's etcd-server)");
        let cfg = common::coordination::CoordinationConfig {
            etcd: vec![url.clone()],
            ..Default::default()
        };
        let t = Instant::now();
        loop {
            if let Ok(mut c) = common::coordination::Coordinator::connect(&cfg).await
                && c.map().await.is_ok()
            {
                break;
            }
            assert!(
                t.elapsed() < PATIENCE,
                "etcd did not answer within {PATIENCE:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Etcd {
            child,
            url,
            _dir: dir,
        }
    }

    /// The `[coordination]` section for the services, with `ttl`.
    pub fn section(&self, ttl: &str) -> String {
        format!(
            "[coordination]\netcd = [\"{}\"]\nlease_ttl = \"{ttl}\"\n",
            self.url
        )
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
