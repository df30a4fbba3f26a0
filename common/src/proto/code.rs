//! Error codes carried in `Error.code` and `Goodbye.code`, their meaning and
//! whether the connection survives them. The table in docs/PROTOCOL.md is
//! generated from the same facts; a test keeps them in step.

/// A protocol error code. The numbers are part of the protocol: never renumber.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Code {
    /// The bytes do not decode as a frame.
    BadFrame = 1,
    /// The length prefix exceeds `max_frame`.
    FrameTooLarge = 2,
    /// A frame other than `Hello` arrived before authentication.
    NotAuthenticated = 3,
    /// The token's expiry has passed.
    TokenExpired = 4,
    /// The token is malformed, its signature does not verify or its key is unknown.
    TokenInvalid = 5,
    /// A recipient or user id is not a valid user id.
    BadRecipient = 6,
    /// A message body exceeds `max_body`.
    BodyTooLarge = 7,
    /// A message id is not exactly 16 bytes, or an ack is malformed.
    BadId = 8,
    /// The recipient's home cannot be reached right now; retry later.
    Unavailable = 9,
    /// The client did not read its frames fast enough; reconnect.
    SlowConsumer = 10,
    /// No frame from the client within the idle timeout.
    IdleTimeout = 11,
    /// The server is shutting down; reconnect after `retry_after_ms`.
    ShuttingDown = 12,
    /// A frame that is valid but not allowed now (a second Hello, for example).
    ProtocolViolation = 13,
    /// Too many logins at once; reconnect after `retry_after_ms`.
    Overloaded = 14,
    /// The device's credentials were revoked (a newer device registered).
    Revoked = 15,
    /// The recipient's mailbox is full.
    MailboxFull = 16,
    /// The server failed internally; the request may be retried.
    Internal = 17,
    /// A `SendMedia.media` is missing or malformed.
    BadMedia = 18,
    /// Internal link only: this home does not serve the user's fragment (the
    /// map moved it, or it is still arriving). The edge reloads the cluster
    /// map and retries at the user's home; clients never see it.
    WrongHome = 19,
    /// Internal link only: the request carries another cluster map epoch
    /// than the home's. The edge reloads the map and retries; clients never
    /// see it.
    StaleEpoch = 20,
    /// The recipient's home is short of disk space and stores nothing new
    /// until it has room again; retry after `retry_after_ms`.
    StorageFull = 21,
    /// The group does not exist (or no longer does).
    NoSuchGroup = 22,
    /// The sender is not a member of the group (any more): refresh the
    /// group's membership (`GroupRequest{INFO}`) before sending again.
    NotAMember = 23,
    /// Only the group's admins may do that.
    NotAdmin = 24,
    /// The group would have more than its maximum of members.
    GroupFull = 25,
    /// Reserved: the user is in too many groups (not enforced yet).
    TooManyGroups = 26,
    /// A group request that makes no sense: an unknown op, a bad group or
    /// member id, a subject too long, too many members named, a member
    /// added twice or removed who is not there, the last admin leaving
    /// others without one.
    BadGroupRequest = 27,
    /// The group's fan-out queue is full (its home has as many of its
    /// messages still to copy to members as `[groups] queue`): resend later
    /// with the same id, after `retry_after_ms`.
    GroupBusy = 28,
    /// A `SetPushEndpoint` is malformed: unknown provider, empty or too long
    /// token, a UnifiedPush endpoint that is not an http(s) URL or keys of
    /// the wrong length.
    BadPushEndpoint = 30,
    /// An operator banned this account (`wactl user ban`): its sessions are
    /// closed and new ones refused until the ban is lifted.
    Banned = 34,
}

impl Code {
    pub const ALL: [Code; 30] = [
        Code::BadFrame,
        Code::FrameTooLarge,
        Code::NotAuthenticated,
        Code::TokenExpired,
        Code::TokenInvalid,
        Code::BadRecipient,
        Code::BodyTooLarge,
        Code::BadId,
        Code::Unavailable,
        Code::SlowConsumer,
        Code::IdleTimeout,
        Code::ShuttingDown,
        Code::ProtocolViolation,
        Code::Overloaded,
        Code::Revoked,
        Code::MailboxFull,
        Code::Internal,
        Code::BadMedia,
        Code::WrongHome,
        Code::StaleEpoch,
        Code::StorageFull,
        Code::NoSuchGroup,
        Code::NotAMember,
        Code::NotAdmin,
        Code::GroupFull,
        Code::TooManyGroups,
        Code::BadGroupRequest,
        Code::GroupBusy,
        Code::BadPushEndpoint,
        Code::Banned,
    ];

    pub fn from_u32(v: u32) -> Option<Code> {
        Code::ALL.into_iter().find(|c| *c as u32 == v)
    }

    /// The name used in docs and logs, upper snake case.
    pub fn name(self) -> &'static str {
        match self {
            Code::BadFrame => "BAD_FRAME",
            Code::FrameTooLarge => "FRAME_TOO_LARGE",
            Code::NotAuthenticated => "NOT_AUTHENTICATED",
            Code::TokenExpired => "TOKEN_EXPIRED",
            Code::TokenInvalid => "TOKEN_INVALID",
            Code::BadRecipient => "BAD_RECIPIENT",
            Code::BodyTooLarge => "BODY_TOO_LARGE",
            Code::BadId => "BAD_ID",
            Code::Unavailable => "UNAVAILABLE",
            Code::SlowConsumer => "SLOW_CONSUMER",
            Code::IdleTimeout => "IDLE_TIMEOUT",
            Code::ShuttingDown => "SHUTTING_DOWN",
            Code::ProtocolViolation => "PROTOCOL_VIOLATION",
            Code::Overloaded => "OVERLOADED",
            Code::Revoked => "REVOKED",
            Code::MailboxFull => "MAILBOX_FULL",
            Code::Internal => "INTERNAL",
            Code::BadMedia => "BAD_MEDIA",
            Code::WrongHome => "WRONG_HOME",
            Code::StaleEpoch => "STALE_EPOCH",
            Code::StorageFull => "STORAGE_FULL",
            Code::NoSuchGroup => "NO_SUCH_GROUP",
            Code::NotAMember => "NOT_A_MEMBER",
            Code::NotAdmin => "NOT_ADMIN",
            Code::GroupFull => "GROUP_FULL",
            Code::TooManyGroups => "TOO_MANY_GROUPS",
            Code::BadGroupRequest => "BAD_GROUP_REQUEST",
            Code::GroupBusy => "GROUP_BUSY",
            Code::BadPushEndpoint => "BAD_PUSH_ENDPOINT",
            Code::Banned => "BANNED",
        }
    }

    /// Whether the server closes the connection after sending this code.
    pub fn is_fatal(self) -> bool {
        !matches!(
            self,
            Code::BadRecipient
                | Code::BodyTooLarge
                | Code::BadId
                | Code::Unavailable
                | Code::MailboxFull
                | Code::Internal
                | Code::BadMedia
                | Code::WrongHome
                | Code::StaleEpoch
                | Code::StorageFull
                | Code::NoSuchGroup
                | Code::NotAMember
                | Code::NotAdmin
                | Code::GroupFull
                | Code::TooManyGroups
                | Code::BadGroupRequest
                | Code::GroupBusy
                | Code::BadPushEndpoint
        )
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name(), *self as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        // Dense from 1 up to 21; later ones were given out in ranges.
        let mut last = 0;
        for c in Code::ALL {
            assert!(c as u32 > last, "codes rise in ALL: {c}");
            last = c as u32;
            assert_eq!(Code::from_u32(c as u32), Some(c));
        }
        assert_eq!(Code::ALL[20] as u32, 21, "dense from 1 to 21");
        assert_eq!(Code::from_u32(0), None);
        assert_eq!(Code::from_u32(999), None);
    }

    #[test]
    fn protocol_doc_lists_every_code_with_its_outcome() {
        let doc = include_str!("../../../docs/PROTOCOL.md");
        for c in Code::ALL {
            let outcome = if c.is_fatal() { "closed" } else { "kept" };
            let row = format!("| {} | `{}` | {} |", c as u32, c.name(), outcome);
            assert!(
                doc.contains(&row),
                "docs/PROTOCOL.md lacks the row starting {row:?}"
            );
        }
    }
}
