//! One-time codes: 6 digits from the OS CSPRNG, valid for `codes.ttl`,
//! killed after `codes.max_checks` wrong guesses, used once. Only an
//! HMAC-SHA256 of each code (keyed with a random key that never leaves this
//! process) is kept, and guesses are compared to it in constant time.
//!
//! Each code belongs to the *session* of the request that asked for it: a
//! random 16-byte id the requester gets back and must present with its
//! guesses. A guess names its session, so nobody who did not ask for a code
//! can guess at it, or kill it with wrong guesses; a number keeps the codes
//! of its last [`MAX_SESSIONS`] requests. Wrong guesses still count against
//! the number over all its codes (`codes.max_wrong_per_number`).
//!
//! Codes live in memory, per number, with the number's resend schedule: the
//! n-th code sent to a number must wait `resend_waits[n-1]` (the last wait
//! repeats) before the next. A restart forgets both, which costs a user one
//! more request and gives an attacker nothing (the per-number rate limit
//! and the SMS provider's own limits still hold). Nothing here reads the
//! clock: `now` is passed in.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::config::CodesConfig;

/// Digits in a code.
pub const CODE_LEN: usize = 6;
/// Codes (one per request) a number keeps at once; a newer request drops
/// the oldest.
pub const MAX_SESSIONS: usize = 3;

/// The id of the request a code was sent for.
pub type SessionId = [u8; 16];

/// A session id as the API shows it: 32 lowercase hex digits.
pub fn session_text(id: &SessionId) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// A session id from its text, if it is 32 hex digits.
pub fn parse_session(text: &str) -> Option<SessionId> {
    if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(id)
}

/// Whether `s` has the shape of a code.
pub fn valid_code(s: &str) -> bool {
    s.len() == CODE_LEN && s.bytes().all(|b| b.is_ascii_digit())
}

/// Why a code was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckError {
    /// No code was requested for this number in this session (or it was
    /// used, dropped for newer ones, or forgotten).
    NoCode,
    Expired,
    /// Wrong; `left` more guesses before the code dies.
    Wrong {
        left: u32,
    },
    /// Too many wrong guesses: the code is dead; request a new one.
    Exhausted,
    /// Right, but another verification with it is in progress.
    Busy,
    /// The number used up its wrong guesses over all its codes
    /// (`codes.max_wrong_per_number`); a new code does not help until the
    /// number is forgotten, after this.
    NumberLocked {
        retry_after: Duration,
    },
}

/// A right code held by one verification (see [`Codes::check`]).
pub struct Claim<'a> {
    codes: &'a Codes,
    number: String,
    session: SessionId,
    consumed: bool,
}

impl Claim<'_> {
    /// The registration succeeded: the code is used up and the number's
    /// resend schedule starts over.
    pub fn consume(mut self) {
        self.consumed = true;
        self.codes.lock().remove(&self.number);
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if self.consumed {
            return;
        }
        if let Some(p) = self
            .codes
            .lock()
            .get_mut(&self.number)
            .and_then(|s| find(&mut s.codes, &self.session))
        {
            p.claimed = false;
        }
    }
}

/// A uniform 6-digit code from the OS generator (so that no code can be
/// predicted from others), by rejection of the biased tail.
fn random_code() -> String {
    use rand::TryRngCore;
    const LIMIT: u32 = u32::MAX - u32::MAX % 1_000_000;
    loop {
        let n = rand::rngs::OsRng
            .try_next_u32()
            .expect("the OS has randomness");
        if n < LIMIT {
            return format!("{:06}", n % 1_000_000);
        }
    }
}

struct Pending {
    session: SessionId,
    mac: [u8; 32],
    expires: Instant,
    wrong: u32,
    /// A verification holding the right code is in progress: a concurrent
    /// one with the same code waits its turn (single use under races too).
    claimed: bool,
}

struct NumberState {
    /// Codes sent since the number was last forgotten.
    sends: u32,
    /// Wrong guesses over all its codes since it was last forgotten.
    wrong: u32,
    next_send: Instant,
    touched: Instant,
    /// The codes of its latest requests, oldest first.
    codes: Vec<Pending>,
}

/// The code of `session` among `codes` (compared in constant time).
fn find<'a>(codes: &'a mut [Pending], session: &SessionId) -> Option<&'a mut Pending> {
    codes
        .iter_mut()
        .find(|p| bool::from(p.session.ct_eq(session)))
}

/// Every number's current code and resend schedule.
pub struct Codes {
    key: [u8; 32],
    cfg: CodesConfig,
    numbers: Mutex<HashMap<String, NumberState>>,
}

impl Codes {
    pub fn new(cfg: CodesConfig) -> Codes {
        Codes {
            key: rand::random(),
            cfg,
            numbers: Mutex::new(HashMap::new()),
        }
    }

    fn mac(&self, number: &str, code: &str) -> [u8; 32] {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .expect("HMAC takes a key of any length");
        m.update(number.as_bytes());
        m.update(b"\0");
        m.update(code.as_bytes());
        m.finalize().into_bytes().into()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, NumberState>> {
        self.numbers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait_after(&self, sends: u32) -> Duration {
        let w = &self.cfg.resend_waits;
        w[(sends as usize).saturating_sub(1).min(w.len() - 1)]
    }

    /// How long `number` must still wait before another code (zero: now).
    pub fn wait(&self, number: &str, now: Instant) -> Duration {
        match self.lock().get(number) {
            Some(s) if !self.forgotten(s, now) => s.next_send.saturating_duration_since(now),
            _ => Duration::ZERO,
        }
    }

    fn forgotten(&self, s: &NumberState, now: Instant) -> bool {
        now.saturating_duration_since(s.touched) >= self.cfg.forget_after
    }

    /// A new code for `number` (`fixed` for test numbers) in a new session
    /// (the oldest of the number's codes goes past [`MAX_SESSIONS`]), and
    /// the wait before the next; or the wait still due.
    pub fn issue(
        &self,
        number: &str,
        fixed: Option<&str>,
        now: Instant,
    ) -> Result<(String, SessionId, Duration), Duration> {
        let code = match fixed {
            Some(c) => c.to_owned(),
            None => random_code(),
        };
        let mac = self.mac(number, &code);
        let mut numbers = self.lock();
        let fresh = NumberState {
            sends: 0,
            wrong: 0,
            next_send: now,
            touched: now,
            codes: Vec::new(),
        };
        let s = numbers.entry(number.to_owned()).or_insert(fresh);
        if self.forgotten(s, now) {
            s.sends = 0;
            s.wrong = 0;
            s.next_send = now;
        }
        if s.next_send > now {
            return Err(s.next_send - now);
        }
        s.sends += 1;
        let wait = self.wait_after(s.sends);
        s.next_send = now + wait;
        s.touched = now;
        let session: SessionId = rand::random();
        if s.codes.len() >= MAX_SESSIONS {
            s.codes.remove(0);
        }
        s.codes.push(Pending {
            session,
            mac,
            expires: now + self.cfg.ttl,
            wrong: 0,
            claimed: false,
        });
        Ok((code, session, wait))
    }

    /// Withdraws the code just issued in `session` (its SMS could not be
    /// sent): the send does not count towards the resend schedule.
    pub fn withdraw(&self, number: &str, session: &SessionId) {
        let mut numbers = self.lock();
        if let Some(s) = numbers.get_mut(number) {
            s.codes.retain(|p| p.session != *session);
            s.sends = s.sends.saturating_sub(1);
            s.next_send = s.touched;
        }
    }

    /// Checks `code` for `number`. A right code is claimed by the returned
    /// [`Claim`]: it is used up when the claim is [consumed](Claim::consume),
    /// and valid again when the claim is dropped (the registration failed or
    /// still needs the PIN). While claimed, other checks get `Busy`.
    pub fn check(
        &self,
        number: &str,
        session: &SessionId,
        code: &str,
        now: Instant,
    ) -> Result<Claim<'_>, CheckError> {
        let mac = self.mac(number, code);
        let max = self.cfg.max_checks;
        let mut numbers = self.lock();
        let s = numbers.get_mut(number).ok_or(CheckError::NoCode)?;
        if s.wrong >= self.cfg.max_wrong_per_number {
            let retry_after = (s.touched + self.cfg.forget_after).saturating_duration_since(now);
            return Err(CheckError::NumberLocked {
                retry_after: retry_after.max(Duration::from_secs(1)),
            });
        }
        let p = find(&mut s.codes, session).ok_or(CheckError::NoCode)?;
        if p.wrong >= max {
            return Err(CheckError::Exhausted);
        }
        if now >= p.expires {
            return Err(CheckError::Expired);
        }
        if bool::from(p.mac.ct_eq(&mac)) {
            if p.claimed {
                return Err(CheckError::Busy);
            }
            p.claimed = true;
            return Ok(Claim {
                codes: self,
                number: number.to_owned(),
                session: *session,
                consumed: false,
            });
        }
        p.wrong += 1;
        s.wrong += 1;
        if p.wrong >= max {
            Err(CheckError::Exhausted)
        } else {
            Err(CheckError::Wrong {
                left: max - p.wrong,
            })
        }
    }

    /// Forgets numbers untouched for `forget_after`; returns how many remain.
    pub fn sweep(&self, now: Instant) -> usize {
        let mut numbers = self.lock();
        numbers.retain(|_, s| !self.forgotten(s, now));
        numbers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes() -> Codes {
        Codes::new(CodesConfig::default())
    }

    /// Finding 9/4: a new code gave 5 fresh guesses (about 30 per number an
    /// hour). Now the number's wrong guesses count over all its codes.
    #[test]
    fn a_new_code_brings_no_fresh_guesses_beyond_the_numbers_budget() {
        let c = Codes::new(CodesConfig {
            resend_waits: vec![Duration::from_nanos(1)],
            ..CodesConfig::default()
        });
        let n = "+15550000009";
        let mut now = Instant::now();
        let mut wrong = 0;
        // Two codes of five guesses each use the budget of ten.
        for _ in 0..2 {
            let (code, sid, _) = c.issue(n, None, now).unwrap();
            let guess = if code == "000000" { "000001" } else { "000000" };
            for _ in 0..5 {
                assert!(matches!(
                    c.check(n, &sid, guess, now),
                    Err(CheckError::Wrong { .. } | CheckError::Exhausted)
                ));
                wrong += 1;
            }
            now += Duration::from_millis(1);
        }
        assert_eq!(wrong, 10);
        // A third code, even the right one, is refused until the number is
        // forgotten (an hour without requests).
        let (code, sid, _) = c.issue(n, None, now).unwrap();
        match c.check(n, &sid, &code, now) {
            Err(CheckError::NumberLocked { retry_after }) => {
                assert!(retry_after > Duration::from_secs(3500), "{retry_after:?}")
            }
            Err(e) => panic!("{e:?}"),
            Ok(_) => panic!("a locked number's code passed"),
        }
        let later = now + CodesConfig::default().forget_after;
        let (code, sid, _) = c.issue(n, None, later).unwrap();
        assert!(c.check(n, &sid, &code, later).is_ok());
    }

    #[test]
    fn codes_are_six_digits_and_checked_once_right() {
        let c = codes();
        let now = Instant::now();
        let (code, sid, wait) = c.issue("+15550000001", None, now).unwrap();
        assert!(valid_code(&code), "{code}");
        assert_eq!(wait, Duration::from_secs(60));
        let claim = c.check("+15550000001", &sid, &code, now).unwrap();
        // Held by one verification at a time.
        assert_eq!(
            c.check("+15550000001", &sid, &code, now).err(),
            Some(CheckError::Busy)
        );
        drop(claim);
        let claim = c.check("+15550000001", &sid, &code, now).unwrap();
        // Bound to its number.
        assert_eq!(
            c.check("+15550000002", &sid, &code, now).err(),
            Some(CheckError::NoCode)
        );
        claim.consume();
        assert_eq!(
            c.check("+15550000001", &sid, &code, now).err(),
            Some(CheckError::NoCode)
        );
    }

    #[test]
    fn five_wrong_guesses_kill_the_code() {
        let c = codes();
        let now = Instant::now();
        let (code, sid, _) = c.issue("+15550000001", Some("123456"), now).unwrap();
        for left in (1..5).rev() {
            assert_eq!(
                c.check("+15550000001", &sid, "000000", now).err(),
                Some(CheckError::Wrong { left })
            );
        }
        assert_eq!(
            c.check("+15550000001", &sid, "000000", now).err(),
            Some(CheckError::Exhausted)
        );
        assert_eq!(
            c.check("+15550000001", &sid, &code, now).err(),
            Some(CheckError::Exhausted)
        );
    }

    #[test]
    fn codes_expire() {
        let c = codes();
        let now = Instant::now();
        let (code, sid, _) = c.issue("+15550000001", None, now).unwrap();
        let later = now + Duration::from_secs(600);
        assert_eq!(
            c.check("+15550000001", &sid, &code, later).err(),
            Some(CheckError::Expired)
        );
    }

    #[test]
    fn resend_waits_escalate_then_repeat_and_reset() {
        let c = codes();
        let mut now = Instant::now();
        let n = "+15550000001";
        for minutes in [1, 2, 5, 10, 10] {
            let (_, _, wait) = c.issue(n, None, now).unwrap();
            assert_eq!(wait, Duration::from_secs(minutes * 60));
            let early = now + wait - Duration::from_secs(1);
            assert_eq!(
                c.issue(n, None, early).map(|(_, _, w)| w),
                Err(Duration::from_secs(1))
            );
            assert_eq!(c.wait(n, early), Duration::from_secs(1));
            now += wait;
        }
        // An hour of silence starts the schedule over.
        now += Duration::from_secs(3600);
        let (_, sid, wait) = c.issue(n, None, now).unwrap();
        assert_eq!(wait, Duration::from_secs(60));
        // A withdrawn send does not count.
        c.withdraw(n, &sid);
        assert_eq!(c.wait(n, now), Duration::ZERO);
        assert_eq!(c.issue(n, None, now).unwrap().2, Duration::from_secs(60));
        assert_eq!(c.sweep(now + Duration::from_secs(3600)), 0);
    }

    /// A guess names its session: one in another session never touches
    /// this code; a number keeps the codes of its last three requests.
    #[test]
    fn a_code_answers_only_in_its_session() {
        let c = Codes::new(CodesConfig {
            resend_waits: vec![Duration::from_nanos(1)],
            ..CodesConfig::default()
        });
        let n = "+15550000001";
        let mut now = Instant::now();
        let (code, mine, _) = c.issue(n, Some("123456"), now).unwrap();
        let other: SessionId = [7; 16];
        for _ in 0..10 {
            assert_eq!(
                c.check(n, &other, "000000", now).err(),
                Some(CheckError::NoCode)
            );
        }
        assert!(c.check(n, &mine, &code, now).is_ok());
        // Three more requests: the first code is dropped, the others live.
        let mut sessions = Vec::new();
        for _ in 0..3 {
            now += Duration::from_millis(1);
            sessions.push(c.issue(n, Some("123456"), now).unwrap().1);
        }
        assert_eq!(
            c.check(n, &mine, &code, now).err(),
            Some(CheckError::NoCode)
        );
        for s in &sessions {
            assert!(c.check(n, s, &code, now).is_ok());
        }
        assert_eq!(parse_session(&session_text(&mine)), Some(mine));
        assert_eq!(parse_session("xyz"), None);
    }

    #[test]
    fn codes_are_spread() {
        let c = codes();
        let now = Instant::now();
        let mut seen = std::collections::HashSet::new();
        for i in 0..200 {
            let (code, _, _) = c.issue(&format!("+1555000{i:04}"), None, now).unwrap();
            seen.insert(code);
        }
        assert!(seen.len() > 190, "{} distinct of 200", seen.len());
    }
}
