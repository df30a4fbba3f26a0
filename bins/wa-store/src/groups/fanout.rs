//! The fan-out of a group's log (docs/ARCHITECTURE.md "Groups"): a session
//! of the groups module's own link on the log streams its items in order;
//! each item is copied to every recipient of the version it was accepted
//! under (the removed ones too for a removal or a leave), at each member's
//! home ([`super::copies`]: here through the shards, elsewhere one
//! `GroupDeliver` per home), retried until stored; only then is the item acknowledged, which deletes
//! it (a group log item makes no delivered receipt), and the next one
//! starts. Copies are deduplicated at the members' homes by (member,
//! sender, kind, id), so a retry or a restart that streams the log again
//! never doubles one.
//!
use std::sync::Arc;
use std::time::Duration;

use common::proto::{Envelope, GroupOp, envelope};

use super::local::SessionFrame;
use super::{Groups, lock};

/// A fan-out session with nothing to do for this long ends (and frees its
/// slot); the next item of the group starts another.
const IDLE: Duration = Duration::from_secs(5);

impl Groups {
    /// Makes sure `group`'s log is being fanned out.
    pub(super) fn fan_out(self: &Arc<Self>, group: &str) {
        if !lock(&self.fanning).insert(group.to_owned()) {
            return;
        }
        let g = Arc::clone(self);
        let group = group.to_owned();
        tokio::spawn(async move {
            g.fan(&group).await;
        });
    }

    async fn fan(self: &Arc<Self>, group: &str) {
        let slot = tokio::select! {
            s = Arc::clone(&self.slots).acquire_owned() => s.ok(),
            () = self.stop.cancelled() => None,
        };
        let session = match slot {
            Some(_) => self.local.attach(group).await.ok(),
            None => None,
        };
        let Some((session, mut rx)) = session else {
            lock(&self.fanning).remove(group);
            return;
        };
        loop {
            let frame = tokio::select! {
                f = rx.recv() => f,
                () = tokio::time::sleep(IDLE) => {
                    let mut fanning = lock(&self.fanning);
                    if rx.is_empty() {
                        fanning.remove(group);
                        break;
                    }
                    continue;
                }
                () = self.stop.cancelled() => None,
            };
            match frame {
                Some(SessionFrame::Push { seq, envelope }) => {
                    if !self.deliver(group, envelope).await {
                        lock(&self.fanning).remove(group);
                        break;
                    }
                    self.local.ack(session, group, seq).await;
                    self.unqueued(group);
                }
                Some(SessionFrame::Kicked(code)) => {
                    tracing::info!(group, code, "the fan-out of a group's log was closed");
                    // (Its fragment moved away, log and record with it;
                    // should it come back, they are read afresh.)
                    self.forget(group);
                    lock(&self.fanning).remove(group);
                    break;
                }
                None => {
                    lock(&self.fanning).remove(group);
                    break;
                }
            }
        }
        self.local.detach(session, group).await;
        drop(slot);
    }

    /// Copies `item` of `group`'s log to every recipient until each has it;
    /// false if stopped first.
    async fn deliver(self: &Arc<Self>, group: &str, item: Envelope) -> bool {
        let state = crate::retry::until_done(&self.stop, "a group's record", || async {
            self.load(group, false).await.map_err(|(_, m)| m)
        })
        .await;
        let Ok(state) = state else { return false };
        let Some((_, g)) = state else {
            tracing::warn!(group, "an item of a group with no record; dropped");
            return true;
        };
        let mut to: Vec<String> = g
            .recipients(item.group_version)
            .into_iter()
            .map(str::to_owned)
            .collect();
        if let Some(envelope::Content::GroupEvent(e)) = &item.content
            && matches!(e.op(), GroupOp::Remove | GroupOp::Leave)
        {
            for m in &e.members {
                if !to.contains(m) {
                    to.push(m.clone());
                }
            }
        }
        self.copy_all(to, item).await
    }
}
