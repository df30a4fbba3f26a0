//! Phone numbers: E.164 (`+` then 8 to 15 digits, no leading zero), the
//! prefix used for rate limits and the pumping signal, and the masked form
//! that is the only one ever logged.

use std::fmt;

/// A valid E.164 number, as the client sent it (no spaces or dashes).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Number(String);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not an E.164 number: a + followed by 8 to 15 digits, the first not 0")]
pub struct BadNumber;

impl Number {
    pub fn parse(s: &str) -> Result<Number, BadNumber> {
        let digits = s.strip_prefix('+').ok_or(BadNumber)?;
        if !(8..=15).contains(&digits.len())
            || !digits.bytes().all(|b| b.is_ascii_digit())
            || digits.starts_with('0')
        {
            return Err(BadNumber);
        }
        Ok(Number(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `+` and the first `digits` digits: the unit of the per-prefix limit
    /// and of the pumping signal.
    pub fn prefix(&self, digits: usize) -> &str {
        &self.0[..(1 + digits).min(self.0.len())]
    }

    /// Whether the number starts with one of `allow` (empty allows all).
    pub fn allowed(&self, allow: &[String]) -> bool {
        allow.is_empty() || allow.iter().any(|p| self.0.starts_with(p.as_str()))
    }

    /// The form that may appear in logs: country code area kept, the rest
    /// hidden but the last two digits (`+4930*******12`).
    pub fn masked(&self) -> Masked<'_> {
        Masked(&self.0)
    }
}

pub struct Masked<'a>(&'a str);

impl fmt::Display for Masked<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        let keep_head = 4.min(s.len());
        let keep_tail = 2.min(s.len() - keep_head);
        f.write_str(&s[..keep_head])?;
        for _ in 0..s.len() - keep_head - keep_tail {
            f.write_str("*")?;
        }
        f.write_str(&s[s.len() - keep_tail..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e164() {
        for ok in ["+15551234567", "+4930123456", "+123456789012345"] {
            assert!(Number::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "15551234567",
            "+1555",
            "+1234567890123456",
            "+0123456789",
            "+1 555 123 4567",
            "+1555123456a",
            "++15551234567",
        ] {
            assert_eq!(Number::parse(bad), Err(BadNumber), "{bad}");
        }
    }

    #[test]
    fn masks_prefixes_and_allow_list() {
        let n = Number::parse("+15551234567").unwrap();
        assert_eq!(n.masked().to_string(), "+155******67");
        assert_eq!(n.prefix(4), "+1555");
        assert!(n.allowed(&[]));
        assert!(n.allowed(&["+44".into(), "+1".into()]));
        assert!(!n.allowed(&["+44".into()]));
    }
}
