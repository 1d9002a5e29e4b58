//! The classification of every `SdkError` into an AWS-neutral [`UpstreamFault`]: by variant first
//! (timeout, dispatch, response, service), then by the AWS error code, using the code lists here
//! ([`classify`], [`classify_service`]). [`fault_rules`] describes the same lists for the README's
//! fault table, so the table cannot drift from the code.

use std::time::Duration;

use aws_sdk_redshift::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;

use crate::errors::{AwsService, FaultKind, GatewayError, UpstreamFault};

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
    /// Which service answers with it.
    pub service: AwsService,
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
            service: AwsService::Redshift,
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
            service: AwsService::Redshift,
            kind: FaultKind::Throttled,
        },
        FaultRule {
            outcome: "any other 5xx (`InternalFailure`, `ServiceUnavailable`, ...), after the SDK's retries".into(),
            service: AwsService::Redshift,
            kind: FaultKind::ServiceFailure,
        },
        FaultRule {
            outcome: "SDK attempt or operation timeout".into(),
            service: AwsService::Redshift,
            kind: FaultKind::Timeout,
        },
        FaultRule {
            outcome: "connection refused, reset or closed".into(),
            service: AwsService::Redshift,
            kind: FaultKind::Unreachable,
        },
        FaultRule {
            outcome: format!(
                "the gateway's own AWS credentials rejected ({}) or missing",
                code_list(CREDENTIAL_ERRORS)
            ),
            service: AwsService::Redshift,
            kind: FaultKind::CredentialsRejected,
        },
        FaultRule {
            outcome: "STS refused AssumeRole into the consumer account (`AccessDenied`: the role's trust policy, the external id, `sts:SetSourceIdentity` or `sts:TagSession`)".into(),
            service: AwsService::Sts,
            kind: FaultKind::AssumeRoleDenied,
        },
        FaultRule {
            outcome: "STS throttling AssumeRole, after the SDK's retries".into(),
            service: AwsService::Sts,
            kind: FaultKind::Throttled,
        },
        FaultRule {
            outcome: "STS unreachable or failing (5xx), after the SDK's retries".into(),
            service: AwsService::Sts,
            kind: FaultKind::Unreachable,
        },
        FaultRule {
            outcome: "STS did not answer AssumeRole in time (the SDK's timeouts)".into(),
            service: AwsService::Sts,
            kind: FaultKind::Timeout,
        },
        FaultRule {
            outcome: "STS is not activated in the gateway's region for the consumer account (`RegionDisabledException`; the message names the region)".into(),
            service: AwsService::Sts,
            kind: FaultKind::RegionDisabled,
        },
        FaultRule {
            outcome: "`ExpiredToken` on a cached role session, and again on a fresh one".into(),
            service: AwsService::Redshift,
            kind: FaultKind::SessionExpired,
        },
        FaultRule {
            outcome: "anything else (unknown code, unparseable answer)".into(),
            service: AwsService::Redshift,
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
        service: AwsService::Redshift,
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
}
