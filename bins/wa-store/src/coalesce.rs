//! Receipts of group messages, aggregated (docs/PROTOCOL.md "Group
//! receipts").
//!
//! Every member's ack of a group copy makes one delivered receipt for the
//! message's sender (`home::shard::ack`), and every member who reads it
//! sends one read receipt (`MarkRead` with its group, which reaches the
//! sender's home as `Op::Gather`). A 1,000-member group would send its
//! sender 2,000 items per message; instead, the courier hands each such
//! receipt to a [`Coalescer`], which gathers those bound for the same
//! sender, about the same group, of the same kind, into one batch, and
//! lets it go as one errand (one item in the sender's mailbox:
//! `Receipt.members` says which member has which ids) when the batch holds
//! `max` ids or is `window` old, whichever comes first. Delivered receipts
//! are gathered at each member's home, read receipts at the sender's home.
//! One-to-one receipts pass through untouched.
//!
//! A pure state machine: errands in, errands out, time given by the
//! caller. Nothing is acknowledged here: the items a delivered batch was
//! made for stay in their mailboxes (waiting in `acked`) until the courier
//! has stored the batch and reports each of them stored
//! (`Op::ReceiptStored`), so a crash while a batch is open loses nothing;
//! the items are delivered and acknowledged again. The `MarkRead`s a read
//! batch was made for are answered only once it is stored; a crash leaves
//! them unanswered, and their clients send them again.
//!
//! Bounded: at most `max` ids per batch and [`MAX_OPEN`] open batches (the
//! oldest goes early beyond that), each for at most `window`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::proto::{Envelope, MemberReceipt, Receipt, ReceiptKind, envelope};

use crate::courier::Errand;
use crate::home::LinkTx;

/// Most batches open at once (different senders or groups).
pub const MAX_OPEN: usize = 4096;

/// What a batch is for: one sender (the errand's destination), one group,
/// one kind of receipt.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    to: String,
    group: String,
    kind: i32,
}

struct Batch {
    /// Which open batch this is (a stale `order` entry names another).
    number: u64,
    /// (member, device) → ids, kept sorted so that the same receipts make
    /// the same item (and so the same dedupe key) however they came.
    entries: BTreeMap<(String, u32), Vec<Bytes>>,
    ids: usize,
    /// The first errand offered, while it is the only one: a batch of one
    /// goes as that errand's own envelope, as without aggregation.
    only: Option<Envelope>,
    sources: Vec<(String, u64)>,
    waiters: Vec<(LinkTx, u64)>,
}

/// Gathers group delivered receipts per (sender, group); see the module.
pub struct Coalescer {
    window: Duration,
    max: usize,
    open: HashMap<Key, Batch>,
    /// Open batches by age: (due, key, number); entries of batches gone
    /// already are skipped.
    order: VecDeque<(Instant, Key, u64)>,
    next: u64,
}

impl Coalescer {
    /// Batches of at most `max` ids (at least 1), kept open for at most
    /// `window`. A zero window or `max` of 1 aggregates nothing.
    pub fn new(window: Duration, max: usize) -> Coalescer {
        Coalescer {
            window,
            max: max.max(1),
            open: HashMap::new(),
            order: VecDeque::new(),
            next: 0,
        }
    }

    /// Takes an errand; returns what is to go now: the errand itself if it
    /// is not a group delivered receipt (or aggregation is off), a batch
    /// that became full, or the oldest batch if too many are open.
    pub fn offer(&mut self, e: Errand, now: Instant) -> Vec<Errand> {
        let Some((key, member, device, ids)) = coalescible(&e) else {
            return vec![e];
        };
        if self.window.is_zero() || self.max == 1 {
            return vec![e];
        }
        let mut out = Vec::new();
        if !self.open.contains_key(&key) && self.open.len() >= MAX_OPEN {
            out.extend(self.pop_oldest());
        }
        let batch = match self.open.get_mut(&key) {
            None => {
                let number = self.next;
                self.next += 1;
                let due = now + self.window;
                self.order.push_back((due, key.clone(), number));
                self.open.entry(key.clone()).or_insert(Batch {
                    number,
                    entries: BTreeMap::new(),
                    ids: 0,
                    only: Some(e.envelope.clone()),
                    sources: Vec::new(),
                    waiters: Vec::new(),
                })
            }
            Some(b) => {
                b.only = None;
                b
            }
        };
        batch.ids += ids.len();
        let have = batch.entries.entry((member, device)).or_default();
        for id in ids {
            if !have.contains(&id) {
                have.push(id);
            }
        }
        batch.sources.extend(e.from);
        batch.waiters.extend(e.waiters);
        if batch.ids >= self.max {
            let b = self.open.remove(&key).expect("just used");
            out.push(seal(key, b));
        }
        out
    }

    /// The batches whose window has passed by `now`.
    pub fn due(&mut self, now: Instant) -> Vec<Errand> {
        let mut out = Vec::new();
        self.skip_stale();
        while let Some((due, _, _)) = self.order.front() {
            if *due > now {
                break;
            }
            out.extend(self.pop_oldest());
            self.skip_stale();
        }
        out
    }

    /// When the next open batch falls due; `None` if none is open.
    pub fn deadline(&mut self) -> Option<Instant> {
        self.skip_stale();
        self.order.front().map(|o| o.0)
    }

    /// Open batches.
    pub fn open(&self) -> usize {
        self.open.len()
    }

    fn skip_stale(&mut self) {
        while let Some((_, key, number)) = self.order.front() {
            if self.open.get(key).is_some_and(|b| b.number == *number) {
                return;
            }
            self.order.pop_front();
        }
    }

    fn pop_oldest(&mut self) -> Option<Errand> {
        self.skip_stale();
        let (_, key, _) = self.order.pop_front()?;
        let b = self.open.remove(&key)?;
        Some(seal(key, b))
    }
}

/// Whether `envelope` is a receipt this module aggregates: a single
/// member's delivered or read receipt of group messages.
pub fn gathers(envelope: &Envelope) -> bool {
    let Some(envelope::Content::Receipt(r)) = &envelope.content else {
        return false;
    };
    let kind_ok = r.kind == ReceiptKind::Delivered as i32 || r.kind == ReceiptKind::Read as i32;
    !envelope.group.is_empty() && kind_ok && r.members.is_empty()
}

/// A group receipt's batch key and its one member's part.
fn coalescible(e: &Errand) -> Option<(Key, String, u32, Vec<Bytes>)> {
    let env = &e.envelope;
    if !gathers(env) {
        return None;
    }
    let Some(envelope::Content::Receipt(r)) = &env.content else {
        return None;
    };
    Some((
        Key {
            to: e.to.clone(),
            group: env.group.clone(),
            kind: r.kind,
        },
        env.from.clone(),
        env.from_device,
        r.ids.clone(),
    ))
}

/// The one errand a batch becomes. A batch of one errand is that errand,
/// as it would have been without aggregation.
fn seal(key: Key, b: Batch) -> Errand {
    if let Some(envelope) = b.only {
        return Errand::batch(key.to, envelope, b.sources, b.waiters);
    }
    let members: Vec<MemberReceipt> = b
        .entries
        .into_iter()
        .map(|((member, device), ids)| MemberReceipt {
            member,
            device,
            ids,
        })
        .collect();
    let first = members.first().cloned().unwrap_or_default();
    let single = members.len() == 1;
    let id = if single && first.ids.len() == 1 {
        first.ids[0].clone()
    } else {
        batch_id(&key, &members)
    };
    let envelope = Envelope {
        from: first.member,
        from_device: first.device,
        id,
        server_ts_ms: 0,
        content: Some(envelope::Content::Receipt(Receipt {
            kind: key.kind,
            ids: first.ids,
            members: if single { Vec::new() } else { members },
        })),
        group: key.group,
        group_version: 0,
    };
    Errand::batch(key.to, envelope, b.sources, b.waiters)
}

/// The id of an aggregated receipt: a digest of what it says, so that the
/// same batch, resent, is stored once, and a different one (made again
/// after a restart) is not mistaken for it.
fn batch_id(key: &Key, members: &[MemberReceipt]) -> Bytes {
    receipt_id(&key.group, key.kind, members)
}

/// The id of a receipt that speaks of more than one message (or member): a
/// digest of its group (empty for one-to-one), kind, and who has which
/// ids. A receipt of one message keeps that message's id instead.
pub fn receipt_id(group: &str, kind: i32, members: &[MemberReceipt]) -> Bytes {
    let mut d = ring::digest::Context::new(&ring::digest::SHA256);
    d.update(b"wa group receipt\0");
    d.update(group.as_bytes());
    d.update(&kind.to_be_bytes());
    for m in members {
        d.update(&[0]);
        d.update(m.member.as_bytes());
        d.update(&m.device.to_be_bytes());
        for id in &m.ids {
            d.update(&(id.len() as u32).to_be_bytes());
            d.update(id);
        }
    }
    Bytes::copy_from_slice(&d.finish().as_ref()[..16])
}

#[cfg(test)]
#[path = "coalesce_tests.rs"]
mod tests;
