//! Protocol limits. Servers announce the values they enforce in `Welcome`; these
//! are the protocol's defaults and upper bounds.

/// Bytes of the length prefix in front of every frame.
pub const HEADER_LEN: usize = 4;
/// Largest frame payload (after the length prefix) a peer must accept.
pub const MAX_FRAME: usize = 128 * 1024;
/// Largest message body.
pub const MAX_BODY: usize = 64 * 1024;
/// Length of a message id.
pub const ID_LEN: usize = 16;
/// Longest user id, in bytes.
pub const MAX_USER_ID: usize = 64;
/// Most sequence numbers in one `Ack`, and most ids in one `MarkRead`.
pub const MAX_BATCH: usize = 1024;
/// Longest `Hello.client` string.
pub const MAX_CLIENT_NAME: usize = 64;
/// The ALPN protocol name of this protocol version, on TLS and QUIC.
pub const ALPN: &[u8] = b"wa/1";
/// Longest `Media.handle`: a node name (at most 32 bytes), `-`, 64 hex digits.
pub const MAX_MEDIA_HANDLE: usize = 32 + 1 + 64;
/// Longest `Media.mime`.
pub const MAX_MEDIA_MIME: usize = 100;
/// Length of `Media.sha256`.
pub const MEDIA_SHA256_LEN: usize = 32;
/// `retry_after_ms` servers send with `UNAVAILABLE` and `INTERNAL`.
pub const RETRY_UNAVAILABLE_MS: u64 = 1000;
/// `retry_after_ms` a home sends with `STORAGE_FULL`: room comes back when an
/// operator frees disk space, or as recipients take their mail.
pub const RETRY_STORAGE_FULL_MS: u64 = 5000;
/// `retry_after_ms` a home sends with `MAILBOX_FULL`: room comes back when
/// the recipient reads their mail.
pub const RETRY_MAILBOX_FULL_MS: u64 = 5000;
/// `retry_after_ms` a group's home sends with `GROUP_BUSY`: its fan-out
/// queue drains at the speed members' homes store copies.
pub const RETRY_GROUP_BUSY_MS: u64 = 1000;
