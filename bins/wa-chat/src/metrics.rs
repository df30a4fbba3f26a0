//! The edge's metrics, built with the [`Chat`](crate::Chat) and updated by
//! the sessions: connections by transport (a gauge that follows real
//! connections), logins and their failures by reason, messages in and out.
//! Link queue lengths and session counts are read at scrape time
//! ([`crate::admin`]).

use common::admin::metrics::{Counter, Family, Gauge, Histogram, Registry};
use common::proto::Code;

/// One label, e.g. `transport="tcp"`.
pub type Label = [(&'static str, &'static str); 1];

pub struct ChatMetrics {
    /// Open client connections (handshake done or not), by transport.
    pub connections: Family<Label, Gauge>,
    /// Sessions that passed `Hello` and were welcomed.
    pub logins: Counter,
    /// TLS handshakes over TCP that resumed a session from a ticket.
    pub tls_resumed: Counter,
    /// Connections that ended before a `Welcome`, by the code they got.
    pub login_failures: Family<Label, Counter>,
    /// Logins refused by admission control (`Goodbye{OVERLOADED}` with a
    /// retry-after, before `Hello` was read).
    pub logins_refused: Counter,
    /// QUIC connection attempts that came with a valid address validation
    /// token (a NEW_TOKEN from an earlier connection).
    pub quic_token_validated: Counter,
    /// QUIC handshakes that presented a session ticket the edge could open:
    /// resumptions, without the certificate and its signature.
    pub quic_resumed: Counter,
    /// `Send` and `SendMedia` frames taken from clients.
    pub messages_in: Counter,
    /// Messages delivered to clients (`Deliver` frames queued).
    pub messages_out: Counter,
    /// Sessions closed with `SLOW_CONSUMER` because the edge's delivery
    /// budget (`[limits] delivery_memory`) was full and they held the most.
    pub delivery_cuts: Counter,
    /// From a client's request (`Send`, `SendMedia`, `MarkRead`) to its
    /// `Accepted`: the home's journal sync and the link both ways.
    pub accepted_latency: Histogram,
}

impl Default for ChatMetrics {
    fn default() -> Self {
        let m = ChatMetrics {
            connections: Family::default(),
            logins: Counter::default(),
            tls_resumed: Counter::default(),
            login_failures: Family::default(),
            logins_refused: Counter::default(),
            quic_token_validated: Counter::default(),
            quic_resumed: Counter::default(),
            messages_in: Counter::default(),
            messages_out: Counter::default(),
            delivery_cuts: Counter::default(),
            // 0.5 ms to about 4 s.
            accepted_latency: Histogram::new([
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 4.0,
            ]),
        };
        // Both series exist from the start, at 0, so alerts see them.
        for t in ["tcp", "quic"] {
            let _ = m.connections.get_or_create(&[("transport", t)]);
        }
        m
    }
}

impl ChatMetrics {
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "wa_chat_connections",
            "Client connections open, by transport",
            self.connections.clone(),
        );
        r.register(
            "wa_chat_logins",
            "Sessions authenticated and welcomed",
            self.logins.clone(),
        );
        r.register(
            "wa_chat_tls_resumed",
            "TLS handshakes over TCP that resumed a session from a ticket",
            self.tls_resumed.clone(),
        );
        r.register(
            "wa_chat_login_failures",
            "Connections closed before Welcome, by reason",
            self.login_failures.clone(),
        );
        r.register(
            "wa_chat_logins_refused",
            "Logins refused by admission control with OVERLOADED and a retry-after",
            self.logins_refused.clone(),
        );
        r.register(
            "wa_chat_quic_token_validated",
            "QUIC connection attempts that presented a valid address validation token",
            self.quic_token_validated.clone(),
        );
        r.register(
            "wa_chat_quic_resumed",
            "QUIC handshakes that resumed a session from a ticket",
            self.quic_resumed.clone(),
        );
        r.register(
            "wa_chat_messages_in",
            "Send and SendMedia frames taken from clients",
            self.messages_in.clone(),
        );
        r.register(
            "wa_chat_accepted_latency_seconds",
            "From a client's request to its Accepted",
            self.accepted_latency.clone(),
        );
        r.register(
            "wa_chat_messages_out",
            "Messages delivered to clients",
            self.messages_out.clone(),
        );
        r.register(
            "wa_chat_delivery_cuts",
            "Sessions closed as slow consumers because [limits] delivery_memory was full",
            self.delivery_cuts.clone(),
        );
    }

    /// A connection closed before its Welcome with `code` (`None`: the
    /// client went away).
    pub fn login_failed(&self, code: Option<Code>) {
        let reason = code.map_or("CLOSED", Code::name);
        self.login_failures
            .get_or_create(&[("reason", reason)])
            .inc();
    }

    /// Counts one open connection of `transport` until the guard drops.
    pub fn connection(&self, transport: &'static str) -> ConnectionGuard {
        let g = self
            .connections
            .get_or_create(&[("transport", transport)])
            .clone();
        g.inc();
        ConnectionGuard(g)
    }
}

/// Keeps a connection counted while it lives.
pub struct ConnectionGuard(Gauge);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
