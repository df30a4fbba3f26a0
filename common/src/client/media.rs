//! The media client: upload blobs to and download them from `wa-media`
//! (docs/MEDIA.md) over HTTPS (TLS 1.3 with the same rustls and roots as the
//! chat connection, HTTP/1.1 through hyper, one connection per request).
//!
//! [`MediaClient::upload`] / [`MediaClient::upload_reader`] stream the bytes
//! (hashing them on the way) and check that the node's answer names the same
//! SHA-256; [`MediaClient::download`] fetches a blob and checks its bytes
//! against the hash in the handle. The returned [`MediaRef`] becomes the
//! [`Media`] of a chat message with [`MediaRef::to_media`], sent by
//! [`Client::send_media`](super::Client::send_media).
//!
//! Handles name their node (`<node>-<sha256 hex>`); the client maps node
//! names to addresses from its own [`MediaConfig::nodes`], never from a
//! message, so a sender cannot make the recipient present its token to an
//! arbitrary host.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Method, Request, StatusCode, header};
use http_body::Frame;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use rustls_pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use tokio::io::AsyncRead;

use crate::proto::Media;
use crate::tls::TlsError;

/// Read size when streaming an upload from a reader.
const CHUNK: usize = 64 * 1024;

/// One wa-media node a client may talk to.
#[derive(Debug, Clone)]
pub struct MediaNode {
    /// The node name that starts its handles.
    pub name: String,
    pub addr: SocketAddr,
    /// The TLS name its certificate is checked against (also the Host header).
    pub server_name: String,
}

#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// Every node the client may download from; uploads go to the first.
    pub nodes: Vec<MediaNode>,
    pub roots: Vec<CertificateDer<'static>>,
    /// The same credential as `Hello.token`.
    pub token: String,
    /// Connect and TLS handshake timeout.
    pub connect_timeout: Duration,
}

impl MediaConfig {
    pub fn new(nodes: Vec<MediaNode>, roots: Vec<CertificateDer<'static>>, token: String) -> Self {
        MediaConfig {
            nodes,
            roots,
            token,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// What an upload returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaRef {
    pub handle: String,
    pub size: u64,
    pub sha256: [u8; 32],
    /// The type the node serves it as.
    pub mime: String,
    pub expires_at_ms: u64,
    /// The node already held these bytes (nothing new was stored).
    pub existed: bool,
}

impl MediaRef {
    /// The chat-protocol reference, with a preview to show before download.
    pub fn to_media(&self, thumbnail: Bytes) -> Media {
        Media {
            handle: self.handle.clone(),
            size: self.size,
            sha256: Bytes::copy_from_slice(&self.sha256),
            mime: if self.mime == "application/octet-stream" {
                String::new()
            } else {
                self.mime.clone()
            },
            thumbnail,
            opaque: Bytes::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("{0:?} is not a valid TLS server name")]
    ServerName(String),
    #[error("no media node is configured")]
    NoNode,
    #[error("{0:?} is not a media handle")]
    BadHandle(String),
    #[error("no configured media node is named {0:?}")]
    UnknownNode(String),
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS handshake with {addr} failed: {source}")]
    Handshake {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("connecting to {addr} took longer than {after:?}")]
    Timeout { addr: SocketAddr, after: Duration },
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("reading the upload: {0}")]
    Read(std::io::Error),
    /// The node refused: its status and the `error` code and `message` of its JSON body.
    #[error("the media node answered {status}: {code}: {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    #[error("the media node's answer makes no sense: {0}")]
    BadAnswer(String),
    #[error("the bytes of {handle} do not hash to its SHA-256")]
    HashMismatch { handle: String },
}

impl MediaError {
    /// The HTTP status, when the node refused.
    pub fn status(&self) -> Option<u16> {
        match self {
            MediaError::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Splits a handle into its node name and SHA-256.
pub fn parse_handle(handle: &str) -> Option<(&str, [u8; 32])> {
    if !crate::proto::ids::valid_media_handle(handle) {
        return None;
    }
    let (node, hex) = handle.rsplit_once('-')?;
    let mut sha = [0u8; 32];
    hex::decode_to_slice(hex, &mut sha).ok()?;
    Some((node, sha))
}

type Body = BoxBody<Bytes, std::io::Error>;

/// An upload body read from `R`, hashed as it goes.
struct ReaderBody<R> {
    reader: R,
    buf: BytesMut,
    hasher: std::sync::Arc<std::sync::Mutex<Sha256>>,
    done: bool,
}

impl<R: AsyncRead + Unpin> http_body::Body for ReaderBody<R> {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let this = &mut *self;
        if this.buf.capacity() < CHUNK {
            this.buf.reserve(CHUNK);
        }
        match tokio_util::io::poll_read_buf(Pin::new(&mut this.reader), cx, &mut this.buf) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Ready(Ok(0)) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Ok(_)) => {
                let chunk = this.buf.split().freeze();
                this.hasher
                    .lock()
                    .expect("the hasher lock is never poisoned")
                    .update(&chunk);
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
        }
    }
}

#[derive(serde::Deserialize)]
struct Uploaded {
    handle: String,
    size: u64,
    sha256: String,
    mime: String,
    expires_at_ms: u64,
}

#[derive(serde::Deserialize)]
struct ErrorBody {
    error: String,
    message: String,
}

/// A client of the wa-media nodes of one deployment.
#[derive(Clone)]
pub struct MediaClient {
    cfg: MediaConfig,
    connector: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for MediaClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaClient")
            .field("nodes", &self.cfg.nodes)
            .finish_non_exhaustive()
    }
}

impl MediaClient {
    pub fn new(cfg: MediaConfig) -> Result<MediaClient, MediaError> {
        let tls = crate::tls::client_config(&cfg.roots, &[b"http/1.1"])?;
        Ok(MediaClient {
            cfg,
            connector: tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls)),
        })
    }

    /// Uses `token` from now on (tokens expire; the app renews them).
    pub fn set_token(&mut self, token: String) {
        self.cfg.token = token;
    }

    /// Uploads `data` (declaring `mime`, if any) to the first node.
    pub async fn upload(&self, data: Bytes, mime: Option<&str>) -> Result<MediaRef, MediaError> {
        let sha: [u8; 32] = Sha256::digest(&data).into();
        let len = data.len() as u64;
        let body = Full::new(data).map_err(|never| match never {}).boxed();
        self.upload_body(body, len, mime, sha).await
    }

    /// Uploads `len` bytes read from `reader`, streamed: memory use does not
    /// grow with the size.
    pub async fn upload_reader<R>(
        &self,
        reader: R,
        len: u64,
        mime: Option<&str>,
    ) -> Result<MediaRef, MediaError>
    where
        R: AsyncRead + Unpin + Send + Sync + 'static,
    {
        let hasher = std::sync::Arc::new(std::sync::Mutex::new(Sha256::new()));
        let body = ReaderBody {
            reader,
            buf: BytesMut::new(),
            hasher: hasher.clone(),
            done: false,
        }
        .boxed();
        let node = self.cfg.nodes.first().ok_or(MediaError::NoNode)?;
        let resp = self
            .send(node, upload_request(node, &self.cfg.token, body, len, mime))
            .await?;
        let sha: [u8; 32] = hasher
            .lock()
            .expect("the hasher lock is never poisoned")
            .clone()
            .finalize()
            .into();
        answer(resp, sha).await
    }

    async fn upload_body(
        &self,
        body: Body,
        len: u64,
        mime: Option<&str>,
        sha: [u8; 32],
    ) -> Result<MediaRef, MediaError> {
        let node = self.cfg.nodes.first().ok_or(MediaError::NoNode)?;
        let resp = self
            .send(node, upload_request(node, &self.cfg.token, body, len, mime))
            .await?;
        answer(resp, sha).await
    }

    /// Downloads the blob `handle` from the node it names and checks that
    /// its bytes hash to the SHA-256 in the handle.
    pub async fn download(&self, handle: &str) -> Result<Bytes, MediaError> {
        let (node, sha) = self.node_of(handle)?;
        let req = self.request(node, Method::GET, handle, empty());
        let resp = self.send(node, req).await?;
        let resp = check(resp).await?;
        let bytes = resp.into_body().collect().await?.to_bytes();
        let got: [u8; 32] = Sha256::digest(&bytes).into();
        if got != sha {
            return Err(MediaError::HashMismatch {
                handle: handle.to_string(),
            });
        }
        Ok(bytes)
    }

    /// Deletes this user's upload of `handle` (the blob goes once every
    /// uploader deleted it, or at expiry).
    pub async fn delete(&self, handle: &str) -> Result<(), MediaError> {
        let (node, _) = self.node_of(handle)?;
        let req = self.request(node, Method::DELETE, handle, empty());
        let resp = self.send(node, req).await?;
        check(resp).await.map(drop)
    }

    fn node_of(&self, handle: &str) -> Result<(&MediaNode, [u8; 32]), MediaError> {
        let (name, sha) =
            parse_handle(handle).ok_or_else(|| MediaError::BadHandle(handle.to_string()))?;
        let node = self
            .cfg
            .nodes
            .iter()
            .find(|n| n.name == name)
            .ok_or_else(|| MediaError::UnknownNode(name.to_string()))?;
        Ok((node, sha))
    }

    fn request(&self, node: &MediaNode, method: Method, handle: &str, body: Body) -> Request<Body> {
        Request::builder()
            .method(method)
            .uri(format!("/v1/media/{handle}"))
            .header(header::HOST, &node.server_name)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.cfg.token))
            .body(body)
            .expect("a valid request")
    }

    /// Opens a connection to `node` and sends `req` on it.
    async fn send(
        &self,
        node: &MediaNode,
        req: Request<Body>,
    ) -> Result<http::Response<hyper::body::Incoming>, MediaError> {
        let mut sender = super::https::dial(
            &self.connector,
            node.addr,
            None,
            &node.server_name,
            self.cfg.connect_timeout,
        )
        .await?;
        Ok(sender.send_request(req).await?)
    }
}

fn empty() -> Body {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed()
}

fn upload_request(
    node: &MediaNode,
    token: &str,
    body: Body,
    len: u64,
    mime: Option<&str>,
) -> Request<Body> {
    let mut b = Request::builder()
        .method(Method::POST)
        .uri("/v1/media")
        .header(header::HOST, &node.server_name)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_LENGTH, len);
    if let Some(m) = mime {
        b = b.header(header::CONTENT_TYPE, m);
    }
    b.body(body).expect("a valid request")
}

/// The response if it is a success, else the node's refusal.
async fn check(
    resp: http::Response<hyper::body::Incoming>,
) -> Result<http::Response<hyper::body::Incoming>, MediaError> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    let (code, message) = match serde_json::from_slice::<ErrorBody>(&body) {
        Ok(e) => (e.error, e.message),
        Err(_) => (String::new(), String::from_utf8_lossy(&body).into_owned()),
    };
    Err(MediaError::Refused {
        status,
        code,
        message,
    })
}

/// Reads an upload's answer and checks it names the bytes that were sent.
async fn answer(
    resp: http::Response<hyper::body::Incoming>,
    sent: [u8; 32],
) -> Result<MediaRef, MediaError> {
    let resp = check(resp).await?;
    let existed = resp.status() == StatusCode::OK;
    let body = resp.into_body().collect().await?.to_bytes();
    let u: Uploaded =
        serde_json::from_slice(&body).map_err(|e| MediaError::BadAnswer(e.to_string()))?;
    let (_, sha) = parse_handle(&u.handle)
        .ok_or_else(|| MediaError::BadAnswer(format!("handle {:?}", u.handle)))?;
    if sha != sent || u.sha256 != hex::encode(sent) {
        return Err(MediaError::BadAnswer(
            "the node's SHA-256 differs from the bytes sent".into(),
        ));
    }
    Ok(MediaRef {
        handle: u.handle,
        size: u.size,
        sha256: sha,
        mime: u.mime,
        expires_at_ms: u.expires_at_ms,
        existed,
    })
}

impl From<super::https::DialError> for MediaError {
    fn from(e: super::https::DialError) -> Self {
        use super::https::DialError as D;
        match e {
            D::ServerName(n) => MediaError::ServerName(n),
            D::Connect { addr, source } => MediaError::Connect { addr, source },
            D::Handshake { addr, source } => MediaError::Handshake { addr, source },
            D::Timeout { addr, after } => MediaError::Timeout { addr, after },
            D::Http(e) => MediaError::Http(e),
        }
    }
}
