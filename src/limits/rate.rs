//! A rate per caller: a token bucket (GCRA, from the `governor` crate) per principal, refilled at
//! `calls_per_second` and holding `burst`; a call that finds its caller's bucket empty is refused
//! with the time until the next token as its `RetryInfo`. Per replica: with several replicas a
//! caller gets the rate from each.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{Quota, RateLimiter};
use serde::Deserialize;

use crate::call::Principal;

/// `[server.per_caller_rate]`: each principal's rate of calls into the gateway.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RateConfig {
    /// Calls a second, sustained.
    pub calls_per_second: u32,
    /// Calls at once after a quiet spell (the bucket's size); at least 1.
    pub burst: u32,
}

/// The buckets, one per principal that called lately.
#[derive(Debug)]
pub struct CallerRates {
    limiter:
        RateLimiter<String, governor::state::keyed::DefaultKeyedStateStore<String>, DefaultClock>,
    clock: DefaultClock,
    config: RateConfig,
    /// Checks since the buckets of callers gone quiet were last dropped.
    since_prune: AtomicU32,
}

/// A refusal: the caller's bucket is empty until `retry_after` from now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OverRate {
    pub retry_after: Duration,
    pub config: RateConfig,
}

/// Buckets of callers whose last call is older than a full refill are dropped every this many
/// checks: a full bucket and no bucket are the same.
const PRUNE_EVERY: u32 = 4096;

impl CallerRates {
    /// Buckets of `config`; `None` when the rate or the burst is 0 (the configuration's
    /// validation refuses that before this is made).
    pub fn new(config: RateConfig) -> Option<Arc<Self>> {
        let quota = Quota::per_second(NonZeroU32::new(config.calls_per_second)?)
            .allow_burst(NonZeroU32::new(config.burst)?);
        let clock = DefaultClock::default();
        Some(Arc::new(CallerRates {
            limiter: RateLimiter::new(quota, Default::default(), clock.clone()),
            clock,
            config,
            since_prune: AtomicU32::new(0),
        }))
    }

    /// Takes one token from `caller`'s bucket, or says how long until there is one.
    pub fn check(&self, caller: &Principal) -> Result<(), OverRate> {
        if self.since_prune.fetch_add(1, Ordering::Relaxed) >= PRUNE_EVERY {
            self.since_prune.store(0, Ordering::Relaxed);
            self.limiter.retain_recent();
        }
        self.limiter
            .check_key(&caller.id)
            .map_err(|not_until| OverRate {
                retry_after: not_until.wait_time_from(self.clock.now()),
                config: self.config,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(id: &str) -> Principal {
        Principal {
            id: id.into(),
            groups: Vec::new(),
        }
    }

    #[test]
    fn a_caller_gets_its_burst_then_waits_for_the_next_token_and_others_are_untouched() {
        let rates = CallerRates::new(RateConfig {
            calls_per_second: 2,
            burst: 3,
        })
        .unwrap();
        for _ in 0..3 {
            rates.check(&principal("flood")).unwrap();
        }
        let refused = rates.check(&principal("flood")).unwrap_err();
        // One token every 500 ms: the next is at most that far.
        assert!(refused.retry_after > Duration::ZERO);
        assert!(refused.retry_after <= Duration::from_millis(500));
        rates.check(&principal("other")).unwrap();
    }

    #[test]
    fn a_zero_rate_or_burst_makes_no_buckets() {
        assert!(
            CallerRates::new(RateConfig {
                calls_per_second: 0,
                burst: 1
            })
            .is_none()
        );
        assert!(
            CallerRates::new(RateConfig {
                calls_per_second: 1,
                burst: 0
            })
            .is_none()
        );
    }
}
