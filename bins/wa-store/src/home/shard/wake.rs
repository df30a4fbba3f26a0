//! Waking devices: the home's side of push notifications. An item the user
//! must see ([`wakes`]) that became durable wakes each of the user's
//! devices that has a push endpoint and either no live session or only
//! sessions idle past `[push] wake_idle_after` (items pushed to them and
//! unacknowledged that long) ([`Effect::Wake`]; the push queue coalesces,
//! paces and sends). A device that connects, acknowledges on a session it
//! was woken for, is revoked or clears its endpoint cancels what waits for
//! it ([`Effect::Unwake`]).
//!
//! The endpoints are the user's record in the `PushEndpoints` key-value
//! space (so they replicate and move with the user like an account), kept
//! here in a bounded cache so that a burst to an offline user reads the
//! engine once. The same record lists the devices owed a push (`owed`): set
//! with the first wake decided for a device, cleared when its push is sent
//! or given up (`Op::PushOwed` from the sender) or cancelled, so that a
//! promoted secondary queues again what its old primary decided and did not
//! send (`push::restore`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::link::{KvSpace, PushEndpoint, PushEndpoints, PushSet, link_down};
use common::proto::{Code, Envelope, GroupOp, envelope::Content};
use prost::Message as _;

use super::{Effect, LinkId, LinkTx, Session, Shard, internal};

/// Users whose endpoints a shard remembers; past it the cache starts over.
const CACHED_USERS: usize = 16 * 1024;

/// A shard's cache of users' push endpoints (empty: none registered), and
/// when a session counts as idle.
#[derive(Default)]
pub(super) struct Endpoints {
    users: foldhash::HashMap<String, Arc<PushEndpoints>>,
    /// `[push] wake_idle_after`; `None`: only devices without a session
    /// are woken.
    idle_after: Option<Duration>,
}

/// Where a `SetPush` came from: a session (answered on its link) or the
/// push sender removing a dead token (only if it is still that token).
pub enum SetPushBy {
    Session {
        link: LinkTx,
        session: u64,
        id: Bytes,
    },
    DeadToken {
        token: String,
    },
}

impl Endpoints {
    /// Forgets what is cached of `user` (its record was written elsewhere:
    /// a hand-over).
    pub(super) fn forget(&mut self, user: &str) {
        self.users.remove(user);
    }
}

/// Whether `item`, landing in `to`'s mailbox, is one its user must see and
/// so may wake a device (docs/PROTOCOL.md, section 9.1): a message (a body
/// or media) other than the user's own copy of its group message, or a
/// group event that makes the user a member (`CREATE` or `ADD` naming it,
/// by someone else). Receipts (delivered, read) and the other group events
/// never wake; neither does anything in a group's log.
pub(super) fn wakes(to: &str, item: &Envelope) -> bool {
    if common::group::is_group_log(to) {
        return false;
    }
    match &item.content {
        Some(Content::Body(_) | Content::Media(_)) => item.group.is_empty() || item.from != to,
        Some(Content::GroupEvent(ev)) => {
            matches!(GroupOp::try_from(ev.op), Ok(GroupOp::Create | GroupOp::Add))
                && item.from != to
                && ev.members.iter().any(|m| m == to)
        }
        Some(Content::Receipt(_)) | None => false,
    }
}

impl Session {
    /// Whether this session has been idle past `after` at `now`: items were
    /// pushed to it and none was acknowledged for that long. (When it began
    /// to owe acknowledgements is learnt here, at the first item that finds
    /// it owing, and forgotten at its next acknowledgement: one timestamp,
    /// no timer.)
    fn idle(&mut self, now: Instant, after: Duration) -> bool {
        if self.inflight.is_empty() {
            self.owing_since = None;
            return false;
        }
        let since = *self.owing_since.get_or_insert(now);
        now.saturating_duration_since(since) >= after
    }
}

impl Shard {
    /// Sessions idle past `after` count as absent for pushes (`None`: off).
    pub(in crate::home) fn set_wake_idle_after(&mut self, after: Option<Duration>) {
        self.wakes.idle_after = after.filter(|d| !d.is_zero());
    }

    /// `user`'s push endpoints, from the cache or the engine.
    fn endpoints(&mut self, user: &str) -> Result<Arc<PushEndpoints>, Code> {
        if let Some(e) = self.wakes.users.get(user) {
            return Ok(Arc::clone(e));
        }
        let (_, raw) = self
            .storage
            .kv_get(KvSpace::PushEndpoints as i32 as u8, user)
            .map_err(internal)?;
        let list = Arc::new(PushEndpoints::decode(raw.as_slice()).map_err(|_| Code::Internal)?);
        if self.wakes.users.len() >= CACHED_USERS {
            self.wakes.users.clear();
        }
        self.wakes.users.insert(user.to_owned(), Arc::clone(&list));
        Ok(list)
    }

    /// An item `user` must see became durable at `now`: wake its devices
    /// that have an endpoint and no session, or only sessions idle past
    /// `wake_idle_after`, recording them as owed a push.
    pub(super) fn item_landed(&mut self, user: &str, now: Instant) {
        let known = match self.endpoints(user) {
            Ok(l) if l.endpoints.is_empty() => return,
            Ok(l) => l,
            Err(_) => {
                tracing::warn!("cannot read a user's push endpoints; no push decided");
                return;
            }
        };
        let idle_after = self.wakes.idle_after;
        let mut sessions = self.users.get_mut(user).map(|u| &mut u.sessions);
        let mut wake = Vec::new();
        for device in known.endpoints.iter().map(|e| e.device) {
            let mine = sessions
                .iter_mut()
                .flat_map(|s| s.iter_mut())
                .filter(|s| s.device == device);
            let (mut any, mut idle) = (false, Vec::new());
            for s in mine {
                any = true;
                match idle_after {
                    Some(after) if s.idle(now, after) => idle.push(s),
                    _ => {
                        idle.clear();
                        break;
                    }
                }
            }
            if any && idle.is_empty() {
                continue;
            }
            // (Acknowledging on one of these sessions cancels the wake.)
            for s in idle {
                s.woken = true;
            }
            wake.push(device);
        }
        if wake.is_empty() {
            return;
        }
        if wake.iter().any(|d| !known.owed.contains(d)) {
            let mut list = (*known).clone();
            list.owed.extend(wake.iter().copied());
            if let Err(code) = self.store_endpoints(user, list) {
                tracing::warn!(%code, "cannot record a push as owed; a failover may lose it");
            }
        }
        for device in wake {
            self.effects.push(Effect::Wake {
                user: user.to_owned(),
                device,
            });
        }
    }

    /// `device` of `user` connected: nothing waits to wake it any more.
    pub(super) fn device_connected(&mut self, user: &str, device: u32) {
        self.cancel_wake(user, device);
    }

    /// Session `session` of `user` (on `link`) acknowledged at `now`: it is
    /// not idle, and if a push was decided because it was, that push is
    /// cancelled.
    pub(super) fn showed_life(&mut self, link: LinkId, session: u64, user: &str, now: Instant) {
        let Some(s) = self.users.get_mut(user).and_then(|u| {
            u.sessions
                .iter_mut()
                .find(|s| s.link.id == link && s.id == session)
        }) else {
            return;
        };
        s.owing_since = (!s.inflight.is_empty()).then_some(now);
        if std::mem::take(&mut s.woken) {
            let device = s.device;
            self.cancel_wake(user, device);
        }
    }

    /// Nothing waits to wake `device` of `user` any more: the queue drops
    /// its push and the device is no longer owed one.
    fn cancel_wake(&mut self, user: &str, device: u32) {
        let Ok(known) = self.endpoints(user) else {
            return;
        };
        if !known.endpoints.iter().any(|e| e.device == device) {
            return;
        }
        self.effects.push(Effect::Unwake {
            user: user.to_owned(),
            device,
        });
        self.owe(user, &known, device, false);
    }

    /// The push sender finished `device`'s push (`owed` false), or the
    /// queue still holds one for it after all (`owed` true): the record
    /// says so. A push finished is checked against the queue once more
    /// ([`Effect::Unowed`]): a wake decided while the sender was finishing
    /// found the device still owed and wrote nothing.
    pub(super) fn push_owed(&mut self, user: &str, device: u32, owed: bool) {
        let Ok(known) = self.endpoints(user) else {
            return;
        };
        if self.owe(user, &known, device, owed) && !owed {
            self.effects.push(Effect::Unowed {
                user: user.to_owned(),
                device,
            });
        }
    }

    /// Records whether `device` of `user` is owed a push; true if that
    /// changed the record.
    fn owe(&mut self, user: &str, known: &PushEndpoints, device: u32, owed: bool) -> bool {
        let has_endpoint = known.endpoints.iter().any(|e| e.device == device);
        if known.owed.contains(&device) == (owed && has_endpoint) {
            return false;
        }
        let mut list = known.clone();
        list.owed.retain(|d| *d != device);
        if owed {
            list.owed.push(device);
        }
        if let Err(code) = self.store_endpoints(user, list) {
            tracing::warn!(%code, "cannot record whether a device is owed a push");
        }
        true
    }

    /// Writes `user`'s endpoints (journaled like any key-value record; owed
    /// devices without an endpoint are dropped).
    fn store_endpoints(&mut self, user: &str, mut list: PushEndpoints) -> Result<(), Code> {
        list.endpoints.sort_by_key(|e| e.device);
        list.owed.sort_unstable();
        list.owed.dedup();
        list.owed
            .retain(|d| list.endpoints.iter().any(|e| e.device == *d));
        let space = KvSpace::PushEndpoints;
        // (The time matters only to account records.)
        let current = self.kv(0, space, user, None, 0)?;
        let value = Bytes::from(list.encode_to_vec());
        let put = self.kv(0, space, user, Some((value, current.version)), 0)?;
        if put.conflict {
            return Err(Code::Internal);
        }
        self.wakes.users.insert(user.to_owned(), Arc::new(list));
        Ok(())
    }

    /// Sets (or, with `endpoint` none, clears) the push endpoint of
    /// `device`; a session's request is answered once durable.
    pub(super) fn set_push(
        &mut self,
        by: SetPushBy,
        user: &str,
        device: u32,
        endpoint: Option<PushEndpoint>,
    ) {
        // A revoked credential sets nothing (its session is being closed;
        // this request may have been on its way meanwhile).
        let revoked = match &endpoint {
            Some(e) => self
                .storage
                .min_generation(user, device)
                .map_err(internal)
                .map(|min| e.generation < min),
            None => Ok(false),
        };
        let result = revoked.and_then(|revoked| {
            if revoked {
                return Err(Code::Revoked);
            }
            self.endpoints(user)
        });
        let result = result.and_then(|current| {
            let old = current.endpoints.iter().find(|e| e.device == device);
            if let SetPushBy::DeadToken { token } = &by
                && old.is_none_or(|e| &e.token != token)
            {
                // Replaced meanwhile by the device itself: kept.
                return Ok(false);
            }
            let mut list = (*current).clone();
            list.endpoints.retain(|e| e.device != device);
            let cleared = endpoint.is_none();
            list.endpoints.extend(endpoint);
            self.store_endpoints(user, list)?;
            Ok(cleared)
        });
        if matches!(result, Ok(true)) {
            self.effects.push(Effect::Unwake {
                user: user.to_owned(),
                device,
            });
        }
        if let SetPushBy::Session { link, session, id } = by {
            let code = result.err().map_or(0, |c| c as u32);
            self.answer_when_durable(
                link,
                link_down::Kind::PushSet(PushSet { session, id, code }),
            );
        }
    }

    /// `device` of `user` was revoked below `generation`: an endpoint it set
    /// with an older credential goes, and so does anything waiting for it.
    pub(super) fn revoke_push(&mut self, user: &str, device: u32, generation: u32) {
        let Ok(current) = self.endpoints(user) else {
            tracing::error!("cannot read a revoked device's push endpoint");
            return;
        };
        let revoked = |e: &PushEndpoint| e.device == device && e.generation < generation;
        if !current.endpoints.iter().any(revoked) {
            return;
        }
        let mut list = (*current).clone();
        list.endpoints.retain(|e| !revoked(e));
        if let Err(code) = self.store_endpoints(user, list) {
            tracing::error!(%code, "cannot remove a revoked device's push endpoint");
        }
        self.effects.push(Effect::Unwake {
            user: user.to_owned(),
            device,
        });
    }
}
