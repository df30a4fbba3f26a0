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
    #[prost(oneof = "link_up::Kind", tags = "1, 2, 3, 4, 5, 6, 7")]
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
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LinkAuth {
    #[prost(bytes = "bytes", tag = "1")]
    pub secret: Bytes,
    #[prost(string, tag = "2")]
    pub edge: String,
    #[prost(uint64, tag = "3")]
    pub epoch: u64,
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
    #[prost(uint64, tag = "4")]
    pub epoch: u64,
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
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LinkDown {
    #[prost(oneof = "link_down::Kind", tags = "1, 2, 3, 4, 5, 6")]
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
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LinkAuthOk {
    #[prost(string, tag = "1")]
    pub node: String,
    #[prost(uint64, tag = "2")]
    pub epoch: u64,
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
