//! The QUIC sockets: [`bind`] opens `[quic] quic_endpoints` UDP sockets on
//! the one QUIC address, sharing the port (`SO_REUSEPORT` on Linux,
//! `SO_REUSEPORT_LB` on FreeBSD), so that the kernel spreads clients over
//! them by the hash of their address and port and each quinn endpoint (its
//! own lock and driver task) takes a share of the handshakes. Elsewhere one
//! socket.
//!
//! Each socket's kernel buffers are what a burst of handshakes has to fit in
//! (past them the kernel drops datagrams): sized from `[limits]
//! quic_socket_buffer` at start, with a warning naming the sysctl when the
//! kernel gave less.

use std::net::{SocketAddr, UdpSocket};

use socket2::{Domain, Protocol, SockRef, Socket, Type};

/// Whether this platform lets several sockets share a UDP port with the
/// kernel spreading datagrams over them by their source.
pub const CAN_SHARE_PORT: bool = cfg!(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd"
));

/// Binds `count` UDP sockets (at least one) to `addr`, all on the same
/// port: with port 0 the first one picks it and the others join. Where the
/// platform cannot share a port ([`CAN_SHARE_PORT`]), one socket.
pub fn bind(addr: SocketAddr, count: usize) -> std::io::Result<Vec<UdpSocket>> {
    let count = if CAN_SHARE_PORT { count.max(1) } else { 1 };
    let first = open(addr, count > 1)?;
    let addr = first.local_addr()?;
    let mut sockets = vec![first];
    for _ in 1..count {
        sockets.push(open(addr, true)?);
    }
    Ok(sockets)
}

fn open(addr: SocketAddr, shared: bool) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // As std's bind: an IPv6 address means IPv6 only.
        socket.set_only_v6(true)?;
    }
    if shared {
        share_port(&socket)?;
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn share_port(socket: &Socket) -> std::io::Result<()> {
    socket.set_reuse_port(true)
}

#[cfg(target_os = "freebsd")]
fn share_port(socket: &Socket) -> std::io::Result<()> {
    // Plain SO_REUSEPORT on FreeBSD gives every datagram to the last
    // socket bound; the _LB variant spreads them by source.
    socket.set_reuse_port_lb(true)
}

#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
fn share_port(_: &Socket) -> std::io::Result<()> {
    Ok(())
}

/// What the kernel gave for a request of `wanted` bytes each way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sized {
    pub wanted: usize,
    pub receive: usize,
    pub send: usize,
}

impl Sized {
    /// Whether the kernel granted less than `wanted` either way. Linux
    /// reports twice what it granted (the other half is its own
    /// bookkeeping), so there less than twice `wanted` means capped.
    pub fn capped(&self) -> bool {
        let least = if cfg!(any(target_os = "linux", target_os = "android")) {
            self.wanted.saturating_mul(2)
        } else {
            self.wanted
        };
        self.receive < least || self.send < least
    }
}

/// Asks for `wanted` bytes of receive and send buffer on `socket`.
pub fn size(socket: &std::net::UdpSocket, wanted: usize) -> std::io::Result<Sized> {
    let s = SockRef::from(socket);
    s.set_recv_buffer_size(wanted)?;
    s.set_send_buffer_size(wanted)?;
    Ok(Sized {
        wanted,
        receive: s.recv_buffer_size()?,
        send: s.send_buffer_size()?,
    })
}

/// Sizes the QUIC socket and says so; a cap or a refusal is a warning, never
/// a reason not to serve. `wanted` 0 leaves the kernel's defaults.
pub fn size_and_report(socket: &std::net::UdpSocket, wanted: usize) {
    if wanted == 0 {
        return;
    }
    match size(socket, wanted) {
        Ok(s) if s.capped() => tracing::warn!(
            wanted = s.wanted,
            receive = s.receive,
            send = s.send,
            "the kernel capped the QUIC socket's buffers below limits.quic_socket_buffer: a burst of QUIC handshakes may be dropped; raise net.core.rmem_max and net.core.wmem_max (sysctl) to at least {wanted}"
        ),
        Ok(s) => tracing::info!(receive = s.receive, send = s.send, "QUIC socket buffers"),
        Err(e) => {
            tracing::warn!(error = %e, "cannot size the QUIC socket's buffers; the kernel's defaults apply")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_share_one_port() {
        let sockets = bind("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        let want = if CAN_SHARE_PORT { 3 } else { 1 };
        assert_eq!(sockets.len(), want);
        let addr = sockets[0].local_addr().unwrap();
        assert_ne!(addr.port(), 0);
        for s in &sockets {
            assert_eq!(s.local_addr().unwrap(), addr);
        }
        // A socket that does not share cannot take the port.
        assert!(UdpSocket::bind(addr).is_err());
        // Zero means one.
        assert_eq!(bind("127.0.0.1:0".parse().unwrap(), 0).unwrap().len(), 1);
    }

    #[test]
    fn buffers_are_sized_and_a_cap_is_seen() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let small = size(&socket, 64 * 1024).unwrap();
        assert!(!small.capped(), "{small:?}");
        assert!(small.receive >= 64 * 1024, "{small:?}");
        // Far past any sysctl limit an unprivileged process gets: capped.
        let huge = size(&socket, 1 << 30).unwrap();
        assert!(huge.capped(), "{huge:?}");
    }

    /// Linux grants at most `net.core.rmem_max` and reports twice that: a
    /// request between the two is capped too (it once went unnoticed).
    #[cfg(target_os = "linux")]
    #[test]
    fn a_cap_below_the_doubled_figure_is_seen() {
        let max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let sized = size(&socket, max + max / 2).unwrap();
        assert!(sized.capped(), "{sized:?}");
    }
}
