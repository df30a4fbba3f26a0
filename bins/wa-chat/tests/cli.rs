//! The `wa-chat` process: arguments, configuration errors and their exit
//! codes, the READY line, and a clean exit on SIGTERM.

use std::io::{BufRead, BufReader};

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod support;

use support::{chat, deployment};

#[test]
fn help_exits_zero_and_names_the_options() {
    let out = chat().arg("--help").output().unwrap();
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
    let out = chat().arg("--bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(64));

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let out = chat().arg("--config").arg(&missing).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.toml"));

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "name = \"x\"\n[limits]\nidle = \"1s\"\n").unwrap();
    let out = chat().arg("--config").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml") && err.contains("idle"), "{err}");

    // More QUIC endpoints than the edge opens: refused, naming the key.
    let many = dir.path().join("many.toml");
    std::fs::write(&many, "[quic]\nquic_endpoints = 1000\n").unwrap();
    let out = chat().arg("--config").arg(&many).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("quic.quic_endpoints: 1000 is more than 64"),
        "{err}"
    );

    // Parses, but every file it names is missing: all of them are reported.
    let files = dir.path().join("files.toml");
    std::fs::write(
        &files,
        format!("[cluster]\nmap = \"{}/m.toml\"\n", dir.path().display()),
    )
    .unwrap();
    let out = chat()
        .arg("--config")
        .arg(&files)
        .arg("--check-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    for key in [
        "tls.cert",
        "tls.key",
        "tokens.keys",
        "cluster.map",
        "cluster.ca",
        "cluster.secret_file",
    ] {
        assert!(err.contains(key), "{key} missing from {err}");
    }
}

#[test]
fn check_config_accepts_a_complete_deployment() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = deployment(dir.path());
    let out = chat()
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

    // The cluster secret as a packaged install has it (root:wa-cluster
    // 0640) is taken; one others may read is refused, naming the fix.
    use std::os::unix::fs::PermissionsExt;
    let secret = dir.path().join("cluster.secret");
    let check = |mode: u32| {
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(mode)).unwrap();
        chat()
            .arg("--config")
            .arg(&cfg)
            .arg("--check-config")
            .output()
            .unwrap()
    };
    let out = check(0o640);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = check(0o644);
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cluster.secret_file") && err.contains("chmod 640"),
        "{err}"
    );
}

#[test]
fn ready_line_then_sigterm_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = deployment(dir.path());
    let mut child = chat()
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
    assert_eq!(&fields[..2], ["READY", "wa-chat"], "{line:?}");
    for (field, key) in fields[2..].iter().zip(["tcp=", "quic="]) {
        let addr = field
            .strip_prefix(key)
            .unwrap_or_else(|| panic!("{key} in {line:?}"));
        let addr: std::net::SocketAddr = addr.parse().unwrap();
        assert_ne!(addr.port(), 0, "the bound port is reported");
    }
    // The TCP listener really is bound.
    let tcp = fields[2].strip_prefix("tcp=").unwrap();
    std::net::TcpStream::connect(tcp).unwrap();

    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let started = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            assert!(st.success(), "wa-chat exited with {st}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no exit within 10 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Started with a soft open-files limit of 512 under a hard limit of 2048
/// (lowered in that order: a hard limit below the soft one is refused), and the default `max_connections` (100000), wa-chat raises its soft
/// limit to the hard one (common::rlimit) and warns that the connections do
/// not fit.
#[cfg(target_os = "linux")]
#[test]
fn raises_the_open_files_limit_and_warns_when_connections_do_not_fit() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = deployment(dir.path());
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(r#"ulimit -S -n 512 && ulimit -H -n 2048 && exec "$0" --config "$1""#)
        .arg(env!("CARGO_BIN_EXE_wa-chat"))
        .arg(&cfg)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("READY wa-chat"), "{line:?}");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let open_files: Vec<&str> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .collect();
    // "Max open files <soft> <hard> files"
    let (soft, hard) = (open_files[3], open_files[4]);
    assert_eq!((soft, hard), ("2048", "2048"), "{limits}");

    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "wa-chat exited with {}", out.status);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("open-files limit is below the configured connection limit")
            && err.contains("max_connections=100000"),
        "{err}"
    );
}
