//! Waking offline devices: the home's side of push notifications. An item
//! that became durable for a user wakes each of the user's devices that has
//! a push endpoint and no live session ([`Effect::Wake`]; the push queue
//! coalesces, paces and sends). A device that connects, is revoked or
//! clears its endpoint cancels what waits for it ([`Effect::Unwake`]).
//!
//! The endpoints are the user's record in the `PushEndpoints` key-value
//! space (so they replicate and move with the user like an account), kept
//! here in a bounded cache so that a burst to an offline user reads the
//! engine once.

use std::sync::Arc;

use bytes::Bytes;
use common::link::{KvSpace, PushEndpoint, PushEndpoints, PushSet, link_down};
use common::proto::Code;
use prost::Message as _;

use super::{Effect, LinkTx, Shard, internal};

/// Users whose endpoints a shard remembers; past it the cache starts over.
const CACHED_USERS: usize = 16 * 1024;

/// A shard's cache of users' push endpoints (empty: none registered).
#[derive(Default)]
pub(super) struct Endpoints(foldhash::HashMap<String, Arc<[PushEndpoint]>>);

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
        self.0.remove(user);
    }
}

impl Shard {
    /// `user`'s push endpoints, from the cache or the engine.
    fn endpoints(&mut self, user: &str) -> Result<Arc<[PushEndpoint]>, Code> {
        if let Some(e) = self.wakes.0.get(user) {
            return Ok(Arc::clone(e));
        }
        let (_, raw) = self
            .storage
            .kv_get(KvSpace::PushEndpoints as i32 as u8, user)
            .map_err(internal)?;
        let list: Arc<[PushEndpoint]> = PushEndpoints::decode(raw.as_slice())
            .map_err(|_| Code::Internal)?
            .endpoints
            .into();
        if self.wakes.0.len() >= CACHED_USERS {
            self.wakes.0.clear();
        }
        self.wakes.0.insert(user.to_owned(), Arc::clone(&list));
        Ok(list)
    }

    /// An item for `user` became durable: wake its offline devices that
    /// have an endpoint.
    pub(super) fn item_landed(&mut self, user: &str) {
        let list = match self.endpoints(user) {
            Ok(l) if l.is_empty() => return,
            Ok(l) => l,
            Err(_) => {
                tracing::warn!("cannot read a user's push endpoints; no push decided");
                return;
            }
        };
        let online = |device: u32| {
            self.users
                .get(user)
                .is_some_and(|u| u.sessions.iter().any(|s| s.device == device))
        };
        let offline: Vec<u32> = list
            .iter()
            .map(|e| e.device)
            .filter(|d| !online(*d))
            .collect();
        for device in offline {
            self.effects.push(Effect::Wake {
                user: user.to_owned(),
                device,
            });
        }
    }

    /// `device` of `user` connected: nothing waits to wake it any more.
    pub(super) fn device_connected(&mut self, user: &str, device: u32) {
        if self
            .endpoints(user)
            .is_ok_and(|l| l.iter().any(|e| e.device == device))
        {
            self.effects.push(Effect::Unwake {
                user: user.to_owned(),
                device,
            });
        }
    }

    /// Writes `user`'s endpoints (journaled like any key-value record).
    fn store_endpoints(
        &mut self,
        user: &str,
        list: Vec<PushEndpoint>,
        now_ms: u64,
    ) -> Result<(), Code> {
        let space = KvSpace::PushEndpoints;
        let current = self.kv(0, space, user, None, now_ms)?;
        let value = Bytes::from(
            PushEndpoints {
                endpoints: list.clone(),
            }
            .encode_to_vec(),
        );
        let put = self.kv(0, space, user, Some((value, current.version)), now_ms)?;
        if put.conflict {
            return Err(Code::Internal);
        }
        self.wakes.0.insert(user.to_owned(), list.into());
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
        now_ms: u64,
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
            let old = current.iter().find(|e| e.device == device);
            if let SetPushBy::DeadToken { token } = &by
                && old.is_none_or(|e| &e.token != token)
            {
                // Replaced meanwhile by the device itself: kept.
                return Ok(false);
            }
            let mut list: Vec<PushEndpoint> = current
                .iter()
                .filter(|e| e.device != device)
                .cloned()
                .collect();
            let cleared = endpoint.is_none();
            list.extend(endpoint);
            list.sort_by_key(|e| e.device);
            self.store_endpoints(user, list, now_ms)?;
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
    pub(super) fn revoke_push(&mut self, user: &str, device: u32, generation: u32, now_ms: u64) {
        let Ok(current) = self.endpoints(user) else {
            tracing::error!("cannot read a revoked device's push endpoint");
            return;
        };
        if !current
            .iter()
            .any(|e| e.device == device && e.generation < generation)
        {
            return;
        }
        let list = current
            .iter()
            .filter(|e| !(e.device == device && e.generation < generation))
            .cloned()
            .collect();
        if let Err(code) = self.store_endpoints(user, list, now_ms) {
            tracing::error!(%code, "cannot remove a revoked device's push endpoint");
        }
        self.effects.push(Effect::Unwake {
            user: user.to_owned(),
            device,
        });
    }
}
