//! Registration-lock PINs: Argon2id with a server-side pepper (the Argon2
//! "secret"), so a copy of the accounts without the pepper file does not
//! allow offline guessing. Hashing is slow on purpose (and takes 19 MiB
//! each): it runs off the async threads, at most one per core but one at a time,
//! with a short bounded queue behind; beyond it a hash is refused as
//! [`Busy`] (`429`), so a flood of PIN requests costs neither memory nor
//! the latency of the other routes. The try budget (`pin.max_wrong`, then one try per
//! `pin.lockout`) is [`Budget`], with the clock passed in; the verify
//! handler records each attempt at the home through it before checking
//! the PIN.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::account::PinLock;

/// Shortest and longest PIN accepted.
pub const MIN_PIN: usize = 4;
pub const MAX_PIN: usize = 64;

pub fn valid_pin(pin: &str) -> bool {
    (MIN_PIN..=MAX_PIN).contains(&pin.len()) && pin.bytes().all(|b| b.is_ascii_graphic())
}

/// The try budget of a registration lock: `max_wrong` wrong PINs, then
/// one try per `lockout`.
///
/// Calling contract: [`Budget::try_at`] before checking a PIN, and the
/// changed lock stored before the check (so parallel guesses each use a
/// try); [`Budget::right`] once the PIN proved right.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub max_wrong: u32,
    pub lockout: Duration,
}

impl Budget {
    /// Takes one try at unix ms `now_ms`, counted as wrong until
    /// [`Budget::right`]. Returns the tries left should this one be wrong,
    /// or how long until a try is allowed.
    pub fn try_at(&self, lock: &mut PinLock, now_ms: u64) -> Result<u32, Duration> {
        if lock.wrong >= self.max_wrong && now_ms < lock.next_try_ms {
            return Err(Duration::from_millis(lock.next_try_ms - now_ms));
        }
        lock.wrong = lock.wrong.saturating_add(1);
        if lock.wrong >= self.max_wrong {
            lock.next_try_ms = now_ms + self.lockout.as_millis() as u64;
        }
        Ok(self.max_wrong.saturating_sub(lock.wrong))
    }

    /// The PIN was right: the count starts over.
    pub fn right(lock: &mut PinLock) {
        lock.wrong = 0;
        lock.next_try_ms = 0;
    }
}

/// Hashes waiting for a core, per core, before more are refused.
const QUEUE_PER_CORE: usize = 2;
/// The longest a hash waits for a core before it is refused.
const MAX_WAIT: Duration = Duration::from_secs(2);
/// `Retry-After` of a refused hash.
pub const BUSY_RETRY: Duration = Duration::from_secs(1);

/// Every PIN worker is busy and the queue is full (or did not move in
/// [`MAX_WAIT`]): try again after [`BUSY_RETRY`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("every PIN worker is busy")]
pub struct Busy;

#[derive(Clone)]
pub struct Pins {
    pepper: Arc<Vec<u8>>,
    /// One permit per hash that may run at once.
    workers: Arc<Semaphore>,
    /// Hashes running or waiting for a permit.
    admitted: Arc<AtomicUsize>,
    /// Most of them.
    max_admitted: usize,
}

/// A hash admitted: counted until dropped.
struct Admitted(Arc<AtomicUsize>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Pins {
    /// PIN hashing with `pepper`, one hash at a time per core but one (at
    /// least one): the async threads, and so every other route, keep a core.
    pub fn new(pepper: Vec<u8>) -> Pins {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Pins::with_workers(pepper, cores.saturating_sub(1).max(1))
    }

    /// PIN hashing with `workers` hashes at once.
    pub fn with_workers(pepper: Vec<u8>, workers: usize) -> Pins {
        let workers = workers.max(1);
        Pins {
            pepper: Arc::new(pepper),
            workers: Arc::new(Semaphore::new(workers)),
            admitted: Arc::new(AtomicUsize::new(0)),
            max_admitted: workers * (1 + QUEUE_PER_CORE),
        }
    }

    /// Runs `f` on a blocking thread once a worker is free, or refuses.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&[u8]) -> T + Send + 'static,
    ) -> Result<T, Busy> {
        if self.admitted.fetch_add(1, Ordering::SeqCst) >= self.max_admitted {
            self.admitted.fetch_sub(1, Ordering::SeqCst);
            return Err(Busy);
        }
        let _admitted = Admitted(Arc::clone(&self.admitted));
        let permit = tokio::time::timeout(MAX_WAIT, Arc::clone(&self.workers).acquire_owned())
            .await
            .map_err(|_| Busy)?
            .expect("the semaphore is never closed");
        let pepper = Arc::clone(&self.pepper);
        let out = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            f(&pepper)
        })
        .await
        .expect("hashing does not panic");
        Ok(out)
    }

    fn argon(pepper: &[u8]) -> Argon2<'_> {
        Argon2::new_with_secret(
            pepper,
            Algorithm::Argon2id,
            Version::V0x13,
            Params::default(),
        )
        .expect("the default parameters and any pepper are valid")
    }

    /// The PHC string of `pin` with a fresh salt.
    pub async fn hash(&self, pin: String) -> Result<String, Busy> {
        self.run(move |pepper| {
            let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
                .expect("16 bytes make a valid salt");
            Self::argon(pepper)
                .hash_password(pin.as_bytes(), &salt)
                .expect("hashing with valid parameters succeeds")
                .to_string()
        })
        .await
    }

    /// Whether `pin` matches `phc` (constant time in the comparison).
    pub async fn verify(&self, pin: String, phc: String) -> Result<bool, Busy> {
        self.run(move |pepper| {
            let Ok(parsed) = PasswordHash::new(&phc) else {
                return false;
            };
            Self::argon(pepper)
                .verify_password(pin.as_bytes(), &parsed)
                .is_ok()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn right_pin_wrong_pin_wrong_pepper() {
        let pins = Pins::new(vec![7; 32]);
        let h = pins.hash("2580".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(!h.contains("2580"));
        assert!(pins.verify("2580".into(), h.clone()).await.unwrap());
        assert!(!pins.verify("2581".into(), h.clone()).await.unwrap());
        assert!(
            !Pins::new(vec![8; 32])
                .verify("2580".into(), h.clone())
                .await
                .unwrap()
        );
        // Salted: the same PIN hashes differently.
        assert_ne!(pins.hash("2580".into()).await.unwrap(), h);
        assert!(valid_pin("2580") && !valid_pin("123") && !valid_pin("12 34"));
    }

    #[tokio::test]
    async fn ten_wrong_then_one_try_a_day() {
        const DAY: u64 = 24 * 3600 * 1000;
        let budget = Budget {
            max_wrong: 10,
            lockout: Duration::from_millis(DAY),
        };
        let pins = Pins::new(vec![7; 32]);
        let mut lock = PinLock {
            hash: pins.hash("2580".into()).await.unwrap(),
            wrong: 0,
            next_try_ms: 0,
        };
        // One try as the handler makes it: taken, then the PIN checked.
        // Err(wait): locked; Ok(Ok(())): right; Ok(Err(left)): wrong.
        let attempt = |lock: &mut PinLock, pin: &str, now| {
            let taken = budget.try_at(lock, now);
            let (pins, pin, hash) = (pins.clone(), pin.to_owned(), lock.hash.clone());
            async move {
                let left = taken?;
                let right = pins.verify(pin, hash).await.unwrap();
                Ok::<_, Duration>(right.then_some(()).ok_or(left))
            }
        };
        let t0 = 1_000_000_000;
        for left in (0..10).rev() {
            assert_eq!(attempt(&mut lock, "1111", t0).await, Ok(Err(left)));
        }
        // Locked: even the right PIN waits the whole day.
        assert_eq!(
            attempt(&mut lock, "2580", t0).await,
            Err(Duration::from_millis(DAY))
        );
        assert_eq!(
            attempt(&mut lock, "2580", t0 + DAY - 1).await,
            Err(Duration::from_millis(1))
        );
        // A day later, exactly one try; a wrong one locks for another day.
        assert_eq!(attempt(&mut lock, "1111", t0 + DAY).await, Ok(Err(0)));
        assert_eq!(
            attempt(&mut lock, "2580", t0 + DAY).await,
            Err(Duration::from_millis(DAY))
        );
        assert_eq!(
            attempt(&mut lock, "2580", t0 + 2 * DAY - 1).await,
            Err(Duration::from_millis(1))
        );
        // The next day's try with the right PIN succeeds, and the count
        // starts over.
        assert_eq!(attempt(&mut lock, "2580", t0 + 2 * DAY).await, Ok(Ok(())));
        Budget::right(&mut lock);
        assert_eq!((lock.wrong, lock.next_try_ms), (0, 0));
        assert_eq!(attempt(&mut lock, "1111", t0 + 2 * DAY).await, Ok(Err(9)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_of_hashes_is_refused_beyond_the_queue() {
        // One worker (held here) and a queue of two: of ten hashes at once,
        // three wait and seven are refused at once as busy.
        let pins = Pins::with_workers(vec![7; 32], 1);
        let held = Arc::clone(&pins.workers).acquire_owned().await.unwrap();
        let mut all = tokio::task::JoinSet::new();
        for _ in 0..10 {
            let pins = pins.clone();
            all.spawn(async move { pins.hash("2580".into()).await });
        }
        for _ in 0..7 {
            assert_eq!(all.join_next().await.unwrap().unwrap(), Err(Busy));
        }
        assert_eq!(pins.admitted.load(Ordering::SeqCst), 3);
        drop(held);
        while let Some(h) = all.join_next().await {
            assert!(h.unwrap().is_ok());
        }
        assert_eq!(pins.admitted.load(Ordering::SeqCst), 0);
    }
}
