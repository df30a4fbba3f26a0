//! The files of a `wactl up` deployment: PKI, keys, cluster secret and map
//! (kept when present), and the services' configs (always rewritten: they
//! follow the flags), one store per island and one edge per `--edges`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use common::cluster::ClusterMap;
use common::tls::DevPki;

use crate::dev::{KEY_ID, SERVER_NAME};

/// The config file of store `i` (1-based): the first keeps the name of a
/// single-island deployment.
pub(super) fn store_file(i: usize) -> String {
    if i == 1 {
        "wa-store.toml".into()
    } else {
        format!("wa-store-{i}.toml")
    }
}

pub(super) fn store_data(i: usize) -> String {
    if i == 1 {
        "store".into()
    } else {
        format!("store-{i}")
    }
}

/// The config file and data directory of island `i`'s secondary.
pub(super) fn secondary_file(i: usize) -> String {
    format!("wa-store-{i}b.toml")
}

pub(super) fn secondary_data(i: usize) -> String {
    format!("store-{i}b")
}

/// The config file of edge `j` (1-based), likewise.
pub(crate) fn chat_file(j: usize) -> String {
    if j == 1 {
        "wa-chat.toml".into()
    } else {
        format!("wa-chat-{j}.toml")
    }
}

/// The admin token every service of the deployment checks (and wactl sends).
pub const ADMIN_TOKEN: &str = "admin.token";

/// Writes what is missing in `dir`: PKI, signing key, cluster secret and map;
/// and the service configs, always (they follow the flags): one store per
/// address of `links` (island `i` owns the `i`th share of the fragments), one
/// edge per address of `chats`.
/// The operator's own TOML tables for the configs `wactl up` writes
/// (`--chat-toml`, `--store-toml`), empty when not given.
#[derive(Default)]
pub(super) struct Extra {
    pub chat: String,
    pub store: String,
}

/// The text of `path` (given as `flag`), which must be TOML by itself.
pub(super) fn extra_toml(path: Option<&Path>, flag: &str) -> anyhow::Result<String> {
    let Some(path) = path else {
        return Ok(String::new());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{flag}: cannot read {}", path.display()))?;
    let table = text
        .parse::<toml::Table>()
        .with_context(|| format!("{flag}: {} is not TOML", path.display()))?;
    // (Appended after the generated [admin] table, a bare key would land in
    // it.)
    if let Some((key, _)) = table.iter().find(|(_, v)| !v.is_table()) {
        bail!(
            "{flag}: {}: `{key}` is not in a table; only tables can be added (e.g. [limits])",
            path.display()
        );
    }
    Ok(format!("# From {flag} {}\n{text}", path.display()))
}

/// `generated` with the operator's `extra` tables after it; an error names
/// `file` and what clashes (a table both define).
fn with_extra(generated: String, extra: &str, file: &str) -> anyhow::Result<String> {
    if extra.is_empty() {
        return Ok(generated);
    }
    let text = format!("{generated}{extra}\n");
    text.parse::<toml::Table>().map_err(|e| {
        anyhow::anyhow!(
            "{file}: the added TOML clashes with what wactl up writes (a table it writes itself cannot be repeated): {}",
            e.message()
        )
    })?;
    Ok(text)
}

pub(super) fn prepare(
    dir: &Path,
    host: std::net::IpAddr,
    links: &[SocketAddr],
    seconds: Option<&[SocketAddr]>,
    chats: &[SocketAddr],
    extra: &Extra,
) -> anyhow::Result<()> {
    let mkdir = |p: PathBuf| {
        std::fs::create_dir_all(&p).with_context(|| format!("cannot create {}", p.display()))
    };
    mkdir(dir.join("pki"))?;
    mkdir(dir.join("keys"))?;
    for i in 1..=links.len() {
        mkdir(dir.join(store_data(i)))?;
        if seconds.is_some() {
            mkdir(dir.join(secondary_data(i)))?;
        }
    }

    if !dir.join("pki/ca.pem").exists() {
        let host = host.to_string();
        let mut names = vec!["localhost", "127.0.0.1"];
        if !names.contains(&host.as_str()) {
            names.push(&host);
        }
        DevPki::generate(&names)
            .context("cannot generate the development PKI")?
            .write_to(&dir.join("pki"))
            .with_context(|| format!("cannot write {}", dir.join("pki").display()))?;
        println!(
            "created a development CA and certificate in {}",
            dir.join("pki").display()
        );
    }
    if !dir.join("keys/k1.pem").exists() {
        crate::keygen::write_pair(&dir.join("keys"), KEY_ID, true)?;
        println!(
            "created the token signing key {}",
            dir.join("keys/k1.pem").display()
        );
    }
    let secret = dir.join("cluster.secret");
    if !secret.exists() {
        common::fsutil::write_private(&secret, &rand::random::<[u8; 32]>())
            .with_context(|| format!("cannot write {}", secret.display()))?;
    }
    let token = dir.join(ADMIN_TOKEN);
    if !token.exists() {
        common::fsutil::write_private(&token, hex::encode(rand::random::<[u8; 32]>()).as_bytes())
            .with_context(|| format!("cannot write {}", token.display()))?;
    }
    let map = write_map(&dir.join("cluster.toml"), links, seconds)?;

    let d = dir.display();
    let durability = if seconds.is_some() {
        "replicated"
    } else {
        "disk"
    };
    let mut stores: Vec<(String, String, SocketAddr, &str)> = links
        .iter()
        .enumerate()
        .map(|(i, l)| {
            (
                store_file(i + 1),
                store_data(i + 1),
                *l,
                map.islands[i].name.as_str(),
            )
        })
        .collect();
    if let Some(seconds) = seconds {
        stores.extend(seconds.iter().enumerate().map(|(i, l)| {
            (
                secondary_file(i + 1),
                secondary_data(i + 1),
                *l,
                map.islands[i].name.as_str(),
            )
        }));
    }
    for (file, data, link, island) in stores {
        let n = data.trim_start_matches("store").trim_start_matches('-');
        let n = if n.is_empty() { "1" } else { n };
        let store = format!(
            r#"node = "store-{n}"
data_dir = "{d}/{data}"
durability = "{durability}"
[link]
listen = "{link}"
cert = "{d}/pki/cert.pem"
key = "{d}/pki/key.pem"
[cluster]
map = "{d}/cluster.toml"
secret_file = "{d}/cluster.secret"
island = "{island}"
ca = "{d}/pki/ca.pem"
[shutdown]
grace = "5s"
[admin]
listen = "127.0.0.1:0"
token_file = "{d}/admin.token"
"#
        );
        let store = with_extra(store, &extra.store, &file)?;
        let p = dir.join(file);
        std::fs::write(&p, store).with_context(|| format!("cannot write {}", p.display()))?;
    }
    for (j, chat) in chats.iter().enumerate() {
        let n = j + 1;
        let text = format!(
            r#"name = "chat-{n}"
[listen]
tcp = "{chat}"
quic = "{chat}"
[tls]
cert = "{d}/pki/cert.pem"
key = "{d}/pki/key.pem"
[tokens]
keys = [{{ id = "{KEY_ID}", public_key = "{d}/keys/k1.pub" }}]
[cluster]
map = "{d}/cluster.toml"
ca = "{d}/pki/ca.pem"
secret_file = "{d}/cluster.secret"
[shutdown]
grace = "5s"
retry_after = "1s"
[admin]
listen = "127.0.0.1:0"
token_file = "{d}/admin.token"
"#
        );
        let text = with_extra(text, &extra.chat, &chat_file(n))?;
        let p = dir.join(chat_file(n));
        std::fs::write(&p, text).with_context(|| format!("cannot write {}", p.display()))?;
    }
    Ok(())
}

/// The wa-media config of the deployment (node `m1`, blobs in `media/`), always
/// rewritten (it follows the flags).
pub(super) fn write_media_config(dir: &Path, listen: SocketAddr) -> anyhow::Result<()> {
    let d = dir.display();
    let text = format!(
        r#"node = "m1"
data_dir = "{d}/media"
[listen]
https = "{listen}"
[tls]
cert = "{d}/pki/cert.pem"
key = "{d}/pki/key.pem"
[tokens]
keys = [{{ id = "{KEY_ID}", public_key = "{d}/keys/k1.pub" }}]
[cluster]
map = "{d}/cluster.toml"
ca = "{d}/pki/ca.pem"
secret_file = "{d}/cluster.secret"
[shutdown]
grace = "5s"
[admin]
listen = "127.0.0.1:0"
token_file = "{d}/admin.token"
"#
    );
    let p = dir.join("wa-media.toml");
    std::fs::write(&p, text).with_context(|| format!("cannot write {}", p.display()))
}

/// The wa-register config of the deployment (development mode: the `log`
/// SMS provider writes codes to `register/codes.log`), always rewritten; the
/// PIN pepper is created once.
pub(super) fn write_register_config(dir: &Path, listen: SocketAddr) -> anyhow::Result<()> {
    let reg = dir.join("register");
    std::fs::create_dir_all(&reg).with_context(|| format!("cannot create {}", reg.display()))?;
    let pepper = reg.join("pin.pepper");
    if !pepper.exists() {
        common::fsutil::write_private(&pepper, &rand::random::<[u8; 32]>())
            .with_context(|| format!("cannot write {}", pepper.display()))?;
    }
    let d = dir.display();
    let text = format!(
        r#"name = "register-1"
mode = "development"
[listen]
https = "{listen}"
[tls]
cert = "{d}/pki/cert.pem"
key = "{d}/pki/key.pem"
[cluster]
map = "{d}/cluster.toml"
ca = "{d}/pki/ca.pem"
secret_file = "{d}/cluster.secret"
[tokens]
key_id = "{KEY_ID}"
signing_key = "{d}/keys/k1.pem"
[pin]
pepper_file = "{d}/register/pin.pepper"
[sms]
provider = "log"
[sms.log]
file = "{d}/register/codes.log"
[shutdown]
grace = "5s"
[admin]
listen = "127.0.0.1:0"
token_file = "{d}/admin.token"
"#
    );
    let p = dir.join("wa-register.toml");
    std::fs::write(&p, text).with_context(|| format!("cannot write {}", p.display()))
}

/// Keeps an existing map (its hash seed places users, and its islands own
/// data), moving its islands to `links` if the ports changed; a new map
/// splits the fragments evenly between `links.len()` islands.
fn write_map(
    path: &Path,
    links: &[SocketAddr],
    seconds: Option<&[SocketAddr]>,
) -> anyhow::Result<ClusterMap> {
    let map = if path.exists() {
        let mut map = ClusterMap::load(path)
            .with_context(|| format!("cannot use the existing {}", path.display()))?;
        if map.islands.len() != links.len() {
            bail!(
                "{} has {} island(s); run with --islands {} or start in a new directory",
                path.display(),
                map.islands.len(),
                map.islands.len()
            );
        }
        if map.islands.iter().any(|i| i.secondary.is_some()) != seconds.is_some() {
            bail!(
                "{} was made {} secondaries; run {} --secondaries or start in a new directory",
                path.display(),
                if seconds.is_some() { "without" } else { "with" },
                if seconds.is_some() { "without" } else { "with" },
            );
        }
        // Either node of an island may be its primary now (`wactl promote`).
        let same = |i: usize| {
            let isl = &map.islands[i];
            match seconds {
                None => isl.primary == links[i],
                Some(s) => {
                    (isl.primary == links[i] && isl.secondary == Some(s[i]))
                        || (isl.primary == s[i] && isl.secondary == Some(links[i]))
                }
            }
        };
        if (0..links.len()).all(same) {
            return Ok(map);
        }
        for (i, island) in map.islands.iter_mut().enumerate() {
            island.primary = links[i];
            island.secondary = seconds.map(|s| s[i]);
        }
        map.epoch += 1;
        map
    } else {
        let mut map = ClusterMap::single(links[0], SERVER_NAME, rand::random());
        let n = links.len() as u32;
        let per = map.fragments / n;
        map.islands = links
            .iter()
            .enumerate()
            .map(|(i, link)| {
                let i = i as u32;
                let last = if i + 1 == n {
                    map.fragments - 1
                } else {
                    (i + 1) * per - 1
                };
                common::cluster::Island {
                    name: format!("island-{}", i + 1),
                    primary: *link,
                    server_name: SERVER_NAME.into(),
                    secondary: seconds.map(|s| s[i as usize]),
                    fragments: [i * per, last],
                }
            })
            .collect();
        map
    };
    std::fs::write(path, map.to_toml())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(map)
}
