//! The client wire messages: a field-for-field mirror of `docs/wa.proto`.
//!
//! These are plain values; [`super::frame`] turns them into bytes and back.

use bytes::Bytes;

use super::group::{GroupEvent, GroupRequest, GroupResult, SendGroup};

/// Everything a client may send.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ClientFrame {
    #[prost(
        oneof = "client_frame::Kind",
        tags = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 20"
    )]
    pub kind: Option<client_frame::Kind>,
}

pub mod client_frame {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Kind {
        #[prost(message, tag = "1")]
        Hello(super::Hello),
        #[prost(message, tag = "2")]
        Send(super::Send),
        #[prost(message, tag = "3")]
        Ack(super::Ack),
        #[prost(message, tag = "4")]
        MarkRead(super::MarkRead),
        #[prost(message, tag = "5")]
        Ping(super::Ping),
        #[prost(message, tag = "6")]
        Typing(super::Typing),
        #[prost(message, tag = "7")]
        WatchPresence(super::WatchPresence),
        #[prost(message, tag = "8")]
        Goodbye(super::Goodbye),
        #[prost(message, tag = "9")]
        SendMedia(super::SendMedia),
        /// Groups (docs/PROTOCOL.md "Groups").
        #[prost(message, tag = "10")]
        GroupRequest(super::GroupRequest),
        #[prost(message, tag = "11")]
        SendGroup(super::SendGroup),
        /// Set or clear this device's push endpoint; answered by
        /// `PushEndpointSet` (or `Error`) with the same `id`.
        #[prost(message, tag = "20")]
        SetPushEndpoint(super::SetPushEndpoint),
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Hello {
    #[prost(string, tag = "1")]
    pub token: String,
    #[prost(string, tag = "2")]
    pub client: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Send {
    #[prost(bytes = "bytes", tag = "1")]
    pub id: Bytes,
    #[prost(string, tag = "2")]
    pub to: String,
    #[prost(bytes = "bytes", tag = "3")]
    pub body: Bytes,
}

/// A message carrying a media reference (docs/MEDIA.md); answered like [`Send`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct SendMedia {
    #[prost(bytes = "bytes", tag = "1")]
    pub id: Bytes,
    #[prost(string, tag = "2")]
    pub to: String,
    #[prost(message, optional, boxed, tag = "3")]
    pub media: Option<Box<Media>>,
}

/// A reference to a blob on a wa-media node.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Media {
    /// `<node>-<64 hex sha256>`.
    #[prost(string, tag = "1")]
    pub handle: String,
    #[prost(uint64, tag = "2")]
    pub size: u64,
    /// 32 bytes.
    #[prost(bytes = "bytes", tag = "3")]
    pub sha256: Bytes,
    #[prost(string, tag = "4")]
    pub mime: String,
    #[prost(bytes = "bytes", tag = "5")]
    pub thumbnail: Bytes,
    /// Never read by servers.
    #[prost(bytes = "bytes", tag = "6")]
    pub opaque: Bytes,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Ack {
    #[prost(uint64, repeated, tag = "1")]
    pub seqs: Vec<u64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct MarkRead {
    #[prost(bytes = "bytes", tag = "1")]
    pub id: Bytes,
    #[prost(string, tag = "2")]
    pub to: String,
    #[prost(bytes = "bytes", repeated, tag = "3")]
    pub ids: Vec<Bytes>,
    /// The group the messages were sent to, when they are group messages
    /// (empty otherwise): the sender's home then aggregates the members'
    /// read receipts (docs/PROTOCOL.md "Group receipts").
    #[prost(string, tag = "4")]
    pub group: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Ping {
    #[prost(uint64, tag = "1")]
    pub nonce: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Typing {
    #[prost(string, tag = "1")]
    pub to: String,
    #[prost(bool, tag = "2")]
    pub typing: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct WatchPresence {
    #[prost(string, tag = "1")]
    pub user: String,
    #[prost(bool, tag = "2")]
    pub watch: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Goodbye {
    #[prost(uint32, tag = "1")]
    pub code: u32,
    #[prost(uint64, tag = "2")]
    pub retry_after_ms: u64,
    #[prost(string, tag = "3")]
    pub reason: String,
}

/// Which push service wakes a device (docs/PROTOCOL.md, "Push notifications").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum PushProvider {
    Unspecified = 0,
    /// Apple Push Notification service: `token` is the device token (hex).
    Apns = 1,
    /// Firebase Cloud Messaging (HTTP v1): `token` is the registration token.
    Fcm = 2,
    /// UnifiedPush / Web Push: `token` is the endpoint URL; `p256dh` and
    /// `auth` are the device's RFC 8291 keys.
    Unifiedpush = 3,
}

/// Sets (or, with `provider` unspecified, clears) the push endpoint of the
/// sending device.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SetPushEndpoint {
    /// 16 bytes, chosen by the client; echoed in the answer.
    #[prost(bytes = "bytes", tag = "1")]
    pub id: Bytes,
    #[prost(enumeration = "PushProvider", tag = "2")]
    pub provider: i32,
    /// The device token (APNs, FCM) or the endpoint URL (UnifiedPush).
    #[prost(string, tag = "3")]
    pub token: String,
    /// A visible alert ("you have N new items") rather than a silent wake.
    #[prost(bool, tag = "4")]
    pub alert: bool,
    /// UnifiedPush: the device's P-256 public key, 65 bytes uncompressed.
    #[prost(bytes = "bytes", tag = "5")]
    pub p256dh: Bytes,
    /// UnifiedPush: the device's 16-byte authentication secret.
    #[prost(bytes = "bytes", tag = "6")]
    pub auth: Bytes,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PushEndpointSet {
    #[prost(bytes = "bytes", tag = "1")]
    pub id: Bytes,
}

/// Everything the server may send.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ServerFrame {
    #[prost(oneof = "server_frame::Kind", tags = "1, 2, 3, 4, 5, 6, 7, 8, 9, 20")]
    pub kind: Option<server_frame::Kind>,
}

pub mod server_frame {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Kind {
        #[prost(message, tag = "1")]
        Welcome(super::Welcome),
        #[prost(message, tag = "2")]
        Accepted(super::Accepted),
        #[prost(message, tag = "3")]
        Deliver(super::Deliver),
        #[prost(message, tag = "4")]
        Error(super::Error),
        #[prost(message, tag = "5")]
        Pong(super::Pong),
        #[prost(message, tag = "6")]
        Typing(super::TypingEvent),
        #[prost(message, tag = "7")]
        Presence(super::Presence),
        #[prost(message, tag = "8")]
        Goodbye(super::Goodbye),
        /// The answer to a `GroupRequest`.
        #[prost(message, tag = "9")]
        GroupResult(super::GroupResult),
        /// The device's push endpoint is stored (or cleared), durably.
        #[prost(message, tag = "20")]
        PushEndpointSet(super::PushEndpointSet),
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Welcome {
    #[prost(string, tag = "1")]
    pub user: String,
    #[prost(uint32, tag = "2")]
    pub device: u32,
    #[prost(uint64, tag = "3")]
    pub server_time_ms: u64,
    #[prost(uint32, tag = "4")]
    pub keepalive_secs: u32,
    #[prost(uint32, tag = "5")]
    pub idle_timeout_secs: u32,
    #[prost(uint32, tag = "6")]
    pub max_frame: u32,
    #[prost(uint32, tag = "7")]
    pub max_body: u32,
    #[prost(string, tag = "8")]
    pub server: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Accepted {
    #[prost(bytes = "bytes", tag = "1")]
    pub id: Bytes,
    #[prost(uint64, tag = "2")]
    pub server_ts_ms: u64,
    #[prost(bool, tag = "3")]
    pub duplicate: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Deliver {
    #[prost(uint64, tag = "1")]
    pub seq: u64,
    #[prost(message, optional, tag = "2")]
    pub envelope: Option<Envelope>,
}

/// A stored item of a mailbox: a message or a receipt, as the recipient sees it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Envelope {
    #[prost(string, tag = "1")]
    pub from: String,
    #[prost(uint32, tag = "2")]
    pub from_device: u32,
    #[prost(bytes = "bytes", tag = "3")]
    pub id: Bytes,
    #[prost(uint64, tag = "4")]
    pub server_ts_ms: u64,
    #[prost(oneof = "envelope::Content", tags = "5, 6, 7, 8")]
    pub content: Option<envelope::Content>,
    /// The group this item belongs to (a group message or event, or a
    /// receipt about a group message); empty otherwise.
    #[prost(string, tag = "10")]
    pub group: String,
    /// The group's membership version a group message or event was
    /// accepted under.
    #[prost(uint64, tag = "11")]
    pub group_version: u64,
}

pub mod envelope {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Content {
        #[prost(bytes = "bytes", tag = "5")]
        Body(bytes::Bytes),
        #[prost(message, tag = "6")]
        Receipt(super::Receipt),
        /// Boxed: a `Media` is several times the size of the other variants.
        #[prost(message, tag = "7")]
        Media(Box<super::Media>),
        /// A change to a group (`Envelope.group`).
        #[prost(message, tag = "8")]
        GroupEvent(super::GroupEvent),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ReceiptKind {
    Unspecified = 0,
    Delivered = 1,
    Read = 2,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Receipt {
    #[prost(enumeration = "ReceiptKind", tag = "1")]
    pub kind: i32,
    #[prost(bytes = "bytes", repeated, tag = "2")]
    pub ids: Vec<Bytes>,
    /// Set only in a receipt aggregated at a member's home (group messages,
    /// docs/PROTOCOL.md "Group receipts"): which member has which ids. The
    /// envelope's `from` and `ids` then repeat the first entry, so that a
    /// client that knows nothing of this field reads a true receipt.
    #[prost(message, repeated, tag = "3")]
    pub members: Vec<MemberReceipt>,
}

/// One member's part of an aggregated receipt.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MemberReceipt {
    #[prost(string, tag = "1")]
    pub member: String,
    #[prost(uint32, tag = "2")]
    pub device: u32,
    #[prost(bytes = "bytes", repeated, tag = "3")]
    pub ids: Vec<Bytes>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Error {
    #[prost(uint32, tag = "1")]
    pub code: u32,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(bytes = "bytes", tag = "3")]
    pub id: Bytes,
    #[prost(bool, tag = "4")]
    pub fatal: bool,
    #[prost(uint64, tag = "5")]
    pub retry_after_ms: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Pong {
    #[prost(uint64, tag = "1")]
    pub nonce: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TypingEvent {
    #[prost(string, tag = "1")]
    pub from: String,
    #[prost(bool, tag = "2")]
    pub typing: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Presence {
    #[prost(string, tag = "1")]
    pub user: String,
    #[prost(bool, tag = "2")]
    pub online: bool,
    #[prost(uint64, tag = "3")]
    pub last_seen_ms: u64,
}

/// The signed part of a credential token.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TokenClaims {
    #[prost(string, tag = "1")]
    pub user: String,
    #[prost(uint32, tag = "2")]
    pub device: u32,
    #[prost(uint32, tag = "3")]
    pub generation: u32,
    #[prost(uint64, tag = "4")]
    pub expires_at: u64,
    #[prost(string, tag = "5")]
    pub key_id: String,
    #[prost(uint64, tag = "6")]
    pub issued_at: u64,
    /// A stable, opaque key of the account's phone number (wa-register's
    /// keyed hash of it; empty in tokens minted by `wactl token`): the same
    /// for every user id the number ever had, so per-account limits (wa-media's
    /// upload quota) cannot be reset by deleting the account and registering
    /// the number again.
    #[prost(string, tag = "7")]
    pub account: String,
}

impl Media {
    /// What is wrong with this reference, if anything: the handle is not
    /// `<node>-<64 hex>`, `sha256` is not 32 bytes or differs from the hash in
    /// the handle, `size` is 0, or `mime` is longer than
    /// [`MAX_MEDIA_MIME`](super::limits::MAX_MEDIA_MIME) bytes. (The
    /// encoded size is limited separately, by `max_body`.)
    pub fn problem(&self) -> Option<&'static str> {
        use super::limits::{MAX_MEDIA_MIME, MEDIA_SHA256_LEN};
        if !super::ids::valid_media_handle(&self.handle) {
            return Some("Media.handle is not <node>-<64 hex digits>");
        }
        if self.sha256.len() != MEDIA_SHA256_LEN {
            return Some("Media.sha256 must be 32 bytes");
        }
        if !self.handle.ends_with(&hex::encode(&self.sha256)) {
            return Some("Media.sha256 differs from the hash in Media.handle");
        }
        if self.size == 0 {
            return Some("Media.size must be more than 0");
        }
        if self.mime.len() > MAX_MEDIA_MIME {
            return Some("Media.mime is too long");
        }
        None
    }
}

impl Envelope {
    /// What kind of item this is, for deduplication: a message and the receipts
    /// about it share an id but are different items.
    pub fn item_kind(&self) -> ItemKind {
        match &self.content {
            Some(envelope::Content::Receipt(r)) if r.kind == ReceiptKind::Delivered as i32 => {
                ItemKind::Delivered
            }
            Some(envelope::Content::Receipt(_)) => ItemKind::Read,
            _ => ItemKind::Message,
        }
    }
}

/// The three kinds of mailbox item. The byte value is part of the store's dedupe
/// key and so of its on-disk format: never renumber.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ItemKind {
    Message = 0,
    Delivered = 1,
    Read = 2,
}

/// Longest push token or UnifiedPush endpoint URL.
pub const MAX_PUSH_TOKEN: usize = 1024;

/// What is wrong with a push endpoint, if anything: an unknown provider, an
/// empty or over-long token, a UnifiedPush endpoint that is not an http(s)
/// URL, or keys other than 65 (`p256dh`, uncompressed P-256) and 16
/// (`auth`) bytes. APNs and FCM endpoints carry no keys. (A clear,
/// provider unspecified, is not checked here.)
pub fn push_endpoint_problem(
    provider: i32,
    token: &str,
    p256dh: &[u8],
    auth: &[u8],
) -> Option<&'static str> {
    let provider = match PushProvider::try_from(provider) {
        Ok(p) if p != PushProvider::Unspecified => p,
        _ => return Some("SetPushEndpoint.provider is not apns, fcm or unifiedpush"),
    };
    if token.is_empty() || token.len() > MAX_PUSH_TOKEN {
        return Some("SetPushEndpoint.token must be 1 to 1024 bytes");
    }
    if token.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Some("SetPushEndpoint.token holds spaces or control characters");
    }
    match provider {
        PushProvider::Unifiedpush => {
            if !(token.starts_with("https://") || token.starts_with("http://")) {
                return Some("a UnifiedPush endpoint must be an http(s) URL");
            }
            if p256dh.len() != 65 || p256dh[0] != 4 {
                return Some("SetPushEndpoint.p256dh must be a 65-byte uncompressed P-256 key");
            }
            if auth.len() != 16 {
                return Some("SetPushEndpoint.auth must be 16 bytes");
            }
        }
        _ if !p256dh.is_empty() || !auth.is_empty() => {
            return Some("only UnifiedPush endpoints carry keys");
        }
        PushProvider::Apns if !token.bytes().all(|b| b.is_ascii_hexdigit()) => {
            return Some("an APNs device token is hex digits");
        }
        _ => {}
    }
    None
}
