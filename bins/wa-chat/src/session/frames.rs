//! What each client frame does once the session is open: sends, read
//! receipts, acks, pings, typing and presence subscriptions.

use bytes::Bytes;
use common::link::{LinkAck, TypingUp, Watch, link_up};
use common::proto::limits::{MAX_BATCH, MAX_BODY};
use common::proto::{
    Code, Envelope, MarkRead, Pong, Receipt, ReceiptKind, Send, client_frame, envelope, ids,
    server_frame,
};
use tokio::time::Instant;

use super::close::Close;
use super::{Session, Step};
use crate::outbound::Class;

impl Session {
    pub(super) fn handle_frame(&mut self, k: client_frame::Kind) -> Step {
        match k {
            client_frame::Kind::Hello(_) => Err(Close::Error(
                Code::ProtocolViolation,
                "Hello on an authenticated session".into(),
            )),
            client_frame::Kind::Send(s) => {
                self.ctx.metrics.messages_in.inc();
                self.handle_send(s)
            }
            client_frame::Kind::MarkRead(m) => self.handle_mark_read(m),
            client_frame::Kind::Ack(a) => self.handle_ack(a.seqs),
            client_frame::Kind::Ping(p) => self.push(
                server_frame::Kind::Pong(Pong { nonce: p.nonce }),
                Class::Control,
            ),
            client_frame::Kind::Typing(t) => {
                if !ids::valid_user_id(&t.to) {
                    return self.refuse(
                        Code::BadRecipient,
                        Bytes::new(),
                        "Typing.to is not a valid user id",
                        0,
                    );
                }
                if let Some(c) = self.ctx.router.home(&t.to).current() {
                    let _ = c.send(link_up::Kind::Typing(TypingUp {
                        from: self.user.clone(),
                        to: t.to,
                        typing: t.typing,
                    }));
                }
                Ok(())
            }
            client_frame::Kind::WatchPresence(w) => {
                if !ids::valid_user_id(&w.user) {
                    return self.refuse(
                        Code::BadRecipient,
                        Bytes::new(),
                        "WatchPresence.user is not a valid user id",
                        0,
                    );
                }
                if let Some(c) = self.ctx.router.home(&w.user).current() {
                    let _ = c.send(link_up::Kind::Watch(Watch {
                        session: self.id,
                        target: w.user.clone(),
                        watch: w.watch,
                        watcher: self.user.clone(),
                    }));
                }
                if w.watch {
                    self.watching.insert(w.user);
                } else {
                    self.watching.remove(&w.user);
                }
                Ok(())
            }
            client_frame::Kind::Goodbye(_) => Err(Close::Quiet),
            client_frame::Kind::SendMedia(m) => {
                self.ctx.metrics.messages_in.inc();
                self.handle_send_media(m)
            }
            client_frame::Kind::SetPushEndpoint(p) => self.handle_set_push(p),
            client_frame::Kind::GroupRequest(r) => self.handle_group_request(r),
            client_frame::Kind::SendGroup(m) => {
                self.ctx.metrics.messages_in.inc();
                self.handle_send_group(m)
            }
        }
    }

    /// A message carrying a media reference (docs/MEDIA.md): checked, then
    /// stored and delivered exactly like a `Send` body.
    fn handle_send_media(&mut self, m: common::proto::SendMedia) -> Step {
        use prost::Message as _;
        if !ids::valid_message_id(&m.id) {
            return self.refuse(Code::BadId, m.id, "SendMedia.id must be 16 bytes", 0);
        }
        if !ids::valid_user_id(&m.to) {
            return self.refuse(
                Code::BadRecipient,
                m.id,
                "SendMedia.to is not a valid user id",
                0,
            );
        }
        let Some(media) = m.media else {
            return self.refuse(Code::BadMedia, m.id, "SendMedia.media is missing", 0);
        };
        if let Some(problem) = media.problem() {
            return self.refuse(Code::BadMedia, m.id, problem, 0);
        }
        if media.encoded_len() > MAX_BODY {
            return self.refuse(
                Code::BodyTooLarge,
                m.id,
                format!(
                    "media of {} bytes exceeds max_body {MAX_BODY}",
                    media.encoded_len()
                ),
                0,
            );
        }
        let envelope = self.envelope(m.id.clone(), envelope::Content::Media(media));
        self.client_append(&m.to, envelope, m.id)
    }

    fn handle_send(&mut self, s: Send) -> Step {
        if !ids::valid_message_id(&s.id) {
            return self.refuse(Code::BadId, s.id, "Send.id must be 16 bytes", 0);
        }
        if !ids::valid_user_id(&s.to) {
            return self.refuse(
                Code::BadRecipient,
                s.id,
                "Send.to is not a valid user id",
                0,
            );
        }
        if s.body.len() > MAX_BODY {
            return self.refuse(
                Code::BodyTooLarge,
                s.id,
                format!("body of {} bytes exceeds max_body {MAX_BODY}", s.body.len()),
                0,
            );
        }
        let envelope = self.envelope(s.id.clone(), envelope::Content::Body(s.body));
        self.client_append(&s.to, envelope, s.id)
    }

    /// A group request goes to the group's home, which decides it
    /// (`common::group`); the edge checks only its shape. A create goes to
    /// the home of the id the group will have.
    fn handle_group_request(&mut self, mut r: common::proto::GroupRequest) -> Step {
        use common::group::{Change, group_id};
        if !ids::valid_message_id(&r.id) {
            return self.refuse(Code::BadId, r.id, "GroupRequest.id must be 16 bytes", 0);
        }
        if r.op() == common::proto::GroupOp::Create {
            r.group = group_id(&self.user, &r.id);
        }
        if let Err((code, why)) = Change::of(&r) {
            return self.refuse(code, r.id, why, 0);
        }
        let id = r.id.clone();
        let up = self.group_up(r.group.clone(), Some(r), None);
        self.client_group(up, id)
    }

    fn handle_send_group(&mut self, m: common::proto::SendGroup) -> Step {
        if !ids::valid_message_id(&m.id) {
            return self.refuse(Code::BadId, m.id, "SendGroup.id must be 16 bytes", 0);
        }
        if !common::group::valid_group_id(&m.group) {
            return self.refuse(
                Code::BadGroupRequest,
                m.id,
                "SendGroup.group is not a group id",
                0,
            );
        }
        if m.body.len() > MAX_BODY {
            return self.refuse(
                Code::BodyTooLarge,
                m.id,
                format!("body of {} bytes exceeds max_body {MAX_BODY}", m.body.len()),
                0,
            );
        }
        let id = m.id.clone();
        let up = self.group_up(m.group.clone(), None, Some(m));
        self.client_group(up, id)
    }

    fn group_up(
        &self,
        group: String,
        request: Option<common::proto::GroupRequest>,
        send: Option<common::proto::SendGroup>,
    ) -> common::link::GroupUp {
        common::link::GroupUp {
            req: 0,
            group,
            epoch: 0,
            from: self.user.clone(),
            from_device: self.device,
            request,
            send,
        }
    }

    fn handle_mark_read(&mut self, m: MarkRead) -> Step {
        if !ids::valid_message_id(&m.id) {
            return self.refuse(Code::BadId, m.id, "MarkRead.id must be 16 bytes", 0);
        }
        if !ids::valid_user_id(&m.to) {
            return self.refuse(
                Code::BadRecipient,
                m.id,
                "MarkRead.to is not a valid user id",
                0,
            );
        }
        if m.ids.is_empty() || m.ids.len() > MAX_BATCH {
            return self.refuse(
                Code::BadId,
                m.id,
                format!("MarkRead needs 1 to {MAX_BATCH} ids"),
                0,
            );
        }
        if !m.ids.iter().all(|i| ids::valid_message_id(i)) {
            return self.refuse(
                Code::BadId,
                m.id,
                "every MarkRead.ids entry must be 16 bytes",
                0,
            );
        }
        if !m.group.is_empty() && !common::group::valid_group_id(&m.group) {
            return self.refuse(
                Code::BadRecipient,
                m.id,
                "MarkRead.group is not a valid group id",
                0,
            );
        }
        let receipt = Receipt {
            kind: ReceiptKind::Read as i32,
            ids: m.ids,
            members: Vec::new(),
        };
        let mut envelope = self.envelope(m.id.clone(), envelope::Content::Receipt(receipt));
        // (The sender's home aggregates group read receipts by it.)
        envelope.group = m.group;
        self.client_append(&m.to, envelope, m.id)
    }

    fn envelope(&self, id: Bytes, content: envelope::Content) -> Envelope {
        Envelope {
            from: self.user.clone(),
            from_device: self.device,
            id,
            server_ts_ms: 0,
            content: Some(content),
            ..Default::default()
        }
    }

    /// The home checks the seqs against what it pushed this session, frees
    /// their window slots, and deletes each item once its delivered receipt
    /// is durable at the sender's home (it makes the receipt).
    fn handle_ack(&mut self, seqs: Vec<u64>) -> Step {
        if seqs.len() > MAX_BATCH {
            return self.refuse(
                Code::BadId,
                Bytes::new(),
                format!("an Ack holds at most {MAX_BATCH} seqs"),
                0,
            );
        }
        self.link_ack(seqs);
        Ok(())
    }

    /// When a client whose push window is full (it has every item the home
    /// may push unacknowledged) becomes a slow consumer: a client that
    /// reads (or only pings) but never acknowledges would otherwise hold
    /// its window, and the home's memory for it, forever.
    pub(super) fn window_stuck(&self) -> Option<Instant> {
        self.window_full_since
            .map(|t| t + self.ctx.limits.slow_consumer_after)
    }

    pub(super) fn link_ack(&mut self, seqs: Vec<u64>) {
        for s in &seqs {
            self.unacked.remove(s);
        }
        if self.unacked.len() < common::link::PUSH_WINDOW {
            self.window_full_since = None;
        }
        if seqs.is_empty() {
            return;
        }
        let _ = self.home.send(link_up::Kind::Ack(LinkAck {
            session: self.id,
            user: self.user.clone(),
            seqs,
        }));
    }
}
