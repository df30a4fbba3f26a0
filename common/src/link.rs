//! The internal link between edges (`wa-chat`) and homes (`wa-store`).
//!
//! One TLS connection per (edge, store node), opened by the edge, multiplexed:
//! the edge sends [`LinkUp`] frames, the store answers and pushes [`LinkDown`]
//! frames. Framing is the same as the client protocol's ([`crate::proto::frame`]).
//! The first frame must be [`LinkAuth`] carrying the cluster secret; the store
//! closes the connection on anything else. docs/ARCHITECTURE.md describes the flow.

use bytes::Bytes;

use crate::proto::Envelope;

/// Largest internal frame: a client frame plus routing fields.
pub const MAX_LINK_FRAME: usize = crate::proto::limits::MAX_FRAME + 1024;
/// ALPN name of the internal link.
pub const LINK_ALPN: &[u8] = b"wa-link/1";

#[derive(Clone, PartialEq, prost::Message)]
pub struct LinkUp {
    #[prost(
        oneof = "link_up::Kind",
        tags = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 18, 20"
    )]
    pub kind: Option<link_up::Kind>,
}

pub mod link_up {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Kind {
        #[prost(message, tag = "1")]
        Auth(super::LinkAuth),
        /// Append an item to a mailbox; answered by `AppendResult` with the same `req`.
        #[prost(message, tag = "2")]
        Append(super::Append),
        /// A device of `user` is connected through this edge as `session`: start
        /// streaming its mailbox and live traffic.
        #[prost(message, tag = "3")]
        Attach(super::Attach),
        /// The session ended.
        #[prost(message, tag = "4")]
        Detach(super::Detach),
        /// The session's client acknowledged these mailbox items: delete them.
        #[prost(message, tag = "5")]
        Ack(super::LinkAck),
        #[prost(message, tag = "6")]
        Typing(super::TypingUp),
        /// Subscribe (or unsubscribe) `session` to the presence of `target`.
        #[prost(message, tag = "7")]
        Watch(super::Watch),
        /// Read or compare-and-set one record of the home's small versioned
        /// key-value service; answered by `KvResult` with the same `req`.
        #[prost(message, tag = "8")]
        Kv(super::KvReq),
        /// Refuse `generation`s below this one for a device of a user from now
        /// on and close its sessions that carry one; answered by `RevokeResult`.
        #[prost(message, tag = "9")]
        Revoke(super::Revoke),
        /// Home to home: every item of these fragments has been handed over
        /// (appends with `handoff`); the receiving home may serve them now.
        /// Answered by `HandoffResult`.
        #[prost(message, tag = "10")]
        Handoff(super::HandoffDone),
        /// Secondary to primary on a replication link.
        #[prost(message, tag = "11")]
        ReplicaAck(super::ReplicaAck),
        /// Is this credential's device still accepted (not revoked)?
        /// Answered by `DeviceChecked` with the same `req` (wa-media asks).
        #[prost(message, tag = "12")]
        CheckDevice(super::CheckDevice),
        /// Are you there? Answered at once by `Pong` with the same nonce, by
        /// a home that said `heartbeat` in its `AuthOk`.
        #[prost(message, tag = "13")]
        Ping(super::LinkPing),
        /// A client's group request or group message, to the group's home;
        /// answered by `GroupResult` with the same `req`.
        #[prost(message, tag = "14")]
        Group(super::GroupUp),
        /// Home to home: a group's item for these members of the receiving
        /// home; answered by `GroupDelivered` with the same `req`.
        #[prost(message, tag = "15")]
        GroupDeliver(super::GroupDeliver),
        /// Home to home: count a group among these users' groups (or stop
        /// counting it), at the users' home; answered by `GroupsCounted`
        /// with the same `req`.
        #[prost(message, tag = "18")]
        CountGroups(super::CountGroups),
        /// Set or clear the push endpoint of a session's device, at the
        /// user's home; answered by `PushSet` for the session.
        #[prost(message, tag = "20")]
        SetPush(super::SetPush),
    }
}

/// A device's push endpoint, as the home keeps it: the value of the
/// `PushEndpoints` key-value space holds a [`PushEndpoints`] per user.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PushEndpoint {
    #[prost(uint32, tag = "1")]
    pub device: u32,
    /// The generation of the credential that set it: a revocation of the
    /// device at a higher generation removes it.
    #[prost(uint32, tag = "2")]
    pub generation: u32,
    #[prost(enumeration = "crate::proto::PushProvider", tag = "3")]
    pub provider: i32,
    #[prost(string, tag = "4")]
    pub token: String,
    #[prost(bool, tag = "5")]
    pub alert: bool,
    #[prost(bytes = "bytes", tag = "6")]
    pub p256dh: Bytes,
    #[prost(bytes = "bytes", tag = "7")]
    pub auth: Bytes,
}

/// Every push endpoint of one user, one per device, by device.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PushEndpoints {
    #[prost(message, repeated, tag = "1")]
    pub endpoints: Vec<PushEndpoint>,
    /// The devices owed a push: decided by the home and not yet sent (nor
    /// cancelled by the device showing life), in rising order. Kept in this
    /// replicated record so that a promoted secondary sends what its old
    /// primary decided (wa-store `push::restore`).
    #[prost(uint32, repeated, tag = "25")]
    pub owed: Vec<u32>,
}

/// See `link_up::Kind::SetPush`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SetPush {
    #[prost(uint64, tag = "1")]
    pub session: u64,
    /// The client's request id, echoed in [`PushSet`].
    #[prost(bytes = "bytes", tag = "2")]
    pub id: Bytes,
    #[prost(string, tag = "3")]
    pub user: String,
    /// The endpoint to keep (its `device` and `generation` are the
    /// session's); none: clear the device's endpoint.
    #[prost(message, optional, tag = "4")]
    pub endpoint: Option<PushEndpoint>,
    #[prost(uint32, tag = "5")]
    pub device: u32,
    /// The cluster map epoch the caller routed by (see [`Append::epoch`]).
    #[prost(uint64, tag = "6")]
    pub epoch: u64,
}

/// The answer to [`SetPush`], once the change is durable (`code` 0).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PushSet {
    #[prost(uint64, tag = "1")]
    pub session: u64,
    #[prost(bytes = "bytes", tag = "2")]
    pub id: Bytes,
    #[prost(uint32, tag = "3")]
    pub code: u32,
}

/// A heartbeat on the link (see `link_up::Kind::Ping`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct LinkPing {
    #[prost(uint64, tag = "1")]
    pub nonce: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CheckDevice {
    #[prost(uint64, tag = "1")]
    pub req: u64,
    #[prost(string, tag = "2")]
    pub user: String,
    #[prost(uint32, tag = "3")]
    pub device: u32,
    /// The generation of the credential being checked.
    #[prost(uint32, tag = "4")]
    pub generation: u32,
    /// The cluster map epoch the caller routed by (see [`Append::epoch`]).
    #[prost(uint64, tag = "5")]
    pub epoch: u64,
}

/// The answer to [`CheckDevice`]: `code` 0 when the device is accepted at
/// that generation, `REVOKED` when it was revoked (removed, its number
/// registered again, or its account deleted).
#[derive(Clone, PartialEq, prost::Message)]
pub struct DeviceChecked {
    #[prost(uint64, tag = "1")]
    pub req: u64,
    #[prost(uint32, tag = "2")]
    pub code: u32,
}

/// The key spaces of the home's key-value service. A record lives at the
/// home of its key: `ClusterMap::home(key)`, the same routing as a user id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum KvSpace {
    Unspecified = 0,
    /// key = an E.164 phone number, value = the user id registered with it.
    Phone = 1,
    /// key = a user id, value = its account record (opaque to the store).
    Account = 2,
    /// key = a group id, value = its `common::group::GroupState`.
    Group = 3,
    /// key = a user id, value = its devices' push endpoints
    /// ([`PushEndpoints`]); written by the home itself (`SetPush`, a
    /// revocation, a dead token), never through `Kv` puts.
    PushEndpoints = 4,
    /// key = a user id, value = the operator's ban (wa-store's
    /// `home::operator::BANNED`); written by the home itself, never
    /// through `Kv`: a link may only hand it over with its fragment.
    Banned = 5,
    /// key = a user id, value = who may see its presence
    /// (`crate::privacy::PresencePrivacy`), applied by the home.
    PresencePrivacy = 7,
    /// key = a user id, value = the groups it belongs to
    /// (`crate::user_groups::UserGroups`); written by the home itself when
    /// a group's home asks (`CountGroups`), never through `Kv` puts.
    UserGroups = 6,
}

/// Largest value the key-value service stores.
pub const MAX_KV_VALUE: usize = 16 * 1024;
/// Longest key (phone numbers and user ids are far shorter).
pub const MAX_KV_KEY: usize = 128;

#[derive(Clone, PartialEq, prost::Message)]
pub struct KvReq {
    #[prost(uint64, tag = "1")]
    pub req: u64,
    #[prost(enumeration = "KvSpace", tag = "2")]
    pub space: i32,
    #[prost(string, tag = "3")]
    pub key: String,
    #[prost(oneof = "kv_req::Op", tags = "4, 5")]
    pub op: Option<kv_req::Op>,
    /// The cluster map epoch the caller routed by (see [`Append::epoch`]).
    #[prost(uint64, tag = "6")]
    pub epoch: u64,
    /// From the previous owner of the key's fragment, handing it over (see
    /// [`Append::handoff`]).
    #[prost(bool, tag = "7")]
    pub handoff: bool,
}

pub mod kv_req {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Op {
        #[prost(message, tag = "4")]
        Get(super::KvGet),
        #[prost(message, tag = "5")]
        Put(super::KvPut),
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct KvGet {}

/// Stores `value` if the record's version is still `expected_version` (0 =
/// never written); the new version is one more. An empty value deletes the
/// record (its version keeps rising, so a deleted record is never confused
/// with one that was never written).
#[derive(Clone, PartialEq, prost::Message)]
pub struct KvPut {
    #[prost(bytes = "bytes", tag = "1")]
    pub value: Bytes,
    #[prost(uint64, tag = "2")]
    pub expected_version: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Revoke {
    #[prost(uint64, tag = "1")]
    pub req: u64,
    #[prost(string, tag = "2")]
    pub user: String,
    #[prost(uint32, tag = "3")]
    pub device: u32,
    /// The lowest generation still accepted for (`user`, `device`); the home
    /// never lowers it.
    #[prost(uint32, tag = "4")]
    pub generation: u32,
    /// The cluster map epoch the caller routed by (see [`Append::epoch`]).
    #[prost(uint64, tag = "5")]
    pub epoch: u64,
    /// From the previous owner of the user's fragment, handing it over (see
    /// [`Append::handoff`]).
    #[prost(bool, tag = "6")]
    pub handoff: bool,
}

/// Fragments `[first, last]` have arrived, under the map of `epoch`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HandoffDone {
    #[prost(uint64, tag = "1")]
    pub req: u64,
    #[prost(uint32, tag = "2")]
    pub first: u32,
    #[prost(uint32, tag = "3")]
    pub last: u32,
    #[prost(uint64, tag = "4")]
    pub epoch: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct HandoffResult {
    #[prost(uint64, tag = "1")]
    pub req: u64,
    #[prost(uint32, tag = "2")]
    pub code: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LinkAuth {
    #[prost(bytes = "bytes", tag = "1")]
    pub secret: Bytes,
    #[prost(string, tag = "2")]
    pub edge: String,
    #[prost(uint64, tag = "3")]
    pub epoch: u64,
    /// Set by a secondary store: this link carries its island's replication
    /// stream (primary to secondary) instead of edge traffic.
    #[prost(message, optional, tag = "4")]
    pub follow: Option<Follow>,
}

/// A secondary asks its island's primary for the replication stream,
/// starting with a copy of everything (catch-up).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Follow {
    /// The island both belong to.
    #[prost(string, tag = "1")]
    pub island: String,
}

/// Largest frame on a replication link (a batch of journal records).
pub const MAX_REPLICATION_FRAME: usize = 4 << 20;

/// Primary to secondary: journal records, `len:u32be crc32:u32be payload`
/// each, exactly as the primary's journal holds them; the first one is
/// number `first_lsn` of the stream, the rest follow without gaps.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Replicate {
    #[prost(uint64, tag = "1")]
    pub first_lsn: u64,
    #[prost(uint64, tag = "2")]
    pub count: u64,
    #[prost(bytes = "bytes", tag = "3")]
    pub records: Bytes,
    /// Records from before the stream began (catch-up): unnumbered, they
    /// come first and `first_lsn` and `count` are 0.
    #[prost(bool, tag = "4")]
    pub base: bool,
    /// When the primary sent this frame, in ms since the Unix epoch (0:
    /// not said, as from an older primary): the secondary's lag in seconds.
    #[prost(uint64, tag = "5")]
    pub sent_at_ms: u64,
}

/// Primary to secondary during catch-up: a page of the primary's engine,
/// raw keys and values in key order.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SnapshotPage {
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub keys: Vec<Vec<u8>>,
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub values: Vec<Vec<u8>>,
    /// Engine bytes sent so far and the engine's size on disk when the copy
    /// began (an estimate of the total, for progress).
    #[prost(uint64, tag = "3")]
    pub sent_bytes: u64,
    #[prost(uint64, tag = "4")]
    pub total_bytes: u64,
}

/// Primary to secondary: the engine copy is complete; what follows is the
/// stream alone.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SnapshotDone {
    #[prost(uint64, tag = "1")]
    pub pages: u64,
}

/// Secondary to primary: every record up to `lsn` is in its journal's
/// memory buffer. `caught_up` once the engine copy is complete (before it,
/// the secondary could not take over, and its acks do not make an append
/// `replicated`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ReplicaAck {
    #[prost(uint64, tag = "1")]
    pub lsn: u64,
    #[prost(bool, tag = "2")]
    pub caught_up: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Append {
    #[prost(uint64, tag = "1")]
    pub req: u64,
    #[prost(string, tag = "2")]
    pub to: String,
    /// `server_ts_ms` is ignored: the home stamps it.
    #[prost(message, optional, tag = "3")]
    pub envelope: Option<Envelope>,
    /// The cluster map epoch the sender routed by. A home answers a request
    /// with another epoch than its own `STALE_EPOCH`, and one for a user
    /// whose fragment it does not serve `WRONG_HOME`; the sender reloads the
    /// map and retries (docs/ARCHITECTURE.md, "Islands").
    #[prost(uint64, tag = "4")]
    pub epoch: u64,
    /// From the island that owned `to`'s fragment before a move: the item
    /// keeps its `server_ts_ms`, and is taken while the fragment is still
    /// arriving (refused to everybody else with `WRONG_HOME`).
    #[prost(bool, tag = "5")]
    pub handoff: bool,
    /// The generation of the sending device's credential (an edge's client
    /// append; 0 for a home's own appends: delivered receipts, hand-overs).
    /// The home that serves the sender refuses the append with `REVOKED`
    /// when it is below that device's lowest accepted generation, so a
    /// revocation that lands during a session stops its sends at once.
    #[prost(uint32, tag = "6")]
    pub from_generation: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Attach {
    #[prost(uint64, tag = "1")]
    pub session: u64,
    #[prost(string, tag = "2")]
    pub user: String,
    #[prost(uint32, tag = "3")]
    pub device: u32,
    #[prost(uint32, tag = "4")]
    pub generation: u32,
    /// The cluster map epoch the edge routed by (see [`Append::epoch`]).
    #[prost(uint64, tag = "5")]
    pub epoch: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Detach {
    #[prost(uint64, tag = "1")]
    pub session: u64,
    #[prost(string, tag = "2")]
    pub user: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LinkAck {
    #[prost(uint64, tag = "1")]
    pub session: u64,
    #[prost(string, tag = "2")]
    pub user: String,
    #[prost(uint64, repeated, tag = "3")]
    pub seqs: Vec<u64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TypingUp {
    #[prost(string, tag = "1")]
    pub from: String,
    #[prost(string, tag = "2")]
    pub to: String,
    #[prost(bool, tag = "3")]
    pub typing: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Watch {
    #[prost(uint64, tag = "1")]
    pub session: u64,
    #[prost(string, tag = "2")]
    pub target: String,
    #[prost(bool, tag = "3")]
    pub watch: bool,
    /// The user of `session`: the target's home shows it the target's
    /// presence only if the target's privacy allows (`crate::privacy`).
    #[prost(string, tag = "4")]
    pub watcher: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LinkDown {
    #[prost(
        oneof = "link_down::Kind",
        tags = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 20, 22"
    )]
    pub kind: Option<link_down::Kind>,
}

pub mod link_down {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Kind {
        #[prost(message, tag = "1")]
        AuthOk(super::LinkAuthOk),
        #[prost(message, tag = "2")]
        AppendResult(super::AppendResult),
        /// A mailbox item for a session; at most `PUSH_WINDOW` unacknowledged
        /// per session are in flight.
        #[prost(message, tag = "3")]
        Push(super::Push),
        #[prost(message, tag = "4")]
        Typing(super::TypingDown),
        #[prost(message, tag = "5")]
        Presence(super::PresenceDown),
        /// Close this session with `code`.
        #[prost(message, tag = "6")]
        Kick(super::Kick),
        /// The answer to `Kv`, sent once what it reports is durable.
        #[prost(message, tag = "7")]
        KvResult(super::KvResult),
        /// The answer to `Revoke`, sent once the revocation is durable.
        #[prost(message, tag = "8")]
        RevokeResult(super::RevokeResult),
        /// The answer to `Handoff`.
        #[prost(message, tag = "9")]
        HandoffResult(super::HandoffResult),
        /// Primary to secondary on a replication link.
        #[prost(message, tag = "10")]
        Replicate(super::Replicate),
        #[prost(message, tag = "11")]
        SnapshotPage(super::SnapshotPage),
        #[prost(message, tag = "12")]
        SnapshotDone(super::SnapshotDone),
        /// The answer to `Attach` when the device may connect: its
        /// generation is not revoked. Sent before any push of the session;
        /// a refused attach is answered by `Kick` instead. An edge acts on
        /// nothing the client sends before this answer.
        #[prost(message, tag = "13")]
        Attached(super::Attached),
        /// The answer to `CheckDevice`.
        #[prost(message, tag = "14")]
        DeviceChecked(super::DeviceChecked),
        /// The answer to `Ping`, with its nonce.
        #[prost(message, tag = "15")]
        Pong(super::LinkPing),
        /// The answer to `Group`, sent once what it reports is durable.
        #[prost(message, tag = "16")]
        GroupResult(super::GroupDown),
        /// The answer to `GroupDeliver`, once every copy it stored is durable.
        #[prost(message, tag = "17")]
        GroupDelivered(super::GroupDelivered),
        /// The answer to `CountGroups`, once what it reports is durable.
        #[prost(message, tag = "20")]
        GroupsCounted(super::GroupsCounted),
        /// The answer to `SetPush`, for its session.
        #[prost(message, tag = "22")]
        PushSet(super::PushSet),
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Attached {
    #[prost(uint64, tag = "1")]
    pub session: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct KvResult {
    #[prost(uint64, tag = "1")]
    pub req: u64,
    /// 0 on success (including a refused compare-and-set, see `conflict`),
    /// else a [`crate::proto::Code`].
    #[prost(uint32, tag = "2")]
    pub code: u32,
    /// The record's value after the operation (empty: absent or deleted).
    #[prost(bytes = "bytes", tag = "3")]
    pub value: Bytes,
    /// The record's version after the operation (0: never written).
    #[prost(uint64, tag = "4")]
    pub version: u64,
    /// A `Put` found another version than it expected and stored nothing;
    /// `value` and `version` are the current ones.
    #[prost(bool, tag = "5")]
    pub conflict: bool,
    /// For the `ACCOUNT` space: when the user was last connected (unix ms;
    /// now if connected; 0 if never seen).
    #[prost(uint64, tag = "6")]
    pub last_seen_ms: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RevokeResult {
    #[prost(uint64, tag = "1")]
    pub req: u64,
    #[prost(uint32, tag = "2")]
    pub code: u32,
    /// Sessions closed with `REVOKED` by this request.
    #[prost(uint32, tag = "3")]
    pub kicked: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LinkAuthOk {
    #[prost(string, tag = "1")]
    pub node: String,
    #[prost(uint64, tag = "2")]
    pub epoch: u64,
    /// The home answers `Ping` (older homes do not: an edge pings only a
    /// home that says so).
    #[prost(bool, tag = "3")]
    pub heartbeat: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AppendResult {
    #[prost(uint64, tag = "1")]
    pub req: u64,
    /// 0 on success, else a [`crate::proto::Code`].
    #[prost(uint32, tag = "2")]
    pub code: u32,
    #[prost(uint64, tag = "3")]
    pub server_ts_ms: u64,
    #[prost(bool, tag = "4")]
    pub duplicate: bool,
    #[prost(uint64, tag = "5")]
    pub seq: u64,
    /// With a refusal: when the edge may try again (0: the edge's own
    /// default for the code).
    #[prost(uint64, tag = "6")]
    pub retry_after_ms: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Push {
    #[prost(uint64, tag = "1")]
    pub session: u64,
    #[prost(uint64, tag = "2")]
    pub seq: u64,
    #[prost(message, optional, tag = "3")]
    pub envelope: Option<Envelope>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TypingDown {
    #[prost(uint64, tag = "1")]
    pub session: u64,
    #[prost(string, tag = "2")]
    pub from: String,
    #[prost(bool, tag = "3")]
    pub typing: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PresenceDown {
    #[prost(uint64, tag = "1")]
    pub session: u64,
    #[prost(string, tag = "2")]
    pub user: String,
    #[prost(bool, tag = "3")]
    pub online: bool,
    #[prost(uint64, tag = "4")]
    pub last_seen_ms: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Kick {
    #[prost(uint64, tag = "1")]
    pub session: u64,
    #[prost(uint32, tag = "2")]
    pub code: u32,
}

/// A client's group request (`request`) or group message (`send`), from
/// its edge to the group's home (docs/ARCHITECTURE.md "Groups").
#[derive(Clone, PartialEq, prost::Message)]
pub struct GroupUp {
    #[prost(uint64, tag = "1")]
    pub req: u64,
    /// The group id (for a create, the one `common::group::group_id` makes).
    #[prost(string, tag = "2")]
    pub group: String,
    /// The cluster map epoch the edge routed by (see [`Append::epoch`]).
    #[prost(uint64, tag = "3")]
    pub epoch: u64,
    /// Who asks (the session's user and device).
    #[prost(string, tag = "4")]
    pub from: String,
    #[prost(uint32, tag = "5")]
    pub from_device: u32,
    #[prost(message, optional, tag = "6")]
    pub request: Option<crate::proto::GroupRequest>,
    #[prost(message, optional, tag = "7")]
    pub send: Option<crate::proto::SendGroup>,
}

/// The answer to [`GroupUp`]: `code` 0 with the group's `info` (a request)
/// or the message's `server_ts_ms` (a send), else a [`crate::proto::Code`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct GroupDown {
    #[prost(uint64, tag = "1")]
    pub req: u64,
    #[prost(uint32, tag = "2")]
    pub code: u32,
    #[prost(message, optional, tag = "3")]
    pub info: Option<crate::proto::GroupInfo>,
    #[prost(uint64, tag = "4")]
    pub server_ts_ms: u64,
    #[prost(bool, tag = "5")]
    pub duplicate: bool,
    #[prost(uint64, tag = "6")]
    pub retry_after_ms: u64,
    /// What was wrong with a refused request, for the client.
    #[prost(string, tag = "7")]
    pub message: String,
}

/// Most members one [`GroupDeliver`] names (its frame stays below
/// [`MAX_LINK_FRAME`] with a body of `max_body` and 64-byte user ids).
pub const MAX_DELIVER_MEMBERS: usize = 256;

/// A group's home to a member's home: append `envelope` (a group message or
/// event, `group` set) to the mailbox of each of `members`, deduplicated
/// like any append.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GroupDeliver {
    #[prost(uint64, tag = "1")]
    pub req: u64,
    /// The cluster map epoch the sender grouped the members by; each member
    /// is checked against it (see [`Append::epoch`]).
    #[prost(uint64, tag = "2")]
    pub epoch: u64,
    #[prost(message, optional, tag = "3")]
    pub envelope: Option<Envelope>,
    /// At most [`MAX_DELIVER_MEMBERS`].
    #[prost(string, repeated, tag = "4")]
    pub members: Vec<String>,
}

/// The answer to [`GroupDeliver`]: one code per member, in its order (0:
/// stored durably; `WRONG_HOME`, `STALE_EPOCH`: try again where the map
/// says; others: try again later). `code` refuses the whole request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GroupDelivered {
    #[prost(uint64, tag = "1")]
    pub req: u64,
    #[prost(uint32, tag = "2")]
    pub code: u32,
    #[prost(uint32, repeated, tag = "3")]
    pub codes: Vec<u32>,
}

/// A group's home to a user's home: count `group` among the groups of each
/// of `users` (`join`; refused per user with `TOO_MANY_GROUPS` at the
/// home's `max_groups_per_user`), or stop counting it. Idempotent: the
/// record is a set of group ids.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CountGroups {
    #[prost(uint64, tag = "1")]
    pub req: u64,
    /// The cluster map epoch the sender grouped the users by; each user is
    /// checked against it (see [`Append::epoch`]).
    #[prost(uint64, tag = "2")]
    pub epoch: u64,
    #[prost(string, tag = "3")]
    pub group: String,
    /// At most [`MAX_DELIVER_MEMBERS`].
    #[prost(string, repeated, tag = "4")]
    pub users: Vec<String>,
    #[prost(bool, tag = "5")]
    pub join: bool,
}

/// The answer to [`CountGroups`]: one code per user, in its order (0: done
/// durably; `TOO_MANY_GROUPS`; `WRONG_HOME`, `STALE_EPOCH`: ask where the
/// map says; others: try again later). `code` refuses the whole request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GroupsCounted {
    #[prost(uint64, tag = "1")]
    pub req: u64,
    #[prost(uint32, tag = "2")]
    pub code: u32,
    #[prost(uint32, repeated, tag = "3")]
    pub codes: Vec<u32>,
}

/// Most unacknowledged pushes a home keeps in flight per session.
pub const PUSH_WINDOW: usize = 256;

impl crate::proto::frame::Kinded for LinkUp {
    fn has_kind(&self) -> bool {
        self.kind.is_some()
    }
}

impl crate::proto::frame::Kinded for LinkDown {
    fn has_kind(&self) -> bool {
        self.kind.is_some()
    }
}
