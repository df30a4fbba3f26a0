//! `wactl up --etcd`: a local etcd (Debian's `etcd-server` package) for
//! automatic failover, on loopback ports picked at start, its data in
//! DIR/etcd (emptied at every start: the deployment's map file is the truth
//! a fresh etcd is given). Every wa-store, wa-chat and wa-register of the
//! deployment gets a `[coordination]` section pointing at it. Killed when
//! `wactl up` ends.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use common::coordination::{CoordinationConfig, Coordinator};
use tokio::process::{Child, Command};

/// The lease of a development deployment: short, so that a killed primary
/// is replaced within seconds (production's default is 5 s).
pub(super) const LEASE: &str = "2s";
/// How long etcd may take to answer its first read.
const START_TIMEOUT: Duration = Duration::from_secs(20);

pub(super) struct LocalEtcd {
    _child: Child,
    pub url: String,
}

/// Where Debian puts etcd, else the first `etcd` on PATH.
fn binary() -> anyhow::Result<PathBuf> {
    let debian = PathBuf::from("/usr/bin/etcd");
    if debian.is_file() {
        return Ok(debian);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("etcd"))
        .find(|p| p.is_file())
        .context(
            "--etcd needs etcd: install it (Debian: apt install etcd-server) or put `etcd` on PATH",
        )
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")
        .context("cannot find a free port for etcd")?
        .local_addr()?
        .port())
}

impl LocalEtcd {
    /// Starts etcd with its data in `dir/etcd` and waits until it answers.
    pub(super) async fn start(dir: &Path) -> anyhow::Result<LocalEtcd> {
        let bin = binary()?;
        let data = dir.join("etcd");
        if data.exists() {
            std::fs::remove_dir_all(&data)
                .with_context(|| format!("cannot empty {}", data.display()))?;
        }
        let (client, peer) = (free_port()?, free_port()?);
        let url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(dir.join("etcd.log"))
            .with_context(|| format!("cannot create {}", dir.join("etcd.log").display()))?;
        let child = Command::new(&bin)
            .args(["--name", "wa-dev", "--data-dir"])
            .arg(&data)
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("wa-dev={peer_url}")])
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let etcd = LocalEtcd { _child: child, url };
        let cfg = etcd.config();
        let t = Instant::now();
        loop {
            if let Ok(mut c) = Coordinator::connect(&cfg).await
                && c.map().await.is_ok()
            {
                return Ok(etcd);
            }
            if t.elapsed() > START_TIMEOUT {
                bail!(
                    "etcd did not answer at {} within {START_TIMEOUT:?}; its log is {}",
                    etcd.url,
                    dir.join("etcd.log").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn config(&self) -> CoordinationConfig {
        CoordinationConfig {
            etcd: vec![self.url.clone()],
            ..Default::default()
        }
    }

    /// Appends the `[coordination]` section to each config file of
    /// `configs` (freshly written: none has one).
    pub(super) fn add_to(&self, configs: &[PathBuf]) -> anyhow::Result<()> {
        let section = format!(
            "\n[coordination]\netcd = [\"{}\"]\nlease_ttl = \"{LEASE}\"\n",
            self.url
        );
        for p in configs {
            let mut text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read {}", p.display()))?;
            text.push_str(&section);
            std::fs::write(p, text).with_context(|| format!("cannot write {}", p.display()))?;
        }
        Ok(())
    }
}
