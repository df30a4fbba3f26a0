//! Groups as a pure state machine (docs/ARCHITECTURE.md "Groups"): group
//! ids, the [`GroupState`] record kept at the group's home (key-value space
//! `GROUP`), [`GroupState::apply`] which decides every change and its
//! refusal, and [`GroupState::recipients`], the membership a message
//! accepted under a version goes to. No I/O, no clock.

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::proto::ids::valid_user_id;
use crate::proto::{Code, GroupEvent, GroupInfo, GroupMember, GroupOp, GroupRequest, GroupRole};

/// Hex digits of a group id after its `#`.
const GROUP_ID_HEX: usize = 24;
/// Longest subject, in bytes.
pub const MAX_SUBJECT: usize = 100;
/// Most members one request may name.
pub const MAX_NAMED: usize = 256;
/// Default most members of a group (`[groups] max_members`).
pub const DEFAULT_MAX_MEMBERS: usize = 1024;
/// Request ids remembered per group, so that a retried change is answered
/// as a duplicate instead of being applied (or refused) again.
const RECENT_REQUESTS: usize = 64;

/// The id of the group `creator` makes with the create request `request_id`:
/// `#` and the first 96 bits of SHA-256(creator, 0, request id) in hex. A
/// retried create names the same group; nobody can pick another's id.
pub fn group_id(creator: &str, request_id: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(creator.as_bytes());
    h.update([0u8]);
    h.update(request_id);
    let digest = h.finalize();
    format!("#{}", hex::encode(&digest[..GROUP_ID_HEX / 2]))
}

/// Whether `s` is a group id: `#` and 24 lower-case hex digits.
pub fn valid_group_id(s: &str) -> bool {
    s.len() == 1 + GROUP_ID_HEX
        && s.starts_with('#')
        && s[1..]
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Whether the mailbox `name` is a group's log (its items make no delivered
/// receipts: the fan-out, not a person, acknowledges them).
pub fn is_group_log(name: &str) -> bool {
    name.starts_with('#')
}

/// What limits a group's changes.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_members: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_members: DEFAULT_MAX_MEMBERS,
        }
    }
}

/// A group's record, as stored (value of key = group id in space `GROUP`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct GroupState {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub subject: String,
    #[prost(string, tag = "3")]
    pub creator: String,
    #[prost(uint64, tag = "4")]
    pub created_ms: u64,
    /// Rises by one on every change (1 after the create).
    #[prost(uint64, tag = "5")]
    pub version: u64,
    /// Current members and tombstones of removed ones.
    #[prost(message, repeated, tag = "6")]
    pub members: Vec<StoredMember>,
    /// The latest requests applied, oldest first.
    #[prost(message, repeated, tag = "7")]
    pub recent: Vec<Applied>,
    /// The event of the latest change, with the request that made it, so
    /// that a retry after a crash between the record write and the event's
    /// append logs it.
    #[prost(message, optional, tag = "8")]
    pub last: Option<Logged>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredMember {
    #[prost(string, tag = "1")]
    pub user: String,
    #[prost(enumeration = "GroupRole", tag = "2")]
    pub role: i32,
    /// The version that added it.
    #[prost(uint64, tag = "3")]
    pub since: u64,
    /// 0, or the version that removed it (a tombstone: messages accepted
    /// before it still go to it).
    #[prost(uint64, tag = "4")]
    pub removed: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Applied {
    #[prost(string, tag = "1")]
    pub actor: String,
    #[prost(bytes = "bytes", tag = "2")]
    pub id: Bytes,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Logged {
    #[prost(string, tag = "1")]
    pub actor: String,
    #[prost(bytes = "bytes", tag = "2")]
    pub id: Bytes,
    #[prost(message, optional, tag = "3")]
    pub event: Option<GroupEvent>,
}

/// A change a request asks for, checked for shape (not yet against a group).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Create {
        subject: String,
        members: Vec<String>,
    },
    Add(Vec<String>),
    Remove(Vec<String>),
    Leave,
    Promote(Vec<String>),
    Demote(Vec<String>),
    Subject(String),
}

/// The refusal of a request: its code and a message for the client.
pub type Refusal = (Code, &'static str);

fn bad(why: &'static str) -> Refusal {
    (Code::BadGroupRequest, why)
}

impl Change {
    /// The change `req` asks for; `None` for `INFO` (a read).
    pub fn of(req: &GroupRequest) -> Result<Option<Change>, Refusal> {
        let named = || -> Result<Vec<String>, Refusal> {
            if req.members.len() > MAX_NAMED {
                return Err(bad("a group request names at most 256 members"));
            }
            if !req.members.iter().all(|m| valid_user_id(m)) {
                return Err(bad("a member is not a valid user id"));
            }
            let mut seen = std::collections::HashSet::new();
            Ok(req
                .members
                .iter()
                .filter(|m| seen.insert(m.as_str()))
                .cloned()
                .collect())
        };
        let some = |v: Vec<String>| {
            if v.is_empty() {
                Err(bad("the request names no member"))
            } else {
                Ok(v)
            }
        };
        let subject = || {
            if req.subject.len() > MAX_SUBJECT {
                Err(bad("the subject is longer than 100 bytes"))
            } else {
                Ok(req.subject.clone())
            }
        };
        if req.op() != GroupOp::Create && !valid_group_id(&req.group) {
            return Err(bad("not a group id"));
        }
        Ok(Some(match req.op() {
            GroupOp::Unspecified => return Err(bad("unknown group op")),
            GroupOp::Info => return Ok(None),
            GroupOp::Create => Change::Create {
                subject: subject()?,
                members: named()?,
            },
            GroupOp::Add => Change::Add(some(named()?)?),
            GroupOp::Remove => Change::Remove(some(named()?)?),
            GroupOp::Leave => Change::Leave,
            GroupOp::Promote => Change::Promote(some(named()?)?),
            GroupOp::Demote => Change::Demote(some(named()?)?),
            GroupOp::Subject => Change::Subject(subject()?),
        }))
    }
}

fn is_admin(m: &StoredMember) -> bool {
    m.role == GroupRole::Admin as i32
}

impl GroupState {
    /// The group `creator` makes (version 1), with `creator` as its admin.
    pub fn create(
        id: &str,
        creator: &str,
        now_ms: u64,
        change: &Change,
        limits: &Limits,
    ) -> Result<(GroupState, GroupEvent), Refusal> {
        let Change::Create { subject, members } = change else {
            return Err(bad("not a create"));
        };
        let mut all = vec![creator.to_owned()];
        for m in members {
            if !all.contains(m) {
                all.push(m.clone());
            }
        }
        if all.len() > limits.max_members {
            return Err((Code::GroupFull, "more members than the group may have"));
        }
        let g = GroupState {
            id: id.to_owned(),
            subject: subject.clone(),
            creator: creator.to_owned(),
            created_ms: now_ms,
            version: 1,
            members: all
                .iter()
                .map(|u| StoredMember {
                    user: u.clone(),
                    role: if u == creator {
                        GroupRole::Admin
                    } else {
                        GroupRole::Member
                    } as i32,
                    since: 1,
                    removed: 0,
                })
                .collect(),
            recent: Vec::new(),
            last: None,
        };
        let event = GroupEvent {
            op: GroupOp::Create as i32,
            members: all,
            subject: subject.clone(),
            version: 1,
        };
        Ok((g, event))
    }

    fn current(&self, user: &str) -> Option<&StoredMember> {
        self.members
            .iter()
            .find(|m| m.user == user && m.removed == 0)
    }

    fn current_mut(&mut self, user: &str) -> Option<&mut StoredMember> {
        self.members
            .iter_mut()
            .find(|m| m.user == user && m.removed == 0)
    }

    /// Whether `user` is a member now.
    pub fn is_member(&self, user: &str) -> bool {
        self.current(user).is_some()
    }

    /// How many members the group has now.
    pub fn size(&self) -> usize {
        self.members.iter().filter(|m| m.removed == 0).count()
    }

    /// The members a message accepted under version `v` goes to: added at
    /// or before `v` and not removed at or before it.
    pub fn recipients(&self, v: u64) -> Vec<&str> {
        self.members
            .iter()
            .filter(|m| m.since <= v && (m.removed == 0 || m.removed > v))
            .map(|m| m.user.as_str())
            .collect()
    }

    /// The group and its current members, as clients see them.
    pub fn info(&self) -> GroupInfo {
        GroupInfo {
            group: self.id.clone(),
            subject: self.subject.clone(),
            creator: self.creator.clone(),
            created_ms: self.created_ms,
            version: self.version,
            members: self
                .members
                .iter()
                .filter(|m| m.removed == 0)
                .map(|m| GroupMember {
                    user: m.user.clone(),
                    role: m.role,
                    since: m.since,
                })
                .collect(),
        }
    }

    /// Whether `actor`'s request `id` was applied already.
    pub fn applied(&self, actor: &str, id: &[u8]) -> bool {
        self.recent.iter().any(|a| a.actor == actor && a.id == id)
    }

    /// Remembers that `actor`'s request `id` made `event` (the last change).
    pub fn record(&mut self, actor: &str, id: Bytes, event: &GroupEvent) {
        self.recent.push(Applied {
            actor: actor.to_owned(),
            id: id.clone(),
        });
        if self.recent.len() > RECENT_REQUESTS {
            self.recent.remove(0);
        }
        self.last = Some(Logged {
            actor: actor.to_owned(),
            id,
            event: Some(event.clone()),
        });
    }

    /// Decides `change` by `actor`: the group after it and the event its
    /// members see, or the refusal.
    pub fn apply(
        &self,
        change: &Change,
        actor: &str,
        limits: &Limits,
    ) -> Result<(GroupState, GroupEvent), Refusal> {
        let Some(me) = self.current(actor) else {
            return Err((Code::NotAMember, "not a member of this group"));
        };
        let admin = is_admin(me);
        let mut g = self.clone();
        let v = self.version + 1;
        g.version = v;
        let mut event = GroupEvent {
            version: v,
            ..Default::default()
        };
        let need_admin = || {
            if admin {
                Ok(())
            } else {
                Err((Code::NotAdmin, "only the group's admins may do that"))
            }
        };
        match change {
            Change::Create { .. } => return Err(bad("the group exists")),
            Change::Add(users) => {
                need_admin()?;
                let new: Vec<&String> = users.iter().filter(|u| !self.is_member(u)).collect();
                if new.is_empty() {
                    return Err(bad("every one named is a member already"));
                }
                if self.size() + new.len() > limits.max_members {
                    return Err((Code::GroupFull, "more members than the group may have"));
                }
                for u in &new {
                    // A tombstone of the same user goes: messages of its old
                    // membership that are still fanned out go by version.
                    g.members.retain(|m| m.user != **u);
                    g.members.push(StoredMember {
                        user: (*u).clone(),
                        role: GroupRole::Member as i32,
                        since: v,
                        removed: 0,
                    });
                }
                event.op = GroupOp::Add as i32;
                event.members = new.into_iter().cloned().collect();
            }
            Change::Remove(users) => {
                need_admin()?;
                if !users.iter().all(|u| self.is_member(u)) {
                    return Err(bad("someone named is not a member"));
                }
                for u in users {
                    if let Some(m) = g.current_mut(u) {
                        m.removed = v;
                    }
                }
                g.keep_an_admin();
                event.op = GroupOp::Remove as i32;
                event.members = users.clone();
            }
            Change::Leave => {
                if let Some(m) = g.current_mut(actor) {
                    m.removed = v;
                }
                g.keep_an_admin();
                event.op = GroupOp::Leave as i32;
                event.members = vec![actor.to_owned()];
            }
            Change::Promote(users) | Change::Demote(users) => {
                need_admin()?;
                if !users.iter().all(|u| self.is_member(u)) {
                    return Err(bad("someone named is not a member"));
                }
                let promote = matches!(change, Change::Promote(_));
                let role = if promote {
                    GroupRole::Admin
                } else {
                    GroupRole::Member
                };
                for u in users {
                    if let Some(m) = g.current_mut(u) {
                        m.role = role as i32;
                    }
                }
                if !promote && !g.members.iter().any(|m| m.removed == 0 && is_admin(m)) {
                    return Err(bad("the group would have no admin"));
                }
                event.op = if promote {
                    GroupOp::Promote
                } else {
                    GroupOp::Demote
                } as i32;
                event.members = users.clone();
            }
            Change::Subject(s) => {
                need_admin()?;
                g.subject = s.clone();
                event.op = GroupOp::Subject as i32;
                event.subject = s.clone();
            }
        }
        g.prune_tombstones(limits);
        Ok((g, event))
    }

    /// When the last admin went, the longest-standing member becomes one
    /// (as WhatsApp does).
    fn keep_an_admin(&mut self) {
        let live = || self.members.iter().filter(|m| m.removed == 0);
        if live().any(is_admin) {
            return;
        }
        if let Some(oldest) = self
            .members
            .iter_mut()
            .filter(|m| m.removed == 0)
            .min_by_key(|m| m.since)
        {
            oldest.role = GroupRole::Admin as i32;
        }
    }

    /// Keeps at most `max_members` tombstones, the newest: the record stays
    /// bounded (older ones can only matter to a fan-out that is that many
    /// removals behind).
    fn prune_tombstones(&mut self, limits: &Limits) {
        let mut removed: Vec<u64> = self
            .members
            .iter()
            .filter(|m| m.removed != 0)
            .map(|m| m.removed)
            .collect();
        if removed.len() <= limits.max_members {
            return;
        }
        removed.sort_unstable();
        let cut = removed[removed.len() - limits.max_members];
        self.members.retain(|m| m.removed == 0 || m.removed >= cut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    fn made(members: &[&str]) -> GroupState {
        let c = Change::Create {
            subject: "s".into(),
            members: users(members),
        };
        GroupState::create("#000000000000000000000000", "a", 7, &c, &Limits::default())
            .unwrap()
            .0
    }

    #[test]
    fn ids_are_derived_and_checked() {
        let g = group_id("alice", &[1; 16]);
        assert!(valid_group_id(&g), "{g}");
        assert_eq!(g, group_id("alice", &[1; 16]));
        assert_ne!(g, group_id("bob", &[1; 16]));
        assert_ne!(g, group_id("alice", &[2; 16]));
        for bad in [
            "",
            "#",
            "alice",
            "#ABCDEF000000000000000000",
            "#00000000000000000000000",
        ] {
            assert!(!valid_group_id(bad), "{bad:?}");
        }
        assert!(is_group_log(&g));
        assert!(!is_group_log("alice"));
    }

    #[test]
    fn create_makes_the_creator_admin_and_dedupes_members() {
        let g = made(&["b", "c", "b", "a"]);
        assert_eq!(g.version, 1);
        assert_eq!(g.recipients(1), vec!["a", "b", "c"]);
        let info = g.info();
        assert_eq!(info.members[0].role, GroupRole::Admin as i32);
        assert_eq!(info.members[1].role, GroupRole::Member as i32);
    }

    #[test]
    fn only_admins_change_membership() {
        let g = made(&["b"]);
        let l = Limits::default();
        let e = g.apply(&Change::Add(users(&["c"])), "b", &l).unwrap_err();
        assert_eq!(e.0, Code::NotAdmin);
        let e = g
            .apply(&Change::Remove(users(&["a"])), "b", &l)
            .unwrap_err();
        assert_eq!(e.0, Code::NotAdmin);
        let e = g.apply(&Change::Add(users(&["c"])), "z", &l).unwrap_err();
        assert_eq!(e.0, Code::NotAMember);
        let (g2, ev) = g.apply(&Change::Add(users(&["c"])), "a", &l).unwrap();
        assert_eq!(g2.version, 2);
        assert_eq!(ev.op, GroupOp::Add as i32);
        assert_eq!(ev.members, users(&["c"]));
    }

    #[test]
    fn the_member_past_the_limit_is_refused() {
        let l = Limits { max_members: 3 };
        let c = Change::Create {
            subject: String::new(),
            members: users(&["b", "c", "d"]),
        };
        assert_eq!(
            GroupState::create("#0", "a", 0, &c, &l).unwrap_err().0,
            Code::GroupFull
        );
        let g = made(&["b", "c"]);
        let e = g.apply(&Change::Add(users(&["d"])), "a", &l).unwrap_err();
        assert_eq!(e.0, Code::GroupFull);
        let (g, _) = g.apply(&Change::Remove(users(&["c"])), "a", &l).unwrap();
        assert!(g.apply(&Change::Add(users(&["d"])), "a", &l).is_ok());
    }

    #[test]
    fn recipients_follow_versions() {
        let l = Limits::default();
        let g = made(&["b", "c"]);
        let (g, _) = g.apply(&Change::Remove(users(&["b"])), "a", &l).unwrap(); // v2
        let (g, _) = g.apply(&Change::Add(users(&["d"])), "a", &l).unwrap(); // v3
        assert_eq!(g.recipients(1), vec!["a", "b", "c"]);
        assert_eq!(g.recipients(2), vec!["a", "c"]);
        assert_eq!(g.recipients(3), vec!["a", "c", "d"]);
        assert!(!g.is_member("b"));
        assert_eq!(g.info().members.len(), 3);
    }

    #[test]
    fn the_last_admin_leaving_promotes_the_oldest_member() {
        let l = Limits::default();
        let g = made(&["b", "c"]);
        let (g, ev) = g.apply(&Change::Leave, "a", &l).unwrap();
        assert_eq!(ev.members, users(&["a"]));
        assert!(
            g.info()
                .members
                .iter()
                .any(|m| m.role == GroupRole::Admin as i32)
        );
        let e = g
            .apply(&Change::Demote(users(&["b"])), "b", &l)
            .unwrap_err();
        assert_eq!(e.0, Code::BadGroupRequest);
    }

    #[test]
    fn requests_are_checked_for_shape() {
        let mut r = GroupRequest {
            id: Bytes::from_static(&[0; 16]),
            group: String::new(),
            op: GroupOp::Create as i32,
            members: users(&["b"]),
            subject: "x".repeat(101),
        };
        assert_eq!(Change::of(&r).unwrap_err().0, Code::BadGroupRequest);
        r.subject = "ok".into();
        assert!(Change::of(&r).unwrap().is_some());
        r.op = GroupOp::Add as i32;
        assert_eq!(Change::of(&r).unwrap_err().0, Code::BadGroupRequest);
        r.group = group_id("a", &[0; 16]);
        r.members = vec!["bad id".into()];
        assert_eq!(Change::of(&r).unwrap_err().0, Code::BadGroupRequest);
        r.members = (0..257).map(|i| format!("u{i}")).collect();
        assert_eq!(Change::of(&r).unwrap_err().0, Code::BadGroupRequest);
        r.op = GroupOp::Info as i32;
        assert_eq!(Change::of(&r).unwrap(), None);
        r.op = 99;
        assert_eq!(Change::of(&r).unwrap_err().0, Code::BadGroupRequest);
    }

    #[test]
    fn tombstones_stay_bounded() {
        let l = Limits { max_members: 4 };
        let mut g = made(&["b"]);
        for i in 0..20 {
            let u = format!("u{i}");
            g = g.apply(&Change::Add(vec![u.clone()]), "a", &l).unwrap().0;
            g = g.apply(&Change::Remove(vec![u]), "a", &l).unwrap().0;
        }
        assert!(g.members.len() <= 2 + 4, "{}", g.members.len());
    }

    #[test]
    fn retries_are_recognised() {
        let mut g = made(&["b"]);
        let ev = GroupEvent::default();
        g.record("a", Bytes::from_static(&[1; 16]), &ev);
        assert!(g.applied("a", &[1; 16]));
        assert!(!g.applied("b", &[1; 16]));
        for i in 0..100u8 {
            g.record("a", Bytes::from(vec![i; 16]), &ev);
        }
        assert!(g.recent.len() <= RECENT_REQUESTS);
    }
}
