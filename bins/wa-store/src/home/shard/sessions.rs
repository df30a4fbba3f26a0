//! Sessions and presence: attach, detach, presence watches, typing, a link
//! gone, users rehomed, and what going offline tells the watchers.

use std::collections::BTreeSet;
use std::sync::Arc;

use common::link::{Attached, Kick, TypingDown, link_down};
use common::proto::Code;

use super::privacy::{presence, privacy_of};
use super::{Effect, LinkId, LinkTx, Mailbox, Session, Shard, User, Watcher, fill};
use crate::storage::Storage;

impl Shard {
    /// Tells `to`'s sessions that `from` is typing (or stopped).
    pub(super) fn typing(&mut self, from: &str, to: &str, typing: bool) {
        if let Some(u) = self.users.get(to) {
            for s in &u.sessions {
                self.effects.push(Effect::Send {
                    link: s.link.clone(),
                    frame: link_down::Kind::Typing(TypingDown {
                        session: s.id,
                        from: from.to_owned(),
                        typing,
                    }),
                });
            }
        }
    }

    pub(super) fn attach(
        &mut self,
        link: LinkTx,
        session: u64,
        user: String,
        device: u32,
        generation: u32,
    ) {
        let storage = Arc::clone(&self.storage);
        let refused = match super::operator::banned(&*storage, &user) {
            Ok(false) => None,
            Ok(true) => {
                tracing::info!(session, device, "attach of a banned user refused");
                Some(Code::Banned)
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read a ban; refusing the session");
                Some(Code::Internal)
            }
        };
        if let Some(code) = refused {
            self.effects.push(Effect::Send {
                link,
                frame: link_down::Kind::Kick(Kick {
                    session,
                    code: code as u32,
                }),
            });
            return;
        }
        match storage.min_generation(&user, device) {
            Ok(min) if generation < min => {
                tracing::info!(
                    session,
                    device,
                    generation,
                    min,
                    "attach of a revoked device refused"
                );
                self.effects.push(Effect::Send {
                    link,
                    frame: link_down::Kind::Kick(Kick {
                        session,
                        code: Code::Revoked as u32,
                    }),
                });
                return;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "cannot read a device generation; refusing the session");
                self.effects.push(Effect::Send {
                    link,
                    frame: link_down::Kind::Kick(Kick {
                        session,
                        code: Code::Internal as u32,
                    }),
                });
                return;
            }
        }
        // (Loaded, then looked up again: the user's borrow must leave the
        // effect buffer free.)
        if let Err(e) = self.load(&user) {
            tracing::error!(error = %e, "cannot load a mailbox; refusing the session");
            self.effects.push(Effect::Send {
                link,
                frame: link_down::Kind::Kick(Kick {
                    session,
                    code: Code::Internal as u32,
                }),
            });
            return;
        }
        let u = self.users.get_mut(&user).expect("loaded above");
        tracing::debug!(session, device, "attach");
        u.sessions
            .retain(|s| !(s.link.id == link.id && s.id == session));
        let was_online = !u.sessions.is_empty();
        // Known from here on (kept exact by this shard), so that pushes to an
        // online user whose items all stay in memory never read the engine.
        let engine_empty = u
            .engine_size(&*storage, &user)
            .is_ok_and(|size| size.items == 0);
        // The attach answer goes before the first push (answers are control
        // frames, pushes bulk, and a link drains control first): the edge
        // acts on nothing its client sent until it has this.
        self.effects.push(Effect::Send {
            link: link.clone(),
            frame: link_down::Kind::Attached(Attached { session }),
        });
        let mut s = Session {
            link,
            id: session,
            device,
            generation,
            cursor: 1,
            inflight: BTreeSet::new(),
            owing_since: None,
            woken: false,
        };
        let mailbox = Mailbox {
            durable: u.durable,
            cache: &u.cache,
            engine_empty,
            doomed: u.flight.as_ref().map(|f| &f.doomed),
            acked: &u.acked,
        };
        fill(
            &*storage,
            &user,
            &mailbox,
            &mut s,
            &mut self.effects,
            &mut self.starved,
        );
        // (Exactly one more: a `Vec` grows to four at its first push, and
        // most users have one session; every online user holds this.)
        u.sessions.reserve_exact(1);
        u.sessions.push(s);
        if !was_online {
            notify_presence(&*storage, u, &user, true, &mut self.effects);
        }
        self.device_connected(&user, device);
    }

    pub(super) fn detach(&mut self, link: LinkId, session: u64, user: &str, now_ms: u64) {
        let Some(u) = self.users.get_mut(user) else {
            return;
        };
        let before = u.sessions.len();
        u.sessions
            .retain(|s| !(s.link.id == link && s.id == session));
        if before > 0 && u.sessions.is_empty() {
            went_offline(&*self.storage, u, user, now_ms, &mut self.effects);
        }
        self.evict_if_idle(user);
    }

    pub(super) fn watch(
        &mut self,
        link: LinkTx,
        session: u64,
        target: String,
        watch: bool,
        watcher: String,
    ) {
        if let Err(e) = self.load(&target) {
            tracing::error!(error = %e, "cannot load a user for presence");
            return;
        }
        let privacy = watch.then(|| privacy_of(&*self.storage, &target));
        let u = self.users.get_mut(&target).expect("loaded above");
        u.watchers
            .retain(|w| !(w.link.id == link.id && w.session == session));
        if let Some(privacy) = privacy {
            let w = Watcher {
                link,
                session,
                user: watcher,
            };
            let online = !u.sessions.is_empty();
            self.effects
                .push(presence(&w, &target, u, online, &privacy));
            u.watchers.push(w);
        }
        self.evict_if_idle(&target);
    }

    /// Closes, with `WRONG_HOME`, the sessions of users `owned` says this
    /// node no longer serves.
    pub(super) fn rehome(&mut self, owned: &crate::ownership::Owned, now_ms: u64) {
        let storage = Arc::clone(&self.storage);
        let mut idle = Vec::new();
        for (name, u) in self.users.iter_mut() {
            if u.sessions.is_empty() || owned.owns(name) {
                continue;
            }
            for s in u.sessions.drain(..) {
                self.effects.push(Effect::Send {
                    link: s.link.clone(),
                    frame: link_down::Kind::Kick(Kick {
                        session: s.id,
                        code: Code::WrongHome as u32,
                    }),
                });
            }
            went_offline(&*storage, u, name, now_ms, &mut self.effects);
            if u.idle() {
                idle.push(name.clone());
            }
        }
        for name in idle {
            self.users.remove(&name);
        }
    }

    pub(super) fn link_gone(&mut self, link: LinkId, now_ms: u64) {
        self.starved.remove(&link);
        let storage = Arc::clone(&self.storage);
        let mut idle = Vec::new();
        for (name, u) in self.users.iter_mut() {
            let before = u.sessions.len();
            u.sessions.retain(|s| s.link.id != link);
            u.watchers.retain(|w| w.link.id != link);
            if before > 0 && u.sessions.is_empty() {
                went_offline(&*storage, u, name, now_ms, &mut self.effects);
            }
            if u.idle() {
                idle.push(name.clone());
            }
        }
        for name in idle {
            self.users.remove(&name);
        }
    }
}

pub(super) fn went_offline(
    storage: &dyn Storage,
    u: &mut User,
    user: &str,
    now: u64,
    out: &mut Vec<Effect>,
) {
    u.last_seen = Some(now);
    if let Err(e) = storage.set_last_seen(user, now) {
        tracing::warn!(error = %e, "cannot record last seen");
    }
    notify_presence(storage, u, user, false, out);
}

/// Tells `user`'s watchers it went online or offline, each as the user's
/// privacy lets it see.
pub(super) fn notify_presence(
    storage: &dyn Storage,
    u: &User,
    user: &str,
    online: bool,
    out: &mut Vec<Effect>,
) {
    if u.watchers.is_empty() {
        return;
    }
    let privacy = privacy_of(storage, user);
    for w in &u.watchers {
        out.push(presence(w, user, u, online, &privacy));
    }
}
