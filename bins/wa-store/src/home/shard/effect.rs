//! What the shard's operations decide should happen outside it, and the one
//! place that does it.
//!
//! The state machine never writes to a link: each operation appends its
//! effects to the shard's buffer, in the order it decided them, and the
//! dispatcher (`home::cell::dispatch`, after each operation and each
//! settle) carries them out in that order. A new kind of output is a new
//! variant here, not a send inside the logic.

use std::time::Instant;

use common::link::{Push, link_down};
use common::proto::Envelope;

use super::LinkTx;

/// One thing to do outside the shard.
pub(in crate::home) enum Effect {
    /// A control frame for a link: an answer, a kick, presence, typing.
    Send {
        link: LinkTx,
        frame: link_down::Kind,
    },
    /// An item for a session. Already counted against the link's push
    /// budget (`LinkTx::pushed`) when the shard decided it, so that the
    /// shard's next look at the budget sees it.
    Push {
        link: LinkTx,
        session: u64,
        seq: u64,
        envelope: Envelope,
    },
}

impl Effect {
    /// Carries the effect out. Never waits: a link whose queue is full is
    /// cut (see `LinkTx::send`).
    pub(in crate::home) fn dispatch(self) {
        match self {
            Effect::Send { link, frame } => link.send(frame),
            Effect::Push {
                link,
                session,
                seq,
                envelope,
            } => link.send(link_down::Kind::Push(Push {
                session,
                seq,
                envelope: Some(envelope),
            })),
        }
    }
}

/// The time an operation happens at, read by the dispatcher: the monotonic
/// clock (cache ages, the dedupe window, expiry of cached items) and the
/// wall clock (server timestamps, last seen).
#[derive(Debug, Clone, Copy)]
pub(in crate::home) struct Now {
    pub(in crate::home) at: Instant,
    pub(in crate::home) unix_ms: u64,
}

impl Now {
    pub(in crate::home) fn read() -> Now {
        Now {
            at: Instant::now(),
            unix_ms: common::fsutil::now_ms(),
        }
    }
}
