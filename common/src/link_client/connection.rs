//! The client's connections: one slot per store address, kept by
//! `crate::link_keeper` (dialling on demand), and the requests sent over
//! them, matched to their answers by `req`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rustls_pki_types::ServerName;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::{LinkClient, LinkClientError};
use crate::cluster::Island;
use crate::link::{LinkDown, LinkUp, link_down, link_up};
use crate::link_keeper::{LinkKeeper, Redial};

/// Requests queued towards one store before callers are refused.
const QUEUE: usize = 1024;

type Waiters = Arc<Mutex<HashMap<u64, oneshot::Sender<link_down::Kind>>>>;

struct Conn {
    tx: mpsc::Sender<LinkUp>,
    waiters: Waiters,
    next_req: AtomicU64,
    dead: CancellationToken,
}

/// One store address: its keeper (`crate::link_keeper`, dialling on
/// demand) and the live connection, if any.
pub(super) struct Slot {
    keeper: LinkKeeper,
    conn: watch::Sender<Option<Arc<Conn>>>,
}

impl LinkClient {
    /// Sends the request `make(req)` to `island`'s primary and waits for the
    /// answer carrying the same `req`.
    pub(super) async fn request(
        &self,
        island: &Island,
        make: impl FnOnce(u64) -> link_up::Kind,
    ) -> Result<link_down::Kind, LinkClientError> {
        let addr = island.primary;
        let conn = self.conn(island).await?;
        let req = conn.next_req.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        conn.waiters
            .lock()
            .expect("waiters lock is never poisoned")
            .insert(req, tx);
        // The reader clears the waiters after marking the connection dead, so
        // a waiter added after that is seen here.
        let sent = if conn.dead.is_cancelled() {
            Err(())
        } else {
            conn.tx
                .try_send(LinkUp {
                    kind: Some(make(req)),
                })
                .map_err(|_| ())
        };
        if sent.is_err() {
            conn.waiters
                .lock()
                .expect("waiters lock is never poisoned")
                .remove(&req);
            return Err(LinkClientError::Unavailable { addr });
        }
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(LinkClientError::Unavailable { addr }),
            Err(_) => {
                conn.waiters
                    .lock()
                    .expect("waiters lock is never poisoned")
                    .remove(&req);
                Err(LinkClientError::Timeout {
                    addr,
                    after: self.timeout,
                })
            }
        }
    }

    /// The live connection to `island`'s primary; if there is none, has
    /// its keeper dial and waits for the outcome (within the timeout).
    async fn conn(&self, island: &Island) -> Result<Arc<Conn>, LinkClientError> {
        let addr = island.primary;
        let slot = self.slot(island)?;
        let mut conn = slot.conn.subscribe();
        let mut failures = slot.keeper.failures();
        failures.borrow_and_update();
        if let Some(c) = live(&conn.borrow_and_update()) {
            return Ok(c);
        }
        slot.keeper.want();
        let wait = async {
            loop {
                tokio::select! {
                    changed = conn.changed() => {
                        if changed.is_err() {
                            return Err(LinkClientError::Unavailable { addr });
                        }
                        if let Some(c) = live(&conn.borrow_and_update()) {
                            return Ok(c);
                        }
                    }
                    changed = failures.changed() => {
                        let reason = match (changed, &failures.borrow().last) {
                            (Ok(()), Some(e)) => e.to_string(),
                            _ => "the client is closing".to_owned(),
                        };
                        return Err(LinkClientError::Connect { addr, reason });
                    }
                }
            }
        };
        tokio::time::timeout(self.timeout, wait)
            .await
            .map_err(|_| LinkClientError::Timeout {
                addr,
                after: self.timeout,
            })?
    }

    /// The slot of `island`'s primary, made (and its keeper started) on
    /// first use.
    fn slot(&self, island: &Island) -> Result<Arc<Slot>, LinkClientError> {
        let addr = island.primary;
        let key = (addr, island.server_name.clone());
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = slots.get(&key) {
            return Ok(Arc::clone(s));
        }
        let name = ServerName::try_from(island.server_name.clone()).map_err(|_| {
            LinkClientError::Connect {
                addr,
                reason: format!("bad server name {:?}", island.server_name),
            }
        })?;
        let slot = Arc::new(Slot {
            keeper: LinkKeeper::new(addr, name, self.timeout, Redial::OnDemand),
            conn: watch::Sender::new(None),
        });
        let (s, dialer, map, stop) = (
            Arc::clone(&slot),
            Arc::clone(&self.dialer),
            Arc::clone(&self.map),
            self.stop.clone(),
        );
        self.tasks.spawn(async move {
            let epoch = || map.read().unwrap_or_else(|p| p.into_inner()).epoch;
            s.keeper
                .run(&dialer, epoch, &stop, |link| serve(&s, link, &stop))
                .await;
        });
        slots.insert(key, Arc::clone(&slot));
        Ok(slot)
    }
}

/// The connection in `c`, if it is still alive.
fn live(c: &Option<Arc<Conn>>) -> Option<Arc<Conn>> {
    c.as_ref().filter(|c| !c.dead.is_cancelled()).cloned()
}

/// Runs one authenticated link of `slot` until it breaks or `stop`: its
/// writer, and the reader that hands each answer to the request waiting for
/// it. Requests still waiting when it ends fail.
async fn serve(slot: &Slot, link: crate::link_dial::Dialed, stop: &CancellationToken) {
    let crate::link_dial::Dialed {
        mut reader,
        writer: w,
        ..
    } = link;
    let (tx, rx) = mpsc::channel::<LinkUp>(QUEUE);
    let waiters: Waiters = Arc::default();
    let dead = CancellationToken::new();
    let conn = Arc::new(Conn {
        tx,
        waiters: Arc::clone(&waiters),
        next_req: AtomicU64::new(1),
        dead: dead.clone(),
    });
    let wdead = dead.clone();
    let writer = tokio::spawn(async move {
        let never = CancellationToken::new();
        crate::wire::write_link(w, rx, None, wdead.clone(), never).await;
        wdead.cancel();
    });
    slot.conn.send_replace(Some(conn));
    loop {
        let frame = tokio::select! {
            f = reader.read::<LinkDown>() => f,
            () = dead.cancelled() => break,
            () = stop.cancelled() => break,
        };
        let Ok(Some(LinkDown { kind: Some(kind) })) = frame else {
            break;
        };
        let req = match &kind {
            link_down::Kind::KvResult(r) => r.req,
            link_down::Kind::RevokeResult(r) => r.req,
            link_down::Kind::AppendResult(r) => r.req,
            link_down::Kind::HandoffResult(r) => r.req,
            link_down::Kind::DeviceChecked(r) => r.req,
            link_down::Kind::GroupDelivered(r) => r.req,
            link_down::Kind::GroupsCounted(r) => r.req,
            link_down::Kind::GroupResult(r) => r.req,
            _ => continue,
        };
        let waiter = waiters
            .lock()
            .expect("waiters lock is never poisoned")
            .remove(&req);
        if let Some(w) = waiter {
            let _ = w.send(kind);
        }
    }
    dead.cancel();
    slot.conn.send_replace(None);
    // Dropping the senders fails every request still waiting.
    waiters
        .lock()
        .expect("waiters lock is never poisoned")
        .clear();
    let _ = writer.await;
}
