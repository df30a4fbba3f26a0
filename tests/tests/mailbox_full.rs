//! A full mailbox (issue 21): the client library reports `MAILBOX_FULL` as
//! an `Event::Retrying` with the server's delay (not as a final rejection),
//! resends by itself, and the sends go through once the recipient has read
//! their mail; each is delivered once.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use common::client::{Event, Events, MessageId, Transport};
use common::proto::Code;
use support::{Deployment, PATIENCE, next_message};

const MAX_ITEMS: usize = 5;

async fn next_event(events: &mut Events) -> Event {
    tokio::time::timeout(PATIENCE, async {
        loop {
            match events.next().await.expect("the client runs") {
                Event::Connected { .. }
                | Event::Disconnected { .. }
                | Event::Waiting { .. }
                | Event::Presence { .. } => {}
                e => return e,
            }
        }
    })
    .await
    .expect("an event within patience")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_mailbox_is_a_retry_event_and_sends_resume_once_it_is_read() {
    let extra = format!("[mailbox]\nmax_items = {MAX_ITEMS}\n");
    let d = Deployment::start_with_store_config(&extra, |_| {}).await;
    let (alice, mut ea) = d.client("alice", Transport::Tcp).await;
    let mut sent: Vec<MessageId> = Vec::new();
    for i in 0..MAX_ITEMS + 2 {
        sent.push(
            alice
                .send("bob", Bytes::from(format!("m{i}")))
                .await
                .unwrap(),
        );
    }
    // (The refusals need no flush and may come before the Accepteds.)
    let mut accepted = HashSet::new();
    let mut retrying = None;
    while accepted.len() < MAX_ITEMS || retrying.is_none() {
        match next_event(&mut ea).await {
            Event::Accepted { id, .. } => {
                accepted.insert(id);
            }
            Event::Retrying {
                id,
                code: Code::MailboxFull,
                message,
                after,
            } if retrying.is_none() => retrying = Some((id, message, after)),
            Event::Retrying {
                code: Code::MailboxFull,
                ..
            } => {}
            other => panic!("alice: {other:?}"),
        }
    }
    let (id, message, after) = retrying.expect("checked");
    println!(
        "mailbox full: {} accepted, and Retrying MAILBOX_FULL ({message}), resent in {after:?}",
        accepted.len()
    );
    assert_eq!(accepted.len(), MAX_ITEMS);
    assert_eq!(id, sent[MAX_ITEMS]);
    assert!(after >= Duration::from_secs(4), "{after:?}");
    assert!(message.contains("mailbox"), "{message}");

    // Bob reads his mail; alice's held sends go through on their own.
    let (bob, mut eb) = d.client("bob", Transport::Tcp).await;
    let mut got = HashSet::new();
    while got.len() < MAX_ITEMS {
        let (seq, _, id, _) = next_message(&mut eb).await;
        assert!(got.insert(id));
        bob.ack(&[seq]).await.unwrap();
    }
    while accepted.len() < sent.len() {
        match next_event(&mut ea).await {
            Event::Accepted { id, .. } => assert!(accepted.insert(id), "twice: {id:?}"),
            Event::Retrying {
                code: Code::MailboxFull,
                ..
            }
            | Event::Receipt { .. } => {}
            other => panic!("alice after bob read: {other:?}"),
        }
    }
    while got.len() < sent.len() {
        let (seq, _, id, _) = next_message(&mut eb).await;
        assert!(got.insert(id), "delivered twice: {id:?}");
        bob.ack(&[seq]).await.unwrap();
    }
    assert_eq!(got, sent.iter().copied().collect());
    println!(
        "mailbox full: all {} sends accepted and delivered once after bob read",
        got.len()
    );
    alice.close().await;
    bob.close().await;
    d.stop().await;
}
