//! wa-register as a process: help, usage errors and `--check-config`, each
//! with its documented exit code (0 ok, 64 usage or configuration).

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_wa-register");

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("wa-register runs")
}

/// Every file a config needs, in `dir`; returns the config text.
fn files(dir: &Path) -> String {
    common::tls::DevPki::generate(&["localhost"])
        .unwrap()
        .write_to(dir)
        .unwrap();
    let map =
        common::cluster::ClusterMap::single("127.0.0.1:1".parse().unwrap(), "localhost", [7; 16]);
    std::fs::write(dir.join("cluster.toml"), map.to_toml()).unwrap();
    common::fsutil::write_private(&dir.join("secret"), &[1; 32]).unwrap();
    common::fsutil::write_private(&dir.join("pepper"), &[2; 32]).unwrap();
    let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
    common::fsutil::write_private(
        &dir.join("k1.key"),
        common::token::keyfile::signing_pem(&key).as_bytes(),
    )
    .unwrap();
    let d = dir.display();
    format!(
        r#"mode = "development"
[listen]
https = "127.0.0.1:0"
[tls]
cert = "{d}/cert.pem"
key = "{d}/key.pem"
[cluster]
map = "{d}/cluster.toml"
ca = "{d}/ca.pem"
secret_file = "{d}/secret"
[tokens]
signing_key = "{d}/k1.key"
[pin]
pepper_file = "{d}/pepper"
[sms]
provider = "log"
[sms.log]
file = "{d}/codes.log"
"#
    )
}

#[test]
fn help_usage_and_check_config() {
    assert!(run(&["--help"]).status.success());
    assert_eq!(run(&["--bogus"]).status.code(), Some(64));

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("wa-register.toml");
    std::fs::write(&cfg, files(dir.path())).unwrap();
    let c = cfg.to_str().unwrap();
    let o = run(&["--config", c, "--check-config"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // The log provider in production mode: refused by name.
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replace("mode = \"development\"", "mode = \"production\""),
    )
    .unwrap();
    let o = run(&["--config", c, "--check-config"]);
    assert_eq!(o.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&o.stderr).contains("sms.provider"));

    // A signing key others can read: refused by name.
    std::fs::write(&cfg, &text).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let key = dir.path().join("k1.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let o = run(&["--config", c, "--check-config"]);
        assert_eq!(o.status.code(), Some(64));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("tokens.signing_key") && err.contains("chmod"),
            "{err}"
        );
    }

    // Unknown keys and missing files.
    std::fs::write(&cfg, "bogus = 1\n").unwrap();
    assert_eq!(
        run(&["--config", c, "--check-config"]).status.code(),
        Some(64)
    );
    assert_eq!(
        run(&["--config", "/nonexistent/wa-register.toml"])
            .status
            .code(),
        Some(64)
    );
}
