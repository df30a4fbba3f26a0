//! The group messages of the client protocol (docs/PROTOCOL.md "Groups"):
//! a field-for-field mirror of their part of `docs/wa.proto`.

use bytes::Bytes;

/// What a [`GroupRequest`] asks for. The numbers are part of the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum GroupOp {
    Unspecified = 0,
    /// Make a new group with `subject` and `members` (the sender is its
    /// first admin). `group` is left empty: the server names it.
    Create = 1,
    /// Add `members` (admins only).
    Add = 2,
    /// Remove `members` (admins only).
    Remove = 3,
    /// The sender leaves.
    Leave = 4,
    /// Make `members` admins (admins only).
    Promote = 5,
    /// Make `members` plain members (admins only).
    Demote = 6,
    /// Change the subject (admins only).
    Subject = 7,
    /// Read the group's info and membership (members only); changes nothing.
    Info = 8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum GroupRole {
    Member = 0,
    Admin = 1,
}

/// A change to a group, or a read of it; answered by `GroupResult` or
/// `Error`, both with `id`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GroupRequest {
    /// 16 bytes, unique per sender: a retry with the same id is answered
    /// as a duplicate (and names the same group for a create).
    #[prost(bytes = "bytes", tag = "1")]
    pub id: Bytes,
    /// The group id (`#` and 24 hex digits); empty for `CREATE`.
    #[prost(string, tag = "2")]
    pub group: String,
    #[prost(enumeration = "GroupOp", tag = "3")]
    pub op: i32,
    /// User ids, for `CREATE`, `ADD`, `REMOVE`, `PROMOTE`, `DEMOTE`.
    #[prost(string, repeated, tag = "4")]
    pub members: Vec<String>,
    /// For `CREATE` and `SUBJECT`.
    #[prost(string, tag = "5")]
    pub subject: String,
}

/// A message to every member of a group; answered like `Send`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SendGroup {
    #[prost(bytes = "bytes", tag = "1")]
    pub id: Bytes,
    #[prost(string, tag = "2")]
    pub group: String,
    #[prost(bytes = "bytes", tag = "3")]
    pub body: Bytes,
}

/// The answer to a `GroupRequest`: the group as it is after it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GroupResult {
    #[prost(bytes = "bytes", tag = "1")]
    pub id: Bytes,
    #[prost(message, optional, tag = "2")]
    pub info: Option<GroupInfo>,
    /// The request had been done before (a retry).
    #[prost(bool, tag = "3")]
    pub duplicate: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GroupInfo {
    #[prost(string, tag = "1")]
    pub group: String,
    #[prost(string, tag = "2")]
    pub subject: String,
    #[prost(string, tag = "3")]
    pub creator: String,
    #[prost(uint64, tag = "4")]
    pub created_ms: u64,
    /// Rises by one on every change.
    #[prost(uint64, tag = "5")]
    pub version: u64,
    /// The current members.
    #[prost(message, repeated, tag = "6")]
    pub members: Vec<GroupMember>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GroupMember {
    #[prost(string, tag = "1")]
    pub user: String,
    #[prost(enumeration = "GroupRole", tag = "2")]
    pub role: i32,
    /// The version that added it.
    #[prost(uint64, tag = "3")]
    pub since: u64,
}

/// A change to a group as its members see it: an item of their mailboxes
/// (`Envelope.group_event`, with `Envelope.group` set; `from` is who did it).
#[derive(Clone, PartialEq, prost::Message)]
pub struct GroupEvent {
    #[prost(enumeration = "GroupOp", tag = "1")]
    pub op: i32,
    /// Who was added, removed, promoted or demoted (the creator and first
    /// members for `CREATE`; the one who left for `LEAVE`).
    #[prost(string, repeated, tag = "2")]
    pub members: Vec<String>,
    /// The subject after a `CREATE` or `SUBJECT`.
    #[prost(string, tag = "3")]
    pub subject: String,
    /// The group's version after the change.
    #[prost(uint64, tag = "4")]
    pub version: u64,
}
