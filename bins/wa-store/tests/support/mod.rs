//! What wa-store's integration tests share: the files a store needs (dev PKI,
//! cluster map, cluster secret), its config, and a link client that speaks
//! `LinkUp`/`LinkDown` directly, as an edge would.

// Each test binary uses its own part of this module.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::link::{Append, LinkAuth, LinkDown, LinkUp, MAX_LINK_FRAME, link_down, link_up};
use common::proto::{Envelope, envelope::Content};
use common::wire::{BatchWriter, FrameReader, ReadError};
use tokio::io::{ReadHalf, WriteHalf};

/// How long a test waits for an answer the store owes it.
pub const PATIENCE: Duration = Duration::from_secs(30);
/// The cluster secret [`write_files`] writes.
pub const SECRET: [u8; 32] = [42; 32];

pub type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A store config for the files [`write_files`] put in `dir`; the database
/// goes to `dir/db`.
pub fn config_toml(dir: &Path, listen: &str, engine: &str) -> String {
    let d = dir.display();
    format!(
        "node = \"store-t\"\ndata_dir = \"{d}/db\"\nengine = \"{engine}\"\n[link]\nlisten = \"{listen}\"\ncert = \"{d}/cert.pem\"\nkey = \"{d}/key.pem\"\n[cluster]\nmap = \"{d}/cluster.toml\"\nsecret_file = \"{d}/secret\"\nca = \"{d}/ca.pem\"\n[shutdown]\ngrace = \"5s\"\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{d}/admin.token\"\n"
    )
}

/// Writes a dev PKI (`ca.pem`, `cert.pem`, `key.pem` for "localhost"), a
/// one-island cluster map and the cluster secret [`SECRET`] into `dir`.
pub fn write_files(dir: &Path) {
    common::tls::DevPki::generate(&["localhost"])
        .unwrap()
        .write_to(dir)
        .unwrap();
    let map =
        common::cluster::ClusterMap::single("127.0.0.1:1".parse().unwrap(), "localhost", [7; 16]);
    std::fs::write(dir.join("cluster.toml"), map.to_toml()).unwrap();
    common::fsutil::write_private(&dir.join("secret"), &SECRET).unwrap();
}

/// A TLS connection to the link listener at `addr`, trusting `dir/ca.pem`.
pub async fn tls(addr: SocketAddr, dir: &Path) -> std::io::Result<Tls> {
    let roots = common::tls::load_certs(&dir.join("ca.pem")).unwrap();
    let cfg = common::tls::client_config(&roots, &[common::link::LINK_ALPN]).unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
}

/// An envelope with a body, as an edge would send it.
pub fn envelope(from: &str, id: Bytes, body: Bytes) -> Envelope {
    Envelope {
        from: from.into(),
        from_device: 1,
        id,
        server_ts_ms: 0,
        content: Some(Content::Body(body)),
        ..Default::default()
    }
}

/// The sending half of a link.
pub struct LinkWriter {
    w: BatchWriter<WriteHalf<Tls>>,
}

impl LinkWriter {
    /// Adds a frame to the batch [`LinkWriter::flush`] sends (sends the batch
    /// early only when it is full), as an edge's link writer does.
    pub async fn queue(&mut self, k: link_up::Kind) -> std::io::Result<()> {
        self.w.push(&LinkUp { kind: Some(k) });
        if self.w.is_full() {
            self.w.send().await?;
        }
        Ok(())
    }

    pub async fn flush(&mut self) -> std::io::Result<()> {
        self.w.send().await
    }
}

/// The receiving half of a link.
pub struct LinkReader {
    r: FrameReader<ReadHalf<Tls>>,
}

impl LinkReader {
    /// The next frame; `None` once the store closed the link.
    pub async fn next(&mut self) -> Result<Option<link_down::Kind>, ReadError> {
        Ok(self
            .r
            .read::<LinkDown>()
            .await?
            .map(|d| d.kind.expect("decode_kinded refuses kindless frames")))
    }
}

/// A link as an edge holds it.
pub struct Link {
    pub r: LinkReader,
    pub w: LinkWriter,
}

impl Link {
    /// Connects and sends `Auth` with `secret`; does not wait for the answer.
    pub async fn connect(addr: SocketAddr, dir: &Path, secret: &[u8]) -> std::io::Result<Link> {
        let (r, w) = tokio::io::split(tls(addr, dir).await?);
        let mut l = Link {
            r: LinkReader {
                r: FrameReader::new(r, MAX_LINK_FRAME),
            },
            w: LinkWriter {
                w: BatchWriter::new(w),
            },
        };
        l.w.queue(link_up::Kind::Auth(LinkAuth {
            secret: Bytes::copy_from_slice(secret),
            edge: "test-edge".into(),
            epoch: 1,
            follow: None,
        }))
        .await?;
        l.w.flush().await?;
        Ok(l)
    }

    /// [`Link::connect`], panicking on failure.
    pub async fn open(addr: SocketAddr, dir: &Path, secret: &[u8]) -> Link {
        Link::connect(addr, dir, secret).await.unwrap()
    }

    /// Sends one frame and flushes, panicking on failure.
    pub async fn send(&mut self, k: link_up::Kind) {
        self.try_send(k).await.unwrap();
    }

    /// Sends one frame and flushes; the error if the link broke (a store
    /// that closed it, as one being promoted does).
    pub async fn try_send(&mut self, k: link_up::Kind) -> std::io::Result<()> {
        self.w.queue(k).await?;
        self.w.flush().await
    }

    /// The next frame within [`PATIENCE`]; `None` if the link closed or broke.
    pub async fn recv(&mut self) -> Option<link_down::Kind> {
        tokio::time::timeout(PATIENCE, self.r.next())
            .await
            .expect("store answers within patience")
            .ok()
            .flatten()
    }

    pub async fn append(&mut self, req: u64, to: &str, from: &str, id: u8, body: &'static [u8]) {
        self.send(link_up::Kind::Append(Append {
            req,
            to: to.into(),
            envelope: Some(envelope(
                from,
                Bytes::from(vec![id; 16]),
                Bytes::from_static(body),
            )),
            epoch: 1,
            handoff: false,
            from_generation: 0,
        }))
        .await;
    }

    pub fn split(self) -> (LinkReader, LinkWriter) {
        (self.r, self.w)
    }
}

/// Starts the real `wa-store` on the config file `cfg` (logs at `warn`) and
/// waits for its `READY` line: the process and its link address.
pub async fn spawn_store(cfg: &Path) -> (tokio::process::Child, SocketAddr) {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_wa-store"))
        .arg("--config")
        .arg(cfg)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = tokio::time::timeout(PATIENCE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(addr) = line.strip_prefix("READY wa-store link=") {
                return addr.split_whitespace().next().unwrap().parse().unwrap();
            }
        }
        panic!("wa-store exited before READY");
    })
    .await
    .expect("READY within patience");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addr)
}
