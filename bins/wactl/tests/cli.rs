//! wactl as a process: help for every subcommand, keys and tokens that the
//! edges' key ring accepts, man pages, usage errors.

use std::path::Path;
use std::process::{Command, Output};

const WACTL: &str = env!("CARGO_BIN_EXE_wactl");
const SUBCOMMANDS: [&str; 9] = [
    "keygen", "token", "up", "send", "group", "watch", "register", "code", "man",
];

fn wactl(args: &[&str]) -> Output {
    Command::new(WACTL).args(args).output().expect("wactl runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[test]
fn help_for_wactl_and_every_subcommand() {
    let top = wactl(&["--help"]);
    assert!(top.status.success());
    for sub in SUBCOMMANDS {
        assert!(stdout(&top).contains(sub), "top-level help lists {sub}");
        let o = wactl(&[sub, "--help"]);
        assert!(o.status.success(), "wactl {sub} --help: {o:?}");
        let text = stdout(&o);
        assert!(text.contains(&format!("Usage: wactl {sub}")), "{text}");
        assert!(
            text.contains("Options:") && text.lines().count() > 5,
            "wactl {sub} --help explains itself:\n{text}"
        );
    }
}

#[test]
fn usage_errors_exit_64() {
    for args in [
        &["bogus"][..],
        &["token", "--user", "alice"],
        &["send", "--tcp", "--quic", "--from", "a", "--to", "b", "x"],
        &[
            "token", "--key", "k.pem", "--user", "alice", "--ttl", "forever",
        ],
    ] {
        let o = wactl(args);
        assert_eq!(o.status.code(), Some(64), "wactl {args:?}: {o:?}");
    }
}

fn keygen(dir: &Path) {
    let o = wactl(&["keygen", "--out", dir.to_str().unwrap(), "--id", "k7"]);
    assert!(o.status.success(), "{o:?}");
}

#[test]
fn keygen_then_token_verifies_with_the_public_key() {
    let dir = tempfile::tempdir().unwrap();
    keygen(dir.path());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("k7.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the signing key is private");
    }
    let key = dir.path().join("k7.pem");
    let o = wactl(&[
        "token",
        "--key",
        key.to_str().unwrap(),
        "--key-id",
        "k7",
        "--user",
        "alice",
        "--device",
        "3",
        "--generation",
        "2",
        "--ttl",
        "2h",
    ]);
    assert!(o.status.success(), "{o:?}");
    let token = stdout(&o).trim().to_string();

    let public = common::token::keyfile::read_verifying(&dir.path().join("k7.pub")).unwrap();
    let mut ring = common::token::KeyRing::new();
    ring.insert("k7", public);
    let now = common::fsutil::now_ms() / 1000;
    let claims = ring.verify(&token, now).expect("the minted token verifies");
    assert_eq!(
        (claims.user.as_str(), claims.device, claims.generation),
        ("alice", 3, 2)
    );
    assert!(
        claims.expires_at > now + 7000 && claims.expires_at <= now + 7200 + 5,
        "{claims:?}"
    );
    assert!(
        ring.verify(&token, now + 7300).is_err(),
        "and expires after its ttl"
    );

    // A key ring with another key under the same id refuses it.
    let other = tempfile::tempdir().unwrap();
    keygen(other.path());
    let mut wrong = common::token::KeyRing::new();
    wrong.insert(
        "k7",
        common::token::keyfile::read_verifying(&other.path().join("k7.pub")).unwrap(),
    );
    assert!(wrong.verify(&token, now).is_err());
}

#[test]
fn keygen_refuses_to_overwrite_without_force() {
    let dir = tempfile::tempdir().unwrap();
    keygen(dir.path());
    let before = std::fs::read(dir.path().join("k7.pem")).unwrap();
    let o = wactl(&[
        "keygen",
        "--out",
        dir.path().to_str().unwrap(),
        "--id",
        "k7",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--force"));
    assert_eq!(std::fs::read(dir.path().join("k7.pem")).unwrap(), before);
    let o = wactl(&[
        "keygen",
        "--out",
        dir.path().to_str().unwrap(),
        "--id",
        "k7",
        "--force",
    ]);
    assert!(o.status.success());
    assert_ne!(std::fs::read(dir.path().join("k7.pem")).unwrap(), before);
}

#[test]
fn token_refuses_bad_users_and_missing_keys() {
    let dir = tempfile::tempdir().unwrap();
    keygen(dir.path());
    let key = dir.path().join("k7.pem");
    let o = wactl(&[
        "token",
        "--key",
        key.to_str().unwrap(),
        "--user",
        "not a user",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a valid user id"));
    let o = wactl(&["token", "--key", "/nonexistent/k.pem", "--user", "alice"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/k.pem"));
}

#[test]
fn man_pages_for_every_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let o = wactl(&["man", "--out", dir.path().to_str().unwrap()]);
    assert!(o.status.success(), "{o:?}");
    let top = std::fs::read_to_string(dir.path().join("wactl.1")).unwrap();
    assert!(top.starts_with(".ie") || top.contains(".TH wactl"), "{top}");
    for sub in SUBCOMMANDS {
        let page = std::fs::read_to_string(dir.path().join(format!("wactl-{sub}.1"))).unwrap();
        assert!(
            page.contains(&format!(".TH wactl-{sub}")),
            "wactl-{sub}.1:\n{page}"
        );
    }
}

#[test]
fn send_without_a_deployment_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let o = wactl(&[
        "send",
        "--dir",
        dir.path().to_str().unwrap(),
        "--from",
        "a",
        "--to",
        "b",
        "hi",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("wa-chat.toml") && err.contains("wactl up"),
        "{err}"
    );
}
