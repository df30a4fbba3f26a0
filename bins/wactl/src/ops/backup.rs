//! `wactl backup STORE DIR`: the store copies its data into DIR while it
//! serves (`POST /admin/backup`, wa-store's `backup.rs`); wactl shows the
//! copy's progress (`GET /admin/backup`) until it is complete.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::cli::{BackupArgs, Output};

/// How often progress is asked for.
const POLL: Duration = Duration::from_millis(250);

pub(crate) async fn backup(args: &BackupArgs) -> anyhow::Result<ExitCode> {
    let (nodes, token) = super::load(&args.nodes)?;
    let Some(store) = nodes.of("wa-store").find(|n| n.name == args.store).cloned() else {
        bail!("no wa-store node named {:?} in the node list", args.store);
    };
    let dir = if args.into.is_absolute() {
        args.into.clone()
    } else {
        std::env::current_dir()
            .context("the working directory (DIR is relative)")?
            .join(&args.into)
    };
    let Some(dir_text) = dir.to_str() else {
        bail!("{} is not UTF-8", dir.display());
    };
    let started = Instant::now();
    let path = format!("/admin/backup?dir={}", super::escape(dir_text));
    common::admin::client::call_json(store.target(), http::Method::POST, &path, &token)
        .await
        .with_context(|| format!("store {}", store.name))?;
    let bar = Progress::new(args.output.output);
    let deadline = started + args.timeout;
    let mut tick = tokio::time::interval(POLL);
    let report = loop {
        tick.tick().await;
        let r = common::admin::client::get_json(store.target(), "/admin/backup", &token)
            .await
            .with_context(|| format!("store {}", store.name))?;
        if r["dir"].as_str() != Some(dir_text) {
            bail!(
                "store {} reports a backup into {} instead (another backup started meanwhile?)",
                store.name,
                r["dir"]
            );
        }
        bar.show(&r);
        if r["state"] == "done" || r["state"] == "failed" {
            break r;
        }
        if Instant::now() >= deadline {
            bar.done();
            bail!(
                "the backup is not complete after {}; it goes on at the store (GET /admin/backup)",
                humantime::format_duration(args.timeout)
            );
        }
    };
    bar.done();
    let ok = report["state"] == "done";
    let doc = json!({
        "store": store.name,
        "dir": dir,
        "state": report["state"],
        "error": report["error"],
        "keys": report["keys"],
        "journal_records": report["journal_records"],
        "copied_bytes": report["copied_bytes"],
        "elapsed_ms": started.elapsed().as_millis() as u64,
    });
    super::print(args.output.output, &doc, || {
        if ok {
            format!(
                "backup of {} complete in {}: {} (engine keys {}, journal records {})\n",
                store.name,
                humantime::format_duration(Duration::from_millis(
                    started.elapsed().as_millis() as u64
                )),
                dir.display(),
                report["keys"],
                report["journal_records"],
            )
        } else {
            String::new()
        }
    });
    if !ok {
        eprintln!(
            "backup of {} into {} failed: {}",
            store.name,
            dir.display(),
            report["error"].as_str().unwrap_or("(no reason given)")
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// The bar on stderr (drawn only on a terminal), or a line per phase when
/// stderr is not one and the output is for people.
struct Progress {
    bar: indicatif::ProgressBar,
    lines: bool,
    last: std::cell::RefCell<String>,
}

impl Progress {
    fn new(output: Output) -> Progress {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg:>10} [{bar:30}] {bytes}/{total_bytes} ({elapsed})",
            )
            .expect("the template is valid")
            .progress_chars("#>."),
        );
        let lines = bar.is_hidden() && output == Output::Table;
        Progress {
            bar,
            lines,
            last: Default::default(),
        }
    }

    fn show(&self, r: &Value) {
        let state = r["state"].as_str().unwrap_or("?").to_string();
        self.bar.set_length(r["total_bytes"].as_u64().unwrap_or(0));
        self.bar
            .set_position(r["copied_bytes"].as_u64().unwrap_or(0));
        self.bar.set_message(state.clone());
        if self.lines && *self.last.borrow() != state {
            eprintln!(
                "{state}: {} engine bytes copied, {} journal records applied",
                r["copied_bytes"], r["journal_records"]
            );
        }
        *self.last.borrow_mut() = state;
    }

    fn done(&self) {
        self.bar.finish_and_clear();
    }
}
