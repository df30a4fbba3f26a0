//! The other end of the admin listener, for `wactl` and the tests: one
//! HTTP/1.1 request per connection, the admin token as a bearer token.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// How long one admin request may take, connection included.
pub const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum AdminClientError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{addr}: {source}")]
    Http {
        addr: SocketAddr,
        source: hyper::Error,
    },
    #[error("{addr}: no answer within {TIMEOUT:?}")]
    Timeout { addr: SocketAddr },
    #[error("{addr}{path}: {status}: {body}")]
    Status {
        addr: SocketAddr,
        path: String,
        status: u16,
        body: String,
    },
    #[error("{addr}{path}: not JSON: {source}")]
    Json {
        addr: SocketAddr,
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
    addr: SocketAddr,
    method: http::Method,
    path: &str,
    token: Option<&[u8]>,
) -> Result<Answer, AdminClientError> {
    tokio::time::timeout(TIMEOUT, request_inner(addr, method, path, token))
        .await
        .map_err(|_| AdminClientError::Timeout { addr })?
}

async fn request_inner(
    addr: SocketAddr,
    method: http::Method,
    path: &str,
    token: Option<&[u8]>,
) -> Result<Answer, AdminClientError> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|source| AdminClientError::Connect { addr, source })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|source| AdminClientError::Http { addr, source })?;
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, addr.to_string());
    if let Some(t) = token {
        let mut v = b"Bearer ".to_vec();
        v.extend_from_slice(t);
        req = req.header(http::header::AUTHORIZATION, v);
    }
    let req = req
        .body(Full::new(Bytes::new()))
        .expect("method, path and headers are valid");
    let resp = sender
        .send_request(req)
        .await
        .map_err(|source| AdminClientError::Http { addr, source })?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|source| AdminClientError::Http { addr, source })?
        .to_bytes();
    Ok(Answer { status, body })
}

/// `GET path` that must answer 200 with JSON.
pub async fn get_json(
    addr: SocketAddr,
    path: &str,
    token: &[u8],
) -> Result<serde_json::Value, AdminClientError> {
    call_json(addr, http::Method::GET, path, token).await
}

/// `method path` that must answer 200 with JSON.
pub async fn call_json(
    addr: SocketAddr,
    method: http::Method,
    path: &str,
    token: &[u8],
) -> Result<serde_json::Value, AdminClientError> {
    let a = request(addr, method, path, Some(token)).await?;
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
