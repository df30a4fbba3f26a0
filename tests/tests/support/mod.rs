//! A real deployment for black-box tests: `wa-store` and `wa-chat` started in a
//! temp dir on port 0 (in-process through their `run()`, or `wa-store` as a
//! process when a test kills it), a dev PKI, a signing key, and clients built
//! with the real client library.

#![allow(dead_code)]

pub mod balancer;
pub mod cluster;
pub mod etcd;
pub mod groups;
pub mod netns;
pub mod proxy;
pub mod push;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::client::{Client, ClientConfig, Event, Events, Transport};
use common::cluster::ClusterMap;
use common::tls::DevPki;
use common::token::{TokenClaims, TokenSigner, keyfile};
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_util::sync::CancellationToken;

/// How long a test waits for something that should happen within milliseconds.
/// A bound on failure, never a readiness check.
pub const PATIENCE: Duration = Duration::from_secs(30);

pub struct Service {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

impl Service {
    /// Cancels the service and asserts that `run()` returned Ok.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let r = tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("service stops within patience");
        r.expect("service task did not panic")
            .expect("service run() returned Ok");
    }
}

/// A `wa-store` child process.
pub struct StoreProcess {
    pub child: tokio::process::Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
}

pub struct Deployment {
    pub dir: tempfile::TempDir,
    pub roots: Vec<CertificateDer<'static>>,
    signer: TokenSigner,
    pub link_addr: SocketAddr,
    pub chat_tcp: SocketAddr,
    pub chat_quic: SocketAddr,
    pub store: Option<Service>,
    pub store_process: Option<StoreProcess>,
    pub chat: Option<Service>,
}

pub fn write_pki(dir: &Path) -> TokenSigner {
    std::fs::create_dir_all(dir.join("pki")).unwrap();
    std::fs::create_dir_all(dir.join("keys")).unwrap();
    DevPki::generate(&["localhost", "127.0.0.1"])
        .unwrap()
        .write_to(&dir.join("pki"))
        .unwrap();
    let key = ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    common::fsutil::write_public(
        dir.join("keys/k1.pub"),
        keyfile::verifying_pem(&key.verifying_key()).as_bytes(),
    )
    .unwrap();
    common::fsutil::write_private(&dir.join("cluster.secret"), &rand::random::<[u8; 32]>())
        .unwrap();
    common::fsutil::write_private(
        &dir.join("admin.token"),
        hex::encode(rand::random::<[u8; 16]>()).as_bytes(),
    )
    .unwrap();
    TokenSigner::new("k1", key)
}

pub fn write_map(dir: &Path, link: SocketAddr) {
    let map = ClusterMap::single(link, "localhost", rand::random());
    std::fs::write(dir.join("cluster.toml"), map.to_toml()).unwrap();
}

pub fn store_toml(dir: &Path, listen: SocketAddr) -> String {
    let d = dir.display();
    format!(
        r#"node = "store-1"
data_dir = "{d}/store"
durability = "disk"
[link]
listen = "{listen}"
cert = "{d}/pki/cert.pem"
key = "{d}/pki/key.pem"
[cluster]
map = "{d}/cluster.toml"
secret_file = "{d}/cluster.secret"
[shutdown]
grace = "5s"
[admin]
listen = "127.0.0.1:0"
token_file = "{d}/admin.token"
"#
    )
}

pub fn chat_toml(dir: &Path) -> String {
    chat_toml_keys(dir, &["k1"])
}

/// wa-chat's config trusting the public keys `keys/<id>.pub` of `ids`.
fn chat_toml_keys(dir: &Path, ids: &[&str]) -> String {
    let d = dir.display();
    let keys = ids
        .iter()
        .map(|id| format!(r#"{{ id = "{id}", public_key = "{d}/keys/{id}.pub" }}"#))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"name = "chat-1"
[listen]
tcp = "127.0.0.1:0"
quic = "127.0.0.1:0"
[tls]
cert = "{d}/pki/cert.pem"
key = "{d}/pki/key.pem"
[tokens]
keys = [{keys}]
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

/// The directory holding the workspace's binaries (`target/debug`), found from
/// this test executable (`target/debug/deps/<test>`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf()
}

async fn start_store_inproc(dir: &Path) -> (Service, SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    write_map(dir, addr);
    let config: wa_store::Config = toml::from_str(&store_toml(dir, addr)).unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(wa_store::run(config, listener, shutdown.clone()));
    let task = tokio::spawn(async move { task.await.unwrap().map_err(|e| e.to_string()) });
    (Service { shutdown, task }, addr)
}

/// Starts `wa-store` as a process with `listen` (port 0 the first time) and
/// waits for its READY line.
pub async fn spawn_store_process(dir: &Path, listen: SocketAddr) -> StoreProcess {
    spawn_store_process_with(dir, listen, "", None, &[]).await
}

/// [`spawn_store_process`] with `extra` (TOML tables) appended to the
/// config, its log (stderr) appended to `log` if given, and `env` set.
pub async fn spawn_store_process_with(
    dir: &Path,
    listen: SocketAddr,
    extra: &str,
    log: Option<&Path>,
    env: &[(&str, &std::ffi::OsStr)],
) -> StoreProcess {
    let cfg = dir.join("wa-store.toml");
    std::fs::write(&cfg, store_toml(dir, listen) + extra).unwrap();
    let stderr = match log {
        Some(path) => Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .unwrap(),
        ),
        None => Stdio::inherit(),
    };
    let mut child = tokio::process::Command::new(bin_dir().join("wa-store"))
        .arg("--config")
        .arg(&cfg)
        .env("NO_COLOR", "1")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .expect("wa-store binary is built (cargo build --workspace)");
    let line = ready_line(&mut child, "wa-store").await;
    let addr = field(&line, "link").parse().unwrap();
    let admin = field(&line, "admin").parse().unwrap();
    StoreProcess { child, addr, admin }
}

/// Reads stdout of `child` up to its `READY <name> ...` line.
pub async fn ready_line(child: &mut tokio::process::Child, name: &str) -> String {
    ready_then(child, name, None).await
}

/// [`ready_line`], then also waits for a line starting with `then` (a
/// secondary's `CAUGHT-UP`).
pub async fn ready_then(
    child: &mut tokio::process::Child,
    name: &str,
    then: Option<&str>,
) -> String {
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let prefix = format!("READY {name} ");
    let line = tokio::time::timeout(PATIENCE, async {
        let mut ready = None;
        while let Some(l) = lines.next_line().await.unwrap() {
            if l.starts_with(&prefix) {
                ready = Some(l);
            } else if then.is_some_and(|t| l.starts_with(t)) && ready.is_some() {
                return ready.expect("checked");
            }
            if then.is_none()
                && let Some(r) = ready.take()
            {
                return r;
            }
        }
        panic!("{name} exited before READY (or {then:?})");
    })
    .await
    .expect("READY within patience");
    // Keep draining stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    line
}

pub fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .unwrap_or_else(|| panic!("{key}= missing in {line:?}"))
}

/// A `wa-chat` child process.
pub struct ChatProcess {
    pub child: tokio::process::Child,
    pub tcp: SocketAddr,
    pub quic: SocketAddr,
    pub admin: SocketAddr,
}

/// Starts `wa-chat` as a process on port 0 and waits for its READY line.
pub async fn spawn_chat_process(dir: &Path) -> ChatProcess {
    spawn_chat_process_with(dir, "").await
}

/// [`spawn_chat_process`] with `extra` (TOML tables) in its config.
pub async fn spawn_chat_process_with(dir: &Path, extra: &str) -> ChatProcess {
    spawn_chat_process_text(&dir.join("wa-chat.toml"), chat_toml(dir) + extra).await
}

/// wa-chat as a process with the configuration `text`, written to `cfg`.
pub async fn spawn_chat_process_text(cfg: &Path, text: String) -> ChatProcess {
    std::fs::write(cfg, text).unwrap();
    let mut child = tokio::process::Command::new(bin_dir().join("wa-chat"))
        .arg("--config")
        .arg(cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("wa-chat binary is built (cargo build --workspace)");
    let line = ready_line(&mut child, "wa-chat").await;
    ChatProcess {
        tcp: field(&line, "tcp").parse().unwrap(),
        quic: field(&line, "quic").parse().unwrap(),
        admin: field(&line, "admin").parse().unwrap(),
        child,
    }
}

pub async fn start_chat_inproc(dir: &Path, extra: &str) -> (Service, SocketAddr, SocketAddr) {
    start_chat_inproc_text(chat_toml(dir) + extra).await
}

async fn start_chat_inproc_text(text: String) -> (Service, SocketAddr, SocketAddr) {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config: wa_chat::Config = toml::from_str(&text).unwrap();
    // (`run` would refuse it too, but the test would only see its first
    // connection reset.)
    if let Err(e) = config.validate() {
        panic!("wa-chat refuses the test's configuration: {e}");
    }
    let quic = wa_chat::udp::bind("127.0.0.1:0".parse().unwrap(), config.quic.endpoints()).unwrap();
    let (ta, qa) = (tcp.local_addr().unwrap(), quic[0].local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let listeners = wa_chat::Listeners {
        tcp: Some(tcp),
        quic,
    };
    let task = tokio::spawn(wa_chat::run(config, listeners, shutdown.clone()));
    let task = tokio::spawn(async move { task.await.unwrap().map_err(|e| e.to_string()) });
    (Service { shutdown, task }, ta, qa)
}

impl Deployment {
    /// wa-store and wa-chat, both in-process.
    pub async fn start() -> Deployment {
        Deployment::start_with(|_| {}).await
    }

    /// Like [`Deployment::start`], with `tweak` appending TOML to wa-chat's config.
    pub async fn start_with(tweak: impl FnOnce(&mut String)) -> Deployment {
        let mut extra = String::new();
        tweak(&mut extra);
        let dir = tempfile::tempdir().unwrap();
        let signer = write_pki(dir.path());
        let chat = chat_toml(dir.path()) + &extra;
        Self::inproc(dir, signer, chat).await
    }

    /// Both services in process over `dir` (PKI written), wa-chat with the
    /// configuration `chat_text`.
    async fn inproc(dir: tempfile::TempDir, signer: TokenSigner, chat_text: String) -> Deployment {
        let (store, link_addr) = start_store_inproc(dir.path()).await;
        let (chat, chat_tcp, chat_quic) = start_chat_inproc_text(chat_text).await;
        let roots = common::tls::load_certs(&dir.path().join("pki/ca.pem")).unwrap();
        Deployment {
            dir,
            roots,
            signer,
            link_addr,
            chat_tcp,
            chat_quic,
            store: Some(store),
            store_process: None,
            chat: Some(chat),
        }
    }

    /// Like [`Deployment::start`], for signing-key rotation: a second key
    /// `k2` (`keys/k2.key`, `keys/k2.pub`) beside `k1`, and wa-chat trusting
    /// both.
    pub async fn start_rotating() -> Deployment {
        let dir = tempfile::tempdir().unwrap();
        let signer = write_pki(dir.path());
        let k2 = ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>());
        common::fsutil::write_public(
            dir.path().join("keys/k2.pub"),
            keyfile::verifying_pem(&k2.verifying_key()).as_bytes(),
        )
        .unwrap();
        common::fsutil::write_private(
            &dir.path().join("keys/k2.key"),
            keyfile::signing_pem(&k2).as_bytes(),
        )
        .unwrap();
        let chat = chat_toml_keys(dir.path(), &["k1", "k2"]);
        Self::inproc(dir, signer, chat).await
    }

    /// The public keys `keys/<id>.pub` of `ids`, to check who signed a token.
    pub fn key_ring(&self, ids: &[&str]) -> common::token::KeyRing {
        let mut ring = common::token::KeyRing::new();
        for id in ids {
            let path = self.dir.path().join(format!("keys/{id}.pub"));
            ring.insert(*id, keyfile::read_verifying(&path).unwrap());
        }
        ring
    }

    /// wa-store as a child process (so a test can kill -9 it), wa-chat in-process.
    /// Its log goes to `<dir>/wa-store.log`.
    pub async fn start_with_store_process() -> Deployment {
        Deployment::start_with_store_env("", |_| {}, &[]).await
    }

    /// wa-store as a child process with `extra` (TOML tables) in its
    /// config and its log in `<dir>/wa-store.log`, wa-chat in-process;
    /// `prepare` runs on the temp dir first (to mount a small file system
    /// on `<dir>/store`, the store's data_dir).
    pub async fn start_with_store_config(extra: &str, prepare: impl FnOnce(&Path)) -> Deployment {
        Deployment::start_with_store_env(extra, prepare, &[]).await
    }

    /// [`Deployment::start_with_store_config`], with `env` set for the store.
    pub async fn start_with_store_env(
        extra: &str,
        prepare: impl FnOnce(&Path),
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Deployment {
        let dir = tempfile::tempdir().unwrap();
        let signer = write_pki(dir.path());
        prepare(dir.path());
        write_map(dir.path(), "127.0.0.1:9".parse().unwrap());
        let log = dir.path().join("wa-store.log");
        let sp = spawn_store_process_with(
            dir.path(),
            "127.0.0.1:0".parse().unwrap(),
            extra,
            Some(&log),
            env,
        )
        .await;
        let link_addr = sp.addr;
        write_map(dir.path(), link_addr);
        let (chat, chat_tcp, chat_quic) = start_chat_inproc(dir.path(), "").await;
        let roots = common::tls::load_certs(&dir.path().join("pki/ca.pem")).unwrap();
        Deployment {
            dir,
            roots,
            signer,
            link_addr,
            chat_tcp,
            chat_quic,
            store: None,
            store_process: Some(sp),
            chat: Some(chat),
        }
    }

    /// wa-store as a child process inside the network namespace `ns`,
    /// listening on `at` (its end of a veth pair); wa-chat in-process
    /// outside, reaching it through that pair.
    pub async fn start_with_store_in(ns: &netns::Netns, at: std::net::Ipv4Addr) -> Deployment {
        let dir = tempfile::tempdir().unwrap();
        let signer = write_pki(dir.path());
        write_map(dir.path(), "127.0.0.1:9".parse().unwrap());
        let cfg = dir.path().join("wa-store.toml");
        std::fs::write(&cfg, store_toml(dir.path(), SocketAddr::new(at.into(), 0))).unwrap();
        let mut child = ns
            .command(&bin_dir().join("wa-store"))
            .arg("--config")
            .arg(&cfg)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("wa-store binary is built (cargo build --workspace)");
        let line = ready_line(&mut child, "wa-store").await;
        let sp = StoreProcess {
            addr: field(&line, "link").parse().unwrap(),
            admin: field(&line, "admin").parse().unwrap(),
            child,
        };
        let link_addr = sp.addr;
        write_map(dir.path(), link_addr);
        let (chat, chat_tcp, chat_quic) = start_chat_inproc(dir.path(), "").await;
        let roots = common::tls::load_certs(&dir.path().join("pki/ca.pem")).unwrap();
        Deployment {
            dir,
            roots,
            signer,
            link_addr,
            chat_tcp,
            chat_quic,
            store: None,
            store_process: Some(sp),
            chat: Some(chat),
        }
    }

    pub fn token(&self, user: &str) -> String {
        self.token_expiring(user, now_secs() + 3600)
    }

    pub fn token_expiring(&self, user: &str, expires_at: u64) -> String {
        self.signer.sign(TokenClaims {
            user: user.into(),
            device: 1,
            generation: 1,
            expires_at,
            key_id: String::new(),
            issued_at: now_secs(),
            account: String::new(),
        })
    }

    pub fn addr(&self, transport: &Transport) -> SocketAddr {
        match transport {
            Transport::Tcp => self.chat_tcp,
            Transport::Quic => self.chat_quic,
        }
    }

    pub fn client_config(&self, user: &str, transport: Transport) -> ClientConfig {
        let addr = self.addr(&transport);
        let mut cfg = ClientConfig::new(
            addr,
            transport,
            "localhost".into(),
            self.roots.clone(),
            self.token(user),
        );
        cfg.backoff_initial = Duration::from_millis(20);
        cfg.backoff_max = Duration::from_millis(500);
        cfg
    }

    pub async fn client(&self, user: &str, transport: Transport) -> (Client, Events) {
        Client::connect(self.client_config(user, transport))
            .await
            .expect("client connects")
    }

    /// Both services as child processes, for signal and exit-code tests.
    pub async fn start_processes() -> (Deployment, ChatProcess) {
        Deployment::start_processes_with("").await
    }

    /// [`Deployment::start_processes`] with `chat_extra` (TOML tables) in
    /// wa-chat's config.
    pub async fn start_processes_with(chat_extra: &str) -> (Deployment, ChatProcess) {
        Deployment::start_processes_configured("", chat_extra).await
    }

    /// [`Deployment::start_processes`] with `store_extra` and `chat_extra`
    /// (TOML tables) in wa-store's and wa-chat's configs.
    pub async fn start_processes_configured(
        store_extra: &str,
        chat_extra: &str,
    ) -> (Deployment, ChatProcess) {
        let dir = tempfile::tempdir().unwrap();
        let signer = write_pki(dir.path());
        write_map(dir.path(), "127.0.0.1:9".parse().unwrap());
        let sp = spawn_store_process_with(
            dir.path(),
            "127.0.0.1:0".parse().unwrap(),
            store_extra,
            None,
            &[],
        )
        .await;
        let link_addr = sp.addr;
        write_map(dir.path(), link_addr);
        let cp = spawn_chat_process_with(dir.path(), chat_extra).await;
        let roots = common::tls::load_certs(&dir.path().join("pki/ca.pem")).unwrap();
        let d = Deployment {
            dir,
            roots,
            signer,
            link_addr,
            chat_tcp: cp.tcp,
            chat_quic: cp.quic,
            store: None,
            store_process: Some(sp),
            chat: None,
        };
        (d, cp)
    }

    /// Stops wa-chat then wa-store, asserting both return Ok.
    pub async fn stop(mut self) {
        if let Some(c) = self.chat.take() {
            c.stop().await;
        }
        if let Some(s) = self.store.take() {
            s.stop().await;
        }
        if let Some(mut p) = self.store_process.take() {
            sigterm(&p.child);
            let st = tokio::time::timeout(PATIENCE, p.child.wait())
                .await
                .unwrap()
                .unwrap();
            assert!(st.success(), "wa-store exited with {st}");
        }
    }
}

pub fn sigterm(child: &tokio::process::Child) {
    let pid = nix::unistd::Pid::from_raw(child.id().expect("child is running") as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
}

pub fn now_secs() -> u64 {
    common::fsutil::now_ms() / 1000
}

/// Waits for the next event that `f` maps to `Some`, skipping presence,
/// typing, connection and retry events; any other unexpected event fails
/// the test.
pub async fn expect<T>(
    events: &mut Events,
    what: &str,
    mut f: impl FnMut(&Event) -> Option<T>,
) -> T {
    tokio::time::timeout(PATIENCE, async {
        loop {
            let e = events
                .next()
                .await
                .unwrap_or_else(|| panic!("events ended while waiting for {what}"));
            if let Some(t) = f(&e) {
                return t;
            }
            match e {
                Event::Presence { .. }
                | Event::Typing { .. }
                | Event::Connected { .. }
                | Event::Disconnected { .. }
                | Event::Waiting { .. }
                | Event::Retrying { .. } => {}
                other => panic!("while waiting for {what}: unexpected {other:?}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// The next message: (seq, from, id, body).
pub async fn next_message(
    events: &mut Events,
) -> (u64, String, common::client::MessageId, bytes::Bytes) {
    expect(events, "a message", |e| match e {
        Event::Message {
            seq,
            from,
            id,
            body,
            ..
        } => Some((*seq, from.clone(), *id, body.clone())),
        _ => None,
    })
    .await
}

/// wa-media's `revocation.recheck_after` in tests: a revoked device is
/// refused at most this long after its revocation.
pub const MEDIA_RECHECK: Duration = Duration::from_secs(2);

/// A `wa-media` node started in-process on port 0 beside a deployment, with
/// the deployment's PKI and token key.
pub struct MediaNode {
    pub service: Service,
    pub addr: SocketAddr,
}

impl Deployment {
    /// Starts `wa-media` (node `m1`, data in `<dir>/media`) in-process.
    pub async fn start_media(&self) -> MediaNode {
        self.start_media_with("").await
    }

    /// Like [`Self::start_media`], `extra` TOML tables appended to its config.
    pub async fn start_media_with(&self, extra: &str) -> MediaNode {
        let text = self.media_toml() + extra;
        let config: wa_media::Config = toml::from_str(&text).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(wa_media::run(config, listener, shutdown.clone()));
        let task = tokio::spawn(async move { task.await.unwrap().map_err(|e| e.to_string()) });
        MediaNode {
            service: Service { shutdown, task },
            addr,
        }
    }

    /// wa-media's config: node `m1`, data in `<dir>/media`, port 0.
    pub fn media_toml(&self) -> String {
        let d = self.dir.path().display();
        format!(
            r#"node = "m1"
data_dir = "{d}/media"
[listen]
https = "127.0.0.1:0"
[tls]
cert = "{d}/pki/cert.pem"
key = "{d}/pki/key.pem"
[tokens]
keys = [{{ id = "k1", public_key = "{d}/keys/k1.pub" }}]
[cluster]
map = "{d}/cluster.toml"
ca = "{d}/pki/ca.pem"
secret_file = "{d}/cluster.secret"
[revocation]
recheck_after = "{recheck}ms"
[shutdown]
grace = "5s"
[admin]
listen = "127.0.0.1:0"
token_file = "{d}/admin.token"
"#,
            recheck = MEDIA_RECHECK.as_millis(),
        )
    }

    /// A media client with `token` that knows the node `m1` at `media.addr`.
    pub fn media_client_with_token(
        &self,
        token: &str,
        media: &MediaNode,
    ) -> common::client::MediaClient {
        let node = common::client::MediaNode {
            name: "m1".into(),
            addr: media.addr,
            server_name: "localhost".into(),
        };
        common::client::MediaClient::new(common::client::MediaConfig::new(
            vec![node],
            self.roots.clone(),
            token.to_owned(),
        ))
        .expect("media client")
    }

    /// A media client for `user` that knows the node `m1` at `media.addr`.
    pub fn media_client(&self, user: &str, media: &MediaNode) -> common::client::MediaClient {
        let node = common::client::MediaNode {
            name: "m1".into(),
            addr: media.addr,
            server_name: "localhost".into(),
        };
        common::client::MediaClient::new(common::client::MediaConfig::new(
            vec![node],
            self.roots.clone(),
            self.token(user),
        ))
        .expect("media client")
    }
}

/// A `wa-register` node started in-process on port 0 beside a deployment:
/// development mode, the `log` SMS provider writing to `codes`, signing with
/// the deployment's key `k1` (the one wa-chat trusts).
pub struct RegisterNode {
    pub service: Service,
    pub addr: SocketAddr,
    /// Where the `log` provider appends `NUMBER CODE` lines.
    pub codes: PathBuf,
}

impl Deployment {
    /// The config of a `wa-register` beside this deployment (writing its
    /// signing key and PIN pepper files); `extra` is TOML tables appended
    /// (e.g. `"[codes]\nttl = \"1ms\"\n"`). Codes go to [`Self::register_codes`].
    pub fn register_toml(&self, extra: &str) -> String {
        let dd = self.dir.path().display();
        self.register_toml_tokens(
            extra,
            &format!("key_id = \"k1\"\nsigning_key = \"{dd}/keys/k1.key\"\n"),
        )
    }

    /// [`Self::register_toml`] with `tokens` as the body of its `[tokens]`
    /// table.
    fn register_toml_tokens(&self, extra: &str, tokens: &str) -> String {
        register_toml_at(self.dir.path(), &self.signer, extra, tokens)
    }

    /// Where the `log` SMS provider of [`Self::register_toml`] writes codes.
    pub fn register_codes(&self) -> PathBuf {
        self.dir.path().join("register/codes.log")
    }

    /// Starts `wa-register` in-process with [`Self::register_toml`].
    pub async fn start_register(&self, extra: &str) -> RegisterNode {
        self.start_register_text(self.register_toml(extra)).await
    }

    /// Starts `wa-register` signing with `keys/<key_id>.key` and refreshing
    /// tokens of the keys `verify` too (`tokens.verify_keys`), as during a
    /// rotation ([`Deployment::start_rotating`] writes `k2`).
    pub async fn start_register_signing(
        &self,
        key_id: &str,
        verify: &[&str],
        extra: &str,
    ) -> RegisterNode {
        let dd = self.dir.path().display();
        let verify_keys = verify
            .iter()
            .map(|id| format!(r#"{{ id = "{id}", public_key = "{dd}/keys/{id}.pub" }}"#))
            .collect::<Vec<_>>()
            .join(", ");
        let tokens = format!(
            "key_id = \"{key_id}\"\nsigning_key = \"{dd}/keys/{key_id}.key\"\nverify_keys = [{verify_keys}]\n"
        );
        // The k1 private key file is written by register_toml_tokens.
        let text = self.register_toml_tokens(extra, &tokens);
        self.start_register_text(text).await
    }

    async fn start_register_text(&self, text: String) -> RegisterNode {
        start_register_app_at(self.dir.path(), text).await.0
    }

    /// Starts `wa-register` in-process with [`Self::register_toml`] and
    /// gives its shared state too (for the test-only faults of
    /// `wa_register::revoke::Faults`).
    pub async fn start_register_with_app(
        &self,
        extra: &str,
    ) -> (RegisterNode, std::sync::Arc<wa_register::App>) {
        start_register_app_at(self.dir.path(), self.register_toml(extra)).await
    }

    /// A registration client of `node`.
    pub fn register_client(&self, node: &RegisterNode) -> common::client::RegisterClient {
        common::client::RegisterClient::new(common::client::RegisterConfig::new(
            node.addr,
            "localhost".into(),
            self.roots.clone(),
        ))
        .expect("register client")
    }

    /// A chat client config for a credential issued by wa-register.
    pub fn client_config_with_token(&self, token: &str, transport: Transport) -> ClientConfig {
        let addr = self.addr(&transport);
        let mut cfg = ClientConfig::new(
            addr,
            transport,
            "localhost".into(),
            self.roots.clone(),
            token.to_owned(),
        );
        cfg.backoff_initial = Duration::from_millis(20);
        cfg.backoff_max = Duration::from_millis(500);
        cfg
    }
}

/// The config of a `wa-register` in the deployment directory `d`, signing
/// with `signer`'s key as `k1` (its file written here); `tokens` is the body
/// of its `[tokens]` table, `extra` TOML tables appended.
pub fn register_toml_at(d: &Path, signer: &TokenSigner, extra: &str, tokens: &str) -> String {
    common::fsutil::write_private(
        &d.join("keys/k1.key"),
        keyfile::signing_pem(signer.signing_key()).as_bytes(),
    )
    .unwrap();
    if !d.join("pin.pepper").exists() {
        common::fsutil::write_private(&d.join("pin.pepper"), &rand::random::<[u8; 32]>()).unwrap();
    }
    let codes = d.join("register/codes.log");
    let dd = d.display();
    // A test that sets [pin] keys gets the pepper line added to its table.
    let pepper = format!("pepper_file = \"{dd}/pin.pepper\"\n");
    let (pin, extra) = match extra.split_once("[pin]\n") {
        Some((before, after)) => (String::new(), format!("{before}[pin]\n{pepper}{after}")),
        None => (format!("[pin]\n{pepper}"), extra.to_owned()),
    };
    format!(
        r#"name = "register-t"
mode = "development"
[listen]
https = "127.0.0.1:0"
[tls]
cert = "{dd}/pki/cert.pem"
key = "{dd}/pki/key.pem"
[cluster]
map = "{dd}/cluster.toml"
ca = "{dd}/pki/ca.pem"
secret_file = "{dd}/cluster.secret"
[tokens]
{tokens}{pin}[shutdown]
grace = "5s"
[admin]
listen = "127.0.0.1:0"
token_file = "{dd}/admin.token"
[sms]
provider = "log"
[sms.log]
file = "{}"
{extra}"#,
        codes.display()
    )
}

/// Starts `wa-register` in-process with the config `text`, for the
/// deployment directory `d` (its `log` provider writing codes to
/// `d/register/codes.log`).
pub async fn start_register_at(d: &Path, text: String) -> RegisterNode {
    start_register_app_at(d, text).await.0
}

/// [`start_register_at`], giving the service's shared state too.
pub async fn start_register_app_at(
    d: &Path,
    text: String,
) -> (RegisterNode, std::sync::Arc<wa_register::App>) {
    start_register_bound(d, text, "127.0.0.1:0".parse().unwrap()).await
}

/// [`start_register_app_at`], listening on `bind`.
pub async fn start_register_bound(
    d: &Path,
    text: String,
    bind: SocketAddr,
) -> (RegisterNode, std::sync::Arc<wa_register::App>) {
    let codes = d.join("register/codes.log");
    let config: wa_register::Config = toml::from_str(&text).unwrap();
    config.check_files().unwrap();
    let listener = tokio::net::TcpListener::bind(bind).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let register = wa_register::Register::start(config, &shutdown)
        .await
        .unwrap();
    let app = register.app();
    let task = tokio::spawn(register.serve(listener, shutdown.clone()));
    let task = tokio::spawn(async move { task.await.unwrap().map_err(|e| e.to_string()) });
    let node = RegisterNode {
        service: Service { shutdown, task },
        addr,
        codes,
    };
    (node, app)
}

impl RegisterNode {
    /// The last code the `log` provider wrote for `number`.
    pub fn last_code(&self, number: &str) -> Option<String> {
        let text = std::fs::read_to_string(&self.codes).ok()?;
        text.lines()
            .rev()
            .filter_map(|l| l.split_once(' '))
            .find(|(n, _)| *n == number)
            .map(|(_, c)| c.to_owned())
    }

    /// How many codes the `log` provider wrote.
    pub fn codes_sent(&self) -> usize {
        std::fs::read_to_string(&self.codes)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    }
}

/// A `wa-register` child process.
pub struct RegisterProcess {
    pub child: tokio::process::Child,
    pub node_addr: SocketAddr,
    /// The admin listener (`/metrics`), when the config sets `admin.listen`.
    pub admin_addr: Option<SocketAddr>,
}

impl Deployment {
    /// Starts `wa-register` as a process with [`Self::register_toml`] and
    /// waits for its READY line; its stderr (the log) goes to `log`.
    pub async fn spawn_register_process(&self, extra: &str, log: &Path) -> RegisterProcess {
        let cfg = self.dir.path().join("wa-register.toml");
        std::fs::write(&cfg, self.register_toml(extra)).unwrap();
        let mut child = tokio::process::Command::new(bin_dir().join("wa-register"))
            .arg("--config")
            .arg(&cfg)
            .env("RUST_LOG", "debug")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("wa-register binary is built (cargo build --workspace)");
        let line = ready_line(&mut child, "wa-register").await;
        RegisterProcess {
            node_addr: field(&line, "http").parse().unwrap(),
            admin_addr: line
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix("admin="))
                .map(|a| a.parse().unwrap()),
            child,
        }
    }

    /// A registration client of a wa-register at `addr`.
    pub fn register_client_at(&self, addr: SocketAddr) -> common::client::RegisterClient {
        common::client::RegisterClient::new(common::client::RegisterConfig::new(
            addr,
            "localhost".into(),
            self.roots.clone(),
        ))
        .expect("register client")
    }
}

/// The body of an authenticated `GET` of `path` at the admin listener
/// `addr` of a service whose config names `dir/admin.token`.
pub async fn admin_get(dir: &Path, addr: SocketAddr, path: &str) -> String {
    let token = std::fs::read(dir.join("admin.token")).unwrap();
    let a = common::admin::client::request(addr, http::Method::GET, path, Some(&token))
        .await
        .expect("the admin listener answers");
    assert_eq!(a.status, 200, "{}", a.text());
    a.text()
}

/// The value of counter `name` in a Prometheus text page.
pub fn counter(page: &str, name: &str) -> u64 {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} is not in\n{page}"))
}

/// Signs `number` up at `node` through `rc` (code from the `log` provider's
/// file), naming the device `device`, with `pin` if the number is locked.
pub async fn sign_up(
    rc: &common::client::RegisterClient,
    node: &RegisterNode,
    number: &str,
    device: &str,
    pin: Option<&str>,
) -> Result<common::client::Registered, common::client::RegisterError> {
    let v = code_for(rc, node, number).await;
    rc.verify(&common::client::Verify {
        device_name: Some(device.into()),
        pin: pin.map(String::from),
        ..v
    })
    .await
}

/// Asks for a code for `number` and gives the verification of it: the
/// number, the request's session and the code the `log` provider wrote
/// (the device and PIN left for the caller).
pub async fn code_for(
    rc: &common::client::RegisterClient,
    node: &RegisterNode,
    number: &str,
) -> common::client::Verify {
    let sent = rc.request_code(number).await.unwrap();
    assert_eq!(sent.length, 6);
    common::client::Verify {
        number: number.into(),
        session: sent.session,
        code: node
            .last_code(number)
            .expect("the log provider wrote a code"),
        ..common::client::Verify::default()
    }
}

/// How many codes the `log` provider of `d`'s wa-register wrote.
pub fn codes_sent_at(d: &Deployment) -> usize {
    std::fs::read_to_string(d.register_codes())
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

/// Writes `dir/wactl.toml`: the admin token `dir/admin.token` and these
/// nodes (name, service, admin listener).
pub fn write_node_list(dir: &Path, nodes: &[(&str, &str, SocketAddr)]) {
    let mut text = format!("token_file = \"{}\"\n", dir.join("admin.token").display());
    for (name, service, admin) in nodes {
        text +=
            &format!("[[node]]\nname = \"{name}\"\nservice = \"{service}\"\nadmin = \"{admin}\"\n");
    }
    std::fs::write(dir.join("wactl.toml"), text).unwrap();
}

/// Runs the real `wactl` with `args` (within a bound): its exit status, its
/// stdout as JSON (`Null` if it is not), its stderr.
pub async fn wactl<S: AsRef<std::ffi::OsStr>>(
    args: &[S],
) -> (std::process::ExitStatus, serde_json::Value, String) {
    let out = tokio::time::timeout(
        PATIENCE * 4,
        tokio::process::Command::new(bin_dir().join("wactl"))
            .args(args)
            .output(),
    )
    .await
    .expect("wactl returns within patience")
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let doc = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status, doc, stderr)
}
