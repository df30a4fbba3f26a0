//! One authenticated connection from this edge to a store, as the sessions
//! see it: frames queued without waiting (control frames never behind
//! appends), each request's answer routed back to its session by request
//! id, and, when the connection breaks or a home stops answering, every
//! session that depended on it closed with `UNAVAILABLE` (the link's task,
//! `crate::links`, does the I/O and calls in here).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use common::link::{Append, Attach, Detach, LinkUp, link_up};
use common::proto::{Code, Envelope};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::hub::{Event, Handle};
use crate::links::LinkDownError;

/// One authenticated connection to a store.
pub struct LinkConn {
    /// Attaches, detaches, acks, typing, presence: never behind appends, so
    /// that acks free the home's windows even while a session sends a lot.
    control: mpsc::Sender<LinkUp>,
    /// Appends.
    bulk: mpsc::Sender<LinkUp>,
    next_req: AtomicU64,
    inner: Mutex<ConnState>,
}

#[derive(Default)]
struct ConnState {
    /// Set once the connection broke; nothing new may depend on it then.
    dead: bool,
    /// Appends waiting for their `AppendResult`, by request id (the oldest
    /// first: ids rise with time).
    pending: BTreeMap<u64, Waiter>,
    /// Sessions attached through this connection.
    homed: HashMap<u64, crate::inbox::Sender>,
}

struct Waiter {
    session: Handle,
    tag: u64,
    /// When the append was queued.
    since: Instant,
}

impl LinkConn {
    pub(crate) fn new(control: mpsc::Sender<LinkUp>, bulk: mpsc::Sender<LinkUp>) -> LinkConn {
        LinkConn {
            control,
            bulk,
            next_req: AtomicU64::new(1),
            inner: Mutex::new(ConnState::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ConnState> {
        self.inner
            .lock()
            .expect("link state lock is never poisoned")
    }

    /// Frames waiting to be written: (control, appends).
    pub fn queue_lengths(&self) -> (usize, usize) {
        let waiting = |tx: &mpsc::Sender<LinkUp>| tx.max_capacity() - tx.capacity();
        (waiting(&self.control), waiting(&self.bulk))
    }

    pub(crate) fn queue(&self, kind: link_up::Kind) -> Result<(), LinkDownError> {
        let tx = match kind {
            link_up::Kind::Append(_) | link_up::Kind::Group(_) => &self.bulk,
            _ => &self.control,
        };
        tx.try_send(LinkUp { kind: Some(kind) })
            .map_err(|_| LinkDownError)
    }

    /// Queues a frame that needs no answer (ack, typing, watch). Dropped if the
    /// link is down.
    pub fn send(&self, kind: link_up::Kind) -> Result<(), LinkDownError> {
        if self.lock().dead {
            return Err(LinkDownError);
        }
        self.queue(kind)
    }

    /// Queues an append routed by the map of `epoch`; its result comes to
    /// `session` as [`Event::Appended`] with `tag`. If the connection breaks
    /// first, the session is killed with `UNAVAILABLE` instead.
    pub fn append(
        &self,
        to: &str,
        envelope: Envelope,
        epoch: u64,
        from_generation: u32,
        session: &Handle,
        tag: u64,
    ) -> Result<(), LinkDownError> {
        self.request(session, tag, |req| {
            link_up::Kind::Append(Append {
                req,
                to: to.to_owned(),
                envelope: Some(envelope),
                epoch,
                handoff: false,
                from_generation,
            })
        })
    }

    /// Queues a group request or group message (`up`, whose `req` is set
    /// here) at the group's home; its answer comes to `session` as
    /// [`Event::Grouped`] with `tag`, or the session is killed like an
    /// append's when the connection breaks first.
    pub fn group(
        &self,
        mut up: common::link::GroupUp,
        session: &Handle,
        tag: u64,
    ) -> Result<(), LinkDownError> {
        self.request(session, tag, |req| {
            up.req = req;
            link_up::Kind::Group(up)
        })
    }

    /// Queues the request `make` builds with a fresh `req`, its answer
    /// awaited for `session` under `tag` (an append's or a group request's:
    /// the session is killed with `UNAVAILABLE` if the link breaks first).
    fn request(
        &self,
        session: &Handle,
        tag: u64,
        make: impl FnOnce(u64) -> link_up::Kind,
    ) -> Result<(), LinkDownError> {
        let req = self.next_req.fetch_add(1, Ordering::Relaxed);
        {
            let mut st = self.lock();
            if st.dead {
                return Err(LinkDownError);
            }
            st.pending.insert(
                req,
                Waiter {
                    session: session.clone(),
                    tag,
                    since: Instant::now(),
                },
            );
        }
        let r = self.queue(make(req));
        if r.is_err() {
            self.lock().pending.remove(&req);
        }
        r
    }

    pub(crate) fn resolve_group(&self, r: common::link::GroupDown) {
        let waiter = self.lock().pending.remove(&r.req);
        match waiter {
            Some(w) => w.session.must(Event::Grouped {
                tag: w.tag,
                answer: r,
            }),
            None => tracing::debug!(req = r.req, "group result for an unknown request"),
        }
    }

    /// Registers `session` as living on this connection and attaches it at
    /// the home, routed by the map of `epoch`.
    #[allow(clippy::too_many_arguments)]
    pub fn attach(
        &self,
        session: u64,
        user: &str,
        device: u32,
        generation: u32,
        epoch: u64,
        kill: crate::inbox::Sender,
    ) -> Result<(), LinkDownError> {
        {
            let mut st = self.lock();
            if st.dead {
                return Err(LinkDownError);
            }
            st.homed.insert(session, kill);
        }
        let r = self.queue(link_up::Kind::Attach(Attach {
            session,
            user: user.to_owned(),
            device,
            generation,
            epoch,
        }));
        if r.is_err() {
            self.lock().homed.remove(&session);
        }
        r
    }

    /// The session ended: forget it here and tell the home.
    pub fn detach(&self, session: u64, user: &str) {
        let dead = {
            let mut st = self.lock();
            st.homed.remove(&session);
            st.dead
        };
        if !dead {
            let _ = self.queue(link_up::Kind::Detach(Detach {
                session,
                user: user.to_owned(),
            }));
        }
    }

    pub(crate) fn resolve(&self, r: common::link::AppendResult) {
        let waiter = self.lock().pending.remove(&r.req);
        match waiter {
            Some(w) => w.session.must(Event::Appended {
                tag: w.tag,
                code: r.code,
                server_ts_ms: r.server_ts_ms,
                duplicate: r.duplicate,
                retry_after_ms: r.retry_after_ms,
            }),
            None => tracing::debug!(req = r.req, "result for an unknown request"),
        }
    }

    /// Closes, with `UNAVAILABLE`, every session with an append queued
    /// before `cutoff` and still unanswered (the home is alive but does not
    /// answer: a stalled disk, a stuck shard). As when the link breaks, the
    /// session rather than the request fails, which keeps each sender's
    /// order: the client resends everything on its next session. Returns
    /// how many appends were given up.
    pub(crate) fn expire(&self, cutoff: Instant) -> usize {
        let overdue: Vec<Waiter> = {
            let mut st = self.lock();
            let mut out = Vec::new();
            while let Some(e) = st.pending.first_entry() {
                if e.get().since >= cutoff {
                    break;
                }
                out.push(e.remove());
            }
            out
        };
        for w in &overdue {
            w.session.kill(Code::Unavailable);
        }
        overdue.len()
    }

    /// Marks the connection dead and kills every session that depended on
    /// it: those attached through it and those waiting for an append on it
    /// (failing them, rather than answering `UNAVAILABLE` per request, keeps
    /// each sender's order: the client resends everything, in order, on its
    /// next session). Returns how many appends and sessions were affected.
    pub(crate) fn fail(&self) -> (usize, usize) {
        let (pending, homed) = {
            let mut st = self.lock();
            st.dead = true;
            (
                std::mem::take(&mut st.pending),
                std::mem::take(&mut st.homed),
            )
        };
        for w in pending.values() {
            w.session.kill(Code::Unavailable);
        }
        for k in homed.values() {
            k.kill(Code::Unavailable);
        }
        (pending.len(), homed.len())
    }
}
