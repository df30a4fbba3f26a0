//! Presence privacy: who sees a user's presence is the user's choice, a
//! key-value record at its home (`common::privacy`). Every presence frame
//! the shard sends a watcher goes through [`presence`], which shows a
//! watcher the user does not allow what a user never seen looks like.

use common::link::{KvSpace, PresenceDown, link_down};
use common::privacy::PresencePrivacy;

use super::{Effect, Shard, User, Watcher};
use crate::storage::Storage;

/// The privacy record of `user` (everyone, without one or when it cannot
/// be read: a read error is logged and presence shown as before).
pub(super) fn privacy_of(storage: &dyn Storage, user: &str) -> PresencePrivacy {
    match storage.kv_get(KvSpace::PresencePrivacy as i32 as u8, user) {
        Ok((_, value)) => PresencePrivacy::from_stored(&value),
        Err(e) => {
            tracing::error!(error = %e, "cannot read a presence privacy record; shown to nobody");
            PresencePrivacy {
                visible_to: common::privacy::Visibility::Nobody as i32,
                contacts: Vec::new(),
            }
        }
    }
}

/// The presence frame of `user` (whose state is `u`, online or not) for
/// watcher `w`, as `privacy` lets `w` see it.
pub(super) fn presence(
    w: &Watcher,
    user: &str,
    u: &User,
    online: bool,
    privacy: &PresencePrivacy,
) -> Effect {
    let shown = privacy.shows_to(&w.user);
    Effect::Send {
        link: w.link.clone(),
        frame: link_down::Kind::Presence(PresenceDown {
            session: w.session,
            user: user.to_owned(),
            online: online && shown,
            last_seen_ms: if shown { u.last_seen.unwrap_or(0) } else { 0 },
        }),
    }
}

impl Shard {
    /// `user`'s privacy record was just written: every watcher gets the
    /// presence it may see now.
    pub(super) fn privacy_changed(&mut self, user: &str) {
        let Some(u) = self.users.get(user) else {
            return;
        };
        let privacy = privacy_of(&*self.storage, user);
        let online = !u.sessions.is_empty();
        for w in &u.watchers {
            self.effects.push(presence(w, user, u, online, &privacy));
        }
    }
}
