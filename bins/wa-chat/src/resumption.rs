//! Counting resumed QUIC handshakes. Over TCP the edge asks the finished
//! TLS connection whether it resumed (`wa_chat_tls_resumed`); quinn does
//! not say, so the QUIC configuration's ticket key is wrapped: a ticket
//! that opens is a client resuming its session from it
//! (`wa_chat_quic_resumed`). The key itself is the TCP listener's, so a
//! ticket from either transport is good on the other.

use std::sync::Arc;

use common::admin::metrics::Counter;
use rustls::server::ProducesTickets;

/// A ticket key that counts the tickets it opens.
#[derive(Debug)]
pub struct Counting {
    inner: Arc<dyn ProducesTickets>,
    opened: Counter,
}

impl Counting {
    pub fn wrap(inner: Arc<dyn ProducesTickets>, opened: Counter) -> Arc<dyn ProducesTickets> {
        Arc::new(Counting { inner, opened })
    }
}

impl ProducesTickets for Counting {
    fn enabled(&self) -> bool {
        self.inner.enabled()
    }

    fn lifetime(&self) -> u32 {
        self.inner.lifetime()
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.inner.encrypt(plain)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        let plain = self.inner.decrypt(cipher);
        if plain.is_some() {
            self.opened.inc();
        }
        plain
    }
}
