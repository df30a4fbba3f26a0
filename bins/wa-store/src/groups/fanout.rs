//! The fan-out of a group's log (docs/ARCHITECTURE.md "Groups"): a session
//! of the groups module's own link on the log streams its items in order;
//! each item is copied to every recipient of the version it was accepted
//! under (the removed ones too for a removal or a leave), at each member's
//! home (here through the shards, elsewhere over the cluster link),
//! retried until stored; only then is the item acknowledged, which deletes
//! it (a group log item makes no delivered receipt), and the next one
//! starts. Copies are deduplicated at the members' homes by (member,
//! sender, kind, id), so a retry or a restart that streams the log again
//! never doubles one.
//!
//! Not yet: one `GroupDeliver` per member home (today one append per
//! member, `copies_in_flight` at once).

use std::sync::Arc;
use std::time::Duration;

use common::proto::{Envelope, GroupOp, envelope};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

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
                }
                Some(SessionFrame::Kicked(code)) => {
                    tracing::info!(group, code, "the fan-out of a group's log was closed");
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
        let item = Arc::new(item);
        let room = Arc::new(Semaphore::new(self.copies_in_flight));
        let mut copies = JoinSet::new();
        for member in to {
            let Ok(permit) = Arc::clone(&room).acquire_owned().await else {
                return false;
            };
            let g = Arc::clone(self);
            let item = Arc::clone(&item);
            copies.spawn(async move {
                let done = crate::retry::until_done(&g.stop, "a group message", || {
                    g.copy(&member, (*item).clone())
                })
                .await;
                drop(permit);
                done.is_ok()
            });
        }
        let mut all = true;
        while let Some(r) = copies.join_next().await {
            all &= r.unwrap_or(false);
        }
        all
    }

    /// One copy into `member`'s mailbox at its home.
    async fn copy(&self, member: &str, item: Envelope) -> Result<(), String> {
        if self.ownership.current().owns(member) {
            return self
                .local
                .append(member, item)
                .await
                .map(|_| ())
                .map_err(|c| format!("this home refused it: {c}"));
        }
        let Some(client) = &self.client else {
            return Err("cluster.ca is not readable, so other homes cannot be reached".into());
        };
        client
            .append(member, item)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}
