//! The journal as a shard sees it: a record is buffered in memory and made
//! durable by a sync elsewhere (the group commit, `crate::flusher`), and an
//! item leaving memory settles its segment.
//!
//! A seam, not a second journal: [`crate::journal::Journal`] is the one
//! implementation outside tests. The shard's model test
//! (`shard::model_tests`) puts an in-memory one behind it, so that the
//! state machine runs with no I/O at all.

use crate::journal::{Journal, JournalError, Record, Refusal};

/// What a shard asks of the journal.
pub(in crate::home) trait Log: Send + Sync {
    /// Buffers `rec` and returns the segment it went to. `live` counts it
    /// as an item that must be settled before the segment can go.
    fn append(&self, rec: &Record, live: bool) -> Result<u64, JournalError>;

    /// `n` live items of `segment` no longer need it.
    fn settle(&self, segment: u64, n: u64);

    /// Why new items must be refused now, if they must.
    fn refusal(&self) -> Option<Refusal>;
}

impl Log for Journal {
    fn append(&self, rec: &Record, live: bool) -> Result<u64, JournalError> {
        Journal::append(self, rec, live)
    }

    fn settle(&self, segment: u64, n: u64) {
        Journal::settle(self, segment, n);
    }

    fn refusal(&self) -> Option<Refusal> {
        Journal::refusal(self)
    }
}
