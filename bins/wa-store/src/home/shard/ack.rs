//! Acknowledgements: an acked item is deleted, or, for a message, kept until
//! its delivered receipt is durable at the sender's home.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use common::proto::{Envelope, ItemKind, MemberReceipt, envelope};

use super::{Effect, LinkId, Shard};

impl Shard {
    /// The delivered receipt of `user`'s item `seq` is durable at its
    /// sender's home: the item goes.
    pub(super) fn receipt_stored(&mut self, user: &str, seq: u64) {
        if let Some(u) = self.users.get_mut(user) {
            u.acked.remove(&seq);
        }
        self.remove(user, &[seq], true);
        self.refill(user, &[seq]);
    }

    /// The courier's queue refused the receipt of `user`'s items `seqs`:
    /// they no longer wait for it, and are delivered again to a later
    /// session (whose ack makes the receipt again).
    pub(super) fn receipt_refused(&mut self, user: &str, seqs: &[u64]) {
        if let Some(u) = self.users.get_mut(user) {
            for seq in seqs {
                u.acked.remove(seq);
            }
        }
        self.evict_if_idle(user);
    }

    pub(super) fn ack(&mut self, link: LinkId, session: u64, user: &str, seqs: &[u64]) {
        let Some(u) = self.users.get_mut(user) else {
            return;
        };
        // Only what this session was given; an ack for anything else is a
        // confused or stale edge, and deleting on it could lose a message.
        let Some(s) = u
            .sessions
            .iter()
            .find(|s| s.link.id == link && s.id == session)
        else {
            return;
        };
        let (device, valid): (u32, Vec<u64>) = (
            s.device,
            seqs.iter()
                .copied()
                .filter(|q| s.inflight.contains(q))
                .collect(),
        );
        // A message stays until its delivered receipt is durable at the
        // sender's home (the courier then sends `Op::ReceiptStored`): it
        // waits in `acked` (never pushed again) and the receipt leaves as an
        // effect; should the courier's queue refuse it, the dispatcher
        // applies `Op::ReceiptRefused` before anything else and the item
        // stays for the next session. A receipt goes at once. Either way
        // the window slots are free from here on. The messages of one
        // sender (and group) acknowledged together make one receipt.
        let mut gone = Vec::with_capacity(valid.len());
        let mut receipts: Vec<(String, Envelope, Vec<u64>)> = Vec::new();
        let mut index: HashMap<(String, String), usize> = HashMap::new();
        for &seq in &valid {
            match self.receipt_for(user, device, seq) {
                Some((to, envelope)) => {
                    if let Some(u) = self.users.get_mut(user) {
                        u.acked.insert(seq);
                    }
                    match index.entry((to, envelope.group.clone())) {
                        Entry::Occupied(e) => {
                            let (_, merged, seqs) = &mut receipts[*e.get()];
                            if let (
                                Some(envelope::Content::Receipt(into)),
                                Some(envelope::Content::Receipt(r)),
                            ) = (&mut merged.content, envelope.content)
                            {
                                into.ids.extend(r.ids);
                            }
                            seqs.push(seq);
                        }
                        Entry::Vacant(e) => {
                            let to = e.key().0.clone();
                            e.insert(receipts.len());
                            receipts.push((to, envelope, vec![seq]));
                        }
                    }
                }
                None => gone.push(seq),
            }
        }
        for (to, mut envelope, seqs) in receipts {
            if seqs.len() > 1 {
                envelope.id = receipt_id_of(&envelope);
            }
            self.effects.push(Effect::Receipt {
                to,
                envelope,
                user: user.to_owned(),
                seqs,
            });
        }
        self.remove(user, &gone, true);
        self.refill(user, &valid);
    }

    /// The delivered receipt that acknowledging `user`'s item `seq` makes
    /// (from `user`'s `device`), and whose home it goes to; `None` for an
    /// item that needs none (a receipt) or if this home makes no receipts.
    pub(super) fn receipt_for(
        &self,
        user: &str,
        device: u32,
        seq: u64,
    ) -> Option<(String, Envelope)> {
        use common::proto::{Receipt, ReceiptKind};
        // A group's log is acknowledged by its fan-out, not a person.
        if !self.receipts || common::group::is_group_log(user) {
            return None;
        }
        let u = self.users.get(user)?;
        let item = match u.cache.get(&seq) {
            Some(c) => c.envelope.clone(),
            None if u.engine_empty() => return None,
            None => match self.storage.read(user, seq, 1) {
                Ok(mut items) if items.first().is_some_and(|i| i.seq == seq) => {
                    items.swap_remove(0).envelope
                }
                Ok(_) => return None,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read an acknowledged item; no receipt");
                    return None;
                }
            },
        };
        // (Nor does a group event, or the sender's own copy of its group
        // message.)
        if item.item_kind() != ItemKind::Message
            || matches!(item.content, Some(envelope::Content::GroupEvent(_)))
            || (!item.group.is_empty() && item.from == user)
        {
            return None;
        }
        let receipt = Envelope {
            from: user.to_owned(),
            from_device: device,
            id: item.id.clone(),
            server_ts_ms: 0,
            content: Some(envelope::Content::Receipt(Receipt {
                kind: ReceiptKind::Delivered as i32,
                ids: vec![item.id],
                members: Vec::new(),
            })),
            group: item.group,
            group_version: 0,
        };
        Some((item.from, receipt))
    }
}

/// The id of a delivered receipt of several messages: a digest of what it
/// says (`coalesce::receipt_id`), so that the same receipt made again is
/// stored once, and one of other messages is not mistaken for it.
fn receipt_id_of(receipt: &Envelope) -> bytes::Bytes {
    let (kind, ids) = match &receipt.content {
        Some(envelope::Content::Receipt(r)) => (r.kind, r.ids.clone()),
        _ => (0, Vec::new()),
    };
    let member = MemberReceipt {
        member: receipt.from.clone(),
        device: receipt.from_device,
        ids,
    };
    crate::coalesce::receipt_id(&receipt.group, kind, &[member])
}

#[cfg(test)]
impl Shard {
    /// Tests: `user`'s items waiting for their receipts.
    pub(in crate::home) fn acked_of(&self, user: &str) -> std::collections::BTreeSet<u64> {
        self.users
            .get(user)
            .map(|u| u.acked.clone())
            .unwrap_or_default()
    }
}
