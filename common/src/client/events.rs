//! What the client tells the app: the [`Event`] stream.

use bytes::Bytes;
use tokio::sync::mpsc;

use super::MessageId;
use crate::proto::{Code, Media, ReceiptKind};

/// Something that happened on the client's connection.
#[derive(Debug, Clone)]
pub enum Event {
    /// Welcomed by the edge `server` (after the first connect and every reconnect).
    Connected {
        server: String,
    },
    /// The connection was lost; the client reconnects by itself. `code` is the
    /// server's reason when it gave one.
    Disconnected {
        code: Option<Code>,
        reason: String,
    },
    /// A reconnect attempt failed (the server refused it, `code` saying why,
    /// or could not be reached); the client tries again after `after`, by
    /// itself. Sends wait meanwhile: "waiting for the server". `retry_after`
    /// is what the server asked for (`OVERLOADED` during a reconnect storm):
    /// `after` is never shorter, plus jitter.
    Waiting {
        code: Option<Code>,
        reason: String,
        retry_after: Option<std::time::Duration>,
        after: std::time::Duration,
    },
    /// One tick: the recipient's home holds the send (or read receipt) `id`.
    Accepted {
        id: MessageId,
        server_ts_ms: u64,
        /// The home already had it (a resend after a lost `Accepted`).
        duplicate: bool,
    },
    /// The server refused the send (or read receipt) `id` for now; the client
    /// resends it by itself (same id, in order) after `after`. `code` says
    /// why, for the app to show: `STORAGE_FULL` (the recipient's server is
    /// out of disk space), `MAILBOX_FULL` (the recipient's mailbox is full),
    /// `UNAVAILABLE` (their server cannot be reached), `INTERNAL`.
    Retrying {
        id: MessageId,
        code: Code,
        message: String,
        after: std::time::Duration,
    },
    /// The home keeps this device's push endpoint (or cleared it), as asked
    /// by [`Client::set_push_endpoint`](super::Client::set_push_endpoint)
    /// under `id`.
    PushEndpointSet {
        id: MessageId,
    },
    /// The server refused the send (or read receipt) `id` for good.
    Rejected {
        id: MessageId,
        code: Code,
        message: String,
    },
    /// A message for this user. Acknowledge `seq` with [`Client::ack`](super::Client::ack).
    Message {
        seq: u64,
        from: String,
        from_device: u32,
        id: MessageId,
        server_ts_ms: u64,
        /// Empty for a media message.
        body: Bytes,
        /// The reference of a media message (`SendMedia`); fetch it with
        /// [`MediaClient::download`](super::MediaClient::download).
        media: Option<Box<Media>>,
    },
    /// A delivered or read receipt about messages this user sent. Acknowledge
    /// `seq` like a message.
    Receipt {
        seq: u64,
        from: String,
        kind: ReceiptKind,
        ids: Vec<MessageId>,
    },
    /// A receipt aggregated at the members' home (docs/PROTOCOL.md "Group
    /// receipts"): each of `members` has the ids beside it (`kind`:
    /// delivered). One item for many members; acknowledge `seq` like a
    /// message. [`Event::GroupReceiptState`] follows for each message whose
    /// state it changed.
    GroupReceipts {
        seq: u64,
        group: String,
        kind: ReceiptKind,
        members: Vec<(String, Vec<MessageId>)>,
    },
    /// Who has (and who has read) a group message this user sent changed,
    /// after a receipt or a membership learnt; see
    /// [`Client::group_receipts`](super::Client::group_receipts).
    GroupReceiptState(super::receipts::GroupReceiptState),
    /// The answer to a group request `id` (`Client::create_group` and the
    /// others): the group as it is after it.
    GroupResult {
        id: MessageId,
        info: crate::proto::GroupInfo,
        /// The request had been done before (a resend).
        duplicate: bool,
    },
    /// A message to a group this user is in (its own included: every
    /// device of the sender gets the copy too). Acknowledge `seq`; the
    /// sender gets delivered receipts as for a one-to-one message.
    GroupMessage {
        seq: u64,
        group: String,
        from: String,
        from_device: u32,
        id: MessageId,
        server_ts_ms: u64,
        body: Bytes,
    },
    /// A change to a group this user is (or was, for its own removal) in:
    /// created, added, removed, left, promoted, demoted, subject. `from`
    /// made it. Acknowledge `seq`.
    GroupEvent {
        seq: u64,
        group: String,
        from: String,
        id: MessageId,
        server_ts_ms: u64,
        event: crate::proto::GroupEvent,
    },
    Presence {
        user: String,
        online: bool,
        last_seen_ms: u64,
    },
    Typing {
        from: String,
        typing: bool,
    },
    /// A non-fatal error the server reported that is not about a pending send.
    Error {
        code: Code,
        message: String,
    },
    /// The client gave up (the token expired, was refused or revoked): it will
    /// not reconnect, and the stream ends after this event.
    Fatal {
        code: Code,
        message: String,
    },
}

/// The app's end of the event stream.
#[derive(Debug)]
pub struct Events {
    pub(crate) rx: mpsc::Receiver<Event>,
}

impl Events {
    /// The next event; `None` once the client has stopped (closed or fatal)
    /// and every event before that was returned.
    pub async fn next(&mut self) -> Option<Event> {
        self.rx.recv().await
    }
}
