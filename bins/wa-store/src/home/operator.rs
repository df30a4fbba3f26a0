//! What an operator asks of the shard of one user or key (`wactl user`,
//! `wactl trace`; `crate::inspect` serves them), and what it answers.
//! Nothing here carries message contents.

use crate::storage::MailboxSize;

/// The key-value space of the operator's bans (key = a user id, value =
/// JSON `{since_ms, reason}`, empty once lifted). The store's own: links
/// can neither read nor write it, except a hand-over that moves it with its
/// fragment (`crate::listener`).
pub const BANNED: u8 = common::link::KvSpace::Banned as i32 as u8;

/// One operation of [`super::Op::Operator`].
#[derive(Debug, Clone)]
pub enum Action {
    /// What the home knows of the user.
    Show,
    /// Refuse the user's logins from now on, and close its sessions.
    Ban { reason: String },
    /// Lift the ban.
    Unban,
    /// Delete the account record and the mailbox, revoke every device
    /// (these ones from the account record, those with a generation on
    /// record, and those with a session).
    Delete { devices: Vec<u32> },
    /// The key is a phone number: forget it if it names `user`.
    ForgetPhone { user: String },
    /// Where the message `id` from `from` to the key's user is now.
    Trace { from: String, id: Vec<u8> },
}

/// The answer to an [`Action`].
#[derive(Debug, Clone)]
pub enum Answer {
    User(UserView),
    /// Ban and unban: whether the user was banned before, sessions closed.
    Banned {
        was: bool,
        kicked: u32,
    },
    Deleted(Deleted),
    PhoneForgot {
        forgot: bool,
    },
    Trace(TraceView),
    /// A storage or journal error (logged), as text.
    Failed(String),
}

/// One session of the user, as the home sees it.
#[derive(Debug, Clone)]
pub struct SessionView {
    /// The link (edge connection) it came over, and its id there.
    pub link: u64,
    pub session: u64,
    pub device: u32,
    pub generation: u32,
    /// Pushed and not acknowledged yet.
    pub unacked: usize,
}

#[derive(Debug, Clone, Default)]
pub struct UserView {
    /// The account record (opaque to the store; `crate::inspect` shows a
    /// few of its fields), `None` if absent or deleted.
    pub account: Option<Vec<u8>>,
    pub account_version: u64,
    /// The ban record, if banned.
    pub ban: Option<Vec<u8>>,
    /// (device, lowest accepted generation) of the devices with one.
    pub generations: Vec<(u32, u32)>,
    pub sessions: Vec<SessionView>,
    /// The mailbox: the part only in memory (and the journal), the part in
    /// the engine.
    pub cached: MailboxSize,
    pub engine: MailboxSize,
    pub last_seen_ms: Option<u64>,
}

#[derive(Debug, Clone, Default)]
pub struct Deleted {
    /// The account record as it was.
    pub account: Option<Vec<u8>>,
    pub items: u64,
    pub devices: Vec<u32>,
    pub kicked: u32,
}

/// Where a message is.
#[derive(Debug, Clone, Default)]
pub struct TraceView {
    /// Where the home found the message's dedupe entry: `memory` (its
    /// window of recent appends), `engine` (its index, which outlives the
    /// item), or `None`: not stored here within the window, or long gone.
    pub found_in: Option<&'static str>,
    pub seq: u64,
    pub server_ts_ms: u64,
    /// Its journal record is synced (it was acknowledged `Accepted`).
    pub durable: bool,
    /// `cache` (memory and journal), `engine`, or `gone` (delivered and
    /// acknowledged, or expired, or deleted with its account).
    pub place: &'static str,
    /// The journal segment of its append, while in the cache.
    pub segment: Option<u64>,
    /// Being written to the engine right now.
    pub writing_back: bool,
    /// The sessions it was pushed to and that have not acknowledged it.
    pub pushed_to: Vec<SessionView>,
    /// Acknowledged; its delivered receipt is on its way to the sender's
    /// home, and it is deleted once that is stored.
    pub awaiting_receipt: bool,
}
