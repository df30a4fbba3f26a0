//! Rate limits (governor, GCRA): code requests per number, per client
//! address (an IPv6 address by its /64) and per client network (an IPv4
//! /24, an IPv6 /48), per number prefix (tighter for a prefix the pumping
//! signal flagged) and for the whole service; verification attempts per
//! client address; PIN hashes per account and per address. A refusal says how long to wait, which
//! becomes `429` with `Retry-After`.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::{LimitsConfig, Rate};

/// Which limit refused a request (a label in metrics, never shown with a key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Number,
    Address,
    Network,
    Prefix,
    TightenedPrefix,
    Global,
    VerifyAddress,
    PinAccount,
    PinAddress,
}

impl Limit {
    pub fn name(self) -> &'static str {
        match self {
            Limit::Number => "number",
            Limit::Address => "address",
            Limit::Network => "network",
            Limit::Prefix => "prefix",
            Limit::TightenedPrefix => "prefix_tightened",
            Limit::Global => "global",
            Limit::VerifyAddress => "verify_address",
            Limit::PinAccount => "pin_account",
            Limit::PinAddress => "pin_address",
        }
    }
}

/// A refusal: the limit and how long until a request would pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub limit: Limit,
    pub wait: Duration,
}

pub struct Limits {
    per_number: DefaultKeyedRateLimiter<String>,
    per_address: DefaultKeyedRateLimiter<IpAddr>,
    per_network: DefaultKeyedRateLimiter<IpAddr>,
    per_prefix: DefaultKeyedRateLimiter<String>,
    tightened_prefix: DefaultKeyedRateLimiter<String>,
    global: DefaultDirectRateLimiter,
    verify_per_address: DefaultKeyedRateLimiter<IpAddr>,
    pin_per_account: DefaultKeyedRateLimiter<String>,
    pin_per_address: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
}

fn quota(r: Rate) -> Quota {
    let count = NonZeroU32::new(r.count).expect("validated: count > 0");
    let period = (r.per / r.count).max(Duration::from_nanos(1));
    Quota::with_period(period)
        .expect("a positive period")
        .allow_burst(count)
}

impl Limits {
    /// The limits of `cfg`; `tightened` is the rate of a prefix the
    /// pumping signal flagged.
    pub fn new(cfg: &LimitsConfig, tightened: Rate) -> Limits {
        Limits {
            per_number: RateLimiter::keyed(quota(cfg.per_number)),
            per_address: RateLimiter::keyed(quota(cfg.per_address)),
            per_network: RateLimiter::keyed(quota(cfg.per_network)),
            per_prefix: RateLimiter::keyed(quota(cfg.per_prefix)),
            tightened_prefix: RateLimiter::keyed(quota(tightened)),
            global: RateLimiter::direct(quota(cfg.global)),
            verify_per_address: RateLimiter::keyed(quota(cfg.verify_per_address)),
            pin_per_account: RateLimiter::keyed(quota(cfg.pin_per_account)),
            pin_per_address: RateLimiter::keyed(quota(cfg.pin_per_address)),
            clock: DefaultClock::default(),
        }
    }

    fn refused(
        &self,
        limit: Limit,
        nu: governor::NotUntil<governor::clock::QuantaInstant>,
    ) -> Refused {
        Refused {
            limit,
            wait: nu.wait_time_from(self.clock.now()),
        }
    }

    /// Admits one code request, or names the first limit that refuses it.
    /// The broad limits are asked first, so a flood from one address or
    /// prefix does not use up the quota of the numbers it names.
    /// `tightened`: the pumping signal flagged `prefix`, whose requests
    /// also pass its much lower tightened rate.
    pub fn code_request(
        &self,
        number: &str,
        prefix: &str,
        addr: IpAddr,
        tightened: bool,
    ) -> Result<(), Refused> {
        self.global
            .check()
            .map_err(|n| self.refused(Limit::Global, n))?;
        self.per_network
            .check_key(&wide_network(addr))
            .map_err(|n| self.refused(Limit::Network, n))?;
        self.per_address
            .check_key(&network(addr))
            .map_err(|n| self.refused(Limit::Address, n))?;
        if tightened {
            self.tightened_prefix
                .check_key(&prefix.to_owned())
                .map_err(|n| self.refused(Limit::TightenedPrefix, n))?;
        }
        self.per_prefix
            .check_key(&prefix.to_owned())
            .map_err(|n| self.refused(Limit::Prefix, n))?;
        self.per_number
            .check_key(&number.to_owned())
            .map_err(|n| self.refused(Limit::Number, n))
    }

    /// Admits one verification attempt from `addr`.
    pub fn verify(&self, addr: IpAddr) -> Result<(), Refused> {
        self.verify_per_address
            .check_key(&addr)
            .map_err(|n| self.refused(Limit::VerifyAddress, n))
    }

    /// Admits one PIN hash for `user` from `addr` (keyed by its network:
    /// an IPv6 address by its /64).
    pub fn pin(&self, user: &str, addr: IpAddr) -> Result<(), Refused> {
        self.pin_per_address
            .check_key(&network(addr))
            .map_err(|n| self.refused(Limit::PinAddress, n))?;
        self.pin_per_account
            .check_key(&user.to_owned())
            .map_err(|n| self.refused(Limit::PinAccount, n))
    }

    /// Drops the state of keys that are back to a full bucket (bounded memory).
    pub fn sweep(&self) {
        self.per_number.retain_recent();
        self.per_address.retain_recent();
        self.per_network.retain_recent();
        self.per_prefix.retain_recent();
        self.tightened_prefix.retain_recent();
        self.verify_per_address.retain_recent();
        self.pin_per_account.retain_recent();
        self.pin_per_address.retain_recent();
    }
}

/// The key an address is limited by: an IPv6 address by its /64 (one
/// subscriber's allocation, which it may rotate through at will), an IPv4
/// address as it is.
pub fn network(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
    }
}

/// The second tier of address limits: an IPv4 address by its /24, an IPv6
/// address by its /48 (a site's allocation).
pub fn wide_network(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => IpAddr::V4((u32::from(v4) & 0xffff_ff00).into()),
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !((1u128 << 80) - 1)).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(count: u32) -> Rate {
        Rate {
            count,
            per: Duration::from_secs(3600),
        }
    }

    fn addr(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    impl Limits {
        fn new_t(cfg: &LimitsConfig) -> Limits {
            Limits::new(cfg, rate(1))
        }

        fn code_request_t(&self, number: &str, prefix: &str, addr: IpAddr) -> Result<(), Refused> {
            self.code_request(number, prefix, addr, false)
        }
    }

    /// A refusal by `limit` with a wait of most of the hour (the bucket of
    /// `count` per hour refills one request per `3600 / count` seconds).
    fn assert_refused(r: Result<(), Refused>, limit: Limit) {
        let r = r.unwrap_err();
        assert_eq!(r.limit, limit);
        assert!(
            r.wait > Duration::from_secs(1000),
            "{limit:?}: {:?}",
            r.wait
        );
    }

    #[test]
    fn each_limit_refuses_with_a_wait() {
        // Per number: two requests, then that number waits; others do not.
        let l = Limits::new_t(&LimitsConfig {
            per_number: rate(2),
            ..LimitsConfig::default()
        });
        l.code_request_t("+15550000001", "+155500", addr(1))
            .unwrap();
        l.code_request_t("+15550000001", "+155500", addr(1))
            .unwrap();
        assert_refused(
            l.code_request_t("+15550000001", "+155500", addr(1)),
            Limit::Number,
        );
        l.code_request_t("+15550000002", "+155500", addr(1))
            .unwrap();

        // Per address: different numbers and prefixes from one address.
        let l = Limits::new_t(&LimitsConfig {
            per_address: rate(2),
            ..LimitsConfig::default()
        });
        l.code_request_t("+15550000001", "+155500", addr(1))
            .unwrap();
        l.code_request_t("+4930000001", "+493000", addr(1)).unwrap();
        assert_refused(
            l.code_request_t("+33600000001", "+336000", addr(1)),
            Limit::Address,
        );
        l.code_request_t("+33600000001", "+336000", addr(2))
            .unwrap();

        // Per prefix: different numbers and addresses under one prefix.
        let l = Limits::new_t(&LimitsConfig {
            per_prefix: rate(2),
            ..LimitsConfig::default()
        });
        l.code_request_t("+15550000001", "+155500", addr(1))
            .unwrap();
        l.code_request_t("+15550000002", "+155500", addr(2))
            .unwrap();
        assert_refused(
            l.code_request_t("+15550000003", "+155500", addr(3)),
            Limit::Prefix,
        );
        l.code_request_t("+15560000003", "+155600", addr(3))
            .unwrap();

        // Global: everything counts, whatever the number, prefix or address.
        let l = Limits::new_t(&LimitsConfig {
            global: rate(2),
            ..LimitsConfig::default()
        });
        l.code_request_t("+15550000001", "+155500", addr(1))
            .unwrap();
        l.code_request_t("+4930000001", "+493000", addr(2)).unwrap();
        assert_refused(
            l.code_request_t("+33600000001", "+336000", addr(3)),
            Limit::Global,
        );

        // Verification attempts per address; code requests are not affected.
        let l = Limits::new_t(&LimitsConfig {
            verify_per_address: rate(2),
            ..LimitsConfig::default()
        });
        l.verify(addr(1)).unwrap();
        l.verify(addr(1)).unwrap();
        assert_refused(l.verify(addr(1)), Limit::VerifyAddress);
        l.verify(addr(2)).unwrap();
        l.code_request_t("+15550000001", "+155500", addr(1))
            .unwrap();
    }

    #[test]
    fn an_ipv6_64_shares_one_budget_and_a_24_is_a_second_tier() {
        let l = Limits::new_t(&LimitsConfig {
            per_address: rate(2),
            per_network: rate(3),
            ..LimitsConfig::default()
        });
        let v6 = |last: u16| IpAddr::from([0x2001, 0xdb8, 1, 2, 0, 0, 0, last]);
        l.code_request_t("+15550000001", "+155500", v6(1)).unwrap();
        l.code_request_t("+15550000002", "+155500", v6(2)).unwrap();
        // Another address of the same /64: the same budget.
        assert_refused(
            l.code_request_t("+15550000003", "+155500", v6(3)),
            Limit::Address,
        );
        // IPv4: each address its own, the /24 together.
        let l = Limits::new_t(&LimitsConfig {
            per_address: rate(2),
            per_network: rate(3),
            ..LimitsConfig::default()
        });
        l.code_request_t("+15550000001", "+155500", addr(1))
            .unwrap();
        l.code_request_t("+15550000002", "+155500", addr(2))
            .unwrap();
        l.code_request_t("+15550000003", "+155500", addr(3))
            .unwrap();
        assert_refused(
            l.code_request_t("+15550000004", "+155500", addr(4)),
            Limit::Network,
        );
        l.code_request_t("+15550000004", "+155500", IpAddr::from([198, 51, 100, 1]))
            .unwrap();
    }

    #[test]
    fn a_tightened_prefix_gets_its_lower_rate() {
        let l = Limits::new(&LimitsConfig::default(), rate(1));
        l.code_request("+88191000001", "+881910", addr(1), true)
            .unwrap();
        assert_refused(
            l.code_request("+88191000002", "+881910", addr(2), true),
            Limit::TightenedPrefix,
        );
        // The same prefix untightened (released) is back to its own limit.
        l.code_request("+88191000003", "+881910", addr(3), false)
            .unwrap();
    }
}
