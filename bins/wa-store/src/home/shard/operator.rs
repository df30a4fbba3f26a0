//! An operator's look at and changes of one user (`super::super::operator`):
//! show, ban, unban, delete, forget a phone number, trace a message.

use std::sync::Arc;

use common::link::{Kick, KvSpace, link_down};
use common::proto::{Code, ItemKind};

use super::super::operator::{Action, Answer, BANNED, Deleted, SessionView, TraceView, UserView};
use super::{Effect, Session, Shard, went_offline};
use crate::journal::{KvRecord, Record, record};
use crate::storage::{DedupeKey, MailboxSize, Storage, StorageError};

/// Whether `user` is banned (read at every attach and device check).
pub(super) fn banned(storage: &dyn Storage, user: &str) -> Result<bool, StorageError> {
    Ok(!storage.kv_get(BANNED, user)?.1.is_empty())
}

fn view(s: &Session) -> SessionView {
    SessionView {
        link: s.link.id,
        session: s.id,
        device: s.device,
        generation: s.generation,
        unacked: s.inflight.len(),
    }
}

impl Shard {
    pub(super) fn operator(&mut self, key: &str, action: Action, now_ms: u64) -> Answer {
        let done = match action {
            Action::Show => self.show(key).map(Answer::User),
            Action::Ban { reason } => {
                let value = serde_json::json!({ "since_ms": now_ms, "reason": reason });
                self.set_ban(key, value.to_string().into_bytes(), now_ms)
            }
            Action::Unban => self.set_ban(key, Vec::new(), now_ms),
            Action::Delete { devices } => self.delete_user(key, devices, now_ms),
            Action::ForgetPhone { user } => self.forget_phone(key, &user),
            Action::Trace { from, id } => self.trace(key, &from, &id).map(Answer::Trace),
        };
        done.unwrap_or_else(|e| {
            tracing::error!(error = %e, "an operator's request failed");
            Answer::Failed(e.to_string())
        })
    }

    fn show(&mut self, user: &str) -> Result<UserView, StorageError> {
        let storage = Arc::clone(&self.storage);
        let (account_version, account) = storage.kv_get(KvSpace::Account as u8, user)?;
        let ban = storage.kv_get(BANNED, user)?.1;
        let mut v = UserView {
            account: (!account.is_empty()).then_some(account),
            account_version,
            ban: (!ban.is_empty()).then_some(ban),
            generations: storage.generations_of(user)?,
            ..UserView::default()
        };
        match self.users.get_mut(user) {
            Some(u) => {
                v.sessions = u.sessions.iter().map(view).collect();
                v.cached = MailboxSize {
                    items: u.cache.len() as u64,
                    bytes: u.cache_bytes,
                };
                v.engine = u.engine_size(&*storage, user)?;
                v.last_seen_ms = u.last_seen;
            }
            None => {
                v.engine = storage.mailbox_size(user)?;
                v.last_seen_ms = storage.last_seen(user)?;
            }
        }
        Ok(v)
    }

    /// Writes a key-value record as [`Shard::kv`] does (engine, then
    /// journal), whatever its version was.
    fn put_record(&mut self, space: u8, key: &str, value: Vec<u8>) -> Result<(), StorageError> {
        let (version, _) = self.storage.kv_get(space, key)?;
        let version = version + 1;
        self.storage.kv_put(space, key, version, &value)?;
        let rec = Record {
            kind: Some(record::Kind::Kv(KvRecord {
                space: u32::from(space),
                key: key.to_owned(),
                version,
                value,
            })),
        };
        self.journal
            .append(&rec, false)
            .map_err(|e| StorageError::Engine {
                op: "journal append",
                source: Box::new(e),
            })?;
        self.commit.ticket();
        Ok(())
    }

    /// Bans (a non-empty `value`) or lifts the ban; a ban closes every
    /// session of the user with `BANNED`.
    fn set_ban(&mut self, user: &str, value: Vec<u8>, now_ms: u64) -> Result<Answer, StorageError> {
        let was = banned(&*self.storage, user)?;
        let ban = !value.is_empty();
        self.put_record(BANNED, user, value)?;
        let mut kicked = 0;
        if ban && let Some(u) = self.users.get_mut(user) {
            for s in u.sessions.drain(..) {
                self.effects.push(Effect::Send {
                    link: s.link.clone(),
                    frame: link_down::Kind::Kick(Kick {
                        session: s.id,
                        code: Code::Banned as u32,
                    }),
                });
                kicked += 1;
            }
            if kicked > 0 {
                went_offline(&*self.storage, u, user, now_ms, &mut self.effects);
            }
        }
        self.evict_if_idle(user);
        tracing::info!(ban, was, kicked, "an operator changed a ban");
        Ok(Answer::Banned { was, kicked })
    }

    fn delete_user(
        &mut self,
        user: &str,
        mut devices: Vec<u32>,
        now_ms: u64,
    ) -> Result<Answer, StorageError> {
        devices.extend(self.storage.generations_of(user)?.into_iter().map(|g| g.0));
        if let Some(u) = self.users.get(user) {
            devices.extend(u.sessions.iter().map(|s| s.device));
        }
        devices.sort_unstable();
        devices.dedup();
        let mut kicked = 0;
        for &d in &devices {
            let r = self.revoke(0, user, d, u32::MAX, now_ms);
            if r.code != 0 {
                return Err(StorageError::Corrupt {
                    what: format!("revoking device {d} failed with code {}", r.code),
                });
            }
            kicked += r.kicked;
        }
        let seqs: Vec<u64> = self.export(user).iter().map(|i| i.seq).collect();
        let items = self.remove(user, &seqs, false);
        let (_, account) = self.storage.kv_get(KvSpace::Account as u8, user)?;
        if !account.is_empty() {
            self.put_record(KvSpace::Account as u8, user, Vec::new())?;
        }
        tracing::info!(
            items,
            devices = devices.len(),
            kicked,
            "an operator deleted a user"
        );
        Ok(Answer::Deleted(Deleted {
            account: (!account.is_empty()).then_some(account),
            items,
            devices,
            kicked,
        }))
    }

    fn forget_phone(&mut self, number: &str, user: &str) -> Result<Answer, StorageError> {
        let (_, value) = self.storage.kv_get(KvSpace::Phone as u8, number)?;
        let forgot = !value.is_empty() && value == user.as_bytes();
        if forgot {
            self.put_record(KvSpace::Phone as u8, number, Vec::new())?;
        }
        Ok(Answer::PhoneForgot { forgot })
    }

    fn trace(&mut self, to: &str, from: &str, id: &[u8]) -> Result<TraceView, StorageError> {
        let key = DedupeKey {
            to,
            from,
            kind: ItemKind::Message,
            id,
        };
        let mut t = TraceView::default();
        let original = match self.recent.get(&key) {
            Some(o) => {
                t.found_in = Some("memory");
                o
            }
            None => match self.storage.dedupe(&key)? {
                Some(o) => {
                    t.found_in = Some("engine");
                    o
                }
                None => return Ok(t),
            },
        };
        t.seq = original.seq;
        t.server_ts_ms = original.server_ts_ms;
        t.durable = true;
        t.place = "gone";
        let seq = original.seq;
        let mut doomed = false;
        if let Some(u) = self.users.get(to) {
            t.durable = seq <= u.durable;
            t.pushed_to = u
                .sessions
                .iter()
                .filter(|s| s.inflight.contains(&seq))
                .map(view)
                .collect();
            t.awaiting_receipt = u.acked.contains(&seq);
            t.writing_back = u.writing(seq);
            doomed = u
                .flight
                .as_ref()
                .is_some_and(|f| f.doomed.contains_key(&seq));
            if let Some(c) = u.cache.get(&seq) {
                t.place = "cache";
                t.segment = Some(c.segment);
                return Ok(t);
            }
        }
        if !doomed
            && self
                .storage
                .read(to, seq, 1)?
                .first()
                .is_some_and(|i| i.seq == seq)
        {
            t.place = "engine";
        }
        Ok(t)
    }
}
