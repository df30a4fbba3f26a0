//! The nodes `wactl` operates: a TOML file naming each service's admin
//! listener and the admin token they all check. `wactl up` writes
//! `DIR/wactl.toml`; a packaged install keeps one in `/etc/wa/wactl.toml`.
//!
//! ```toml
//! token_file = "/etc/wa/admin.token"
//! [[node]]
//! name = "store-1"
//! service = "wa-store"
//! admin = "127.0.0.1:9401"
//! # Optional: its admin Unix socket (`[admin] socket`), used instead of
//! # `admin` and without the token.
//! socket = "/run/wa-store/admin.sock"
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// The file's name inside a `wactl up` directory.
pub const FILE: &str = "wactl.toml";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Nodes {
    /// The admin token (owner-only file).
    pub token_file: PathBuf,
    #[serde(default)]
    pub node: Vec<Node>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Node {
    pub name: String,
    /// `wa-store`, `wa-chat`, `wa-media` or `wa-register`.
    pub service: String,
    pub admin: SocketAddr,
    /// The service's admin Unix socket: when set, wactl goes there (no
    /// token needed) instead of `admin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
}

impl Node {
    /// Where wactl reaches this node's admin API.
    pub fn target(&self) -> common::admin::client::Target {
        match &self.socket {
            Some(p) => common::admin::client::Target::Unix(p.clone()),
            None => common::admin::client::Target::Tcp(self.admin),
        }
    }
}

impl Nodes {
    /// The nodes of `wactl up`'s READY lines (`READY wa-store ... admin=A`).
    pub fn from_ready_lines(token_file: &Path, lines: &[String]) -> Nodes {
        let mut counts = std::collections::HashMap::new();
        let node = lines
            .iter()
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                let service = words.nth(1)?.to_owned();
                let admin = words.find_map(|w| w.strip_prefix("admin="))?.parse().ok()?;
                let k = counts.entry(service.clone()).or_insert(0);
                *k += 1;
                let name = match service.as_str() {
                    "wa-store" => format!("store-{k}"),
                    "wa-chat" => format!("chat-{k}"),
                    "wa-media" => format!("media-{k}"),
                    _ => format!("register-{k}"),
                };
                Some(Node {
                    name,
                    service,
                    admin,
                    socket: None,
                })
            })
            .collect();
        Nodes {
            token_file: token_file.to_owned(),
            node,
        }
    }

    pub fn load(path: &Path) -> anyhow::Result<Nodes> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the node list {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("node list {}", path.display()))
    }

    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let text = toml::to_string(self).context("cannot encode the node list")?;
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
    }

    /// The admin token.
    pub fn token(&self) -> anyhow::Result<Vec<u8>> {
        let mut t = common::secret::read(&self.token_file, common::sections::MIN_ADMIN_TOKEN)
            .context("admin token")?;
        while t.last().is_some_and(|b| b.is_ascii_whitespace()) {
            t.pop();
        }
        Ok(t)
    }

    /// The nodes of one service.
    pub fn of(&self, service: &str) -> impl Iterator<Item = &Node> {
        self.node.iter().filter(move |n| n.service == service)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_lines_name_the_nodes_and_round_trip() {
        let lines = [
            "READY wa-store link=127.0.0.1:7401 admin=127.0.0.1:1001".to_string(),
            "READY wa-store link=127.0.0.1:7402 admin=127.0.0.1:1002".to_string(),
            "READY wa-chat tcp=- quic=- admin=127.0.0.1:1003".to_string(),
            "READY wa-media http=127.0.0.1:9".to_string(),
        ];
        let n = Nodes::from_ready_lines(Path::new("/t"), &lines);
        let names: Vec<_> = n.node.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["store-1", "store-2", "chat-1"]);
        assert_eq!(n.of("wa-chat").count(), 1);
        let text = toml::to_string(&n).unwrap();
        assert_eq!(toml::from_str::<Nodes>(&text).unwrap(), n);
    }
}
