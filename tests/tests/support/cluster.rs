//! A deployment of several islands for black-box tests: N `wa-store`
//! processes (island K owns the K-th share of the fragments) and M `wa-chat`
//! processes, in one temp dir, as `wactl up --islands N --edges M` lays them
//! out. Processes, so that a test can send them SIGHUP and SIGTERM.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::client::{Client, ClientConfig, Events, Transport};
use common::cluster::{ClusterMap, Island};
use common::token::{TokenClaims, TokenSigner};
use rustls_pki_types::CertificateDer;

use super::netns::{Netns, Veth};
use super::{
    ChatProcess, PATIENCE, StoreProcess, bin_dir, field, now_secs, ready_line, ready_then,
    write_pki,
};

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub roots: Vec<CertificateDer<'static>>,
    signer: TokenSigner,
    pub map: ClusterMap,
    pub stores: Vec<StoreProcess>,
    pub edges: Vec<ChatProcess>,
}

/// The map of `n` islands (fragments split evenly) under `epoch`, with the
/// primaries at `addrs`.
pub fn map_of(seed: [u8; 16], addrs: &[std::net::SocketAddr], epoch: u64) -> ClusterMap {
    let mut map = ClusterMap::single(addrs[0], "localhost", seed);
    map.epoch = epoch;
    let n = addrs.len() as u32;
    let per = map.fragments / n;
    map.islands = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let i = i as u32;
            Island {
                name: format!("island-{}", i + 1),
                primary: *a,
                server_name: "localhost".into(),
                secondary: None,
                fragments: [i * per, if i + 1 == n { 255 } else { (i + 1) * per - 1 }],
            }
        })
        .collect();
    map
}

fn store_toml(dir: &Path, k: usize, listen: std::net::SocketAddr) -> String {
    store_toml_as(dir, &k.to_string(), k, listen, "disk")
}

/// Store `name` of island `k`, at `durability`.
pub fn store_toml_as(
    dir: &Path,
    name: &str,
    k: usize,
    listen: std::net::SocketAddr,
    durability: &str,
) -> String {
    let d = dir.display();
    format!(
        r#"node = "store-{name}"
data_dir = "{d}/store-{name}"
durability = "{durability}"
[link]
listen = "{listen}"
cert = "{d}/pki/cert.pem"
key = "{d}/pki/key.pem"
[cluster]
map = "{d}/cluster.toml"
secret_file = "{d}/cluster.secret"
island = "island-{k}"
ca = "{d}/pki/ca.pem"
[shutdown]
grace = "5s"
[admin]
listen = "127.0.0.1:0"
token_file = "{d}/admin.token"
"#
    )
}

fn chat_toml(dir: &Path, k: usize) -> String {
    chat_toml_on(dir, k, std::net::Ipv4Addr::LOCALHOST.into())
}

/// Edge `k`, its client ports on `host` (port 0).
pub fn chat_toml_on(dir: &Path, k: usize, host: std::net::IpAddr) -> String {
    let d = dir.display();
    format!(
        r#"name = "chat-{k}"
[listen]
tcp = "{host}:0"
quic = "{host}:0"
[tls]
cert = "{d}/pki/cert.pem"
key = "{d}/pki/key.pem"
[tokens]
keys = [{{ id = "k1", public_key = "{d}/keys/k1.pub" }}]
[cluster]
map = "{d}/cluster.toml"
ca = "{d}/pki/ca.pem"
secret_file = "{d}/cluster.secret"
[shutdown]
grace = "5s"
retry_after = "100ms"
[admin]
listen = "127.0.0.1:0"
token_file = "{d}/admin.token"
"#
    )
}

async fn spawn(dir: &Path, bin: &str, file: &str, text: String) -> tokio::process::Child {
    spawn_in(None, dir, bin, file, text).await
}

/// `bin` with the config `text` written to `file`, in the network
/// namespace `ns` or this process's own.
pub async fn spawn_in(
    ns: Option<&Netns>,
    dir: &Path,
    bin: &str,
    file: &str,
    text: String,
) -> tokio::process::Child {
    let cfg = dir.join(file);
    // Another host has a map file of its own (it learns a new map only
    // through etcd or by hand, not by reading this host's).
    let text = match ns {
        Some(ns) => {
            let here = dir.join("cluster.toml");
            let there = dir.join(format!("cluster-{}.toml", ns.name));
            if !there.exists() {
                std::fs::copy(&here, &there).unwrap();
            }
            text.replace(&*here.to_string_lossy(), &there.to_string_lossy())
        }
        None => text,
    };
    std::fs::write(&cfg, text).unwrap();
    let program = bin_dir().join(bin);
    match ns {
        Some(ns) => ns.command(&program),
        None => tokio::process::Command::new(&program),
    }
    .arg("--config")
    .arg(&cfg)
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit())
    .kill_on_drop(true)
    .spawn()
    .expect("binaries are built (cargo build --workspace)")
}

/// `edges` wa-chat processes, ready.
async fn start_edges(d: &Path, edges: usize, extra: &str) -> Vec<ChatProcess> {
    let mut chats = Vec::new();
    for k in 1..=edges {
        let text = chat_toml(d, k) + extra;
        let mut child = spawn(d, "wa-chat", &format!("wa-chat-{k}.toml"), text).await;
        let line = ready_line(&mut child, "wa-chat").await;
        chats.push(ChatProcess {
            tcp: field(&line, "tcp").parse().unwrap(),
            quic: field(&line, "quic").parse().unwrap(),
            admin: field(&line, "admin").parse().unwrap(),
            child,
        });
    }
    chats
}

/// Store `k` of a replicated island ("1" the first primary, "1b" its
/// secondary) at `addr`, in `ns`, ready (and then `then`).
async fn spawn_replicated(
    d: &Path,
    k: usize,
    addr: std::net::SocketAddr,
    ns: Option<&Netns>,
    then: Option<&str>,
) -> StoreProcess {
    let name = if k == 1 { "1" } else { "1b" };
    let extra = std::fs::read_to_string(d.join("extra.toml")).unwrap_or_default();
    let text = store_toml_as(d, name, 1, addr, "replicated") + &extra;
    let mut child = spawn_in(ns, d, "wa-store", &format!("wa-store-{name}.toml"), text).await;
    let line = ready_then(&mut child, "wa-store", then).await;
    let admin = field(&line, "admin").parse().unwrap();
    StoreProcess { child, addr, admin }
}

async fn start_store(d: &Path, k: usize, listen: std::net::SocketAddr) -> StoreProcess {
    let extra = std::fs::read_to_string(d.join("extra.toml")).unwrap_or_default();
    let mut child = spawn(
        d,
        "wa-store",
        &format!("wa-store-{k}.toml"),
        store_toml(d, k, listen) + &extra,
    )
    .await;
    let line = ready_line(&mut child, "wa-store").await;
    let addr = field(&line, "link").parse().unwrap();
    let admin = field(&line, "admin").parse().unwrap();
    StoreProcess { child, addr, admin }
}

impl Cluster {
    /// Stops store `k` (1-based) with SIGTERM; it must exit 0.
    pub async fn stop_store(&mut self, k: usize) {
        let c = &mut self.stores[k - 1].child;
        signal(c, nix::sys::signal::Signal::SIGTERM);
        let st = tokio::time::timeout(PATIENCE, c.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(st.success(), "store {k} exited with {st}");
    }

    /// Starts store `k` again, on the same address and data.
    pub async fn restart_store(&mut self, k: usize) {
        let addr = self.stores[k - 1].addr;
        self.stores[k - 1] = start_store(self.dir.path(), k, addr).await;
    }

    /// One island whose primary (store 1) has a secondary (store 2, named
    /// "1b"), both at durability `replicated`, the secondary caught up; and
    /// `edges` edges.
    pub async fn start_replicated(edges: usize) -> Cluster {
        Cluster::start_replicated_with(edges, "").await
    }

    /// [`Cluster::start_replicated`], with `extra` (TOML tables, such as
    /// `[coordination]`) in every store's and edge's config.
    pub async fn start_replicated_with(edges: usize, extra: &str) -> Cluster {
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
        };
        let mut c = Cluster::start_pair([(free(), None), (free(), None)], extra).await;
        c.edges = start_edges(c.dir.path(), edges, extra).await;
        c
    }

    /// [`Cluster::start_replicated`], with `stores_only` (TOML tables) in
    /// both stores' configs.
    pub async fn start_replicated_stores_with(edges: usize, stores_only: &str) -> Cluster {
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
        };
        let mut c = Cluster::start_pair([(free(), None), (free(), None)], stores_only).await;
        c.edges = start_edges(c.dir.path(), edges, "").await;
        c
    }

    /// One island split over two hosts (docs/ARCHITECTURE.md, "Replication"):
    /// its primary (store 1) and an edge (edge 1, its client ports on
    /// `clients.inside`) in the namespace `ns`, the primary's link on
    /// `cluster.inside`; the secondary (store 2) and a second edge (edge 2,
    /// on loopback) here, the secondary's link on `cluster.outside`. Setting
    /// `cluster` down cuts the primary off from everything but its edge.
    /// `extra` goes into every config, `stores_only` into the stores'.
    pub async fn start_split(
        ns: &Netns,
        cluster: &Veth,
        clients: &Veth,
        extra: &str,
        stores_only: &str,
    ) -> Cluster {
        let port = |ip: std::net::Ipv4Addr| {
            std::net::TcpListener::bind((ip, 0))
                .unwrap()
                .local_addr()
                .unwrap()
        };
        // (The namespace is empty: any port is free there.)
        let primary =
            std::net::SocketAddr::new(cluster.inside.into(), port(cluster.outside).port());
        let secondary = port(cluster.outside);
        let stores = [(primary, Some(ns)), (secondary, None)];
        let mut c = Cluster::start_pair(stores, &format!("{extra}{stores_only}")).await;
        let d = c.dir.path();
        let mut edges = Vec::new();
        for (k, host, ns) in [
            (1, clients.inside.into(), Some(ns)),
            (2, std::net::Ipv4Addr::LOCALHOST.into(), None),
        ] {
            let text = chat_toml_on(d, k, host) + extra;
            let mut child = spawn_in(ns, d, "wa-chat", &format!("wa-chat-{k}.toml"), text).await;
            let line = ready_line(&mut child, "wa-chat").await;
            edges.push(ChatProcess {
                tcp: field(&line, "tcp").parse().unwrap(),
                quic: field(&line, "quic").parse().unwrap(),
                admin: field(&line, "admin").parse().unwrap(),
                child,
            });
        }
        c.edges = edges;
        c
    }

    /// The primary ("1") and secondary ("1b") of one island at `replicated`,
    /// each at its address and in its namespace, the secondary caught up;
    /// no edges yet.
    async fn start_pair(
        stores: [(std::net::SocketAddr, Option<&Netns>); 2],
        extra: &str,
    ) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let signer = write_pki(d);
        let (pa, sa) = (stores[0].0, stores[1].0);
        let mut map = map_of(rand::random(), &[pa], 1);
        map.islands[0].secondary = Some(sa);
        std::fs::write(d.join("cluster.toml"), map.to_toml()).unwrap();
        std::fs::write(d.join("extra.toml"), extra).unwrap();
        let mut started = Vec::new();
        for (k, (addr, ns)) in stores.into_iter().enumerate() {
            let then = (k == 1).then_some("CAUGHT-UP");
            started.push(spawn_replicated(d, k + 1, addr, ns, then).await);
        }
        let roots = common::tls::load_certs(&d.join("pki/ca.pem")).unwrap();
        Cluster {
            dir,
            roots,
            signer,
            map,
            stores: started,
            edges: Vec::new(),
        }
    }

    /// Store `k` (1-based) of [`Cluster::start_replicated`] again ("1" or
    /// "1b"), on its address and data.
    pub async fn restart_replicated(&mut self, k: usize) {
        self.restart_replicated_in(k, None, None).await;
    }

    /// [`Cluster::restart_replicated`] in the namespace `ns`; with `then`,
    /// also waits for a line starting with it (`CAUGHT-UP`).
    pub async fn restart_replicated_in(
        &mut self,
        k: usize,
        ns: Option<&Netns>,
        then: Option<&str>,
    ) {
        let addr = self.stores[k - 1].addr;
        self.stores[k - 1] = spawn_replicated(self.dir.path(), k, addr, ns, then).await;
    }

    /// An in-process wa-register beside this cluster, with `extra` tables,
    /// reading a map file of its own (a copy of the map now), as on another
    /// machine: it learns a new map only through etcd.
    pub async fn start_register(&self, extra: &str) -> super::RegisterNode {
        let d = self.dir.path();
        let shared = d.join("cluster.toml");
        let own = d.join("cluster-register.toml");
        std::fs::copy(&shared, &own).unwrap();
        let tokens = format!(
            "key_id = \"k1\"\nsigning_key = \"{}\"\n",
            d.join("keys/k1.key").display()
        );
        let text = super::register_toml_at(d, &self.signer, extra, &tokens).replace(
            &format!("map = \"{}\"", shared.display()),
            &format!("map = \"{}\"", own.display()),
        );
        super::start_register_at(d, text).await
    }

    /// A registration client of `node`.
    pub fn register_client(&self, node: &super::RegisterNode) -> common::client::RegisterClient {
        common::client::RegisterClient::new(common::client::RegisterConfig::new(
            node.addr,
            "localhost".into(),
            self.roots.clone(),
        ))
        .expect("register client")
    }

    /// `islands` stores and `edges` edges, all ready.
    pub async fn start(islands: usize, edges: usize) -> Cluster {
        Cluster::start_with(islands, edges, "").await
    }

    /// [`Cluster::start`], with `store_extra` (TOML tables) in every
    /// store's config.
    pub async fn start_with(islands: usize, edges: usize, store_extra: &str) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let signer = write_pki(d);
        std::fs::write(d.join("extra.toml"), store_extra).unwrap();
        let seed: [u8; 16] = rand::random();
        // The stores read the map for their islands' fragments before their
        // ports are known; the edges, started once they are, route by it.
        let placeholder: Vec<_> = (0..islands)
            .map(|i| format!("127.0.0.1:{}", 9 + i).parse().unwrap())
            .collect();
        std::fs::write(
            d.join("cluster.toml"),
            map_of(seed, &placeholder, 1).to_toml(),
        )
        .unwrap();
        let mut stores = Vec::new();
        for k in 1..=islands {
            stores.push(start_store(d, k, "127.0.0.1:0".parse().unwrap()).await);
        }
        let addrs: Vec<_> = stores.iter().map(|s| s.addr).collect();
        let map = map_of(seed, &addrs, 1);
        std::fs::write(d.join("cluster.toml"), map.to_toml()).unwrap();
        let chats = start_edges(d, edges, "").await;
        let roots = common::tls::load_certs(&d.join("pki/ca.pem")).unwrap();
        Cluster {
            dir,
            roots,
            signer,
            map,
            stores,
            edges: chats,
        }
    }

    /// A user id starting with `prefix` whose home is island `k` (1-based).
    pub fn user_on(&self, k: usize, prefix: &str) -> String {
        let name = format!("island-{k}");
        (0..)
            .map(|i| format!("{prefix}{i}"))
            .find(|u| self.map.home(u).name == name)
            .unwrap()
    }

    /// The client config of `user` on edge `k` (1-based).
    pub fn client_config(&self, user: &str, k: usize, transport: Transport) -> ClientConfig {
        let e = &self.edges[k - 1];
        let addr = match transport {
            Transport::Tcp => e.tcp,
            Transport::Quic => e.quic,
        };
        let token = self.signer.sign(TokenClaims {
            user: user.into(),
            device: 1,
            generation: 1,
            expires_at: now_secs() + 3600,
            key_id: String::new(),
            issued_at: now_secs(),
            account: String::new(),
        });
        let mut cfg = ClientConfig::new(
            addr,
            transport,
            "localhost".into(),
            self.roots.clone(),
            token,
        );
        cfg.backoff_initial = Duration::from_millis(20);
        cfg.backoff_max = Duration::from_millis(500);
        cfg
    }

    /// A client of the homes' key-value service (as wa-register is), going
    /// by the current map.
    pub fn link_client(&self) -> common::link_client::LinkClient {
        let secret = std::fs::read(self.dir.path().join("cluster.secret")).unwrap();
        common::link_client::LinkClient::new(
            self.map.clone(),
            &self.roots,
            secret.into(),
            "test".into(),
            PATIENCE,
        )
        .unwrap()
        .reloading_from(self.dir.path().join("cluster.toml"))
    }

    pub async fn client(&self, user: &str, k: usize) -> (Client, Events) {
        Client::connect(self.client_config(user, k, Transport::Tcp))
            .await
            .expect("client connects")
    }

    /// Writes `map` as the cluster map and sends every store, then every
    /// edge, SIGHUP (a stopped one reads it when it starts again).
    pub fn publish(&mut self, map: ClusterMap) {
        std::fs::write(self.dir.path().join("cluster.toml"), map.to_toml()).unwrap();
        self.map = map;
        for c in self
            .stores
            .iter()
            .map(|s| &s.child)
            .chain(self.edges.iter().map(|e| &e.child))
            .filter(|c| c.id().is_some())
        {
            signal(c, nix::sys::signal::Signal::SIGHUP);
        }
    }

    /// SIGTERM to every edge, then every store; each must exit 0.
    pub async fn stop(self) {
        let children = self
            .edges
            .into_iter()
            .map(|e| e.child)
            .chain(self.stores.into_iter().map(|s| s.child));
        for mut c in children {
            signal(&c, nix::sys::signal::Signal::SIGTERM);
            let st = tokio::time::timeout(PATIENCE, c.wait())
                .await
                .unwrap()
                .unwrap();
            assert!(st.success(), "a service exited with {st}");
        }
    }
}

pub fn signal(child: &tokio::process::Child, sig: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(child.id().expect("child is running") as i32);
    nix::sys::signal::kill(pid, sig).unwrap();
}
