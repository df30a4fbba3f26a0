//! The journal: what makes an append durable before (and usually instead of)
//! reaching the storage engine.
//!
//! Appends and deletes (and key-value writes and revocations, which also go
//! straight to the engine) are written as records to numbered segment files
//! (`journal/00000000000000000001.wal`, …). An append only encodes its
//! record into memory; the group-commit flusher's thread calls
//! [`Journal::sync`], which writes every record appended before it and syncs
//! it (one `write` and one `fdatasync` per segment touched), so no shard
//! ever waits on the disk. A failed write or sync fails the journal for good
//! ([`JournalError::Failed`]): nothing is acknowledged after it;
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
//!
//! Segments are zero-filled (and synced) before records go in, and records
//! end at a zero header. So a record overwrites allocated blocks: the file's
//! size and extents do not change, and the group commit's `fdatasync` writes
//! data only. Appending to a growing file instead made every sync commit the
//! file system's journal, which queues behind the engine's fsyncs on the same
//! disk (docs/BENCHMARKS.md has the measurements). The next segment is made
//! by a `journal-spare` thread once the current one is half full; if it is
//! not ready in time the current segment grows past its zero-filled size
//! meanwhile. A spare that a crash left behind holds no records and is
//! removed with the rest on the next start.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use common::proto::Envelope;
use common::reminder::Say;

#[cfg(test)]
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
    /// A write or sync failed earlier: what was written since may not be on
    /// disk, and a record written after a torn one would be lost on replay,
    /// so nothing more is acknowledged until a restart replays the journal.
    #[error("the journal failed earlier ({first}); restart the store to replay it")]
    Failed { first: String },
}

impl JournalError {
    /// The file system said it is full (or the user's quota is).
    pub fn is_no_space(&self) -> bool {
        match self {
            JournalError::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            ),
            _ => false,
        }
    }
}

/// Why the journal takes no new items now (see [`Journal::refusal`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The data directory's free space fell below `[disk] min_free`: the
    /// journal is sound, and admits items again once there is room.
    LowSpace,
    /// A write or sync failed (see [`JournalError::Failed`]); only a
    /// restart, which replays the journal, recovers. `no_space`: the
    /// failure was the disk being full.
    Failed { no_space: bool },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_owned(),
        source,
    }
}

#[derive(Default)]
struct Segment {
    /// Items appended here and neither deleted nor written back and flushed.
    live: u64,
    sealed: bool,
    /// A write-back round that began after this segment was sealed has
    /// flushed the engine.
    covered: bool,
}

/// The next segment, made ahead of need (see the module docs).
enum Spare {
    None,
    /// A `journal-spare` thread is writing segment `current + 1`.
    Preparing,
    /// Segment `current + 1`, zero-filled and synced, with its name synced.
    Ready(File, u64),
    /// The last attempt failed at this instant (retried a second later).
    Failed(Instant),
}

/// Records appended to one segment and not yet handed to the sync thread.
struct Chunk {
    id: u64,
    file: Arc<File>,
    /// Where in the segment `bytes` go.
    at: u64,
    bytes: Vec<u8>,
}

struct Inner {
    /// The current segment's file.
    file: Arc<File>,
    current: u64,
    /// Bytes of records in the current segment (written or not).
    current_len: u64,
    /// The current segment's zero-filled size: writes below it change no
    /// file metadata, so their `fdatasync` does not wait on the file
    /// system's journal (where the engine's own fsyncs queue).
    cap: u64,
    spare: Spare,
    segments: BTreeMap<u64, Segment>,
    /// Records appended since the last [`Journal::sync`] took them, oldest
    /// first (more than one chunk only when a segment was sealed meanwhile).
    /// Appends never do I/O: a `write` can block on the file system's
    /// journal (an mtime update), and a shard waiting on it stalls the
    /// runtime thread it runs on.
    unwritten: Vec<Chunk>,
    /// Emptied buffers of written chunks, for reuse.
    free: Vec<Vec<u8>>,
    /// The first write or sync error (see [`JournalError::Failed`]), and
    /// whether it said the disk was full.
    failed: Option<(String, bool)>,
    /// Records appended since this journal started: the number of the next
    /// one in the replication stream (its log sequence number).
    lsn: u64,
    /// Bytes appended since the last free-space check.
    since_check: u64,
    /// The replication tap (`crate::replication`), while a secondary follows.
    tap: Option<Tap>,
    /// While a secondary catches up, no segment from this one on is
    /// released: it is reading them.
    pinned: Option<u64>,
    /// Held by backups (`crate::backup`): no segment from each of these on
    /// is released while they read them.
    held: Vec<u64>,
}

/// Records copied for the replication stream and not yet taken.
struct Tap {
    bytes: Vec<u8>,
    /// LSN of the first record in `bytes`.
    first: u64,
    /// More than [`TAP_LIMIT`] waited: the follower is too slow and must
    /// start again.
    overflowed: bool,
    /// Woken when `bytes` stops being empty.
    wake: Arc<tokio::sync::Notify>,
}

/// Most bytes of records the tap holds for a follower that does not take
/// them; beyond it the follower is dropped (and must catch up again).
pub const TAP_LIMIT: usize = 64 << 20;

/// Where a replication tap was turned on: every record before `lsn` is in
/// `segments` (oldest first, each with the byte length of its records up
/// to the cut), every later one comes through the tap.
#[derive(Debug, Clone)]
pub struct Cut {
    pub lsn: u64,
    pub segments: Vec<(u64, u64)>,
}

/// What [`Journal::tap_take`] found.
pub enum Taken {
    /// Records `first..first + count`, framed as in a segment.
    Records {
        first: u64,
        count: u64,
        bytes: Vec<u8>,
    },
    Empty,
    /// The tap overflowed (or is off): the stream has a hole.
    Broken,
}

struct Shared {
    dir: PathBuf,
    inner: Mutex<Inner>,
    /// Signalled when a spare is ready (or failed); [`Journal::seal`] waits.
    spare_done: Condvar,
    /// Size of the spares made after the first segment.
    segment_bytes: u64,
    /// Set when the journal is dropped: a spare being made is given up.
    closing: AtomicBool,
    /// Held for the whole of a [`Journal::sync`]: two at once could write a
    /// later chunk and sync it before an earlier one is written, leaving
    /// durable records after a hole that replay stops at.
    writing: Mutex<()>,
    /// The data directory is short of space (`crate::disk`): no new items,
    /// and no spare segments made ahead.
    low_space: AtomicBool,
    /// The free space at the last check and the least there must be
    /// (`[disk] min_free`; 0 until the first check): between two checks,
    /// what was appended since counts against it (see [`Journal::refusal`]).
    free_at_check: AtomicU64,
    min_free: AtomicU64,
    /// Failures to make a spare, logged once and then once a minute.
    spare_failures: common::reminder::Reminder,
}

/// How many bytes of disk an appended byte is counted as between two
/// free-space checks (see [`Journal::refusal`]).
pub const SPACE_PER_BYTE: u64 = 3;

/// How often a condition that lasts is logged again.
pub const REMIND_EVERY: Duration = Duration::from_secs(60);

pub struct Journal {
    shared: Arc<Shared>,
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

/// How a segment's records end.
enum End {
    /// At the end of the file or at a zero header followed only by zeros
    /// (the unused rest of a zero-filled segment).
    Clean,
    /// At a record that is short or corrupt, at this offset.
    Torn(u64),
}

/// Calls `apply` with every record of every segment in `dir`, oldest first.
/// Returns how many records were replayed and whether a torn tail was found.
///
/// A torn tail can only be where the writing stopped: in the last segment
/// that holds records (a spare made ahead of need may follow it, holding
/// none). A torn segment followed by one with records is corruption.
pub fn replay(
    dir: &Path,
    mut apply: impl FnMut(Record) -> Result<(), crate::storage::StorageError>,
) -> Result<Result<(u64, bool), crate::storage::StorageError>, JournalError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let ids = list(dir)?;
    let mut n = 0;
    let mut torn: Option<(PathBuf, u64)> = None;
    for id in ids {
        let path = segment_path(dir, id);
        let mut bytes = Vec::new();
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(io(&path))?;
        let mut at = 0usize;
        let end = loop {
            if at == bytes.len() {
                break End::Clean;
            }
            match parse(&bytes[at..]) {
                Some((rec, used)) => {
                    if let Some((path, offset)) = torn.take() {
                        return Err(JournalError::Corrupt { path, offset });
                    }
                    if let Err(e) = apply(rec) {
                        return Ok(Err(e));
                    }
                    n += 1;
                    at += used;
                }
                None if bytes[at..].iter().all(|b| *b == 0) => break End::Clean,
                None => break End::Torn(at as u64),
            }
        };
        if let End::Torn(offset) = end {
            torn = Some((path, offset));
        }
    }
    Ok(Ok((n, torn.is_some())))
}

/// The buffer of records of segment `current` not yet written (begun at
/// byte `at` of `file` if there is none): where the next record goes.
fn open_chunk<'a>(
    unwritten: &'a mut Vec<Chunk>,
    free: &mut Vec<Vec<u8>>,
    file: &Arc<File>,
    current: u64,
    at: u64,
) -> &'a mut Vec<u8> {
    if unwritten.last().is_none_or(|c| c.id != current) {
        let bytes = free
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(CHUNK_BYTES));
        unwritten.push(Chunk {
            id: current,
            file: Arc::clone(file),
            at,
            bytes,
        });
    }
    &mut unwritten.last_mut().expect("pushed above").bytes
}

/// Copies one framed record into the tap, unless it overflowed.
fn tap_copy(tap: &mut Tap, framed: &[u8]) {
    if tap.overflowed {
        return;
    }
    if tap.bytes.len() + framed.len() > TAP_LIMIT {
        tap.overflowed = true;
        tap.bytes = Vec::new();
        tap.wake.notify_one();
        return;
    }
    let was_empty = tap.bytes.is_empty();
    tap.bytes.extend_from_slice(framed);
    if was_empty {
        tap.wake.notify_one();
    }
}

/// One record from the front of `b`, or `None` if it is short, corrupt or
/// the zero header that ends a segment's records.
fn parse(b: &[u8]) -> Option<(Record, usize)> {
    let len = u32::from_be_bytes(b.get(..4)?.try_into().ok()?) as usize;
    let crc = u32::from_be_bytes(b.get(4..8)?.try_into().ok()?);
    if len == 0 || len > MAX_RECORD {
        return None;
    }
    let payload = b.get(8..8 + len)?;
    if crc32fast::hash(payload) != crc {
        return None;
    }
    let rec = <Record as prost::Message>::decode(payload).ok()?;
    Some((rec, 8 + len))
}

/// Creates segment `id` holding `zeroed` bytes of zeros, synced, with its
/// name synced, positioned at its start. Gives up between steps once
/// `cancel` is set.
fn create_segment(
    dir: &Path,
    id: u64,
    zeroed: u64,
    cancel: &AtomicBool,
) -> Result<File, JournalError> {
    let path = segment_path(dir, id);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(io(&path))?;
    if zeroed > 0 {
        // Synced a little at a time: the group commit's `fdatasync` queues
        // behind whatever the disk holds, and 64 MiB of zeros synced at once
        // held it for a hundred milliseconds and more.
        let chunk = vec![0u8; ZERO_CHUNK];
        let mut left = zeroed;
        while left > 0 {
            if cancel.load(Ordering::Relaxed) {
                return Err(io(&path)(std::io::Error::other("journal closed")));
            }
            let n = left.min(chunk.len() as u64) as usize;
            f.write_all(&chunk[..n]).map_err(io(&path))?;
            f.sync_data().map_err(io(&path))?;
            left -= n as u64;
        }
        f.seek(SeekFrom::Start(0)).map_err(io(&path))?;
    }
    // The new name must survive a crash too.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    Ok(f)
}

/// Size of the first segment after a start (made before the store serves,
/// so kept small); later ones are `[journal] segment_size`, made ahead of need.
const FIRST_SEGMENT_BYTES: u64 = 4 << 20;
/// Zeros written (and synced) per step when making a segment.
const ZERO_CHUNK: usize = 256 << 10;
/// A chunk's buffer to begin with (they are reused).
const CHUNK_BYTES: usize = 64 << 10;
/// After a failed spare, the next attempt waits this long.
const SPARE_RETRY: Duration = Duration::from_secs(1);

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the buffers consistent enough
        // for the next sync to fail loudly rather than hang.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts making segment `current + 1` if none is ready or being made.
    fn request_spare(self: &Arc<Self>, inner: &mut Inner) {
        if self.low_space.load(Ordering::Relaxed) {
            return;
        }
        match inner.spare {
            Spare::None => {}
            Spare::Failed(at) if at.elapsed() >= SPARE_RETRY => {}
            _ => return,
        }
        let id = inner.current + 1;
        let me = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("journal-spare".into())
            .spawn(move || {
                let made = create_segment(&me.dir, id, me.segment_bytes, &me.closing);
                let mut g = me.lock();
                g.spare = match made {
                    Ok(f) => {
                        if let Some(failures) = me.spare_failures.clear() {
                            tracing::info!(failures, "the next journal segment could be made again");
                        }
                        Spare::Ready(f, me.segment_bytes)
                    }
                    Err(e) => {
                        if !me.closing.load(Ordering::Relaxed) {
                            match me.spare_failures.hit(Instant::now()) {
                                Say::First => tracing::warn!(error = %e, "cannot make the next journal segment ahead; the current one grows meanwhile (retried every second, logged again once a minute)"),
                                Say::Again { count } => tracing::warn!(error = %e, failures = count, "still cannot make the next journal segment ahead"),
                                Say::Quiet => {}
                            }
                        }
                        let _ = std::fs::remove_file(segment_path(&me.dir, id));
                        Spare::Failed(Instant::now())
                    }
                };
                drop(g);
                me.spare_done.notify_all();
            });
        inner.spare = match spawned {
            Ok(_) => Spare::Preparing,
            Err(e) => {
                tracing::warn!(error = %e, "cannot start a thread to make the next journal segment");
                Spare::Failed(Instant::now())
            }
        };
    }

    /// `g` again, once no spare is being made.
    fn spare_settled<'a>(
        &self,
        mut g: std::sync::MutexGuard<'a, Inner>,
    ) -> std::sync::MutexGuard<'a, Inner> {
        while let Spare::Preparing = g.spare {
            g = self.spare_done.wait(g).unwrap_or_else(|p| p.into_inner());
        }
        g
    }

    /// Seals the current segment and begins `next`. (The sync thread
    /// writes and syncs the sealed segment's last records before any of
    /// `next`'s: only the last segment may end torn.)
    fn rotate_to(&self, inner: &mut Inner, next: File, cap: u64) {
        inner
            .segments
            .get_mut(&inner.current)
            .expect("listed")
            .sealed = true;
        let id = inner.current + 1;
        inner.segments.insert(id, Segment::default());
        inner.file = Arc::new(next);
        inner.current = id;
        inner.current_len = 0;
        inner.cap = cap;
    }
}

impl Journal {
    /// Removes every segment in `dir` (after a replay whose effects the engine
    /// has flushed) and starts a fresh one; segments are `segment_bytes`
    /// long (the first at most [`FIRST_SEGMENT_BYTES`]).
    pub fn start_fresh(dir: &Path, segment_bytes: u64) -> Result<Journal, JournalError> {
        Journal::start_sized(dir, segment_bytes.min(FIRST_SEGMENT_BYTES), segment_bytes)
    }

    fn start_sized(dir: &Path, first: u64, segment_bytes: u64) -> Result<Journal, JournalError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let old = list(dir)?;
        let next = old.last().map_or(1, |l| l + 1);
        // The old segments go first: were the new one made first, a crash
        // in between would leave an old torn tail before a later segment.
        for id in old {
            let p = segment_path(dir, id);
            std::fs::remove_file(&p).map_err(io(&p))?;
        }
        let file = Arc::new(create_segment(dir, next, first, &AtomicBool::new(false))?);
        let segments = BTreeMap::from([(next, Segment::default())]);
        Ok(Journal {
            shared: Arc::new(Shared {
                dir: dir.to_owned(),
                inner: Mutex::new(Inner {
                    file,
                    current: next,
                    current_len: 0,
                    cap: first,
                    spare: Spare::None,
                    segments,
                    unwritten: Vec::new(),
                    free: Vec::new(),
                    failed: None,
                    lsn: 0,
                    since_check: 0,
                    tap: None,
                    pinned: None,
                    held: Vec::new(),
                }),
                spare_done: Condvar::new(),
                segment_bytes,
                closing: AtomicBool::new(false),
                writing: Mutex::new(()),
                low_space: AtomicBool::new(false),
                free_at_check: AtomicU64::new(0),
                min_free: AtomicU64::new(0),
                spare_failures: common::reminder::Reminder::new(REMIND_EVERY),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.shared.lock()
    }

    /// Buffers `rec` (no I/O: [`Journal::sync`] writes it); returns the
    /// segment it went to. `live` counts it as an item that must be settled
    /// before the segment can go.
    pub fn append(&self, rec: &Record, live: bool) -> Result<u64, JournalError> {
        let mut g = self.lock();
        let inner = &mut *g;
        if let Some((first, _)) = &inner.failed {
            return Err(JournalError::Failed {
                first: first.clone(),
            });
        }
        let current = inner.current;
        let buf = open_chunk(
            &mut inner.unwritten,
            &mut inner.free,
            &inner.file,
            current,
            inner.current_len,
        );
        let start = buf.len();
        buf.extend_from_slice(&[0u8; 8]);
        prost::Message::encode(rec, buf).expect("a Vec grows as needed");
        let len = buf.len() - start - 8;
        if len == 0 {
            // (A record without a kind replays as nothing; and a zero length
            // would read as the end of the segment.)
            buf.truncate(start);
            return Ok(current);
        }
        let crc = crc32fast::hash(&buf[start + 8..]);
        let len = u32::try_from(len).expect("records are small");
        buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
        buf[start + 4..start + 8].copy_from_slice(&crc.to_be_bytes());
        inner.current_len += 8 + u64::from(len);
        inner.since_check += 8 + u64::from(len);
        inner.lsn += 1;
        if let Some(tap) = &mut inner.tap {
            let framed = &buf[start..];
            tap_copy(tap, framed);
        }
        if live {
            inner
                .segments
                .get_mut(&current)
                .expect("the current segment is listed")
                .live += 1;
        }
        self.maybe_rotate(inner);
        Ok(current)
    }

    /// Begins the next segment once the current one is full, and has the
    /// one after made ahead once it is half full.
    fn maybe_rotate(&self, inner: &mut Inner) {
        if inner.current_len >= inner.cap / 2 {
            let full = inner.current_len >= inner.cap;
            match std::mem::replace(&mut inner.spare, Spare::None) {
                Spare::Ready(next, cap) if full => self.shared.rotate_to(inner, next, cap),
                // (Until a spare is ready the current segment grows past its
                // zero-filled size: slower syncs, nothing lost.)
                spare => {
                    inner.spare = spare;
                    self.shared.request_spare(inner);
                }
            }
        }
    }

    /// Buffers records that are already framed (`len crc payload` each, as
    /// another journal wrote them: a secondary's copy of its primary's
    /// stream). `count` records; none counts as a live item.
    pub fn append_framed(&self, framed: &[u8], count: u64) -> Result<(), JournalError> {
        let mut g = self.lock();
        let inner = &mut *g;
        if let Some((first, _)) = &inner.failed {
            return Err(JournalError::Failed {
                first: first.clone(),
            });
        }
        let current = inner.current;
        let buf = open_chunk(
            &mut inner.unwritten,
            &mut inner.free,
            &inner.file,
            current,
            inner.current_len,
        );
        buf.extend_from_slice(framed);
        inner.current_len += framed.len() as u64;
        inner.lsn += count;
        self.maybe_rotate(inner);
        Ok(())
    }

    /// Why new items must be refused now, if they must: the disk is
    /// short of space, or the journal failed.
    ///
    /// Between two checks of the free space, every byte appended since the
    /// last one counts [`SPACE_PER_BYTE`] times against it (an item can be
    /// in the journal and the engine at once, and the engine writes more
    /// than it keeps), so that a burst faster than the checks cannot fill
    /// the disk before the next one.
    pub fn refusal(&self) -> Option<Refusal> {
        let since_check = {
            let g = self.lock();
            if let Some((_, no_space)) = &g.failed {
                return Some(Refusal::Failed {
                    no_space: *no_space,
                });
            }
            g.since_check
        };
        let sh = &self.shared;
        let min_free = sh.min_free.load(Ordering::Relaxed);
        let free = sh.free_at_check.load(Ordering::Relaxed);
        let estimate = free.saturating_sub(since_check.saturating_mul(SPACE_PER_BYTE));
        (sh.low_space.load(Ordering::Relaxed) || (min_free > 0 && estimate < min_free))
            .then_some(Refusal::LowSpace)
    }

    /// The data directory's free space was just read as `free`
    /// (`crate::disk`); below `min_free` it is short of space if `low`.
    pub fn space_checked(&self, free: u64, min_free: u64, low: bool) {
        let mut g = self.lock();
        self.shared.free_at_check.store(free, Ordering::Relaxed);
        self.shared.min_free.store(min_free, Ordering::Relaxed);
        self.shared.low_space.store(low, Ordering::Relaxed);
        g.since_check = 0;
    }

    /// Records appended so far (the next record's LSN).
    pub fn lsn(&self) -> u64 {
        self.lock().lsn
    }

    /// Turns the replication tap on: from now on every record is also kept
    /// for [`Journal::tap_take`], and no segment is released until
    /// [`Journal::tap_off`] or [`Journal::unpin`]. Returns the cut: the
    /// segments holding every earlier record. Call [`Journal::sync`] before
    /// reading them: records before the cut may still be in memory.
    pub fn tap_on(&self, wake: Arc<tokio::sync::Notify>) -> Cut {
        let mut g = self.lock();
        let first = g.lsn;
        g.tap = Some(Tap {
            bytes: Vec::new(),
            first,
            overflowed: false,
            wake,
        });
        let current = g.current;
        let current_len = g.current_len;
        let oldest = g.segments.keys().next().copied().unwrap_or(current);
        g.pinned = Some(oldest);
        let segments = g
            .segments
            .keys()
            .map(|&id| (id, if id == current { current_len } else { u64::MAX }))
            .collect();
        Cut {
            lsn: first,
            segments,
        }
    }

    /// Keeps every segment from the oldest one now on until
    /// [`Journal::let_go`] with the returned id (a backup reads them once
    /// its engine copy is done; catch-ups pin apart from this).
    pub fn hold(&self) -> u64 {
        let mut g = self.lock();
        let oldest = g.segments.keys().next().copied().unwrap_or(g.current);
        g.held.push(oldest);
        oldest
    }

    /// Ends a [`Journal::hold`].
    pub fn let_go(&self, held: u64) {
        let mut g = self.lock();
        if let Some(i) = g.held.iter().position(|h| *h == held) {
            g.held.swap_remove(i);
        }
    }

    /// Every segment kept now, oldest first, each with the byte length of
    /// its records so far (as in [`Cut::segments`]). Call
    /// [`Journal::sync`] before reading them.
    pub fn segments_now(&self) -> Vec<(u64, u64)> {
        let g = self.lock();
        g.segments
            .keys()
            .map(|&id| {
                (
                    id,
                    if id == g.current {
                        g.current_len
                    } else {
                        u64::MAX
                    },
                )
            })
            .collect()
    }

    /// Takes the records the tap gathered.
    pub fn tap_take(&self) -> Taken {
        let mut g = self.lock();
        let Some(tap) = &mut g.tap else {
            return Taken::Broken;
        };
        if tap.overflowed {
            return Taken::Broken;
        }
        if tap.bytes.is_empty() {
            return Taken::Empty;
        }
        let bytes = std::mem::take(&mut tap.bytes);
        let first = tap.first;
        let count = g.lsn - first;
        g.tap.as_mut().expect("checked above").first = g.lsn;
        Taken::Records {
            first,
            count,
            bytes,
        }
    }

    /// Segments may be released again (a catch-up read them).
    pub fn unpin(&self) {
        self.lock().pinned = None;
    }

    /// Turns the tap off (the follower went away) and unpins.
    pub fn tap_off(&self) {
        let mut g = self.lock();
        g.tap = None;
        g.pinned = None;
    }

    /// The records of segment `id` up to byte `upto`, framed, as they are on
    /// disk (ending at the zero header that ends a segment's records).
    pub fn segment_records(&self, id: u64, upto: u64) -> Result<Vec<u8>, JournalError> {
        let path = segment_path(&self.shared.dir, id);
        let mut bytes = Vec::new();
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(io(&path))?;
        let mut at = 0usize;
        let limit = usize::try_from(upto).unwrap_or(usize::MAX).min(bytes.len());
        while at < limit {
            match parse(&bytes[at..]) {
                Some((_, used)) => at += used,
                None => break,
            }
        }
        bytes.truncate(at);
        Ok(bytes)
    }

    /// Calls `apply` with each record of segment `id`, in order (a torn
    /// tail ends it).
    pub fn visit_segment(
        &self,
        id: u64,
        apply: &mut dyn FnMut(Record) -> Result<(), crate::storage::StorageError>,
    ) -> Result<Result<(), crate::storage::StorageError>, JournalError> {
        self.visit_segment_upto(id, u64::MAX, apply)
    }

    /// [`Journal::visit_segment`] for the records up to byte `upto`.
    pub fn visit_segment_upto(
        &self,
        id: u64,
        upto: u64,
        apply: &mut dyn FnMut(Record) -> Result<(), crate::storage::StorageError>,
    ) -> Result<Result<(), crate::storage::StorageError>, JournalError> {
        let bytes = self.segment_records(id, upto)?;
        let mut at = 0;
        while let Some((rec, used)) = parse(&bytes[at..]) {
            if let Err(e) = apply(rec) {
                return Ok(Err(e));
            }
            at += used;
        }
        Ok(Ok(()))
    }

    /// The sealed segments, oldest first.
    pub fn sealed(&self) -> Vec<u64> {
        let g = self.lock();
        g.segments
            .iter()
            .filter(|(_, s)| s.sealed)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Makes every record appended before this call durable: writes them
    /// and syncs their segments. Syncs run one at a time (the group
    /// commit's sync thread is the only caller in the store).
    ///
    /// A failure fails the journal for good (see [`JournalError::Failed`]):
    /// after a failed `fdatasync` the kernel may have dropped the dirty
    /// pages, and a retry that succeeds would not have written them.
    pub fn sync(&self) -> Result<(), JournalError> {
        let _one_at_a_time = self
            .shared
            .writing
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let chunks = {
            let mut g = self.lock();
            if let Some((first, _)) = &g.failed {
                return Err(JournalError::Failed {
                    first: first.clone(),
                });
            }
            std::mem::take(&mut g.unwritten)
        };
        let mut result = Ok(());
        let mut free = Vec::new();
        for mut c in chunks {
            if result.is_ok() {
                // Each chunk synced before the next is written: a sealed
                // segment's last records reach the disk before any of the
                // next segment's can.
                let path = || segment_path(&self.shared.dir, c.id);
                result = c
                    .file
                    .write_all_at(&c.bytes, c.at)
                    .and_then(|()| c.file.sync_data())
                    .map_err(|source| JournalError::Io {
                        path: path(),
                        source,
                    });
            }
            c.bytes.clear();
            if c.bytes.capacity() <= 4 * CHUNK_BYTES {
                free.push(c.bytes);
            }
        }
        let mut g = self.lock();
        if let Err(e) = &result {
            g.failed
                .get_or_insert_with(|| (e.to_string(), e.is_no_space()));
        }
        g.free.append(&mut free);
        g.free.truncate(2);
        result
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
        let mut g = self.shared.spare_settled(self.lock());
        let (next, cap) = match std::mem::replace(&mut g.spare, Spare::None) {
            Spare::Ready(next, cap) => (next, cap),
            // Made here, unfilled: sealing is rare and must not wait.
            _ => (
                create_segment(&self.shared.dir, g.current + 1, 0, &self.shared.closing)?,
                self.shared.segment_bytes,
            ),
        };
        self.shared.rotate_to(&mut g, next, cap);
        Ok(())
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
        let doomed: Vec<u64> = {
            let g = self.lock();
            let pinned = g.pinned;
            let held = g.held.iter().min().copied();
            g.segments
                .iter()
                .take_while(|(id, s)| {
                    s.sealed
                        && s.covered
                        && s.live == 0
                        && pinned.is_none_or(|p| **id < p)
                        && held.is_none_or(|h| **id < h)
                })
                .map(|(id, _)| *id)
                .collect()
        };
        let mut n = 0;
        for id in doomed {
            let p = segment_path(&self.shared.dir, id);
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

impl Drop for Journal {
    /// Waits for a spare being made to give up, so that a journal started
    /// again on the same directory in this process cannot meet its file.
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::Relaxed);
        drop(self.shared.spare_settled(self.lock()));
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

    /// Offsets of the records in `bytes`, and where they end.
    fn offsets(bytes: &[u8]) -> (Vec<usize>, usize) {
        let mut at = 0;
        let mut starts = Vec::new();
        while let Some((_, used)) = parse(&bytes[at..]) {
            starts.push(at);
            at += used;
        }
        (starts, at)
    }

    impl Journal {
        /// Waits until no spare is being made; whether one is ready.
        fn spare_settled(&self) -> bool {
            matches!(
                self.shared.spare_settled(self.lock()).spare,
                Spare::Ready(..)
            )
        }
    }

    #[test]
    fn synced_records_replay_in_order_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::start_fresh(dir.path(), SEGMENT_BYTES).unwrap();
        for s in 1..=3 {
            j.append(&app("bob", s), true).unwrap();
        }
        j.sync().unwrap();
        drop(j);
        let (recs, torn) = replayed(dir.path());
        assert_eq!(recs, [app("bob", 1), app("bob", 2), app("bob", 3)]);
        assert!(!torn);

        // A crash in the middle of the last record (its end never written):
        // it is dropped, the rest kept.
        let seg = segment_path(dir.path(), list(dir.path()).unwrap()[0]);
        let mut bytes = std::fs::read(&seg).unwrap();
        let (starts, end) = offsets(&bytes);
        assert_eq!(starts.len(), 3);
        bytes[end - 3..end].fill(0);
        std::fs::write(&seg, &bytes).unwrap();
        let (recs, torn) = replayed(dir.path());
        assert_eq!(recs, [app("bob", 1), app("bob", 2)]);
        assert!(torn);

        // A flipped byte in the second record fails its CRC: replay stops there.
        bytes[starts[1] + 9] ^= 0xff;
        std::fs::write(&seg, &bytes).unwrap();
        let (recs, _) = replayed(dir.path());
        assert_eq!(recs, [app("bob", 1)]);

        // Starting fresh removes the replayed segments.
        let j = Journal::start_fresh(dir.path(), SEGMENT_BYTES).unwrap();
        j.sync().unwrap();
        assert!(replayed(dir.path()).0.is_empty());
    }

    #[test]
    fn records_overwrite_a_zero_filled_segment_and_end_at_its_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::start_sized(dir.path(), 4096, 8192).unwrap();
        let seg = segment_path(dir.path(), list(dir.path()).unwrap()[0]);
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), 4096, "zero-filled");
        for s in 1..=5 {
            j.append(&app("bob", s), true).unwrap();
        }
        j.sync().unwrap();
        assert_eq!(
            std::fs::metadata(&seg).unwrap().len(),
            4096,
            "the records went into the zero-filled space"
        );
        let (recs, torn) = replayed(dir.path());
        assert_eq!(recs.len(), 5);
        assert!(!torn, "the zeros after the records are a clean end");
    }

    #[test]
    fn appends_stay_in_memory_until_a_sync_writes_them() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::start_sized(dir.path(), 4096, 8192).unwrap();
        j.append(&app("bob", 1), true).unwrap();
        j.append(&app("bob", 2), true).unwrap();
        assert!(replayed(dir.path()).0.is_empty(), "nothing written yet");
        j.sync().unwrap();
        assert_eq!(replayed(dir.path()).0, [app("bob", 1), app("bob", 2)]);
        // The next sync writes after the first one's records.
        j.append(&app("bob", 3), true).unwrap();
        j.sync().unwrap();
        let (recs, torn) = replayed(dir.path());
        assert_eq!(recs, [app("bob", 1), app("bob", 2), app("bob", 3)]);
        assert!(!torn);
    }

    #[test]
    fn a_failed_write_fails_the_journal_for_good() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::start_sized(dir.path(), 4096, 8192).unwrap();
        j.append(&app("bob", 1), true).unwrap();
        j.sync().unwrap();
        // The segment's file swapped for one opened read-only: the next
        // write fails as a full or failing disk would make it.
        let seg = segment_path(dir.path(), 1);
        j.lock().file = Arc::new(File::open(&seg).unwrap());
        j.append(&app("bob", 2), true).unwrap();
        let err = j.sync().unwrap_err();
        assert!(matches!(err, JournalError::Io { .. }), "{err}");
        // Nothing after it is taken or acknowledged, not even a record that
        // would now be written without error.
        j.lock().file = Arc::new(std::fs::OpenOptions::new().write(true).open(&seg).unwrap());
        let err = j.append(&app("bob", 3), true).unwrap_err();
        assert!(matches!(err, JournalError::Failed { .. }), "{err}");
        assert!(err.to_string().contains("restart"), "{err}");
        let err = j.sync().unwrap_err();
        assert!(matches!(err, JournalError::Failed { .. }), "{err}");
        assert_eq!(replayed(dir.path()).0, [app("bob", 1)]);
    }

    #[test]
    fn a_spare_made_at_half_full_takes_over_when_the_segment_is_full() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::start_sized(dir.path(), 1024, 8192).unwrap();
        let mut seq = 0;
        let mut append = |j: &Journal| {
            seq += 1;
            j.append(&app("bob", seq), true).unwrap()
        };
        while j.stats().1 < 512 {
            assert_eq!(append(&j), 1);
        }
        assert!(j.spare_settled(), "a spare was made once half full");
        let spare = segment_path(dir.path(), 2);
        assert_eq!(std::fs::metadata(&spare).unwrap().len(), 8192);
        while j.stats().1 < 1024 && j.lock().current == 1 {
            append(&j);
        }
        assert_eq!(j.lock().current, 2, "the full segment was sealed");
        assert_eq!(append(&j), 2);
        j.sync().unwrap();
        assert_eq!(std::fs::metadata(&spare).unwrap().len(), 8192);
        let (recs, torn) = replayed(dir.path());
        assert!(!torn);
        assert_eq!(recs, (1..=seq).map(|s| app("bob", s)).collect::<Vec<_>>());
    }

    #[test]
    fn the_segment_grows_while_no_spare_can_be_made() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the spare should go makes making it fail.
        let blocker = segment_path(dir.path(), 2);
        let j = Journal::start_sized(dir.path(), 512, 8192).unwrap();
        std::fs::create_dir(&blocker).unwrap();
        for s in 1..=40 {
            assert_eq!(j.append(&app("bob", s), true).unwrap(), 1);
            // (Settle each attempt, so the append that fills the segment
            // knows the spare failed.)
            assert!(!j.spare_settled());
        }
        j.sync().unwrap();
        let seg = segment_path(dir.path(), 1);
        assert!(std::fs::metadata(&seg).unwrap().len() > 512);
        std::fs::remove_dir(&blocker).unwrap();
        let (recs, torn) = replayed(dir.path());
        assert!(!torn);
        assert_eq!(recs, (1..=40).map(|s| app("bob", s)).collect::<Vec<_>>());
    }

    #[test]
    fn a_torn_tail_may_be_followed_only_by_segments_without_records() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::start_sized(dir.path(), 4096, 4096).unwrap();
        for s in 1..=3 {
            j.append(&app("bob", s), true).unwrap();
        }
        j.sync().unwrap();
        drop(j);
        // A crash tore the last record while the spare was being made.
        let seg = segment_path(dir.path(), 1);
        let mut bytes = std::fs::read(&seg).unwrap();
        let (_, end) = offsets(&bytes);
        bytes[end - 1] ^= 0xff;
        std::fs::write(&seg, &bytes).unwrap();
        std::fs::write(segment_path(dir.path(), 2), vec![0u8; 1000]).unwrap();
        let (recs, torn) = replayed(dir.path());
        assert_eq!(recs.len(), 2);
        assert!(torn);

        // Records after a torn segment: something else went wrong.
        let j2 = Journal::start_sized(dir.path(), 4096, 4096).unwrap();
        j2.append(&app("bob", 9), true).unwrap();
        j2.sync().unwrap();
        drop(j2);
        let fresh = list(dir.path()).unwrap();
        std::fs::write(segment_path(dir.path(), fresh[0] - 1), &bytes).unwrap();
        let err = replay(dir.path(), |_| Ok(())).err().unwrap();
        assert!(matches!(err, JournalError::Corrupt { .. }), "{err}");
    }

    #[test]
    fn corruption_before_the_last_segment_refuses_to_start() {
        // A flipped byte in a record; a byte after the zeros that end the
        // records (torn too, as only the last segment may be).
        for (at, flip) in [(9, 0xff), (4000, 1)] {
            let dir = tempfile::tempdir().unwrap();
            let j = Journal::start_sized(dir.path(), 4096, 4096).unwrap();
            j.append(&app("bob", 1), true).unwrap();
            j.seal().unwrap();
            j.append(&app("bob", 2), true).unwrap();
            j.sync().unwrap();
            let first = segment_path(dir.path(), list(dir.path()).unwrap()[0]);
            let mut bytes = std::fs::read(&first).unwrap();
            assert_eq!(bytes.len(), 4096, "zero-filled");
            bytes[at] ^= flip;
            std::fs::write(&first, &bytes).unwrap();
            let err = replay(dir.path(), |_| Ok(())).err().unwrap();
            assert!(
                matches!(err, JournalError::Corrupt { .. }),
                "byte {at}: {err}"
            );
        }
    }

    #[test]
    fn a_segment_goes_only_when_settled_sealed_and_covered() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::start_fresh(dir.path(), SEGMENT_BYTES).unwrap();
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

    #[test]
    fn a_backup_holds_segments_apart_from_a_catch_up_pin() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::start_fresh(dir.path(), SEGMENT_BYTES).unwrap();
        let s1 = j.append(&app("bob", 1), true).unwrap();
        let held = j.hold();
        assert_eq!(held, s1);
        // A catch-up pins and unpins meanwhile: the backup's hold stays.
        let _cut = j.tap_on(Arc::new(tokio::sync::Notify::new()));
        j.unpin();
        j.seal().unwrap();
        j.settle(s1, 1);
        let r = j.round_begin();
        j.round_flushed(r);
        assert_eq!(j.release().unwrap(), 0, "held by the backup");
        // The cut names the held segment (sealed) and the current one.
        let s2 = j.append(&app("bob", 2), false).unwrap();
        let now = j.segments_now();
        assert_eq!(now.len(), 2, "{now:?}");
        assert_eq!(now[0], (s1, u64::MAX));
        assert_eq!(now[1].0, s2);
        j.sync().unwrap();
        let mut seen = Vec::new();
        for (id, upto) in now {
            j.visit_segment_upto(id, upto, &mut |r| {
                seen.push(r);
                Ok(())
            })
            .unwrap()
            .unwrap();
        }
        assert_eq!(seen, [app("bob", 1), app("bob", 2)]);
        j.let_go(held);
        assert_eq!(j.release().unwrap(), 1, "let go");
    }
}
