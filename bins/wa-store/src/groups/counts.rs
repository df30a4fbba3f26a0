//! Groups per user (docs/ARCHITECTURE.md "Groups per user"): a user's
//! groups are counted at the user's own home, in key-value space
//! `USER_GROUPS` (the set of its group ids, `common::user_groups`). A
//! group's home counts the group for the users a create or an add is about
//! to make members ([`Groups::reserve`], before the group's record is
//! written; refused with `TOO_MANY_GROUPS` naming the first user at the
//! limit, and what it counted is released), and stops counting it for the
//! ones a removal or a leave took out ([`Groups::release`], after the
//! record). Users here are counted through this node's shards, users of
//! other homes with one `CountGroups` per home and 256 users.
//!
//! Being a set, a retried count is a no-op. A crash between the count and
//! the group's record (or a release that never arrived) leaves the user
//! counted in a group it is not in: the next time that user is at the
//! limit, its home asks the home of each group counted for over a minute
//! whether the user is a member, and forgets those that say no
//! ([`Groups::not_member_of`]). The other order (record first) could let a
//! user past the limit; this one can only refuse until that check.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::link::{CountGroups, GroupUp, GroupsCounted, KvSpace, MAX_DELIVER_MEMBERS, link_down};
use common::proto::{Code, GroupOp, GroupRequest, ids};
use common::user_groups::{Joined, UserGroups};
use prost::Message as _;
use tokio::task::JoinSet;

use super::{Groups, Refused, now_ms};
use crate::home::LinkTx;

/// Compare-and-set attempts on one user's record before giving up.
const ATTEMPTS: usize = 8;
/// How long the check of one group counted for a user at the limit may
/// take; unanswered, the group stays counted.
const CHECK_WAIT: Duration = Duration::from_secs(5);

impl Groups {
    /// Counts `group` for each of `users` before they become its members;
    /// refused (and whatever was counted released) if any is in too many
    /// groups or its home cannot count it now.
    pub(super) async fn reserve(
        self: &Arc<Self>,
        group: &str,
        users: &[String],
    ) -> Result<(), Refused> {
        if users.is_empty() {
            return Ok(());
        }
        let codes = self.count_at_homes(group, users, true).await;
        let refused: Vec<(&String, u32)> = users
            .iter()
            .zip(codes.iter().copied())
            .filter(|(_, c)| *c != 0)
            .collect();
        let Some(&(first, code)) = refused.first() else {
            return Ok(());
        };
        let counted: Vec<String> = users
            .iter()
            .zip(codes.iter().copied())
            .filter(|(_, c)| *c == 0)
            .map(|(u, _)| u.clone())
            .collect();
        self.release(group, &counted).await;
        let full = refused
            .iter()
            .find(|(_, c)| *c == Code::TooManyGroups as u32);
        Err(match full {
            Some((user, _)) => (
                Code::TooManyGroups,
                format!("{user} is in as many groups as allowed (TOO_MANY_GROUPS)"),
            ),
            None => (
                Code::Unavailable,
                format!("the home of {first} cannot count its groups now (code {code}); retry"),
            ),
        })
    }

    /// Stops counting `group` for each of `users` (removed, left, or never
    /// made members). What fails stays counted until checked (see the
    /// module's doc).
    pub(super) async fn release(self: &Arc<Self>, group: &str, users: &[String]) {
        if users.is_empty() {
            return;
        }
        let codes = self.count_at_homes(group, users, false).await;
        let failed = codes.iter().filter(|c| **c != 0).count();
        if failed > 0 {
            tracing::warn!(
                group,
                failed,
                "users' homes did not release a group; they forget it once checked"
            );
        }
    }

    /// Counts (`join`) or releases `group` for each of `users` at their
    /// homes: one code per user, in order.
    async fn count_at_homes(
        self: &Arc<Self>,
        group: &str,
        users: &[String],
        join: bool,
    ) -> Vec<u32> {
        let owned = self.ownership.current();
        let map = self.client.as_ref().map(|c| c.current_map());
        let mut codes = vec![0u32; users.len()];
        let mut tasks = JoinSet::new();
        let mut there: HashMap<usize, Vec<usize>> = HashMap::new();
        for (i, u) in users.iter().enumerate() {
            if owned.owns(u) {
                let g = Arc::clone(self);
                let (u, group) = (u.clone(), group.to_owned());
                tasks.spawn(async move { (vec![i], vec![g.count_one(&u, &group, join).await]) });
            } else {
                let island = map.as_ref().map_or(0, |map| map.home_index(u));
                there.entry(island).or_default().push(i);
            }
        }
        for idx in there.into_values() {
            for chunk in idx.chunks(MAX_DELIVER_MEMBERS) {
                let chunk = chunk.to_vec();
                let names: Vec<String> = chunk.iter().map(|i| users[*i].clone()).collect();
                let (g, group) = (Arc::clone(self), group.to_owned());
                tasks.spawn(async move {
                    let unavailable = vec![Code::Unavailable as u32; chunk.len()];
                    let Some(client) = &g.client else {
                        return (chunk, unavailable);
                    };
                    match client.count_groups(&group, names, join).await {
                        Ok(c) if c.len() == chunk.len() => (chunk, c),
                        Ok(_) => (chunk, unavailable),
                        Err(e) => {
                            tracing::debug!(error = %e, "a user's home did not count a group");
                            (chunk, unavailable)
                        }
                    }
                });
            }
        }
        while let Some(r) = tasks.join_next().await {
            match r {
                Ok((idx, c)) => {
                    for (i, c) in idx.into_iter().zip(c) {
                        codes[i] = c;
                    }
                }
                Err(e) => tracing::error!(error = %e, "a count of a user's groups failed"),
            }
        }
        codes
    }

    /// A `CountGroups` from a group's home, for users of this one: answered
    /// on `link` once every record it changed is durable.
    pub fn count_here(self: &Arc<Self>, link: LinkTx, c: CountGroups) {
        let g = Arc::clone(self);
        tokio::spawn(async move {
            let answer = if c.users.len() > MAX_DELIVER_MEMBERS || c.group.is_empty() {
                GroupsCounted {
                    req: c.req,
                    code: Code::BadFrame as u32,
                    codes: Vec::new(),
                }
            } else {
                let mut tasks = JoinSet::new();
                let mut codes = vec![0u32; c.users.len()];
                for (i, u) in c.users.iter().enumerate() {
                    if !ids::valid_user_id(u) {
                        codes[i] = Code::BadRecipient as u32;
                    } else if let Err(code) = g.ownership.check(u, c.epoch, false) {
                        codes[i] = code as u32;
                    } else {
                        let (g, u, group) = (Arc::clone(&g), u.clone(), c.group.clone());
                        tasks.spawn(async move { (i, g.count_one(&u, &group, c.join).await) });
                    }
                }
                while let Some(r) = tasks.join_next().await {
                    if let Ok((i, code)) = r {
                        codes[i] = code;
                    }
                }
                GroupsCounted {
                    req: c.req,
                    code: 0,
                    codes,
                }
            };
            link.send(link_down::Kind::GroupsCounted(answer));
        });
    }

    /// Counts (`join`) or releases `group` in `user`'s record here: 0 once
    /// durable, else the code.
    async fn count_one(self: &Arc<Self>, user: &str, group: &str, join: bool) -> u32 {
        let mut checked = false;
        for _ in 0..ATTEMPTS {
            let (version, value) = match self.local.kv_get(KvSpace::UserGroups, user).await {
                Ok(r) => r,
                Err(c) => return c as u32,
            };
            let Ok(mut rec) = UserGroups::decode(value) else {
                tracing::error!(user, "a user's record of groups is corrupt");
                return Code::Internal as u32;
            };
            let now = now_ms();
            let changed = if !join {
                rec.leave(group)
            } else {
                match rec.join(group, now, self.max_groups_per_user) {
                    Joined::Already => false,
                    Joined::Added => true,
                    Joined::Full if checked => return Code::TooManyGroups as u32,
                    Joined::Full => {
                        checked = true;
                        let gone = self.not_member_of(user, rec.checkable(now)).await;
                        for g in &gone {
                            rec.leave(g);
                        }
                        if !gone.is_empty() {
                            tracing::info!(
                                user,
                                forgotten = gone.len(),
                                "groups the user was counted in but is not a member of"
                            );
                        }
                        if rec.join(group, now, self.max_groups_per_user) != Joined::Added {
                            return Code::TooManyGroups as u32;
                        }
                        true
                    }
                }
            };
            if !changed {
                return 0;
            }
            let value = Bytes::from(rec.encode_to_vec());
            match self
                .local
                .kv_put(KvSpace::UserGroups, user, value, version)
                .await
            {
                Ok(put) if put.conflict => continue,
                Ok(_) => return 0,
                Err(c) => return c as u32,
            }
        }
        Code::Internal as u32
    }

    /// Of `groups`, those whose home says `user` is not a member (or that
    /// do not exist); a group whose home does not answer in time stays.
    async fn not_member_of(self: &Arc<Self>, user: &str, groups: Vec<String>) -> Vec<String> {
        let mut tasks = JoinSet::new();
        for group in groups {
            let (g, user) = (Arc::clone(self), user.to_owned());
            tasks.spawn(async move {
                let gone = tokio::time::timeout(CHECK_WAIT, g.is_gone(&user, &group)).await;
                (group, gone == Ok(true))
            });
        }
        let mut gone = Vec::new();
        while let Some(r) = tasks.join_next().await {
            if let Ok((group, true)) = r {
                gone.push(group);
            }
        }
        gone
    }

    /// Whether `group`'s home says `user` is not a member of it.
    async fn is_gone(self: &Arc<Self>, user: &str, group: &str) -> bool {
        if self.ownership.current().owns(group) {
            return match self.load(group, true).await {
                Ok(None) => true,
                Ok(Some((_, g))) => !g.is_member(user),
                Err(_) => false,
            };
        }
        let Some(client) = &self.client else {
            return false;
        };
        let up = GroupUp {
            group: group.to_owned(),
            from: user.to_owned(),
            request: Some(GroupRequest {
                op: GroupOp::Info as i32,
                group: group.to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        };
        match client.group(up).await {
            Ok(down) => [Code::NotAMember as u32, Code::NoSuchGroup as u32].contains(&down.code),
            Err(_) => false,
        }
    }
}
