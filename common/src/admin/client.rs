//! The other end of the admin listener, for `wactl` and the tests: one
//! HTTP/1.1 request per connection, the admin token as a bearer token, over
//! TCP or the admin Unix socket (where no token is needed).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// How long one admin request may take, connection included.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Where an admin API is: a TCP listener or a Unix socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl From<SocketAddr> for Target {
    fn from(a: SocketAddr) -> Target {
        Target::Tcp(a)
    }
}

impl From<&Path> for Target {
    fn from(p: &Path) -> Target {
        Target::Unix(p.to_owned())
    }
}

impl From<&PathBuf> for Target {
    fn from(p: &PathBuf) -> Target {
        Target::Unix(p.clone())
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Tcp(a) => write!(f, "{a}"),
            Target::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AdminClientError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: Target,
        source: std::io::Error,
    },
    #[error("{addr}: {source}")]
    Http { addr: Target, source: hyper::Error },
    #[error("{addr}: no answer within {TIMEOUT:?}")]
    Timeout { addr: Target },
    #[error("{addr}{path}: {status}: {body}")]
    Status {
        addr: Target,
        path: String,
        status: u16,
        body: String,
    },
    #[error("{addr}{path}: not JSON: {source}")]
    Json {
        addr: Target,
        path: String,
        source: serde_json::Error,
    },
}

/// An answer: status and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `method path` (with `token` unless `None`) and returns whatever
/// status came back.
pub async fn request(
    addr: impl Into<Target>,
    method: http::Method,
    path: &str,
    token: Option<&[u8]>,
) -> Result<Answer, AdminClientError> {
    let addr = addr.into();
    tokio::time::timeout(TIMEOUT, request_inner(&addr, method, path, token))
        .await
        .map_err(|_| AdminClientError::Timeout { addr: addr.clone() })?
}

async fn request_inner(
    addr: &Target,
    method: http::Method,
    path: &str,
    token: Option<&[u8]>,
) -> Result<Answer, AdminClientError> {
    let connect = |source| AdminClientError::Connect {
        addr: addr.clone(),
        source,
    };
    match addr {
        Target::Tcp(a) => {
            let tcp = tokio::net::TcpStream::connect(a).await.map_err(connect)?;
            exchange(addr, TokioIo::new(tcp), method, path, token).await
        }
        Target::Unix(p) => {
            let unix = tokio::net::UnixStream::connect(p).await.map_err(connect)?;
            exchange(addr, TokioIo::new(unix), method, path, token).await
        }
    }
}

async fn exchange<IO>(
    addr: &Target,
    io: IO,
    method: http::Method,
    path: &str,
    token: Option<&[u8]>,
) -> Result<Answer, AdminClientError>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let http = |source| AdminClientError::Http {
        addr: addr.clone(),
        source,
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(http)?;
    tokio::spawn(conn);
    let host = match addr {
        Target::Tcp(a) => a.to_string(),
        Target::Unix(_) => "localhost".to_string(),
    };
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, host);
    if let Some(t) = token {
        let mut v = b"Bearer ".to_vec();
        v.extend_from_slice(t);
        req = req.header(http::header::AUTHORIZATION, v);
    }
    let req = req
        .body(Full::new(Bytes::new()))
        .expect("method, path and headers are valid");
    let resp = sender.send_request(req).await.map_err(http)?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.map_err(http)?.to_bytes();
    Ok(Answer { status, body })
}

/// `GET path` that must answer 200 with JSON.
pub async fn get_json(
    addr: impl Into<Target>,
    path: &str,
    token: &[u8],
) -> Result<serde_json::Value, AdminClientError> {
    call_json(addr, http::Method::GET, path, token).await
}

/// `method path` that must answer 200 with JSON.
pub async fn call_json(
    addr: impl Into<Target>,
    method: http::Method,
    path: &str,
    token: &[u8],
) -> Result<serde_json::Value, AdminClientError> {
    let addr = addr.into();
    let a = request(addr.clone(), method, path, Some(token)).await?;
    if a.status != 200 {
        return Err(AdminClientError::Status {
            addr,
            path: path.into(),
            status: a.status,
            body: a.text().trim().to_owned(),
        });
    }
    serde_json::from_slice(&a.body).map_err(|source| AdminClientError::Json {
        addr,
        path: path.into(),
        source,
    })
}
