//! Keeping a link to one store: dial ([`crate::link_dial`]) within a
//! timeout, hand the authenticated link to the caller until it ends, pause
//! (exponential backoff with jitter, reset by a link that came up), dial
//! again; until stopped. The one reconnect loop of the internal link.
//!
//! Two kinds of callers use it. An edge (`wa-chat`) keeps its links up all
//! the time ([`Redial::Always`]): sessions live on them and pushes come
//! unasked. [`crate::link_client`] asks homes questions now and then, so it
//! dials only while a request wants a link ([`Redial::OnDemand`],
//! [`LinkKeeper::want`]), and a request waiting for one learns of a failed
//! attempt at once ([`LinkKeeper::failures`]) rather than at its timeout.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::link_dial::{DialError, Dialed, Dialer};

/// The first pause after a failed attempt or a link that ended.
pub const BACKOFF_INITIAL: Duration = Duration::from_millis(50);
/// The longest pause between two attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// When a keeper dials again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redial {
    /// Always, after the pause: the link is wanted all the time.
    Always,
    /// Once someone wants the link ([`LinkKeeper::want`]), after the pause.
    OnDemand,
}

/// Why an attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Dial(#[from] DialError),
    #[error("no AuthOk within {0:?}")]
    Timeout(Duration),
}

/// The failed attempts so far: a waiter sees `count` rise with each.
#[derive(Debug, Clone, Default)]
pub struct Failures {
    pub count: u64,
    pub last: Option<Arc<ConnectError>>,
}

/// The reconnect loop for one store address.
pub struct LinkKeeper {
    addr: SocketAddr,
    server_name: ServerName<'static>,
    /// Longest wait for TCP connect, TLS and `AuthOk` together.
    connect_timeout: Duration,
    redial: Redial,
    wanted: Notify,
    failures: watch::Sender<Failures>,
}

impl LinkKeeper {
    pub fn new(
        addr: SocketAddr,
        server_name: ServerName<'static>,
        connect_timeout: Duration,
        redial: Redial,
    ) -> LinkKeeper {
        LinkKeeper {
            addr,
            server_name,
            connect_timeout,
            redial,
            wanted: Notify::new(),
            failures: watch::Sender::new(Failures::default()),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Someone waits for the link: an on-demand keeper dials (after the
    /// pause that follows a failure, if one is running). A want while the
    /// link is up is kept for after it ends.
    pub fn want(&self) {
        self.wanted.notify_one();
    }

    /// Follows the failed attempts.
    pub fn failures(&self) -> watch::Receiver<Failures> {
        self.failures.subscribe()
    }

    /// Keeps the link until `stop`: dials as `dialer` announcing `epoch()`,
    /// runs `serve` on each link that comes up until it returns (the link
    /// ended, or `stop`), pauses, dials again.
    pub async fn run<F, Fut>(
        &self,
        dialer: &Dialer,
        epoch: impl Fn() -> u64,
        stop: &CancellationToken,
        mut serve: F,
    ) where
        F: FnMut(Dialed) -> Fut,
        Fut: Future<Output = ()>,
    {
        let mut backoff = BACKOFF_INITIAL;
        let mut failed_in_a_row = 0u32;
        loop {
            if self.redial == Redial::OnDemand {
                tokio::select! {
                    () = self.wanted.notified() => {}
                    () = stop.cancelled() => return,
                }
            }
            if stop.is_cancelled() {
                return;
            }
            let dial = dialer.dial(self.addr, self.server_name.clone(), epoch());
            let dialed = tokio::select! {
                r = tokio::time::timeout(self.connect_timeout, dial) => match r {
                    Ok(r) => r.map_err(ConnectError::from),
                    Err(_) => Err(ConnectError::Timeout(self.connect_timeout)),
                },
                () = stop.cancelled() => return,
            };
            match dialed {
                Ok(link) => {
                    backoff = BACKOFF_INITIAL;
                    failed_in_a_row = 0;
                    let node = link.node.clone();
                    tracing::info!(%node, addr = %self.addr, "link up");
                    serve(link).await;
                    if stop.is_cancelled() {
                        return;
                    }
                    tracing::warn!(%node, addr = %self.addr, "link down");
                }
                Err(e) => {
                    failed_in_a_row += 1;
                    // Every attempt at first, then every tenth: a long outage
                    // should not flood the log.
                    if failed_in_a_row <= 3 || failed_in_a_row.is_multiple_of(10) {
                        tracing::warn!(error = %e, addr = %self.addr, failures = failed_in_a_row, "cannot reach the store");
                    }
                    self.failures.send_modify(|f| {
                        f.count += 1;
                        f.last = Some(Arc::new(e));
                    });
                }
            }
            let jittered = backoff.mul_f64(rand::random_range(0.5..=1.0));
            tokio::select! {
                () = tokio::time::sleep(jittered) => {}
                () = stop.cancelled() => return,
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dialer() -> Dialer {
        let tls = crate::tls::client_config(&[], &[crate::link::LINK_ALPN]).unwrap();
        Dialer {
            connector: tokio_rustls::TlsConnector::from(Arc::new(tls)),
            secret: bytes::Bytes::from_static(b"secret"),
            name: "test".into(),
        }
    }

    /// An address nothing listens on: every dial is refused at once.
    fn closed_port() -> SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    }

    async fn failures_reach(rx: &mut watch::Receiver<Failures>, n: u64) {
        tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|f| f.count >= n))
            .await
            .expect("the attempts came")
            .expect("the keeper is alive");
    }

    fn never_served(_: Dialed) {
        panic!("nothing listens there");
    }

    #[tokio::test]
    async fn an_on_demand_keeper_dials_when_wanted_and_an_always_keeper_by_itself() {
        let addr = closed_port();
        let name = ServerName::try_from("store.test").unwrap();
        let timeout = Duration::from_secs(5);
        let on_demand = Arc::new(LinkKeeper::new(
            addr,
            name.clone(),
            timeout,
            Redial::OnDemand,
        ));
        let always = Arc::new(LinkKeeper::new(addr, name, timeout, Redial::Always));
        let (mut wanted, mut steady) = (on_demand.failures(), always.failures());
        let stop = CancellationToken::new();
        let dialer = Arc::new(dialer());
        let tasks: Vec<_> = [&on_demand, &always]
            .into_iter()
            .map(|k| {
                let (k, d, s) = (Arc::clone(k), Arc::clone(&dialer), stop.clone());
                tokio::spawn(async move {
                    k.run(&d, || 1, &s, |link| async move { never_served(link) })
                        .await;
                })
            })
            .collect();

        on_demand.want();
        failures_reach(&mut wanted, 1).await;
        assert!(matches!(
            wanted.borrow().last.as_deref(),
            Some(ConnectError::Dial(DialError::Tcp(_)))
        ));
        // Meanwhile the other one dials again and again, pausing between.
        failures_reach(&mut steady, 4).await;
        assert_eq!(
            wanted.borrow().count,
            1,
            "an on-demand keeper dials again only when wanted"
        );
        on_demand.want();
        failures_reach(&mut wanted, 2).await;

        stop.cancel();
        for t in tasks {
            t.await.unwrap();
        }
    }
}
