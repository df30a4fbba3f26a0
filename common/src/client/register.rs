//! The registration client: sign up with `wa-register` (docs/REGISTER.md)
//! over HTTPS (TLS 1.3 with the same rustls and roots as the chat
//! connection, HTTP/1.1 through hyper, one connection per request).
//!
//! [`RegisterClient::request_code`] asks for a one-time code by SMS;
//! [`RegisterClient::verify`] proves it and returns the account id, device
//! id and the credential to put in [`ClientConfig`](super::ClientConfig)
//! (`token`) and [`MediaConfig`](super::MediaConfig). A refusal comes back as
//! [`RegisterError::Refused`] with the server's error code and, for `429`,
//! how long to wait.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt, Full};
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use crate::tls::TlsError;

#[derive(Debug, Clone)]
pub struct RegisterConfig {
    pub addr: SocketAddr,
    /// The TLS name its certificate is checked against (also the Host header).
    pub server_name: String,
    pub roots: Vec<CertificateDer<'static>>,
    /// Connect and TLS handshake timeout.
    pub connect_timeout: Duration,
    /// The local address to connect from; `None`: the system's choice.
    pub local_addr: Option<std::net::IpAddr>,
}

impl RegisterConfig {
    pub fn new(addr: SocketAddr, server_name: String, roots: Vec<CertificateDer<'static>>) -> Self {
        RegisterConfig {
            addr,
            server_name,
            roots,
            connect_timeout: Duration::from_secs(10),
            local_addr: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("{0:?} is not a valid TLS server name")]
    ServerName(String),
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
    /// The service refused: its status and the JSON body's fields.
    #[error("wa-register answered {status}: {code}: {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
        /// For `429`: seconds to wait.
        retry_after_secs: Option<u64>,
        /// For `code_wrong`: guesses left before the code dies.
        checks_left: Option<u32>,
        /// For `pin_wrong`: PIN tries left before the daily limit.
        tries_left: Option<u32>,
    },
    #[error("wa-register's answer makes no sense: {0}")]
    BadAnswer(String),
}

impl RegisterError {
    /// The HTTP status, when the service refused.
    pub fn status(&self) -> Option<u16> {
        match self {
            RegisterError::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The error code (`"code_wrong"`, `"pin_required"`...), when refused.
    pub fn code(&self) -> Option<&str> {
        match self {
            RegisterError::Refused { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// The answer to a code request.
#[derive(Debug, Clone, Deserialize)]
pub struct CodeSent {
    /// The number, masked.
    pub number: String,
    pub transport: String,
    pub length: usize,
    pub expires_in_secs: u64,
    /// When another code may be requested.
    pub retry_after_secs: u64,
    /// Names this request: [`Verify::session`] must carry it.
    pub session: String,
}

/// What [`RegisterClient::verify`] sends.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Verify {
    pub number: String,
    /// [`CodeSent::session`] of the request whose code this is.
    pub session: String,
    pub code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// The registration-lock PIN, after a `pin_required` refusal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pin: Option<String>,
}

/// A registered device and its credential.
#[derive(Debug, Clone, Deserialize)]
pub struct Registered {
    pub user: String,
    pub device: u32,
    pub generation: u32,
    pub token: String,
    pub expires_at: u64,
    pub new_account: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Refreshed {
    pub token: String,
    pub expires_at: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DeviceInfo {
    pub id: u32,
    pub name: String,
    pub public_key: Option<String>,
    pub created_ms: u64,
    pub current: bool,
}

#[derive(Debug, Clone, Deserialize)]
struct DeviceList {
    devices: Vec<DeviceInfo>,
}

/// A linked companion device and its credential.
#[derive(Debug, Clone, Deserialize)]
pub struct Linked {
    pub device: u32,
    pub token: String,
    pub expires_at: u64,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
    message: String,
    retry_after_secs: Option<u64>,
    checks_left: Option<u32>,
    tries_left: Option<u32>,
}

/// A raw answer: status, headers and body (for tests that misbehave).
#[derive(Debug, Clone)]
pub struct RawAnswer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

pub struct RegisterClient {
    cfg: RegisterConfig,
    connector: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for RegisterClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisterClient")
            .field("addr", &self.cfg.addr)
            .finish_non_exhaustive()
    }
}

impl RegisterClient {
    pub fn new(cfg: RegisterConfig) -> Result<RegisterClient, RegisterError> {
        let tls = crate::tls::client_config(&cfg.roots, &[b"http/1.1"])?;
        Ok(RegisterClient {
            cfg,
            connector: tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls)),
        })
    }

    /// Asks for a one-time code by SMS to `number` (E.164).
    pub async fn request_code(&self, number: &str) -> Result<CodeSent, RegisterError> {
        let body = serde_json::json!({ "number": number, "transport": "sms" });
        self.json(Method::POST, "/v1/codes", Some(body), None).await
    }

    /// Proves the code; returns the account, device and credential.
    pub async fn verify(&self, v: &Verify) -> Result<Registered, RegisterError> {
        let body = serde_json::to_value(v).expect("a Verify always serializes");
        self.json(Method::POST, "/v1/verify", Some(body), None)
            .await
    }

    /// A fresh credential for the device of `token`, before it expires.
    pub async fn refresh(&self, token: &str) -> Result<Refreshed, RegisterError> {
        self.json(Method::POST, "/v1/tokens/refresh", None, Some(token))
            .await
    }

    /// The account's devices.
    pub async fn devices(&self, token: &str) -> Result<Vec<DeviceInfo>, RegisterError> {
        let l: DeviceList = self
            .json(Method::GET, "/v1/devices", None, Some(token))
            .await?;
        Ok(l.devices)
    }

    /// Adds a companion device to the account of `token`.
    pub async fn link_device(
        &self,
        token: &str,
        device_name: &str,
        public_key: Option<&str>,
    ) -> Result<Linked, RegisterError> {
        let body = serde_json::json!({ "device_name": device_name, "public_key": public_key });
        self.json(Method::POST, "/v1/devices", Some(body), Some(token))
            .await
    }

    /// Removes (and revokes) one of the account's devices. Removing another
    /// device is for the primary device, or a companion giving the
    /// `current_pin` (docs/REGISTER.md, "Registration lock").
    pub async fn remove_device(
        &self,
        token: &str,
        id: u32,
        current_pin: Option<&str>,
    ) -> Result<(), RegisterError> {
        let body = current_pin.map(|p| serde_json::json!({ "current_pin": p }));
        self.empty(Method::DELETE, &format!("/v1/devices/{id}"), body, token)
            .await
    }

    /// Sets the registration-lock PIN (a companion gives the `current_pin`).
    pub async fn set_pin(
        &self,
        token: &str,
        pin: &str,
        current_pin: Option<&str>,
    ) -> Result<(), RegisterError> {
        let body = serde_json::json!({ "pin": pin, "current_pin": current_pin });
        self.empty(Method::PUT, "/v1/account/pin", Some(body), token)
            .await
    }

    /// Removes the registration lock (a companion gives the `current_pin`).
    pub async fn clear_pin(
        &self,
        token: &str,
        current_pin: Option<&str>,
    ) -> Result<(), RegisterError> {
        let body = current_pin.map(|p| serde_json::json!({ "current_pin": p }));
        self.empty(Method::DELETE, "/v1/account/pin", body, token)
            .await
    }

    /// Who may see this user's presence: `"everyone"`, `"contacts"` (the
    /// user ids in `contacts`, at most 200) or `"nobody"`. Watchers it
    /// hides presence from see the user as never online, from now on.
    pub async fn set_privacy(
        &self,
        token: &str,
        presence: &str,
        contacts: &[&str],
    ) -> Result<(), RegisterError> {
        let body = serde_json::json!({ "presence": presence, "contacts": contacts });
        self.empty(Method::PUT, "/v1/account/privacy", Some(body), token)
            .await
    }

    /// Deletes the account; every device's sessions close (a companion
    /// gives the `current_pin`).
    pub async fn delete_account(
        &self,
        token: &str,
        current_pin: Option<&str>,
    ) -> Result<(), RegisterError> {
        let body = current_pin.map(|p| serde_json::json!({ "current_pin": p }));
        self.empty(Method::DELETE, "/v1/account", body, token).await
    }

    /// Sends any request and returns the answer as it is.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Bytes,
        token: Option<&str>,
    ) -> Result<RawAnswer, RegisterError> {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.cfg.server_name)
            .header(header::CONTENT_LENGTH, body.len());
        if let Some(t) = content_type {
            b = b.header(header::CONTENT_TYPE, t);
        }
        if let Some(t) = token {
            b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = b.body(Full::new(body)).expect("a valid request");
        let resp = self.send(req).await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(RawAnswer {
            status,
            headers,
            body,
        })
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
        token: Option<&str>,
    ) -> Result<Bytes, RegisterError> {
        let (ct, bytes) = match body {
            Some(v) => (
                Some("application/json"),
                Bytes::from(serde_json::to_vec(&v).expect("JSON values serialize")),
            ),
            None => (None, Bytes::new()),
        };
        let a = self.raw(method, path, ct, bytes, token).await?;
        if (200..300).contains(&a.status) {
            return Ok(a.body);
        }
        Err(match serde_json::from_slice::<ErrorBody>(&a.body) {
            Ok(e) => RegisterError::Refused {
                status: a.status,
                code: e.error,
                message: e.message,
                retry_after_secs: e.retry_after_secs,
                checks_left: e.checks_left,
                tries_left: e.tries_left,
            },
            Err(_) => RegisterError::Refused {
                status: a.status,
                code: String::new(),
                message: String::from_utf8_lossy(&a.body).into_owned(),
                retry_after_secs: None,
                checks_left: None,
                tries_left: None,
            },
        })
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
        token: Option<&str>,
    ) -> Result<T, RegisterError> {
        let b = self.call(method, path, body, token).await?;
        serde_json::from_slice(&b).map_err(|e| RegisterError::BadAnswer(e.to_string()))
    }

    async fn empty(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
        token: &str,
    ) -> Result<(), RegisterError> {
        self.call(method, path, body, Some(token)).await.map(|_| ())
    }

    /// Opens a connection and sends `req` on it.
    async fn send(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<http::Response<hyper::body::Incoming>, RegisterError> {
        let mut sender = super::https::dial(
            &self.connector,
            self.cfg.addr,
            self.cfg.local_addr,
            &self.cfg.server_name,
            self.cfg.connect_timeout,
        )
        .await?;
        Ok(sender.send_request(req).await?)
    }
}

impl From<super::https::DialError> for RegisterError {
    fn from(e: super::https::DialError) -> Self {
        use super::https::DialError as D;
        match e {
            D::ServerName(n) => RegisterError::ServerName(n),
            D::Connect { addr, source } => RegisterError::Connect { addr, source },
            D::Handshake { addr, source } => RegisterError::Handshake { addr, source },
            D::Timeout { addr, after } => RegisterError::Timeout { addr, after },
            D::Http(e) => RegisterError::Http(e),
        }
    }
}
