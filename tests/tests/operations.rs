//! Operating the real binaries: every service's admin listener is on
//! loopback by default, `/readyz` turns not-ready while an edge drains, and
//! SIGHUP reloads every service without ending it, new connections seeing
//! the new certificate (then SIGTERM exits 0).

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;

use common::admin::client::request;
use support::{Deployment, PATIENCE, bin_dir, field, ready_line, sigterm};

#[test]
fn every_admin_listener_defaults_to_loopback() {
    for (service, addr) in [
        ("wa-chat", wa_chat::Config::default().admin.listen),
        ("wa-store", wa_store::Config::default().admin.listen),
        ("wa-media", wa_media::Config::default().admin.listen),
        ("wa-register", wa_register::Config::default().admin.listen),
    ] {
        assert!(addr.ip().is_loopback(), "{service} admin.listen = {addr}");
        assert_ne!(addr.port(), 0, "{service} has a fixed admin port");
    }
}

/// Answers of `/readyz` at `admin` until it says `want` (or the bound).
async fn readyz_until(admin: SocketAddr, want: u16) -> String {
    tokio::time::timeout(PATIENCE, async {
        loop {
            let a = request(admin, http::Method::GET, "/readyz", None)
                .await
                .expect("the admin listener answers while the service runs");
            if a.status == want {
                return a.text();
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("/readyz never answered {want}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_turns_not_ready_while_the_edge_drains() {
    let (d, mut chat) = Deployment::start_processes().await;
    let store_admin = d.store_process.as_ref().unwrap().admin;
    readyz_until(store_admin, 200).await;
    // The edge is ready once its link to the home is up.
    readyz_until(chat.admin, 200).await;

    // One message through the edge: counted in, and its Accepted timed.
    let (a, mut ea) = d.client("alice", common::client::Transport::Tcp).await;
    let id = a
        .send("bob", bytes::Bytes::from_static(b"hello"))
        .await
        .unwrap();
    support::expect(&mut ea, "Accepted", |e| match e {
        common::client::Event::Accepted { id: got, .. } if *got == id => Some(()),
        _ => None,
    })
    .await;
    let page = support::admin_get(d.dir.path(), chat.admin, "/metrics").await;
    let scrape = prometheus_parse::Scrape::parse(page.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let value = |name: &str| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name)
            .map(|s| s.value.clone())
            .unwrap_or_else(|| panic!("{name} missing"))
    };
    assert!(
        matches!(value("wa_chat_messages_in_total"), prometheus_parse::Value::Counter(v) if v == 1.0)
    );
    assert!(
        matches!(value("wa_chat_logins_total"), prometheus_parse::Value::Counter(v) if v == 1.0)
    );
    match value("wa_chat_accepted_latency_seconds") {
        prometheus_parse::Value::Histogram(buckets) => {
            let all = buckets.iter().map(|b| b.count).fold(0.0, f64::max);
            assert_eq!(all, 1.0, "one Accepted timed: {buckets:?}");
        }
        v => panic!("wa_chat_accepted_latency_seconds is {v:?}"),
    }
    drop(a);

    // A client that finished its handshake and then says nothing: at
    // shutdown the edge tells it Goodbye and gives it a moment to close,
    // so the drain lasts while this connection is open.
    let roots = common::tls::load_certs(&d.dir.path().join("pki/ca.pem")).unwrap();
    let cfg = common::tls::client_config(&roots, &[common::proto::limits::ALPN]).unwrap();
    let tcp = tokio::net::TcpStream::connect(chat.tcp).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let quiet = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .unwrap();

    sigterm(&chat.child);
    let why = readyz_until(chat.admin, 503).await;
    assert_eq!(why.trim(), "draining");
    drop(quiet);
    let st = tokio::time::timeout(PATIENCE, chat.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(st.success(), "wa-chat exited with {st}");
    d.stop().await;
}

/// The certificate a TLS server at `addr` presents (any CA of `cas`).
async fn served_cert(addr: SocketAddr, cas: &[&Path], alpn: &[u8]) -> Vec<u8> {
    let mut roots = Vec::new();
    for ca in cas {
        roots.extend(common::tls::load_certs(ca).unwrap());
    }
    let cfg = common::tls::client_config(&roots, &[alpn]).unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// Starts `name` on the config `text` with a notify socket of our own and
/// its served certificate in a directory of its own, waits for READY=1;
/// then, twice: a new certificate on disk, SIGHUP (answered with
/// RELOADING=1 and READY=1 again, counted in `wa_reloads_total`), and new
/// connections to the READY line's `tls_field` see the new certificate.
/// Then SIGTERM: exit 0.
async fn sighup_keeps_running(dir: &Path, name: &str, text: &str, tls_field: &str, alpn: &[u8]) {
    use common::service::notify::NotifyListener;
    let own = dir.join(format!("{name}-pki"));
    std::fs::create_dir_all(&own).unwrap();
    for f in ["cert.pem", "key.pem"] {
        std::fs::copy(dir.join("pki").join(f), own.join(f)).unwrap();
    }
    let d = dir.display();
    let o = own.display();
    let text = text
        .replace(&format!("{d}/pki/cert.pem"), &format!("{o}/cert.pem"))
        .replace(&format!("{d}/pki/key.pem"), &format!("{o}/key.pem"));
    let cfg = dir.join(format!("{name}-hup.toml"));
    std::fs::write(&cfg, text).unwrap();
    let sock = dir.join(format!("{name}.notify"));
    let notify = NotifyListener::bind(&sock).unwrap();
    let mut child = tokio::process::Command::new(bin_dir().join(name))
        .arg("--config")
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &sock)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let line = ready_line(&mut child, name).await;
    let admin: SocketAddr = field(&line, "admin").parse().unwrap();
    let served: SocketAddr = field(&line, tls_field).parse().unwrap();
    tokio::time::timeout(PATIENCE, notify.until("READY=1"))
        .await
        .unwrap()
        .unwrap();
    let ca = dir.join("pki/ca.pem");
    for n in 1..=2 {
        let fresh = own.join(format!("fresh-{n}"));
        std::fs::create_dir_all(&fresh).unwrap();
        common::tls::DevPki::generate(&["localhost", "127.0.0.1"])
            .unwrap()
            .write_to(&fresh)
            .unwrap();
        for f in ["cert.pem", "key.pem"] {
            std::fs::copy(fresh.join(f), own.join(f)).unwrap();
        }
        let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
        let got = tokio::time::timeout(PATIENCE, notify.until("READY=1"))
            .await
            .unwrap_or_else(|_| panic!("{name} did not say READY=1 after SIGHUP"))
            .unwrap();
        assert!(got.concat().contains("RELOADING=1"), "{name}: {got:?}");
        assert!(child.try_wait().unwrap().is_none(), "SIGHUP ended {name}");
        let page = support::admin_get(dir, admin, "/metrics").await;
        assert_eq!(support::counter(&page, "wa_reloads_total"), n, "{name}");
        let want = common::tls::load_certs(&fresh.join("cert.pem")).unwrap()[0].to_vec();
        let cas = [ca.as_path(), &fresh.join("ca.pem")];
        assert_eq!(
            served_cert(served, &cas, alpn).await,
            want,
            "{name}: new connections see the new certificate"
        );
    }
    sigterm(&child);
    let st = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(st.success(), "{name} exited with {st} after SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_every_service_and_sigterm_still_exits_zero() {
    let d = Deployment::start().await;
    let dir = d.dir.path();
    let store = support::store_toml(dir, "127.0.0.1:0".parse().unwrap());
    // A second store of the same map would fight over nothing: it has a
    // data directory of its own.
    let store = store.replace(
        &format!("{}/store\"", dir.display()),
        &format!("{}/store-hup\"", dir.display()),
    );
    let wa = common::proto::limits::ALPN;
    let link = common::link::LINK_ALPN;
    sighup_keeps_running(dir, "wa-store", &store, "link", link).await;
    sighup_keeps_running(dir, "wa-chat", &support::chat_toml(dir), "tcp", wa).await;
    sighup_keeps_running(dir, "wa-media", &d.media_toml(), "http", b"http/1.1").await;
    sighup_keeps_running(
        dir,
        "wa-register",
        &d.register_toml(""),
        "http",
        b"http/1.1",
    )
    .await;
    d.stop().await;
}

/// Every key docs/OPERATIONS.md documents for a service is a key of that
/// service's shipped sample (which its tests prove equal to the defaults),
/// so the page cannot list a key the service refuses.
#[test]
fn documented_config_keys_exist() {
    let doc = include_str!("../../docs/OPERATIONS.md");
    for (service, sample) in [
        (
            "wa-store",
            include_str!("../../packaging/etc/wa-store.toml"),
        ),
        ("wa-chat", include_str!("../../packaging/etc/wa-chat.toml")),
    ] {
        let sample_text = sample;
        let sample: toml::Table = toml::from_str(sample).unwrap();
        let heading = format!("### `/etc/wa/{service}.toml`");
        let table = doc
            .split(&heading)
            .nth(1)
            .unwrap_or_else(|| panic!("{heading} missing"))
            .split("\n#")
            .next()
            .unwrap();
        let mut checked = 0;
        for row in table.lines().filter(|l| l.starts_with("| `")) {
            let first = row.split('|').nth(1).unwrap();
            let spans: Vec<&str> = first.split('`').skip(1).step_by(2).collect();
            let (section, first_key) = match spans[0].strip_prefix('[') {
                Some(rest) => {
                    let (s, k) = rest.split_once("] ").unwrap();
                    (Some(s), k)
                }
                None => (None, spans[0]),
            };
            for key in std::iter::once(first_key).chain(spans[1..].iter().copied()) {
                // (An optional key without a default is in the sample as a
                // comment, `# key = ...`, in its section.)
                let commented = |section: &str| {
                    sample_text
                        .split(&format!("[{section}]"))
                        .nth(1)
                        .and_then(|rest| rest.split("\n[").next())
                        .is_some_and(|body| body.contains(&format!("# {key} = ")))
                };
                let found = match section {
                    // (A dotted section, `[push.apns]`, is a nested table.)
                    Some(s) => {
                        s.split('.')
                            .try_fold(&sample, |t, part| t.get(part)?.as_table())
                            .is_some_and(|t| t.contains_key(key))
                            || commented(s)
                    }
                    None => sample.contains_key(key),
                };
                assert!(
                    found,
                    "{service}: OPERATIONS.md documents {section:?} {key}, which the service does not have"
                );
                checked += 1;
            }
        }
        assert!(checked > 10, "{service}: only {checked} keys found");
    }
}

/// `wactl expire --now`: an undelivered message older than `[mailbox]
/// expire_after` is deleted at once (not at the next sweep, an hour away),
/// and its recipient never gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wactl_expire_now_deletes_what_is_past_its_age_at_once() {
    let extra = "[mailbox]\nexpire_after = \"1s\"\nsweep_interval = \"1h\"\n[cache]\nsync_delay = \"100ms\"\n";
    let (d, chat) = Deployment::start_processes_configured(extra, "").await;
    let dir = d.dir.path();
    let store = d.store_process.as_ref().unwrap().admin;
    std::fs::write(
        dir.join("wactl.toml"),
        format!(
            "token_file = \"{}\"\n[[node]]\nname = \"store-1\"\nservice = \"wa-store\"\nadmin = \"{store}\"\n",
            dir.join("admin.token").display()
        ),
    )
    .unwrap();
    let expire = || async {
        let out = tokio::process::Command::new(bin_dir().join("wactl"))
            .args(["expire", "--now", "--output", "json", "--dir"])
            .arg(dir)
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(doc["stores"][0]["node"], "store-1", "{doc}");
        doc["stores"][0]["expired"].as_u64().expect("a count")
    };
    assert_eq!(expire().await, 0, "nothing to expire yet");

    let (a, mut ea) = d.client("alice", common::client::Transport::Tcp).await;
    let id = a
        .send("bob", bytes::Bytes::from_static(b"too late"))
        .await
        .unwrap();
    support::expect(&mut ea, "Accepted", |e| match e {
        common::client::Event::Accepted { id: got, .. } if *got == id => Some(()),
        _ => None,
    })
    .await;
    // Past its age (1 s) and written back to the engine (100 ms): the next
    // sweep asked for takes it. (Asked again until then, within patience.)
    let t = std::time::Instant::now();
    let mut expired = 0;
    while expired == 0 {
        assert!(t.elapsed() < PATIENCE, "the message never expired");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        expired = expire().await;
    }
    assert_eq!(expired, 1);
    println!("expired {:?} after it was accepted", t.elapsed());
    let (b, mut eb) = d.client("bob", common::client::Transport::Tcp).await;
    let got = tokio::time::timeout(std::time::Duration::from_millis(500), async {
        loop {
            if let Some(common::client::Event::Message { id, .. }) = eb.next().await {
                return id;
            }
        }
    })
    .await;
    assert!(got.is_err(), "bob got the expired message: {got:?}");
    a.close().await;
    b.close().await;
    drop(chat);
    d.stop().await;
}
