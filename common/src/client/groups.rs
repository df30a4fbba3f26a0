//! The client's group calls (docs/PROTOCOL.md "Groups"): each returns the
//! request's id at once; the answer comes as [`Event::GroupResult`]
//! (or [`Event::Accepted`] for [`Client::send_group`]) or
//! [`Event::Rejected`] with that id, and is resent like a send until then.
//!
//! [`Event::GroupResult`]: super::Event::GroupResult
//! [`Event::Accepted`]: super::Event::Accepted
//! [`Event::Rejected`]: super::Event::Rejected

use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::driver::Command;
use super::{Client, ClientError, GroupReceiptState, MessageId, check_user};
use crate::group::{MAX_NAMED, MAX_SUBJECT, group_id, valid_group_id};
use crate::proto::{GroupOp, GroupRequest};

impl Client {
    /// Makes a group of this user (its admin) and `members`. Returns the
    /// request's id and the new group's id (derived from the request's id
    /// and `me`, this client's user id, as the server derives it).
    pub async fn create_group(
        &self,
        me: &str,
        subject: &str,
        members: &[&str],
    ) -> Result<(MessageId, String), ClientError> {
        let id: MessageId = rand::random();
        let group = group_id(me, &id);
        self.group_request(id, GroupOp::Create, "", members, subject)
            .await?;
        Ok((id, group))
    }

    /// Adds `members` (admins only).
    pub async fn add_members(
        &self,
        group: &str,
        members: &[&str],
    ) -> Result<MessageId, ClientError> {
        self.group_op(GroupOp::Add, group, members, "").await
    }

    /// Removes `members` (admins only).
    pub async fn remove_members(
        &self,
        group: &str,
        members: &[&str],
    ) -> Result<MessageId, ClientError> {
        self.group_op(GroupOp::Remove, group, members, "").await
    }

    /// Leaves the group.
    pub async fn leave_group(&self, group: &str) -> Result<MessageId, ClientError> {
        self.group_op(GroupOp::Leave, group, &[], "").await
    }

    /// Makes `members` admins (`true`) or plain members (admins only).
    pub async fn set_admins(
        &self,
        group: &str,
        members: &[&str],
        admin: bool,
    ) -> Result<MessageId, ClientError> {
        let op = if admin {
            GroupOp::Promote
        } else {
            GroupOp::Demote
        };
        self.group_op(op, group, members, "").await
    }

    /// Changes the subject (admins only).
    pub async fn set_subject(&self, group: &str, subject: &str) -> Result<MessageId, ClientError> {
        self.group_op(GroupOp::Subject, group, &[], subject).await
    }

    /// Asks for the group's info and membership (members only).
    pub async fn group_info(&self, group: &str) -> Result<MessageId, ClientError> {
        self.group_op(GroupOp::Info, group, &[], "").await
    }

    /// Tells `to` that its messages `ids` in `group` were read: like
    /// [`Client::mark_read`], but the sender's home aggregates the members'
    /// read receipts of a group (docs/PROTOCOL.md "Group receipts"), so the
    /// sender gets one item for many readers. Returns the receipt's id.
    pub async fn mark_read_in_group(
        &self,
        group: &str,
        to: &str,
        ids: &[MessageId],
    ) -> Result<MessageId, ClientError> {
        check_group(group)?;
        self.mark_read_as(to, ids, group.to_owned()).await
    }

    /// Sends `body` to every member of `group`, answered like
    /// [`Client::send`]; `NOT_A_MEMBER` if this user is not one (any more).
    pub async fn send_group(&self, group: &str, body: Bytes) -> Result<MessageId, ClientError> {
        check_group(group)?;
        let max = self.shared.max_body.load(Ordering::Relaxed);
        if body.len() > max {
            return Err(ClientError::BodyTooLarge {
                len: body.len(),
                max,
            });
        }
        let id: MessageId = rand::random();
        self.pending_command(Command::SendGroup {
            id,
            group: group.to_owned(),
            body,
        })
        .await?;
        Ok(id)
    }

    /// Where group message `id` this user sent stands: who has it, who
    /// has read it, and whether all of the group's members (at the
    /// message's version, the sender excluded) do, from the receipts this
    /// client received (docs/PROTOCOL.md "Group receipts"). `None` if `id`
    /// is not known as a message to `group`.
    pub fn group_receipts(&self, group: &str, id: &MessageId) -> Option<GroupReceiptState> {
        let t = self
            .shared
            .receipts
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        t.state(id).filter(|s| s.group == group)
    }

    /// The members who have read group message `id` (see
    /// [`Client::group_receipts`]); empty if none or not known.
    pub fn who_has_read(&self, group: &str, id: &MessageId) -> Vec<String> {
        self.group_receipts(group, id)
            .map(|s| s.read)
            .unwrap_or_default()
    }

    async fn group_op(
        &self,
        op: GroupOp,
        group: &str,
        members: &[&str],
        subject: &str,
    ) -> Result<MessageId, ClientError> {
        check_group(group)?;
        let id: MessageId = rand::random();
        self.group_request(id, op, group, members, subject).await?;
        Ok(id)
    }

    async fn group_request(
        &self,
        id: MessageId,
        op: GroupOp,
        group: &str,
        members: &[&str],
        subject: &str,
    ) -> Result<(), ClientError> {
        for m in members {
            check_user(m)?;
        }
        if members.len() > MAX_NAMED {
            return Err(ClientError::TooManyIds {
                len: members.len(),
                max: MAX_NAMED,
            });
        }
        if subject.len() > MAX_SUBJECT {
            return Err(ClientError::BodyTooLarge {
                len: subject.len(),
                max: MAX_SUBJECT,
            });
        }
        self.pending_command(Command::Group(GroupRequest {
            id: Bytes::copy_from_slice(&id),
            group: group.to_owned(),
            op: op as i32,
            members: members.iter().map(|m| m.to_string()).collect(),
            subject: subject.to_owned(),
        }))
        .await
    }
}

fn check_group(group: &str) -> Result<(), ClientError> {
    if valid_group_id(group) {
        Ok(())
    } else {
        Err(ClientError::BadGroup(group.to_owned()))
    }
}
