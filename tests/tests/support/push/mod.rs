//! Fake push providers on loopback ports, speaking each provider's API
//! shape: [`apns`] (HTTP/2, ES256 provider tokens), [`fcm`] (HTTP v1 with
//! the OAuth 2 service-account grant), [`unifiedpush`] (RFC 8291 Web Push,
//! decrypted with the device's keys). Each checks every request as the
//! provider would, records what it took, and answers from a script (success
//! once the script is empty). A check that fails is recorded in `problems`
//! and answered as the provider would refuse it; tests assert none.

pub mod apns;
pub mod devices;
pub mod fcm;
pub mod unifiedpush;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// One scripted answer: status, extra headers, body.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl Reply {
    pub fn new(status: u16, body: &str) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: body.to_owned(),
        }
    }

    pub fn retry_after(mut self, secs: u64) -> Reply {
        self.headers.push(("retry-after", secs.to_string()));
        self
    }

    /// `Retry-After` as an HTTP-date (RFC 9110, section 10.2.3).
    pub fn retry_at(mut self, at: std::time::SystemTime) -> Reply {
        self.headers
            .push(("retry-after", httpdate::fmt_http_date(at)));
        self
    }
}

/// A request a fake took (checked), with when it came.
#[derive(Clone, Debug)]
pub struct Taken {
    pub at: Instant,
    pub path: String,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    /// What the fake decoded: the JSON body (APNs, FCM) or the decrypted
    /// plaintext (UnifiedPush).
    pub payload: serde_json::Value,
    /// The status it answered.
    pub status: u16,
}

/// What every fake shares: its script, what it took, what it found wrong.
#[derive(Default)]
pub struct Log {
    script: Mutex<VecDeque<Reply>>,
    pub taken: Mutex<Vec<Taken>>,
    pub problems: Mutex<Vec<String>>,
}

impl Log {
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.script.lock().unwrap().extend(replies);
    }

    fn next_reply(&self) -> Option<Reply> {
        self.script.lock().unwrap().pop_front()
    }

    fn problem(&self, p: String) {
        eprintln!("fake push provider: {p}");
        self.problems.lock().unwrap().push(p);
    }

    pub fn taken(&self) -> Vec<Taken> {
        self.taken.lock().unwrap().clone()
    }

    /// Requests answered with a success status.
    pub fn accepted(&self) -> Vec<Taken> {
        self.taken()
            .into_iter()
            .filter(|t| (200..300).contains(&t.status))
            .collect()
    }

    pub fn assert_no_problems(&self) {
        let p = self.problems.lock().unwrap();
        assert!(p.is_empty(), "the fake provider found problems: {p:?}");
    }

    /// Waits until `n` requests were accepted (bounded by `PATIENCE`).
    pub async fn wait_accepted(&self, n: usize) -> Vec<Taken> {
        let deadline = Instant::now() + super::PATIENCE;
        loop {
            let a = self.accepted();
            if a.len() >= n {
                return a;
            }
            assert!(
                Instant::now() < deadline,
                "{n} accepted pushes expected within patience, got {}: {:?}",
                a.len(),
                self.taken()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

type Handler = Arc<
    dyn Fn(&http::request::Parts, &Bytes) -> (u16, Vec<(&'static str, String)>, String)
        + Send
        + Sync,
>;

/// Serves `handler` on a loopback port: HTTP/2 only (prior knowledge, as
/// APNs) with `h2`, else HTTP/1.1.
pub async fn serve(h2: bool, handler: Handler) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let handler = Arc::clone(&handler);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let handler = Arc::clone(&handler);
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let (status, headers, text) = handler(&parts, &body);
                        let mut r = Response::builder().status(status);
                        for (k, v) in headers {
                            r = r.header(k, v);
                        }
                        Ok::<_, Infallible>(r.body(Full::new(Bytes::from(text))).unwrap())
                    }
                });
                let io = TokioIo::new(tcp);
                if h2 {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(io, svc)
                        .await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await;
                }
            });
        }
    });
    addr
}

/// The parts of a compact JWT, its header and claims decoded, and the
/// signed input and signature bytes.
pub struct Jwt {
    pub header: serde_json::Value,
    pub claims: serde_json::Value,
    pub input: String,
    pub signature: Vec<u8>,
}

pub fn parse_jwt(token: &str) -> Result<Jwt, String> {
    let parts: Vec<&str> = token.split('.').collect();
    let [h, c, s] = parts[..] else {
        return Err(format!("a JWT has three parts: {token:?}"));
    };
    let dec = |p: &str| {
        URL_SAFE_NO_PAD
            .decode(p)
            .map_err(|e| format!("base64url: {e}"))
    };
    let json = |b: Vec<u8>| serde_json::from_slice(&b).map_err(|e| format!("JSON: {e}"));
    Ok(Jwt {
        header: json(dec(h)?)?,
        claims: json(dec(c)?)?,
        input: format!("{h}.{c}"),
        signature: dec(s)?,
    })
}

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Writes `bytes` to `path` with mode 0600 (the store reads keys as secrets).
pub fn write_secret(path: &std::path::Path, bytes: &[u8]) {
    common::fsutil::write_private(path, bytes).unwrap();
}

/// A PKCS#8 DER as PEM.
pub fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}
