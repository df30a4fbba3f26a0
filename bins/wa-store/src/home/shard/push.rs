//! Pushes and windows: what each session is pushed, up to its window and
//! its link's push budget, merging the cache and the engine in order.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use common::link::{Kick, PUSH_WINDOW, link_down};
use common::proto::Code;

use super::{Cached, Effect, Gone, LinkId, SeqMap, Session, Shard, User};
use crate::storage::{Item, Storage};

/// The users whose session stopped pushing because its link's push budget
/// was spent, by link. The ack that gives budget back has the link
/// refilled (`Op::Refill`), which then visits only these users instead of
/// every user of the shard: with 100,000 sessions on one edge, a scan per
/// refill made each message cost several times more (docs/BENCHMARKS.md
/// "100,000 QUIC sessions on one wa-chat").
pub(super) type Starved = HashMap<LinkId, HashSet<String>>;

impl Shard {
    /// After items went away: free their window slots and push on.
    pub(super) fn refill(&mut self, user: &str, seqs: &[u64]) {
        if let Some(u) = self.users.get_mut(user) {
            u.fill_sessions(
                &*self.storage,
                user,
                seqs,
                &mut self.effects,
                &mut self.starved,
            );
        }
        self.evict_if_idle(user);
    }

    /// Pushes on to every session of `link` (it has budget again).
    pub(super) fn refill_link(&mut self, link: LinkId) {
        let Some(users) = self.starved.remove(&link) else {
            return;
        };
        let storage = Arc::clone(&self.storage);
        for name in users {
            // (Gone since, or no longer on this link: nothing to do.)
            if let Some(u) = self.users.get_mut(&name) {
                u.fill_sessions(&*storage, &name, &[], &mut self.effects, &mut self.starved);
            }
        }
    }
}

impl User {
    /// Pushes every session what it may have now (see [`fill`]), after
    /// forgetting `acked` from their windows.
    pub(super) fn fill_sessions(
        &mut self,
        storage: &dyn Storage,
        user: &str,
        acked: &[u64],
        out: &mut Vec<Effect>,
        starved: &mut Starved,
    ) {
        let mailbox = Mailbox {
            durable: self.durable,
            cache: &self.cache,
            engine_empty: self.engine_empty(),
            doomed: self.flight.as_ref().map(|f| &f.doomed),
            acked: &self.acked,
        };
        for s in &mut self.sessions {
            let freed = acked.iter().filter(|q| s.inflight.remove(q)).count();
            s.link.released(freed);
            fill(storage, user, &mailbox, s, out, starved);
        }
    }
}

/// What [`fill`] reads of a user's mailbox.
pub(super) struct Mailbox<'a> {
    /// Highest sequence number known durable: pushes stop there.
    pub(super) durable: u64,
    pub(super) cache: &'a SeqMap<Cached>,
    /// The engine holds none of the mailbox: read memory only.
    pub(super) engine_empty: bool,
    /// Deleted while a write-back slice is in flight (see [`Flight`]).
    pub(super) doomed: Option<&'a BTreeMap<u64, Gone>>,
    /// Acknowledged, waiting for their receipts (see `User::acked`).
    pub(super) acked: &'a BTreeSet<u64>,
}

/// Pushes `s` the durable items it has not had, up to its window, merging
/// the engine's items with the cache's in sequence order; if its link's
/// budget runs out first, `user` goes into `starved` for the link's refill.
pub(super) fn fill(
    storage: &dyn Storage,
    user: &str,
    m: &Mailbox<'_>,
    s: &mut Session,
    out: &mut Vec<Effect>,
    starved: &mut Starved,
) {
    let Mailbox {
        durable,
        cache,
        engine_empty,
        doomed,
        acked,
    } = *m;
    while s.inflight.len() < PUSH_WINDOW && s.cursor <= durable {
        // (No budget left on the link: an ack on it wakes the link's
        // refill, which comes back here.)
        let room = (PUSH_WINDOW - s.inflight.len()).min(s.link.push_room());
        if room == 0 {
            starved
                .entry(s.link.id)
                .or_default()
                .insert(user.to_owned());
            return;
        }
        // (A mailbox the engine holds nothing of is read from memory only.)
        // Items deleted while a write-back slice was in flight may still be
        // in the engine, and acknowledged ones wait there for their
        // receipts: read as many more as there are of those from the
        // cursor on (only those can be among the items read) and leave
        // them out, so that `room` of the rest are still among those read.
        // (All of `acked` would be thousands while a drained mailbox's
        // receipts are on their way, read and thrown away on every refill.)
        let extra =
            doomed.map_or(0, |d| d.range(s.cursor..).count()) + acked.range(s.cursor..).count();
        let read = if engine_empty {
            Ok(Vec::new())
        } else {
            storage.read(user, s.cursor, room + extra)
        };
        let stored = match read {
            Ok(mut items) => {
                if let Some(d) = doomed {
                    items.retain(|i| !d.contains_key(&i.seq));
                }
                items.retain(|i| !acked.contains(&i.seq));
                items.truncate(room);
                items
            }
            Err(e) => {
                tracing::error!(error = %e, "mailbox read failed; closing the session");
                out.push(Effect::Send {
                    link: s.link.clone(),
                    frame: link_down::Kind::Kick(Kick {
                        session: s.id,
                        code: Code::Internal as u32,
                    }),
                });
                s.cursor = u64::MAX;
                return;
            }
        };
        // Both sources are read from the cursor, `room` items each: the first
        // `room` of their union in order are the next items, whatever the mix.
        let cached = cache
            .range(s.cursor..)
            .filter(|(seq, _)| !acked.contains(seq))
            .take(room)
            .map(|(&seq, c)| Item {
                seq,
                envelope: c.envelope.clone(),
            });
        let mut merged: Vec<Item> = stored.into_iter().chain(cached).collect();
        if merged.is_empty() {
            // Nothing stored from the cursor on: later items are above `durable`.
            s.cursor = durable + 1;
            return;
        }
        merged.sort_by_key(|i| i.seq);
        // (An item of a write-back slice in flight is in memory and maybe
        // already in the engine: once is enough.)
        merged.dedup_by_key(|i| i.seq);
        for item in merged.into_iter().take(room) {
            if item.seq > durable {
                return;
            }
            s.cursor = item.seq + 1;
            s.inflight.insert(item.seq);
            s.link.pushed();
            out.push(Effect::Push {
                link: s.link.clone(),
                session: s.id,
                seq: item.seq,
                envelope: item.envelope,
            });
        }
    }
}
