//! wa-media benchmark (docs/BENCHMARKS.md, "Media"): starts the release
//! `wa-media` binary as its own process on loopback and measures, with the
//! real client library (a new TLS connection per request, as phones do):
//!
//! - upload and download throughput of 1 MiB and 50 MiB blobs, sequential;
//! - 1,000 concurrent downloads of one 1 MiB blob (requests/s, p50/p99), with
//!   the hot-blob cache on and off;
//! - the node's RSS sampled every 50 ms during a 1 GiB streamed upload.
//!
//! Run: `cargo bench -p wa-media --bench media` (add `-- quick` for a smoke run).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::client::{MediaClient, MediaConfig, MediaNode};
use common::token::{TokenClaims, TokenSigner, keyfile};
use tokio::io::{AsyncRead, ReadBuf};

const MIB: usize = 1024 * 1024;

struct Server {
    child: Child,
    addr: std::net::SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

fn binary() -> PathBuf {
    // target/release/deps/media-<hash> -> target/release/wa-media
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = dir.join("wa-media");
    assert!(
        bin.exists(),
        "{} missing: cargo build --release -p wa-media",
        bin.display()
    );
    bin
}

fn start(dir: &Path, cache: &str) -> Server {
    let d = dir.display();
    let cfg = dir.join(format!("wa-media-{}.toml", cache.replace(' ', "")));
    std::fs::write(
        &cfg,
        format!(
            r#"node = "m1"
data_dir = "{d}/data"
[listen]
https = "127.0.0.1:0"
[tls]
cert = "{d}/cert.pem"
key = "{d}/key.pem"
[tokens]
keys = [{{ id = "k1", public_key = "{d}/k1.pub" }}]
[limits]
max_blob_size = "2 GiB"
quota_per_day = "1000 GiB"
uploads_per_minute = 100000
max_uploads_per_user = 1000
[revocation]
check = false
[cache]
memory = "{cache}"
max_blob = "{max_blob}"
"#,
            max_blob = if cache == "0 B" { "0 B" } else { "1 MiB" }
        ),
    )
    .unwrap();
    let mut child = Command::new(binary())
        .arg("--config")
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .split_whitespace()
        .find_map(|f| f.strip_prefix("http="))
        .unwrap_or_else(|| panic!("no READY line: {line:?}"))
        .parse()
        .unwrap();
    Server { child, addr }
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// `len` bytes of a repeating pseudo-random pattern, never all in memory.
struct Pattern {
    left: u64,
    block: Arc<Vec<u8>>,
    pos: usize,
}

impl AsyncRead for Pattern {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = (buf.remaining() as u64).min(self.left) as usize;
        let n = n.min(self.block.len() - self.pos);
        let start = self.pos;
        buf.put_slice(&self.block[start..start + n]);
        self.pos = (self.pos + n) % self.block.len();
        self.left -= n as u64;
        Poll::Ready(Ok(()))
    }
}

fn random(n: usize) -> Vec<u8> {
    (0..n).map(|_| rand::random::<u8>()).collect()
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

async fn throughput(client: &MediaClient, size: usize, rounds: usize) {
    let mut handles = Vec::new();
    let mut up = Duration::ZERO;
    for _ in 0..rounds {
        let data = Bytes::from(random(size));
        let t = Instant::now();
        let r = client.upload(data, None).await.unwrap();
        up += t.elapsed();
        handles.push(r.handle);
    }
    let mut down = Duration::ZERO;
    for h in &handles {
        let t = Instant::now();
        let b = client.download(h).await.unwrap();
        down += t.elapsed();
        assert_eq!(b.len(), size);
    }
    let total = (size * rounds) as f64 / MIB as f64;
    println!(
        "| {} MiB x {rounds} | upload {:.0} MiB/s ({} per blob) | download {:.0} MiB/s ({} per blob) |",
        size / MIB,
        total / up.as_secs_f64(),
        ms(up / rounds as u32),
        total / down.as_secs_f64(),
        ms(down / rounds as u32),
    );
}

async fn fan_out(client: &MediaClient, handle: &str, n: usize, label: &str) {
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let (c, h) = (client.clone(), handle.to_string());
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = c.download(&h).await;
            (t.elapsed(), r.map(|b| b.len()))
        }));
    }
    let mut lat = Vec::with_capacity(n);
    let mut failed = 0;
    for t in tasks {
        let (d, r) = t.await.unwrap();
        match r {
            Ok(len) if len == MIB => lat.push(d),
            Ok(len) => panic!("short download: {len}"),
            Err(e) => {
                failed += 1;
                if failed < 3 {
                    eprintln!("download failed: {e}");
                }
            }
        }
    }
    let wall = start.elapsed();
    lat.sort();
    println!(
        "| {label} | {n} | {failed} | {:.2} s | {:.0} req/s | {:.0} MiB/s | {} | {} | {} |",
        wall.as_secs_f64(),
        lat.len() as f64 / wall.as_secs_f64(),
        lat.len() as f64 / wall.as_secs_f64(),
        ms(pct(&lat, 0.5)),
        ms(pct(&lat, 0.99)),
        ms(*lat.last().unwrap()),
    );
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    common::tls::DevPki::generate(&["localhost"])
        .unwrap()
        .write_to(d)
        .unwrap();
    let key = ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    common::fsutil::write_public(
        d.join("k1.pub"),
        keyfile::verifying_pem(&key.verifying_key()).as_bytes(),
    )
    .unwrap();
    let now = common::fsutil::now_ms() / 1000;
    let token = TokenSigner::new("k1", key).sign(TokenClaims {
        user: "bench".into(),
        device: 1,
        generation: 1,
        expires_at: now + 3600,
        key_id: String::new(),
        issued_at: now,
        account: String::new(),
    });
    let roots = common::tls::load_certs(&d.join("ca.pem")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client_for = |addr| {
        MediaClient::new(MediaConfig::new(
            vec![MediaNode {
                name: "m1".into(),
                addr,
                server_name: "localhost".into(),
            }],
            roots.clone(),
            token.clone(),
        ))
        .unwrap()
    };
    println!("load average before: {}", loadavg());

    let server = start(d, "256 MiB");
    let client = client_for(server.addr);
    rt.block_on(async {
        println!("\n| blob | upload | download |\n|---|---|---|");
        throughput(&client, MIB, if quick { 5 } else { 50 }).await;
        throughput(&client, 50 * MIB, if quick { 1 } else { 5 }).await;
        println!("load average: {}", loadavg());
    });

    let n = if quick { 100 } else { 1000 };
    let blob = Bytes::from(random(MIB));
    println!(
        "\n| cache | downloads | failed | wall | requests/s | MiB/s | p50 | p99 | max |\n|---|---|---|---|---|---|---|---|---|"
    );
    let handle = rt.block_on(async {
        let h = client.upload(blob.clone(), None).await.unwrap().handle;
        fan_out(&client, &h, n, "on (256 MiB)").await;
        h
    });
    drop(server);
    let server = start(d, "0 B");
    let client = client_for(server.addr);
    rt.block_on(fan_out(&client, &handle, n, "off"));
    println!("load average: {}", loadavg());

    // RSS during a 1 GiB upload, sampled every 50 ms.
    let gib: u64 = if quick { 256 << 20 } else { 1 << 30 };
    let pid = server.child.id();
    let before = rss_kib(pid);
    let block = Arc::new(random(4 * MIB));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                samples.push(rss_kib(pid));
                std::thread::sleep(Duration::from_millis(50));
            }
            samples
        })
    };
    let t = Instant::now();
    let r = rt.block_on(client.upload_reader(
        Pattern {
            left: gib,
            block,
            pos: 0,
        },
        gib,
        None,
    ));
    let took = t.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let samples = sampler.join().unwrap();
    let r = r.unwrap();
    assert_eq!(r.size, gib);
    let max = samples.iter().max().copied().unwrap_or(0);
    let n = samples.len();
    let quart = |i: usize| samples[(n - 1) * i / 4];
    println!(
        "\n{} MiB streamed upload in {:.1} s ({:.0} MiB/s): node RSS before {} MiB; during: {} samples, at 0/25/50/75/100 % {} / {} / {} / {} / {} MiB, max {} MiB",
        gib >> 20,
        took.as_secs_f64(),
        (gib >> 20) as f64 / took.as_secs_f64(),
        before / 1024,
        n,
        quart(0) / 1024,
        quart(1) / 1024,
        quart(2) / 1024,
        quart(3) / 1024,
        quart(4) / 1024,
        max / 1024
    );
    println!("load average after: {}", loadavg());
}
