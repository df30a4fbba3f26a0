//! What the wactl process tests share: the binary, free ports, child
//! processes and their output.

#![allow(dead_code)]

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

pub const WACTL: &str = env!("CARGO_BIN_EXE_wactl");
/// A bound on failure, never a readiness check.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A port free for both TCP and UDP on 127.0.0.1 right now.
///
/// Taken below the kernel's ephemeral range: a port the kernel handed out
/// for `bind(0)` is free again once checked, and a parallel test's next
/// `bind(0)` or outgoing connection could take it before `wactl up` binds it
/// (seen as "Address already in use"); the kernel never hands out these.
pub fn free_port() -> u16 {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (from, to) = (10_000u32, u32::from(low).saturating_sub(16).max(10_500));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let mut x = (u64::from(std::process::id()) << 32) ^ u64::from(nanos) | 1;
    loop {
        // xorshift64: a different sequence per process and per call.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let port = (from + (x % u64::from(to - from)) as u32) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
        {
            return port;
        }
    }
}

pub fn spawn(args: &[&str]) -> (Proc, Lines<BufReader<ChildStdout>>) {
    let mut child = Command::new(WACTL)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    (Proc(child), lines)
}

/// A wactl process that gets SIGTERM if the test drops it still running
/// (a failed assertion): `wactl up` then stops the services it started,
/// where SIGKILL would leave them running.
pub struct Proc(pub Child);

impl std::ops::Deref for Proc {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Proc {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let (Ok(None), Some(pid)) = (self.0.try_wait(), self.0.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
}

/// Reads lines until one satisfies `want`; fails on end of output or timeout.
pub async fn wait_line(
    lines: &mut Lines<BufReader<ChildStdout>>,
    what: &str,
    want: impl Fn(&str) -> bool,
) -> String {
    tokio::time::timeout(PATIENCE, async {
        while let Some(l) = lines.next_line().await.unwrap() {
            if want(&l) {
                return l;
            }
        }
        panic!("output ended before {what}");
    })
    .await
    .unwrap_or_else(|_| panic!("no {what} within {PATIENCE:?}"))
}

pub fn sigterm(child: &Child) {
    let pid = nix::unistd::Pid::from_raw(child.id().expect("still running") as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
}

pub async fn exits_zero(child: &mut Child, name: &str) {
    let st = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .unwrap_or_else(|_| panic!("{name} did not exit"))
        .unwrap();
    assert!(st.success(), "{name} exited with {st}");
}

/// `wactl up --dir DIR` on free ports with `extra` flags, once it is ready:
/// the process, its output from there on, and its READY line.
pub async fn up(dir: &str, extra: &[&str]) -> (Proc, Lines<BufReader<ChildStdout>>, String) {
    let (link, port) = (free_port().to_string(), free_port().to_string());
    let mut args = vec!["up", "--dir", dir, "--link-port", &link, "--port", &port];
    args.extend_from_slice(extra);
    let (up, mut out) = spawn(&args);
    let ready = wait_line(&mut out, "READY from wactl up", |l| {
        l.starts_with("READY wactl-up ")
    })
    .await;
    (up, out, ready)
}
