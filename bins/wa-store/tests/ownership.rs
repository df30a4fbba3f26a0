//! A store serves only its island's fragments, under its map's epoch: the
//! real `wa-store` binary with a two-island map, spoken to over a real link.

mod support;

use common::cluster::ClusterMap;
use common::link::{Append, Attach, KvGet, KvReq, KvSpace, kv_req, link_down, link_up};
use common::proto::Code;
use support::{Link, PATIENCE, SECRET, envelope};

/// A two-island map under `epoch`: island-1 owns fragments [0, split-1].
fn map(epoch: u64, split: u32) -> ClusterMap {
    let mut m = ClusterMap::single("127.0.0.1:1".parse().unwrap(), "localhost", [7; 16]);
    m.epoch = epoch;
    m.islands[0].fragments = [0, split - 1];
    let mut second = m.islands[0].clone();
    second.name = "island-2".into();
    second.primary = "127.0.0.1:2".parse().unwrap();
    second.fragments = [split, 255];
    m.islands.push(second);
    m
}

fn user_of(m: &ClusterMap, island: &str) -> String {
    (0..)
        .map(|i| format!("user{i}"))
        .find(|u| m.home(u).name == island)
        .unwrap()
}

fn append(req: u64, to: &str, epoch: u64) -> link_up::Kind {
    link_up::Kind::Append(Append {
        req,
        to: to.into(),
        envelope: Some(envelope(
            "sender",
            bytes::Bytes::from(vec![req as u8; 16]),
            bytes::Bytes::from_static(b"hi"),
        )),
        epoch,
        handoff: false,
        from_generation: 0,
    })
}

async fn code_of(link: &mut Link) -> u32 {
    match link.recv().await.expect("an answer") {
        link_down::Kind::AppendResult(r) => r.code,
        link_down::Kind::Kick(k) => k.code,
        link_down::Kind::KvResult(r) => r.code,
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn a_store_refuses_users_it_does_not_own_and_other_epochs_until_the_map_moves() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    support::write_files(d);
    let m1 = map(1, 128);
    std::fs::write(d.join("cluster.toml"), m1.to_toml()).unwrap();
    let cfg = d.join("store.toml");
    // This node is island-1 (a map of two islands needs it named).
    let text = support::config_toml(d, "127.0.0.1:0", "sled")
        .replace("[cluster]\n", "[cluster]\nisland = \"island-1\"\n");
    std::fs::write(&cfg, text).unwrap();
    let (mut child, addr) = support::spawn_store(&cfg).await;

    let mut link = Link::open(addr, d, &SECRET).await;
    assert!(matches!(
        link.recv().await,
        Some(link_down::Kind::AuthOk(ok)) if ok.epoch == 1
    ));
    let mine = user_of(&m1, "island-1");
    let theirs = user_of(&m1, "island-2");

    link.send(append(1, &mine, 1)).await;
    assert_eq!(code_of(&mut link).await, 0, "its own user, its epoch");
    link.send(append(2, &theirs, 1)).await;
    assert_eq!(code_of(&mut link).await, Code::WrongHome as u32);
    for (req, epoch) in [(3, 0), (4, 2)] {
        link.send(append(req, &mine, epoch)).await;
        assert_eq!(
            code_of(&mut link).await,
            Code::StaleEpoch as u32,
            "epoch {epoch} against the store's 1"
        );
    }
    link.send(link_up::Kind::Attach(Attach {
        session: 7,
        user: theirs.clone(),
        device: 1,
        generation: 1,
        epoch: 1,
    }))
    .await;
    assert_eq!(code_of(&mut link).await, Code::WrongHome as u32);
    link.send(link_up::Kind::Kv(KvReq {
        req: 5,
        space: KvSpace::Account as i32,
        key: theirs.clone(),
        op: Some(kv_req::Op::Get(KvGet {})),
        epoch: 1,
        handoff: false,
    }))
    .await;
    assert_eq!(code_of(&mut link).await, Code::WrongHome as u32);

    // `mine` is online here; then the map gives every fragment to island-2
    // under epoch 2. After SIGHUP the session is closed with WRONG_HOME, and
    // the store refuses `mine` under both epochs.
    link.send(link_up::Kind::Attach(Attach {
        session: 8,
        user: mine.clone(),
        device: 1,
        generation: 1,
        epoch: 1,
    }))
    .await;
    assert!(matches!(link.recv().await, Some(link_down::Kind::Attached(a)) if a.session == 8));
    assert!(matches!(link.recv().await, Some(link_down::Kind::Push(p)) if p.session == 8));
    let mut m2 = map(2, 1);
    m2.islands[0].fragments = [0, 0];
    let f0 = (0..)
        .map(|i| format!("user{i}"))
        .find(|u| m2.fragment(u) != 0 && m1.home(u).name == "island-1")
        .unwrap();
    std::fs::write(d.join("cluster.toml"), m2.to_toml()).unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    let kicked = code_of(&mut link).await;
    assert_eq!(
        kicked,
        Code::WrongHome as u32,
        "the moved session is closed"
    );
    link.send(append(6, &f0, 2)).await;
    assert_eq!(code_of(&mut link).await, Code::WrongHome as u32);
    link.send(append(7, &f0, 1)).await;
    assert_eq!(code_of(&mut link).await, Code::StaleEpoch as u32);

    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let st = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        st.success(),
        "SIGHUP did not end the store, SIGTERM did: {st}"
    );
}
