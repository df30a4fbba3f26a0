//! Where QUIC's packet work runs: a runtime of its own, `[quic]
//! quic_endpoints` threads, holding every QUIC endpoint's socket reader,
//! every connection's driver (packet decryption, acknowledgements, loss
//! recovery, the rest of the handshake) and the first flight of each
//! handshake. The sessions stay on the main runtime and talk to their
//! connection through quinn's streams.
//!
//! Why: in a reconnect storm the main runtime has tens of thousands of
//! runnable session tasks; an endpoint's socket reader waiting its turn
//! among them lets the kernel's receive buffer overflow (docs/BENCHMARKS.md,
//! "QUIC storm": 316,000 datagrams dropped in one 19,000-session storm), and
//! every dropped Initial or handshake packet costs a retransmission and
//! often a whole handshake. On threads of its own the packet work gets the
//! operating system's share of the CPU, whatever the number of sessions.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::runtime::Handle;

/// quinn's tokio runtime, bound to one runtime's handle instead of the
/// caller's: timers, sockets and tasks all land there.
pub struct On(pub Handle);

impl fmt::Debug for On {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("quic runtime")
    }
}

impl quinn::Runtime for On {
    fn new_timer(&self, t: std::time::Instant) -> Pin<Box<dyn quinn::AsyncTimer>> {
        let _in = self.0.enter();
        quinn::TokioRuntime.new_timer(t)
    }

    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) {
        self.0.spawn(future);
    }

    fn wrap_udp_socket(
        &self,
        socket: std::net::UdpSocket,
    ) -> std::io::Result<Arc<dyn quinn::AsyncUdpSocket>> {
        let _in = self.0.enter();
        quinn::TokioRuntime.wrap_udp_socket(socket)
    }

    fn now(&self) -> std::time::Instant {
        quinn::TokioRuntime.now()
    }
}

/// The QUIC runtime: `threads` worker threads named `quic`.
pub fn start(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name("quic")
        .enable_all()
        .build()
}
