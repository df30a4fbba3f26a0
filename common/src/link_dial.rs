//! Opening the internal link ([`crate::link`]): TCP, TLS 1.3 to the store's
//! link certificate (roots = the cluster CA, SNI = the island's
//! `server_name`, ALPN `wa-link/1`), then `Auth` with the cluster secret and
//! the store's `AuthOk`. The one way every client of the link connects:
//! edges (`wa-chat`), wa-register and homes appending at other homes
//! (`crate::link_client`).

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::link::{LinkAuth, LinkDown, LinkUp, MAX_LINK_FRAME, link_down, link_up};
use crate::wire::{FrameReader, ReadError};

pub type LinkStream = TlsStream<TcpStream>;

/// An authenticated link, split for a reader and a writer.
pub struct Dialed {
    pub reader: FrameReader<ReadHalf<LinkStream>>,
    pub writer: WriteHalf<LinkStream>,
    /// The store's name, from `AuthOk`.
    pub node: String,
    /// The store answers `Ping` (from `AuthOk`).
    pub heartbeat: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("connect: {0}")]
    Tcp(std::io::Error),
    #[error("TLS: {0}")]
    Tls(std::io::Error),
    #[error("sending Auth: {0}")]
    Write(std::io::Error),
    #[error("reading AuthOk: {0}")]
    Read(#[from] ReadError),
    #[error("the store closed the link before AuthOk (wrong cluster secret?)")]
    Closed,
    #[error("the store answered Auth with something other than AuthOk")]
    Unexpected,
}

/// Who is dialling, and how.
pub struct Dialer {
    pub connector: TlsConnector,
    pub secret: Bytes,
    /// This node's name, sent in `Auth`.
    pub name: String,
}

impl Dialer {
    /// Connects to the store at `addr` named `server_name` and authenticates,
    /// announcing the map `epoch`. (No timeout of its own: callers bound it.)
    pub async fn dial(
        &self,
        addr: SocketAddr,
        server_name: ServerName<'static>,
        epoch: u64,
    ) -> Result<Dialed, DialError> {
        self.dial_as(addr, server_name, epoch, None).await
    }

    /// [`Dialer::dial`], for a secondary store when `follow` is set: the
    /// link then carries the replication stream of `follow.island`, whose
    /// frames may be up to [`crate::link::MAX_REPLICATION_FRAME`].
    pub async fn dial_as(
        &self,
        addr: SocketAddr,
        server_name: ServerName<'static>,
        epoch: u64,
        follow: Option<crate::link::Follow>,
    ) -> Result<Dialed, DialError> {
        let max_frame = if follow.is_some() {
            crate::link::MAX_REPLICATION_FRAME
        } else {
            MAX_LINK_FRAME
        };
        let tcp = TcpStream::connect(addr).await.map_err(DialError::Tcp)?;
        let _ = tcp.set_nodelay(true);
        let tls = self
            .connector
            .connect(server_name, tcp)
            .await
            .map_err(DialError::Tls)?;
        let (r, mut w) = tokio::io::split(tls);
        let auth = LinkUp {
            kind: Some(link_up::Kind::Auth(LinkAuth {
                secret: self.secret.clone(),
                edge: self.name.clone(),
                epoch,
                follow,
            })),
        };
        let mut scratch = BytesMut::new();
        crate::wire::write_frame(&mut w, &auth, &mut scratch)
            .await
            .map_err(DialError::Write)?;
        w.flush().await.map_err(DialError::Write)?;
        let mut reader = FrameReader::new(r, max_frame);
        match reader.read::<LinkDown>().await? {
            Some(LinkDown {
                kind: Some(link_down::Kind::AuthOk(ok)),
            }) => Ok(Dialed {
                reader,
                writer: w,
                node: ok.node,
                heartbeat: ok.heartbeat,
            }),
            Some(_) => Err(DialError::Unexpected),
            None => Err(DialError::Closed),
        }
    }
}
