//! The `Range` header (RFC 9110 section 14), single byte ranges only.
//!
//! - `bytes=A-B`, `bytes=A-`, `bytes=-N` give 206 with that part;
//! - a range starting at or beyond the end, `bytes=-0`, a range whose last
//!   byte is before its first, or a `bytes=` value that does not parse, gives
//!   416 with `Content-Range: bytes */SIZE`;
//! - another unit, or several ranges, is ignored: 200 with the whole blob
//!   (RFC 9110 allows ignoring Range; multipart answers are not worth it for
//!   media).

/// What to send for a request's `Range`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    Whole,
    /// Bytes `start..=end`.
    Part {
        start: u64,
        end: u64,
    },
    Unsatisfiable,
}

pub fn parse(header: Option<&str>, size: u64) -> Want {
    let Some(h) = header else {
        return Want::Whole;
    };
    let Some(spec) = h.trim().strip_prefix("bytes=") else {
        return Want::Whole;
    };
    if spec.contains(',') {
        return Want::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Want::Unsatisfiable;
    };
    let num = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    match (a.is_empty(), b.is_empty()) {
        (true, false) => match num(b) {
            Some(n) if n > 0 && size > 0 => Want::Part {
                start: size.saturating_sub(n),
                end: size - 1,
            },
            _ => Want::Unsatisfiable,
        },
        (false, true) => match num(a) {
            Some(start) if start < size => Want::Part {
                start,
                end: size - 1,
            },
            _ => Want::Unsatisfiable,
        },
        (false, false) => match (num(a), num(b)) {
            (Some(start), Some(end)) if start <= end && start < size => Want::Part {
                start,
                end: end.min(size - 1),
            },
            _ => Want::Unsatisfiable,
        },
        (true, true) => Want::Unsatisfiable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let p = |start, end| Want::Part { start, end };
        let u = Want::Unsatisfiable;
        for (h, size, want) in [
            (None, 10, Want::Whole),
            (Some("bytes=0-3"), 10, p(0, 3)),
            (Some("bytes=2-5"), 10, p(2, 5)),
            (Some("bytes=5-"), 10, p(5, 9)),
            (Some("bytes=-3"), 10, p(7, 9)),
            (Some("bytes=-30"), 10, p(0, 9)),
            (Some("bytes=8-100"), 10, p(8, 9)),
            (Some("bytes=9-9"), 10, p(9, 9)),
            (Some("bytes=10-"), 10, u),
            (Some("bytes=10-12"), 10, u),
            (Some("bytes=5-2"), 10, u),
            (Some("bytes=-0"), 10, u),
            (Some("bytes=-"), 10, u),
            (Some("bytes=x-1"), 10, u),
            (Some("bytes=+1-2"), 10, u),
            (Some("bytes=0-0"), 0, u),
            (Some("bytes=0-1,3-4"), 10, Want::Whole),
            (Some("items=0-1"), 10, Want::Whole),
        ] {
            assert_eq!(parse(h, size), want, "{h:?} of {size}");
        }
    }
}
