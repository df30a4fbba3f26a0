//! The `wa-media` process: arguments, configuration errors and their exit
//! codes, the READY line, serving, and a clean exit on SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The public key of the token test vector in docs/PROTOCOL.md, SPKI PEM.
const PUBLIC_KEY: &str = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAiojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w=\n-----END PUBLIC KEY-----\n";

fn media() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wa-media"))
}

fn deployment(dir: &Path) -> std::path::PathBuf {
    let pki = common::tls::DevPki::generate(&["localhost", "127.0.0.1"]).unwrap();
    pki.write_to(dir).unwrap();
    std::fs::write(dir.join("k1.pub"), PUBLIC_KEY).unwrap();
    let d = dir.display();
    let cfg = dir.join("wa-media.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"node = "m-test"
data_dir = "{d}/data"
[listen]
https = "127.0.0.1:0"
[tls]
cert = "{d}/cert.pem"
key = "{d}/key.pem"
[tokens]
keys = [{{ id = "k1", public_key = "{d}/k1.pub" }}]
[shutdown]
grace = "2s"
[revocation]
# (No homes in this test: tokens are trusted until they expire.)
check = false
[admin]
listen = "127.0.0.1:0"
token_file = "{d}/admin.token"
"#
        ),
    )
    .unwrap();
    cfg
}

#[test]
fn help_exits_zero_and_names_the_options() {
    let out = media().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in ["--config", "--check-config", "Exit codes"] {
        assert!(
            text.contains(needle),
            "{needle} missing from --help:\n{text}"
        );
    }
}

#[test]
fn usage_and_config_errors_exit_64_naming_the_problem() {
    let out = media().arg("--bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(64));

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let out = media().arg("--config").arg(&missing).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.toml"));

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[limits]\nmax_size = 1\n").unwrap();
    let out = media().arg("--config").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("max_size"),
        "{err}"
    );

    let files = dir.path().join("files.toml");
    std::fs::write(
        &files,
        format!("data_dir = \"{}/d\"\n", dir.path().display()),
    )
    .unwrap();
    let out = media()
        .arg("--config")
        .arg(&files)
        .arg("--check-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    for key in ["tls.cert", "tls.key", "tokens.keys"] {
        assert!(err.contains(key), "{key} missing from {err}");
    }
}

#[test]
fn check_config_accepts_a_complete_deployment() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = deployment(dir.path());
    let out = media()
        .arg("--config")
        .arg(&cfg)
        .arg("--check-config")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(": ok"));
}

#[test]
fn ready_line_then_sigterm_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = deployment(dir.path());
    let mut child = media()
        .arg("--config")
        .arg(&cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&fields[..2], ["READY", "wa-media"], "{line:?}");
    let addr: std::net::SocketAddr = fields[2]
        .strip_prefix("http=")
        .unwrap_or_else(|| panic!("http= in {line:?}"))
        .parse()
        .unwrap();
    assert_ne!(addr.port(), 0, "the bound port is reported");
    std::net::TcpStream::connect(addr).unwrap();

    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let started = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            assert!(st.success(), "wa-media exited with {st}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no exit within 10 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
