//! What the bench reads from /proc: CPU time and resident memory of the
//! named server processes and of its own processes, and the host's steal
//! time, each sampled at the edges of a measured window.

use std::path::Path;

use anyhow::Context;
use serde::Serialize;

/// `/proc/PID/stat` counts in USER_HZ, 100 on every Linux architecture.
const TICKS_PER_SEC: f64 = 100.0;

/// One process to watch.
#[derive(Clone, Debug)]
pub(crate) struct Proc {
    /// `wa-chat`, `wa-store-2`, `bench`, ...
    pub(crate) name: String,
    pub(crate) pid: u32,
}

/// One process at one moment.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub(crate) struct ProcSample {
    /// User plus system CPU time, all threads, in seconds.
    pub(crate) cpu_s: f64,
    /// Resident set, bytes.
    pub(crate) rss: u64,
}

/// CPU time and RSS of `pid`; `None` once it has exited.
pub(crate) fn sample(pid: u32) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after
    // the last ')'. utime and stime are fields 14 and 15 (1-based), the
    // 12th and 13th after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0);
    Some(ProcSample {
        cpu_s: ticks as f64 / TICKS_PER_SEC,
        rss: rss_kb * 1024,
    })
}

/// The host's CPU counters (`/proc/stat`, first line), in ticks.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct HostSample {
    pub(crate) total: u64,
    pub(crate) steal: u64,
}

pub(crate) fn host() -> HostSample {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
        return HostSample::default();
    };
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is
    // already inside user and nice).
    HostSample {
        total: f.iter().take(8).sum(),
        steal: f.get(7).copied().unwrap_or(0),
    }
}

/// The share of the host's CPU time stolen by the hypervisor between two
/// samples (0 to 1).
pub(crate) fn steal(a: HostSample, b: HostSample) -> f64 {
    let total = b.total.saturating_sub(a.total);
    if total == 0 {
        return 0.0;
    }
    b.steal.saturating_sub(a.steal) as f64 / total as f64
}

/// The server processes of a `wactl up` deployment: every `run/*.pid` whose
/// name starts with one of `names` (`wa-chat`, `wa-store`), alive now.
pub(crate) fn servers(dir: &Path, names: &[String]) -> anyhow::Result<Vec<Proc>> {
    let run = dir.join(crate::promote::RUN_DIR);
    let mut found = Vec::new();
    let entries = std::fs::read_dir(&run).with_context(|| {
        format!(
            "cannot list {} (is `wactl up --dir {}` running?)",
            run.display(),
            dir.display()
        )
    })?;
    for e in entries {
        let path = e?.path();
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        if path.extension().is_none_or(|x| x != "pid")
            || !names.iter().any(|n| stem.starts_with(n.as_str()))
        {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let pid: u32 = text
            .trim()
            .parse()
            .with_context(|| format!("{} does not hold a pid", path.display()))?;
        if sample(pid).is_some() {
            found.push(Proc {
                name: stem.to_string(),
                pid,
            });
        }
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_has_cpu_and_memory() {
        let me = sample(std::process::id()).unwrap();
        assert!(me.rss > 0);
        assert!(me.cpu_s >= 0.0);
        let (a, b) = (host(), host());
        assert!(b.total >= a.total && a.total > 0);
        assert!((0.0..=1.0).contains(&steal(a, b)));
    }
}
