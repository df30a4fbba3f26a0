//! systemd's notification protocol (`Type=notify`): `READY=1` with a
//! `STATUS=` line once the service serves, `RELOADING=1` around a SIGHUP,
//! `STOPPING=1` at shutdown, and `WATCHDOG=1` at half the `WatchdogSec`
//! period while the runtime is alive. Outside systemd (`NOTIFY_SOCKET`
//! unset) every call does nothing.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

pub fn ready(status: &str) {
    let _ = sd_notify::notify(false, &[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn status(status: &str) {
    let _ = sd_notify::notify(false, &[NotifyState::Status(status)]);
}

pub fn reloading() {
    if let Ok(now) = sd_notify::NotifyState::monotonic_usec_now() {
        let _ = sd_notify::notify(false, &[NotifyState::Reloading, now]);
    }
}

pub fn stopping(status: &str) {
    let _ = sd_notify::notify(false, &[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// The watchdog period systemd asked for (`WATCHDOG_USEC`, meant for this
/// process when `WATCHDOG_PID` is ours or absent).
pub fn watchdog_period() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok()? != std::process::id()
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Pets the watchdog at half its period until `stop`. The pings come from a
/// runtime task, so a wedged runtime stops them and systemd restarts us.
pub fn spawn_watchdog(stop: CancellationToken) {
    let Some(period) = watchdog_period() else {
        return;
    };
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period / 2);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let _ = sd_notify::notify(false, &[NotifyState::Watchdog]);
                }
                () = stop.cancelled() => return,
            }
        }
    });
}

/// The receiving end of the protocol, as systemd has it: a datagram socket
/// whose path goes in a child's `NOTIFY_SOCKET`. For tests and for
/// supervisors that are not systemd.
pub struct NotifyListener {
    socket: tokio::net::UnixDatagram,
}

impl NotifyListener {
    pub fn bind(path: &std::path::Path) -> std::io::Result<NotifyListener> {
        Ok(NotifyListener {
            socket: tokio::net::UnixDatagram::bind(path)?,
        })
    }

    /// The next message (`READY=1\nSTATUS=...`).
    pub async fn recv(&self) -> std::io::Result<String> {
        let mut buf = vec![0; 4096];
        let n = self.socket.recv(&mut buf).await?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// Messages until one has a line equal to `line`; returns them all.
    pub async fn until(&self, line: &str) -> std::io::Result<Vec<String>> {
        let mut seen = Vec::new();
        loop {
            let m = self.recv().await?;
            let done = m.lines().any(|l| l == line);
            seen.push(m);
            if done {
                return Ok(seen);
            }
        }
    }
}
