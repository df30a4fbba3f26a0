//! Bare transports to an edge, with no protocol on top: what the client uses
//! underneath, and what tests use to send raw bytes and frames.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::ClientError;
use crate::proto::limits::ALPN;
use crate::tls;

/// TLS 1.3 over TCP to `addr`, verifying the certificate against `roots` and
/// `server_name`, offering ALPN `wa/1`.
pub async fn connect_tls(
    addr: SocketAddr,
    server_name: &str,
    roots: &[CertificateDer<'static>],
) -> Result<TlsStream<TcpStream>, ClientError> {
    let connector = tls_connector(roots)?;
    tls_with(&connector, addr, server_name).await
}

/// A QUIC connection to `addr` and its first bidirectional stream. The stream
/// is not visible to the server until something is written on it. The
/// endpoint must outlive the connection.
pub async fn connect_quic(
    addr: SocketAddr,
    server_name: &str,
    roots: &[CertificateDer<'static>],
) -> Result<
    (
        quinn::Endpoint,
        quinn::Connection,
        quinn::SendStream,
        quinn::RecvStream,
    ),
    ClientError,
> {
    let endpoint = quic_endpoint(addr, roots)?;
    let (conn, send, recv) = quic_with(&endpoint, addr, server_name).await?;
    Ok((endpoint, conn, send, recv))
}

pub(crate) fn tls_connector(
    roots: &[CertificateDer<'static>],
) -> Result<TlsConnector, ClientError> {
    let cfg = tls::client_config(roots, &[ALPN])?;
    Ok(TlsConnector::from(Arc::new(cfg)))
}

fn server_name(name: &str) -> Result<ServerName<'static>, ClientError> {
    ServerName::try_from(name.to_string()).map_err(|_| ClientError::ServerName(name.into()))
}

pub(crate) async fn tls_with(
    connector: &TlsConnector,
    addr: SocketAddr,
    name: &str,
) -> Result<TlsStream<TcpStream>, ClientError> {
    let name = server_name(name)?;
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|source| ClientError::Connect { addr, source })?;
    // Frames are small and latency matters more than packet count.
    let _ = tcp.set_nodelay(true);
    connector
        .connect(name, tcp)
        .await
        .map_err(|source| ClientError::Handshake { addr, source })
}

/// A client endpoint on an ephemeral port of `addr`'s family, trusting `roots`.
pub(crate) fn quic_endpoint(
    addr: SocketAddr,
    roots: &[CertificateDer<'static>],
) -> Result<quinn::Endpoint, ClientError> {
    let local: SocketAddr = match addr {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let config = tls::quic_client_config(tls::client_config(roots, &[ALPN])?)?;
    let mut endpoint = quinn::Endpoint::client(local).map_err(ClientError::Bind)?;
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

pub(crate) async fn quic_with(
    endpoint: &quinn::Endpoint,
    addr: SocketAddr,
    name: &str,
) -> Result<(quinn::Connection, quinn::SendStream, quinn::RecvStream), ClientError> {
    let quic = |reason: String| ClientError::Quic { addr, reason };
    let conn = endpoint
        .connect(addr, name)
        .map_err(|e| quic(e.to_string()))?
        .await
        .map_err(|e| quic(e.to_string()))?;
    let (send, recv) = conn.open_bi().await.map_err(|e| quic(e.to_string()))?;
    Ok((conn, send, recv))
}
