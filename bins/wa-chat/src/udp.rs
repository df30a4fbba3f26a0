//! The QUIC socket's kernel buffers: one UDP socket carries every QUIC
//! connection of the edge, so its receive buffer is what a burst of
//! handshakes has to fit in (past it the kernel drops datagrams). Sized from
//! `[limits] quic_socket_buffer` at start, with a warning naming the sysctl
//! when the kernel gave less.

use socket2::SockRef;

/// What the kernel gave for a request of `wanted` bytes each way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sized {
    pub wanted: usize,
    pub receive: usize,
    pub send: usize,
}

impl Sized {
    /// Linux reports twice what it granted (the other half is its own
    /// bookkeeping): less than `wanted` means it was capped.
    pub fn capped(&self) -> bool {
        self.receive < self.wanted || self.send < self.wanted
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
    fn buffers_are_sized_and_a_cap_is_seen() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let small = size(&socket, 64 * 1024).unwrap();
        assert!(!small.capped(), "{small:?}");
        assert!(small.receive >= 64 * 1024, "{small:?}");
        // Far past any sysctl limit an unprivileged process gets: capped.
        let huge = size(&socket, 1 << 30).unwrap();
        assert!(huge.capped(), "{huge:?}");
    }
}
