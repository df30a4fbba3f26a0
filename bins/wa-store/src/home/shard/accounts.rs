//! Accounts and revocation: key-value records (read, compare-and-set) and
//! device generations.

use common::link::{DeviceChecked, Kick, KvResult, KvSpace, RevokeResult, link_down};
use common::proto::Code;

use super::{Effect, Shard, internal, went_offline};
use crate::journal::{KvRecord, Record, RevokeRecord, record};

impl Shard {
    /// A key-value read or compare-and-set. A write goes to the engine and
    /// the journal (whose sync makes it durable; the journal segment is kept
    /// until an engine flush has covered it, like a delete's).
    pub(super) fn kv(
        &mut self,
        req: u64,
        space: KvSpace,
        key: &str,
        put: Option<(bytes::Bytes, u64)>,
        now_ms: u64,
    ) -> Result<KvResult, Code> {
        let sp = space as i32 as u8;
        let (version, value) = self.storage.kv_get(sp, key).map_err(internal)?;
        let last_seen_ms = if space == KvSpace::Account {
            match self.users.get(key) {
                Some(u) if !u.sessions.is_empty() => now_ms,
                Some(u) => u.last_seen.unwrap_or(0),
                None => self.storage.last_seen(key).map_err(internal)?.unwrap_or(0),
            }
        } else {
            0
        };
        let current = |conflict| KvResult {
            req,
            code: 0,
            value: value.clone().into(),
            version,
            conflict,
            last_seen_ms,
        };
        let Some((new, expected)) = put else {
            return Ok(current(false));
        };
        if expected != version {
            return Ok(current(true));
        }
        let version = version + 1;
        self.storage
            .kv_put(sp, key, version, &new)
            .map_err(internal)?;
        let rec = Record {
            kind: Some(record::Kind::Kv(KvRecord {
                space: u32::from(sp),
                key: key.to_owned(),
                version,
                value: new.to_vec(),
            })),
        };
        self.journal.append(&rec, false).map_err(internal)?;
        self.commit.ticket();
        if space == KvSpace::PresencePrivacy {
            self.privacy_changed(key);
        }
        if space == KvSpace::PushEndpoints {
            // (Only a hand-over writes them through here.)
            self.wakes.forget(key);
        }
        Ok(KvResult {
            req,
            code: 0,
            value: new,
            version,
            conflict: false,
            last_seen_ms,
        })
    }

    /// Whether (`user`, `device`) is accepted at `generation`: `REVOKED`
    /// below its lowest accepted generation. A revocation is written to
    /// the engine before it is answered, so once answered every check sees
    /// it (its answer waits for the journal sync; a check answered in
    /// between already refuses).
    pub(super) fn check_device(
        &self,
        req: u64,
        user: &str,
        device: u32,
        generation: u32,
    ) -> DeviceChecked {
        let banned = super::operator::banned(&*self.storage, user);
        let code = match self.storage.min_generation(user, device) {
            _ if matches!(banned, Ok(true)) => Code::Banned,
            Ok(min) if generation < min => Code::Revoked,
            _ if banned.is_err() => Code::Internal,
            Ok(_) => return DeviceChecked { req, code: 0 },
            Err(e) => {
                tracing::error!(error = %e, "cannot read a device generation");
                Code::Internal
            }
        };
        DeviceChecked {
            req,
            code: code as u32,
        }
    }

    /// Records the lowest accepted generation of (`user`, `device`) and
    /// closes that device's sessions below it with `REVOKED`.
    pub(super) fn revoke(
        &mut self,
        req: u64,
        user: &str,
        device: u32,
        generation: u32,
        now_ms: u64,
    ) -> RevokeResult {
        let mut kicked = 0;
        if let Some(u) = self.users.get_mut(user) {
            let before = u.sessions.len();
            let out = &mut self.effects;
            u.sessions.retain(|s| {
                let revoked = s.device == device && s.generation < generation;
                if revoked {
                    out.push(Effect::Send {
                        link: s.link.clone(),
                        frame: link_down::Kind::Kick(Kick {
                            session: s.id,
                            code: Code::Revoked as u32,
                        }),
                    });
                }
                !revoked
            });
            kicked = (before - u.sessions.len()) as u32;
            if before > 0 && u.sessions.is_empty() {
                went_offline(&*self.storage, u, user, now_ms, &mut self.effects);
            }
        }
        self.evict_if_idle(user);
        self.revoke_push(user, device, generation);
        tracing::info!(device, generation, kicked, "device generation revoked");
        let stored = self
            .storage
            .set_min_generation(user, device, generation)
            .map_err(internal)
            .and_then(|()| {
                let rec = Record {
                    kind: Some(record::Kind::Revoke(RevokeRecord {
                        user: user.to_owned(),
                        device,
                        generation,
                    })),
                };
                self.journal.append(&rec, false).map_err(internal)
            });
        if let Err(code) = stored {
            return RevokeResult {
                req,
                code: code as u32,
                kicked,
            };
        }
        self.commit.ticket();
        RevokeResult {
            req,
            code: 0,
            kicked,
        }
    }
}
