//! The registry of live sessions on this edge, by session id: where the links
//! deliver what homes send for a session (pushes, typing, presence, kicks).
//!
//! Session ids are unique per edge process, hence per link, which is what the
//! link protocol needs. Deliveries never wait: each session has a bounded
//! event queue, and a session whose queue is full when a push arrives is cut
//! as a slow consumer (its items stay in the mailbox and come again).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use common::proto::{Code, Envelope};

use crate::outbound::Outbound;

/// What a link hands to a session.
#[derive(Debug)]
pub enum Event {
    /// The home confirmed the session's device (the answer to `Attach`).
    Attached,
    /// The answer to an `Append` the session made, under its own tag.
    Appended {
        tag: u64,
        code: u32,
        server_ts_ms: u64,
        duplicate: bool,
        /// With a refusal: the home's retry delay (0: the edge's default).
        retry_after_ms: u64,
    },
    /// The answer to a group request or group message the session made,
    /// under its own tag (`answer.req` is the link's).
    Grouped {
        tag: u64,
        answer: common::link::GroupDown,
    },
    Push {
        seq: u64,
        envelope: Envelope,
    },
    /// The home's answer to the session's `SetPush` (0: durable).
    PushSet {
        id: bytes::Bytes,
        code: u32,
    },
    Typing {
        from: String,
        typing: bool,
    },
    Presence {
        user: String,
        online: bool,
        last_seen_ms: u64,
    },
    /// A newer session of the same device is about to attach: read what
    /// the client has sent already (its last acks, a `Goodbye`) and act on
    /// it, then answer, so that those acks reach the home before the new
    /// session's attach (one link, in order) and the new session is not
    /// given again what this one acknowledged last.
    Drain(tokio::sync::oneshot::Sender<()>),
}

/// How to reach one session: its inbox, which also carries its kill.
#[derive(Clone, Debug)]
pub struct Handle {
    pub tx: crate::inbox::Sender,
}

impl Handle {
    /// Queues `event`; a full queue makes the session a slow consumer.
    pub fn must(&self, event: Event) {
        if let Err(crate::inbox::SendError::Full) = self.tx.try_send(event) {
            self.kill(Code::SlowConsumer);
        }
    }

    /// Queues `event` if there is room (presence and typing are best effort).
    pub fn may(&self, event: Event) {
        let _ = self.tx.try_send(event);
    }

    /// Ends the session from outside its task with `code`; the first code
    /// wins.
    pub fn kill(&self, code: Code) {
        self.tx.kill(code);
    }

    /// The code the session was killed with, if it was.
    pub fn killed(&self) -> Option<Code> {
        self.tx.killed()
    }
}

/// Who a session is, for the admin API (`wactl sessions`, `wactl kick`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SessionInfo {
    pub user: String,
    pub device: u32,
    /// When the session was welcomed (unix ms).
    pub since_ms: u64,
}

/// One registered session.
struct Entry {
    handle: Handle,
    info: SessionInfo,
    /// Its frames waiting to be written to the client (for metrics).
    queue: Option<Arc<Outbound>>,
}

#[derive(Default)]
pub struct Hub {
    sessions: Mutex<Sessions>,
    next: AtomicU64,
}

/// The sessions by id, and their ids by (user, device).
#[derive(Default)]
struct Sessions {
    by_id: HashMap<u64, Entry>,
    by_device: HashMap<(String, u32), Vec<u64>>,
}

impl Hub {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a session and returns its id (never 0).
    pub fn register(&self, handle: Handle, info: SessionInfo, queue: Option<Arc<Outbound>>) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let mut s = self.lock();
        s.by_device
            .entry((info.user.clone(), info.device))
            .or_default()
            .push(id);
        s.by_id.insert(
            id,
            Entry {
                handle,
                info,
                queue,
            },
        );
        id
    }

    /// Asks the other sessions of `user`'s `device` on this edge (an older
    /// connection the client is leaving) to act on what their clients sent
    /// already ([`Event::Drain`]); each receiver answers once its session
    /// did, or ends with it. A session whose queue is full is skipped.
    pub fn drain_others(
        &self,
        id: u64,
        user: &str,
        device: u32,
    ) -> Vec<tokio::sync::oneshot::Receiver<()>> {
        let s = self.lock();
        let Some(ids) = s.by_device.get(&(user.to_owned(), device)) else {
            return Vec::new();
        };
        ids.iter()
            .filter(|&&other| other != id)
            .filter_map(|other| s.by_id.get(other))
            .filter_map(|e| {
                let (tx, rx) = tokio::sync::oneshot::channel();
                e.handle.tx.try_send(Event::Drain(tx)).ok().map(|()| rx)
            })
            .collect()
    }

    /// The length of every session's outbound queue now.
    pub fn queue_lengths(&self) -> Vec<usize> {
        self.lock()
            .by_id
            .values()
            .filter_map(|e| e.queue.as_ref().map(|q| q.len()))
            .collect()
    }

    /// The session holding the most bytes of deliveries (and at least
    /// one), whose queue has not ended yet: the slowest reader, cut first
    /// when the edge's delivery budget is full (`session::deliveries`).
    pub fn slowest(&self) -> Option<(Handle, Arc<Outbound>)> {
        self.lock()
            .by_id
            .values()
            .filter_map(|e| e.queue.as_ref().map(|q| (e, q, q.delivery_bytes())))
            .filter(|(_, q, bytes)| *bytes > 0 && !q.ended())
            .max_by_key(|(_, _, bytes)| *bytes)
            .map(|(e, q, _)| (e.handle.clone(), Arc::clone(q)))
    }

    pub fn unregister(&self, id: u64) {
        let mut s = self.lock();
        let Some(e) = s.by_id.remove(&id) else {
            return;
        };
        let key = (e.info.user, e.info.device);
        if let Some(ids) = s.by_device.get_mut(&key) {
            ids.retain(|&i| i != id);
            if ids.is_empty() {
                s.by_device.remove(&key);
            }
        }
    }

    pub fn get(&self, id: u64) -> Option<Handle> {
        self.lock().by_id.get(&id).map(|e| e.handle.clone())
    }

    /// The sessions of `user` on this edge, by id.
    pub fn sessions_of(&self, user: &str) -> Vec<(u64, SessionInfo)> {
        let mut v: Vec<_> = self
            .lock()
            .by_id
            .iter()
            .filter(|(_, e)| e.info.user == user)
            .map(|(id, e)| (*id, e.info.clone()))
            .collect();
        v.sort_by_key(|(id, _)| *id);
        v
    }

    /// Every session's id.
    pub fn ids(&self) -> Vec<u64> {
        self.lock().by_id.keys().copied().collect()
    }

    /// Ends session `id` with `code`, if it still runs.
    pub fn kill(&self, id: u64, code: Code) {
        if let Some(e) = self.lock().by_id.get(&id) {
            e.handle.kill(code);
        }
    }

    /// Ends every session with `code` (at shutdown); returns how many.
    pub fn kill_all(&self, code: Code) -> usize {
        let s = self.lock();
        for e in s.by_id.values() {
            e.handle.kill(code);
        }
        s.by_id.len()
    }

    /// Ends the sessions of `user` (of one `device`, or all) with `code`;
    /// returns how many.
    pub fn kick(&self, user: &str, device: Option<u32>, code: Code) -> usize {
        let s = self.lock();
        let sessions = &s.by_id;
        let mut n = 0;
        for e in sessions.values() {
            if e.info.user == user && device.is_none_or(|d| d == e.info.device) {
                e.handle.kill(code);
                n += 1;
            }
        }
        n
    }

    pub fn len(&self) -> usize {
        self.lock().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Sessions> {
        self.sessions.lock().expect("hub lock is never poisoned")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn full_queue_kills_with_slow_consumer_and_first_code_wins() {
        let (tx, mut rx) = crate::inbox::channel(1);
        let h = Handle { tx };
        let hub = Hub::new();
        let info = SessionInfo {
            user: "alice".into(),
            device: 1,
            since_ms: 0,
        };
        let id = hub.register(h.clone(), info.clone(), None);
        assert_ne!(id, 0);
        assert_eq!(hub.sessions_of("alice"), vec![(id, info)]);
        assert!(hub.sessions_of("bob").is_empty());
        let push = || Event::Push {
            seq: 1,
            envelope: Envelope::default(),
        };
        hub.get(id).unwrap().must(push());
        assert_eq!(h.killed(), None);
        h.may(Event::Typing {
            from: "a".into(),
            typing: true,
        });
        assert_eq!(h.killed(), None, "best-effort events never kill");
        h.must(push());
        assert!(matches!(
            rx.recv().await,
            crate::inbox::Incoming::Killed(Code::SlowConsumer)
        ));
        h.kill(Code::Unavailable);
        assert_eq!(h.killed(), Some(Code::SlowConsumer));
        assert!(matches!(rx.try_recv(), Some(Event::Push { .. })));
        hub.unregister(id);
        assert!(hub.get(id).is_none());
    }

    #[test]
    fn slowest_is_the_live_queue_holding_the_most_deliveries() {
        use common::proto::{Deliver, ServerFrame, server_frame};
        let hub = Hub::new();
        let budget = Arc::new(crate::budget::Budget::new(1 << 30));
        let mut queues = Vec::new();
        for (user, bytes) in [("a", 100), ("b", 300), ("c", 200), ("d", 0)] {
            let (tx, _rx) = crate::inbox::channel(1);
            let h = Handle { tx };
            let q = Arc::new(Outbound::new(16));
            if bytes > 0 {
                let f = ServerFrame {
                    kind: Some(server_frame::Kind::Deliver(Deliver::default())),
                };
                q.push_delivery(f, budget.take(bytes)).unwrap();
            }
            let info = SessionInfo {
                user: user.into(),
                device: 1,
                since_ms: 0,
            };
            hub.register(h, info, Some(Arc::clone(&q)));
            queues.push(q);
        }
        let end = || crate::outbound::End {
            frame: None,
            code: 0,
        };
        let (_, q) = hub.slowest().unwrap();
        assert!(Arc::ptr_eq(&q, &queues[1]));
        q.end(end());
        assert_eq!(budget.used(), 300, "an ended queue drops its deliveries");
        let (_, q) = hub.slowest().unwrap();
        assert!(Arc::ptr_eq(&q, &queues[2]));
        q.end(end());
        queues[0].end(end());
        assert!(hub.slowest().is_none(), "none left holding deliveries");
    }

    /// A session of `user`'s `device` registered in `hub` (no outbound
    /// queue): its id, its handle and its inbox.
    fn session(hub: &Hub, user: &str, device: u32) -> (u64, Handle, crate::inbox::Receiver) {
        let (tx, rx) = crate::inbox::channel(4);
        let h = Handle { tx };
        let info = SessionInfo {
            user: user.into(),
            device,
            since_ms: 0,
        };
        (hub.register(h.clone(), info, None), h, rx)
    }

    #[test]
    fn kick_ends_the_sessions_of_one_user_or_one_device() {
        let hub = Hub::new();
        let mut handles = Vec::new();
        for (user, device) in [("alice", 1), ("alice", 2), ("bob", 1)] {
            let (_, h, _rx) = session(&hub, user, device);
            handles.push(h);
        }
        assert_eq!(hub.kick("alice", Some(2), Code::Unavailable), 1);
        assert_eq!(handles[0].killed(), None);
        assert_eq!(handles[1].killed(), Some(Code::Unavailable));
        assert_eq!(hub.kick("alice", None, Code::Unavailable), 2);
        assert_eq!(handles[0].killed(), Some(Code::Unavailable));
        assert_eq!(handles[2].killed(), None);
        assert_eq!(hub.kick("carol", None, Code::Unavailable), 0);
    }

    #[test]
    fn kill_all_ends_every_session_and_the_first_code_stays() {
        let hub = Hub::new();
        let (_, a, _ra) = session(&hub, "alice", 1);
        let (_, b, _rb) = session(&hub, "bob", 1);
        b.kill(Code::SlowConsumer);
        assert_eq!(hub.kill_all(Code::ShuttingDown), 2);
        assert_eq!(a.killed(), Some(Code::ShuttingDown));
        assert_eq!(b.killed(), Some(Code::SlowConsumer), "killed before: kept");
        assert_eq!(Hub::new().kill_all(Code::ShuttingDown), 0);
    }

    /// Only the other sessions of the same (user, device) are asked to
    /// drain, and a session that is gone is no longer found.
    #[tokio::test]
    async fn drain_others_asks_the_same_device_only() {
        let hub = Hub::new();
        let mut queues = Vec::new();
        let mut ids = Vec::new();
        for (user, device) in [("alice", 1), ("alice", 2), ("bob", 1), ("alice", 1)] {
            let (id, _, rx) = session(&hub, user, device);
            ids.push(id);
            queues.push(rx);
        }
        let mut asked = hub.drain_others(ids[3], "alice", 1);
        assert_eq!(asked.len(), 1);
        match queues[0].try_recv() {
            Some(Event::Drain(done)) => done.send(()).unwrap(),
            other => panic!("expected a drain, got {other:?}"),
        }
        asked.pop().unwrap().await.unwrap();
        for q in &mut queues[1..] {
            assert!(q.try_recv().is_none(), "other devices and users untouched");
        }
        hub.unregister(ids[0]);
        assert!(hub.drain_others(ids[3], "alice", 1).is_empty());
        hub.unregister(ids[3]);
        assert!(!hub.lock().by_device.contains_key(&("alice".to_owned(), 1)));
    }
}
