//! The journal: what makes an append durable before (and usually instead of)
//! reaching the storage engine.
//!
//! Appends and deletes (and key-value writes and revocations, which also go
//! straight to the engine) are written as records to numbered segment files
//! (`journal/00000000000000000001.wal`, …). The group-commit flusher calls
//! [`Journal::sync`] (one `fdatasync` for every record written before it);
//! the write-back cache (`crate::home`) keeps the mailbox items in memory and
//! writes an item to the engine only if it is still undelivered after the sync
//! delay. A segment is deleted once every item appended in it was either
//! deleted or written to the engine and flushed there, and a write-back round
//! that began after the segment was sealed has flushed the engine (so the
//! engine holds every user's sequence counter as of that segment).
//!
//! Record: `len:u32be crc32:u32be payload`, payload a protobuf [`Record`]. On
//! start the store replays every segment into the engine, flushes it and
//! removes the segments. A torn record (short or failing its CRC) can only be
//! the last one written before a crash; replay stops there.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use common::proto::Envelope;

/// Segments are sealed and a new one begun past this size.
const SEGMENT_BYTES: u64 = 64 << 20;
/// Largest record replay accepts (an envelope plus its routing).
const MAX_RECORD: usize = common::link::MAX_LINK_FRAME + 1024;

#[derive(Clone, PartialEq, prost::Message)]
pub struct Record {
    #[prost(oneof = "record::Kind", tags = "1, 2, 3, 4")]
    pub kind: Option<record::Kind>,
}

pub mod record {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Kind {
        #[prost(message, tag = "1")]
        Append(super::AppendRecord),
        #[prost(message, tag = "2")]
        Delete(super::DeleteRecord),
        /// A key-value record as stored (written through to the engine too).
        #[prost(message, tag = "3")]
        Kv(super::KvRecord),
        /// A device generation revoked (written through to the engine too).
        #[prost(message, tag = "4")]
        Revoke(super::RevokeRecord),
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct KvRecord {
    #[prost(uint32, tag = "1")]
    pub space: u32,
    #[prost(string, tag = "2")]
    pub key: String,
    #[prost(uint64, tag = "3")]
    pub version: u64,
    #[prost(bytes = "vec", tag = "4")]
    pub value: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RevokeRecord {
    #[prost(string, tag = "1")]
    pub user: String,
    #[prost(uint32, tag = "2")]
    pub device: u32,
    #[prost(uint32, tag = "3")]
    pub generation: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AppendRecord {
    #[prost(string, tag = "1")]
    pub user: String,
    #[prost(uint64, tag = "2")]
    pub seq: u64,
    #[prost(message, optional, tag = "3")]
    pub envelope: Option<Envelope>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DeleteRecord {
    #[prost(string, tag = "1")]
    pub user: String,
    #[prost(uint64, repeated, tag = "2")]
    pub seqs: Vec<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "journal segment {path} is corrupt at byte {offset} and is not the last one; refusing to guess (move it aside to start without it)"
    )]
    Corrupt { path: PathBuf, offset: u64 },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_owned(),
        source,
    }
}

struct Segment {
    /// Items appended here and neither deleted nor written back and flushed.
    live: u64,
    sealed: bool,
    /// A write-back round that began after this segment was sealed has
    /// flushed the engine.
    covered: bool,
}

struct Inner {
    writer: BufWriter<File>,
    /// The current segment's file, for `fdatasync` outside the lock.
    file: Arc<File>,
    current: u64,
    current_len: u64,
    segments: BTreeMap<u64, Segment>,
    scratch: Vec<u8>,
}

pub struct Journal {
    dir: PathBuf,
    inner: Mutex<Inner>,
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.wal"))
}

/// The segment ids in `dir`, oldest first.
fn list(dir: &Path) -> Result<Vec<u64>, JournalError> {
    let mut ids = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io(dir))? {
        let e = e.map_err(io(dir))?;
        let name = e.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".wal")) else {
            continue;
        };
        if let Ok(id) = stem.parse::<u64>() {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Calls `apply` with every record of every segment in `dir`, oldest first,
/// stopping at a torn tail of the last segment. Returns how many records were
/// replayed and whether a torn tail was found.
pub fn replay(
    dir: &Path,
    mut apply: impl FnMut(Record) -> Result<(), crate::storage::StorageError>,
) -> Result<Result<(u64, bool), crate::storage::StorageError>, JournalError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let ids = list(dir)?;
    let mut n = 0;
    let mut torn = false;
    for (i, id) in ids.iter().enumerate() {
        let path = segment_path(dir, *id);
        let mut bytes = Vec::new();
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(io(&path))?;
        let mut at = 0usize;
        while at < bytes.len() {
            match parse(&bytes[at..]) {
                Some((rec, used)) => {
                    if let Err(e) = apply(rec) {
                        return Ok(Err(e));
                    }
                    n += 1;
                    at += used;
                }
                None if i + 1 == ids.len() => {
                    torn = true;
                    break;
                }
                None => {
                    return Err(JournalError::Corrupt {
                        path,
                        offset: at as u64,
                    });
                }
            }
        }
    }
    Ok(Ok((n, torn)))
}

/// One record from the front of `b`, or `None` if it is short or corrupt.
fn parse(b: &[u8]) -> Option<(Record, usize)> {
    let len = u32::from_be_bytes(b.get(..4)?.try_into().ok()?) as usize;
    let crc = u32::from_be_bytes(b.get(4..8)?.try_into().ok()?);
    if len > MAX_RECORD {
        return None;
    }
    let payload = b.get(8..8 + len)?;
    if crc32fast::hash(payload) != crc {
        return None;
    }
    let rec = <Record as prost::Message>::decode(payload).ok()?;
    Some((rec, 8 + len))
}

fn create_segment(dir: &Path, id: u64) -> Result<(BufWriter<File>, Arc<File>), JournalError> {
    let path = segment_path(dir, id);
    let f = std::fs::OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)
        .map_err(io(&path))?;
    // The new name must survive a crash too.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    let sync = Arc::new(f.try_clone().map_err(io(&path))?);
    Ok((BufWriter::with_capacity(1 << 16, f), sync))
}

impl Journal {
    /// Removes every segment in `dir` (after a replay whose effects the engine
    /// has flushed) and starts a fresh one.
    pub fn start_fresh(dir: &Path) -> Result<Journal, JournalError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let old = list(dir)?;
        let next = old.last().map_or(1, |l| l + 1);
        let (writer, file) = create_segment(dir, next)?;
        for id in old {
            let p = segment_path(dir, id);
            std::fs::remove_file(&p).map_err(io(&p))?;
        }
        let mut segments = BTreeMap::new();
        segments.insert(
            next,
            Segment {
                live: 0,
                sealed: false,
                covered: false,
            },
        );
        Ok(Journal {
            dir: dir.to_owned(),
            inner: Mutex::new(Inner {
                writer,
                file,
                current: next,
                current_len: 0,
                segments,
                scratch: Vec::with_capacity(4096),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the buffers consistent enough
        // for the next sync to fail loudly rather than hang.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Buffers `rec`; returns the segment it went to. `live` counts it as an
    /// item that must be settled before the segment can go.
    pub fn append(&self, rec: &Record, live: bool) -> Result<u64, JournalError> {
        let mut g = self.lock();
        let inner = &mut *g;
        inner.scratch.clear();
        prost::Message::encode(rec, &mut inner.scratch).expect("a Vec grows as needed");
        let len = u32::try_from(inner.scratch.len()).expect("records are small");
        let crc = crc32fast::hash(&inner.scratch);
        let mut head = [0u8; 8];
        head[..4].copy_from_slice(&len.to_be_bytes());
        head[4..].copy_from_slice(&crc.to_be_bytes());
        // (The path is built only for an error: formatting it for every
        // append cost a few percent of the store's CPU.)
        let current = inner.current;
        let failed = |source| JournalError::Io {
            path: segment_path(&self.dir, current),
            source,
        };
        inner.writer.write_all(&head).map_err(failed)?;
        inner.writer.write_all(&inner.scratch).map_err(failed)?;
        inner.current_len += 8 + u64::from(len);
        let id = inner.current;
        if live {
            inner
                .segments
                .get_mut(&id)
                .expect("the current segment is listed")
                .live += 1;
        }
        if inner.current_len >= SEGMENT_BYTES {
            self.rotate(inner)?;
        }
        Ok(id)
    }

    /// Seals the current segment (written and synced) and begins the next.
    fn rotate(&self, inner: &mut Inner) -> Result<(), JournalError> {
        let p = segment_path(&self.dir, inner.current);
        inner.writer.flush().map_err(io(&p))?;
        inner.file.sync_data().map_err(io(&p))?;
        let next = inner.current + 1;
        let (writer, file) = create_segment(&self.dir, next)?;
        inner
            .segments
            .get_mut(&inner.current)
            .expect("listed")
            .sealed = true;
        inner.segments.insert(
            next,
            Segment {
                live: 0,
                sealed: false,
                covered: false,
            },
        );
        inner.writer = writer;
        inner.file = file;
        inner.current = next;
        inner.current_len = 0;
        Ok(())
    }

    /// Makes every record appended before this call durable.
    pub fn sync(&self) -> Result<(), JournalError> {
        let (file, id) = {
            let mut g = self.lock();
            let id = g.current;
            g.writer.flush().map_err(io(&segment_path(&self.dir, id)))?;
            (Arc::clone(&g.file), id)
        };
        file.sync_data().map_err(io(&segment_path(&self.dir, id)))
    }

    /// `n` items of `segment` were deleted or written back and flushed.
    pub fn settle(&self, segment: u64, n: u64) {
        if let Some(s) = self.lock().segments.get_mut(&segment) {
            s.live = s.live.saturating_sub(n);
        }
    }

    /// Seals the current segment now (clean shutdown), so that it can be
    /// released like the others.
    pub fn seal(&self) -> Result<(), JournalError> {
        let mut g = self.lock();
        self.rotate(&mut g)
    }

    /// Called when a write-back round begins; pass the result to
    /// [`Journal::round_flushed`] once that round's engine flush returned.
    pub fn round_begin(&self) -> u64 {
        self.lock().current
    }

    /// Every segment sealed before the round began is covered.
    pub fn round_flushed(&self, begun_at: u64) {
        let mut g = self.lock();
        for (id, s) in g.segments.range_mut(..begun_at) {
            debug_assert!(s.sealed, "segment {id} before the current one is sealed");
            s.covered = true;
        }
    }

    /// Deletes the oldest segments that nothing needs any more; returns how
    /// many went.
    ///
    /// The files are deleted without holding the journal's lock (a big
    /// file's unlink can take milliseconds, and appends wait on that lock).
    /// Only the write-back task releases, so the candidates cannot change
    /// meanwhile; a segment whose file is not deleted stays listed.
    pub fn release(&self) -> Result<usize, JournalError> {
        let doomed: Vec<u64> = self
            .lock()
            .segments
            .iter()
            .take_while(|(_, s)| s.sealed && s.covered && s.live == 0)
            .map(|(id, _)| *id)
            .collect();
        let mut n = 0;
        for id in doomed {
            let p = segment_path(&self.dir, id);
            std::fs::remove_file(&p).map_err(io(&p))?;
            self.lock().segments.remove(&id);
            n += 1;
        }
        Ok(n)
    }

    /// (segments on disk, bytes in the current segment).
    pub fn stats(&self) -> (usize, u64) {
        let g = self.lock();
        (g.segments.len(), g.current_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn app(user: &str, seq: u64) -> Record {
        Record {
            kind: Some(record::Kind::Append(AppendRecord {
                user: user.into(),
                seq,
                envelope: Some(Envelope {
                    from: "alice".into(),
                    id: Bytes::from(vec![seq as u8; 16]),
                    ..Default::default()
                }),
            })),
        }
    }

    fn replayed(dir: &Path) -> (Vec<Record>, bool) {
        let mut out = Vec::new();
        let (_, torn) = replay(dir, |r| {
            out.push(r);
            Ok(())
        })
        .unwrap()
        .unwrap();
        (out, torn)
    }

    #[test]
    fn synced_records_replay_in_order_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::start_fresh(dir.path()).unwrap();
        for s in 1..=3 {
            j.append(&app("bob", s), true).unwrap();
        }
        j.sync().unwrap();
        drop(j);
        let (recs, torn) = replayed(dir.path());
        assert_eq!(recs, [app("bob", 1), app("bob", 2), app("bob", 3)]);
        assert!(!torn);

        // A crash in the middle of the last record: it is dropped, the rest kept.
        let seg = segment_path(dir.path(), list(dir.path()).unwrap()[0]);
        let len = std::fs::metadata(&seg).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
        f.set_len(len - 3).unwrap();
        let (recs, torn) = replayed(dir.path());
        assert_eq!(recs, [app("bob", 1), app("bob", 2)]);
        assert!(torn);

        // A flipped byte in the second record fails its CRC: replay stops there.
        let mut bytes = std::fs::read(&seg).unwrap();
        let first_len = 8 + u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
        bytes[first_len + 9] ^= 0xff;
        std::fs::write(&seg, &bytes).unwrap();
        let (recs, _) = replayed(dir.path());
        assert_eq!(recs, [app("bob", 1)]);

        // Starting fresh removes the replayed segments.
        let j = Journal::start_fresh(dir.path()).unwrap();
        j.sync().unwrap();
        assert!(replayed(dir.path()).0.is_empty());
    }

    #[test]
    fn corruption_before_the_last_segment_refuses_to_start() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::start_fresh(dir.path()).unwrap();
        j.append(&app("bob", 1), true).unwrap();
        j.seal().unwrap();
        j.append(&app("bob", 2), true).unwrap();
        j.sync().unwrap();
        let first = segment_path(dir.path(), list(dir.path()).unwrap()[0]);
        let mut bytes = std::fs::read(&first).unwrap();
        bytes[9] ^= 0xff;
        std::fs::write(&first, &bytes).unwrap();
        let err = replay(dir.path(), |_| Ok(())).err().unwrap();
        assert!(matches!(err, JournalError::Corrupt { .. }), "{err}");
    }

    #[test]
    fn a_segment_goes_only_when_settled_sealed_and_covered() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::start_fresh(dir.path()).unwrap();
        let s1 = j.append(&app("bob", 1), true).unwrap();
        j.append(&app("bob", 2), true).unwrap();
        j.seal().unwrap();
        assert_eq!(j.release().unwrap(), 0, "live items");
        j.settle(s1, 2);
        assert_eq!(j.release().unwrap(), 0, "no round covered it yet");
        let r = j.round_begin();
        j.round_flushed(r);
        assert_eq!(j.release().unwrap(), 1);
        assert_eq!(
            list(dir.path()).unwrap().len(),
            1,
            "the current segment stays"
        );
        // A round begun before a seal does not cover the sealed segment.
        let s2 = j.append(&app("bob", 3), true).unwrap();
        let r = j.round_begin();
        j.seal().unwrap();
        j.settle(s2, 1);
        j.round_flushed(r);
        assert_eq!(j.release().unwrap(), 0);
    }
}
