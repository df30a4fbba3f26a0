//! Code requests from many addresses of one network (issue "Revocation that
//! holds everywhere...", finding 4): every address of an IPv6 /64 shares one
//! per-address budget, and the /48 around it is a second tier, against the
//! real service over real sockets from real source addresses. The test adds
//! addresses of the documentation prefix (2001:db8::/32) to `lo` and takes
//! them away again; it needs root, as CI has.

mod support;

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::process::Command;

use support::{Deployment, start_register_bound};

/// Addresses added to `lo` while it lives.
struct OnLoopback(Vec<Ipv6Addr>);

impl OnLoopback {
    fn add(addrs: &[Ipv6Addr]) -> OnLoopback {
        let mut added = OnLoopback(Vec::new());
        for a in addrs {
            let out = Command::new("ip")
                .args(["-6", "addr", "add", &format!("{a}/128"), "dev", "lo"])
                .output()
                .expect("run ip (iproute2)");
            assert!(
                out.status.success(),
                "ip -6 addr add {a} dev lo (needs root): {}",
                String::from_utf8_lossy(&out.stderr)
            );
            added.0.push(*a);
        }
        added
    }
}

impl Drop for OnLoopback {
    fn drop(&mut self) {
        for a in &self.0 {
            let _ = Command::new("ip")
                .args(["-6", "addr", "del", &format!("{a}/128"), "dev", "lo"])
                .output();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv6_64_shares_one_budget_and_its_48_is_a_second_tier() {
    // Per process, so that tests running at once never share addresses.
    let tag = (std::process::id() & 0xffff) as u16;
    let a1: Ipv6Addr = format!("2001:db8:{tag:x}:1::a").parse().unwrap();
    let a2: Ipv6Addr = format!("2001:db8:{tag:x}:1::b").parse().unwrap();
    let b1: Ipv6Addr = format!("2001:db8:{tag:x}:2::a").parse().unwrap();
    let c1: Ipv6Addr = format!("2001:db8:{:x}:1::a", tag ^ 0x8000).parse().unwrap();
    let _lo = OnLoopback::add(&[a1, a2, b1, c1]);

    let d = Deployment::start().await;
    let text = d.register_toml(
        "[limits]\nper_address = { count = 2, per = \"1h\" }\n\
         per_network = { count = 4, per = \"1h\" }\n",
    );
    let (node, _app) = start_register_bound(
        d.dir.path(),
        text,
        SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
    )
    .await;
    let at = SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), node.addr.port());
    let from = |a: Ipv6Addr| {
        let mut cfg = common::client::RegisterConfig::new(at, "localhost".into(), d.roots.clone());
        cfg.local_addr = Some(IpAddr::V6(a));
        common::client::RegisterClient::new(cfg).unwrap()
    };
    // Each number under a prefix of its own, so that only the address
    // limits can refuse.
    let mut n = 0;
    let mut number = || {
        n += 1;
        format!("+1555{:03}{n:04}", 100 + n)
    };
    let refused_by =
        |r: Result<common::client::register::CodeSent, common::client::RegisterError>| match r {
            Ok(_) => None,
            Err(common::client::RegisterError::Refused {
                status: 429,
                message,
                ..
            }) => Some(message),
            Err(e) => panic!("unexpected {e}"),
        };

    // a1 spends the /64's budget of two.
    for _ in 0..2 {
        assert_eq!(refused_by(from(a1).request_code(&number()).await), None);
    }
    // a2 is another address of the same /64: the same budget, spent.
    let m = refused_by(from(a2).request_code(&number()).await).expect("a2 refused");
    assert!(m.contains("address"), "{m}");
    // b1 is in another /64 of the same /48: its own address budget, but the
    // /48 allows four, and three are spent (the broad limits are asked
    // first, so a2's refused request counted there too).
    assert_eq!(refused_by(from(b1).request_code(&number()).await), None);
    let m = refused_by(from(b1).request_code(&number()).await).expect("b1 refused");
    assert!(m.contains("network"), "{m}");
    // c1 is in another /48: untouched.
    assert_eq!(refused_by(from(c1).request_code(&number()).await), None);
    assert_eq!(node.codes_sent(), 4, "no SMS for a refused request");
    node.service.stop().await;
    d.stop().await;
}
