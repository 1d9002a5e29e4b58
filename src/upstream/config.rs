//! `[upstream]`: how the gateway reaches Redshift ([`UpstreamConfig`]): the accounts a request
//! acts in when it names none, the SDK's retries and timeouts, the session cache and the bound on
//! calls talking to AWS at once, with their defaults and the checks made once at start.

use crate::bounds::in_range;
use std::ops::RangeInclusive;

/// `upstream.min_remaining_deadline_ms` when unset.
pub const DEFAULT_MIN_REMAINING_DEADLINE_MS: u64 = 50;

// The bounds of the durations, so that none can overflow a timer or refuse every call. A minute
// of margin before a call is already more than any caller's deadline should need; an operation
// (retries included) longer than ten minutes outlives every caller and the drain.
/// `upstream.min_remaining_deadline_ms`: 0 (start any call with time left) to a minute.
pub(crate) const MIN_REMAINING_DEADLINE_MS: RangeInclusive<u64> = 0..=60_000;
/// `upstream.initial_backoff_ms`: 1 ms to a minute.
pub(crate) const INITIAL_BACKOFF_MS: RangeInclusive<u64> = 1..=60_000;
/// `upstream.connect_timeout_ms`: 1 ms to a minute.
pub(crate) const CONNECT_TIMEOUT_MS: RangeInclusive<u64> = 1..=60_000;
/// `upstream.operation_timeout_ms`, and `upstream.attempt_timeout_ms` below it: 1 ms to ten
/// minutes.
pub(crate) const OPERATION_TIMEOUT_MS: RangeInclusive<u64> = 1..=600_000;
/// `upstream.throttle_retry_after_ms`: 1 ms to ten minutes.
pub(crate) const THROTTLE_RETRY_AFTER_MS: RangeInclusive<u64> = 1..=600_000;
/// `upstream.max_concurrent_requests`: a semaphore's permits.
pub(crate) const MAX_CONCURRENT_REQUESTS: RangeInclusive<usize> = 1..=100_000;
/// `upstream.session_cache_size`.
pub(crate) const SESSION_CACHE_SIZE: RangeInclusive<usize> = 1..=1_000_000;
/// `upstream.pool_max_idle_per_host`: 0 (close each connection after its call) to the most that
/// can be busy at once.
pub(crate) const POOL_MAX_IDLE_PER_HOST: RangeInclusive<usize> = 0..=100_000;
/// `upstream.pool_idle_timeout_ms`: 1 ms to ten minutes.
pub(crate) const POOL_IDLE_TIMEOUT_MS: RangeInclusive<u64> = 1..=600_000;

/// `[upstream]`: how the gateway reaches Redshift.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The single-account form: a consumer account the gateway acts in with its own
    /// credentials (the default chain), no role. Optional beside `[accounts]`.
    #[serde(default)]
    pub consumer_account: Option<String>,
    /// The account a request acts in when it names none (`consumer_account` field empty, and an
    /// entire-account or region target). Unset: `consumer_account`, else such requests are
    /// INVALID_ARGUMENT.
    #[serde(default)]
    pub default_account: Option<String>,
    /// Role sessions kept, one per (account, role, external id, principal); least recently used
    /// out.
    #[serde(default = "defaults::session_cache_size")]
    pub session_cache_size: usize,
    /// A call with less than this left of its deadline, in milliseconds, is not started: checked
    /// before the write-ahead intent and again before Redshift is called.
    #[serde(default = "defaults::min_remaining_deadline_ms")]
    pub min_remaining_deadline_ms: u64,
    /// The AWS region; unset uses the default chain (`AWS_REGION`, profile, IMDS).
    #[serde(default)]
    pub region: Option<String>,
    /// Send requests here instead of Redshift's endpoint (the emulator). Overridden by the
    /// environment variable `DATASHARE_GATEWAY_ENDPOINT_URL`; `AWS_ENDPOINT_URL_REDSHIFT` also works.
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// Attempts per call, the first included (the SDK's standard retry mode).
    #[serde(default = "defaults::max_attempts")]
    pub max_attempts: u32,
    /// The first retry's backoff ceiling, in milliseconds (the SDK jitters below it).
    #[serde(default = "defaults::initial_backoff_ms")]
    pub initial_backoff_ms: u64,
    /// Connect timeout, in milliseconds.
    #[serde(default = "defaults::connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Timeout of one attempt, in milliseconds.
    #[serde(default = "defaults::attempt_timeout_ms")]
    pub attempt_timeout_ms: u64,
    /// Timeout of a whole call with its retries, in milliseconds.
    #[serde(default = "defaults::operation_timeout_ms")]
    pub operation_timeout_ms: u64,
    /// The `RetryInfo` delay suggested to callers when Redshift throttles, in milliseconds.
    #[serde(default = "defaults::throttle_retry_after_ms")]
    pub throttle_retry_after_ms: u64,
    /// Calls talking to Redshift at once; more wait their turn, their SDK timeouts starting once
    /// it comes. A call takes its turn once it has its role session: AssumeRole calls (one per
    /// caller and role at a time) take none. Each costs a connection and tens of KB while it waits on AWS.
    #[serde(default = "defaults::max_concurrent_requests")]
    pub max_concurrent_requests: usize,
    /// Idle connections kept per AWS endpoint once their calls are done; more are closed. A
    /// burst opens up to `max_concurrent_requests` connections, and without a bound every one
    /// of them (with its TLS state) outlives the burst.
    #[serde(default = "defaults::pool_max_idle_per_host")]
    pub pool_max_idle_per_host: usize,
    /// An idle connection to AWS is closed after this long, in milliseconds.
    #[serde(default = "defaults::pool_idle_timeout_ms")]
    pub pool_idle_timeout_ms: u64,
}

mod defaults {
    pub(super) fn max_attempts() -> u32 {
        3
    }
    pub(super) fn initial_backoff_ms() -> u64 {
        1000
    }
    pub(super) fn connect_timeout_ms() -> u64 {
        3100
    }
    pub(super) fn attempt_timeout_ms() -> u64 {
        5000
    }
    pub(super) fn operation_timeout_ms() -> u64 {
        15000
    }
    pub(super) fn throttle_retry_after_ms() -> u64 {
        1000
    }
    pub(super) fn max_concurrent_requests() -> usize {
        512
    }
    pub(super) fn pool_max_idle_per_host() -> usize {
        64
    }
    pub(super) fn pool_idle_timeout_ms() -> u64 {
        20_000
    }
    pub(super) fn session_cache_size() -> usize {
        10_000
    }
    pub(super) fn min_remaining_deadline_ms() -> u64 {
        super::DEFAULT_MIN_REMAINING_DEADLINE_MS
    }
}

impl UpstreamConfig {
    /// A config for the given account with every other setting at its default.
    pub fn for_account(consumer_account: impl Into<String>) -> Self {
        UpstreamConfig {
            consumer_account: Some(consumer_account.into()),
            default_account: None,
            session_cache_size: defaults::session_cache_size(),
            min_remaining_deadline_ms: defaults::min_remaining_deadline_ms(),
            region: None,
            endpoint_url: None,
            max_attempts: defaults::max_attempts(),
            initial_backoff_ms: defaults::initial_backoff_ms(),
            connect_timeout_ms: defaults::connect_timeout_ms(),
            attempt_timeout_ms: defaults::attempt_timeout_ms(),
            operation_timeout_ms: defaults::operation_timeout_ms(),
            throttle_retry_after_ms: defaults::throttle_retry_after_ms(),
            max_concurrent_requests: defaults::max_concurrent_requests(),
            pool_max_idle_per_host: defaults::pool_max_idle_per_host(),
            pool_idle_timeout_ms: defaults::pool_idle_timeout_ms(),
        }
    }

    /// Checks the values; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        for (key, value) in [
            ("upstream.consumer_account", &self.consumer_account),
            ("upstream.default_account", &self.default_account),
        ] {
            if let Some(value) = value {
                crate::arn::AccountId::parse(value)
                    .map_err(|e| format!("{key} = {value:?}: {e}"))?;
            }
        }
        in_range(
            "upstream.session_cache_size",
            self.session_cache_size,
            &SESSION_CACHE_SIZE,
        )?;
        in_range(
            "upstream.max_concurrent_requests",
            self.max_concurrent_requests,
            &MAX_CONCURRENT_REQUESTS,
        )?;
        in_range(
            "upstream.pool_max_idle_per_host",
            self.pool_max_idle_per_host,
            &POOL_MAX_IDLE_PER_HOST,
        )?;
        if let Some(region) = &self.region {
            crate::arn::Region::parse_configured(region)
                .map_err(|e| format!("upstream.region = {region:?}: {e}"))?;
        }
        if let Some(url) = &self.endpoint_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(format!(
                "upstream.endpoint_url = {url:?}: must start with http:// or https://"
            ));
        }
        if !(1..=10).contains(&self.max_attempts) {
            return Err(format!(
                "upstream.max_attempts = {}: must be 1 to 10",
                self.max_attempts
            ));
        }
        for (key, value, range) in [
            (
                "upstream.min_remaining_deadline_ms",
                self.min_remaining_deadline_ms,
                &MIN_REMAINING_DEADLINE_MS,
            ),
            (
                "upstream.initial_backoff_ms",
                self.initial_backoff_ms,
                &INITIAL_BACKOFF_MS,
            ),
            (
                "upstream.connect_timeout_ms",
                self.connect_timeout_ms,
                &CONNECT_TIMEOUT_MS,
            ),
            (
                "upstream.attempt_timeout_ms",
                self.attempt_timeout_ms,
                &OPERATION_TIMEOUT_MS,
            ),
            (
                "upstream.operation_timeout_ms",
                self.operation_timeout_ms,
                &OPERATION_TIMEOUT_MS,
            ),
            (
                "upstream.pool_idle_timeout_ms",
                self.pool_idle_timeout_ms,
                &POOL_IDLE_TIMEOUT_MS,
            ),
            (
                "upstream.throttle_retry_after_ms",
                self.throttle_retry_after_ms,
                &THROTTLE_RETRY_AFTER_MS,
            ),
        ] {
            in_range(key, value, range)?;
        }
        if self.attempt_timeout_ms > self.operation_timeout_ms {
            return Err(format!(
                "upstream.attempt_timeout_ms = {}: must not exceed upstream.operation_timeout_ms = {}",
                self.attempt_timeout_ms, self.operation_timeout_ms
            ));
        }
        Ok(())
    }
}

impl UpstreamConfig {
    /// The account requests act in when they name none: `default_account`, else
    /// `consumer_account`. Call after [`UpstreamConfig::validate`].
    pub fn default_account(&self) -> Option<crate::arn::AccountId> {
        self.default_account
            .as_ref()
            .or(self.consumer_account.as_ref())
            .and_then(|a| crate::arn::AccountId::parse(a).ok())
    }

    /// The single-account form's account. Call after [`UpstreamConfig::validate`].
    pub fn own_account(&self) -> Option<crate::arn::AccountId> {
        self.consumer_account
            .as_ref()
            .and_then(|a| crate::arn::AccountId::parse(a).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_validation_names_the_key() {
        let mut config = UpstreamConfig::for_account("444455556666");
        assert!(config.validate().is_ok());
        config.consumer_account = Some("12".into());
        assert!(
            config
                .validate()
                .unwrap_err()
                .starts_with("upstream.consumer_account")
        );
        let mut config = UpstreamConfig::for_account("444455556666");
        config.attempt_timeout_ms = 20_000;
        assert!(
            config
                .validate()
                .unwrap_err()
                .starts_with("upstream.attempt_timeout_ms")
        );
        let mut config = UpstreamConfig::for_account("444455556666");
        config.pool_idle_timeout_ms = 0;
        assert!(
            config
                .validate()
                .unwrap_err()
                .starts_with("upstream.pool_idle_timeout_ms")
        );
        let mut config = UpstreamConfig::for_account("444455556666");
        config.pool_max_idle_per_host = 100_001;
        assert!(
            config
                .validate()
                .unwrap_err()
                .starts_with("upstream.pool_max_idle_per_host")
        );
    }
}
