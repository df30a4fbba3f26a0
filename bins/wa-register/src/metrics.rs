//! Counters of the registration flow, read at scrape time by the admin
//! listener (`common::admin`). No label ever carries a number or a code.

use std::sync::atomic::{AtomicU64, Ordering};

use common::admin::metrics::Sample;

#[derive(Default)]
pub struct Metrics {
    pub codes_requested: AtomicU64,
    pub codes_sent: AtomicU64,
    pub sms_failed: AtomicU64,
    pub resend_too_early: AtomicU64,
    pub rate_limited: AtomicU64,
    pub codes_verified: AtomicU64,
    pub codes_wrong: AtomicU64,
    pub codes_exhausted: AtomicU64,
    pub accounts_created: AtomicU64,
    pub reregistrations: AtomicU64,
    pub devices_revoked: AtomicU64,
    pub pin_required: AtomicU64,
    pub pin_wrong: AtomicU64,
    pub pin_locked: AtomicU64,
    pub tokens_issued: AtomicU64,
    pub pumping_suspected: AtomicU64,
    pub accounts_deleted: AtomicU64,
}

impl Metrics {
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds every counter to a scrape.
    pub fn sample(&self, s: &mut Sample<'_>) {
        for (name, help, c) in [
            (
                "codes_requested",
                "Code requests received",
                &self.codes_requested,
            ),
            (
                "codes_sent",
                "Codes handed to the SMS provider",
                &self.codes_sent,
            ),
            (
                "sms_failed",
                "Codes the SMS provider could not send",
                &self.sms_failed,
            ),
            (
                "resend_too_early",
                "Code requests refused by the resend schedule",
                &self.resend_too_early,
            ),
            (
                "rate_limited",
                "Requests refused by a rate limit",
                &self.rate_limited,
            ),
            ("codes_verified", "Codes verified", &self.codes_verified),
            ("codes_wrong", "Wrong code guesses", &self.codes_wrong),
            (
                "codes_exhausted",
                "Codes killed by too many wrong guesses",
                &self.codes_exhausted,
            ),
            (
                "accounts_created",
                "Accounts created",
                &self.accounts_created,
            ),
            (
                "reregistrations",
                "Numbers registered again on a new device",
                &self.reregistrations,
            ),
            ("devices_revoked", "Devices revoked", &self.devices_revoked),
            (
                "pin_required",
                "Registrations stopped by the registration lock",
                &self.pin_required,
            ),
            ("pin_wrong", "Wrong registration-lock PINs", &self.pin_wrong),
            (
                "pin_locked",
                "PIN tries refused by the try budget",
                &self.pin_locked,
            ),
            (
                "tokens_issued",
                "Credentials issued (registrations and refreshes)",
                &self.tokens_issued,
            ),
            (
                "pumping_suspected",
                "Prefixes flagged for many codes sent and few verified (SMS pumping)",
                &self.pumping_suspected,
            ),
            (
                "accounts_deleted",
                "Accounts deleted by their owner",
                &self.accounts_deleted,
            ),
        ] {
            s.counter(
                &format!("wa_register_{name}"),
                help,
                c.load(Ordering::Relaxed),
            );
        }
    }
}
