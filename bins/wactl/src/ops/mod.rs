//! The operator commands: each asks the admin listeners of the nodes in the
//! node list ([`crate::nodes`]) and prints a table, or JSON with
//! `--output json` (one document on stdout, for scripts).
//!
//! Exit codes: 0 done (and, for `status`, every node up and ready), 1 the
//! command failed (node list, token, a node refusing), 2 `status` found a
//! node down or not ready, or `drain` left sessions open. `backup` exits 1
//! when the copy failed; `restore` (local, no node list) 1 when it refused;
//! `user show` and `trace` 3 when the home knows nothing of it.

pub mod backup;
pub mod cluster;
pub mod drain;
pub mod expire;
pub mod progress;
pub mod pumping;
pub mod push;
pub mod queues;
pub mod restore;
pub mod sessions;
pub mod status;
pub mod table;
pub mod trace;
pub mod user;

use std::path::PathBuf;

use anyhow::Context;

use crate::cli::{NodesArg, Output};
use crate::nodes::{self, Node, Nodes};

/// Where a packaged install keeps the node list.
pub const DEFAULT_NODES: &str = "/etc/wa/wactl.toml";

/// The node list and the admin token the flags point at.
pub fn load(arg: &NodesArg) -> anyhow::Result<(Nodes, Vec<u8>)> {
    let path = match (&arg.nodes, &arg.dir) {
        (Some(p), _) => p.clone(),
        (None, Some(d)) => d.join(nodes::FILE),
        (None, None) => PathBuf::from(DEFAULT_NODES),
    };
    let nodes = Nodes::load(&path)?;
    let token = match nodes.token() {
        Ok(t) => t,
        // Over admin sockets no token is needed.
        Err(_) if nodes.node.iter().all(|n| n.socket.is_some()) => Vec::new(),
        Err(e) => {
            return Err(e).with_context(|| format!("the token_file of {}", path.display()));
        }
    };
    Ok((nodes, token))
}

/// Prints `json` or the `table`, as asked.
pub fn print(output: Output, json: &serde_json::Value, table: impl FnOnce() -> String) {
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(json).expect("a JSON value encodes")
        ),
        Output::Table => print!("{}", table()),
    }
}

/// `value` with the characters a query string cannot hold escaped.
pub fn escape(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Runs `f` against every node at once; answers in the nodes' order.
pub async fn each<'a, T, F, Fut>(nodes: impl Iterator<Item = &'a Node>, f: F) -> Vec<(Node, T)>
where
    F: Fn(Node) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let tasks: Vec<_> = nodes
        .map(|n| (n.clone(), tokio::spawn(f(n.clone()))))
        .collect();
    let mut out = Vec::new();
    for (n, t) in tasks {
        out.push((n, t.await.expect("an admin request task does not panic")));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn query_values_are_escaped() {
        assert_eq!(super::escape("alice"), "alice");
        assert_eq!(super::escape("+1 555&x"), "%2B1%20555%26x");
    }
}
