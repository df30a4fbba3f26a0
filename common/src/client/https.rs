//! One HTTPS connection per request, for the HTTP clients ([`super::media`],
//! [`super::register`]): TCP connect and TLS handshake under one timeout, then
//! an HTTP/1.1 handshake whose connection task ends with the request.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;

/// Why a connection could not be opened; each client turns it into its own
/// error type (same wording, its own variants).
pub(crate) enum DialError {
    ServerName(String),
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    Handshake {
        addr: SocketAddr,
        source: std::io::Error,
    },
    Timeout {
        addr: SocketAddr,
        after: Duration,
    },
    Http(hyper::Error),
}

/// Connects to `addr` (from the local address `from`, if given), checks its
/// certificate against `server_name`, and returns a sender for one or more
/// requests on that connection.
pub(crate) async fn dial<B>(
    connector: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
    from: Option<IpAddr>,
    server_name: &str,
    after: Duration,
) -> Result<SendRequest<B>, DialError>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let name = ServerName::try_from(server_name.to_owned())
        .map_err(|_| DialError::ServerName(server_name.to_owned()))?;
    let tls = tokio::time::timeout(after, async {
        let tcp = connect(addr, from)
            .await
            .map_err(|source| DialError::Connect { addr, source })?;
        let _ = tcp.set_nodelay(true);
        connector
            .connect(name, tcp)
            .await
            .map_err(|source| DialError::Handshake { addr, source })
    })
    .await
    .map_err(|_| DialError::Timeout { addr, after })??;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(DialError::Http)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// A TCP connection to `addr`, from the local address `from` if given (any
/// port).
async fn connect(addr: SocketAddr, from: Option<IpAddr>) -> std::io::Result<tokio::net::TcpStream> {
    let Some(from) = from else {
        return tokio::net::TcpStream::connect(addr).await;
    };
    let socket = match from {
        IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(addr).await
}
