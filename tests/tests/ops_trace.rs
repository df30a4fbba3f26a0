//! `wactl trace MESSAGE_ID --from A --to B` against a real wa-store, with
//! `--output json` parsed and checked, for a real message in each state it
//! can be made to reach: stored but not yet accepted (its journal sync held
//! back), accepted and in memory, in the engine, pushed and not
//! acknowledged, acknowledged; and one the home never had.

mod support;

use std::path::Path;
use std::time::Duration;

use common::client::{Event, Events, MessageId, Transport};
use support::{Deployment, PATIENCE, wactl, write_node_list};

async fn trace(dir: &Path, id: &MessageId, from: &str, to: &str) -> (i32, serde_json::Value) {
    let (st, doc, stderr) = wactl(&[
        "trace".to_string(),
        hex::encode(id),
        "--from".into(),
        from.into(),
        "--to".into(),
        to.into(),
        "--output".into(),
        "json".into(),
        "--dir".into(),
        dir.display().to_string(),
    ])
    .await;
    let code = st.code().unwrap_or(-1);
    assert!(code == 0 || code == 3, "wactl trace: {st}: {stderr}");
    (code, doc)
}

/// Asks again (within patience) until `ok` holds of the answer.
async fn trace_until(
    dir: &Path,
    id: &MessageId,
    from: &str,
    to: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let t = std::time::Instant::now();
    loop {
        let (_, doc) = trace(dir, id, from, to).await;
        if ok(&doc) {
            return doc;
        }
        assert!(t.elapsed() < PATIENCE, "never reached: {doc}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn accepted(events: &mut Events, id: MessageId) {
    support::expect(events, "Accepted", |e| match e {
        Event::Accepted { id: got, .. } if *got == id => Some(()),
        _ => None,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wactl_trace_follows_a_message_through_its_states() {
    // Items stay in memory for a minute, unless a mailbox already holds one
    // there (`bypass_items = 1`): then the next goes straight to the engine.
    let extra = "[cache]\nsync_delay = \"60s\"\nbypass_items = 1\n";
    let stall = tempfile::tempdir().unwrap();
    let mark = stall.path().join("stall");
    let d = Deployment::start_with_store_env(
        extra,
        |_| {},
        &[("WA_STORE_FAULT_STALL_FLUSH_WHILE", mark.as_os_str())],
    )
    .await;
    let dir = d.dir.path().to_owned();
    let store = d.store_process.as_ref().unwrap().admin;
    write_node_list(&dir, &[("store-1", "wa-store", store)]);
    let (alice, mut ea) = d.client("alice", Transport::Tcp).await;

    // Never sent: nothing on record, exit 3.
    let (code, doc) = trace(&dir, &[7; 16], "alice", "bob").await;
    assert_eq!(code, 3, "{doc}");
    assert_eq!(doc["found"], false, "{doc}");

    // Stored, its journal sync held back: not accepted yet.
    std::fs::write(&mark, b"").unwrap();
    let first = alice
        .send("bob", bytes::Bytes::from_static(b"one"))
        .await
        .unwrap();
    let doc = trace_until(&dir, &first, "alice", "bob", |d| d["found"] == true).await;
    assert_eq!(doc["accepted"], false, "{doc}");
    assert_eq!(doc["place"], "cache", "{doc}");
    std::fs::remove_file(&mark).unwrap();
    accepted(&mut ea, first).await;

    // Accepted, in memory (and the journal), not pushed: bob is offline.
    let (code, doc) = trace(&dir, &first, "alice", "bob").await;
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["accepted"], true, "{doc}");
    assert_eq!(doc["place"], "cache", "{doc}");
    assert!(doc["journal_segment"].as_u64().is_some(), "{doc}");
    assert_eq!(doc["pushed_to"].as_array().unwrap().len(), 0, "{doc}");
    assert_eq!(doc["acknowledged"], false, "{doc}");
    assert_eq!(doc["seq"], 1, "{doc}");

    // The second one finds a cached item there: straight to the engine.
    let second = alice
        .send("bob", bytes::Bytes::from_static(b"two"))
        .await
        .unwrap();
    accepted(&mut ea, second).await;
    let (_, doc) = trace(&dir, &second, "alice", "bob").await;
    assert_eq!(doc["place"], "engine", "{doc}");
    assert_eq!(doc["accepted"], true, "{doc}");

    // Bob connects: both are pushed, neither acknowledged yet.
    let (bob, mut eb) = d.client("bob", Transport::Tcp).await;
    let (seq, _, id, _) = support::next_message(&mut eb).await;
    assert_eq!(id, first);
    let doc = trace_until(&dir, &first, "alice", "bob", |d| {
        d["pushed_to"].as_array().is_some_and(|p| !p.is_empty())
    })
    .await;
    assert_eq!(doc["pushed_to"][0]["device"], 1, "{doc}");
    assert_eq!(doc["pushed_to"][0]["edge"], "chat-1", "{doc}");
    assert_eq!(doc["acknowledged"], false, "{doc}");
    assert_eq!(doc["place"], "cache", "{doc}");

    // Acknowledged: gone from the mailbox, its receipt on its way or
    // stored.
    bob.ack(&[seq]).await.unwrap();
    let doc = trace_until(&dir, &first, "alice", "bob", |d| d["acknowledged"] == true).await;
    assert!(doc["place"] == "gone" || doc["place"] == "cache", "{doc}");
    assert_eq!(doc["pushed_to"].as_array().unwrap().len(), 0, "{doc}");
    let doc = trace_until(&dir, &first, "alice", "bob", |d| d["place"] == "gone").await;
    assert_eq!(doc["found_in"], "memory", "{doc}");
    println!("acknowledged: {doc}");

    // The second, from the engine, pushed, then acknowledged.
    let (seq2, _, id2, _) = support::next_message(&mut eb).await;
    assert_eq!(id2, second);
    let doc = trace_until(&dir, &second, "alice", "bob", |d| {
        d["pushed_to"].as_array().is_some_and(|p| !p.is_empty())
    })
    .await;
    assert_eq!(doc["place"], "engine", "{doc}");
    bob.ack(&[seq2]).await.unwrap();
    trace_until(&dir, &second, "alice", "bob", |d| d["place"] == "gone").await;

    // A bad id is refused with a reason.
    let dir_arg = dir.display().to_string();
    let (st, _, stderr) = wactl(&[
        "trace", "xyz", "--from", "alice", "--to", "bob", "--dir", &dir_arg,
    ])
    .await;
    assert_eq!(st.code(), Some(1), "{stderr}");
    assert!(stderr.contains("32 hex digits"), "{stderr}");
    alice.close().await;
    bob.close().await;
    d.stop().await;
}
