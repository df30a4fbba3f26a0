//! The shard's side of write-back: hand a slice of cached items over for the
//! engine, then drop what was written.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use common::proto::Envelope;

use super::{Flight, Gone, Outcome, Shard, Slice, UserBatch};
use crate::metrics::Metrics;

impl Shard {
    /// Hands over, for the engine, the cached items older than `due` (or
    /// every one, with `all`), user by user, and, over the memory budget, the
    /// oldest of the others, at most `max` in all; in the last slice of a
    /// round, the sequence counters the engine has not seen too. They are in
    /// flight until [`Shard::written_back`].
    pub(super) fn write_back(
        &mut self,
        due: Instant,
        all: bool,
        max: usize,
        now: Instant,
    ) -> Slice {
        let storage = Arc::clone(&self.storage);
        if let Some(old) = now.checked_sub(self.cache_cfg.expire_after) {
            let expired: Vec<(String, Vec<u64>)> = self
                .users
                .iter()
                .map(|(n, u)| {
                    let seqs = u
                        .cache
                        .iter()
                        .take_while(|(_, c)| c.at < old)
                        .map(|(s, _)| *s);
                    (n.clone(), seqs.collect::<Vec<_>>())
                })
                .filter(|(_, s)| !s.is_empty())
                .collect();
            for (user, seqs) in expired {
                let n = self.remove(&user, &seqs, false);
                Metrics::add(&self.metrics.expired, n);
                self.refill(&user, &seqs);
            }
        }
        // The due items, user by user (each cache is in time order), at most
        // `max`: a slice costs what it hands over, not everything due.
        let mut by_user: HashMap<String, Vec<u64>> = HashMap::new();
        let mut taken = 0usize;
        let mut more = false;
        for (name, u) in &self.users {
            let mut seqs = Vec::new();
            for (&seq, _) in u.cache.iter().take_while(|(_, c)| all || c.at <= due) {
                if taken == max {
                    more = true;
                    break;
                }
                seqs.push(seq);
                taken += 1;
            }
            if !seqs.is_empty() {
                by_user.insert(name.clone(), seqs);
            }
            if more {
                break;
            }
        }
        if !more && self.cache_bytes > self.cache_cfg.budget_bytes {
            // Memory pressure: the oldest of the rest go too, down to three
            // quarters of the budget.
            let target = self.cache_bytes - self.cache_cfg.budget_bytes * 3 / 4;
            let mut rest: Vec<(Instant, &str, u64, u64)> = self
                .users
                .iter()
                .flat_map(|(n, u)| {
                    u.cache
                        .iter()
                        .skip_while(|(_, c)| all || c.at <= due)
                        .map(move |(s, c)| (c.at, n.as_str(), *s, c.size))
                })
                .collect();
            rest.sort_unstable_by_key(|r| r.0);
            let mut freed = 0;
            for (_, name, seq, size) in rest {
                if freed >= target {
                    break;
                }
                if taken == max {
                    more = true;
                    break;
                }
                freed += size;
                taken += 1;
                by_user.entry(name.to_owned()).or_default().push(seq);
            }
        }
        if !more {
            // The round's last slice: every counter the engine lacks too.
            for (name, u) in &self.users {
                if u.seq_dirty {
                    by_user.entry(name.clone()).or_default();
                }
            }
        }
        let mut batch = Vec::with_capacity(by_user.len());
        let mut incomplete = false;
        for (name, seqs) in by_user {
            let Some(u) = self.users.get_mut(&name) else {
                continue;
            };
            // The engine's part of the mailbox stays exact while the slice
            // is in flight (its items are still counted in memory), so
            // appends meanwhile never read a half-written engine.
            if let Err(e) = u.engine_size(&*storage, &name) {
                tracing::error!(error = %e, "cannot read a mailbox size; its write-back waits");
                incomplete = true;
                continue;
            }
            let items: Vec<(u64, Envelope)> = seqs
                .iter()
                .filter_map(|seq| Some((*seq, u.cache.get(seq)?.envelope.clone())))
                .collect();
            let last_seq = (!more && u.seq_dirty).then_some(u.last_seq);
            if items.is_empty() && last_seq.is_none() {
                continue;
            }
            let mut sent: Vec<u64> = items.iter().map(|i| i.0).collect();
            sent.sort_unstable();
            u.flight = Some(Box::new(Flight {
                sent,
                doomed: BTreeMap::new(),
                last_seq,
            }));
            batch.push(UserBatch {
                user: name,
                items,
                last_seq,
            });
        }
        more &= !batch.is_empty();
        if more {
            return Slice {
                batch,
                oldest: None,
                more,
                incomplete,
            };
        }
        let mut idle = Vec::new();
        let mut oldest: Option<Instant> = None;
        for (name, u) in &self.users {
            if let Some(c) = u
                .cache
                .iter()
                .find_map(|(seq, c)| (!u.writing(*seq)).then_some(c))
            {
                oldest = Some(oldest.map_or(c.at, |o| o.min(c.at)));
            }
            if u.idle() {
                idle.push(name.clone());
            }
        }
        for name in idle {
            self.users.remove(&name);
        }
        self.prune_recent(now);
        Slice {
            batch,
            oldest,
            more,
            incomplete,
        }
    }

    /// The write-back task wrote the slice in flight, with these outcomes:
    /// written items leave memory (to be settled in the journal once the
    /// engine is flushed), and what was deleted meanwhile is deleted from the
    /// engine now.
    pub(super) fn written_back(&mut self, outcomes: Vec<Outcome>) {
        let storage = Arc::clone(&self.storage);
        for o in outcomes {
            let Some(u) = self.users.get_mut(&o.user) else {
                // (Users in flight are never idle, so never evicted.)
                tracing::error!("a written-back user is not loaded");
                continue;
            };
            let Some(flight) = u.flight.take() else {
                continue;
            };
            let (mut items, mut bytes) = (0, 0);
            // (Items that failed stay in memory; items deleted meanwhile are
            // gone already, and doomed.)
            let written = if o.items { &flight.sent[..] } else { &[] };
            for seq in written {
                let Some(c) = u.cache.remove(seq) else {
                    continue;
                };
                items += 1;
                bytes += c.size;
                u.cache_bytes -= c.size;
                self.cache_bytes -= c.size;
                Metrics::sub(&self.metrics.cache_items, 1);
                Metrics::sub(&self.metrics.cache_bytes, c.size);
                Metrics::add(&self.metrics.written_back, 1);
                *self.written.entry(c.segment).or_default() += 1;
            }
            if o.items {
                u.wrote_to_engine(items, bytes);
            }
            if let Some(seq) = flight.last_seq
                && o.last_seq
            {
                // (Appends meanwhile raised it again.)
                u.seq_dirty = u.last_seq > seq;
            }
            let (mut delivered, mut expired, mut written) = (Vec::new(), Vec::new(), Vec::new());
            for (seq, why) in flight.doomed {
                match why {
                    Gone::Delivered => delivered.push(seq),
                    Gone::Expired => expired.push(seq),
                    // (Only in the engine if the slice's write went in.)
                    Gone::Written if o.items => written.push(seq),
                    Gone::Written => {}
                }
            }
            let counted = [
                (delivered, Some(&self.metrics.delivered_from_engine)),
                (expired, Some(&self.metrics.expired)),
                (written, None),
            ];
            for (seqs, metric) in counted {
                if seqs.is_empty() {
                    continue;
                }
                u.engine = None;
                let n = match storage.delete(&o.user, &seqs) {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::error!(error = %e, "delete failed; the items will be delivered again");
                        0
                    }
                };
                if let Some(m) = metric {
                    Metrics::add(m, n);
                }
            }
            // Sessions may now read on into what was written.
            u.fill_sessions(
                &*storage,
                &o.user,
                &[],
                &mut self.effects,
                &mut self.starved,
            );
            self.evict_if_idle(&o.user);
        }
    }
}
