//! How a session ends: the frame a closing session sends last, and the
//! reason given when something outside the session's task ends it.

use bytes::Bytes;
use common::proto::{Code, DecodeError, Error, Goodbye, ServerFrame, server_frame};
use common::wire::ReadError;

use super::{DRAINING, MOVED_RETRY_MS, UNAVAILABLE_RETRY_MS};
use crate::Ctx;
use crate::outbound::End;

/// How a session ends.
#[derive(Debug)]
pub(super) enum Close {
    /// Nothing more to say (the client left, or the connection broke).
    Quiet,
    /// A fatal `Error` frame.
    Error(Code, String),
    /// A `Goodbye` frame.
    Goodbye(Code, u64, String),
}

impl Close {
    /// The frame for a code that ends the session: `Goodbye` for the codes
    /// about the server (shutting down, overloaded, unavailable, internal), a
    /// fatal `Error` for the rest.
    pub(super) fn for_code(code: Code, retry_after_ms: u64, reason: &str) -> Close {
        match code {
            Code::ShuttingDown | Code::Overloaded | Code::Unavailable | Code::Internal => {
                Close::Goodbye(code, retry_after_ms, reason.into())
            }
            // (Link-only codes: the client reconnects and lands at the new home.)
            Code::WrongHome | Code::StaleEpoch => {
                Close::Goodbye(Code::Unavailable, MOVED_RETRY_MS, reason.into())
            }
            _ => Close::Error(code, reason.into()),
        }
    }

    pub(super) fn end(self) -> End {
        let frame = |k| Some(Box::new(ServerFrame { kind: Some(k) }));
        match self {
            Close::Quiet => End {
                frame: None,
                code: 0,
            },
            Close::Error(code, message) => End {
                frame: frame(server_frame::Kind::Error(Error {
                    code: code as u32,
                    message,
                    id: Bytes::new(),
                    fatal: true,
                    retry_after_ms: 0,
                })),
                code: code as u32,
            },
            Close::Goodbye(code, retry_after_ms, reason) => End {
                frame: frame(server_frame::Kind::Goodbye(Goodbye {
                    code: code as u32,
                    retry_after_ms,
                    reason,
                })),
                code: code as u32,
            },
        }
    }

    pub(super) fn code(&self) -> Option<Code> {
        match self {
            Close::Quiet => None,
            Close::Error(c, _) | Close::Goodbye(c, _, _) => Some(*c),
        }
    }
}

/// What a refused frame becomes.
pub(super) fn read_error(e: ReadError) -> Close {
    match e {
        ReadError::Decode(DecodeError::FrameTooLarge { len, max }) => Close::Error(
            Code::FrameTooLarge,
            format!("frame of {len} bytes exceeds max_frame {max}"),
        ),
        ReadError::Decode(e) => Close::Error(Code::BadFrame, e.to_string()),
        ReadError::Io(_) | ReadError::Truncated => Close::Quiet,
    }
}

/// How a session (or a login waiting for its attach) ends when something
/// outside its task killed it with `code`. A shutdown is said as at any
/// other point of a shutdown ([`shutting_down`]).
pub(super) fn killed(ctx: &Ctx, code: Code) -> Close {
    if code == Code::ShuttingDown && ctx.shutdown.is_cancelled() {
        return shutting_down(ctx);
    }
    Close::for_code(code, UNAVAILABLE_RETRY_MS, kill_reason(ctx, code))
}

/// How a session or a login ends when the edge shuts down: `Goodbye` with
/// a jittered retry, so that its clients do not all come back at once.
pub(super) fn shutting_down(ctx: &Ctx) -> Close {
    Close::Goodbye(
        Code::ShuttingDown,
        ctx.retry_after_ms(),
        "the server is shutting down".into(),
    )
}

/// Why a session ends when something outside its task kills it with `code`.
fn kill_reason(ctx: &Ctx, code: Code) -> &'static str {
    match code {
        Code::SlowConsumer => "the client does not read fast enough",
        Code::ShuttingDown if ctx.draining.load(std::sync::atomic::Ordering::Relaxed) => DRAINING,
        Code::Unavailable => "the link to a home was lost, or an operator closed the session",
        Code::WrongHome | Code::StaleEpoch => {
            ctx.router.reload_soon();
            "this user's home moved; reconnect"
        }
        Code::Revoked => "this device's registration was revoked",
        _ => "closed by the home",
    }
}
