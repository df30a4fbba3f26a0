//! Acknowledgements: an acked item is deleted, or, for a message, kept until
//! its delivered receipt is durable at the sender's home.

use common::proto::{Envelope, ItemKind};

use super::{LinkId, Shard};

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
        // sender's home (the courier then sends `Op::ReceiptStored`); a
        // receipt, or a message whose receipt cannot be queued now, goes at
        // once or stays for the next session. Either way the window slots
        // are free from here on.
        let mut gone = Vec::with_capacity(valid.len());
        for &seq in &valid {
            match self.receipt_for(user, device, seq) {
                Some((to, receipt)) => {
                    let outbox = self.outbox.as_ref().expect("receipts only with an outbox");
                    // (Queued here rather than left as an effect: whether
                    // the courier's bounded queue took the errand decides,
                    // before the sessions are refilled below, whether the
                    // item waits for its receipt (`acked`, never pushed
                    // again meanwhile) or is delivered again later. The
                    // queue never waits.)
                    if outbox.send(to, receipt, user, seq) {
                        if let Some(u) = self.users.get_mut(user) {
                            u.acked.insert(seq);
                        }
                    } else {
                        tracing::debug!(
                            seq,
                            "receipt queue full; the item is delivered again later"
                        );
                    }
                }
                None => gone.push(seq),
            }
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
        use common::proto::{Receipt, ReceiptKind, envelope};
        self.outbox.as_ref()?;
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
        if item.item_kind() != ItemKind::Message {
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
            })),
        };
        Some((item.from, receipt))
    }
}
