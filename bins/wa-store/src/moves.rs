//! What this node last served, kept in its data directory (`MOVES`), so that
//! a restart in the middle of a fragment move carries on with the move
//! instead of forgetting it (docs/OPERATIONS.md, "Moving fragments").
//!
//! A node learns of a move by reading a new map while running: the
//! fragments it gains are refused until their previous owner has handed
//! them over ("arriving"), and the ones it loses are copied to their new
//! home ("leaving"). Both are facts about the map this node read before, so
//! a node restarted with only the new map would know neither: it would
//! serve arriving fragments before their items came (those items would then
//! arrive after newer ones), and never send the items of leaving ones. So
//! every change to either is written here first (atomically, synced), and a
//! start reads it back ([`resume`]).

use std::path::Path;

use serde::{Deserialize, Serialize};

/// The file's name in the data directory.
pub const FILE: &str = "MOVES";

/// A fragment range, first and last.
pub type Range = [u32; 2];

/// What the node served, and what of a move was left to do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Served {
    /// The map's epoch.
    pub epoch: u64,
    /// The island's fragments under it.
    pub fragments: Range,
    /// Fragments still arriving (refused until handed over).
    #[serde(default)]
    pub arriving: Vec<Range>,
    /// Fragments lost whose items are not yet all at their new home.
    #[serde(default)]
    pub leaving: Vec<Range>,
    /// Hand-overs finished under an epoch not yet read: `[epoch, first, last]`.
    #[serde(default)]
    pub done_early: Vec<[u64; 3]>,
}

#[derive(Debug, thiserror::Error)]
pub enum MovesError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "{path} is damaged ({source}); it records a fragment move in progress. Restore it, or, if no move is in progress, remove it"
    )]
    Parse {
        path: String,
        source: Box<toml::de::Error>,
    },
}

impl Served {
    /// The record in `path`, if there is one.
    pub fn read(path: &Path) -> Result<Option<Served>, MovesError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(MovesError::Read {
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        toml::from_str(&text)
            .map(Some)
            .map_err(|source| MovesError::Parse {
                path: path.display().to_string(),
                source: Box::new(source),
            })
    }

    /// Replaces the record in `path` (the old one or this one survives a
    /// crash, never half of either).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let text = toml::to_string(self).map_err(std::io::Error::other)?;
        common::fsutil::write_atomic(path, text.as_bytes())
    }
}

/// Where a start stands with a move, from the record and the map it reads.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Resumed {
    /// Fragments still arriving, sorted.
    pub arriving: Vec<u32>,
    /// Fragment ranges whose items are still to be handed over.
    pub leaving: Vec<Range>,
    /// Hand-overs finished under an epoch above the map's.
    pub done_early: Vec<[u64; 3]>,
}

/// The record was written under a newer map than the one this node reads
/// now: serving by the older map would serve fragments moved away.
#[derive(Debug, thiserror::Error)]
#[error(
    "the cluster map's epoch {map} is below {served}, the epoch this node last served under ({file} in the data directory): install the newest map"
)]
pub struct Behind {
    pub map: u64,
    pub served: u64,
    pub file: &'static str,
}

/// What a node starting with the map of `epoch`, owning `own`, takes over
/// from its record `rec` (none: a node that never served, or served before
/// moves were recorded, starts with nothing in progress). Under the same
/// epoch the record holds as it is; under a newer one the change between
/// the record's fragments and `own` is a move this node missed while
/// stopped, worked out as a reload would ([`gained`], [`lost`]).
pub fn resume(rec: Option<&Served>, epoch: u64, own: Range) -> Result<Resumed, Behind> {
    let Some(rec) = rec else {
        return Ok(Resumed::default());
    };
    if rec.epoch > epoch {
        return Err(Behind {
            map: epoch,
            served: rec.epoch,
            file: FILE,
        });
    }
    let recorded = expand(&rec.arriving);
    let mut arriving: Vec<u32> = if rec.epoch == epoch {
        recorded
    } else {
        let mut a = gained(rec.fragments, own);
        a.extend(recorded);
        a.retain(|f| {
            !rec.done_early
                .iter()
                .any(|&[e, x, y]| e == epoch && (x..=y).contains(&u64::from(*f)))
        });
        a
    };
    arriving.retain(|f| (own[0]..=own[1]).contains(f));
    arriving.sort_unstable();
    arriving.dedup();
    let mut leaving = rec.leaving.clone();
    if rec.epoch < epoch {
        leaving.extend(lost(rec.fragments, own));
    }
    let leaving = leaving.iter().flat_map(|r| minus(*r, own)).collect();
    Ok(Resumed {
        arriving,
        leaving,
        done_early: rec
            .done_early
            .iter()
            .copied()
            .filter(|d| d[0] > epoch)
            .collect(),
    })
}

/// Fragments in `new` that were not in `old`.
pub fn gained(old: Range, new: Range) -> Vec<u32> {
    (new[0]..=new[1])
        .filter(|f| !(old[0]..=old[1]).contains(f))
        .collect()
}

/// Ranges of `old` that are not in `new`.
pub fn lost(old: Range, new: Range) -> Vec<Range> {
    minus(old, new)
}

/// `r` without the fragments of `cut`: none, one or two ranges.
pub fn minus(r: Range, cut: Range) -> Vec<Range> {
    let [a, b] = r;
    let [c, d] = cut;
    if a > b {
        return Vec::new();
    }
    if d < a || c > b {
        return vec![r];
    }
    let mut out = Vec::new();
    if a < c {
        out.push([a, c - 1]);
    }
    if d < b {
        out.push([d + 1, b]);
    }
    out
}

/// Sorted fragments as ranges of consecutive ones.
pub fn ranges(fragments: &[u32]) -> Vec<Range> {
    let mut out: Vec<Range> = Vec::new();
    for &f in fragments {
        match out.last_mut() {
            Some(r) if r[1].checked_add(1) == Some(f) => r[1] = f,
            _ => out.push([f, f]),
        }
    }
    out
}

/// Every fragment of `ranges`.
pub fn expand(ranges: &[Range]) -> Vec<u32> {
    ranges.iter().flat_map(|&[a, b]| a..=b).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(epoch: u64, fragments: Range) -> Served {
        Served {
            epoch,
            fragments,
            ..Served::default()
        }
    }

    #[test]
    fn ranges_and_their_differences() {
        assert_eq!(ranges(&[1, 2, 3, 7, 9, 10]), vec![[1, 3], [7, 7], [9, 10]]);
        assert_eq!(expand(&[[1, 3], [9, 10]]), vec![1, 2, 3, 9, 10]);
        assert_eq!(minus([0, 15], [4, 7]), vec![[0, 3], [8, 15]]);
        assert_eq!(minus([0, 15], [0, 15]), Vec::<Range>::new());
        assert_eq!(minus([0, 3], [4, 7]), vec![[0, 3]]);
        assert_eq!(minus([0, 7], [4, 15]), vec![[0, 3]]);
        assert_eq!(gained([0, 7], [4, 11]), vec![8, 9, 10, 11]);
        assert_eq!(lost([0, 7], [4, 11]), vec![[0, 3]]);
    }

    #[test]
    fn no_record_means_nothing_in_progress() {
        assert_eq!(resume(None, 3, [0, 7]).unwrap(), Resumed::default());
    }

    #[test]
    fn the_same_epoch_keeps_what_was_left() {
        let mut r = rec(2, [0, 11]);
        r.arriving = vec![[8, 11]];
        r.leaving = vec![[12, 15]];
        let got = resume(Some(&r), 2, [0, 11]).unwrap();
        assert_eq!(got.arriving, vec![8, 9, 10, 11]);
        assert_eq!(got.leaving, vec![[12, 15]]);
    }

    #[test]
    fn a_move_missed_while_stopped_is_worked_out_from_the_record() {
        // Served 0..=7 under epoch 1; the map of epoch 2 gives 4..=11.
        let got = resume(Some(&rec(1, [0, 7])), 2, [4, 11]).unwrap();
        assert_eq!(got.arriving, vec![8, 9, 10, 11]);
        assert_eq!(got.leaving, vec![[0, 3]]);
        // A hand-over of 8..=9 under epoch 2 was heard before the map.
        let mut r = rec(1, [0, 7]);
        r.done_early = vec![[2, 8, 9], [3, 10, 10]];
        let got = resume(Some(&r), 2, [4, 11]).unwrap();
        assert_eq!(got.arriving, vec![10, 11]);
        assert_eq!(got.done_early, vec![[3, 10, 10]]);
    }

    #[test]
    fn fragments_that_came_back_are_neither_leaving_nor_lost() {
        let mut r = rec(2, [4, 7]);
        r.leaving = vec![[0, 3]];
        let got = resume(Some(&r), 3, [0, 7]).unwrap();
        assert_eq!(got.leaving, Vec::<Range>::new());
        assert_eq!(
            got.arriving,
            vec![0, 1, 2, 3],
            "they come back from their new owner"
        );
    }

    #[test]
    fn an_older_map_than_the_record_is_refused() {
        let e = resume(Some(&rec(5, [0, 7])), 4, [0, 7]).unwrap_err();
        assert!(e.to_string().contains("epoch 4 is below 5"), "{e}");
    }

    #[test]
    fn the_record_survives_a_round_trip_and_a_damaged_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        assert_eq!(Served::read(&path).unwrap(), None);
        let mut r = rec(7, [0, 15]);
        r.arriving = vec![[3, 4]];
        r.leaving = vec![[20, 30]];
        r.done_early = vec![[8, 1, 2]];
        r.write(&path).unwrap();
        assert_eq!(Served::read(&path).unwrap(), Some(r));
        std::fs::write(&path, "epoch = \"x\"").unwrap();
        let e = Served::read(&path).unwrap_err().to_string();
        assert!(e.contains("MOVES is damaged"), "{e}");
    }
}
