//! The data directory's format marker, `data_dir/FORMAT`: which engine wrote
//! the directory and in which on-disk format (the key layout of `keys.rs`
//! inside that engine's files).
//!
//! ```toml
//! engine = "sled"
//! format = 1
//! ```
//!
//! It exists so that a store configured with another engine, or a build that
//! does not know the format, refuses the directory instead of creating an
//! empty database beside the real one and serving empty mailboxes. A refusal
//! changes nothing in the directory. The marker is written once, when a
//! directory is first opened: a new one, or one from before markers, whose
//! engine is known from the subdirectory it holds (`sled/` or `fjall/`).
//! [`check`] only reads (`--check-config` uses it); [`prepare`] checks, then
//! writes a missing marker; `super::open` calls it before opening the engine.
//!
//! `engine = "auto"` (the default) is turned into an engine by [`resolve`]:
//! the one the directory records, so that an upgraded install keeps its
//! database, or fjall for a new directory.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::config::{Engine, EngineSetting};
use crate::error::StoreError;

/// The marker's name inside the data directory.
pub const FILE: &str = "FORMAT";
/// The on-disk format this build reads and writes. Raise it when the key
/// layout or the meaning of a stored value changes; a build then refuses a
/// directory of a format it does not know rather than misreading it.
pub const VERSION: i64 = 1;

/// The engine's name, as in the config and the marker.
pub fn name(engine: Engine) -> &'static str {
    match engine {
        Engine::Sled => "sled",
        Engine::Fjall => "fjall",
    }
}

/// Where `engine` keeps its files inside `data_dir`.
pub fn engine_dir(data_dir: &Path, engine: Engine) -> PathBuf {
    data_dir.join(name(engine))
}

fn other(engine: Engine) -> Engine {
    match engine {
        Engine::Sled => Engine::Fjall,
        Engine::Fjall => Engine::Sled,
    }
}

/// The engine of a new data directory under `engine = "auto"`: fjall keeps
/// to its cache budget (docs/BENCHMARKS.md, "The store's memory").
pub const NEW: Engine = Engine::Fjall;

/// The engine `setting` means for `data_dir`, reading only: a named engine
/// is itself; `auto` is the engine the marker names, else the one whose
/// subdirectory a directory from before markers holds, else [`NEW`].
/// [`check`] then decides whether the directory may be opened with it.
pub fn resolve(data_dir: &Path, setting: EngineSetting) -> Result<Engine, StoreError> {
    match setting {
        EngineSetting::Sled => return Ok(Engine::Sled),
        EngineSetting::Fjall => return Ok(Engine::Fjall),
        EngineSetting::Auto => {}
    }
    let path = data_dir.join(FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let (format, found) = parse(&path, &bytes)?;
            let Some(found) = found else {
                // `check` reports it (an unknown format first).
                return Ok(NEW);
            };
            return match found.as_str() {
                "sled" => Ok(Engine::Sled),
                "fjall" => Ok(Engine::Fjall),
                _ if format != VERSION => Err(StoreError::FormatUnsupported {
                    dir: data_dir.to_owned(),
                    format,
                    engine: found,
                    supported: VERSION,
                }),
                _ => Err(StoreError::EngineUnknown {
                    dir: data_dir.to_owned(),
                    found,
                    format,
                }),
            };
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(StoreError::FormatIo {
                op: "read",
                path,
                source,
            });
        }
    }
    let present = |e: Engine| {
        engine_dir(data_dir, e)
            .try_exists()
            .map_err(|source| StoreError::FormatIo {
                op: "look for the engine directory beside",
                path: path.clone(),
                source,
            })
    };
    match (present(Engine::Sled)?, present(Engine::Fjall)?) {
        (true, true) => Err(StoreError::EngineAmbiguous {
            dir: data_dir.to_owned(),
        }),
        (true, false) => Ok(Engine::Sled),
        (false, true) => Ok(Engine::Fjall),
        (false, false) => Ok(NEW),
    }
}

/// What [`prepare`] will do with a data directory [`check`] accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// The marker names the configured engine and [`VERSION`]: nothing.
    Marked,
    /// No marker: write one. `adopted` when the directory already holds the
    /// configured engine's database (written before markers existed).
    Mark { adopted: bool },
}

/// Whether `data_dir` may be opened with `engine`, reading only (nothing is
/// created, even when the directory does not exist yet).
pub fn check(data_dir: &Path, engine: Engine) -> Result<Plan, StoreError> {
    let path = data_dir.join(FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let (format, found) = parse(&path, &bytes)?;
            if format != VERSION {
                return Err(StoreError::FormatUnsupported {
                    dir: data_dir.to_owned(),
                    format,
                    engine: found.unwrap_or_else(|| "not named".into()),
                    supported: VERSION,
                });
            }
            let found = found.ok_or_else(|| StoreError::FormatCorrupt {
                path: path.clone(),
                what: "no `engine` string".into(),
            })?;
            if found != name(engine) {
                return Err(StoreError::EngineMismatch {
                    dir: data_dir.to_owned(),
                    found,
                    format,
                    configured: name(engine),
                });
            }
            return Ok(Plan::Marked);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(StoreError::FormatIo {
                op: "read",
                path,
                source,
            });
        }
    }
    let present = |e: Engine| {
        let dir = engine_dir(data_dir, e);
        dir.try_exists().map_err(|source| StoreError::FormatIo {
            op: "look for the engine directory beside",
            path: path.clone(),
            source,
        })
    };
    let mine = present(engine)?;
    if !mine && present(other(engine))? {
        return Err(StoreError::EngineDirMismatch {
            dir: data_dir.to_owned(),
            found: name(other(engine)),
            configured: name(engine),
        });
    }
    Ok(Plan::Mark { adopted: mine })
}

/// [`check`], then writes the marker if there is none (creating `data_dir`
/// if needed). After it returns, the marker names `engine`.
pub fn prepare(data_dir: &Path, engine: Engine) -> Result<(), StoreError> {
    match check(data_dir, engine)? {
        Plan::Marked => Ok(()),
        Plan::Mark { adopted } => {
            if adopted {
                tracing::info!(dir = %data_dir.display(), engine = name(engine), "adopting a data directory from before format markers");
                let unused = engine_dir(data_dir, other(engine));
                if unused.exists() {
                    tracing::warn!(dir = %unused.display(), "this database is not used: the data directory is marked as {}'s", name(engine));
                }
            }
            write(data_dir, engine)
        }
    }
}

/// The marker's format and engine name, `None` when the marker names none.
fn parse(path: &Path, bytes: &[u8]) -> Result<(i64, Option<String>), StoreError> {
    let corrupt = |what: String| StoreError::FormatCorrupt {
        path: path.to_owned(),
        what,
    };
    let text = std::str::from_utf8(bytes).map_err(|_| corrupt("not UTF-8".into()))?;
    let table: toml::Table = text.parse().map_err(|e| corrupt(format!("{e}")))?;
    let format = table
        .get("format")
        .and_then(toml::Value::as_integer)
        .ok_or_else(|| corrupt("no integer `format`".into()))?;
    let engine = table
        .get("engine")
        .and_then(toml::Value::as_str)
        .map(str::to_owned);
    Ok((format, engine))
}

/// Writes the marker atomically: a temporary file, synced, renamed over
/// the name, then the directory synced, so that after a crash the marker is
/// either absent (and written again on the next open) or whole.
fn write(data_dir: &Path, engine: Engine) -> Result<(), StoreError> {
    let path = data_dir.join(FILE);
    let tmp = data_dir.join(format!("{FILE}.tmp"));
    let io = |op: &'static str, p: &Path| {
        let p = p.to_owned();
        move |source| StoreError::FormatIo {
            op,
            path: p,
            source,
        }
    };
    let existed = data_dir
        .try_exists()
        .map_err(io("look for the data directory of", &path))?;
    std::fs::create_dir_all(data_dir).map_err(io("create the data directory of", &path))?;
    if !existed && let Some(parent) = data_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(parent).map_err(io("sync the directory above", data_dir))?;
    }
    let text = format!(
        "# Written by wa-store when it first opened this directory. Do not edit:\n\
         # a store configured with another engine or format refuses the directory.\n\
         engine = \"{}\"\nformat = {VERSION}\n",
        name(engine)
    );
    // `create` truncates the leftover of a write a crash interrupted.
    let mut f = std::fs::File::create(&tmp).map_err(io("create", &tmp))?;
    f.write_all(text.as_bytes()).map_err(io("write", &tmp))?;
    f.sync_all().map_err(io("sync", &tmp))?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(io("rename into place", &path))?;
    sync_dir(data_dir).map_err(io("sync the directory of", &path))?;
    tracing::info!(path = %path.display(), engine = name(engine), format = VERSION, "data directory marked");
    Ok(())
}

/// Makes the entries of `dir` (a new or renamed file) durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file and directory under `dir` with its contents.
    fn listing(dir: &Path) -> Vec<(PathBuf, Option<Vec<u8>>)> {
        let mut out = Vec::new();
        let mut todo = vec![dir.to_owned()];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    out.push((p.clone(), None));
                    todo.push(p);
                } else {
                    out.push((p.clone(), Some(std::fs::read(&p).unwrap())));
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn a_new_directory_is_marked_and_then_accepted() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        assert_eq!(
            check(&dir, Engine::Fjall).unwrap(),
            Plan::Mark { adopted: false }
        );
        assert!(!dir.exists(), "check creates nothing");
        prepare(&dir, Engine::Fjall).unwrap();
        let text = std::fs::read_to_string(dir.join(FILE)).unwrap();
        assert!(text.contains("engine = \"fjall\"\nformat = 1\n"), "{text}");
        assert!(!dir.join("FORMAT.tmp").exists());
        assert_eq!(check(&dir, Engine::Fjall).unwrap(), Plan::Marked);
        prepare(&dir, Engine::Fjall).unwrap();
        let err = check(&dir, Engine::Sled).unwrap_err().to_string();
        assert!(
            err.contains("written by engine fjall (format 1)")
                && err.contains("configured with engine = \"sled\""),
            "{err}"
        );
    }

    #[test]
    fn a_directory_from_before_markers_is_adopted_by_its_engine_only() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("sled")).unwrap();
        std::fs::write(root.path().join("sled/db"), b"data").unwrap();
        let before = listing(root.path());
        let err = prepare(root.path(), Engine::Fjall).unwrap_err().to_string();
        assert!(
            err.contains("holds a sled database") && err.contains("engine = \"fjall\""),
            "{err}"
        );
        assert_eq!(listing(root.path()), before, "a refusal changes nothing");
        assert_eq!(
            check(root.path(), Engine::Sled).unwrap(),
            Plan::Mark { adopted: true }
        );
        prepare(root.path(), Engine::Sled).unwrap();
        assert_eq!(check(root.path(), Engine::Sled).unwrap(), Plan::Marked);
        // Both databases (an engine switch before markers existed): the
        // configured one is what that store opened, so it is adopted.
        let both = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(both.path().join("sled")).unwrap();
        std::fs::create_dir_all(both.path().join("fjall")).unwrap();
        prepare(both.path(), Engine::Fjall).unwrap();
        assert!(check(both.path(), Engine::Sled).is_err());
    }

    #[test]
    fn unknown_formats_and_broken_markers_are_refused_untouched() {
        for (marker, expect) in [
            (
                "engine = \"sled\"\nformat = 999\n",
                "format 999 (engine sled); this wa-store reads format 1 only",
            ),
            ("format = 2\n", "format 2 (engine not named)"),
            ("engine = \"sled\"\n", "no integer `format`"),
            ("format = 1\n", "no `engine` string"),
            (
                "engine = \"rocksdb\"\nformat = 1\n",
                "written by engine rocksdb (format 1)",
            ),
            ("engine = sled", "is not valid"),
        ] {
            let root = tempfile::tempdir().unwrap();
            std::fs::write(root.path().join(FILE), marker).unwrap();
            let before = listing(root.path());
            let err = prepare(root.path(), Engine::Sled).unwrap_err().to_string();
            assert!(err.contains(expect), "{marker:?}: {err}");
            assert_eq!(listing(root.path()), before, "{marker:?}");
        }
    }

    #[test]
    fn auto_keeps_the_recorded_engine_and_gives_a_new_directory_fjall() {
        let root = tempfile::tempdir().unwrap();
        let new = root.path().join("new");
        assert_eq!(resolve(&new, EngineSetting::Auto).unwrap(), Engine::Fjall);
        assert!(!new.exists(), "resolve creates nothing");
        assert_eq!(resolve(&new, EngineSetting::Sled).unwrap(), Engine::Sled);
        for (name, engine) in [("sled", Engine::Sled), ("fjall", Engine::Fjall)] {
            // Marked by an earlier start.
            let marked = root.path().join(format!("marked-{name}"));
            prepare(&marked, engine).unwrap();
            assert_eq!(resolve(&marked, EngineSetting::Auto).unwrap(), engine);
            // From before markers: the engine's subdirectory.
            let old = root.path().join(format!("old-{name}"));
            std::fs::create_dir_all(old.join(name)).unwrap();
            assert_eq!(resolve(&old, EngineSetting::Auto).unwrap(), engine);
        }
        let both = root.path().join("both");
        std::fs::create_dir_all(both.join("sled")).unwrap();
        std::fs::create_dir_all(both.join("fjall")).unwrap();
        let err = resolve(&both, EngineSetting::Auto).unwrap_err().to_string();
        assert!(err.contains("both a sled/ and a fjall/"), "{err}");
        for (marker, expect) in [
            (
                "engine = \"rocksdb\"\nformat = 1\n",
                "engine rocksdb (format 1), which this wa-store does not know",
            ),
            (
                "engine = \"rocksdb\"\nformat = 7\n",
                "format 7 (engine rocksdb); this wa-store reads format 1 only",
            ),
        ] {
            let d = tempfile::tempdir().unwrap();
            std::fs::write(d.path().join(FILE), marker).unwrap();
            let err = resolve(d.path(), EngineSetting::Auto)
                .unwrap_err()
                .to_string();
            assert!(err.contains(expect), "{marker:?}: {err}");
        }
    }

    #[test]
    fn a_data_dir_that_is_a_file_is_an_error_naming_it() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("plain");
        std::fs::write(&file, b"x").unwrap();
        let err = prepare(&file, Engine::Sled).unwrap_err().to_string();
        assert!(err.contains("plain"), "{err}");
        assert_eq!(std::fs::read(&file).unwrap(), b"x");
    }
}
