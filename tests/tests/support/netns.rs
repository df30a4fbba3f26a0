//! Many hosts on one machine: a network namespace (`ip netns`) joined to
//! the test's own namespace by veth pairs, so that a partition is a link
//! set down (packets to the far side vanish, as on a real network), not a
//! stopped process. Needs root and iproute2 (`.ci/run` runs as root and
//! installs iproute2); removed, with its links, when dropped.

use std::net::Ipv4Addr;
use std::process::Command;

/// A network namespace of this test process.
pub struct Netns {
    pub name: String,
    /// Second octet of this process's 10.x.0.0/16 (from the pid, so two
    /// test processes at once do not share addresses).
    octet: u8,
    links: u8,
}

/// One veth pair: `outside` in the test's namespace, `inside` in the
/// namespace, on a /24 of their own.
pub struct Veth {
    pub outside_dev: String,
    pub inside_dev: String,
    pub outside: Ipv4Addr,
    pub inside: Ipv4Addr,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("iproute2's `ip` is installed (.ci/run installs it)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Netns {
    /// Why namespaces cannot be made here, if they cannot (not root, no
    /// `ip`): tests print it and skip.
    pub fn unavailable() -> Option<String> {
        let uid = Command::new("id").arg("-u").output();
        if !uid.is_ok_and(|o| o.stdout.trim_ascii() == b"0") {
            return Some("network namespaces need root".into());
        }
        match Command::new("ip").args(["netns", "list"]).output() {
            Ok(o) if o.status.success() => None,
            Ok(o) => Some(format!(
                "`ip netns list` failed: {}",
                String::from_utf8_lossy(&o.stderr)
            )),
            Err(e) => Some(format!("iproute2's `ip` cannot run: {e}")),
        }
    }

    /// A new namespace named for `tag` and this process, its loopback up.
    pub fn create(tag: &str) -> Netns {
        let pid = std::process::id();
        let name = format!("wa-{tag}-{pid}");
        ip(&["netns", "add", &name]);
        let ns = Netns {
            name,
            octet: 64 + (pid % 128) as u8,
            links: 0,
        };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// A new veth pair into the namespace, both ends up and addressed.
    pub fn veth(&mut self) -> Veth {
        self.links += 1;
        let n = self.links;
        let pid = std::process::id();
        let (outside_dev, inside_dev) = (format!("wa{pid}v{n}a"), format!("wa{pid}v{n}b"));
        let outside = Ipv4Addr::new(10, self.octet, n, 1);
        let inside = Ipv4Addr::new(10, self.octet, n, 2);
        ip(&[
            "link",
            "add",
            &outside_dev,
            "type",
            "veth",
            "peer",
            "name",
            &inside_dev,
            "netns",
            &self.name,
        ]);
        ip(&["addr", "add", &format!("{outside}/24"), "dev", &outside_dev]);
        ip(&["link", "set", &outside_dev, "up"]);
        ip(&[
            "-n",
            &self.name,
            "addr",
            "add",
            &format!("{inside}/24"),
            "dev",
            &inside_dev,
        ]);
        ip(&["-n", &self.name, "link", "set", &inside_dev, "up"]);
        Veth {
            outside_dev,
            inside_dev,
            outside,
            inside,
        }
    }

    /// Sets the namespace's end of `v` down (`up = false`): the inside can
    /// no longer reach anything through it, and what the outside sends
    /// that way is lost, while the outside's own address keeps working
    /// for its neighbours. Or up again.
    pub fn set(&self, v: &Veth, up: bool) {
        let state = if up { "up" } else { "down" };
        ip(&["-n", &self.name, "link", "set", &v.inside_dev, state]);
    }

    /// `program` to be run inside the namespace (`ip netns exec` execs it,
    /// so the child's pid is the program's own).
    pub fn command(&self, program: &std::path::Path) -> tokio::process::Command {
        let mut c = tokio::process::Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth ends in it and with
        // them their peers outside.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}
