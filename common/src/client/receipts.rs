//! Who has a group message this user sent, and who has read it
//! (docs/PROTOCOL.md "Group receipts"), from what the client received.
//!
//! The driver feeds a [`Tracker`]: the group messages this user sends (and
//! its own copies of them, which carry the group's version), the
//! memberships it learns (every `GroupResult`), and every receipt, plain
//! or aggregated (`Receipt.members`). For each tracked message whose state
//! changed, it gives a [`GroupReceiptState`], which the client emits as
//! [`Event::GroupReceiptState`](super::Event::GroupReceiptState).
//! [`Client::group_receipts`](super::Client::group_receipts) and
//! [`Client::who_has_read`](super::Client::who_has_read) ask it.
//!
//! "All" is against the group's members at the message's version (or, not
//! knowing that version's membership, the latest this client saw), minus
//! the sender. A client that never saw the group's membership (a new
//! connection: ask with [`Client::group_info`](super::Client::group_info))
//! still records who has what, but cannot say "all".
//!
//! Bounded: the newest [`MAX_MESSAGES`] messages and [`MAX_VERSIONS`]
//! memberships per group are kept.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use super::{Event, MessageId};
use crate::proto::{GroupInfo, Receipt, ReceiptKind};

/// Messages whose receipts are tracked; the oldest are forgotten.
pub const MAX_MESSAGES: usize = 10_000;
/// Memberships kept per group (by version).
pub const MAX_VERSIONS: usize = 8;
/// Groups whose memberships are kept.
pub const MAX_GROUPS: usize = 1024;

/// Where a group message of this user stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupReceiptState {
    pub group: String,
    pub id: MessageId,
    /// The members it is for (sender excluded); empty if this client has
    /// not seen the group's membership.
    pub members: Vec<String>,
    pub delivered: Vec<String>,
    pub read: Vec<String>,
    /// Every one of `members` has it (and `members` is known).
    pub delivered_to_all: bool,
    /// Every one of `members` has read it.
    pub read_by_all: bool,
}

#[derive(Debug, Default)]
struct Message {
    group: Option<String>,
    version: Option<u64>,
    delivered: BTreeSet<String>,
    read: BTreeSet<String>,
}

/// The client's record; see the module.
#[derive(Debug, Default)]
pub struct Tracker {
    me: String,
    messages: HashMap<MessageId, Message>,
    order: VecDeque<MessageId>,
    /// group → version → members.
    groups: HashMap<String, BTreeMap<u64, Vec<String>>>,
}

impl Tracker {
    /// This client's user (from the edge's `Welcome`): never counted as a
    /// member a message is for.
    pub fn set_me(&mut self, me: &str) {
        me.clone_into(&mut self.me);
    }

    /// This user sent (or got its own copy of) `id` to `group`, at
    /// `version` if known.
    pub fn sent(&mut self, group: &str, id: MessageId, version: Option<u64>) {
        let m = self.entry(id);
        m.group = Some(group.to_owned());
        if version.is_some() {
            m.version = version;
        }
    }

    /// A copy of a group message arrived: this user's own (sent from this
    /// device or another) is tracked, at the version it was sent at.
    pub fn own_copy(&mut self, group: &str, from: &str, id: MessageId, version: u64) {
        if !self.me.is_empty() && from == self.me {
            self.sent(group, id, (version > 0).then_some(version));
        }
    }

    /// A receipt item arrived (`seq`, from `from`, about `group` if it
    /// names one): the event for the app, and the states it changed.
    pub fn received(
        &mut self,
        seq: u64,
        from: String,
        group: String,
        r: Receipt,
    ) -> (Event, Vec<GroupReceiptState>) {
        let kind = ReceiptKind::try_from(r.kind).unwrap_or(ReceiptKind::Unspecified);
        let ids = |ids: &[bytes::Bytes]| -> Vec<MessageId> {
            ids.iter()
                .filter_map(|i| <MessageId>::try_from(&i[..]).ok())
                .collect()
        };
        if r.members.is_empty() {
            let ids = ids(&r.ids);
            let changed = self.receipt(&group, &from, kind, &ids);
            return (
                Event::Receipt {
                    seq,
                    from,
                    kind,
                    ids,
                },
                changed,
            );
        }
        let members: Vec<(String, Vec<MessageId>)> = r
            .members
            .iter()
            .map(|m| (m.member.clone(), ids(&m.ids)))
            .collect();
        let mut changed: Vec<GroupReceiptState> = Vec::new();
        for (member, ids) in &members {
            for s in self.receipt(&group, member, kind, ids) {
                // The last state of each message is what counts.
                changed.retain(|c| c.id != s.id);
                changed.push(s);
            }
        }
        let event = Event::GroupReceipts {
            seq,
            group,
            kind,
            members,
        };
        (event, changed)
    }

    /// The group's membership at `info.version`.
    pub fn membership(&mut self, info: &GroupInfo) -> Vec<GroupReceiptState> {
        if info.group.is_empty() {
            return Vec::new();
        }
        if !self.groups.contains_key(&info.group) && self.groups.len() >= MAX_GROUPS {
            return Vec::new();
        }
        let versions = self.groups.entry(info.group.clone()).or_default();
        versions.insert(
            info.version,
            info.members.iter().map(|m| m.user.clone()).collect(),
        );
        while versions.len() > MAX_VERSIONS {
            versions.pop_first();
        }
        let ids: Vec<MessageId> = self
            .messages
            .iter()
            .filter(|(_, m)| m.group.as_deref() == Some(info.group.as_str()))
            .map(|(id, _)| *id)
            .collect();
        ids.into_iter().filter_map(|id| self.state(&id)).collect()
    }

    /// A receipt of `kind` from `member` for `ids` (`group` when the
    /// receipt names one). Returns the states of the tracked group
    /// messages it changed.
    pub fn receipt(
        &mut self,
        group: &str,
        member: &str,
        kind: ReceiptKind,
        ids: &[MessageId],
    ) -> Vec<GroupReceiptState> {
        let mut changed = Vec::new();
        for id in ids {
            let m = self.entry(*id);
            if m.group.is_none() && !group.is_empty() {
                m.group = Some(group.to_owned());
            }
            let set = match kind {
                ReceiptKind::Read => &mut m.read,
                _ => &mut m.delivered,
            };
            let mut new = set.insert(member.to_owned());
            // Read implies delivered.
            if kind == ReceiptKind::Read {
                new |= m.delivered.insert(member.to_owned());
            }
            if new && let Some(s) = self.state(id) {
                changed.push(s);
            }
        }
        changed
    }

    /// Where group message `id` stands; `None` if it is not known as one.
    pub fn state(&self, id: &MessageId) -> Option<GroupReceiptState> {
        let m = self.messages.get(id)?;
        let group = m.group.clone()?;
        let versions = self.groups.get(&group);
        let at = versions.and_then(|v| match m.version {
            Some(n) => v.get(&n).or_else(|| v.last_key_value().map(|l| l.1)),
            None => v.last_key_value().map(|l| l.1),
        });
        let members: Vec<String> = at
            .map(|ms| ms.iter().filter(|u| **u != self.me).cloned().collect())
            .unwrap_or_default();
        let all =
            |set: &BTreeSet<String>| !members.is_empty() && members.iter().all(|u| set.contains(u));
        Some(GroupReceiptState {
            group,
            id: *id,
            delivered_to_all: all(&m.delivered),
            read_by_all: all(&m.read),
            members,
            delivered: m.delivered.iter().cloned().collect(),
            read: m.read.iter().cloned().collect(),
        })
    }

    fn entry(&mut self, id: MessageId) -> &mut Message {
        if !self.messages.contains_key(&id) {
            if self.order.len() >= MAX_MESSAGES
                && let Some(old) = self.order.pop_front()
            {
                self.messages.remove(&old);
            }
            self.order.push_back(id);
        }
        self.messages.entry(id).or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::GroupMember;

    fn info(version: u64, members: &[&str]) -> GroupInfo {
        GroupInfo {
            group: "g".into(),
            version,
            members: members
                .iter()
                .map(|u| GroupMember {
                    user: (*u).into(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn all_is_against_the_members_at_the_version_minus_the_sender() {
        let mut t = Tracker::default();
        t.set_me("alice");
        t.membership(&info(1, &["alice", "bob", "carol"]));
        t.membership(&info(2, &["alice", "bob", "carol", "dave"]));
        t.sent("g", [1; 16], Some(1));
        let s = t.receipt("g", "bob", ReceiptKind::Delivered, &[[1; 16]]);
        assert_eq!(s.len(), 1);
        assert!(!s[0].delivered_to_all);
        assert_eq!(s[0].members, ["bob", "carol"]);
        let s = t.receipt("g", "carol", ReceiptKind::Read, &[[1; 16]]);
        assert!(s[0].delivered_to_all, "read implies delivered");
        assert!(!s[0].read_by_all);
        // Nothing new, no change.
        assert!(
            t.receipt("", "carol", ReceiptKind::Read, &[[1; 16]])
                .is_empty()
        );
        let s = t.receipt("", "bob", ReceiptKind::Read, &[[1; 16]]);
        assert!(s[0].read_by_all);
        assert_eq!(t.state(&[1; 16]).unwrap().read, ["bob", "carol"]);
    }

    #[test]
    fn receipts_before_the_membership_count_once_it_is_known() {
        let mut t = Tracker::default();
        t.set_me("alice");
        let s = t.receipt("g", "bob", ReceiptKind::Delivered, &[[2; 16]]);
        assert!(!s[0].delivered_to_all, "no membership known yet");
        // A read receipt (no group named) for an unknown id is kept too.
        assert!(
            t.receipt("", "bob", ReceiptKind::Read, &[[3; 16]])
                .is_empty()
        );
        let s = t.membership(&info(5, &["alice", "bob"]));
        assert_eq!(s.len(), 1);
        assert!(s[0].delivered_to_all);
        t.sent("g", [3; 16], None);
        assert!(t.state(&[3; 16]).unwrap().read_by_all);
    }

    #[test]
    fn bounded() {
        let mut t = Tracker::default();
        for i in 0..MAX_MESSAGES + 10 {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&(i as u64).to_be_bytes());
            t.sent("g", id, None);
        }
        assert_eq!(t.messages.len(), MAX_MESSAGES);
        for v in 0..20 {
            t.membership(&info(v, &["a"]));
        }
        assert_eq!(t.groups["g"].len(), MAX_VERSIONS);
    }
}
