//! `wactl backup`: an online, consistent copy of a primary's data (every
//! mailbox and every key-value record: accounts, phone numbers, device
//! generations), written as a data directory a fresh store can start from
//! (`wactl restore`, docs/OPERATIONS.md "Backup and restore").
//!
//! The same reasoning as a secondary's catch-up (docs/ARCHITECTURE.md,
//! "Replication"), without its tap: every engine write is the effect of a
//! journal record, replaying records is idempotent, so an engine copy
//! taken while the engine changes, plus every journal record from the
//! oldest segment kept when the copy began up to a cut taken after it
//! ended, replayed over that copy in order, is the store's state at that
//! cut. So:
//!
//! 1. hold the journal's segments (none from the oldest kept one on is
//!    released until the backup ends);
//! 2. copy the engine, key by key in pages, into a new engine in DIR;
//! 3. cut: note every kept segment and its length now, sync the journal;
//! 4. replay every record up to the cut into the copy, oldest first;
//! 5. recount mailbox sizes and sequence counters (the copy's aggregates
//!    may disagree with its items), flush, and mark DIR as a cleanly
//!    stopped data directory with a manifest ([`MANIFEST`]).
//!
//! Everything Accepted before step 1 was synced to the journal before it:
//! it is in a held segment or, older, in the engine (and deleted only by a
//! later record). The store goes on serving throughout; the backup costs
//! engine reads and one journal sync.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::config::Engine;
use crate::journal::Journal;
use crate::replication::apply::apply_record;
use crate::storage::{self, Storage};

/// The manifest a backup directory holds (JSON), and what `wactl restore`
/// checks for.
pub const MANIFEST: &str = "BACKUP";

/// Engine bytes per page of the copy.
const PAGE_BYTES: usize = 1 << 20;

/// What a backup reads from the running store.
#[derive(Clone)]
pub struct Source {
    pub storage: Arc<dyn Storage>,
    pub journal: Arc<Journal>,
    pub engine: Engine,
    pub data_dir: PathBuf,
    /// The engine's size on disk (for progress; an estimate).
    pub engine_bytes: Arc<dyn Fn() -> u64 + Send + Sync>,
    /// Who is backed up: node, island, epoch (for the manifest).
    pub describe: Arc<dyn Fn() -> Value + Send + Sync>,
}

/// The store's backups: at most one runs; the last one is reported.
#[derive(Default)]
pub struct Backups {
    last: Mutex<Option<Arc<Job>>>,
}

/// One backup, as `GET /admin/backup` reports it.
pub struct Job {
    dir: PathBuf,
    started_ms: u64,
    /// `copying`, `journal`, `finishing`, `done` or `failed`.
    state: Mutex<(&'static str, Option<String>)>,
    copied_bytes: AtomicU64,
    total_bytes: AtomicU64,
    keys: AtomicU64,
    records: AtomicU64,
    recounted: AtomicU64,
    finished_ms: AtomicU64,
}

/// Why a backup cannot start.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("a backup into {0} is under way; wait for it (GET /admin/backup)")]
    Busy(PathBuf),
    #[error("the backup directory must be an absolute path, not {0:?}")]
    Relative(PathBuf),
    #[error("the backup directory {0} is inside the store's data directory")]
    Inside(PathBuf),
    #[error("the backup directory {0} exists and is not empty")]
    NotEmpty(PathBuf),
}

impl Backups {
    /// Starts a backup of `source` into `dir` on a blocking thread.
    pub fn start(&self, source: Source, dir: PathBuf) -> Result<Arc<Job>, Refused> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(j) = last.as_ref()
            && !j.finished()
        {
            return Err(Refused::Busy(j.dir.clone()));
        }
        if !dir.is_absolute() {
            return Err(Refused::Relative(dir));
        }
        if resolved(&dir).starts_with(resolved(&source.data_dir)) {
            return Err(Refused::Inside(dir));
        }
        if std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some()) {
            return Err(Refused::NotEmpty(dir));
        }
        let job = Arc::new(Job {
            dir,
            started_ms: common::fsutil::now_ms(),
            state: Mutex::new(("copying", None)),
            copied_bytes: AtomicU64::new(0),
            total_bytes: AtomicU64::new((source.engine_bytes)()),
            keys: AtomicU64::new(0),
            records: AtomicU64::new(0),
            recounted: AtomicU64::new(0),
            finished_ms: AtomicU64::new(0),
        });
        *last = Some(Arc::clone(&job));
        let j = Arc::clone(&job);
        tokio::task::spawn_blocking(move || {
            let outcome = run(&source, &j);
            j.finished_ms.store(common::fsutil::now_ms(), Relaxed);
            match outcome {
                Ok(()) => {
                    tracing::info!(dir = %j.dir.display(), keys = j.keys.load(Relaxed), records = j.records.load(Relaxed), "backup done");
                    j.set("done", None);
                }
                Err(e) => {
                    tracing::error!(dir = %j.dir.display(), error = %e, "backup failed");
                    j.set("failed", Some(e));
                }
            }
        });
        Ok(job)
    }

    /// The last backup's report (`{"state": "none"}` if there was none).
    pub fn report(&self) -> Value {
        match &*self.last.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(j) => j.report(),
            None => json!({ "state": "none" }),
        }
    }
}

impl Job {
    fn set(&self, state: &'static str, error: Option<String>) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = (state, error);
    }

    fn finished(&self) -> bool {
        matches!(
            self.state.lock().unwrap_or_else(|p| p.into_inner()).0,
            "done" | "failed"
        )
    }

    pub fn report(&self) -> Value {
        let (state, error) = self.state.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let finished = self.finished_ms.load(Relaxed);
        json!({
            "state": state,
            "error": error,
            "dir": self.dir,
            "started_ms": self.started_ms,
            "finished_ms": (finished > 0).then_some(finished),
            "copied_bytes": self.copied_bytes.load(Relaxed),
            "total_bytes": self.total_bytes.load(Relaxed),
            "keys": self.keys.load(Relaxed),
            "journal_records": self.records.load(Relaxed),
            "recounted": self.recounted.load(Relaxed),
        })
    }
}

/// Lets the journal's segments go when dropped.
struct Held<'a>(&'a Journal, u64);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.let_go(self.1);
    }
}

fn run(source: &Source, job: &Job) -> Result<(), String> {
    let held = Held(&source.journal, source.journal.hold());
    make_dir(&job.dir).map_err(|e| format!("cannot create {}: {e}", job.dir.display()))?;
    let copy = storage::open(&job.dir, source.engine, storage::TEST_ENGINE_CACHE)
        .map_err(|e| e.to_string())?;
    // (2) The engine, page by page, while it changes.
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = source
            .storage
            .page_after(after.as_deref(), PAGE_BYTES)
            .map_err(|e| format!("reading the engine: {e}"))?;
        let Some((last, _)) = page.last() else {
            break;
        };
        after = Some(last.clone());
        let bytes: u64 = page.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum();
        let keys = page.len() as u64;
        copy.put_raw(page)
            .map_err(|e| format!("writing the copy: {e}"))?;
        job.keys.fetch_add(keys, Relaxed);
        let done = job.copied_bytes.fetch_add(bytes, Relaxed) + bytes;
        job.total_bytes.fetch_max(done, Relaxed);
    }
    // (3) The cut, after the copy; everything before it on disk.
    job.set("journal", None);
    let cut = source.journal.segments_now();
    source
        .journal
        .sync()
        .map_err(|e| format!("syncing the journal: {e}"))?;
    // (4) Every record up to the cut, in order.
    for (segment, upto) in cut {
        source
            .journal
            .visit_segment_upto(segment, upto, &mut |rec| {
                job.records.fetch_add(1, Relaxed);
                apply_record(&*copy, rec)
            })
            .map_err(|e| format!("reading journal segment {segment}: {e}"))?
            .map_err(|e| format!("applying journal segment {segment} to the copy: {e}"))?;
    }
    drop(held);
    // (5) Aggregates, durability, markers.
    job.set("finishing", None);
    let fixed = copy.recount().map_err(|e| e.to_string())?;
    job.recounted.store(fixed, Relaxed);
    copy.flush().map_err(|e| e.to_string())?;
    drop(copy);
    let journal_dir = job.dir.join("journal");
    std::fs::create_dir_all(&journal_dir)
        .map_err(|e| format!("cannot create {}: {e}", journal_dir.display()))?;
    let marker = |name: &str, bytes: &[u8]| {
        common::fsutil::write_atomic(&job.dir.join(name), bytes)
            .map_err(|e| format!("cannot write {name} in {}: {e}", job.dir.display()))
    };
    marker(crate::CLEAN_STOP, b"")?;
    let mut manifest = (source.describe)();
    if let Value::Object(m) = &mut manifest {
        m.insert("engine".into(), storage::format::name(source.engine).into());
        m.insert("format".into(), storage::format::VERSION.into());
        m.insert("version".into(), env!("CARGO_PKG_VERSION").into());
        m.insert("started_ms".into(), job.started_ms.into());
        m.insert("finished_ms".into(), common::fsutil::now_ms().into());
        m.insert("keys".into(), job.keys.load(Relaxed).into());
        m.insert("journal_records".into(), job.records.load(Relaxed).into());
    }
    let text = serde_json::to_string_pretty(&manifest).expect("a JSON value encodes");
    marker(MANIFEST, text.as_bytes())
}

/// `p` with symbolic links and `..` resolved as far as it exists (the
/// rest appended as written).
fn resolved(p: &Path) -> PathBuf {
    use std::path::Component;
    let parts: Vec<Component<'_>> = p.components().collect();
    for n in (1..=parts.len()).rev() {
        let prefix: PathBuf = parts[..n].iter().collect();
        if let Ok(mut real) = std::fs::canonicalize(&prefix) {
            for c in &parts[n..] {
                match c {
                    Component::ParentDir => {
                        real.pop();
                    }
                    Component::Normal(name) => real.push(name),
                    _ => {}
                }
            }
            return real;
        }
    }
    p.to_owned()
}

/// Creates `dir` (and its parents) readable by its owner only.
fn make_dir(dir: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_is_resolved_as_far_as_it_exists() {
        let d = tempfile::tempdir().unwrap();
        let real = std::fs::canonicalize(d.path()).unwrap();
        std::fs::create_dir(real.join("data")).unwrap();
        std::os::unix::fs::symlink(real.join("data"), real.join("link")).unwrap();
        // Through a link, or `..`, into the data directory: inside it.
        assert!(resolved(&real.join("link/backup")).starts_with(real.join("data")));
        assert!(resolved(&real.join("x/../data/new/deeper")).starts_with(real.join("data")));
        assert!(!resolved(&real.join("data-backups/1")).starts_with(real.join("data")));
    }
}
