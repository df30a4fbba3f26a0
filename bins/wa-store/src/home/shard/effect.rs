//! What the shard's operations decide should happen outside it, and the one
//! place that does it.
//!
//! The state machine never writes to a link: each operation appends its
//! effects to the shard's buffer, in the order it decided them, and the
//! dispatcher (`home::cell::dispatch`, after each operation and each
//! settle) carries them out in that order. A new kind of output is a new
//! variant here, not a send inside the logic.
//!
//! Carrying an effect out can end in two ways the shard must hear of at
//! once: the courier's bounded queue refusing a delivered receipt, and the
//! push queue still holding a push for a device the shard has just stopped
//! recording as owed one. The dispatcher then hands the shard
//! [`Op::ReceiptRefused`] (or [`Op::PushOwed`]) before anything else is
//! applied, so the outcome is decided as if the shard had looked itself.

use std::time::Instant;

use common::link::{Push, link_down};
use common::proto::Envelope;

use super::LinkTx;
use crate::courier::Outbox;
use crate::home::Op;

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
    /// A delivered receipt for the courier: append `envelope` at `to`'s
    /// home, made for `user`'s acknowledged items `seqs` (one receipt for
    /// all the messages of one sender, and group, in one `Ack`). The shard
    /// has already marked the items as waiting for their receipt
    /// (`User::acked`: never pushed again, deleted on `Op::ReceiptStored`);
    /// if the courier's queue refuses the receipt, the dispatcher applies
    /// `Op::ReceiptRefused` at once and the items are delivered again later.
    Receipt {
        to: String,
        envelope: Envelope,
        user: String,
        seqs: Vec<u64>,
    },
    /// A member's group read receipt, checked, for the courier to
    /// aggregate with others for `to` and append; the answer to (`link`,
    /// `req`) goes out once the aggregated item is stored. If the courier's
    /// queue is full (or there is none), the dispatcher appends it alone
    /// (`Op::Append`), as it would have been without aggregation.
    Gather {
        link: LinkTx,
        req: u64,
        to: String,
        envelope: Envelope,
    },
    /// An item landed for `user` while `device`, which has a push endpoint,
    /// has no live session: the push queue wakes it (coalesced, paced).
    Wake { user: String, device: u32 },
    /// `device` connected, was revoked or cleared its endpoint: whatever
    /// waits to wake it is dropped.
    Unwake { user: String, device: u32 },
    /// The home no longer records `device` as owed a push (its push was
    /// sent or given up): if the queue holds one for it after all (decided
    /// meanwhile), the dispatcher has the shard record it again
    /// (`Op::PushOwed`), so that a failover does not lose it.
    Unowed { user: String, device: u32 },
}

impl Effect {
    /// Carries the effect out. Never waits: a link whose queue is full is
    /// cut (see `LinkTx::send`). Returns the operation the shard must apply
    /// next, before any other, if the effect could not be carried out and
    /// the shard has to know (or, for `Unowed`, a push still waits): a
    /// receipt `outbox` refused (full, or no
    /// outbox at all).
    pub(in crate::home) fn dispatch(
        self,
        outbox: Option<&Outbox>,
        pusher: Option<&crate::push::Pusher>,
    ) -> Option<Op> {
        match self {
            Effect::Wake { user, device } => {
                if let Some(p) = pusher {
                    p.decide(user, device);
                }
                None
            }
            Effect::Unwake { user, device } => {
                if let Some(p) = pusher {
                    p.cancel(user, device);
                }
                None
            }
            Effect::Unowed { user, device } => pusher
                .is_some_and(|p| p.waiting(&user, device))
                .then_some(Op::PushOwed {
                    user,
                    device,
                    owed: true,
                }),
            Effect::Send { link, frame } => {
                link.send(frame);
                None
            }
            Effect::Receipt {
                to,
                envelope,
                user,
                seqs,
            } => {
                if outbox.is_some_and(|o| o.send(to, envelope, &user, &seqs)) {
                    return None;
                }
                tracing::debug!(
                    items = seqs.len(),
                    "receipt queue full; the items are delivered again later"
                );
                Some(Op::ReceiptRefused { user, seqs })
            }
            Effect::Gather {
                link,
                req,
                to,
                envelope,
            } => match outbox {
                Some(o) => o.gather(link, req, to, envelope),
                None => Some(Op::Append {
                    link,
                    req,
                    to,
                    envelope,
                    sender_generation: None,
                }),
            },
            Effect::Push {
                link,
                session,
                seq,
                envelope,
            } => {
                link.send(link_down::Kind::Push(Push {
                    session,
                    seq,
                    envelope: Some(envelope),
                }));
                None
            }
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
