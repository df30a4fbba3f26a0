//! The `wa-chat` process as an operator meets it: the admin listener (token
//! refused when missing or wrong, metrics that parse and follow real
//! connections, not ready without a home), SIGHUP (a new TLS certificate for
//! new connections, never an exit), systemd notifications with the
//! watchdog, and log lines for journald and for log shippers.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use common::admin::client::request;
use common::service::notify::NotifyListener;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

mod support;

use support::{TOKEN, deployment};

/// A bound on failure, never a readiness check.
const PATIENCE: Duration = Duration::from_secs(30);

struct Edge {
    child: Child,
    tcp: SocketAddr,
    admin: SocketAddr,
}

/// Starts wa-chat on `cfg` with `env`, and waits for its READY line.
async fn start(cfg: &Path, env: &[(&str, &str)], args: &[&str]) -> Edge {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wa-chat"))
        .arg("--config")
        .arg(cfg)
        .args(args)
        .envs(env.iter().copied())
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(PATIENCE, lines.next_line())
        .await
        .expect("READY within patience")
        .unwrap()
        .expect("a READY line");
    let field = |k: &str| -> SocketAddr {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .unwrap_or_else(|| panic!("{k} in {line}"))
            .parse()
            .unwrap()
    };
    Edge {
        tcp: field("tcp="),
        admin: field("admin="),
        child,
    }
}

fn signal(child: &Child, sig: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(child.id().expect("running") as i32);
    nix::sys::signal::kill(pid, sig).unwrap();
}

async fn exits_zero(child: &mut Child) {
    let st = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .expect("exit within patience")
        .unwrap();
    assert!(st.success(), "wa-chat exited with {st}");
}

async fn metrics(admin: SocketAddr) -> prometheus_parse::Scrape {
    let a = request(admin, http::Method::GET, "/metrics", Some(TOKEN.as_bytes()))
        .await
        .unwrap();
    assert_eq!(a.status, 200, "{}", a.text());
    prometheus_parse::Scrape::parse(a.text().lines().map(|l| Ok(l.to_owned())))
        .expect("/metrics is Prometheus text")
}

fn tcp_connections(s: &prometheus_parse::Scrape) -> f64 {
    s.samples
        .iter()
        .find(|x| x.metric == "wa_chat_connections" && x.labels.get("transport") == Some("tcp"))
        .map(|x| match x.value {
            prometheus_parse::Value::Gauge(v) => v,
            ref v => panic!("wa_chat_connections is {v:?}"),
        })
        .expect("wa_chat_connections{transport=\"tcp\"}")
}

/// Waits until the tcp connection gauge reads `n` (connections open and
/// close asynchronously in the edge).
async fn gauge_reaches(admin: SocketAddr, n: f64) {
    tokio::time::timeout(PATIENCE, async {
        loop {
            if tcp_connections(&metrics(admin).await) == n {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the connection gauge never read {n}"));
}

/// A TLS client trusting every CA of `dirs`.
fn connector(dirs: &[&Path]) -> tokio_rustls::TlsConnector {
    let mut roots = Vec::new();
    for d in dirs {
        roots.extend(common::tls::load_certs(&d.join("ca.pem")).unwrap());
    }
    let cfg = common::tls::client_config(&roots, &[common::proto::limits::ALPN]).unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn connect(c: &tokio_rustls::TlsConnector, addr: SocketAddr) -> Tls {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    c.connect(name, tcp).await.unwrap()
}

fn peer_cert(t: &Tls) -> Vec<u8> {
    t.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_needs_the_token_and_metrics_follow_real_connections() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = deployment(dir.path());
    let mut edge = start(&cfg, &[], &[]).await;
    assert!(edge.admin.ip().is_loopback());

    let health = request(edge.admin, http::Method::GET, "/healthz", None)
        .await
        .unwrap();
    assert_eq!(health.status, 200);
    // Its store is not running: up, but not ready (first "starting" until
    // the edge's state exists, then for want of a home).
    let ready = tokio::time::timeout(PATIENCE, async {
        loop {
            let r = request(edge.admin, http::Method::GET, "/readyz", None)
                .await
                .unwrap();
            assert_eq!(r.status, 503, "{}", r.text());
            if r.text().trim() != "starting" {
                return r;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the edge leaves \"starting\"");
    assert!(
        ready.text().contains("no home reachable"),
        "{}",
        ready.text()
    );
    for path in ["/metrics", "/admin/status", "/admin/sessions?user=a"] {
        let none = request(edge.admin, http::Method::GET, path, None)
            .await
            .unwrap();
        assert_eq!(none.status, 401, "{path} without a token");
        let wrong = request(
            edge.admin,
            http::Method::GET,
            path,
            Some(b"not-the-token-at-all"),
        )
        .await
        .unwrap();
        assert_eq!(wrong.status, 403, "{path} with a wrong token");
    }
    let status = common::admin::client::get_json(edge.admin, "/admin/status", TOKEN.as_bytes())
        .await
        .unwrap();
    assert_eq!(status["service"], "wa-chat");
    assert_eq!(status["ready"], false);

    let s = metrics(edge.admin).await;
    assert_eq!(tcp_connections(&s), 0.0);
    let link_up = s
        .samples
        .iter()
        .find(|x| x.metric == "wa_chat_link_up")
        .expect("wa_chat_link_up");
    assert!(
        matches!(link_up.value, prometheus_parse::Value::Gauge(v) if v == 0.0),
        "the store is not running: {link_up:?}"
    );
    for name in [
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "wa_chat_logins_total",
        "wa_chat_outbound_queue_max",
        "wa_chat_outbound_queues",
        "wa_ready",
    ] {
        assert!(s.samples.iter().any(|x| x.metric == name), "{name} missing");
    }
    let c = connector(&[dir.path()]);
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(connect(&c, edge.tcp).await);
    }
    gauge_reaches(edge.admin, 3.0).await;
    open.truncate(1);
    gauge_reaches(edge.admin, 1.0).await;
    drop(open);
    gauge_reaches(edge.admin, 0.0).await;

    signal(&edge.child, nix::sys::signal::Signal::SIGTERM);
    exits_zero(&mut edge.child).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_serves_a_new_certificate_and_never_exits_then_sigterm_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = deployment(dir.path());
    let sock = dir.path().join("notify.sock");
    let notify = NotifyListener::bind(&sock).unwrap();
    let mut edge = start(
        &cfg,
        &[
            ("NOTIFY_SOCKET", sock.to_str().unwrap()),
            ("WATCHDOG_USEC", "200000"),
        ],
        &[],
    )
    .await;
    let got = tokio::time::timeout(PATIENCE, notify.until("READY=1"))
        .await
        .unwrap()
        .unwrap();
    assert!(got.concat().contains("STATUS=serving"), "{got:?}");
    tokio::time::timeout(PATIENCE, notify.until("WATCHDOG=1"))
        .await
        .expect("the watchdog is petted when WATCHDOG_USEC is set")
        .unwrap();

    let old = dir.path().join("old");
    std::fs::create_dir(&old).unwrap();
    for f in ["ca.pem", "cert.pem"] {
        std::fs::copy(dir.path().join(f), old.join(f)).unwrap();
    }
    let c = connector(&[dir.path()]);
    let first = connect(&c, edge.tcp).await;
    assert_eq!(
        peer_cert(&first),
        common::tls::load_certs(&old.join("cert.pem")).unwrap()[0].to_vec()
    );
    // A new certificate (and CA) in place of the old files.
    common::tls::DevPki::generate(&["localhost", "127.0.0.1"])
        .unwrap()
        .write_to(dir.path())
        .unwrap();
    let fresh = common::tls::load_certs(&dir.path().join("cert.pem")).unwrap()[0].to_vec();
    for _ in 0..2 {
        signal(&edge.child, nix::sys::signal::Signal::SIGHUP);
        let got = tokio::time::timeout(PATIENCE, notify.until("READY=1"))
            .await
            .expect("READY=1 again after the reload")
            .unwrap();
        assert!(got.concat().contains("RELOADING=1"), "{got:?}");
        assert!(
            edge.child.try_wait().unwrap().is_none(),
            "SIGHUP ended wa-chat"
        );
        let both = connector(&[dir.path(), &old]);
        let second = connect(&both, edge.tcp).await;
        assert_eq!(
            peer_cert(&second),
            fresh,
            "new connections see the new certificate"
        );
    }
    assert_eq!(
        peer_cert(&first),
        common::tls::load_certs(&old.join("cert.pem")).unwrap()[0].to_vec()
    );
    drop(first);

    signal(&edge.child, nix::sys::signal::Signal::SIGTERM);
    tokio::time::timeout(PATIENCE, notify.until("STOPPING=1"))
        .await
        .unwrap()
        .unwrap();
    exits_zero(&mut edge.child).await;
}

/// Runs wa-chat to its READY line and a SIGTERM, returning its stderr.
async fn log_of(env: &[(&str, &str)], args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let cfg = deployment(dir.path());
    let mut edge = start(&cfg, env, args).await;
    signal(&edge.child, nix::sys::signal::Signal::SIGTERM);
    let mut err = String::new();
    let mut stderr = edge.child.stderr.take().unwrap();
    tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut err)
        .await
        .unwrap();
    exits_zero(&mut edge.child).await;
    assert!(!err.is_empty(), "wa-chat logged nothing");
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_journald_lines_carry_priorities_and_no_colours_or_times() {
    // FORCE_COLOR and a terminal-like TERM would not matter either: the
    // journal's format never colours.
    let err = log_of(
        &[("JOURNAL_STREAM", "8:12345"), ("TERM", "xterm-256color")],
        &[],
    )
    .await;
    assert!(!err.contains('\x1b'), "ANSI codes under journald:\n{err}");
    for line in err.lines() {
        let p = line
            .strip_prefix('<')
            .and_then(|r| r.split_once('>'))
            .map(|(p, _)| p)
            .unwrap_or_else(|| panic!("no <priority> prefix: {line:?}"));
        assert!(["3", "4", "6", "7"].contains(&p), "{line:?}");
        assert!(
            !line[3..].starts_with("20"),
            "a timestamp under journald: {line:?}"
        );
    }
    assert!(err.contains("<6>"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_lines_parse_as_json() {
    let err = log_of(&[], &["--log-format", "json"]).await;
    for line in err.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
    }
}
