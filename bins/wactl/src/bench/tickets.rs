//! One bench session's TLS session tickets, as a phone keeps its own: the
//! last ticket the edge sent, offered when the session dials again, so that
//! a reconnect resumes (no certificate to verify here, none to sign at the
//! edge). A store shared by all sessions would not do: rustls keeps a few
//! tickets per server name and each is good once, so thousands of sessions
//! dialing one edge would mostly find none.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use rustls_pki_types::ServerName;
use tokio_rustls::rustls::NamedGroup;
use tokio_rustls::rustls::client::{
    ClientSessionStore, Tls12ClientSessionValue, Tls13ClientSessionValue,
};

#[derive(Debug)]
pub(crate) struct Tickets {
    ticket: Mutex<Option<Tls13ClientSessionValue>>,
    group: Mutex<Option<NamedGroup>>,
    /// Tickets offered, over all sessions (resumptions attempted).
    offered: Arc<AtomicU64>,
}

impl Tickets {
    pub(crate) fn new(offered: Arc<AtomicU64>) -> Tickets {
        Tickets {
            ticket: Mutex::default(),
            group: Mutex::default(),
            offered,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ClientSessionStore for Tickets {
    fn set_kx_hint(&self, _: ServerName<'static>, group: NamedGroup) {
        *lock(&self.group) = Some(group);
    }

    fn kx_hint(&self, _: &ServerName<'_>) -> Option<NamedGroup> {
        *lock(&self.group)
    }

    // TLS 1.2 is never offered.
    fn set_tls12_session(&self, _: ServerName<'static>, _: Tls12ClientSessionValue) {}

    fn tls12_session(&self, _: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        None
    }

    fn remove_tls12_session(&self, _: &ServerName<'static>) {}

    fn insert_tls13_ticket(&self, _: ServerName<'static>, value: Tls13ClientSessionValue) {
        *lock(&self.ticket) = Some(value);
    }

    fn take_tls13_ticket(&self, _: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        let t = lock(&self.ticket).take();
        if t.is_some() {
            self.offered.fetch_add(1, Relaxed);
        }
        t
    }
}
