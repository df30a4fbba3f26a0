//! Journal records on the replication link: runs of framed records
//! (`len:u32be crc32:u32be payload`, as in a segment) cut into link frames
//! at record boundaries, and checked when they arrive.

/// Bytes of records per `Replicate` frame (well under
/// `common::link::MAX_REPLICATION_FRAME`; a single larger record goes
/// alone).
pub const FRAME_RECORDS_BYTES: usize = 1 << 20;

/// Splits `bytes`, a run of whole framed records, into pieces of at most
/// about `max` bytes at record boundaries: (piece, records in it).
pub fn split(bytes: &[u8], max: usize) -> Vec<(&[u8], u64)> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut at = 0;
    let mut n = 0;
    while at + 8 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let next = (at + 8 + len).min(bytes.len());
        if at > start && next - start > max {
            out.push((&bytes[start..at], n));
            start = at;
            n = 0;
        }
        at = next;
        n += 1;
    }
    if at > start {
        out.push((&bytes[start..at], n));
    }
    out
}

/// Checks that `bytes` is exactly `count` whole records with good CRCs
/// (what a secondary writes to its journal must replay there).
pub fn check(bytes: &[u8], count: u64) -> Result<(), String> {
    let mut at = 0;
    let mut n = 0;
    while at < bytes.len() {
        let Some(head) = bytes.get(at..at + 8) else {
            return Err(format!("a record header is cut at byte {at}"));
        };
        let len = u32::from_be_bytes(head[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_be_bytes(head[4..].try_into().expect("4 bytes"));
        let Some(payload) = bytes.get(at + 8..at + 8 + len) else {
            return Err(format!("record {n} is cut"));
        };
        if len == 0 || crc32fast::hash(payload) != crc {
            return Err(format!("record {n} fails its check"));
        }
        at += 8 + len;
        n += 1;
    }
    if n != count {
        return Err(format!("{n} records where {count} were announced"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(payload: &[u8]) -> Vec<u8> {
        let mut v = (payload.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(&crc32fast::hash(payload).to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn pieces_end_at_record_boundaries_and_keep_every_record() {
        let mut all = Vec::new();
        for i in 0..100u32 {
            all.extend(record(&vec![i as u8 + 1; 10 + i as usize]));
        }
        let pieces = split(&all, 300);
        assert!(pieces.len() > 5);
        let mut total = 0;
        let mut joined = Vec::new();
        for (p, n) in &pieces {
            check(p, *n).unwrap();
            assert!(
                p.len() <= 300 || *n == 1,
                "{} bytes in {n} records",
                p.len()
            );
            total += n;
            joined.extend_from_slice(p);
        }
        assert_eq!(total, 100);
        assert_eq!(joined, all);
    }

    #[test]
    fn a_damaged_or_miscounted_run_is_refused() {
        let mut all = record(b"one");
        all.extend(record(b"two"));
        check(&all, 2).unwrap();
        assert!(check(&all, 3).is_err());
        assert!(check(&all[..all.len() - 1], 2).is_err());
        let mut bad = all.clone();
        bad[9] ^= 1;
        assert!(check(&bad, 2).is_err());
    }
}
