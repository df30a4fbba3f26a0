//! A session's client requests on their way to a home (`Send`,
//! `SendMedia`, `MarkRead` as appends; `GroupRequest` and `SendGroup` as
//! `Group` requests to the group's home): in flight, refused for the wrong
//! home or epoch and sent again at the home the map now names, in order,
//! or failed back to the client.

use std::time::Duration;

use bytes::Bytes;
use common::link::{GroupDown, GroupUp};
use common::proto::{Accepted, Code, Envelope, GroupResult, server_frame};
use tokio::time::Instant;

use super::close::Close;
use super::{Session, Step, UNAVAILABLE_RETRY_MS};
use crate::outbound::Class;

/// A request a home refused for the wrong home or epoch is sent again after
/// this (the map is read again meanwhile)...
const REROUTE_PAUSE: Duration = Duration::from_millis(100);
/// ...until this long after the first refusal; then the client gets
/// `UNAVAILABLE` and resends later.
const REROUTE_LIMIT: Duration = Duration::from_secs(10);

/// A client `Send`, `SendMedia` or `MarkRead` in flight (answered with
/// `Accepted` or `Error`), kept so that it can be sent again at another home.
pub(super) struct Pending {
    /// The recipient, or the group for a group request.
    pub(super) to: String,
    pub(super) envelope: Envelope,
    /// A group request or group message (then `envelope` is unused).
    pub(super) group: Option<GroupUp>,
    pub(super) id: Bytes,
    /// When the client's request arrived (for the Accepted latency).
    pub(super) since: Instant,
    /// Its bytes, counted in the edge's request budget while it waits.
    pub(super) _held: crate::budget::Held,
}

impl Session {
    /// Appends `p.envelope` at the home of `p.to` under a new tag; gives
    /// `p` back if its home cannot be reached now.
    #[allow(clippy::result_large_err)] // (moved back and forth, never boxed)
    pub(super) fn append(&mut self, p: Pending) -> Result<(), Pending> {
        let (link, epoch) = self.ctx.router.route(&p.to);
        let Some(conn) = link.current() else {
            return Err(p);
        };
        let tag = self.next_tag;
        self.next_tag += 1;
        if let Some(up) = &p.group {
            let up = GroupUp {
                epoch,
                ..up.clone()
            };
            if conn.group(up, &self.handle, tag).is_err() {
                return Err(p);
            }
            self.requests.insert(tag, p);
            return Ok(());
        }
        if conn
            .append(
                &p.to,
                p.envelope.clone(),
                epoch,
                self.generation,
                &self.handle,
                tag,
            )
            .is_err()
        {
            return Err(p);
        }
        self.requests.insert(tag, p);
        Ok(())
    }

    /// A home refused `p` for the wrong home or epoch: the map is read again
    /// and `p` goes again shortly, in order with the others refused.
    pub(super) fn refused_elsewhere(&mut self, p: Pending) {
        self.ctx.router.reload_soon();
        let now = Instant::now();
        let first = self.reroute.map_or(now, |r| r.0);
        self.reroute = Some((first, now + REROUTE_PAUSE));
        self.rerouting.push_back(p);
    }

    /// Sends the refused appends again, in order, at their homes as the map
    /// now says; past [`REROUTE_LIMIT`] they fail instead.
    pub(super) fn reroute_now(&mut self) -> Step {
        let Some((first, _)) = self.reroute.take() else {
            return Ok(());
        };
        self.ctx.router.reload_soon();
        let give_up = first.elapsed() > REROUTE_LIMIT;
        while let Some(p) = self.rerouting.pop_front() {
            let p = if give_up {
                p
            } else {
                match self.append(p) {
                    Ok(()) => continue,
                    Err(p) => p,
                }
            };
            self.failed(p, Code::Unavailable, 0)?;
        }
        Ok(())
    }

    /// `p` will not be stored now: tell the client, which resends it later
    /// with the same id (after `retry_after_ms`, the home's delay, or the
    /// edge's for the code when the home gave none).
    pub(super) fn failed(&mut self, p: Pending, code: Code, retry_after_ms: u64) -> Step {
        self.client_requests -= 1;
        let retry = match (retry_after_ms, code) {
            (0, Code::Unavailable | Code::Internal) => UNAVAILABLE_RETRY_MS,
            (0, Code::StorageFull) => common::proto::limits::RETRY_STORAGE_FULL_MS,
            (0, Code::MailboxFull) => common::proto::limits::RETRY_MAILBOX_FULL_MS,
            (ms, _) => ms,
        };
        let message = match code {
            Code::StorageFull => "the recipient's home is out of disk space; resend later",
            Code::MailboxFull => "the recipient's mailbox is full; resend later",
            Code::Unavailable => "the recipient's home cannot be reached now; resend later",
            Code::Internal => "the recipient's home failed to store it; resend later",
            _ => "the home refused the item",
        };
        self.refuse(code, p.id, message, retry)
    }

    /// A client request: answered `UNAVAILABLE` (not fatal) if the home is
    /// down. After such an answer, every later request of this session to the
    /// same home is refused too until the client may resend (its
    /// `retry_after_ms`): requests it pipelined behind the refused one must not
    /// overtake it if the link comes back meanwhile, or the sender's order
    /// would break.
    pub(super) fn client_append(&mut self, to: &str, envelope: Envelope, id: Bytes) -> Step {
        self.client_request(to, envelope, None, id)
    }

    /// A client's group request or group message, to the group's home,
    /// answered and rerouted like an append.
    pub(super) fn client_group(&mut self, up: GroupUp, id: Bytes) -> Step {
        let group = up.group.clone();
        self.client_request(&group, Envelope::default(), Some(up), id)
    }

    fn client_request(
        &mut self,
        to: &str,
        envelope: Envelope,
        group: Option<GroupUp>,
        id: Bytes,
    ) -> Step {
        use prost::Message as _;
        let bytes =
            envelope.encoded_len() as u64 + group.as_ref().map_or(0, |g| g.encoded_len() as u64);
        let p = Pending {
            to: to.to_owned(),
            envelope,
            group,
            id: id.clone(),
            since: Instant::now(),
            _held: self.ctx.requests_budget.take(bytes),
        };
        if !self.rerouting.is_empty() {
            // Behind the refused ones, so as not to overtake them.
            self.client_requests += 1;
            self.rerouting.push_back(p);
            return Ok(());
        }
        let addr = self.ctx.router.home(to).addr;
        let now = Instant::now();
        let held = self.refused.get(&addr).is_some_and(|until| now < *until);
        if !held {
            self.refused.remove(&addr);
            if self.append(p).is_ok() {
                self.client_requests += 1;
                return Ok(());
            }
            self.refused
                .insert(addr, now + Duration::from_millis(UNAVAILABLE_RETRY_MS));
        }
        self.refuse(
            Code::Unavailable,
            id,
            "the recipient's home cannot be reached now",
            UNAVAILABLE_RETRY_MS,
        )
    }
}

impl Session {
    /// The home's answer to a group request or group message.
    pub(super) fn grouped(&mut self, tag: u64, a: GroupDown) -> Step {
        let result = a.info.map(|info| GroupResult {
            id: Bytes::new(),
            info: Some(info),
            duplicate: a.duplicate,
        });
        if let Some(code) = Code::from_u32(a.code).filter(|c| group_refusal(*c)) {
            let Some(p) = self.requests.remove(&tag) else {
                return Ok(());
            };
            self.client_requests -= 1;
            return self.refuse(code, p.id, a.message, 0);
        }
        if a.code == Code::GroupBusy as u32 {
            let Some(p) = self.requests.remove(&tag) else {
                return Ok(());
            };
            self.client_requests -= 1;
            let retry = match a.retry_after_ms {
                0 => common::proto::limits::RETRY_GROUP_BUSY_MS,
                ms => ms,
            };
            return self.refuse(Code::GroupBusy, p.id, a.message, retry);
        }
        self.answered(
            tag,
            a.code,
            a.server_ts_ms,
            a.duplicate,
            a.retry_after_ms,
            result,
        )
    }

    /// The home's answer to request `tag`: `Accepted` (or, for a group
    /// request, `GroupResult`), a reroute, or a refusal.
    pub(super) fn answered(
        &mut self,
        tag: u64,
        code: u32,
        server_ts_ms: u64,
        duplicate: bool,
        retry_after_ms: u64,
        result: Option<GroupResult>,
    ) -> Step {
        let Some(p) = self.requests.remove(&tag) else {
            return Ok(());
        };
        let code = match code {
            0 => None,
            c => Some(Code::from_u32(c).unwrap_or(Code::Internal)),
        };
        match code {
            Some(Code::WrongHome | Code::StaleEpoch) => {
                self.refused_elsewhere(p);
                Ok(())
            }
            // The sender's home found this device revoked: the
            // session ends, as the home's kick would end it.
            Some(Code::Revoked) => Err(Close::Error(
                Code::Revoked,
                "this device's registration was revoked".into(),
            )),
            None => {
                self.client_requests -= 1;
                self.ctx
                    .metrics
                    .accepted_latency
                    .observe(p.since.elapsed().as_secs_f64());
                let answer = match result {
                    Some(r) => server_frame::Kind::GroupResult(GroupResult { id: p.id, ..r }),
                    None => server_frame::Kind::Accepted(Accepted {
                        id: p.id,
                        server_ts_ms,
                        duplicate,
                    }),
                };
                self.push(answer, Class::Control)
            }
            // Whatever else the home refused, the session goes on:
            // the code is about this request.
            Some(code) => {
                let code = if code.is_fatal() {
                    Code::Internal
                } else {
                    code
                };
                self.failed(p, code, retry_after_ms)
            }
        }
    }
}

/// The refusals only a group's home makes, passed on with its message.
fn group_refusal(code: Code) -> bool {
    matches!(
        code,
        Code::NoSuchGroup
            | Code::NotAMember
            | Code::NotAdmin
            | Code::GroupFull
            | Code::TooManyGroups
            | Code::BadGroupRequest
    )
}
