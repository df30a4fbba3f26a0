//! The driver's side of the server's frames: answers, deliveries
//! (deduplicated, turned into events), the session's end.

use super::*;

impl Driver {
    /// Handles one frame from the server; `Some` ends the session.
    pub(super) fn frame(
        &mut self,
        f: ServerFrame,
        resend_backoff: &mut Backoff,
    ) -> Option<Outcome> {
        use server_frame::Kind;
        match f.kind? {
            Kind::Accepted(a) => {
                resend_backoff.reset();
                match id16(&a.id).and_then(|id| self.remove(&id)) {
                    Some(p) => self.emit(Event::Accepted {
                        id: p.id,
                        server_ts_ms: a.server_ts_ms,
                        duplicate: a.duplicate,
                    }),
                    // A second answer to a resend that crossed the first.
                    None => {
                        tracing::debug!(id = %hex::encode(&a.id), "Accepted for nothing pending")
                    }
                }
            }
            Kind::GroupResult(r) => {
                resend_backoff.reset();
                match id16(&r.id).and_then(|id| self.remove(&id)) {
                    Some(p) => {
                        let info = r.info.unwrap_or_default();
                        let changed = self.receipts().membership(&info);
                        self.emit(Event::GroupResult {
                            id: p.id,
                            info,
                            duplicate: r.duplicate,
                        });
                        self.emit_states(changed);
                    }
                    None => {
                        tracing::debug!(id = %hex::encode(&r.id), "GroupResult for nothing pending")
                    }
                }
            }
            Kind::PushEndpointSet(a) => match id16(&a.id).and_then(|id| self.remove(&id)) {
                Some(p) => self.emit(Event::PushEndpointSet { id: p.id }),
                None => {
                    tracing::debug!(id = %hex::encode(&a.id), "PushEndpointSet for nothing pending")
                }
            },
            Kind::Deliver(d) => self.deliver(d),
            Kind::Error(e) => {
                let code = Code::from_u32(e.code);
                let retry_after = millis(e.retry_after_ms);
                let pending = id16(&e.id).filter(|id| self.order_of.contains_key(id));
                match (pending, code) {
                    (Some(id), code) if resend_later(code) => {
                        let order = self.order_of[&id];
                        self.pending
                            .get_mut(&order)
                            .expect("order_of and pending agree")
                            .held = true;
                        let now = Instant::now();
                        let until = *self.hold_until.get_or_insert_with(|| {
                            now + resend_backoff.next_delay(retry_after, &mut rand::rng())
                        });
                        self.emit(Event::Retrying {
                            id,
                            code: code.expect("resend_later needs a known code"),
                            message: e.message.clone(),
                            after: until.saturating_duration_since(now),
                        });
                    }
                    (Some(id), code) => {
                        self.remove(&id);
                        self.emit(Event::Rejected {
                            id,
                            code: code.unwrap_or(Code::Internal),
                            message: e.message.clone(),
                        });
                    }
                    // About a request already settled (a resend that crossed
                    // its first answer): nothing new to tell.
                    (None, _) if !e.id.is_empty() => {
                        tracing::debug!(id = %hex::encode(&e.id), ?code, "Error for nothing pending");
                    }
                    (None, code) if !e.fatal => self.emit(Event::Error {
                        code: code.unwrap_or(Code::Internal),
                        message: e.message.clone(),
                    }),
                    (None, _) => {}
                }
                if e.fatal {
                    return Some(ending(code, e.message, retry_after));
                }
            }
            Kind::Typing(t) => self.emit(Event::Typing {
                from: t.from,
                typing: t.typing,
            }),
            Kind::Presence(p) => self.emit(Event::Presence {
                user: p.user,
                online: p.online,
                last_seen_ms: p.last_seen_ms,
            }),
            Kind::Goodbye(g) => {
                return Some(ending(
                    Code::from_u32(g.code),
                    g.reason,
                    millis(g.retry_after_ms),
                ));
            }
            Kind::Pong(_) => {}
            Kind::Welcome(_) => tracing::debug!("ignoring a second Welcome"),
        }
        None
    }

    fn deliver(&mut self, d: Deliver) {
        let seq = d.seq;
        let Some(env) = d.envelope else {
            tracing::warn!(seq, "Deliver without an envelope; acknowledged and dropped");
            self.dup_acks.push(seq);
            return;
        };
        let Some(id) = id16(&env.id) else {
            tracing::warn!(seq, "Deliver with a malformed id; acknowledged and dropped");
            self.dup_acks.push(seq);
            return;
        };
        if !self.recent.insert((env.from.clone(), env.item_kind(), id)) {
            self.dup_acks.push(seq);
            return;
        }
        let event = match env.content {
            Some(envelope::Content::GroupEvent(event)) => Event::GroupEvent {
                seq,
                group: env.group,
                from: env.from,
                id,
                server_ts_ms: env.server_ts_ms,
                event,
            },
            Some(envelope::Content::Body(body)) if !env.group.is_empty() => {
                self.receipts()
                    .own_copy(&env.group, &env.from, id, env.group_version);
                Event::GroupMessage {
                    seq,
                    group: env.group,
                    from: env.from,
                    from_device: env.from_device,
                    id,
                    server_ts_ms: env.server_ts_ms,
                    body,
                }
            }
            Some(envelope::Content::Receipt(r)) => {
                let (event, changed) = self.receipts().received(seq, env.from, env.group, r);
                self.emit(event);
                self.emit_states(changed);
                return;
            }
            content => {
                let (body, media) = match content {
                    Some(envelope::Content::Body(b)) => (b, None),
                    Some(envelope::Content::Media(m)) => (Bytes::new(), Some(m)),
                    _ => (Bytes::new(), None),
                };
                Event::Message {
                    seq,
                    from: env.from,
                    from_device: env.from_device,
                    id,
                    server_ts_ms: env.server_ts_ms,
                    body,
                    media,
                }
            }
        };
        self.emit(event);
    }
}
