//! The Redshift client (aws-sdk-redshift, built from aws-config) as a tower service, and the
//! classification of every `SdkError` into the gateway's fault table.
//!
//! `SdkError` never leaves this module: [`classify`] turns it into a [`GatewayError`] whose code
//! comes from the one table below (also in the README):
//!
//! | Redshift outcome                                              | gRPC code            |
//! |---------------------------------------------------------------|----------------------|
//! | `InvalidDataShareFault`                                       | `FAILED_PRECONDITION`|
//! | `InvalidNamespaceFault`, `ResourceNotFoundFault`              | `NOT_FOUND`          |
//! | parameter errors (`InvalidParameterValue`, `MissingParameter`, ...) | `INVALID_ARGUMENT` |
//! | `UnauthorizedOperation`                                       | `PERMISSION_DENIED`  |
//! | `UnsupportedOperation(Fault)`                                 | `FAILED_PRECONDITION`|
//! | throttling codes (the SDK's list) or a bare 429, after retries | `RESOURCE_EXHAUSTED` + `RetryInfo` |
//! | any other 5xx (`InternalFailure`, `ServiceUnavailable`, ...)  | `UNAVAILABLE`        |
//! | attempt or operation timeout                                  | `DEADLINE_EXCEEDED`  |
//! | connection refused, reset or closed                           | `UNAVAILABLE`        |
//! | the gateway's own credentials rejected or missing             | `INTERNAL`           |
//! | anything else (unknown code, unparseable answer)              | `UNKNOWN`            |

use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use aws_config::BehaviorVersion;
use aws_sdk_redshift::config::retry::RetryConfig;
use aws_sdk_redshift::config::timeout::TimeoutConfig;
use aws_sdk_redshift::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_redshift::operation::RequestId;
use aws_sdk_redshift::operation::associate_data_share_consumer::AssociateDataShareConsumerOutput;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::retries::RequestAttempts;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use std::sync::Arc;
use tonic::Code;
use tower::Service;
use tracing::Instrument;

use crate::metrics::Metrics;

use crate::call::{
    AssociateCall, AssociateReply, CallFuture, ConsumerTarget, DataShare, DataShareAssociation,
    UpstreamNote,
};
use crate::errors::{GatewayError, UpstreamFault};

/// `[upstream]`: how the gateway reaches Redshift.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The AWS account the gateway acts as (the datashare consumer account). Policies see it as
    /// `consumer_account` for entire-account and region associations.
    pub consumer_account: String,
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
}

impl UpstreamConfig {
    /// A config for the given account with every other setting at its default.
    pub fn for_account(consumer_account: impl Into<String>) -> Self {
        UpstreamConfig {
            consumer_account: consumer_account.into(),
            region: None,
            endpoint_url: None,
            max_attempts: defaults::max_attempts(),
            initial_backoff_ms: defaults::initial_backoff_ms(),
            connect_timeout_ms: defaults::connect_timeout_ms(),
            attempt_timeout_ms: defaults::attempt_timeout_ms(),
            operation_timeout_ms: defaults::operation_timeout_ms(),
            throttle_retry_after_ms: defaults::throttle_retry_after_ms(),
        }
    }

    /// Checks the values; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        crate::arn::AccountId::parse(&self.consumer_account).map_err(|e| {
            format!(
                "upstream.consumer_account = {:?}: {e}",
                self.consumer_account
            )
        })?;
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

/// Builds the one shared Redshift client from the default AWS configuration chain (credentials,
/// region), with the gateway's retry and timeout settings. `credentials` replaces the default
/// credential chain (used by `dev`, which signs as the emulator's consumer account).
pub async fn build_client(
    config: &UpstreamConfig,
    credentials: Option<aws_credential_types::Credentials>,
    metrics: Arc<Metrics>,
) -> aws_sdk_redshift::Client {
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
    let endpoint = std::env::var("DATASHARE_GATEWAY_ENDPOINT_URL")
        .ok()
        .or_else(|| config.endpoint_url.clone());
    if let Some(url) = endpoint {
        loader = loader.endpoint_url(url);
    }
    if let Some(credentials) = credentials {
        loader = loader.credentials_provider(credentials);
    }
    let shared = loader.load().await;
    let conf = aws_sdk_redshift::config::Builder::from(&shared)
        .interceptor(RetryCounter { metrics })
        .build();
    aws_sdk_redshift::Client::from_conf(conf)
}

/// Counts the SDK's retries (attempts after the first) for the metrics.
#[derive(Debug)]
struct RetryCounter {
    metrics: Arc<Metrics>,
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
            self.metrics.upstream_retry(ASSOCIATE);
        }
        Ok(())
    }
}

/// The Redshift operation the gateway forwards.
const ASSOCIATE: &str = "AssociateDataShareConsumer";

/// Forwards validated calls to Redshift's `AssociateDataShareConsumer`.
#[derive(Clone, Debug)]
pub struct RedshiftService {
    client: aws_sdk_redshift::Client,
    throttle_retry_after: Duration,
    metrics: Arc<Metrics>,
}

impl RedshiftService {
    /// A service over the shared client.
    pub fn new(
        client: aws_sdk_redshift::Client,
        config: &UpstreamConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        RedshiftService {
            client,
            throttle_retry_after: Duration::from_millis(config.throttle_retry_after_ms),
            metrics,
        }
    }
}

impl Service<AssociateCall> for RedshiftService {
    type Response = AssociateReply;
    type Error = GatewayError;
    type Future = CallFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The SDK client pools connections itself; it is always ready to take a call.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: AssociateCall) -> Self::Future {
        let client = self.client.clone();
        let retry_after = self.throttle_retry_after;
        let metrics = self.metrics.clone();
        let span = tracing::info_span!(
            "Redshift/AssociateDataShareConsumer",
            otel.kind = "client",
            rpc.system = "aws-api",
            rpc.service = "Redshift",
            rpc.method = ASSOCIATE,
            aws.request_id = tracing::field::Empty,
            aws.error_code = tracing::field::Empty,
        );
        let record_span = span.clone();
        let call_future = async move {
            let request = call.request.as_ref().ok_or_else(|| {
                GatewayError::Internal("upstream reached without a validated request".into())
            })?;
            let mut op = client
                .associate_data_share_consumer()
                .data_share_arn(request.data_share.to_string())
                .set_allow_writes(request.allow_writes);
            op = match &request.consumer {
                ConsumerTarget::EntireAccount => op.associate_entire_account(true),
                ConsumerTarget::Namespace(arn) => op.consumer_arn(arn.to_string()),
                ConsumerTarget::Region(region) => op.consumer_region(region.as_str()),
            };
            call.trail.lock().forwarded = true;
            let started = std::time::Instant::now();
            let result = op.send().await;
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
            metrics.upstream_call(ASSOCIATE, note.aws_error_code.as_deref(), started);
            if let Some(id) = &note.aws_request_id {
                record_span.record("aws.request_id", id.as_str());
            }
            if let Some(code) = &note.aws_error_code {
                record_span.record("aws.error_code", code.as_str());
            }
            call.trail.lock().upstream = note.clone();
            match result {
                Ok(out) => Ok(AssociateReply::Associated(data_share_from(&out))),
                Err(err) => Err(classify(err, note.aws_request_id, retry_after)),
            }
        };
        Box::pin(call_future.instrument(span))
    }
}

fn data_share_from(out: &AssociateDataShareConsumerOutput) -> DataShare {
    DataShare {
        data_share_arn: out.data_share_arn().map(str::to_owned),
        producer_arn: out.producer_arn().map(str::to_owned),
        allow_publicly_accessible_consumers: out.allow_publicly_accessible_consumers(),
        associations: out
            .data_share_associations()
            .iter()
            .map(|a| DataShareAssociation {
                consumer_identifier: a.consumer_identifier().map(str::to_owned),
                status: a.status().map(|s| s.as_str().to_owned()),
                consumer_region: a.consumer_region().map(str::to_owned),
                created_date: a.created_date().and_then(|d| SystemTime::try_from(*d).ok()),
                status_change_date: a
                    .status_change_date()
                    .and_then(|d| SystemTime::try_from(*d).ok()),
                producer_allowed_writes: a.producer_allowed_writes(),
                consumer_accepted_writes: a.consumer_accepted_writes(),
            })
            .collect(),
        managed_by: out.managed_by().map(str::to_owned),
        data_share_type: out.data_share_type().map(|t| t.as_str().to_owned()),
    }
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

/// Classifies an SDK error by variant first, then by the AWS error code: the fault table.
pub fn classify<E>(
    err: SdkError<E, HttpResponse>,
    aws_request_id: Option<String>,
    retry_after: Duration,
) -> GatewayError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let fault = match &err {
        SdkError::TimeoutError(_) => UpstreamFault::Timeout,
        SdkError::DispatchFailure(failure) if failure.is_timeout() => UpstreamFault::Timeout,
        SdkError::DispatchFailure(failure) if failure.is_user() => {
            return GatewayError::Internal(Box::new(err));
        }
        SdkError::DispatchFailure(_) => UpstreamFault::Unreachable,
        SdkError::ResponseError(_) => UpstreamFault::Unknown { aws_code: None },
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            classify_service(
                service.err().code(),
                service.err().message(),
                status,
                retry_after,
            )
        }
        // Request construction fails before anything is sent: missing credentials or region.
        SdkError::ConstructionFailure(_) => UpstreamFault::CredentialsRejected { aws_code: None },
        _ => UpstreamFault::Unknown { aws_code: None },
    };
    GatewayError::Upstream {
        fault,
        aws_request_id,
    }
}

/// The fault table for errors Redshift answered with.
pub fn classify_service(
    code: Option<&str>,
    message: Option<&str>,
    http_status: u16,
    retry_after: Duration,
) -> UpstreamFault {
    let service = |grpc: Code, aws_code: &str| UpstreamFault::Service {
        code: grpc,
        aws_code: aws_code.to_owned(),
        message: message.map(str::to_owned),
        http_status,
    };
    match code {
        Some(c) if c == "InvalidDataShareFault" => service(Code::FailedPrecondition, c),
        Some(c) if c == "InvalidNamespaceFault" || c == "ResourceNotFoundFault" => {
            service(Code::NotFound, c)
        }
        Some(c) if PARAMETER_ERRORS.contains(&c) => service(Code::InvalidArgument, c),
        Some(c) if c == "UnauthorizedOperation" => service(Code::PermissionDenied, c),
        Some(c) if c == "UnsupportedOperation" || c == "UnsupportedOperationFault" => {
            service(Code::FailedPrecondition, c)
        }
        Some(c) if aws_runtime::retries::classifiers::THROTTLING_ERRORS.contains(&c) => {
            UpstreamFault::Throttled {
                aws_code: c.to_owned(),
                retry_after,
            }
        }
        Some(c) if CREDENTIAL_ERRORS.contains(&c) => UpstreamFault::CredentialsRejected {
            aws_code: Some(c.to_owned()),
        },
        _ if http_status == 429 => UpstreamFault::Throttled {
            aws_code: code.unwrap_or("TooManyRequests").to_owned(),
            retry_after,
        },
        Some(c) if http_status >= 500 => service(Code::Unavailable, c),
        None if http_status >= 500 => service(Code::Unavailable, &format!("HTTP{http_status}")),
        other => UpstreamFault::Unknown {
            aws_code: other.map(str::to_owned),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_of(code: Option<&str>, status: u16) -> Code {
        let err = GatewayError::Upstream {
            fault: classify_service(code, None, status, Duration::from_secs(1)),
            aws_request_id: None,
        };
        err.code()
    }

    #[test]
    fn the_fault_table() {
        let rows = [
            (Some("InvalidDataShareFault"), 400, Code::FailedPrecondition),
            (Some("InvalidNamespaceFault"), 400, Code::NotFound),
            (
                Some("InvalidParameterCombination"),
                400,
                Code::InvalidArgument,
            ),
            (Some("MissingParameter"), 400, Code::InvalidArgument),
            (Some("Throttling"), 400, Code::ResourceExhausted),
            (Some("ThrottlingException"), 400, Code::ResourceExhausted),
            (None, 429, Code::ResourceExhausted),
            (Some("InternalFailure"), 500, Code::Unavailable),
            (Some("ServiceUnavailable"), 503, Code::Unavailable),
            (None, 502, Code::Unavailable),
            (Some("InvalidClientTokenId"), 403, Code::Internal),
            (Some("SignatureDoesNotMatch"), 403, Code::Internal),
            (Some("UnauthorizedOperation"), 400, Code::PermissionDenied),
            (Some("SomethingNew"), 400, Code::Unknown),
            (None, 400, Code::Unknown),
        ];
        for (aws_code, status, want) in rows {
            assert_eq!(code_of(aws_code, status), want, "{aws_code:?} {status}");
        }
    }

    #[test]
    fn config_validation_names_the_key() {
        let mut config = UpstreamConfig::for_account("444455556666");
        assert!(config.validate().is_ok());
        config.consumer_account = "12".into();
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
