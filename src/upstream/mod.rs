//! The Redshift client (aws-sdk-redshift, built from aws-config) as a tower service over every
//! operation, and the classification of every `SdkError` into an AWS-neutral [`UpstreamFault`].
//!
//! This is the only module that names AWS SDK types. [`classify`] turns an `SdkError` into a
//! fault kind by variant first, then by the AWS error code, using the code lists below; the gRPC
//! code of each kind is chosen in `status`, and `fault_table` renders the README's table from
//! both ([`fault_rules`]).

mod accounts;
mod operations;
mod s3;
mod sessions;
mod source_identity;

pub use accounts::{
    AccountConfig, Accounts, AccountsError, RequireServedAccount, validate_accounts,
};
pub use operations::Forward;
pub use s3::{BadS3Url, S3Location, S3Store, S3Url};
pub use sessions::RoleTarget;
pub use source_identity::{role_session_name, source_identity};

use accounts::Route;
use sessions::{Lease, SessionCache};

use std::task::{Context, Poll};
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_sdk_redshift::config::retry::RetryConfig;
use aws_sdk_redshift::config::timeout::TimeoutConfig;
use aws_sdk_redshift::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_redshift::operation::RequestId;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::{HttpResponse, Metadata};
use aws_smithy_runtime_api::client::retries::RequestAttempts;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use std::sync::Arc;
use tower::Service;
use tracing::Instrument;

use crate::approvals::ClearedCall;
use crate::call::{CallFuture, Operation, SessionNote, UpstreamNote};
use crate::errors::{FaultKind, GatewayError, UpstreamFault};
use crate::metrics::Metrics;

/// `upstream.min_remaining_deadline_ms` when unset.
pub const DEFAULT_MIN_REMAINING_DEADLINE_MS: u64 = 50;

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
    /// Calls talking to Redshift (and STS) at once; more wait their turn, their SDK timeouts
    /// starting once it comes. Each costs a connection and tens of KB while it waits on AWS.
    #[serde(default = "defaults::max_concurrent_requests")]
    pub max_concurrent_requests: usize,
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
        if self.session_cache_size == 0 {
            return Err("upstream.session_cache_size = 0: must be positive".into());
        }
        if self.max_concurrent_requests == 0 {
            return Err("upstream.max_concurrent_requests = 0: must be positive".into());
        }
        if let Some(region) = &self.region {
            crate::arn::Region::parse(region)
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
        for (key, value) in [
            ("upstream.connect_timeout_ms", self.connect_timeout_ms),
            ("upstream.attempt_timeout_ms", self.attempt_timeout_ms),
            ("upstream.operation_timeout_ms", self.operation_timeout_ms),
        ] {
            if value == 0 {
                return Err(format!("{key} = 0: must be positive"));
            }
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

/// Builds the shared Redshift and STS clients from the default AWS configuration chain
/// (credentials, region), with the gateway's retry and timeout settings. `credentials` replaces
/// the default credential chain (used by `dev`, which signs as the emulator's platform account).
/// Retries are counted by operation, for `operations` (`operations::redshift_operations`); any
/// other is counted as `other`.
pub async fn build_client(
    config: &UpstreamConfig,
    credentials: Option<StaticCredentials>,
    metrics: Arc<Metrics>,
    operations: Vec<&'static str>,
) -> Client {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(config.max_attempts)
                .with_initial_backoff(Duration::from_millis(config.initial_backoff_ms)),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
                .operation_attempt_timeout(Duration::from_millis(config.attempt_timeout_ms))
                .operation_timeout(Duration::from_millis(config.operation_timeout_ms))
                .build(),
        );
    if let Some(region) = &config.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    // DATASHARE_GATEWAY_ENDPOINT_URL is applied once, by `Config::load`; `dev` builds its
    // config in code and must keep pointing at its own emulator.
    if let Some(url) = &config.endpoint_url {
        loader = loader.endpoint_url(url.clone());
    }
    if let Some(credentials) = credentials {
        loader = loader.credentials_provider(aws_credential_types::Credentials::new(
            credentials.access_key_id,
            credentials.secret_access_key,
            None,
            None,
            "static",
        ));
    }
    let shared = loader.load().await;
    let conf = aws_sdk_redshift::config::Builder::from(&shared)
        .interceptor(RetryCounter {
            metrics,
            operations: operations.into(),
        })
        .build();
    Client {
        redshift: aws_sdk_redshift::Client::from_conf(conf),
        sts: aws_sdk_sts::Client::new(&shared),
    }
}

/// The shared Redshift and STS clients; cheap to clone.
#[derive(Clone, Debug)]
pub struct Client {
    redshift: aws_sdk_redshift::Client,
    sts: aws_sdk_sts::Client,
}

impl Client {
    /// The region the clients send to (`upstream.region`, else the default chain's).
    pub fn region(&self) -> Option<&str> {
        self.redshift
            .config()
            .region()
            .map(|region| region.as_ref())
    }
}

/// A fixed access key, instead of the default credential chain.
#[derive(Clone)]
pub struct StaticCredentials {
    /// The access key id.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: String,
}

impl std::fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticCredentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// Counts the SDK's retries (attempts after the first) for the metrics.
#[derive(Debug)]
struct RetryCounter {
    metrics: Arc<Metrics>,
    /// The operations named in the metric's label: a bounded set.
    operations: Arc<[&'static str]>,
}

impl Intercept for RetryCounter {
    fn name(&self) -> &'static str {
        "RetryCounter"
    }

    fn read_before_attempt(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if cfg
            .load::<RequestAttempts>()
            .is_some_and(|a| a.attempts() > 1)
        {
            let name = cfg.load::<Metadata>().map(Metadata::name);
            let operation = self
                .operations
                .iter()
                .copied()
                .find(|operation| Some(*operation) == name)
                .unwrap_or("other");
            self.metrics.upstream_retry(operation);
        }
        Ok(())
    }
}

/// Forwards validated calls of every operation to Redshift, in the call's consumer account:
/// with the gateway's own credentials, or through a role session for the caller.
#[derive(Clone, Debug)]
pub struct RedshiftService {
    client: aws_sdk_redshift::Client,
    accounts: Arc<Accounts>,
    sessions: Arc<SessionCache>,
    throttle_retry_after: Duration,
    min_remaining: Duration,
    metrics: Arc<Metrics>,
    /// Turns to talk to AWS: without a bound, every admitted call would hold an SDK request
    /// (a connection and its buffers) at once, and a slow Redshift would time them all out.
    turns: Arc<tokio::sync::Semaphore>,
}

impl RedshiftService {
    /// A service over the shared clients, serving `accounts`; `instance` names this gateway in
    /// every role session's tags.
    pub fn new(
        client: Client,
        config: &UpstreamConfig,
        accounts: Arc<Accounts>,
        instance: String,
        metrics: Arc<Metrics>,
    ) -> Self {
        let throttle_retry_after = Duration::from_millis(config.throttle_retry_after_ms);
        RedshiftService {
            client: client.redshift,
            accounts,
            sessions: Arc::new(SessionCache::new(
                client.sts,
                config.session_cache_size,
                instance,
                throttle_retry_after,
                metrics.clone(),
            )),
            throttle_retry_after,
            min_remaining: Duration::from_millis(config.min_remaining_deadline_ms),
            metrics,
            turns: Arc::new(tokio::sync::Semaphore::new(config.max_concurrent_requests)),
        }
    }

    /// Refuses to call Redshift when the caller's deadline is (nearly) spent: checked again
    /// here because a role session may have taken the time since the intent.
    fn require_time<Op: Operation, Stage>(
        &self,
        call: &crate::call::Call<Op, Stage>,
    ) -> Result<(), GatewayError> {
        if call.ctx.deadline_within(self.min_remaining) {
            return Err(GatewayError::NotEnoughTime {
                min_remaining: self.min_remaining,
            });
        }
        Ok(())
    }
}

impl<Op: Forward> Service<ClearedCall<Op>> for RedshiftService {
    type Response = Op::Reply;
    type Error = GatewayError;
    type Future = CallFuture<Op::Reply>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The SDK client pools connections itself; it is always ready to take a call.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: ClearedCall<Op>) -> Self::Future {
        let service = self.clone();
        let span = tracing::info_span!(
            "redshift",
            otel.name = format!("Redshift/{}", Op::AWS_OPERATION),
            otel.kind = "client",
            rpc.system = "aws-api",
            rpc.service = "Redshift",
            rpc.method = Op::AWS_OPERATION,
            aws.request_id = tracing::field::Empty,
            aws.error_code = tracing::field::Empty,
        );
        let record_span = span.clone();
        let call_future = async move {
            let account = Op::consumer_account(call.stage.request())
                .cloned()
                .ok_or_else(|| {
                    GatewayError::Internal("a Redshift call without a consumer account".into())
                })?;
            let route = service.accounts.route(&account).cloned().ok_or_else(|| {
                GatewayError::AccountNotConfigured {
                    account: account.to_string(),
                }
            })?;
            let principal = call.stage.principal().id.clone();
            // The semaphore is never closed, so acquiring only waits for a turn.
            let _turn = service
                .turns
                .acquire()
                .await
                .map_err(|e| GatewayError::Internal(Box::new(e)))?;
            let started = std::time::Instant::now();
            let result = match &route {
                Route::OwnCredentials => {
                    service.require_time(&call)?;
                    call.notes.lock().forwarded = true;
                    Op::send(&service.client, call.stage.request(), None).await
                }
                Route::Role(role) => {
                    let approval = call.stage.spent().cloned();
                    let lease = match &approval {
                        // An approved call gets a session of its own, tagged with the approval.
                        // Boxed, as is the retry below: these states are large and end before
                        // the long wait (see `Middleware::handle`).
                        Some(note) => {
                            Box::pin(service.lease_for_approval(
                                &call,
                                role,
                                &principal,
                                &note.approval_id,
                            ))
                            .await?
                        }
                        None => {
                            Box::pin(service.lease(&call, account.as_str(), role, &principal))
                                .await?
                        }
                    };
                    service.require_time(&call)?;
                    call.notes.lock().forwarded = true;
                    let result = Op::send(
                        &service.client,
                        call.stage.request(),
                        Some(lease.session.credentials.clone()),
                    )
                    .await;
                    if lease.cached && is_expired_token(&result) {
                        // Clock skew: the cached session expired sooner than its stamp says.
                        // Drop it and try once more with a fresh one; a second expiry is the
                        // gateway's trouble, not the caller's.
                        drop(result);
                        let again = Box::pin(async {
                            service
                                .sessions
                                .forget(account.as_str(), role, &principal)
                                .await;
                            let fresh = service
                                .lease(&call, account.as_str(), role, &principal)
                                .await?;
                            Ok::<_, GatewayError>(
                                Op::send(
                                    &service.client,
                                    call.stage.request(),
                                    Some(fresh.session.credentials.clone()),
                                )
                                .await,
                            )
                        })
                        .await?;
                        if is_expired_token(&again) {
                            return Err(GatewayError::Upstream {
                                fault: UpstreamFault {
                                    aws_code: Some("ExpiredToken".into()),
                                    ..UpstreamFault::of_kind(FaultKind::SessionExpired)
                                },
                                aws_request_id: again
                                    .as_ref()
                                    .err()
                                    .and_then(|e| e.request_id())
                                    .map(str::to_owned),
                            });
                        }
                        again
                    } else {
                        result
                    }
                }
            };
            let note = UpstreamNote {
                aws_request_id: match &result {
                    Ok(out) => out.request_id().map(str::to_owned),
                    Err(err) => err.request_id().map(str::to_owned),
                },
                aws_error_code: result
                    .as_ref()
                    .err()
                    .and_then(|e| e.code())
                    .map(str::to_owned),
            };
            service.metrics.upstream_call(
                Op::AWS_OPERATION,
                note.aws_error_code.as_deref(),
                started,
            );
            if let Some(id) = &note.aws_request_id {
                record_span.record("aws.request_id", id.as_str());
            }
            if let Some(code) = &note.aws_error_code {
                record_span.record("aws.error_code", code.as_str());
            }
            call.notes.lock().upstream = note.clone();
            match result {
                Ok(out) => Ok(Op::reply(call.stage.request(), out)),
                Err(err) => Err(classify(
                    err,
                    note.aws_request_id,
                    service.throttle_retry_after,
                )),
            }
        };
        Box::pin(call_future.instrument(span))
    }
}

impl RedshiftService {
    /// An uncached role session for one approved call, noted in the call's notes.
    async fn lease_for_approval<Op: Operation, Stage>(
        &self,
        call: &crate::call::Call<Op, Stage>,
        role: &RoleTarget,
        principal: &str,
        approval_id: &str,
    ) -> Result<Lease, GatewayError> {
        let result = self
            .sessions
            .for_approval(role, principal, approval_id)
            .await;
        self.note_session(call, principal, result)
    }

    fn note_session<Op: Operation, Stage>(
        &self,
        call: &crate::call::Call<Op, Stage>,
        principal: &str,
        result: Result<Lease, sessions::AssumeFailure>,
    ) -> Result<Lease, GatewayError> {
        match result {
            Ok(lease) => {
                call.notes.lock().session = SessionNote {
                    assumed_role_arn: Some(lease.session.assumed_role_arn.clone()),
                    source_identity: Some(lease.session.source_identity.clone()),
                    sts_request_id: lease.session.sts_request_id.clone(),
                };
                Ok(lease)
            }
            Err(failure) => {
                call.notes.lock().session = SessionNote {
                    assumed_role_arn: None,
                    source_identity: Some(source_identity(principal)),
                    sts_request_id: failure.sts_request_id.clone(),
                };
                Err(failure.into_error())
            }
        }
    }

    /// A role session for the call's caller, noted in the call's notes for the audit record.
    async fn lease<Op: Operation, Stage>(
        &self,
        call: &crate::call::Call<Op, Stage>,
        account: &str,
        role: &RoleTarget,
        principal: &str,
    ) -> Result<Lease, GatewayError> {
        let result = self.sessions.session(account, role, principal).await;
        self.note_session(call, principal, result)
    }
}

fn is_expired_token<T, E: ProvideErrorMetadata>(
    result: &Result<T, SdkError<E, HttpResponse>>,
) -> bool {
    matches!(result, Err(SdkError::ServiceError(service)) if matches!(service.err().code(), Some("ExpiredToken" | "ExpiredTokenException")))
}

/// AWS error codes meaning the gateway's own credentials (or their signature) were refused.
const CREDENTIAL_ERRORS: &[&str] = &[
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "UnrecognizedClientException",
    "IncompleteSignature",
    "MissingAuthenticationToken",
    "InvalidSignatureException",
    "ExpiredToken",
    "ExpiredTokenException",
    "RequestExpired",
    "AuthFailure",
    "AccessDenied",
    "AccessDeniedException",
];

/// AWS error codes meaning a request parameter was refused.
const PARAMETER_ERRORS: &[&str] = &[
    "InvalidParameterValue",
    "InvalidParameterCombination",
    "MissingParameter",
    "InvalidQueryParameter",
    "MalformedQueryString",
    "ValidationError",
    "RedshiftInvalidParameter",
];

/// AWS error codes meaning the resource is not in a state that allows the operation.
const INVALID_STATE_ERRORS: &[&str] = &[
    "InvalidDataShareFault",
    "UnsupportedOperation",
    "UnsupportedOperationFault",
];

/// AWS error codes meaning a named resource does not exist.
const NOT_FOUND_ERRORS: &[&str] = &["InvalidNamespaceFault", "ResourceNotFoundFault"];

/// AWS error codes meaning the account may not do this.
const UNAUTHORIZED_ERRORS: &[&str] = &["UnauthorizedOperation"];

/// The codes classified by list, in the order they are checked.
const CODE_LISTS: [(&[&str], FaultKind); 4] = [
    (INVALID_STATE_ERRORS, FaultKind::InvalidState),
    (NOT_FOUND_ERRORS, FaultKind::NotFound),
    (PARAMETER_ERRORS, FaultKind::InvalidParameter),
    (UNAUTHORIZED_ERRORS, FaultKind::Unauthorized),
];

/// One row of the upstream half of the fault table: an AWS outcome and its kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultRule {
    /// The outcome, in Markdown (the codes listed are the ones [`classify`] uses).
    pub outcome: String,
    /// What it is classified as.
    pub kind: FaultKind,
}

fn code_list(codes: &[&str]) -> String {
    codes
        .iter()
        .map(|c| format!("`{c}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every AWS outcome [`classify`] distinguishes, built from the same code lists it uses.
pub fn fault_rules() -> Vec<FaultRule> {
    let mut rules: Vec<FaultRule> = CODE_LISTS
        .iter()
        .map(|(codes, kind)| FaultRule {
            outcome: code_list(codes),
            kind: *kind,
        })
        .collect();
    let throttling = aws_runtime::retries::classifiers::THROTTLING_ERRORS;
    rules.extend([
        FaultRule {
            outcome: format!(
                "throttling ({}; a bare 429), after the SDK's retries",
                code_list(throttling)
            ),
            kind: FaultKind::Throttled,
        },
        FaultRule {
            outcome: "any other 5xx (`InternalFailure`, `ServiceUnavailable`, ...), after the SDK's retries".into(),
            kind: FaultKind::ServiceFailure,
        },
        FaultRule {
            outcome: "SDK attempt or operation timeout".into(),
            kind: FaultKind::Timeout,
        },
        FaultRule {
            outcome: "connection refused, reset or closed".into(),
            kind: FaultKind::Unreachable,
        },
        FaultRule {
            outcome: format!(
                "the gateway's own AWS credentials rejected ({}) or missing",
                code_list(CREDENTIAL_ERRORS)
            ),
            kind: FaultKind::CredentialsRejected,
        },
        FaultRule {
            outcome: "STS refused AssumeRole into the consumer account (`AccessDenied`: the role's trust policy, the external id, `sts:SetSourceIdentity` or `sts:TagSession`)".into(),
            kind: FaultKind::AssumeRoleDenied,
        },
        FaultRule {
            outcome: "STS throttling AssumeRole, after the SDK's retries".into(),
            kind: FaultKind::Throttled,
        },
        FaultRule {
            outcome: "STS unreachable or failing (5xx), after the SDK's retries".into(),
            kind: FaultKind::Unreachable,
        },
        FaultRule {
            outcome: "`ExpiredToken` on a cached role session, and again on a fresh one".into(),
            kind: FaultKind::SessionExpired,
        },
        FaultRule {
            outcome: "anything else (unknown code, unparseable answer)".into(),
            kind: FaultKind::Unknown,
        },
    ]);
    rules
}

/// Classifies an SDK error by variant first, then by the AWS error code.
pub(crate) fn classify<E>(
    err: SdkError<E, HttpResponse>,
    aws_request_id: Option<String>,
    retry_after: Duration,
) -> GatewayError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let fault = match &err {
        SdkError::TimeoutError(_) => UpstreamFault::of_kind(FaultKind::Timeout),
        SdkError::DispatchFailure(failure) if failure.is_timeout() => {
            UpstreamFault::of_kind(FaultKind::Timeout)
        }
        SdkError::DispatchFailure(failure) if failure.is_user() => {
            return GatewayError::Internal(Box::new(err));
        }
        SdkError::DispatchFailure(_) => UpstreamFault::of_kind(FaultKind::Unreachable),
        SdkError::ResponseError(_) => UpstreamFault::of_kind(FaultKind::Unknown),
        SdkError::ServiceError(service) => classify_service(
            service.err().code(),
            service.err().message(),
            service.raw().status().as_u16(),
            retry_after,
        ),
        // Request construction fails before anything is sent: missing credentials or region.
        SdkError::ConstructionFailure(_) => UpstreamFault::of_kind(FaultKind::CredentialsRejected),
        _ => UpstreamFault::of_kind(FaultKind::Unknown),
    };
    GatewayError::Upstream {
        fault,
        aws_request_id,
    }
}

/// The fault kind of an error Redshift answered with.
pub fn classify_service(
    code: Option<&str>,
    message: Option<&str>,
    http_status: u16,
    retry_after: Duration,
) -> UpstreamFault {
    let fault = |kind: FaultKind| UpstreamFault {
        kind,
        aws_code: code.map(str::to_owned),
        message: None,
        http_status: Some(http_status),
        retry_after: None,
    };
    // Redshift's message helps the caller fix a modeled or parameter error; other messages
    // (throttling, credentials, 5xx) say nothing the code does not.
    let with_message = |kind: FaultKind| UpstreamFault {
        message: message.map(str::to_owned),
        ..fault(kind)
    };
    let throttled = || UpstreamFault {
        retry_after: Some(retry_after),
        ..fault(FaultKind::Throttled)
    };
    if let Some(c) = code {
        if let Some((_, kind)) = CODE_LISTS.iter().find(|(codes, _)| codes.contains(&c)) {
            return with_message(*kind);
        }
        if aws_runtime::retries::classifiers::THROTTLING_ERRORS.contains(&c) {
            return throttled();
        }
        if CREDENTIAL_ERRORS.contains(&c) {
            return fault(FaultKind::CredentialsRejected);
        }
    }
    match http_status {
        429 => throttled(),
        500.. => with_message(FaultKind::ServiceFailure),
        _ => fault(FaultKind::Unknown),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind_of(code: Option<&str>, status: u16) -> FaultKind {
        classify_service(code, None, status, Duration::from_secs(1)).kind
    }

    #[test]
    fn the_fault_table() {
        let rows = [
            (Some("InvalidDataShareFault"), 400, FaultKind::InvalidState),
            (
                Some("UnsupportedOperationFault"),
                400,
                FaultKind::InvalidState,
            ),
            (Some("InvalidNamespaceFault"), 400, FaultKind::NotFound),
            (
                Some("InvalidParameterCombination"),
                400,
                FaultKind::InvalidParameter,
            ),
            (Some("MissingParameter"), 400, FaultKind::InvalidParameter),
            (Some("Throttling"), 400, FaultKind::Throttled),
            (Some("ThrottlingException"), 400, FaultKind::Throttled),
            (None, 429, FaultKind::Throttled),
            (Some("InternalFailure"), 500, FaultKind::ServiceFailure),
            (Some("ServiceUnavailable"), 503, FaultKind::ServiceFailure),
            (None, 502, FaultKind::ServiceFailure),
            (
                Some("InvalidClientTokenId"),
                403,
                FaultKind::CredentialsRejected,
            ),
            (
                Some("SignatureDoesNotMatch"),
                403,
                FaultKind::CredentialsRejected,
            ),
            (Some("UnauthorizedOperation"), 400, FaultKind::Unauthorized),
            (Some("SomethingNew"), 400, FaultKind::Unknown),
            (None, 400, FaultKind::Unknown),
        ];
        for (aws_code, status, want) in rows {
            assert_eq!(kind_of(aws_code, status), want, "{aws_code:?} {status}");
        }
    }

    #[test]
    fn every_code_the_table_lists_classifies_as_its_row_says() {
        for (codes, kind) in CODE_LISTS {
            for code in codes {
                assert_eq!(kind_of(Some(code), 400), kind, "{code}");
            }
        }
        for code in CREDENTIAL_ERRORS {
            assert_eq!(
                kind_of(Some(code), 403),
                FaultKind::CredentialsRejected,
                "{code}"
            );
        }
        for code in aws_runtime::retries::classifiers::THROTTLING_ERRORS {
            assert_eq!(kind_of(Some(code), 400), FaultKind::Throttled, "{code}");
        }
    }

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
    }
}
