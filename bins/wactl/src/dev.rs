//! The deployment directory of `wactl up`: where its files are, and how
//! `send` and `watch` connect through it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use common::client::{Client, ClientConfig, Events, Transport};

use crate::cli::TransportArg;

/// The key id of the signing key `wactl up` creates.
pub(crate) const KEY_ID: &str = "k1";
/// The name in the development certificate.
pub(crate) const SERVER_NAME: &str = "localhost";

pub(crate) struct DevDir {
    root: PathBuf,
}

impl DevDir {
    pub(crate) fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }

    pub(crate) fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Where edge `edge` (1-based) listens for `transport`, from its config file.
    pub(crate) fn chat_addr(
        &self,
        transport: &Transport,
        edge: usize,
    ) -> anyhow::Result<SocketAddr> {
        if edge == 0 {
            bail!("--edge counts from 1");
        }
        let path = self.path(&crate::up::chat_file(edge));
        if edge > 1 && !path.exists() {
            bail!(
                "{} does not exist: the deployment has fewer than {edge} edges (`wactl up --edges`)",
                path.display()
            );
        }
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read {} (run `wactl up --dir {}` first)",
                path.display(),
                self.root.display()
            )
        })?;
        let doc: toml::Table = toml::from_str(&text)
            .with_context(|| format!("{} is not valid TOML", path.display()))?;
        let key = match transport {
            Transport::Tcp => "tcp",
            Transport::Quic => "quic",
        };
        let Some(value) = doc
            .get("listen")
            .and_then(|l| l.get(key))
            .and_then(|v| v.as_str())
        else {
            bail!("{} has no [listen] {key} address", path.display());
        };
        let addr: SocketAddr = value.parse().with_context(|| {
            format!(
                "{}: [listen] {key} = {value:?} is not an address",
                path.display()
            )
        })?;
        if addr.port() == 0 {
            bail!(
                "{}: [listen] {key} has port 0; its real port is only known to the running wa-chat",
                path.display()
            );
        }
        Ok(SocketAddr::new(reachable(addr.ip()), addr.port()))
    }

    /// Connects to the deployment's wa-chat as `user`, with a token minted
    /// from the deployment's signing key.
    pub(crate) async fn connect(
        &self,
        user: &str,
        transport: Transport,
        edge: usize,
    ) -> anyhow::Result<(Client, Events)> {
        let addr = self.chat_addr(&transport, edge)?;
        let token = crate::token::mint(
            &self.path("keys/k1.pem"),
            KEY_ID,
            user,
            1,
            1,
            Duration::from_secs(24 * 3600),
        )?;
        let ca = self.path("pki/ca.pem");
        let roots = common::tls::load_certs(&ca)
            .with_context(|| format!("cannot load the CA of {}", self.root.display()))?;
        let cfg = ClientConfig::new(addr, transport.clone(), SERVER_NAME.into(), roots, token);
        Client::connect(cfg).await.with_context(|| {
            format!("cannot connect to wa-chat at {addr} ({transport:?}); is `wactl up --dir {}` running?", self.root.display())
        })
    }
}

/// A listening address turned into one to connect to.
fn reachable(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v) if v.is_unspecified() => Ipv4Addr::LOCALHOST.into(),
        IpAddr::V6(v) if v.is_unspecified() => Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    }
}

pub(crate) fn transport(t: &TransportArg) -> Transport {
    if t.quic {
        Transport::Quic
    } else {
        Transport::Tcp
    }
}
