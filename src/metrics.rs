//! Prometheus metrics: calls, latency, policy decisions and reloads, upstream calls and retries,
//! audit writer and trace export. Label values are bounded: methods, gRPC codes, decisions,
//! operation names, AWS error codes and the serving policy set's hash, never ARNs or principals.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use tower::Service;

use crate::call::{Call, CallFuture, Operation, Received};
use crate::errors::GatewayError;
use crate::middleware::Middleware;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    method: &'static str,
    /// The canonical name (`DEADLINE_EXCEEDED`), as in the audit trail.
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    operation: &'static str,
    aws_error_code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShedLabels {
    pool: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    transition: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicySetLabels {
    sha256: String,
}

/// Values read from other parts of the gateway when the admin listener is scraped (`/metrics`,
/// `/readyz`).
pub trait ScrapeSource: Send + Sync + std::fmt::Debug {
    /// Brings gauges and counters owned elsewhere (the audit writer, the span exporter) up to date.
    fn refresh(&self, metrics: &Metrics);

    /// What `/readyz` adds to its body without changing readiness, such as a refused policy
    /// reload (the previous set still serves); `None` when there is nothing to report.
    fn readiness_note(&self) -> Option<String> {
        None
    }
}

/// The gateway's metrics and their registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    call_duration: Family<MethodLabels, Histogram>,
    in_flight: Gauge,
    policy_decisions: Family<DecisionLabels, Counter>,
    upstream_calls: Family<UpstreamLabels, Counter>,
    upstream_duration: Family<OperationLabels, Histogram>,
    upstream_retries: Family<OperationLabels, Counter>,
    /// 1 while the gateway is serving (the verdict of `grpc.health.v1` and `/readyz`), else 0.
    pub serving: Gauge,
    /// 1 while the audit trail can be written, else 0 (calls fail closed).
    pub audit_writable: Gauge,
    /// Records waiting in the audit writer's queue.
    pub audit_queue_depth: Gauge,
    /// Audit records made durable.
    pub audit_records: Counter,
    /// Audit fsyncs.
    pub audit_fsyncs: Counter,
    /// Total time spent in audit fsyncs, in seconds.
    pub audit_fsync_seconds: Counter<f64, AtomicU64>,
    /// Signed audit checkpoints written.
    pub audit_checkpoints: Counter,
    /// Bytes of audit files and checkpoints not yet shipped to S3 (the open file included).
    pub audit_unshipped_bytes: Gauge,
    /// Age of the oldest audit file or checkpoint not yet shipped, in seconds (0: none).
    pub audit_oldest_unshipped_seconds: Gauge,
    audit_ship: Family<ResultLabels, Counter>,
    /// Trace spans dropped: the export queue was full, or their export failed or timed out.
    pub spans_dropped: Counter,
    /// Log lines dropped because the log writer's queue was full.
    pub log_lines_dropped: Counter,
    /// Role sessions in the cache (one per account, role and principal).
    pub sts_sessions_cached: Gauge,
    sts_assume_role: Family<ResultLabels, Counter>,
    sts_session_renewals: Family<ResultLabels, Counter>,
    tls_handshake_failures: Family<ReasonLabels, Counter>,
    connections_refused: Family<ReasonLabels, Counter>,
    connections_closed: Family<ReasonLabels, Counter>,
    accept_errors: Family<ListenerLabels, Counter>,
    policy_reloads: Family<ResultLabels, Counter>,
    /// One series, set to 1, labelled with the serving set's hash.
    policy_set: Family<PolicySetLabels, Gauge>,
    approvals_live: Family<StateLabels, Gauge>,
    approval_transitions: Family<TransitionLabels, Counter>,
    /// Calls refused because `server.max_in_flight_calls` were already in the gateway.
    pub in_flight_cap_refusals: Counter,
    calls_shed: Family<ShedLabels, Counter>,
    /// Cedar evaluations made by the policy layer (a denied call costs at most two).
    pub policy_evaluations: Counter,
    /// Reads of a gated call's live approval from the approvals store.
    pub approval_lookups: Counter,
    sources: std::sync::Mutex<Vec<Arc<dyn ScrapeSource>>>,
}

/// How a policy reload ended (`policy_reload_total{result}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyReload {
    /// The new set serves (`ok`).
    Ok,
    /// The new set was refused; the running one stays (`refused`).
    Refused,
}

impl PolicyReload {
    fn label(self) -> &'static str {
        match self {
            PolicyReload::Ok => "ok",
            PolicyReload::Refused => "refused",
        }
    }
}

fn latency_buckets() -> Family<MethodLabels, Histogram> {
    // 100 µs to ~26 s.
    Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0001, 2.0, 19)))
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("datashare_gateway");
        let calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "calls",
            "gRPC calls by method and status code",
            calls.clone(),
        );
        let call_duration = latency_buckets();
        registry.register_with_unit(
            "call_duration",
            "gRPC call latency",
            Unit::Seconds,
            call_duration.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "in_flight_calls",
            "gRPC calls in progress",
            in_flight.clone(),
        );
        let policy_decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "policy_decisions",
            "Policy decisions by outcome",
            policy_decisions.clone(),
        );
        let upstream_calls = Family::<UpstreamLabels, Counter>::default();
        registry.register(
            "upstream_calls",
            "Redshift calls by operation and AWS error code (none on success)",
            upstream_calls.clone(),
        );
        let upstream_duration = Family::<OperationLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.0, 19))
        });
        registry.register_with_unit(
            "upstream_duration",
            "Redshift call latency, retries included",
            Unit::Seconds,
            upstream_duration.clone(),
        );
        let upstream_retries = Family::<OperationLabels, Counter>::default();
        registry.register(
            "upstream_retries",
            "Redshift attempts beyond the first",
            upstream_retries.clone(),
        );
        let serving = Gauge::default();
        registry.register(
            "serving",
            "1 while grpc.health.v1 and /readyz report SERVING, 0 while NOT_SERVING (audit notes unwritable, or shutting down)",
            serving.clone(),
        );
        let audit_writable = Gauge::default();
        registry.register(
            "audit_writable",
            "1 while the audit notes can be written, 0 while it cannot (calls that need a record fail with AUDIT_UNAVAILABLE)",
            audit_writable.clone(),
        );
        let audit_queue_depth = Gauge::default();
        registry.register(
            "audit_queue_depth",
            "Audit records waiting to be written",
            audit_queue_depth.clone(),
        );
        let audit_records = Counter::default();
        registry.register(
            "audit_records",
            "Audit records made durable",
            audit_records.clone(),
        );
        let audit_fsyncs = Counter::default();
        registry.register("audit_fsyncs", "Audit batch fsyncs", audit_fsyncs.clone());
        let audit_fsync_seconds = Counter::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "audit_fsync",
            "Time spent in audit fsyncs",
            Unit::Seconds,
            audit_fsync_seconds.clone(),
        );
        let audit_checkpoints = Counter::default();
        registry.register(
            "audit_checkpoints",
            "Signed audit checkpoints written",
            audit_checkpoints.clone(),
        );
        let audit_unshipped_bytes = Gauge::default();
        registry.register(
            "audit_unshipped_bytes",
            "Bytes of audit files and checkpoints not yet shipped to S3 (the open file included); grows while S3 is unreachable",
            audit_unshipped_bytes.clone(),
        );
        let audit_oldest_unshipped_seconds = Gauge::default();
        registry.register_with_unit(
            "audit_oldest_unshipped",
            "Age of the oldest audit file or checkpoint not yet shipped to S3 (0: everything shipped)",
            Unit::Seconds,
            audit_oldest_unshipped_seconds.clone(),
        );
        let audit_ship = Family::<ResultLabels, Counter>::default();
        // Every result from the start, at 0, so an alert on `increase(...)` sees the first one.
        for result in [
            "shipped",
            "already_present",
            "conflict",
            "error",
            "permanent_error",
        ] {
            let _ = audit_ship.get_or_create(&ResultLabels { result });
        }
        registry.register(
            "audit_ship",
            "Uploads of audit files and checkpoints to S3 by result: shipped, already_present (a re-upload after a crash found the same bytes), conflict (a different object holds the name: an alarm), error (no answer or a passing fault: retried), permanent_error (S3 refuses in a way retrying will not change, such as a bucket without Object Lock or access denied: an alarm, retried until fixed)",
            audit_ship.clone(),
        );
        let spans_dropped = Counter::default();
        registry.register(
            "trace_spans_dropped",
            "Trace spans dropped: the export queue was full, or their export failed or timed out",
            spans_dropped.clone(),
        );
        let log_lines_dropped = Counter::default();
        registry.register(
            "log_lines_dropped",
            "Log lines dropped because the log writer's queue was full (stderr too slow)",
            log_lines_dropped.clone(),
        );
        let sts_sessions_cached = Gauge::default();
        registry.register(
            "sts_sessions_cached",
            "Role sessions cached, one per consumer account, role and caller",
            sts_sessions_cached.clone(),
        );
        let sts_assume_role = Family::<ResultLabels, Counter>::default();
        registry.register(
            "sts_assume_role",
            "STS AssumeRole calls by result (ok, denied, throttled, error)",
            sts_assume_role.clone(),
        );
        let sts_session_renewals = Family::<ResultLabels, Counter>::default();
        registry.register(
            "sts_session_renewals",
            "Background renewals of role sessions by result (ok, throttled, denied, error); after a failed one the current session is used until it expires",
            sts_session_renewals.clone(),
        );
        let policy_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "policy_reload",
            "Policy reloads by result: ok (the new set serves) or refused (the running set stays)",
            policy_reloads.clone(),
        );
        // Both series exist from the start, so an alert on an increase of `refused` can fire on
        // the first refusal.
        for result in [PolicyReload::Ok, PolicyReload::Refused] {
            drop(policy_reloads.get_or_create(&ResultLabels {
                result: result.label(),
            }));
        }
        let policy_set = Family::<PolicySetLabels, Gauge>::default();
        registry.register(
            "policy_set_info",
            "The serving policy set, by the SHA-256 of its files and schema",
            policy_set.clone(),
        );
        let tls_handshake_failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes on the gRPC listener that failed (failed: refused certificate, bad protocol; timeout: server.handshake_timeout_ms)",
            tls_handshake_failures.clone(),
        );
        let connections_refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "connections_refused",
            "Connections to the gRPC listener closed on accept (over_capacity: server.max_connections)",
            connections_refused.clone(),
        );
        let connections_closed = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "connections_closed",
            "Connections to the gRPC listener closed by the gateway after HTTP/2 began (idle: no stream open for server.idle_timeout_ms)",
            connections_closed.clone(),
        );
        let accept_errors = Family::<ListenerLabels, Counter>::default();
        registry.register(
            "accept_errors",
            "Failed accepts on a listener (grpc, admin), each followed by a back-off: out of file descriptors (EMFILE) and the like",
            accept_errors.clone(),
        );
        let approvals_live = Family::<StateLabels, Gauge>::default();
        registry.register(
            "approvals",
            "Live approvals in the store (every replica's), by state: pending, approved",
            approvals_live.clone(),
        );
        let approval_transitions = Family::<TransitionLabels, Counter>::default();
        registry.register(
            "approval_transitions",
            "Approval transitions made by this gateway: created, approved, denied, consumed, expired",
            approval_transitions.clone(),
        );
        let in_flight_cap_refusals = Counter::default();
        registry.register(
            "in_flight_cap_refusals",
            "Calls refused with RESOURCE_EXHAUSTED because server.max_in_flight_calls calls were already in the gateway (before any policy or store work)",
            in_flight_cap_refusals.clone(),
        );
        let calls_shed = Family::<ShedLabels, Counter>::default();
        registry.register(
            "calls_shed",
            "Calls refused by a limit of the stack: pool redshift or approvals (reason pool_busy: no slot freed within server.queue_timeout_ms; caller_busy: the caller held its server.per_caller_concurrency share all along; caller_queue_full: server.per_caller_queue of its calls were waiting), or pool all with reason caller_rate (server.per_caller_rate)",
            calls_shed.clone(),
        );
        let policy_evaluations = Counter::default();
        registry.register(
            "policy_evaluations",
            "Cedar evaluations made by the policy layer: one per call permitted as it stands, two for a call no approvals would permit, a few more to find how many approvals a call needs",
            policy_evaluations.clone(),
        );
        let approval_lookups = Counter::default();
        registry.register(
            "approval_lookups",
            "Reads of a gated call's live approval from the approvals store (only for calls that approvals could permit)",
            approval_lookups.clone(),
        );
        for state in ["pending", "approved"] {
            drop(approvals_live.get_or_create(&StateLabels { state }));
        }
        for transition in ["created", "approved", "denied", "consumed", "expired"] {
            drop(approval_transitions.get_or_create(&TransitionLabels { transition }));
        }
        Arc::new(Metrics {
            registry,
            calls,
            call_duration,
            in_flight,
            policy_decisions,
            upstream_calls,
            upstream_duration,
            upstream_retries,
            serving,
            audit_writable,
            audit_queue_depth,
            audit_records,
            audit_fsyncs,
            audit_fsync_seconds,
            audit_checkpoints,
            audit_unshipped_bytes,
            audit_oldest_unshipped_seconds,
            audit_ship,
            spans_dropped,
            log_lines_dropped,
            sts_sessions_cached,
            sts_assume_role,
            sts_session_renewals,
            policy_reloads,
            policy_set,
            tls_handshake_failures,
            connections_refused,
            connections_closed,
            accept_errors,
            approvals_live,
            approval_transitions,
            in_flight_cap_refusals,
            calls_shed,
            policy_evaluations,
            approval_lookups,
            sources: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// Adds a source refreshed at every scrape.
    pub fn add_source(&self, source: Arc<dyn ScrapeSource>) {
        self.sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(source);
    }

    /// The readiness notes of every source, for `/readyz`'s body.
    pub fn readiness_notes(&self) -> Vec<String> {
        let sources = self
            .sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        sources.iter().filter_map(|s| s.readiness_note()).collect()
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let sources = self
            .sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for source in sources {
            source.refresh(self);
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Counts one upstream call and its latency.
    pub fn upstream_call(
        &self,
        operation: &'static str,
        aws_error_code: Option<&str>,
        started: Instant,
    ) {
        let code = aws_error_code.map_or_else(|| "none".to_owned(), bounded_code);
        self.upstream_calls
            .get_or_create(&UpstreamLabels {
                operation,
                aws_error_code: code,
            })
            .inc();
        self.upstream_duration
            .get_or_create(&OperationLabels { operation })
            .observe(started.elapsed().as_secs_f64());
    }

    /// Sets the gauge of live approvals.
    pub fn set_live_approvals(&self, pending: i64, approved: i64) {
        for (state, n) in [("pending", pending), ("approved", approved)] {
            self.approvals_live
                .get_or_create(&StateLabels { state })
                .set(n);
        }
    }

    /// Counts one approval transition (`created`, `approved`, `denied`, `consumed`,
    /// `expired`).
    pub fn approval_transition(&self, transition: &'static str) {
        self.approval_transitions
            .get_or_create(&TransitionLabels { transition })
            .inc();
    }

    /// Counts one call refused by a limit of the stack: `pool` is `redshift`, `approvals` or
    /// `all` (the rate), `reason` as `calls_shed_total` documents.
    pub fn call_shed(&self, pool: &'static str, reason: &'static str) {
        self.calls_shed
            .get_or_create(&ShedLabels { pool, reason })
            .inc();
    }

    /// Counts one failed TLS handshake; `reason` is `failed` or `timeout`.
    pub fn tls_handshake_failed(&self, reason: &'static str) {
        self.tls_handshake_failures
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Counts one connection closed before it carried a call: `over_capacity` (on accept),
    /// `no_preface`, `not_http2` or `closed_before_preface` (after connecting, or after TLS).
    pub fn connection_refused(&self, reason: &'static str) {
        self.connections_refused
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Counts one connection closed by the gateway after it opened HTTP/2: `idle`.
    pub fn connection_closed(&self, reason: &'static str) {
        self.connections_closed
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Counts one failed accept on `listener` (`grpc` or `admin`).
    pub fn accept_failed(&self, listener: &'static str) {
        self.accept_errors
            .get_or_create(&ListenerLabels { listener })
            .inc();
    }

    /// Counts one call as its caller saw it: the code it got (the handler's own
    /// `DEADLINE_EXCEEDED` included) and how long it took. `latency` is `None` for a request
    /// refused before it became a call (an undecodable body).
    pub fn call_answered(
        &self,
        method: &'static str,
        code: tonic::Code,
        latency: Option<std::time::Duration>,
    ) {
        self.calls
            .get_or_create(&CallLabels {
                method,
                code: crate::status::code_name(code),
            })
            .inc();
        if let Some(latency) = latency {
            self.call_duration
                .get_or_create(&MethodLabels { method })
                .observe(latency.as_secs_f64());
        }
    }

    /// Counts one upload to S3 of an audit file or checkpoint; `result` is `shipped`,
    /// `already_present`, `conflict`, `error` or `permanent_error`.
    pub fn audit_shipped(&self, result: &'static str) {
        self.audit_ship
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Counts one STS AssumeRole call; `result` is `ok`, `denied`, `throttled` or `error`.
    pub fn sts_assume_role(&self, result: &'static str) {
        self.sts_assume_role
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Counts one background renewal of a role session; `result` is `ok`, `throttled`, `denied`
    /// or `error`.
    pub fn sts_session_renewal(&self, result: &'static str) {
        self.sts_session_renewals
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Counts one policy reload.
    pub fn policy_reload(&self, result: PolicyReload) {
        self.policy_reloads
            .get_or_create(&ResultLabels {
                result: result.label(),
            })
            .inc();
    }

    /// Shows the set with this hash as the serving one (`policy_set_info`), replacing any other.
    pub fn policy_set(&self, sha256: &str) {
        let labels = PolicySetLabels {
            sha256: sha256.to_owned(),
        };
        if self.policy_set.get(&labels).is_none() {
            self.policy_set.clear();
            self.policy_set.get_or_create(&labels).set(1);
        }
    }

    /// Counts one retry of an upstream operation.
    pub fn upstream_retry(&self, operation: &'static str) {
        self.upstream_retries
            .get_or_create(&OperationLabels { operation })
            .inc();
    }
}

/// AWS error codes are short identifiers; anything else is folded so labels stay bounded.
fn bounded_code(code: &str) -> String {
    if !code.is_empty()
        && code.len() <= 64
        && code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.')
    {
        code.to_owned()
    } else {
        "other".to_owned()
    }
}

/// Counts the calls in the stack (`in_flight_calls`, including those that go on after their
/// caller left) and policy decisions. Outermost in the stack, so it sees every call; the calls'
/// codes and latency are counted by the handler, which knows what the caller got.
#[derive(Clone, Debug)]
pub struct Measure {
    metrics: Arc<Metrics>,
}

impl Measure {
    /// Records into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Measure { metrics }
    }
}

/// One call counted in `in_flight_calls` until it is dropped, however the call ends.
struct InFlightCall(Gauge);

impl InFlightCall {
    fn start(gauge: &Gauge) -> Self {
        gauge.inc();
        InFlightCall(gauge.clone())
    }
}

impl Drop for InFlightCall {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl<Op: Operation> Middleware<Op, Received> for Measure {
    type Out = Received;

    fn handle<S, F>(&self, call: Call<Op>, mut next: S) -> CallFuture<Op::Reply>
    where
        S: Service<Call<Op>, Response = Op::Reply, Error = GatewayError, Future = F>
            + Send
            + 'static,
        F: std::future::Future<Output = Result<Op::Reply, GatewayError>> + Send + 'static,
    {
        // Calls on before the future is made (see `Middleware::handle`).
        let metrics = self.metrics.clone();
        let notes = call.notes.clone();
        let in_flight = InFlightCall::start(&metrics.in_flight);
        let inner = next.call(call);
        Box::pin(async move {
            let result = inner.await;
            drop(in_flight);
            if let Some(decision) = &notes.lock().decision {
                let decision = if decision.allowed { "allow" } else { "deny" };
                metrics
                    .policy_decisions
                    .get_or_create(&DecisionLabels { decision })
                    .inc();
            }
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text_with_bounded_labels() {
        let metrics = Metrics::new();
        metrics.upstream_call(
            "AssociateDataShareConsumer",
            Some("Throttling"),
            Instant::now(),
        );
        metrics.upstream_call(
            "AssociateDataShareConsumer",
            Some("arn:aws:redshift:us-east-1:1:x"),
            Instant::now(),
        );
        metrics.upstream_retry("AssociateDataShareConsumer");
        let text = metrics.render();
        assert!(text.contains(
            "datashare_gateway_upstream_calls_total{operation=\"AssociateDataShareConsumer\",aws_error_code=\"Throttling\"} 1"
        ));
        assert!(text.contains("aws_error_code=\"other\""), "{text}");
        assert!(!text.contains("arn:aws"), "no ARN reaches a label");
        assert!(text.contains(
            "datashare_gateway_upstream_retries_total{operation=\"AssociateDataShareConsumer\"} 1"
        ));
        assert!(text.contains("# TYPE datashare_gateway_upstream_duration_seconds histogram"));
    }

    #[test]
    fn policy_reloads_are_counted_from_zero_and_only_the_serving_set_is_shown() {
        let metrics = Metrics::new();
        let text = metrics.render();
        assert!(text.contains("datashare_gateway_policy_reload_total{result=\"ok\"} 0"));
        assert!(text.contains("datashare_gateway_policy_reload_total{result=\"refused\"} 0"));
        metrics.policy_set("aaa");
        metrics.policy_reload(PolicyReload::Refused);
        metrics.policy_set("bbb");
        let text = metrics.render();
        assert!(text.contains("datashare_gateway_policy_reload_total{result=\"refused\"} 1"));
        assert!(text.contains("datashare_gateway_policy_set_info{sha256=\"bbb\"} 1"));
        assert!(!text.contains("aaa"), "{text}");
    }
}
