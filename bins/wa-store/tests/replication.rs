//! One-way replication between two real `wa-store` processes of one
//! island, spoken to over real links: the secondary catches up, follows,
//! and after the primary is killed and the map promotes the secondary,
//! every acknowledged append is there, once, in order.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::cluster::ClusterMap;
use common::link::{Append, Attach, LinkAck, link_down, link_up};
use common::proto::Code;
use support::{Link, PATIENCE, SECRET, envelope};
use tokio::io::AsyncBufReadExt;

/// A loopback address free right now (the map must name the secondary's
/// address before it starts).
fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn map(epoch: u64, primary: SocketAddr, secondary: SocketAddr) -> ClusterMap {
    let mut m = ClusterMap::single(primary, "localhost", [7; 16]);
    m.epoch = epoch;
    m.islands[0].secondary = Some(secondary);
    m
}

fn store_toml(d: &Path, name: &str, listen: SocketAddr, when_absent: &str) -> String {
    let dd = d.display();
    format!(
        "node = \"{name}\"\ndata_dir = \"{dd}/{name}\"\ndurability = \"replicated\"\n\
         [link]\nlisten = \"{listen}\"\ncert = \"{dd}/cert.pem\"\nkey = \"{dd}/key.pem\"\n\
         [cluster]\nmap = \"{dd}/cluster.toml\"\nsecret_file = \"{dd}/secret\"\nca = \"{dd}/ca.pem\"\n\
         [replication]\nwait = \"2s\"\nwhen_absent = \"{when_absent}\"\n\
         [cache]\nsync_delay = \"1s\"\n[shutdown]\ngrace = \"5s\"\n[admin]\nlisten = \"127.0.0.1:0\"\n"
    )
}

/// A running store and the lines it prints on stdout.
struct Store {
    child: tokio::process::Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Store {
    async fn start(d: &Path, name: &str, listen: SocketAddr, when_absent: &str) -> Store {
        let cfg = d.join(format!("{name}.toml"));
        std::fs::write(&cfg, store_toml(d, name, listen, when_absent)).unwrap();
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_wa-store"))
            .arg("--config")
            .arg(&cfg)
            .env(
                "RUST_LOG",
                std::env::var("WA_TEST_STORE_LOG").unwrap_or("warn".into()),
            )
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(l)) = out.next_line().await {
                let _ = tx.send(l);
            }
        });
        let mut s = Store { child, lines };
        s.wait_line("READY wa-store").await;
        s
    }

    async fn wait_line(&mut self, prefix: &str) -> String {
        tokio::time::timeout(PATIENCE, async {
            while let Some(l) = self.lines.recv().await {
                if l.starts_with(prefix) {
                    return l;
                }
            }
            panic!("wa-store exited before printing {prefix:?}");
        })
        .await
        .unwrap_or_else(|_| panic!("no {prefix:?} within {PATIENCE:?}"))
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id().unwrap() as i32);
        nix::sys::signal::kill(pid, sig).unwrap();
    }
}

fn id_of(n: u64) -> Bytes {
    let mut id = vec![0u8; 16];
    id[..8].copy_from_slice(&n.to_be_bytes());
    Bytes::from(id)
}

fn append(req: u64, to: &str, epoch: u64) -> link_up::Kind {
    link_up::Kind::Append(Append {
        req,
        to: to.into(),
        envelope: Some(envelope("alice", id_of(req), Bytes::from_static(b"hello"))),
        epoch,
        handoff: false,
        from_generation: 0,
    })
}

/// Connects to the store at `addr` once it accepts links.
async fn link(addr: SocketAddr, d: &Path) -> Link {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match Link::connect(addr, d, &SECRET).await {
            Ok(l) => return l,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("cannot reach {addr}: {e}"),
        }
    }
}

/// Sends appends `first..` to `to` under `epoch` to the store at `addr`
/// until one is accepted (connecting again whenever the link closes, as an
/// edge does); returns the link and the code of each refusal before it.
async fn append_until_accepted(
    addr: SocketAddr,
    d: &Path,
    first: u64,
    to: &str,
    epoch: u64,
) -> (Link, Vec<u32>) {
    let mut refusals = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    let mut req = first;
    let mut l = link(addr, d).await;
    loop {
        assert!(Instant::now() < deadline, "never accepted: {refusals:?}");
        if l.try_send(append(req, to, epoch)).await.is_err() {
            // (Closed under us, by the store becoming primary: again.)
            l = link(addr, d).await;
            continue;
        }
        req += 1;
        loop {
            match l.recv().await {
                Some(link_down::Kind::AppendResult(r)) if r.req == req - 1 => {
                    if r.code == 0 {
                        return (l, refusals);
                    }
                    refusals.push(r.code);
                    break;
                }
                Some(_) => {}
                None => {
                    l = link(addr, d).await;
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Attaches `user` at the store behind `l` and takes its whole mailbox,
/// acknowledging as it goes: the ids, in delivery order. Ends after 3 s
/// without a push, or 300 ms once `want` items came.
async fn drain(l: &mut Link, user: &str, epoch: u64, want: usize) -> Vec<u64> {
    l.send(link_up::Kind::Attach(Attach {
        session: 7,
        user: user.into(),
        device: 1,
        generation: 1,
        epoch,
    }))
    .await;
    let mut ids = Vec::new();
    let mut unacked = Vec::new();
    loop {
        // Acknowledged in batches, as a device does.
        let idle = if ids.len() >= want { 300 } else { 3000 };
        let wait = if unacked.is_empty() { idle } else { 20 };
        let next = tokio::time::timeout(Duration::from_millis(wait), l.recv()).await;
        if (next.is_err() || unacked.len() >= 128) && !unacked.is_empty() {
            l.send(link_up::Kind::Ack(LinkAck {
                session: 7,
                user: user.into(),
                seqs: std::mem::take(&mut unacked),
            }))
            .await;
        }
        let kind = match next {
            Ok(Some(kind)) => kind,
            Ok(None) => break,
            Err(_) if unacked.is_empty() && wait == idle => break,
            Err(_) => continue,
        };
        match kind {
            link_down::Kind::Push(p) => {
                let id = p.envelope.unwrap().id;
                ids.push(u64::from_be_bytes(id[..8].try_into().unwrap()));
                unacked.push(p.seq);
            }
            link_down::Kind::Kick(k) => panic!("kicked with {}", k.code),
            _ => {}
        }
    }
    l.send(link_up::Kind::Detach(common::link::Detach {
        session: 7,
        user: user.into(),
    }))
    .await;
    ids
}

/// Appends to `users` in turn, at most `in_flight` at once, until stopped; keeps
/// the reqs of the acknowledged ones (req = the message id's number).
struct Load {
    acked: std::sync::Arc<std::sync::Mutex<Vec<(u64, String)>>>,
    stop: tokio_util::sync::CancellationToken,
    writer: tokio::task::JoinHandle<u64>,
    reader: tokio::task::JoinHandle<()>,
}

impl Load {
    async fn start(
        addr: SocketAddr,
        d: &Path,
        users: Vec<String>,
        epoch: u64,
        in_flight: usize,
    ) -> Load {
        let (mut r, mut w) = link(addr, d).await.split();
        let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let acked2 = std::sync::Arc::clone(&acked);
        let (credit_tx, mut credit_rx) = tokio::sync::mpsc::channel::<()>(in_flight);
        for _ in 0..in_flight {
            credit_tx.send(()).await.unwrap();
        }
        let n = users.len() as u64;
        let users2 = users.clone();
        let reader = tokio::spawn(async move {
            while let Ok(Some(kind)) = r.next().await {
                if let link_down::Kind::AppendResult(a) = kind {
                    if a.code == 0 {
                        let to = users2[((a.req - 1) % n) as usize].clone();
                        acked2.lock().unwrap().push((a.req, to));
                    }
                    if credit_tx.send(()).await.is_err() {
                        break;
                    }
                }
            }
        });
        let stop = tokio_util::sync::CancellationToken::new();
        let stop2 = stop.clone();
        let writer = tokio::spawn(async move {
            let mut req = 1u64;
            loop {
                tokio::select! {
                    c = credit_rx.recv() => if c.is_none() { break },
                    () = stop2.cancelled() => break,
                }
                let to = &users[((req - 1) % n) as usize];
                if w.queue(append(req, to, epoch)).await.is_err() || w.flush().await.is_err() {
                    break;
                }
                req += 1;
            }
            req - 1
        });
        Load {
            acked,
            stop,
            writer,
            reader,
        }
    }

    fn acked_count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Waits until `n` more appends than now are acknowledged.
    async fn more(&self, n: usize) {
        let target = self.acked_count() + n;
        let t = Instant::now();
        while self.acked_count() < target {
            assert!(
                t.elapsed() < PATIENCE,
                "the load stalled at {}",
                self.acked_count()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops sending, waits for the answers in flight (or the link's end):
    /// (sent, acknowledged (req, recipient)).
    async fn finish(self) -> (u64, Vec<(u64, String)>) {
        let Load {
            acked,
            stop,
            writer,
            reader,
        } = self;
        stop.cancel();
        let sent = writer.await.unwrap();
        let t = Instant::now();
        while (acked.lock().unwrap().len() as u64) < sent
            && !reader.is_finished()
            && t.elapsed() < Duration::from_secs(5)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        reader.abort();
        let acked = acked.lock().unwrap().clone();
        (sent, acked)
    }
}

/// Checks that every acknowledged append to each user is in `got` (that
/// user's deliveries), once, in the order sent.
fn check_delivered(acked: &[(u64, String)], got: &std::collections::HashMap<String, Vec<u64>>) {
    for (user, ids) in got {
        for w in ids.windows(2) {
            assert!(
                w[0] < w[1],
                "{user}: out of order or twice: {} then {}",
                w[0],
                w[1]
            );
        }
    }
    let seen: std::collections::HashSet<(u64, &str)> = got
        .iter()
        .flat_map(|(u, ids)| ids.iter().map(move |i| (*i, u.as_str())))
        .collect();
    let lost: Vec<_> = acked
        .iter()
        .filter(|(r, u)| !seen.contains(&(*r, u.as_str())))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged appends lost, first {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_primary_under_load_loses_no_acknowledged_append_once_the_secondary_is_promoted()
 {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    support::write_files(d);
    let (pa, sa) = (free_addr(), free_addr());
    std::fs::write(d.join("cluster.toml"), map(1, pa, sa).to_toml()).unwrap();
    let mut primary = Store::start(d, "a", pa, "disk").await;
    let mut secondary = Store::start(d, "b", sa, "disk").await;
    secondary.wait_line("CAUGHT-UP").await;

    // Steady load: appends in flight all the time, at most 64 at once.
    let (mut r, mut w) = link(pa, d).await.split();
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    let acked2 = std::sync::Arc::clone(&acked);
    let (credit_tx, mut credit_rx) = tokio::sync::mpsc::channel::<()>(64);
    for _ in 0..64 {
        credit_tx.send(()).await.unwrap();
    }
    let reader = tokio::spawn(async move {
        while let Ok(Some(kind)) = r.next().await {
            if let link_down::Kind::AppendResult(a) = kind {
                if a.code == 0 {
                    acked2.lock().unwrap().push(a.req);
                }
                if credit_tx.send(()).await.is_err() {
                    break;
                }
            }
        }
    });
    let writer = tokio::spawn(async move {
        let mut req = 1u64;
        while credit_rx.recv().await.is_some() {
            if w.queue(append(req, "bob", 1)).await.is_err() || w.flush().await.is_err() {
                break;
            }
            req += 1;
        }
        req - 1
    });
    // Kill it once a good share is acknowledged, with appends in flight.
    let t = Instant::now();
    while acked.lock().unwrap().len() < 3000 || t.elapsed() < Duration::from_secs(1) {
        assert!(t.elapsed() < PATIENCE, "the load did not get going");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    primary.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = primary.child.wait().await;
    let sent = writer.await.unwrap();
    let _ = reader.await;
    let acked: Vec<u64> = acked.lock().unwrap().clone();

    // The killed primary comes straight back (a supervisor restarting it)
    // before anyone promotes: it may lack appends it acknowledged (they were
    // in the secondary's memory and its own unsynced journal buffer), so it
    // must serve nothing, nor hand its secondary a fresh copy that would
    // replace the newer one. For two seconds (the secondary asks to follow
    // again every second) every append to it is refused.
    let mut back = Store::start(d, "a", pa, "disk").await;
    let mut probe = link(pa, d).await;
    let t = Instant::now();
    let mut req = 3_000_000u64;
    while t.elapsed() < Duration::from_secs(2) {
        probe.send(append(req, "bob", 1)).await;
        loop {
            match probe.recv().await.expect("an answer") {
                link_down::Kind::AuthOk(_) => continue,
                link_down::Kind::AppendResult(r) => {
                    assert_eq!(
                        r.code,
                        Code::WrongHome as u32,
                        "a primary back from a crash, with a secondary, serves nothing"
                    );
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        req += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(probe);
    back.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = back.child.wait().await;

    // Promote by hand: the map swaps the roles under a higher epoch.
    std::fs::write(d.join("cluster.toml"), map(2, sa, pa).to_toml()).unwrap();
    let promoted_at = Instant::now();
    secondary.signal(nix::sys::signal::Signal::SIGHUP);
    let (mut l, refusals) = append_until_accepted(sa, d, 1_000_000, "carol", 2).await;
    let took = promoted_at.elapsed();
    println!(
        "sent {sent}, acknowledged {} before the kill; first append accepted by the new primary {took:?} after the map changed (refusals before it: {refusals:?})",
        acked.len()
    );
    for c in &refusals {
        assert!(
            [
                Code::WrongHome as u32,
                Code::StaleEpoch as u32,
                Code::Unavailable as u32
            ]
            .contains(c),
            "refused with {c}"
        );
    }

    // Everything acknowledged is there, once, in the order it was sent.
    let got = drain(&mut l, "bob", 2, acked.len()).await;
    let mut seen = std::collections::HashSet::new();
    for w in got.windows(2) {
        assert!(w[0] < w[1], "out of order or twice: {} then {}", w[0], w[1]);
    }
    seen.extend(got.iter().copied());
    let lost: Vec<_> = acked.iter().filter(|r| !seen.contains(r)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged appends lost, first {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    println!(
        "the new primary delivered {} items ({} acknowledged, {} more that were in flight)",
        got.len(),
        acked.len(),
        got.len() - acked.len()
    );

    // The old primary comes back: the map names it secondary, so it
    // catches up from the new primary instead of serving.
    let mut old = Store::start(d, "a", pa, "disk").await;
    old.wait_line("CAUGHT-UP").await;
    let mut stale = link(pa, d).await;
    stale.send(append(2_000_000, "bob", 2)).await;
    loop {
        match stale.recv().await.expect("an answer") {
            link_down::Kind::AuthOk(_) => continue,
            link_down::Kind::AppendResult(r) => {
                assert_eq!(r.code, Code::WrongHome as u32, "a secondary serves nothing");
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    secondary.signal(nix::sys::signal::Signal::SIGTERM);
    old.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(secondary.child.wait().await.unwrap().success());
    assert!(old.child.wait().await.unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_secondary_refuse_mode_answers_unavailable_until_one_has_caught_up() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    support::write_files(d);
    let (pa, sa) = (free_addr(), free_addr());
    std::fs::write(d.join("cluster.toml"), map(1, pa, sa).to_toml()).unwrap();
    let mut primary = Store::start(d, "a", pa, "refuse").await;
    let mut l = link(pa, d).await;
    l.send(append(1, "bob", 1)).await;
    let code = loop {
        match l.recv().await.expect("an answer") {
            link_down::Kind::AppendResult(r) => break r.code,
            _ => continue,
        }
    };
    assert_eq!(
        code,
        Code::Unavailable as u32,
        "refused while no secondary follows"
    );
    let mut secondary = Store::start(d, "b", sa, "refuse").await;
    secondary.wait_line("CAUGHT-UP").await;
    let (_, refusals) = append_until_accepted(pa, d, 2, "bob", 1).await;
    assert!(
        refusals.iter().all(|c| *c == Code::Unavailable as u32),
        "{refusals:?}"
    );
    // The secondary goes: refused again, at once.
    secondary.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(secondary.child.wait().await.unwrap().success());
    let mut l = link(pa, d).await;
    let t = Instant::now();
    let mut req = 100;
    loop {
        l.send(append(req, "bob", 1)).await;
        let code = loop {
            match l.recv().await.expect("an answer") {
                link_down::Kind::AppendResult(r) if r.req == req => break r.code,
                _ => continue,
            }
        };
        if code == Code::Unavailable as u32 {
            break;
        }
        assert!(t.elapsed() < PATIENCE, "still accepted without a secondary");
        req += 1;
    }
    primary.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(primary.child.wait().await.unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_secondary_catches_up_during_load_and_then_holds_every_mailbox() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    support::write_files(d);
    let (pa, sa) = (free_addr(), free_addr());
    std::fs::write(d.join("cluster.toml"), map(1, pa, sa).to_toml()).unwrap();
    let mut primary = Store::start(d, "a", pa, "disk").await;
    let mut secondary = Store::start(d, "b", sa, "disk").await;
    secondary.wait_line("CAUGHT-UP").await;
    let users: Vec<String> = (0..20).map(|i| format!("user{i}")).collect();
    let load = Load::start(pa, d, users.clone(), 1, 4).await;
    load.more(1000).await;
    // The secondary dies and loses its disk; the primary goes on.
    secondary.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = secondary.child.wait().await;
    std::fs::remove_dir_all(d.join("b")).unwrap();
    load.more(1000).await;
    // (Items old enough are in the primary's engine by now: sync_delay 1 s.)
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut secondary = Store::start(d, "b", sa, "disk").await;
    let caught_up_during = load.acked_count();
    secondary.wait_line("CAUGHT-UP").await;
    load.more(1000).await;
    let (sent, acked) = load.finish().await;
    println!(
        "sent {sent}, acknowledged {}; the wiped secondary caught up while the primary accepted ({} acknowledged when it restarted)",
        acked.len(),
        caught_up_during
    );
    // Compare: the primary goes, the secondary takes over and must hold
    // every mailbox as the primary acknowledged it.
    primary.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = primary.child.wait().await;
    std::fs::write(d.join("cluster.toml"), map(2, sa, pa).to_toml()).unwrap();
    secondary.signal(nix::sys::signal::Signal::SIGHUP);
    let (mut l, _) = append_until_accepted(sa, d, 5_000_000, "carol", 2).await;
    let mut got = std::collections::HashMap::new();
    for u in &users {
        let want = acked.iter().filter(|(_, to)| to == u).count();
        got.insert(u.clone(), drain(&mut l, u, 2, want).await);
    }
    check_delivered(&acked, &got);
    let total: usize = got.values().map(Vec::len).sum();
    println!(
        "the promoted copy delivered {total} items over {} mailboxes",
        users.len()
    );
    secondary.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(secondary.child.wait().await.unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planned_switchover_fences_the_old_primary_which_exits_75_and_rejoins_as_secondary() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    support::write_files(d);
    let (pa, sa) = (free_addr(), free_addr());
    std::fs::write(d.join("cluster.toml"), map(1, pa, sa).to_toml()).unwrap();
    let mut primary = Store::start(d, "a", pa, "refuse").await;
    let mut secondary = Store::start(d, "b", sa, "refuse").await;
    secondary.wait_line("CAUGHT-UP").await;
    let users: Vec<String> = (0..5).map(|i| format!("user{i}")).collect();
    let load = Load::start(pa, d, users.clone(), 1, 16).await;
    load.more(1000).await;
    std::fs::write(d.join("cluster.toml"), map(2, sa, pa).to_toml()).unwrap();
    primary.signal(nix::sys::signal::Signal::SIGHUP);
    secondary.signal(nix::sys::signal::Signal::SIGHUP);
    let st = tokio::time::timeout(PATIENCE, primary.child.wait())
        .await
        .expect("the old primary stops")
        .unwrap();
    assert_eq!(st.code(), Some(75), "a demoted primary exits 75: {st}");
    let (sent, acked) = load.finish().await;
    println!(
        "sent {sent}, acknowledged {} before the switchover",
        acked.len()
    );
    // Started again, the old primary follows the new one (at "refuse" the
    // new primary accepts nothing until a secondary has caught up).
    let mut old = Store::start(d, "a", pa, "refuse").await;
    old.wait_line("CAUGHT-UP").await;
    let (mut l, _) = append_until_accepted(sa, d, 5_000_000, "carol", 2).await;
    let mut got = std::collections::HashMap::new();
    for u in &users {
        let want = acked.iter().filter(|(_, to)| to == u).count();
        got.insert(u.clone(), drain(&mut l, u, 2, want).await);
    }
    check_delivered(&acked, &got);
    secondary.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(secondary.child.wait().await.unwrap().success());
    old.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(old.child.wait().await.unwrap().success());
}
