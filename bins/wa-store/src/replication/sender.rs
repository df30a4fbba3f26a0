//! The primary's end of a replication link: the catch-up copy, then the
//! stream (docs/ARCHITECTURE.md, "Replication").

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use common::link::{LinkDown, LinkUp, Replicate, SnapshotDone, SnapshotPage, link_down, link_up};
use common::wire::FrameReader;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::frames::{FRAME_RECORDS_BYTES, split};
use super::{Replication, blocking};
use crate::journal::{Journal, Taken};
use crate::storage::Storage;

/// Engine bytes per catch-up page.
const PAGE_BYTES: usize = 256 << 10;

/// What a follower link needs from the primary.
pub struct Source {
    pub replication: Arc<Replication>,
    pub journal: Arc<Journal>,
    pub storage: Arc<dyn Storage>,
    /// The engine's size on disk, for the secondary's progress.
    pub engine_bytes: Arc<dyn Fn() -> u64 + Send + Sync>,
}

#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error("write to the secondary: {0}")]
    Io(#[from] std::io::Error),
    #[error("reading the journal or the engine: {0}")]
    Read(String),
    #[error("the secondary fell more than {} MiB behind", crate::journal::TAP_LIMIT >> 20)]
    Overflowed,
    #[error("the secondary did not acknowledge within replication.wait")]
    Cut,
    #[error("the secondary closed the link")]
    Gone,
}

impl From<String> for SendError {
    fn from(s: String) -> Self {
        SendError::Read(s)
    }
}

/// Serves one follower until it goes, is cut off, or `stop`.
pub async fn serve<R, W>(
    reader: FrameReader<R>,
    mut w: W,
    source: Arc<Source>,
    stop: CancellationToken,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin,
{
    let repl = Arc::clone(&source.replication);
    let (id, cut) = repl.attach();
    let gone = CancellationToken::new();
    let acks = tokio::spawn(read_acks(reader, Arc::clone(&repl), id, gone.clone()));
    let wake = Arc::new(Notify::new());
    let cut_point = source.journal.tap_on(Arc::clone(&wake));
    tracing::info!(
        lsn = cut_point.lsn,
        segments = cut_point.segments.len(),
        "a secondary follows; sending the catch-up copy"
    );
    let outcome = tokio::select! {
        r = stream(&mut w, &source, id, cut_point, &wake) => r,
        () = cut.cancelled() => Err(SendError::Cut),
        () = gone.cancelled() => Err(SendError::Gone),
        () = stop.cancelled() => Ok(()),
    };
    match outcome {
        Ok(()) => tracing::info!("replication link closed at shutdown"),
        Err(e) => tracing::warn!(error = %e, "replication link to the secondary ended"),
    }
    let _ = w.shutdown().await;
    acks.abort();
    repl.detach(id);
}

async fn read_acks<R: AsyncRead + Unpin>(
    mut reader: FrameReader<R>,
    repl: Arc<Replication>,
    id: u64,
    gone: CancellationToken,
) {
    loop {
        match reader.read::<LinkUp>().await {
            Ok(Some(LinkUp {
                kind: Some(link_up::Kind::ReplicaAck(a)),
            })) => repl.ack(id, a.lsn, a.caught_up),
            Ok(Some(_)) => {
                tracing::warn!("a secondary sent something other than ReplicaAck; closing");
                break;
            }
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(error = %e, "reading the secondary's acknowledgements");
                break;
            }
        }
    }
    gone.cancel();
}

async fn send<W: AsyncWrite + Unpin>(
    w: &mut W,
    scratch: &mut BytesMut,
    kind: link_down::Kind,
) -> Result<(), SendError> {
    let frame = LinkDown { kind: Some(kind) };
    common::wire::write_frame(w, &frame, scratch).await?;
    Ok(())
}

async fn stream<W: AsyncWrite + Unpin>(
    w: &mut W,
    source: &Source,
    id: u64,
    cut: crate::journal::Cut,
    wake: &Notify,
) -> Result<(), SendError> {
    let repl = &source.replication;
    let mut scratch = BytesMut::new();
    // Every record before the cut must be on disk before it is read back.
    let journal = Arc::clone(&source.journal);
    blocking(move || journal.sync().map_err(|e| e.to_string())).await?;
    for (segment, upto) in cut.segments {
        let journal = Arc::clone(&source.journal);
        let bytes = blocking(move || {
            journal
                .segment_records(segment, upto)
                .map_err(|e| e.to_string())
        })
        .await?;
        let bytes = Bytes::from(bytes);
        for (piece, _) in split(&bytes, FRAME_RECORDS_BYTES) {
            let frame = Replicate {
                first_lsn: 0,
                count: 0,
                records: bytes.slice_ref(piece),
                base: true,
                sent_at_ms: 0,
            };
            send(w, &mut scratch, link_down::Kind::Replicate(frame)).await?;
        }
    }
    // Where the numbered stream begins, even if nothing follows for a while.
    let start = Replicate {
        first_lsn: cut.lsn,
        count: 0,
        records: Bytes::new(),
        base: false,
        sent_at_ms: 0,
    };
    send(w, &mut scratch, link_down::Kind::Replicate(start)).await?;
    w.flush().await?;
    repl.stats
        .catch_ups
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let total_bytes = (source.engine_bytes)();
    let mut after: Option<Vec<u8>> = None;
    let mut copying = true;
    let mut pages = 0u64;
    let mut sent_bytes = 0u64;
    loop {
        match source.journal.tap_take() {
            Taken::Records {
                first,
                count,
                bytes,
            } => {
                // (The frames share the taken buffer: no copy per record.)
                let bytes = Bytes::from(bytes);
                let mut lsn = first;
                let sent_at_ms = common::fsutil::now_ms();
                for (piece, n) in split(&bytes, FRAME_RECORDS_BYTES) {
                    let frame = Replicate {
                        first_lsn: lsn,
                        count: n,
                        records: bytes.slice_ref(piece),
                        base: false,
                        sent_at_ms,
                    };
                    send(w, &mut scratch, link_down::Kind::Replicate(frame)).await?;
                    lsn += n;
                }
                debug_assert_eq!(lsn, first + count);
                w.flush().await?;
                repl.sent(id, first + count);
                continue;
            }
            Taken::Broken => return Err(SendError::Overflowed),
            Taken::Empty => {}
        }
        if copying {
            let storage = Arc::clone(&source.storage);
            let from = after.clone();
            let page = blocking(move || {
                storage
                    .page_after(from.as_deref(), PAGE_BYTES)
                    .map_err(|e| e.to_string())
            })
            .await?;
            if page.is_empty() {
                send(
                    w,
                    &mut scratch,
                    link_down::Kind::SnapshotDone(SnapshotDone { pages }),
                )
                .await?;
                w.flush().await?;
                source.journal.unpin();
                copying = false;
                tracing::info!(pages, bytes = sent_bytes, "catch-up copy sent; streaming");
                continue;
            }
            after = page.last().map(|(k, _)| k.clone());
            let bytes: u64 = page.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum();
            sent_bytes += bytes;
            pages += 1;
            repl.stats
                .catch_up_bytes
                .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
            let (keys, values) = page.into_iter().unzip();
            let frame = SnapshotPage {
                keys,
                values,
                sent_bytes,
                total_bytes: total_bytes.max(sent_bytes),
            };
            send(w, &mut scratch, link_down::Kind::SnapshotPage(frame)).await?;
            w.flush().await?;
            continue;
        }
        wake.notified().await;
    }
}
