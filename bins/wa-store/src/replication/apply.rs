//! Journal records into the engine: what a start does with the journal a
//! crash left ([`crate::recover`]), and what a secondary does with the
//! stream every `sync_delay` ([`round`]).

use std::collections::HashSet;

use crate::journal::{Journal, JournalError, Record, record::Kind};
use crate::storage::{self, Storage, StorageError};

/// Applies one journal record to the engine. Replaying a record twice, or
/// over an engine that already holds a later state, ends in the same place:
/// an append whose item is there is skipped, a delete of a missing
/// item does nothing, key-value records and revocations carry their whole
/// state (and a later one comes later in the journal), counters only rise.
pub fn apply_record(storage: &dyn Storage, rec: Record) -> Result<(), StorageError> {
    match rec.kind {
        Some(Kind::Append(a)) => {
            let Some(envelope) = a.envelope else {
                return Ok(());
            };
            let key = storage::DedupeKey {
                to: &a.user,
                from: &envelope.from,
                kind: envelope.item_kind(),
                id: &envelope.id,
            };
            // Skipped only if the item itself is there: a copy of an engine
            // taken while it changed (a secondary's catch-up) may hold an
            // item's dedupe entry without the item. An item that was
            // delivered since is stored again here and deleted again by
            // its delete record, which comes later in the journal.
            let present = match storage.dedupe(&key)? {
                Some(o) if o.seq == a.seq => storage
                    .read(&a.user, a.seq, 1)?
                    .first()
                    .is_some_and(|i| i.seq == a.seq),
                Some(_) => true,
                None => false,
            };
            if !present {
                storage.append(&a.user, a.seq, &envelope, &key)?;
            }
            Ok(())
        }
        Some(Kind::Delete(d)) => storage.delete(&d.user, &d.seqs).map(|_| ()),
        Some(Kind::Kv(k)) => storage.kv_put(k.space as u8, &k.key, k.version, &k.value),
        Some(Kind::Revoke(r)) => storage.set_min_generation(&r.user, r.device, r.generation),
        None => Ok(()),
    }
}

/// What went wrong in a [`round`].
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A secondary's round: seals the current segment (if it holds records),
/// applies every sealed segment to the engine, flushes it and deletes the
/// segments. An item appended and deleted within the round's segments
/// never reaches the engine (the secondary's write-back). Returns the
/// records applied.
pub fn round(journal: &Journal, storage: &dyn Storage) -> Result<u64, ApplyError> {
    if journal.stats().1 > 0 {
        journal.seal()?;
    }
    let begun = journal.round_begin();
    let ids: Vec<u64> = journal
        .sealed()
        .into_iter()
        .filter(|&id| id < begun)
        .collect();
    if ids.is_empty() {
        return Ok(0);
    }
    let mut deleted: HashSet<(String, u64)> = HashSet::new();
    for &id in &ids {
        journal.visit_segment(id, &mut |rec| {
            if let Some(Kind::Delete(d)) = rec.kind {
                deleted.extend(d.seqs.into_iter().map(|s| (d.user.clone(), s)));
            }
            Ok(())
        })??;
    }
    let mut applied = 0;
    for &id in &ids {
        journal.visit_segment(id, &mut |rec| {
            if let Some(Kind::Append(a)) = &rec.kind
                && deleted.contains(&(a.user.clone(), a.seq))
            {
                // Still, the counter must not fall behind a skipped item.
                if storage.last_seq(&a.user)? < a.seq {
                    storage.set_last_seq(&a.user, a.seq)?;
                }
                return Ok(());
            }
            applied += 1;
            apply_record(storage, rec)
        })??;
    }
    storage.flush()?;
    journal.round_flushed(begun);
    journal.release()?;
    Ok(applied)
}
