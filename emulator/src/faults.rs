//! Fault injection and per-operation counters.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// What an injected fault does to a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// 400 `Throttling` "Rate exceeded": the SDKs classify it as throttling and retry.
    Throttling,
    /// 500 `InternalFailure` (retried as transient).
    InternalFailure,
    /// 503 `ServiceUnavailable` (retried as transient).
    ServiceUnavailable,
    /// HTTP 429 with no AWS error code (an HTML body): botocore retries it, the Rust SDK does not.
    #[serde(rename = "bare_429")]
    Bare429,
    /// Only delay the call (`latency_ms` plus up to `jitter_ms`), then handle it normally.
    Latency,
    /// Hold the call until `POST /faults/release` (or `DELETE /faults`, `POST /reset`, shutdown)
    /// lets it go, then handle it normally: a call a test can keep in flight for as long as it
    /// needs, instead of guessing a latency.
    Hold,
    /// Close the connection without answering.
    CloseConnection,
    /// Answer 200 with a body that is not valid XML.
    MalformedBody,
    /// Answer with any AWS error: `code` and `status` (default 400) from the rule. For the
    /// errors the state machine never produces, such as parameter or credential errors.
    Error,
}

impl FromStr for FaultKind {
    type Err = FaultSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        serde_json::from_value(serde_json::Value::String(s.to_owned()))
            .map_err(|_| FaultSpecError::UnknownKind(s.to_owned()))
    }
}

/// Why a fault rule, or its `--fault` spelling, was refused. Each message states the rule.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum FaultSpecError {
    /// The kind is not one of [`FaultKind`]'s.
    #[error(
        "unknown fault kind '{0}': expected throttling, internal_failure, service_unavailable, bare_429, latency, hold, close_connection, malformed_body or error"
    )]
    UnknownKind(String),
    /// An option after the kind is not `key=value`.
    #[error("expected key=value, got '{0}'")]
    NotKeyValue(String),
    /// The option is not one the spelling knows.
    #[error("unknown fault option '{0}'")]
    UnknownOption(String),
    /// A count or a delay is not a whole number.
    #[error("{key} must be a whole number, got '{value}'")]
    NotWholeNumber {
        /// The option, e.g. `count`.
        key: String,
        /// The value given.
        value: String,
    },
    /// The probability is not a number.
    #[error("probability must be a number, got '{0}'")]
    NotANumber(String),
    /// Kind `error` without the code to answer with.
    #[error("kind error needs a code (the AWS error code to answer with)")]
    MissingCode,
    /// The status is not an HTTP error status.
    #[error("status must be 400 to 599, got {0}")]
    Status(u16),
    /// Both `count` and `probability`.
    #[error("give either count or probability, not both")]
    CountAndProbability,
    /// The probability is outside 0 to 1.
    #[error("probability must be between 0 and 1, got {0}")]
    Probability(f64),
}

/// One fault rule. With neither `count` nor `probability` it applies to every matching call
/// until cleared.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// What the fault does.
    pub kind: FaultKind,
    /// The `Action` it applies to; absent or `*` means every operation.
    #[serde(default)]
    pub operation: Option<String>,
    /// Apply to the next `count` matching calls only.
    #[serde(default)]
    pub count: Option<u64>,
    /// Apply to this fraction (0.0 to 1.0) of matching calls.
    #[serde(default)]
    pub probability: Option<f64>,
    /// Added delay, for any kind.
    #[serde(default)]
    pub latency_ms: u64,
    /// Up to this much further random delay.
    #[serde(default)]
    pub jitter_ms: u64,
    /// For kind `error`: the AWS error code to answer with.
    #[serde(default)]
    pub code: Option<String>,
    /// For kind `error`: the HTTP status (default 400).
    #[serde(default)]
    pub status: Option<u16>,
}

impl FaultSpec {
    /// Checks the rule: `count` and `probability` exclude each other; probability in 0..=1.
    pub fn validate(&self) -> Result<(), FaultSpecError> {
        if self.kind == FaultKind::Error && self.code.as_deref().is_none_or(str::is_empty) {
            return Err(FaultSpecError::MissingCode);
        }
        if let Some(status) = self.status
            && !(400..=599).contains(&status)
        {
            return Err(FaultSpecError::Status(status));
        }
        if self.count.is_some() && self.probability.is_some() {
            return Err(FaultSpecError::CountAndProbability);
        }
        if let Some(p) = self.probability
            && !(0.0..=1.0).contains(&p)
        {
            return Err(FaultSpecError::Probability(p));
        }
        Ok(())
    }
}

/// `KIND[,op=Action][,count=N][,probability=P][,latency_ms=N][,jitter_ms=N]`, as the CLI
/// flag `--fault` takes it.
impl FromStr for FaultSpec {
    type Err = FaultSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.split(',');
        let kind = parts.next().unwrap_or_default().trim().parse()?;
        let mut spec = FaultSpec {
            kind,
            operation: None,
            count: None,
            probability: None,
            latency_ms: 0,
            jitter_ms: 0,
            code: None,
            status: None,
        };
        for part in parts {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| FaultSpecError::NotKeyValue(part.to_owned()))?;
            let num = |v: &str| {
                v.parse::<u64>()
                    .map_err(|_| FaultSpecError::NotWholeNumber {
                        key: k.to_owned(),
                        value: v.to_owned(),
                    })
            };
            match k.trim() {
                "op" | "operation" => spec.operation = Some(v.to_owned()),
                "count" => spec.count = Some(num(v)?),
                "probability" => {
                    spec.probability = Some(
                        v.parse()
                            .map_err(|_| FaultSpecError::NotANumber(v.to_owned()))?,
                    )
                }
                "latency_ms" => spec.latency_ms = num(v)?,
                "jitter_ms" => spec.jitter_ms = num(v)?,
                other => return Err(FaultSpecError::UnknownOption(other.to_owned())),
            }
        }
        spec.validate()?;
        Ok(spec)
    }
}

/// What to do with one call.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Decision {
    pub(crate) delay: Duration,
    /// Wait for a release (a `hold` rule fired) before handling the call.
    pub(crate) hold: bool,
    pub(crate) fault: Option<FaultKind>,
    /// For [`FaultKind::Error`]: the HTTP status and the AWS error code.
    pub(crate) error: Option<(u16, String)>,
}

/// The active fault rules.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    rules: Mutex<Vec<FaultSpec>>,
}

impl Faults {
    pub(crate) fn new(initial: Vec<FaultSpec>) -> Self {
        Faults {
            rules: Mutex::new(initial),
        }
    }

    pub(crate) fn add(&self, spec: FaultSpec) {
        self.rules
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(spec);
    }

    pub(crate) fn clear(&self) {
        self.rules
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    pub(crate) fn list(&self) -> Vec<FaultSpec> {
        self.rules
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Decides the fate of one call to `operation`. Latency adds up over all matching rules and
    /// any matching hold holds it; the first other rule that fires decides the outcome, and
    /// later rules are not consumed.
    pub(crate) fn decide(&self, operation: &str) -> Decision {
        let mut rules = self.rules.lock().unwrap_or_else(PoisonError::into_inner);
        let mut decision = Decision::default();
        for rule in rules.iter_mut() {
            let applies = rule
                .operation
                .as_deref()
                .is_none_or(|op| op == "*" || op == operation);
            let shapes_only = matches!(rule.kind, FaultKind::Latency | FaultKind::Hold);
            if !applies || (decision.fault.is_some() && !shapes_only) {
                continue;
            }
            let fires = match (rule.count.as_mut(), rule.probability) {
                (Some(0), _) => false,
                (Some(n), _) => {
                    *n -= 1;
                    true
                }
                (None, Some(p)) => rand::random::<f64>() < p,
                (None, None) => true,
            };
            if !fires {
                continue;
            }
            let jitter = if rule.jitter_ms > 0 {
                rand::random_range(0..=rule.jitter_ms)
            } else {
                0
            };
            decision.delay += Duration::from_millis(rule.latency_ms + jitter);
            decision.hold |= rule.kind == FaultKind::Hold;
            if !shapes_only {
                decision.fault = Some(rule.kind);
                if rule.kind == FaultKind::Error {
                    decision.error = Some((
                        rule.status.unwrap_or(400),
                        rule.code.clone().unwrap_or_default(),
                    ));
                }
            }
        }
        rules.retain(|r| r.count != Some(0));
        decision
    }
}

/// The calls `hold` rules stopped, until a release lets them all go.
#[derive(Debug)]
pub(crate) struct Holds {
    /// Moved on by each release; a held call waits for it to change.
    releases: watch::Sender<u64>,
    held: AtomicU64,
}

impl Default for Holds {
    fn default() -> Self {
        Holds {
            releases: watch::Sender::new(0),
            held: AtomicU64::new(0),
        }
    }
}

/// Counts a call as held while it lives (a call whose client went away is dropped mid-hold).
struct HeldCall<'a>(&'a AtomicU64);

impl Drop for HeldCall<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Holds {
    /// Waits for the next release. Counted in [`Holds::held`] from before it waits, so a
    /// release sent once the count shows the call is sure to reach it.
    pub(crate) async fn hold(&self) {
        let mut next = self.releases.subscribe();
        self.held.fetch_add(1, Ordering::SeqCst);
        let _counted = HeldCall(&self.held);
        // The sender lives as long as `self`: this returns at the next release.
        let _ = next.changed().await;
    }

    /// How many calls are held now.
    pub(crate) fn held(&self) -> u64 {
        self.held.load(Ordering::SeqCst)
    }

    /// Lets every held call go on; returns how many were held.
    pub(crate) fn release(&self) -> u64 {
        let held = self.held();
        self.releases.send_modify(|n| *n = n.wrapping_add(1));
        held
    }
}

/// The counters of one operation.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub(crate) struct OpCounters {
    /// Requests received with this `Action`.
    pub(crate) received: u64,
    /// Requests that passed fault injection and SigV4 and reached the operation handler.
    pub(crate) forwarded: u64,
    /// Requests answered with any HTTP response (not closed, not dropped).
    pub(crate) answered: u64,
    /// Faults injected, by kind.
    pub(crate) faults: BTreeMap<String, u64>,
    /// Requests refused for going over the operation's own rate (LookupEvents' 2 a second per
    /// account), not injected.
    pub(crate) throttled: u64,
    /// Requests by the SDK's `amz-sdk-request: attempt=N` value.
    pub(crate) attempts: BTreeMap<u32, u64>,
}

/// Counters per `Action` (`-` when the request had none).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    ops: Mutex<BTreeMap<String, OpCounters>>,
}

impl Counters {
    pub(crate) fn update(&self, operation: &str, f: impl FnOnce(&mut OpCounters)) {
        let mut ops = self.ops.lock().unwrap_or_else(PoisonError::into_inner);
        f(ops.entry(operation.to_owned()).or_default());
    }

    pub(crate) fn snapshot(&self) -> BTreeMap<String, OpCounters> {
        self.ops
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn reset(&self) {
        self.ops
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

/// Parses `amz-sdk-request: attempt=N; max=M`.
pub(crate) fn parse_sdk_request(value: &str) -> (Option<u32>, Option<u32>) {
    let mut attempt = None;
    let mut max = None;
    for part in value.split(';') {
        match part.trim().split_once('=') {
            Some(("attempt", v)) => attempt = v.trim().parse().ok(),
            Some(("max", v)) => max = v.trim().parse().ok(),
            _ => {}
        }
    }
    (attempt, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_n_faults_fire_n_times_then_go() {
        let f = Faults::new(vec![
            "throttling,op=RejectDataShare,count=2".parse().unwrap(),
        ]);
        assert_eq!(f.decide("DescribeDataShares").fault, None);
        assert_eq!(
            f.decide("RejectDataShare").fault,
            Some(FaultKind::Throttling)
        );
        assert_eq!(
            f.decide("RejectDataShare").fault,
            Some(FaultKind::Throttling)
        );
        assert_eq!(f.decide("RejectDataShare").fault, None);
        assert!(f.list().is_empty());
    }

    #[test]
    fn latency_adds_up_and_does_not_stop_other_faults() {
        let f = Faults::new(vec![
            "latency,latency_ms=5".parse().unwrap(),
            "internal_failure,probability=1".parse().unwrap(),
            "bare_429,count=1".parse().unwrap(),
        ]);
        let d = f.decide("X");
        assert_eq!(d.delay, Duration::from_millis(5));
        assert_eq!(d.fault, Some(FaultKind::InternalFailure));
        // The bare 429 rule was not consumed.
        assert_eq!(f.list().len(), 3);
    }

    #[test]
    fn a_hold_holds_without_deciding_the_outcome() {
        let f = Faults::new(vec![
            "hold,op=X,count=1".parse().unwrap(),
            "throttling,op=X,count=1".parse().unwrap(),
        ]);
        let d = f.decide("X");
        assert!(d.hold);
        assert_eq!(d.fault, Some(FaultKind::Throttling));
        assert!(!f.decide("X").hold, "count=1: the next call is not held");
        assert!(!f.decide("Y").hold);
    }

    #[tokio::test]
    async fn held_calls_wait_for_a_release_and_are_counted_while_they_wait() {
        let holds = std::sync::Arc::new(Holds::default());
        assert_eq!(
            holds.release(),
            0,
            "a release with nothing held is harmless"
        );
        let mut calls = Vec::new();
        for _ in 0..2 {
            let holds = holds.clone();
            calls.push(tokio::spawn(async move { holds.hold().await }));
        }
        while holds.held() < 2 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            calls.iter().all(|c| !c.is_finished()),
            "held until released"
        );
        assert_eq!(holds.release(), 2);
        for call in calls {
            tokio::time::timeout(Duration::from_secs(5), call)
                .await
                .expect("released")
                .expect("no panic");
        }
        assert_eq!(holds.held(), 0);
        // A call dropped while held (its client went away) is no longer counted.
        let dropped = tokio::spawn({
            let holds = holds.clone();
            async move { holds.hold().await }
        });
        while holds.held() < 1 {
            tokio::task::yield_now().await;
        }
        dropped.abort();
        let _ = dropped.await;
        assert_eq!(holds.held(), 0);
    }

    #[test]
    fn spec_strings_are_checked() {
        let refused = |s: &str| s.parse::<FaultSpec>().unwrap_err();
        assert_eq!(refused("nope"), FaultSpecError::UnknownKind("nope".into()));
        assert_eq!(
            refused("throttling,count=1,probability=0.5"),
            FaultSpecError::CountAndProbability
        );
        assert_eq!(
            refused("throttling,probability=2"),
            FaultSpecError::Probability(2.0)
        );
        assert_eq!(
            refused("throttling,colour=red"),
            FaultSpecError::UnknownOption("colour".into())
        );
        assert_eq!(
            refused("latency,latency_ms=soon").to_string(),
            "latency_ms must be a whole number, got 'soon'"
        );
        let s: FaultSpec = "latency,latency_ms=10,jitter_ms=5,op=*".parse().unwrap();
        assert_eq!((s.latency_ms, s.jitter_ms), (10, 5));
    }

    #[test]
    fn sdk_request_header_is_parsed() {
        assert_eq!(parse_sdk_request("attempt=2; max=3"), (Some(2), Some(3)));
        assert_eq!(parse_sdk_request("junk"), (None, None));
    }
}
