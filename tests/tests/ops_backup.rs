//! `wactl backup` and `wactl restore` against the real binaries: a backup
//! taken while senders keep appending, restored into a fresh store, holds
//! every account and every message Accepted before the backup began.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::client::{Event, MessageId, Transport};
use support::{Deployment, PATIENCE, sign_up, wactl, write_node_list};

/// Recipients that stay offline while the load runs: their mailboxes keep
/// everything, some of it written back to the engine, some only in the
/// journal and the cache.
const OFFLINE: [&str; 4] = ["rcpt-0", "rcpt-1", "rcpt-2", "rcpt-3"];
/// A recipient online throughout, acknowledging: deletes go on during the
/// backup too.
const ONLINE: &str = "reader";
const SENDERS: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_taken_under_load_restores_every_account_and_accepted_message() {
    // Write-back after 200 ms: by the backup, most of the load is in the
    // engine, the rest in the journal and the cache.
    let store_extra = "[cache]\nsync_delay = \"200ms\"\n";
    let mut d = Deployment::start_with_store_config(store_extra, |_| {}).await;
    let dir = d.dir.path().to_owned();
    let store_admin = d.store_process.as_ref().unwrap().admin;
    write_node_list(&dir, &[("store-1", "wa-store", store_admin)]);

    // Accounts (key-value records: phone numbers and account records).
    let register = d.start_register("").await;
    let rc = d.register_client(&register);
    let mut accounts = HashMap::new();
    for i in 0..5 {
        let number = format!("+1555000{i:04}");
        let r = sign_up(&rc, &register, &number, "phone", None)
            .await
            .unwrap();
        assert!(r.new_account);
        accounts.insert(number, r.user);
    }
    register.service.stop().await;

    // The load: every Accepted id, with its recipient.
    let accepted: Arc<Mutex<HashMap<MessageId, String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for s in 0..SENDERS {
        let (client, mut events) = d.client(&format!("sender-{s}"), Transport::Tcp).await;
        let pending: Arc<Mutex<HashMap<MessageId, String>>> = Arc::default();
        let (acc, pend) = (Arc::clone(&accepted), Arc::clone(&pending));
        tasks.push(tokio::spawn(async move {
            while let Some(e) = events.next().await {
                if let Event::Accepted { id, .. } = e
                    && let Some(to) = pend.lock().unwrap().remove(&id)
                {
                    acc.lock().unwrap().insert(id, to);
                }
            }
        }));
        let stop = Arc::clone(&stop);
        tasks.push(tokio::spawn(async move {
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let to = if n % 5 == 4 {
                    ONLINE
                } else {
                    OFFLINE[n % OFFLINE.len()]
                };
                let id: MessageId = rand::random();
                pending.lock().unwrap().insert(id, to.to_string());
                client
                    .send_with_id(to, id, bytes::Bytes::from(format!("m{n}")))
                    .await
                    .unwrap();
                n += 1;
                if n.is_multiple_of(20) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            client.close().await;
        }));
    }
    let (reader, mut reader_events) = d.client(ONLINE, Transport::Tcp).await;
    let reading = tokio::spawn(async move {
        while let Some(e) = reader_events.next().await {
            if let Event::Message { seq, .. } = e {
                let _ = reader.ack(&[seq]).await;
            }
        }
    });

    // Under way, and some of it old enough to be written back.
    let t = Instant::now();
    while accepted.lock().unwrap().len() < 600 || t.elapsed() < Duration::from_millis(600) {
        assert!(t.elapsed() < PATIENCE, "the load never got going");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Everything accepted before the backup begins must be in it.
    let before: HashMap<MessageId, String> = accepted.lock().unwrap().clone();
    let backup = dir.join("backup");
    let (st, doc, stderr) = wactl(&[
        "backup".as_ref(),
        "store-1".as_ref(),
        backup.as_os_str(),
        "--output".as_ref(),
        "json".as_ref(),
        "--dir".as_ref(),
        dir.as_os_str(),
    ])
    .await;
    assert!(st.success(), "wactl backup: {st}: {stderr}");
    assert_eq!(doc["state"], "done", "{doc}");
    let during = accepted.lock().unwrap().len() - before.len();
    println!(
        "backup: {} accepted before, {during} more while it ran; {doc}",
        before.len()
    );
    assert!(during > 0, "the load did not go on during the backup");
    assert!(doc["keys"].as_u64().unwrap() > 0, "no engine copy: {doc}");
    assert!(
        doc["journal_records"].as_u64().unwrap() > 0,
        "no journal: {doc}"
    );

    // A second backup into the same place is refused, with the reason.
    let (st, _, stderr) = wactl(&[
        "backup".as_ref(),
        "store-1".as_ref(),
        backup.as_os_str(),
        "--dir".as_ref(),
        dir.as_os_str(),
    ])
    .await;
    assert_eq!(st.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not empty"), "{stderr}");

    // The load stops here (what the test checks was taken before the
    // backup began); nothing needs to finish first.
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.abort();
    }
    reading.abort();

    // Stop everything; the old data directory goes aside.
    d.chat.take().unwrap().stop().await;
    let mut old = d.store_process.take().unwrap();
    support::sigterm(&old.child);
    let st = tokio::time::timeout(PATIENCE, old.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(st.success(), "wa-store exited with {st}");
    std::fs::rename(dir.join("store"), dir.join("store.old")).unwrap();

    // Restore refuses a directory that is not a backup, and a data
    // directory that is not empty.
    let (st, _, stderr) = wactl(&[
        "restore".as_ref(),
        dir.join("store.old").as_os_str(),
        dir.join("elsewhere").as_os_str(),
    ])
    .await;
    assert_eq!(st.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not a complete backup"), "{stderr}");
    let (st, _, stderr) = wactl(&[
        "restore".as_ref(),
        backup.as_os_str(),
        dir.join("store.old").as_os_str(),
    ])
    .await;
    assert_eq!(st.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not empty"), "{stderr}");

    let (st, doc, stderr) = wactl(&[
        "restore".as_ref(),
        backup.as_os_str(),
        dir.join("store").as_os_str(),
        "--output".as_ref(),
        "json".as_ref(),
    ])
    .await;
    assert!(st.success(), "wactl restore: {stderr}");
    // The default engine (`auto`) gave the new data directory fjall.
    assert_eq!(doc["engine"], "fjall", "{doc}");
    assert!(doc["files"].as_u64().unwrap() > 0, "{doc}");

    // A fresh store on the restored directory, and an edge.
    support::write_map(&dir, "127.0.0.1:9".parse().unwrap());
    let sp = support::spawn_store_process_with(
        &dir,
        "127.0.0.1:0".parse().unwrap(),
        store_extra,
        Some(&dir.join("wa-store.log")),
        &[],
    )
    .await;
    support::write_map(&dir, sp.addr);
    d.link_addr = sp.addr;
    d.store_process = Some(sp);
    let (chat, tcp, quic) = support::start_chat_inproc(&dir, "").await;
    (d.chat, d.chat_tcp, d.chat_quic) = (Some(chat), tcp, quic);

    // Every account: signing in again finds it.
    let register = d.start_register("").await;
    let rc = d.register_client(&register);
    for (number, user) in &accounts {
        let r = sign_up(&rc, &register, number, "phone-2", None)
            .await
            .unwrap();
        assert!(!r.new_account, "{number}'s account was not restored");
        assert_eq!(&r.user, user, "{number} maps to another user");
    }
    register.service.stop().await;

    // Every message accepted before the backup began.
    let mut missing: HashSet<MessageId> = before
        .iter()
        .filter(|(_, to)| *to != ONLINE)
        .map(|(id, _)| *id)
        .collect();
    let expected = missing.len();
    let mut restored = 0;
    for user in OFFLINE {
        let (c, mut ev) = d.client(user, Transport::Tcp).await;
        let mine = before.values().filter(|to| *to == user).count();
        let mut seen = 0;
        let t = Instant::now();
        while seen < mine {
            let left = PATIENCE.saturating_sub(t.elapsed());
            let e = tokio::time::timeout(left, ev.next()).await;
            let Ok(Some(e)) = e else {
                panic!(
                    "{user}: {seen} of the {mine} messages accepted before the backup came back"
                );
            };
            if let Event::Message { seq, id, .. } = e {
                c.ack(&[seq]).await.unwrap();
                if missing.remove(&id) {
                    seen += 1;
                }
                restored += 1;
            }
        }
        c.close().await;
    }
    assert!(missing.is_empty());
    println!("restored: all {expected} messages accepted before the backup ({restored} in all)");
    d.stop().await;
}

/// A backup of a primary whose secondary follows: the backup and the
/// catch-up's stream do not get in each other's way (each holds the
/// journal its own way), the secondary refuses to be backed up, and the
/// copy holds every accepted message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_with_a_following_secondary_is_backed_up_and_the_secondary_refuses() {
    let c = support::cluster::Cluster::start_replicated(1).await;
    let dir = c.dir.path().to_owned();
    write_node_list(
        &dir,
        &[
            ("store-1", "wa-store", c.stores[0].admin),
            ("store-1b", "wa-store", c.stores[1].admin),
        ],
    );
    let bob = c.user_on(1, "bob");
    let (alice, mut ea) = c.client(&c.user_on(1, "alice"), 1).await;
    let mut ids = HashSet::new();
    for n in 0..50 {
        let id = alice
            .send(&bob, bytes::Bytes::from(format!("m{n}")))
            .await
            .unwrap();
        ids.insert(id);
    }
    while !ids.is_empty() {
        match tokio::time::timeout(PATIENCE, ea.next()).await {
            Ok(Some(Event::Accepted { id, .. })) => {
                ids.remove(&id);
            }
            Ok(Some(_)) => {}
            other => panic!("no Accepted for every message: {other:?}"),
        }
    }

    let backup = dir.join("backup");
    let (st, doc, stderr) = wactl(&[
        "backup".as_ref(),
        "store-1b".as_ref(),
        backup.as_os_str(),
        "--dir".as_ref(),
        dir.as_os_str(),
    ])
    .await;
    assert_eq!(st.code(), Some(1), "{doc} {stderr}");
    assert!(stderr.contains("does not serve as primary"), "{stderr}");
    let (st, doc, stderr) = wactl(&[
        "backup".as_ref(),
        "store-1".as_ref(),
        backup.as_os_str(),
        "--output".as_ref(),
        "json".as_ref(),
        "--dir".as_ref(),
        dir.as_os_str(),
    ])
    .await;
    assert!(st.success(), "{stderr}");
    assert_eq!(doc["state"], "done", "{doc}");

    // Replication goes on: the secondary is still caught up, and a new
    // message is accepted (at `replicated`, by both).
    let (st, doc, stderr) = wactl(&[
        "cluster".as_ref(),
        "status".as_ref(),
        "--output".as_ref(),
        "json".as_ref(),
        "--dir".as_ref(),
        dir.as_os_str(),
    ])
    .await;
    assert!(st.success(), "{doc} {stderr}");
    let id = alice
        .send(&bob, bytes::Bytes::from_static(b"after"))
        .await
        .unwrap();
    support::expect(&mut ea, "Accepted", |e| match e {
        Event::Accepted { id: got, .. } if *got == id => Some(()),
        _ => None,
    })
    .await;

    // The copy, opened as a store opens its data: all 50 for bob.
    let copy = wa_store::storage::open(
        &backup,
        wa_store::config::Engine::Fjall,
        wa_store::storage::TEST_ENGINE_CACHE,
    )
    .unwrap();
    assert_eq!(copy.mailbox_size(&bob).unwrap().items, 50);
    assert_eq!(copy.read(&bob, 1, 100).unwrap().len(), 50);
    drop(copy);
    alice.close().await;
    c.stop().await;
}
