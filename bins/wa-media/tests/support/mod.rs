//! A wa-media node for tests: a temp dir with a dev PKI and a token key,
//! `wa_media::run` on port 0, the real client library, and a raw HTTPS
//! request helper for what the library will not send.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::client::{MediaClient, MediaConfig, MediaNode};
use common::token::{TokenClaims, TokenSigner, keyfile};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// A bound on failure, never a readiness check.
pub const PATIENCE: Duration = Duration::from_secs(30);

pub struct Node {
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    pub roots: Vec<CertificateDer<'static>>,
    pub signer: TokenSigner,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), wa_media::MediaError>>,
}

pub fn now_secs() -> u64 {
    common::fsutil::now_ms() / 1000
}

/// Starts a node named `m1`; `extra` is TOML appended to its config (whole
/// sections, e.g. "[limits]\nmax_blob_size = \"1 MiB\"\n").
pub async fn start(extra: &str) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    common::tls::DevPki::generate(&["localhost", "127.0.0.1"])
        .unwrap()
        .write_to(d)
        .unwrap();
    let key = ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    common::fsutil::write_public(
        d.join("k1.pub"),
        keyfile::verifying_pem(&key.verifying_key()).as_bytes(),
    )
    .unwrap();
    let text = format!(
        r#"node = "m1"
data_dir = "{d}/data"
[listen]
https = "127.0.0.1:0"
[tls]
cert = "{d}/cert.pem"
key = "{d}/key.pem"
[tokens]
keys = [{{ id = "k1", public_key = "{d}/k1.pub" }}]
[shutdown]
grace = "5s"
[revocation]
# (No homes in this test: tokens are trusted until they expire.)
check = false
[admin]
listen = "127.0.0.1:0"
token_file = "{d}/admin.token"
{extra}"#,
        d = d.display()
    );
    let config: wa_media::Config = toml::from_str(&text).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(wa_media::run(config, listener, shutdown.clone()));
    let roots = common::tls::load_certs(&d.join("ca.pem")).unwrap();
    Node {
        dir,
        addr,
        roots,
        signer: TokenSigner::new("k1", key),
        shutdown,
        task,
    }
}

impl Node {
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
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

    pub fn client(&self, user: &str) -> MediaClient {
        let node = MediaNode {
            name: "m1".into(),
            addr: self.addr,
            server_name: "localhost".into(),
        };
        MediaClient::new(MediaConfig::new(
            vec![node],
            self.roots.clone(),
            self.token(user),
        ))
        .unwrap()
    }

    /// Opens a TLS connection to the node.
    pub async fn connect(&self) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let cfg = common::tls::client_config(&self.roots, &[b"http/1.1"]).unwrap();
        let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap()
    }

    /// Sends `head` (request line and headers, without the blank line; a
    /// `Host` and `Connection: close` are added) and `body`, and reads the
    /// whole answer.
    pub async fn raw(&self, head: &str, body: &[u8]) -> Answer {
        let mut tls = self.connect().await;
        let req = format!("{head}\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        tls.write_all(req.as_bytes()).await.unwrap();
        tls.write_all(body).await.unwrap();
        tls.flush().await.unwrap();
        read_answer(&mut tls).await
    }

    /// A GET (or other bodiless request) with `user`'s token and extra header lines.
    pub async fn get(&self, method: &str, path: &str, user: &str, headers: &[&str]) -> Answer {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nAuthorization: Bearer {}",
            self.token(user)
        );
        for h in headers {
            head.push_str("\r\n");
            head.push_str(h);
        }
        self.raw(&head, b"").await
    }

    /// Files under the data directory's `blobs/`, and under `tmp/`.
    pub fn files(&self) -> (Vec<PathBuf>, Vec<PathBuf>) {
        (
            walk(&self.data().join("blobs")),
            walk(&self.data().join("tmp")),
        )
    }

    /// Starts the shutdown without waiting for it.
    pub fn begin_stop(&self) {
        self.shutdown.cancel();
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let r = tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("wa-media stops within patience");
        r.unwrap().expect("run() returned Ok");
    }
}

pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `error` code of a JSON error body.
    pub fn code(&self) -> String {
        let v: serde_json::Value = serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("JSON error body, got {:?}", self.body));
        v["error"].as_str().unwrap().to_string()
    }
}

/// Reads an HTTP/1.1 answer up to the end of the connection.
pub async fn read_answer<R: tokio::io::AsyncRead + Unpin>(r: &mut R) -> Answer {
    let mut all = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        let mut buf = [0u8; 65536];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("answer within patience");
    let end = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete head in {:?}", String::from_utf8_lossy(&all)));
    let head = String::from_utf8(all[..end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Answer {
        status,
        headers,
        body: all[end + 4..].to_vec(),
    }
}

pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    for chunk in v.chunks_mut(32) {
        let r: [u8; 32] = rand::random();
        chunk.copy_from_slice(&r[..chunk.len()]);
    }
    v
}

/// Polls `f` until it holds, failing the test after [`PATIENCE`].
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
