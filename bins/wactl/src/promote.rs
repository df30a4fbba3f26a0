//! `wactl promote ISLAND`: the manual failover of docs/OPERATIONS.md. The
//! map is the only thing it changes; every node acts on reading it
//! (`wa-store`'s replication: a secondary named primary serves, a primary
//! named secondary stops).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use common::cluster::ClusterMap;

use crate::cli::PromoteArgs;

/// Where `wactl up` records the pid of each service it runs (`NAME.pid`).
pub(crate) const RUN_DIR: &str = "run";

pub(crate) fn run(args: &PromoteArgs) -> anyhow::Result<()> {
    let path = args
        .map
        .clone()
        .unwrap_or_else(|| args.dir.dir.join("cluster.toml"));
    let mut map = ClusterMap::load(&path)
        .with_context(|| format!("cannot read the cluster map {}", path.display()))?;
    let (old, new) = promote(&mut map, &args.island)?;
    common::fsutil::write_atomic(&path, map.to_toml().as_bytes())
        .with_context(|| format!("cannot replace {}", path.display()))?;
    println!(
        "{}: {} is now the primary and {} the secondary, epoch {}",
        args.island, new, old, map.epoch
    );
    let signalled = hangup_all(&args.dir.dir.join(RUN_DIR));
    if signalled > 0 {
        println!(
            "sent SIGHUP to {signalled} services of the deployment in {}",
            args.dir.dir.display()
        );
    } else {
        println!(
            "now copy {} to every node and reload every wa-store, wa-chat and wa-register (systemctl reload, or SIGHUP)",
            path.display()
        );
    }
    Ok(())
}

/// Swaps `island`'s primary and secondary and raises the epoch: (old
/// primary, new primary).
pub(crate) fn promote(
    map: &mut ClusterMap,
    island: &str,
) -> anyhow::Result<(std::net::SocketAddr, std::net::SocketAddr)> {
    let names: Vec<String> = map.islands.iter().map(|i| i.name.clone()).collect();
    let Some(i) = map.islands.iter_mut().find(|i| i.name == island) else {
        bail!(
            "no island is named {island:?} in the map (it has {})",
            names.join(", ")
        );
    };
    let Some(secondary) = i.secondary else {
        bail!(
            "island {island:?} has no secondary to promote (add `secondary = \"ADDR\"` and start one first)"
        );
    };
    let old = i.primary;
    i.primary = secondary;
    i.secondary = Some(old);
    map.epoch += 1;
    map.validate()?;
    Ok((old, secondary))
}

/// SIGHUP to every pid recorded in `run` (a `wactl up` deployment): how
/// many were signalled.
fn hangup_all(run: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(run) else {
        return 0;
    };
    let mut n = 0;
    let mut pids: Vec<(PathBuf, i32)> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "pid"))
        // The services that read the map (wa-media does not).
        .filter(|p| {
            p.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                ["wa-store", "wa-chat", "wa-register"]
                    .iter()
                    .any(|s| n.starts_with(s))
            })
        })
        .filter_map(|p| {
            let pid = std::fs::read_to_string(&p).ok()?.trim().parse().ok()?;
            Some((p, pid))
        })
        .collect();
    // Stores first: the new primary serves before the edges come to it.
    pids.sort_by_key(|(p, _)| !p.to_string_lossy().contains("wa-store"));
    for (p, pid) in pids {
        match nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGHUP,
        ) {
            Ok(()) => n += 1,
            Err(e) => eprintln!("wactl: {} (pid {pid}): {e}", p.display()),
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promote_swaps_the_roles_and_raises_the_epoch_or_says_why_not() {
        let mut m = ClusterMap::single("127.0.0.1:1".parse().unwrap(), "localhost", [1; 16]);
        let e = promote(&mut m, "island-1").unwrap_err().to_string();
        assert!(e.contains("no secondary"), "{e}");
        let e = promote(&mut m, "nope").unwrap_err().to_string();
        assert!(e.contains("island-1"), "{e}");
        m.islands[0].secondary = Some("127.0.0.1:2".parse().unwrap());
        let (old, new) = promote(&mut m, "island-1").unwrap();
        assert_eq!((old.port(), new.port()), (1, 2));
        assert_eq!(m.epoch, 2);
        assert_eq!(m.islands[0].primary.port(), 2);
        assert_eq!(m.islands[0].secondary.unwrap().port(), 1);
    }
}
