//! `wactl restore BACKUP DATA_DIR`: a store's data directory from a backup
//! (`wactl backup`). The backup already is a complete data directory
//! (engine copy with the journal applied, recounted, flushed, marked as
//! cleanly stopped), so restoring is a careful copy: checked first, into
//! `DATA_DIR.restoring`, every file synced, then renamed into place.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use serde_json::json;

use crate::cli::RestoreArgs;

/// The manifest a backup holds (wa-store's `backup::MANIFEST`).
const MANIFEST: &str = "BACKUP";
/// What the manifest is called once restored.
const RESTORED: &str = "RESTORED_FROM_BACKUP";
/// Markers a complete backup also holds (the format marker, the clean stop).
const REQUIRED: [&str; 2] = ["FORMAT", "CLEAN_STOP"];

pub(crate) fn run(args: &RestoreArgs) -> anyhow::Result<ExitCode> {
    let manifest_path = args.backup.join(MANIFEST);
    let text = std::fs::read_to_string(&manifest_path).with_context(|| {
        format!(
            "{} is not a complete backup (no readable {MANIFEST})",
            args.backup.display()
        )
    })?;
    let manifest: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not JSON", manifest_path.display()))?;
    let Some(engine) = manifest["engine"].as_str() else {
        bail!("{} names no engine", manifest_path.display());
    };
    for f in REQUIRED {
        if !args.backup.join(f).exists() {
            bail!(
                "{} is not a complete backup (no {f})",
                args.backup.display()
            );
        }
    }
    if !args.backup.join(engine).is_dir() {
        bail!(
            "{} is not a complete backup (no {engine}/)",
            args.backup.display()
        );
    }
    let target = &args.data_dir;
    match std::fs::read_dir(target).map(|mut d| d.next().is_some()) {
        Ok(true) => bail!(
            "{} is not empty: restore only into a fresh data directory (move the old one aside)",
            target.display()
        ),
        Ok(false) => std::fs::remove_dir(target)
            .with_context(|| format!("cannot replace the empty {}", target.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", target.display())),
    }
    let staging = sibling(target, "restoring")?;
    if staging.exists() {
        // Only an earlier restore names a directory so.
        std::fs::remove_dir_all(&staging)
            .with_context(|| format!("cannot remove {}", staging.display()))?;
    }
    let total = tree_bytes(&args.backup)?;
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("restoring [{bar:30}] {bytes}/{total_bytes}")
            .expect("the template is valid")
            .progress_chars("#>."),
    );
    let mut files = 0u64;
    copy_tree(&args.backup, &staging, &bar, &mut files)?;
    bar.finish_and_clear();
    std::fs::rename(staging.join(MANIFEST), staging.join(RESTORED))
        .context("cannot rename the manifest")?;
    sync_dir(&staging)?;
    std::fs::rename(&staging, target).with_context(|| {
        format!(
            "cannot rename {} to {}",
            staging.display(),
            target.display()
        )
    })?;
    if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(parent)?;
    }
    let doc = json!({
        "backup": args.backup,
        "data_dir": target,
        "engine": engine,
        "files": files,
        "bytes": total,
        "manifest": manifest,
    });
    super::print(args.output.output, &doc, || {
        format!(
            "restored {} into {} ({files} files, {total} bytes); start the store with engine = \"auto\" (the default) or \"{engine}\"\n",
            args.backup.display(),
            target.display()
        )
    });
    Ok(ExitCode::SUCCESS)
}

/// `DIR.suffix` beside `dir`.
fn sibling(dir: &Path, suffix: &str) -> anyhow::Result<PathBuf> {
    let Some(name) = dir.file_name() else {
        bail!("{} names no directory", dir.display());
    };
    let mut n = name.to_os_string();
    n.push(".");
    n.push(suffix);
    Ok(dir.with_file_name(n))
}

fn tree_bytes(dir: &Path) -> anyhow::Result<u64> {
    let mut n = 0;
    for e in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let e = e?;
        let m = e.metadata()?;
        n += if m.is_dir() {
            tree_bytes(&e.path())?
        } else {
            m.len()
        };
    }
    Ok(n)
}

/// Copies `from` into the new directory `to` (owner-only), syncing every
/// file and directory.
fn copy_tree(
    from: &Path,
    to: &Path,
    bar: &indicatif::ProgressBar,
    files: &mut u64,
) -> anyhow::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(to)
        .with_context(|| format!("cannot create {}", to.display()))?;
    for e in std::fs::read_dir(from).with_context(|| format!("cannot read {}", from.display()))? {
        let e = e?;
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let kind = e.file_type()?;
        if kind.is_dir() {
            copy_tree(&src, &dst, bar, files)?;
        } else if kind.is_file() {
            let n = std::fs::copy(&src, &dst)
                .with_context(|| format!("cannot copy {} to {}", src.display(), dst.display()))?;
            std::fs::File::open(&dst)
                .and_then(|f| f.sync_all())
                .with_context(|| format!("cannot sync {}", dst.display()))?;
            bar.inc(n);
            *files += 1;
        } else {
            bail!(
                "{} is neither a file nor a directory; not a backup wactl wrote",
                src.display()
            );
        }
    }
    sync_dir(to)
}

fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot sync {}", dir.display()))
}
