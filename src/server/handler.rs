//! The gRPC handler: [`Gateway`] holds one stack per operation and implements tonic's
//! `DataSharing` and `Approvals` traits, each method decoding into a typed call with its
//! context (request id, caller credential, deadline from `grpc-timeout`), running it through its
//! stack in a task of its own so a caller who leaves does not cut it short, and answering with
//! the request and trace ids.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};
use tower::ServiceExt;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::http::Arrival;
use super::stack::{StackParts, build_stack};
use super::{CallService, REQUEST_ID_HEADER, TRACE_ID_HEADER};
use crate::accept::TlsPeer;
use crate::approvals::ApprovalsService;
use crate::call::{Call, CallContext, CallNotes, CallerCredential};
use crate::drain::InFlight;
use crate::errors::GatewayError;
use crate::identity::{AuthMode, CALLER_ID_HEADER};
use crate::metrics::Metrics;
use crate::ops::Rpc;
use crate::proto::datasharing::v1::approvals_server::Approvals as ApprovalsApi;
use crate::proto::datasharing::v1::data_sharing_server::DataSharing;
use crate::telemetry;
use crate::upstream::RedshiftService;

/// Declares [`Gateway`] with one stack per operation of [`crate::operations::with_operations!`],
/// and its tonic methods, each handing its call to [`Gateway::serve_call`].
macro_rules! gateway {
    (
        redshift: [$($redshift:path => $redshift_method:ident),* $(,)?]
        approvals: [$($approvals:path => $approvals_method:ident),* $(,)?]
    ) => {
        /// The `datasharing.v1.DataSharing` and `datasharing.v1.Approvals` handler: decodes, hands
        /// the typed call to its operation's stack, encodes.
        #[derive(Clone, Debug)]
        pub struct Gateway {
            $($redshift_method: CallService<$redshift>,)*
            $($approvals_method: CallService<$approvals>,)*
            auth_mode: AuthMode,
            /// The calls running in their own tasks, drained by `App::serve` at shutdown.
            pub(super) in_flight: InFlight,
            /// A slot per call in the stacks (`server.max_in_flight_calls`), held until the call
            /// ends even when its caller left first.
            in_flight_cap: Arc<tokio::sync::Semaphore>,
            metrics: Arc<Metrics>,
        }

        impl Gateway {
            /// A handler whose DataSharing operations forward to Redshift, and whose Approvals
            /// operations are carried out on the approvals store, each through its stack.
            pub fn new(
                parts: &StackParts,
                upstream: RedshiftService,
                approvals: ApprovalsService,
                auth_mode: AuthMode,
            ) -> Self {
                let approvals_parts = parts.for_approvals();
                Gateway {
                    $($redshift_method: build_stack(parts, upstream.clone()),)*
                    $($approvals_method: build_stack(&approvals_parts, approvals.clone()),)*
                    auth_mode,
                    in_flight: InFlight::default(),
                    in_flight_cap: Arc::new(tokio::sync::Semaphore::new(parts.max_in_flight_calls)),
                    metrics: parts.metrics.clone(),
                }
            }
        }

        #[tonic::async_trait]
        impl DataSharing for Gateway {
            $(
                async fn $redshift_method(
                    &self,
                    request: Request<<$redshift as Rpc>::Message>,
                ) -> Result<Response<<$redshift as Rpc>::Response>, Status> {
                    self.serve_call(&self.$redshift_method, request).await
                }
            )*
        }

        #[tonic::async_trait]
        impl ApprovalsApi for Gateway {
            $(
                async fn $approvals_method(
                    &self,
                    request: Request<<$approvals as Rpc>::Message>,
                ) -> Result<Response<<$approvals as Rpc>::Response>, Status> {
                    self.serve_call(&self.$approvals_method, request).await
                }
            )*
        }
    };
}
crate::operations::with_operations!(gateway);

impl Gateway {
    fn context<T>(&self, method: &'static str, request: &Request<T>) -> CallContext {
        let metadata = request.metadata();
        let request_id = request_id_of(metadata);
        // In mtls mode the certificate was verified and read at the handshake, and x-caller-id
        // is ignored.
        let tls = request.extensions().get::<TlsPeer>();
        let credential = match self.auth_mode {
            AuthMode::Mtls => tls.map_or(Ok(CallerCredential::None), |tls| tls.credential.clone()),
            AuthMode::Insecure => Ok(crate::identity::credential_for(
                AuthMode::Insecure,
                None,
                metadata.get(CALLER_ID_HEADER).and_then(|v| v.to_str().ok()),
            )
            .unwrap_or_default()),
        };
        let credential = credential.unwrap_or_else(|err| {
            tracing::warn!(%request_id, error = %err, "client certificate names no principal");
            // A certificate was presented: the identity layer says it names no principal.
            CallerCredential::Certificate(String::new())
        });
        // Deadlines count from the moment tonic's own grpc-timeout timer started: see `Arrival`.
        let arrived = request
            .extensions()
            .get::<Arrival>()
            .map_or_else(Instant::now, |a| a.0);
        let started = Instant::now();
        // A timeout the gateway cannot read is refused by validation, not taken as "none".
        let (deadline, malformed_timeout) = match metadata.get("grpc-timeout") {
            None => (None, None),
            Some(value) => match value.to_str().ok().and_then(parse_grpc_timeout) {
                Some(timeout) => (Some(arrived + answer_before(timeout)), None),
                None => (
                    None,
                    Some(
                        String::from_utf8_lossy(value.as_bytes())
                            .chars()
                            .take(32)
                            .collect(),
                    ),
                ),
            },
        };
        CallContext {
            method,
            request_id,
            trace_id: None,
            peer: request
                .remote_addr()
                .or_else(|| tls.and_then(|tls| tls.remote_addr)),
            credential,
            received_at: SystemTime::now(),
            started,
            deadline,
            malformed_timeout,
        }
    }

    /// Serves one call of `Op` through `stack`: the one handler every method shares.
    async fn serve_call<Op: Rpc>(
        &self,
        stack: &CallService<Op>,
        request: Request<Op::Message>,
    ) -> Result<Response<Op::Response>, Status> {
        // Before anything else: a call over the cap costs no policy, store or audit work.
        let Ok(slot) = self.in_flight_cap.clone().try_acquire_owned() else {
            return self.refuse_over_cap(Op::METHOD, request.metadata());
        };
        let mut ctx = self.context(Op::METHOD, &request);
        let request_id = ctx.request_id.clone();
        let deadline = ctx.deadline;
        let started = ctx.started;

        // The caller's trace continues here (W3C traceparent/tracestate in the metadata).
        let parent = telemetry::extract_parent(request.metadata());
        let span = tracing::info_span!(
            "rpc",
            otel.name = format!("{}/{}", Op::SERVICE, Op::METHOD),
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = Op::SERVICE,
            rpc.method = Op::METHOD,
            rpc.grpc.status_code = tracing::field::Empty,
            request_id = %request_id,
            trace_id = tracing::field::Empty,
            principal = tracing::field::Empty,
            policy.decision = tracing::field::Empty,
        );
        let _ = span.set_parent(parent.clone());
        ctx.trace_id =
            telemetry::trace_id_of(&span.context()).or_else(|| telemetry::trace_id_of(&parent));
        if let Some(trace_id) = &ctx.trace_id {
            span.record("trace_id", trace_id.as_str());
        }
        let trace_id = ctx.trace_id.clone();

        let call = Call::<Op>::new(ctx, Op::params(request.into_inner()));
        let notes = call.notes.clone();
        // Kept in case a shutdown must abort the call and record it so.
        let params = call.params.clone();
        // The stack runs in its own task, so a caller that cancels or times out does not cut a
        // forwarded call short: it runs to its own end and its outcome is recorded.
        let task = self
            .in_flight
            .spawn(call.ctx.clone(), params, notes.clone(), {
                let call = stack.clone().oneshot(call).instrument(span.clone());
                async move {
                    let result = call.await;
                    drop(slot);
                    result
                }
            });
        let mut gone = CallerGone {
            notes: Some(notes.clone()),
        };
        let joined = match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline.into(), task).await.ok(),
            None => Some(task.await),
        };
        let result = match joined {
            Some(Ok(result)) => {
                gone.notes = None;
                result
            }
            // Only the drain cancels a call's task, when the grace period is over: the caller
            // is told so, as its record says, not that something broke.
            Some(Err(join_error)) if join_error.is_cancelled() => {
                gone.notes = None;
                Err(GatewayError::AbortedAtShutdown)
            }
            Some(Err(join_error)) => Err(GatewayError::Internal(Box::new(join_error))),
            None => Err(GatewayError::DeadlineExceeded),
        };
        drop(gone);

        let (principal, decision) = {
            let t = notes.lock();
            (
                t.principal
                    .as_ref()
                    .map(|p| p.id.clone())
                    .unwrap_or_default(),
                t.decision
                    .as_ref()
                    .map(|d| if d.allowed { "allow" } else { "deny" }),
            )
        };
        let code = result
            .as_ref()
            .err()
            .map_or(tonic::Code::Ok, crate::status::code_of);
        // What the caller gets, counted here: the handler's own DEADLINE_EXCEEDED included.
        self.metrics
            .call_answered(Op::METHOD, code, Some(started.elapsed()));
        span.record("rpc.grpc.status_code", code as i32);
        span.record("principal", principal.as_str());
        if let Some(decision) = decision {
            span.record("policy.decision", decision);
        }
        let _entered = span.enter();
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        let method = Op::METHOD;
        match result {
            Ok(reply) => {
                tracing::info!(%principal, code = "OK", latency_ms, "{method}");
                let mut response = Response::new(Op::response(reply));
                insert_ids(response.metadata_mut(), &request_id, trace_id.as_deref());
                Ok(response)
            }
            Err(err) => {
                if code == tonic::Code::Internal {
                    tracing::error!(%principal, error = %err, cause = ?std::error::Error::source(&err), "{method} failed inside the gateway");
                } else {
                    let code = crate::status::code_name(code);
                    tracing::info!(%principal, code, reason = %err.reason(), latency_ms, "{method}");
                }
                let mut status = crate::status::to_status(&err, &request_id);
                insert_ids(status.metadata_mut(), &request_id, trace_id.as_deref());
                Err(status)
            }
        }
    }
}

impl Gateway {
    /// The answer to a call over `server.max_in_flight_calls`: `RESOURCE_EXHAUSTED` with
    /// `RetryInfo`, counted, and logged at debug (a flood must not flood the log too). Nothing
    /// was attempted, so nothing is audited.
    fn refuse_over_cap<T>(
        &self,
        method: &'static str,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<T, Status> {
        self.metrics.in_flight_cap_refusals.inc();
        self.metrics
            .call_answered(method, tonic::Code::ResourceExhausted, None);
        let request_id = request_id_of(metadata);
        tracing::debug!(%request_id, method, "refused: server.max_in_flight_calls calls in flight");
        let mut status = crate::status::to_status(&GatewayError::Overloaded, &request_id);
        insert_ids(status.metadata_mut(), &request_id, None);
        Err(status)
    }
}

/// The caller's `x-request-id` when it is acceptable, else a new one.
fn request_id_of(metadata: &tonic::metadata::MetadataMap) -> String {
    metadata
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_acceptable_request_id(v))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// Request ids are echoed into logs and records: accept only short, plain ones.
pub(super) fn is_acceptable_request_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Parses a `grpc-timeout` value: up to 8 digits and a unit (H, M, S, m, u, n).
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    // `u64::from_str` takes a leading `+`; the grpc spec allows digits only.
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// tonic enforces `grpc-timeout` itself and answers CANCELLED. The handler's own deadline falls a
/// little earlier, counted from the same instant ([`Arrival`]); tonic polls the handler before its
/// timer, so the handler's DEADLINE_EXCEEDED wins whenever the request body has been read. A
/// deadline spent before the body arrives is tonic's to answer: that request never became a call.
fn answer_before(timeout: Duration) -> Duration {
    timeout.saturating_sub((timeout / 20).min(Duration::from_millis(5)))
}

/// Notes on the call when the caller goes away (cancel or deadline) before it ends.
struct CallerGone {
    notes: Option<Arc<CallNotes>>,
}

impl Drop for CallerGone {
    fn drop(&mut self) {
        if let Some(notes) = self.notes.take() {
            notes.mark_caller_gone();
        }
    }
}

fn insert_ids(
    metadata: &mut tonic::metadata::MetadataMap,
    request_id: &str,
    trace_id: Option<&str>,
) {
    if let Ok(value) = MetadataValue::try_from(request_id) {
        metadata.insert(REQUEST_ID_HEADER, value);
    }
    if let Some(Ok(value)) = trace_id.map(MetadataValue::try_from) {
        metadata.insert(TRACE_ID_HEADER, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_grpc_timeouts() {
        assert_eq!(parse_grpc_timeout("500m"), Some(Duration::from_millis(500)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("123456789m"), None);
        assert_eq!(parse_grpc_timeout("m"), None);
        assert_eq!(parse_grpc_timeout("5x"), None);
        assert_eq!(parse_grpc_timeout(""), None);
        assert_eq!(parse_grpc_timeout("+5S"), None);
        assert_eq!(parse_grpc_timeout("-1S"), None);
        assert_eq!(parse_grpc_timeout("abc"), None);
        assert_eq!(parse_grpc_timeout("0n"), Some(Duration::ZERO));
    }

    #[test]
    fn request_ids_are_short_and_plain() {
        assert!(is_acceptable_request_id("req-123_abc.def:9"));
        assert!(!is_acceptable_request_id(""));
        assert!(!is_acceptable_request_id("has space"));
        assert!(!is_acceptable_request_id(&"x".repeat(129)));
    }
}
