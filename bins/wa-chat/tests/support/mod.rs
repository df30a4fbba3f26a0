//! What the process-level tests of wa-chat share: a deployment directory
//! for one edge whose store is not running, and the binary.

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// The admin token of [`deployment`].
pub const TOKEN: &str = "0123456789abcdef0123456789abcdef";

/// The public key of the token test vector in docs/PROTOCOL.md, SPKI PEM.
const PUBLIC_KEY: &str = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAiojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w=\n-----END PUBLIC KEY-----\n";

pub fn chat() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wa-chat"))
}

/// A complete, valid deployment directory for one edge; the store it names
/// is not running (the edge starts anyway and keeps trying to link).
pub fn deployment(dir: &Path) -> std::path::PathBuf {
    let pki = common::tls::DevPki::generate(&["localhost", "127.0.0.1"]).unwrap();
    pki.write_to(dir).unwrap();
    common::fsutil::write_public(dir.join("k1.pub"), PUBLIC_KEY).unwrap();
    common::fsutil::write_private(&dir.join("cluster.secret"), &[7u8; 32]).unwrap();
    let map =
        common::cluster::ClusterMap::single("127.0.0.1:9".parse().unwrap(), "localhost", [1; 16]);
    std::fs::write(dir.join("cluster.toml"), map.to_toml()).unwrap();
    common::fsutil::write_private(&dir.join("admin.token"), TOKEN.as_bytes()).unwrap();
    let d = dir.display();
    let cfg = dir.join("wa-chat.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"name = "chat-test"
[listen]
tcp = "127.0.0.1:0"
quic = "127.0.0.1:0"
[tls]
cert = "{d}/cert.pem"
key = "{d}/key.pem"
[tokens]
keys = [{{ id = "k1", public_key = "{d}/k1.pub" }}]
[cluster]
map = "{d}/cluster.toml"
ca = "{d}/ca.pem"
secret_file = "{d}/cluster.secret"
[shutdown]
grace = "2s"
[admin]
listen = "127.0.0.1:0"
token_file = "{d}/admin.token"
"#
        ),
    )
    .unwrap();
    cfg
}
