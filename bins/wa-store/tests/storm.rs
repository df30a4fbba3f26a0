//! A reconnect storm against the real `wa-store` binary: thousands of
//! sessions attach at once, over one link, to mailboxes that hold hundreds
//! of messages each (the seeds' outage). Pushes are paced by each session's
//! window and by the link's push budget, so the link is never cut, every
//! message arrives once, and the store's memory stays bounded.

mod support;

use std::collections::HashSet;

use bytes::Bytes;
use common::link::{Append, Attach, LinkAck, link_down, link_up};

use support::{Link, PATIENCE, SECRET, config_toml, envelope, write_files};

const SESSIONS: usize = 2000;
const QUEUED: usize = 300;
const SENDERS: usize = 50;
/// A session acknowledges once this many pushes are unacknowledged (well
/// inside the window of 256), as a client acknowledging in batches does.
const ACK_EVERY: usize = 64;

fn recipient(r: usize) -> String {
    format!("r{r}")
}

fn message_id(r: usize, n: usize) -> Bytes {
    let mut id = [0u8; 16];
    id[0..8].copy_from_slice(&(r as u64).to_be_bytes());
    id[8..16].copy_from_slice(&(n as u64).to_be_bytes());
    Bytes::copy_from_slice(&id)
}

/// Peak and current resident memory of `pid` in MiB (Linux `/proc`).
fn memory_mib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(key))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    Some((kib("VmHWM:")? / 1024, kib("VmRSS:")? / 1024))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_sessions_attach_at_once_to_full_mailboxes_and_nothing_is_cut_lost_or_doubled()
{
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_files(d);
    let cfg = d.join("store.toml");
    std::fs::write(&cfg, config_toml(d, "127.0.0.1:0", "sled")).unwrap();
    let (mut child, addr) = support::spawn_store(&cfg).await;
    let pid = child.id().unwrap();

    // Fill: QUEUED messages for each of SESSIONS recipients, pipelined on one
    // link, every one accepted.
    let link = Link::open(addr, d, &SECRET).await;
    let (mut r, mut w) = link.split();
    let writing = tokio::spawn(async move {
        for n in 0..QUEUED {
            for rc in 0..SESSIONS {
                let req = (n * SESSIONS + rc) as u64;
                w.queue(link_up::Kind::Append(Append {
                    req,
                    to: recipient(rc),
                    envelope: Some(envelope(
                        &format!("s{}", rc % SENDERS),
                        message_id(rc, n),
                        Bytes::from_static(b"queued during the outage"),
                    )),
                    epoch: 1,
                    handoff: false,
                    from_generation: 0,
                }))
                .await
                .unwrap();
            }
        }
        w.flush().await.unwrap();
        w
    });
    let mut accepted = 0;
    while accepted < SESSIONS * QUEUED {
        match r.next().await.unwrap().expect("the store closed the link") {
            link_down::Kind::AppendResult(a) => {
                assert_eq!(a.code, 0, "{a:?}");
                accepted += 1;
            }
            link_down::Kind::AuthOk(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let mut w = writing.await.unwrap();
    drop((r, w.flush().await));

    // The storm: a new link (an edge that came back) attaches every session
    // at once, then reads and acknowledges.
    let mut link = Link::open(addr, d, &SECRET).await;
    assert!(matches!(
        link.recv().await,
        Some(link_down::Kind::AuthOk(_))
    ));
    let (mut r, mut w) = link.split();
    for s in 0..SESSIONS {
        w.queue(link_up::Kind::Attach(Attach {
            session: s as u64 + 1,
            user: recipient(s),
            device: 1,
            generation: 1,
            epoch: 1,
        }))
        .await
        .unwrap();
    }
    w.flush().await.unwrap();
    let mut got: Vec<HashSet<Bytes>> = vec![HashSet::new(); SESSIONS];
    let mut unacked: Vec<Vec<u64>> = vec![Vec::new(); SESSIONS];
    let mut received = 0;
    let mut peak_mib = 0;
    while received < SESSIONS * QUEUED {
        let frame = tokio::time::timeout(PATIENCE, r.next())
            .await
            .expect("pushes keep coming")
            .expect("the link reads")
            .expect("the store did not cut the link");
        let p = match frame {
            link_down::Kind::Push(p) => p,
            link_down::Kind::Attached(_) => continue,
            other => panic!("unexpected {other:?}"),
        };
        let s = (p.session - 1) as usize;
        let e = p.envelope.expect("pushes carry an envelope");
        assert!(got[s].insert(e.id.clone()), "session {s} got an item twice");
        received += 1;
        unacked[s].push(p.seq);
        if unacked[s].len() >= ACK_EVERY || got[s].len() == QUEUED {
            w.queue(link_up::Kind::Ack(LinkAck {
                session: s as u64 + 1,
                user: recipient(s),
                seqs: std::mem::take(&mut unacked[s]),
            }))
            .await
            .unwrap();
            w.flush().await.unwrap();
        }
        if received % 50_000 == 0
            && let Some((peak, _)) = memory_mib(pid)
        {
            peak_mib = peak_mib.max(peak);
        }
    }
    for (s, ids) in got.iter().enumerate() {
        let want: HashSet<Bytes> = (0..QUEUED).map(|n| message_id(s, n)).collect();
        assert_eq!(ids, &want, "session {s}");
    }
    if let Some((peak, now)) = memory_mib(pid) {
        peak_mib = peak_mib.max(peak);
        println!(
            "storm: {SESSIONS} sessions x {QUEUED} messages delivered once each; \
             store peak RSS {peak_mib} MiB, now {now} MiB"
        );
        // 600,000 small messages and as many receipts sit in the write-back
        // cache (512 MiB budget by default); the link queues hold at most
        // the push budget. Far beyond this means a queue that grew without
        // a bound.
        assert!(peak_mib < 1536, "peak RSS {peak_mib} MiB");
    }

    let pid = nix::unistd::Pid::from_raw(pid as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let st = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(st.success(), "{st}");
}
