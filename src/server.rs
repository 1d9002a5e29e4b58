//! Wiring: the middleware stack, the gRPC handler, health, reflection, and serving.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::metadata::MetadataValue;
use tonic::transport::Server;
use tonic::{Request, Response, Status};
use tonic_health::ServingStatus;
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};

use crate::accept::TlsPeer;
use crate::approvals::{Approvals, ApprovalsService, ClearedCall, FindApprovals, SpendApproval};
use crate::audit::{Audit, AuditLog, Intent, Shipper};
use crate::call::{Call, CallContext, CallNotes, CallerCredential, Operation, ValidationEnv};
use crate::config::Config;
use crate::drain::InFlight;
use crate::errors::GatewayError;
use crate::identity::{AuthMode, Authenticate, CALLER_ID_HEADER, PrincipalDirectory};
use crate::limits::{Limit, RequireTime};
use crate::metrics::{Measure, Metrics, ScrapeSource};
use crate::middleware::MiddlewareLayer;
use crate::ops::Rpc;
use crate::policy::{ApprovalLookup, Authorize, Policies};
use crate::proto::datasharing::v1::approvals_server::{Approvals as ApprovalsApi, ApprovalsServer};
use crate::proto::datasharing::v1::data_sharing_server::{DataSharing, DataSharingServer};
use crate::telemetry;
use crate::telemetry::{StageSpan, Telemetry};
use crate::upstream::{self, Accounts, RedshiftService, RequireServedAccount, StaticCredentials};
use crate::validation::Validate;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The full middleware stack of one operation, over its typed call.
pub type CallService<Op> = BoxCloneSyncService<Call<Op>, <Op as Operation>::Reply, GatewayError>;

/// The metadata key of the request id, read from callers and echoed back.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// The response metadata key carrying the call's trace id.
pub const TRACE_ID_HEADER: &str = "x-trace-id";
/// The name health checks use for the gateway's service.
pub const SERVICE_NAME: &str = "datasharing.v1.DataSharing";
/// The name health checks use for the approvals service.
pub const APPROVALS_SERVICE_NAME: &str = crate::approvals::ops::SERVICE;

/// Why the gateway could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A TLS file could not be read.
    #[error("cannot read {key} file {path}")]
    TlsFile {
        /// The config key.
        key: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A listener could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// tonic refused the TLS settings or failed while serving.
    #[error("gRPC transport error")]
    Transport(#[from] tonic::transport::Error),
    /// The audit trail could not be opened.
    #[error("cannot open the audit notes")]
    Audit(#[from] crate::audit::AuditError),
    /// The policies could not be loaded.
    #[error("cannot load the policies")]
    Policy(#[from] crate::policy::PolicyError),
    /// The approvals store could not be opened.
    #[error(transparent)]
    Approvals(#[from] crate::approvals::OpenError),
    /// A configuration value is unusable.
    #[error("{0}")]
    Config(String),
    /// The TLS files do not make a usable TLS configuration.
    #[error("cannot use the TLS configuration")]
    Tls(#[source] crate::accept::TlsSetupError),
    /// Reflection could not be built from the descriptor set.
    #[error("cannot build the reflection service")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// What every operation's stack is built from, besides the upstream service.
#[derive(Clone, Debug)]
pub struct StackParts {
    /// Where calls are counted.
    pub metrics: Arc<Metrics>,
    pub audit: AuditLog,
    /// Principals and their groups.
    pub principals: Arc<PrincipalDirectory>,
    pub policies: Policies,
    /// Shared by every operation's stack: one bound on concurrent upstream calls.
    pub limit: Limit,
    /// The default consumer account, for requests that name none.
    pub validation: ValidationEnv,
    /// The consumer accounts served; calls into others are refused.
    pub accounts: Arc<Accounts>,
    /// The least time a call's deadline must leave before it is started.
    pub min_remaining: Duration,
    /// The approvals store; `None` (tests of other layers): no call has approvals, none is made.
    pub approvals: Option<Approvals>,
    /// Calls the handler lets into the stacks at once (`server.max_in_flight_calls`).
    pub max_in_flight_calls: usize,
}

impl StackParts {
    /// The parts, with a concurrency limit of `concurrency_limit` calls, each waiting at most
    /// `queue_timeout` for a slot, no default account and no account served (set `validation`
    /// and `accounts` for that).
    pub fn new(
        metrics: Arc<Metrics>,
        audit: AuditLog,
        principals: Arc<PrincipalDirectory>,
        policies: Policies,
        concurrency_limit: usize,
        queue_timeout: Duration,
    ) -> Self {
        StackParts {
            metrics,
            audit,
            principals,
            policies,
            limit: Limit::new(concurrency_limit, queue_timeout),
            validation: ValidationEnv::default(),
            accounts: Arc::new(Accounts::default()),
            min_remaining: Duration::from_millis(
                crate::upstream::DEFAULT_MIN_REMAINING_DEADLINE_MS,
            ),
            approvals: None,
            max_in_flight_calls: crate::config::ServerConfig::default().max_in_flight_calls,
        }
    }
}

/// Builds the stack of operation `Op` over `upstream`, outermost first. Every operation gets the
/// same layers in the same order, and the stages hold the order: identity makes
/// `Authenticated`, validation `Validated`, policy `Permitted`, the intent `Intended` and the
/// approval spend `Cleared`, each taken only by the layers that must come after it, so a layer
/// placed before the stage it depends on does not compile. A stack without policy, for one:
///
/// ```compile_fail
/// # use datashare_gateway::{approvals::*, audit::*, call::*, middleware::*, policy::*};
/// # use datashare_gateway::ops::{AssociateConsumer, associate::{AssociateReply, AssociateRequest}};
/// # use datashare_gateway::errors::GatewayError;
/// # use tower::ServiceBuilder;
/// fn stack<U>(intent: Intent, spend: SpendApproval, upstream: U) -> impl tower::Service<
///     ValidatedCall<AssociateConsumer>,
///     Response = AssociateReply,
///     Error = GatewayError,
/// >
/// where
///     U: tower::Service<Call<AssociateConsumer, Cleared<AssociateRequest>>, Response = AssociateReply, Error = GatewayError>
///         + Clone + Send + 'static,
///     U::Future: Send,
/// {
///     ServiceBuilder::new()
///         .layer(MiddlewareLayer::new(intent))
///         .layer(MiddlewareLayer::new(spend))
///         .service(upstream)
/// }
/// ```
///
/// or with the approval spent before its intent:
///
/// ```compile_fail
/// # use datashare_gateway::{approvals::*, audit::*, call::*, middleware::*, policy::*};
/// # use datashare_gateway::ops::{AssociateConsumer, associate::{AssociateReply, AssociateRequest}};
/// # use datashare_gateway::errors::GatewayError;
/// # use tower::ServiceBuilder;
/// fn stack<U>(authorize: Authorize, intent: Intent, spend: SpendApproval, upstream: U) -> impl tower::Service<
///     ValidatedCall<AssociateConsumer>,
///     Response = AssociateReply,
///     Error = GatewayError,
/// >
/// where
///     U: tower::Service<Call<AssociateConsumer, Cleared<AssociateRequest>>, Response = AssociateReply, Error = GatewayError>
///         + Clone + Send + 'static,
///     U::Future: Send,
/// {
///     ServiceBuilder::new()
///         .layer(MiddlewareLayer::new(authorize))
///         .layer(MiddlewareLayer::new(spend))
///         .layer(MiddlewareLayer::new(intent))
///         .service(upstream)
/// }
/// ```
///
/// The same function in order compiles: `tests::the_stages_compose_only_in_order`.
pub fn build_stack<Op, U>(parts: &StackParts, upstream: U) -> CallService<Op>
where
    Op: Operation,
    U: tower::Service<ClearedCall<Op>, Response = Op::Reply, Error = GatewayError>
        + Clone
        + Send
        + Sync
        + 'static,
    U::Future: Send,
{
    let stack = ServiceBuilder::new()
        // Metrics outermost: every call is counted, whatever ends it.
        .layer(MiddlewareLayer::new(Measure::new(parts.metrics.clone())))
        // Audit outside everything that can refuse a call, so denials and invalid input are recorded.
        .layer(MiddlewareLayer::new(Audit::new(parts.audit.clone())))
        // Identity before anything looks at the parameters: no principal, no further. Identity,
        // validation and the approval lookup get no span of their own: they take microseconds
        // (the RPC span's status says how far a refused call got), and each span is a cost on
        // every call and in the export queue.
        .layer(MiddlewareLayer::new(Authenticate::new(
            parts.principals.clone(),
        )))
        // Validation before policy: policies see only well-formed, parsed requests.
        .layer(MiddlewareLayer::new(Validate::new(
            parts.validation.clone(),
        )))
        // What policy decides with, from the approvals store: the approval a call is about. On
        // the way back, a call refused for want of approval gets its pending approval.
        .layer(MiddlewareLayer::new(FindApprovals::new(
            parts.approvals.clone(),
        )))
        // Policy before any upstream work, and the only maker of the `Permitted` stage that
        // every layer below takes; validate_only ends here with the decision. A gated call's
        // live approval is read here, and only when approvals could make policy permit it.
        .layer(MiddlewareLayer::new(StageSpan::new("policy")))
        .layer(MiddlewareLayer::new(
            Authorize::new(parts.policies.clone()).with_approvals(
                parts
                    .approvals
                    .clone()
                    .map(|store| Arc::new(store) as Arc<dyn ApprovalLookup>),
            ),
        ))
        // An account the gateway does not serve is refused once policy has allowed the call,
        // before anything is attempted (no intent, no STS, no Redshift).
        .layer(MiddlewareLayer::new(RequireServedAccount::new(
            parts.accounts.clone(),
        )))
        // Limits outside the write-ahead intent: a shed call leaves no intent behind.
        .layer(MiddlewareLayer::new(parts.limit.clone()))
        // A call whose deadline is (nearly) spent is not started: no intent, nothing forwarded,
        // rather than a change carried out for a caller who has been told it failed.
        .layer(MiddlewareLayer::new(RequireTime::new(parts.min_remaining)))
        // Write-ahead: a state change's intent, naming the approval it will spend, is durable
        // before anything changes (fail closed). Only it makes the `Intended` stage.
        .layer(MiddlewareLayer::new(StageSpan::new("audit.intent")))
        .layer(MiddlewareLayer::new(Intent::new(parts.audit.clone())))
        // The approval is spent after its intent is durable, so an audit outage leaves it
        // unspent; only this layer makes the `Cleared` stage the upstream services take.
        .layer(MiddlewareLayer::new(SpendApproval::new(
            parts.approvals.clone(),
        )))
        .service(upstream);
    BoxCloneSyncService::new(stack)
}

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
            in_flight: InFlight,
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
                Gateway {
                    $($redshift_method: build_stack(parts, upstream.clone()),)*
                    $($approvals_method: build_stack(parts, approvals.clone()),)*
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
fn is_acceptable_request_id(id: &str) -> bool {
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

/// When a request reached the gateway's router, stamped by [`HttpGuardLayer`].
#[derive(Clone, Copy, Debug)]
struct Arrival(Instant);

/// The gRPC services' HTTP front: stamps each request's arrival (right inside tonic's
/// `grpc-timeout` layer), refuses what is not gRPC (HTTP 415, before anything is decoded), and
/// logs and counts requests whose body could not be decoded (the codec that refuses them knows
/// no request).
#[derive(Clone, Debug)]
struct HttpGuardLayer {
    metrics: Arc<Metrics>,
}

impl<S> tower::Layer<S> for HttpGuardLayer {
    type Service = HttpGuard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HttpGuard {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service made by [`HttpGuardLayer`].
#[derive(Clone, Debug)]
struct HttpGuard<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

/// gRPC over HTTP/2 with protobuf: `application/grpc` or `application/grpc+proto`, with
/// optional parameters. (`application/grpc-web` and `+json` start alike and are not.)
fn is_grpc_content_type(value: Option<&http::HeaderValue>) -> bool {
    let Some(value) = value.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let media = value.split(';').next().unwrap_or("").trim();
    media.eq_ignore_ascii_case("application/grpc")
        || media.eq_ignore_ascii_case("application/grpc+proto")
}

/// The gateway's method a request path names; anything else is "other" (bounded labels).
fn method_of_path(path: &str) -> &'static str {
    path.rsplit('/')
        .next()
        .and_then(crate::operations::method_named)
        .unwrap_or("other")
}

type HttpFuture<E> =
    std::pin::Pin<Box<dyn Future<Output = Result<http::Response<tonic::body::Body>, E>> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for HttpGuard<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = HttpFuture<S::Error>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if !is_grpc_content_type(request.headers().get(http::header::CONTENT_TYPE)) {
            tracing::info!(
                path = %request.uri().path(),
                content_type = ?request.headers().get(http::header::CONTENT_TYPE),
                "refused: not a gRPC request (HTTP 415)"
            );
            let mut response = http::Response::new(tonic::body::Body::empty());
            *response.status_mut() = http::StatusCode::UNSUPPORTED_MEDIA_TYPE;
            return Box::pin(async move { Ok(response) });
        }
        request.extensions_mut().insert(Arrival(Instant::now()));
        let method = method_of_path(request.uri().path());
        // Kept cheaply (a shared buffer), read only if the body turns out undecodable.
        let request_id = request.headers().get(REQUEST_ID_HEADER).cloned();
        let peer = peer_of(&request);
        let metrics = self.metrics.clone();
        let response = self.inner.call(request);
        Box::pin(async move {
            let mut response = response.await?;
            if response
                .headers_mut()
                .remove(crate::status::UNDECODABLE_MARK)
                .is_some()
            {
                tracing::info!(
                    method,
                    peer = ?peer,
                    request_id = request_id
                        .as_ref()
                        .and_then(|v| v.to_str().ok())
                        .filter(|v| is_acceptable_request_id(v))
                        .unwrap_or(""),
                    "refused: the request body is not a valid message (INVALID_ARGUMENT)"
                );
                metrics.call_answered(method, tonic::Code::InvalidArgument, None);
            }
            Ok(response)
        })
    }
}

/// The caller's address, from the connection info tonic puts in the request (TCP or TLS).
fn peer_of<B>(request: &http::Request<B>) -> Option<SocketAddr> {
    use tonic::transport::server::TcpConnectInfo;
    let extensions = request.extensions();
    extensions
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| extensions.get::<TlsPeer>().and_then(|tls| tls.remote_addr))
}

/// Notes on the call when the caller goes away (cancel or deadline) before it ends.
struct CallerGone {
    notes: Option<Arc<CallNotes>>,
}

impl Drop for CallerGone {
    fn drop(&mut self) {
        if let Some(notes) = self.notes.take() {
            notes.lock().caller_gone = true;
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

/// Everything needed to serve, built from the configuration.
#[derive(Debug)]
pub struct App {
    config: Config,
    gateway: Gateway,
    approvals: Approvals,
    audit: AuditLog,
    shipper: Option<Shipper>,
    metrics: Arc<Metrics>,
    admin: TcpListener,
    health_listener: Option<TcpListener>,
    telemetry: Telemetry,
}

/// Options for [`App::build`] that are not in the configuration file.
#[derive(Debug, Default)]
pub struct BuildOptions {
    /// Replace the default AWS credential chain (used by `dev`).
    pub credentials: Option<StaticCredentials>,
    /// The trace pipeline, flushed at shutdown.
    pub telemetry: Telemetry,
}

/// Reads the audit writer's, the span exporter's and the log writer's counters at scrape time.
#[derive(Debug)]
struct ScrapeCounters {
    audit: AuditLog,
    spans_dropped: Arc<std::sync::atomic::AtomicU64>,
    log_lines_dropped: crate::telemetry::DroppedLogLines,
    seen: std::sync::Mutex<SeenCounts>,
}

/// The counts at the last scrape: Prometheus counters only go up, by what happened since.
#[derive(Debug, Default)]
struct SeenCounts {
    audit_records: u64,
    audit_fsyncs: u64,
    audit_fsync_micros: u64,
    audit_checkpoints: u64,
    spans_dropped: u64,
    log_lines_dropped: u64,
}

impl ScrapeSource for ScrapeCounters {
    fn refresh(&self, metrics: &Metrics) {
        use std::sync::atomic::Ordering;
        let stats = self.audit.stats();
        metrics.audit_queue_depth.set(stats.queue_depth as i64);
        metrics
            .audit_writable
            .set(i64::from(*self.audit.health().borrow()));
        let now = SeenCounts {
            audit_records: stats.records_written,
            audit_fsyncs: stats.fsyncs,
            audit_fsync_micros: stats.fsync_micros_total,
            audit_checkpoints: stats.checkpoints,
            spans_dropped: self.spans_dropped.load(Ordering::Relaxed),
            log_lines_dropped: self.log_lines_dropped.get(),
        };
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        metrics
            .audit_records
            .inc_by(now.audit_records.saturating_sub(seen.audit_records));
        metrics
            .audit_fsyncs
            .inc_by(now.audit_fsyncs.saturating_sub(seen.audit_fsyncs));
        metrics.audit_fsync_seconds.inc_by(
            now.audit_fsync_micros
                .saturating_sub(seen.audit_fsync_micros) as f64
                / 1e6,
        );
        metrics
            .spans_dropped
            .inc_by(now.spans_dropped.saturating_sub(seen.spans_dropped));
        metrics
            .log_lines_dropped
            .inc_by(now.log_lines_dropped.saturating_sub(seen.log_lines_dropped));
        metrics
            .audit_checkpoints
            .inc_by(now.audit_checkpoints.saturating_sub(seen.audit_checkpoints));
        *seen = now;
    }
}

impl App {
    /// Opens the audit trail, loads the policies, builds the Redshift client and the stack, and
    /// binds the admin and health listeners. Every failure here is a clear error at start.
    pub async fn build(config: Config, options: BuildOptions) -> Result<App, ServerError> {
        let metrics = Metrics::new();
        let instance = config.server.instance_name();
        let audit = AuditLog::open(&config.audit, &instance).await?;
        let shipper = match &config.audit.ship {
            Some(ship) => Some(Shipper::start(
                Arc::new(upstream::S3Store::for_shipping(ship).await),
                ship,
                &config.audit.dir,
                &instance,
                audit.sealed_below(),
                metrics.clone(),
            )),
            None => None,
        };
        let accounts = Arc::new(
            Accounts::load(&config.accounts, config.upstream.own_account().as_ref())
                .map_err(|e| ServerError::Config(e.to_string()))?,
        );
        tracing::info!(accounts = ?accounts.served(), "consumer accounts served");
        let policies = Policies::load(config.policy.clone(), crate::operations::policy_probes())?;
        // Before the gateway announces itself: a SIGHUP after the ready line must reload, not kill
        // the process (SIGHUP's default action), and a file changed then must not go unseen.
        match policies.spawn_reloader(metrics.clone()) {
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "policy hot reload is off"),
        }
        let client = upstream::build_client(
            &config.upstream,
            options.credentials,
            metrics.clone(),
            crate::operations::redshift_operations(),
        )
        .await;
        // The partition of the region calls go to: requests naming another are refused.
        let partition = client
            .region()
            .and_then(|region| crate::arn::Region::parse(region).ok())
            .map(|region| crate::arn::Partition::of_region(&region))
            .unwrap_or_default();
        let upstream = RedshiftService::new(
            client,
            &config.upstream,
            accounts.clone(),
            config.server.instance_name(),
            metrics.clone(),
        );
        let location = config
            .approvals
            .location(&config.audit.dir)
            .map_err(ServerError::Config)?;
        let approvals = Approvals::open(
            &location,
            &config.approvals,
            audit.clone(),
            metrics.clone(),
            crate::operations::approvable_methods(),
        )
        .await?;
        let parts = StackParts {
            validation: ValidationEnv {
                default_account: config.upstream.default_account(),
                partition,
            },
            accounts,
            approvals: Some(approvals.clone()),
            min_remaining: Duration::from_millis(config.upstream.min_remaining_deadline_ms),
            max_in_flight_calls: config.server.max_in_flight_calls,
            ..StackParts::new(
                metrics.clone(),
                audit.clone(),
                Arc::new(config.principals.clone()),
                policies.clone(),
                config.server.concurrency_limit,
                Duration::from_millis(config.server.queue_timeout_ms),
            )
        };
        metrics.add_source(Arc::new(ScrapeCounters {
            audit: audit.clone(),
            spans_dropped: options.telemetry.dropped_spans(),
            log_lines_dropped: options.telemetry.dropped_log_lines(),
            seen: std::sync::Mutex::default(),
        }));
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| ServerError::Bind { addr, source })
        };
        let admin = bind(config.server.admin_listen).await?;
        let health_listener = match config.server.health_listen {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let approvals_service = ApprovalsService::new(approvals.clone(), Arc::new(policies));
        let gateway = Gateway::new(&parts, upstream, approvals_service, config.auth.mode);
        Ok(App {
            config,
            gateway,
            approvals,
            audit,
            shipper,
            metrics,
            admin,
            health_listener,
            telemetry: options.telemetry,
        })
    }

    /// The admin listener's address (`/metrics`, `/livez`, `/readyz`).
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.local_addr().ok()
    }

    /// Serves on `listener` until `shutdown` resolves, then lets in-flight calls finish within
    /// the grace period, flushes the audit trail and the spans.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let App {
            config,
            gateway,
            approvals,
            audit,
            shipper,
            metrics,
            admin,
            health_listener,
            telemetry,
        } = self;
        let in_flight = gateway.in_flight.clone();
        let (health, health_service) = tonic_health::server::health_reporter();
        // One readiness verdict for grpc.health.v1 and /readyz: serving, and the audit trail can
        // write (the gateway fails closed without it).
        let (ready_tx, ready_rx) = tokio::sync::watch::channel(true);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        {
            let mut audit_ok = audit.health();
            let mut stopping = stop_rx.clone();
            let health = health.clone();
            let metrics = metrics.clone();
            tokio::spawn(async move {
                loop {
                    let serving = *audit_ok.borrow_and_update() && !*stopping.borrow_and_update();
                    let status = if serving {
                        ServingStatus::Serving
                    } else {
                        ServingStatus::NotServing
                    };
                    if !serving {
                        tracing::warn!(
                            "health: NOT_SERVING (audit notes unwritable or shutting down)"
                        );
                    }
                    health.set_service_status(SERVICE_NAME, status).await;
                    health
                        .set_service_status(APPROVALS_SERVICE_NAME, status)
                        .await;
                    health.set_service_status("", status).await;
                    metrics.serving.set(i64::from(serving));
                    let _ = ready_tx.send(serving);
                    tokio::select! {
                        changed = audit_ok.changed() => if changed.is_err() { break },
                        changed = stopping.changed() => if changed.is_err() { break },
                    }
                }
            });
        }
        // The admin listener outlives the drain, so the last scrape sees the final counts.
        let (admin_stop, admin_stopped) = tokio::sync::oneshot::channel::<()>();
        let admin_task = tokio::spawn(crate::admin::serve(
            admin,
            metrics.clone(),
            ready_rx,
            async move {
                let _ = admin_stopped.await;
            },
        ));

        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                // google.rpc error details, so grpcurl can print ErrorInfo and BadRequest.
                .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 = reflection().build_v1()?;
        let reflection_v1alpha = reflection().build_v1alpha()?;

        let max = config.server.max_message_bytes;
        let approvals_api = ApprovalsServer::new(gateway.clone())
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);
        let data_sharing = DataSharingServer::new(gateway)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);
        let sweeper =
            approvals.spawn_sweeper(Duration::from_secs(config.approvals.sweep_interval_secs));

        let mut builder = Server::builder()
            .layer(HttpGuardLayer {
                metrics: metrics.clone(),
            })
            .http2_keepalive_interval(Some(Duration::from_secs(
                config.server.keepalive_interval_secs,
            )))
            .http2_keepalive_timeout(Some(Duration::from_secs(
                config.server.keepalive_timeout_secs,
            )))
            .tcp_nodelay(true)
            // One client may not hold more than this many calls open on a connection, nor
            // reset streams faster than they are accepted (rapid reset).
            .max_concurrent_streams(Some(config.server.max_concurrent_streams))
            .http2_max_pending_accept_reset_streams(Some(
                config.server.max_pending_accept_reset_streams,
            ))
            // Bounds a stream whose headers or body never finish arriving.
            .timeout(Duration::from_millis(config.server.request_timeout_ms));
        let tls = match config.auth.mode {
            AuthMode::Mtls => Some(mtls_acceptor(&config)?),
            AuthMode::Insecure => {
                tracing::warn!(
                    "auth.mode = \"insecure\": plaintext, callers name themselves in x-caller-id; never use this in production"
                );
                None
            }
        };
        let limits = crate::accept::Limits {
            max_connections: config.server.max_connections,
            handshake_timeout: Duration::from_millis(config.server.handshake_timeout_ms),
        };

        // The probes listener answers NOT_SERVING through the drain, and stops only after it.
        let (probes_stop, probes_stopped) = tokio::sync::watch::channel(false);
        if let Some(listener) = health_listener {
            let mut stop = probes_stopped;
            let probes = Server::builder().add_service(health_service.clone());
            tokio::spawn(probes.serve_with_incoming_shutdown(
                TcpListenerStream::new(listener),
                async move {
                    let _ = stop.wait_for(|s| *s).await;
                },
            ));
        }
        let grace = Duration::from_secs(config.server.shutdown_grace_secs);
        let router = builder
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(data_sharing)
            .add_service(approvals_api);
        let mut stop = stop_rx;
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        let serving = match tls {
            Some(acceptor) => {
                let handshake_metrics = metrics.clone();
                let connections = crate::accept::incoming(
                    listener,
                    limits,
                    move |connection| {
                        crate::accept::tls_handshake(
                            acceptor.clone(),
                            connection,
                            limits.handshake_timeout,
                            handshake_metrics.clone(),
                        )
                    },
                    metrics.clone(),
                );
                tokio::spawn(router.serve_with_incoming_shutdown(
                    tokio_stream::wrappers::ReceiverStream::new(connections),
                    stopped,
                ))
            }
            None => {
                let connections = crate::accept::incoming(
                    listener,
                    limits,
                    |connection| async move { Some(connection) },
                    metrics.clone(),
                );
                tokio::spawn(router.serve_with_incoming_shutdown(
                    tokio_stream::wrappers::ReceiverStream::new(connections),
                    stopped,
                ))
            }
        };
        let mut serving = std::pin::pin!(serving);
        tokio::select! {
            done = &mut serving => {
                sweeper.abort();
                in_flight.drain(Duration::ZERO, &audit).await;
                let _ = probes_stop.send(true);
                audit.close().await;
                if let Some(shipper) = shipper {
                    shipper.finish(grace).await;
                }
                let _ = admin_stop.send(());
                let _ = admin_task.await;
                return flatten(done);
            }
            () = shutdown => {}
        }
        tracing::info!(
            grace_secs = grace.as_secs(),
            "shutting down: no new calls; finishing in-flight calls"
        );
        let _ = stop_tx.send(true);
        // No expiry is recorded after the trail closes; the next start (or another replica)
        // records what falls due meanwhile.
        sweeper.abort();
        let drain_started = Instant::now();
        let served = match tokio::time::timeout(grace, &mut serving).await {
            Ok(done) => flatten(done),
            Err(_) => {
                tracing::warn!("grace period over; dropping the connections still open");
                serving.abort();
                Ok(())
            }
        };
        // Calls that outlived their callers (or their connections) get the rest of the grace
        // period; any still running then are aborted and recorded as such, before the log closes.
        in_flight
            .drain(grace.saturating_sub(drain_started.elapsed()), &audit)
            .await;
        let _ = probes_stop.send(true);
        audit.close().await;
        // The writer sealed the open file with a final checkpoint; ship them within what is
        // left of the grace period (at least a second), else at the next start.
        if let Some(shipper) = shipper {
            let left = grace.saturating_sub(drain_started.elapsed());
            shipper.finish(left.max(Duration::from_secs(1))).await;
        }
        telemetry.shutdown(Duration::from_secs(2)).await;
        let _ = admin_stop.send(());
        let _ = admin_task.await;
        served
    }
}

fn flatten(
    done: Result<Result<(), tonic::transport::Error>, tokio::task::JoinError>,
) -> Result<(), ServerError> {
    match done {
        Ok(result) => Ok(result?),
        Err(join) if join.is_cancelled() => Ok(()),
        Err(join) => std::panic::resume_unwind(join.into_panic()),
    }
}

fn mtls_acceptor(config: &Config) -> Result<tokio_rustls::TlsAcceptor, ServerError> {
    let read = |key: &'static str, path: &Option<std::path::PathBuf>| {
        let path = path.clone().unwrap_or_default();
        std::fs::read(&path).map_err(|source| ServerError::TlsFile { key, path, source })
    };
    let cert = read("auth.cert", &config.auth.cert)?;
    let key = read("auth.key", &config.auth.key)?;
    let ca = read("auth.client_ca", &config.auth.client_ca)?;
    crate::accept::mtls_acceptor(&cert, &key, &ca).map_err(ServerError::Tls)
}

/// The line printed on stdout once the gateway listens, for scripts and tests using port 0.
pub fn ready_line(grpc: SocketAddr, admin: Option<SocketAddr>) -> String {
    serde_json::json!({
        "event": "gateway_listening",
        "grpc": grpc.to_string(),
        "admin": admin.map(|a| a.to_string()),
    })
    .to_string()
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

    /// The in-order twin of `build_stack`'s `compile_fail` examples: the same function with
    /// policy before the intent and the intent before the spend compiles, so those fail for
    /// the order alone.
    #[test]
    fn the_stages_compose_only_in_order() {
        use crate::errors::GatewayError;
        use crate::ops::AssociateConsumer;
        use crate::ops::associate::{AssociateReply as Reply, AssociateRequest};
        fn stack<U>(
            authorize: Authorize,
            intent: Intent,
            spend: SpendApproval,
            upstream: U,
        ) -> impl tower::Service<
            crate::call::ValidatedCall<AssociateConsumer>,
            Response = Reply,
            Error = GatewayError,
        >
        where
            U: tower::Service<
                    Call<AssociateConsumer, crate::approvals::Cleared<AssociateRequest>>,
                    Response = Reply,
                    Error = GatewayError,
                > + Clone
                + Send
                + 'static,
            U::Future: Send,
        {
            ServiceBuilder::new()
                .layer(MiddlewareLayer::new(authorize))
                .layer(MiddlewareLayer::new(intent))
                .layer(MiddlewareLayer::new(spend))
                .service(upstream)
        }
        // Naming the function is the check: it type-checks only in this order.
        let _ = stack::<crate::testing::Counting<crate::approvals::Cleared<AssociateRequest>>>;
    }

    #[test]
    fn request_ids_are_short_and_plain() {
        assert!(is_acceptable_request_id("req-123_abc.def:9"));
        assert!(!is_acceptable_request_id(""));
        assert!(!is_acceptable_request_id("has space"));
        assert!(!is_acceptable_request_id(&"x".repeat(129)));
    }
}
