//! A client's push endpoint (`SetPushEndpoint`): checked here, kept at the
//! user's home (`SetPush` on the session's own link), answered when the home
//! says it is durable (`PushSet`, as [`Event::PushSet`](crate::hub::Event)).

use bytes::Bytes;
use common::link::{PushEndpoint, SetPush, link_up};
use common::proto::{
    Code, PushEndpointSet, PushProvider, SetPushEndpoint, ids, push_endpoint_problem, server_frame,
};

use super::{Close, Session, Step};
use crate::outbound::Class;

impl Session {
    pub(super) fn handle_set_push(&mut self, p: SetPushEndpoint) -> Step {
        if !ids::valid_message_id(&p.id) {
            return self.refuse(Code::BadId, p.id, "SetPushEndpoint.id must be 16 bytes", 0);
        }
        let clear = p.provider == PushProvider::Unspecified as i32;
        if !clear
            && let Some(problem) = push_endpoint_problem(p.provider, &p.token, &p.p256dh, &p.auth)
        {
            return self.refuse(Code::BadPushEndpoint, p.id, problem, 0);
        }
        let endpoint = (!clear).then(|| PushEndpoint {
            device: self.device,
            generation: self.generation,
            provider: p.provider,
            token: p.token,
            alert: p.alert,
            p256dh: p.p256dh,
            auth: p.auth,
        });
        let (_, epoch) = self.ctx.router.route(&self.user);
        let sent = self.home.send(link_up::Kind::SetPush(SetPush {
            session: self.id,
            id: p.id.clone(),
            user: self.user.clone(),
            endpoint,
            device: self.device,
            epoch,
        }));
        if sent.is_err() {
            return self.refuse(
                Code::Unavailable,
                p.id,
                "the home of this user cannot be reached",
                common::proto::limits::RETRY_UNAVAILABLE_MS,
            );
        }
        Ok(())
    }

    /// The home's answer to a `SetPush` of this session.
    pub(super) fn push_set(&mut self, id: Bytes, code: u32) -> Step {
        match code {
            0 => self.push(
                server_frame::Kind::PushEndpointSet(PushEndpointSet { id }),
                Class::Control,
            ),
            c if c == Code::Revoked as u32 => Err(Close::Error(
                Code::Revoked,
                "this device's registration was revoked".into(),
            )),
            c => {
                // A home that does not serve the user (moved, or another
                // epoch) or failed: the client resends later.
                let code = match Code::from_u32(c) {
                    Some(Code::BadPushEndpoint) => Code::BadPushEndpoint,
                    Some(Code::Internal) => Code::Internal,
                    _ => Code::Unavailable,
                };
                self.refuse(
                    code,
                    id,
                    "the home did not keep the push endpoint",
                    common::proto::limits::RETRY_UNAVAILABLE_MS,
                )
            }
        }
    }
}
