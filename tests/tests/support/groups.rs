//! Group members for black-box tests: a connected client that records
//! everything it receives (acknowledging every item, as an app would) and
//! the answers to its requests, so that a test can wait for one thing
//! while others keep arriving.

use std::collections::HashMap;

use bytes::Bytes;
use common::client::{Client, ClientConfig, Event, Events, GroupReceiptState, MessageId};
use common::proto::{Code, GroupEvent, GroupInfo, ReceiptKind};

use super::PATIENCE;

/// The answer to a request.
#[derive(Debug, Clone)]
pub enum Answer {
    Accepted,
    Group(GroupInfo),
    Rejected(Code),
}

/// What a member received so far, in order.
#[derive(Debug, Default)]
pub struct Seen {
    /// Group messages: (group, from, id, body).
    pub messages: Vec<(String, String, MessageId, Bytes)>,
    /// Group events: (group, from, event).
    pub events: Vec<(String, String, GroupEvent)>,
    /// Receipts: (from, kind, ids).
    pub receipts: Vec<(String, ReceiptKind, Vec<MessageId>)>,
    /// Receipt items received, in order: (kind, members it speaks for;
    /// more than one only if aggregated, `Receipt.members`).
    pub receipt_items: Vec<(ReceiptKind, usize)>,
    /// The client library's latest state of each group message sent.
    pub states: HashMap<MessageId, GroupReceiptState>,
    /// One-to-one messages: (from, body).
    pub direct: Vec<(String, Bytes)>,
    pub answers: HashMap<MessageId, Answer>,
    /// The message of each refusal, by request.
    pub refusals: HashMap<MessageId, String>,
    /// Requests the client is to resend, with the code that refused them.
    pub retrying: Vec<(MessageId, Code)>,
}

impl Seen {
    /// The bodies of the group messages received, in order.
    pub fn bodies(&self) -> Vec<String> {
        self.messages
            .iter()
            .map(|m| String::from_utf8_lossy(&m.3).into_owned())
            .collect()
    }

    /// The ids `from` has a receipt of `kind` for.
    pub fn receipted(&self, from: &str, kind: ReceiptKind) -> Vec<MessageId> {
        self.receipts
            .iter()
            .filter(|r| r.0 == from && r.1 == kind)
            .flat_map(|r| r.2.iter().copied())
            .collect()
    }
}

pub struct Member {
    pub name: String,
    pub client: Client,
    events: Events,
    pub seen: Seen,
}

impl Member {
    pub async fn connect(name: &str, cfg: ClientConfig) -> Member {
        let (client, events) = Client::connect(cfg).await.expect("client connects");
        Member {
            name: name.to_owned(),
            client,
            events,
            seen: Seen::default(),
        }
    }

    /// Reads events, recording them, until `done` says so (bounded).
    pub async fn until(&mut self, what: &str, done: impl Fn(&Seen) -> bool) {
        let name = self.name.clone();
        let r = tokio::time::timeout(PATIENCE, async {
            while !done(&self.seen) {
                let e = self
                    .events
                    .next()
                    .await
                    .unwrap_or_else(|| panic!("{name}: events ended while waiting for {what}"));
                self.record(e).await;
            }
        })
        .await;
        if r.is_err() {
            panic!("{name}: timed out waiting for {what}; seen {:?}", self.seen);
        }
    }

    async fn record(&mut self, e: Event) {
        let s = &mut self.seen;
        let ack = match e {
            Event::GroupMessage {
                seq,
                group,
                from,
                id,
                body,
                ..
            } => {
                s.messages.push((group, from, id, body));
                Some(seq)
            }
            Event::GroupEvent {
                seq,
                group,
                from,
                event,
                ..
            } => {
                s.events.push((group, from, event));
                Some(seq)
            }
            Event::Receipt {
                seq,
                from,
                kind,
                ids,
            } => {
                s.receipt_items.push((kind, 1));
                s.receipts.push((from, kind, ids));
                Some(seq)
            }
            Event::GroupReceipts {
                seq, kind, members, ..
            } => {
                // One item, many members' receipts.
                s.receipt_items.push((kind, members.len()));
                for (from, ids) in members {
                    s.receipts.push((from, kind, ids));
                }
                Some(seq)
            }
            Event::GroupReceiptState(st) => {
                s.states.insert(st.id, st);
                None
            }
            Event::Message {
                seq, from, body, ..
            } => {
                s.direct.push((from, body));
                Some(seq)
            }
            Event::Accepted { id, .. } => {
                s.answers.insert(id, Answer::Accepted);
                None
            }
            Event::GroupResult { id, info, .. } => {
                s.answers.insert(id, Answer::Group(info));
                None
            }
            Event::Rejected { id, code, message } => {
                s.answers.insert(id, Answer::Rejected(code));
                s.refusals.insert(id, message);
                None
            }
            Event::Retrying {
                id, code, message, ..
            } => {
                s.retrying.push((id, code));
                s.refusals.insert(id, message);
                None
            }
            Event::Error { .. } | Event::Fatal { .. } => panic!("{}: {e:?}", self.name),
            _ => None,
        };
        if let Some(seq) = ack {
            self.client.ack(&[seq]).await.unwrap();
        }
    }

    pub async fn answer(&mut self, id: MessageId) -> Answer {
        self.until("an answer", |s| s.answers.contains_key(&id))
            .await;
        self.seen.answers[&id].clone()
    }

    /// The group info a request was answered with.
    pub async fn info(&mut self, id: MessageId) -> GroupInfo {
        match self.answer(id).await {
            Answer::Group(i) => i,
            other => panic!("{}: expected a GroupResult, got {other:?}", self.name),
        }
    }

    pub async fn accepted(&mut self, id: MessageId) {
        match self.answer(id).await {
            Answer::Accepted => {}
            other => panic!("{}: expected Accepted, got {other:?}", self.name),
        }
    }

    /// The code a request was refused with.
    pub async fn refused(&mut self, id: MessageId) -> Code {
        match self.answer(id).await {
            Answer::Rejected(c) => c,
            other => panic!("{}: expected a refusal, got {other:?}", self.name),
        }
    }

    /// Waits until `n` group messages have arrived.
    pub async fn messages(&mut self, n: usize) {
        self.until(&format!("{n} group messages"), |s| s.messages.len() >= n)
            .await;
    }

    pub async fn close(self) {
        self.client.close().await;
    }
}

/// The 5-member scenario (`names[0]` creates the group, `names[4]` is
/// offline until the end): every member gets every message once, in order,
/// the offline one too; the sender gets every member's delivered and read
/// receipts, those made while it was offline too. `cfg` is each user's
/// client config.
pub async fn five_members(names: [&str; 5], cfg: impl Fn(&str) -> ClientConfig) {
    use common::proto::{GroupOp, GroupRole};
    let [a, b, c, dd, e] = names;
    let mut alice = Member::connect(a, cfg(a)).await;
    let mut online = vec![
        Member::connect(b, cfg(b)).await,
        Member::connect(c, cfg(c)).await,
        Member::connect(dd, cfg(dd)).await,
    ];
    let (req, group) = alice.client.create_group(a, "five", &[b, c]).await.unwrap();
    let info = alice.info(req).await;
    assert_eq!((info.group.as_str(), info.version), (group.as_str(), 1));
    let add = alice.client.add_members(&group, &[dd, e]).await.unwrap();
    let info = alice.info(add).await;
    assert_eq!(info.version, 2);
    let mut got: Vec<_> = info.members.iter().map(|m| m.user.as_str()).collect();
    got.sort_unstable();
    let mut want = names.to_vec();
    want.sort_unstable();
    assert_eq!(got, want);
    assert_eq!(
        info.members.iter().find(|m| m.user == a).unwrap().role,
        GroupRole::Admin as i32
    );

    let texts = ["one", "two", "three"];
    let mut ids: Vec<MessageId> = Vec::new();
    for t in texts {
        ids.push(
            alice
                .client
                .send_group(&group, Bytes::from(t))
                .await
                .unwrap(),
        );
    }
    for id in &ids {
        alice.accepted(*id).await;
    }
    for m in &mut online {
        m.messages(3).await;
        assert_eq!(m.seen.bodies(), texts, "{}", m.name);
        assert!(m.seen.messages.iter().all(|x| x.0 == group && x.1 == a));
        let read = m.client.mark_read_in_group(&group, a, &ids).await.unwrap();
        m.accepted(read).await;
    }
    // The events of the group so far: created (b, c), added (dd).
    let ops: Vec<_> = online[0].seen.events.iter().map(|e| e.2.op()).collect();
    assert_eq!(ops, [GroupOp::Create, GroupOp::Add]);
    // The sender's own devices get the copy too.
    alice.messages(3).await;
    assert_eq!(alice.seen.bodies(), texts);

    let all_from = |m: &str, s: &Seen| {
        [ReceiptKind::Delivered, ReceiptKind::Read].iter().all(|k| {
            let mut got = s.receipted(m, *k);
            got.sort_unstable();
            got.dedup();
            got.len() == 3
        })
    };
    alice
        .until("the online members' receipts", |s| {
            [b, c, dd].iter().all(|m| all_from(m, s))
        })
        .await;
    // No receipt for the sender's own copy, nor from the group's log (its
    // fan-out acknowledges it) or for an event.
    assert!(alice.seen.receipted(a, ReceiptKind::Delivered).is_empty());
    assert!(
        alice
            .seen
            .receipts
            .iter()
            .all(|r| names.contains(&r.0.as_str()) && r.2.iter().all(|i| ids.contains(i))),
        "{:?}",
        alice.seen.receipts
    );
    for m in &online {
        assert!(
            m.seen.receipts.is_empty(),
            "{}: {:?}",
            m.name,
            m.seen.receipts
        );
    }
    alice.close().await;

    // The offline member gets the group's history since it was added, in
    // order, once; its receipts reach the sender, offline meanwhile.
    let mut erin = Member::connect(e, cfg(e)).await;
    erin.messages(3).await;
    assert_eq!(erin.seen.bodies(), texts);
    let ops: Vec<_> = erin.seen.events.iter().map(|e| e.2.op()).collect();
    assert_eq!(ops, [GroupOp::Add]);
    let read = erin
        .client
        .mark_read_in_group(&group, a, &ids)
        .await
        .unwrap();
    erin.accepted(read).await;

    let mut alice = Member::connect(a, cfg(a)).await;
    alice
        .until("the late member's receipts", |s| all_from(e, s))
        .await;
    // Nothing twice: markers sent after everything find nothing more.
    for m in &mut online {
        let id = m
            .client
            .send(a, Bytes::from_static(b"marker"))
            .await
            .unwrap();
        m.accepted(id).await;
    }
    alice.until("three markers", |s| s.direct.len() == 3).await;
    assert!(alice.seen.messages.is_empty(), "{:?}", alice.seen.messages);
    for m in &online {
        assert_eq!(m.seen.messages.len(), 3, "{}", m.name);
    }
    assert_eq!(erin.seen.messages.len(), 3);
    for m in online.into_iter().chain([alice, erin]) {
        m.close().await;
    }
}
