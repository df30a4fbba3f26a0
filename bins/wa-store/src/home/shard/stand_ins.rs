//! Tests: in-memory stand-ins for the shard's I/O, and only for its I/O:
//! the engine under the real mailbox layer, and the journal. The state
//! machine itself runs unchanged over them.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::Mutex;

use super::Log;
use crate::journal::{JournalError, Record};
use crate::storage::StorageError;
use crate::storage::engine::{Batch, Engine, Visit, Write};

/// The engine: an ordered map in memory.
#[derive(Default)]
pub(in crate::home) struct MemEngine(Mutex<BTreeMap<Vec<u8>, Vec<u8>>>);

impl Engine for MemEngine {
    type Value = Vec<u8>;

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.0.lock().unwrap().get(key).cloned())
    }

    fn scan(&self, from: &[u8], to: &[u8], visit: &mut Visit<'_>) -> Result<(), StorageError> {
        if from >= to {
            return Ok(());
        }
        let entries: Vec<(Vec<u8>, Vec<u8>)> = self
            .0
            .lock()
            .unwrap()
            .range(from.to_vec()..to.to_vec())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (k, v) in entries {
            if let ControlFlow::Break(()) = visit(&k, &v)? {
                break;
            }
        }
        Ok(())
    }

    fn apply(&self, batch: Batch) -> Result<(), StorageError> {
        let mut m = self.0.lock().unwrap();
        for w in batch.into_writes() {
            match w {
                Write::Put(k, v) => {
                    m.insert(k, v);
                }
                Write::Delete(k) => {
                    m.remove(&k);
                }
            }
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), StorageError> {
        Ok(())
    }
}

/// The journal: counts what it is given.
#[derive(Default)]
pub(in crate::home) struct MemLog(Mutex<(u64, u64)>);

impl Log for MemLog {
    fn append(&self, _: &Record, live: bool) -> Result<u64, JournalError> {
        let mut g = self.0.lock().unwrap();
        g.0 += u64::from(live);
        Ok(1)
    }

    fn settle(&self, _: u64, n: u64) {
        self.0.lock().unwrap().1 += n;
    }

    fn refusal(&self) -> Option<crate::journal::Refusal> {
        None
    }
}
