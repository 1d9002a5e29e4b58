//! The one place a [`GatewayError`] becomes a `tonic::Status`: its code, message and rich
//! details. `fault_table` renders the README's table from this mapping.
//!
//! Every error status carries `google.rpc.ErrorInfo` (reason, domain [`ERROR_DOMAIN`], metadata
//! with the request id and, for Redshift faults, the AWS error code and request id). Invalid
//! input carries `google.rpc.BadRequest`; throttling and overload carry `google.rpc.RetryInfo`.
//! Messages help the caller and never carry credentials, signatures or internal causes.

use std::collections::HashMap;
use std::time::Duration;

use tonic::Code;
use tonic_types::{ErrorDetails, StatusExt};

use crate::errors::{FaultKind, GatewayError};

/// The `google.rpc.ErrorInfo` domain of every error the gateway returns.
pub const ERROR_DOMAIN: &str = "datashare-gateway";

/// How long an overloaded gateway asks callers to wait.
const OVERLOADED_RETRY_AFTER: Duration = Duration::from_millis(100);

/// The gRPC code of a Redshift fault kind.
pub fn fault_code(kind: FaultKind) -> Code {
    match kind {
        FaultKind::InvalidState => Code::FailedPrecondition,
        FaultKind::NotFound => Code::NotFound,
        FaultKind::InvalidParameter => Code::InvalidArgument,
        FaultKind::Unauthorized => Code::PermissionDenied,
        FaultKind::Throttled => Code::ResourceExhausted,
        FaultKind::ServiceFailure | FaultKind::Unreachable => Code::Unavailable,
        FaultKind::Timeout => Code::DeadlineExceeded,
        FaultKind::CredentialsRejected | FaultKind::AssumeRoleDenied => Code::Internal,
        FaultKind::SessionExpired => Code::Unavailable,
        FaultKind::RegionDisabled => Code::FailedPrecondition,
        FaultKind::Unknown => Code::Unknown,
    }
}

/// The gRPC code of an error.
pub fn code_of(err: &GatewayError) -> Code {
    match err {
        GatewayError::InvalidArgument(_) => Code::InvalidArgument,
        GatewayError::Unauthenticated(_) => Code::Unauthenticated,
        GatewayError::PolicyDenied { .. } => Code::PermissionDenied,
        GatewayError::AuditUnavailable(_) => Code::Unavailable,
        GatewayError::AccountNotConfigured { .. } => Code::FailedPrecondition,
        GatewayError::Overloaded
        | GatewayError::CallerOverloaded { .. }
        | GatewayError::RateLimited { .. }
        | GatewayError::TooManyPendingApprovals { .. } => Code::ResourceExhausted,
        GatewayError::CallerGone => Code::Cancelled,
        GatewayError::DeadlineExceeded | GatewayError::NotEnoughTime { .. } => {
            Code::DeadlineExceeded
        }
        GatewayError::Upstream { fault, .. } => fault_code(fault.kind),
        GatewayError::ApprovalRequired { .. }
        | GatewayError::ApprovalDenied { .. }
        | GatewayError::ApprovalClosed { .. } => Code::FailedPrecondition,
        GatewayError::ApprovalNotFound { .. } => Code::NotFound,
        GatewayError::SelfApproval => Code::PermissionDenied,
        GatewayError::AlreadyReviewed { .. } => Code::AlreadyExists,
        GatewayError::ApprovalsUnavailable(_) => Code::Unavailable,
        GatewayError::AbortedAtShutdown => Code::Unavailable,
        GatewayError::Internal(_) => Code::Internal,
    }
}

/// The code's canonical name (`PERMISSION_DENIED`), as audit records and logs spell it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Builds the status the caller receives, with its rich error details.
pub fn to_status(err: &GatewayError, request_id: &str) -> tonic::Status {
    let mut metadata = HashMap::from([("request_id".to_owned(), request_id.to_owned())]);
    let mut details = ErrorDetails::new();
    match err {
        GatewayError::InvalidArgument(violations) => {
            for v in violations {
                details.add_bad_request_violation(v.field, v.description.clone());
            }
        }
        GatewayError::PolicyDenied {
            determining_policies,
        } => {
            metadata.insert(
                "determining_policies".into(),
                determining_policies.join(","),
            );
        }
        GatewayError::Overloaded => {
            details.set_retry_info(Some(OVERLOADED_RETRY_AFTER));
        }
        GatewayError::CallerOverloaded { limit, max } => {
            metadata.insert("limit".into(), (*limit).to_owned());
            details.set_retry_info(Some(OVERLOADED_RETRY_AFTER));
            details.add_quota_failure_violation(
                *limit,
                format!("at most {max} calls of one caller; its own calls ending free places"),
            );
        }
        GatewayError::RateLimited {
            retry_after,
            calls_per_second,
            burst,
        } => {
            metadata.insert("limit".into(), "server.per_caller_rate".into());
            details.set_retry_info(Some((*retry_after).max(Duration::from_millis(1))));
            details.add_quota_failure_violation(
                "server.per_caller_rate",
                format!("{calls_per_second} calls a second per caller, bursts of {burst}"),
            );
        }
        GatewayError::TooManyPendingApprovals { limit, max } => {
            metadata.insert("limit".into(), (*limit).to_owned());
            details.add_quota_failure_violation(
                *limit,
                format!("at most {max} pending approvals; reviews, spent approvals and expiry free places"),
            );
        }
        GatewayError::AccountNotConfigured { account } => {
            metadata.insert("consumer_account".into(), account.clone());
        }
        GatewayError::ApprovalRequired {
            approval_id,
            required_approvals,
            approvals,
        } => {
            metadata.insert("required_approvals".into(), required_approvals.to_string());
            metadata.insert("approvals".into(), approvals.to_string());
            let subject = match approval_id {
                Some(id) => {
                    metadata.insert("approval_id".into(), id.clone());
                    format!("approvals/{id}")
                }
                // validate_only creates no approval.
                None => "approvals/-".to_owned(),
            };
            details.add_precondition_failure_violation(
                "APPROVAL",
                subject,
                format!(
                    "{approvals} of {required_approvals} required approval(s) by principals other than the requester; \
                     an approver calls datasharing.v1.Approvals/Approve, then the same request is sent again"
                ),
            );
        }
        GatewayError::ApprovalDenied { approval_id } => {
            metadata.insert("approval_id".into(), approval_id.clone());
            details.add_precondition_failure_violation(
                "APPROVAL",
                format!("approvals/{approval_id}"),
                "denied; the request can be made again once the approval expires".to_owned(),
            );
        }
        GatewayError::ApprovalNotFound { approval_id } => {
            metadata.insert("approval_id".into(), approval_id.clone());
        }
        GatewayError::ApprovalClosed {
            approval_id, state, ..
        } => {
            metadata.insert("approval_id".into(), approval_id.clone());
            metadata.insert("state".into(), (*state).to_owned());
            details.add_precondition_failure_violation(
                "APPROVAL",
                format!("approvals/{approval_id}"),
                format!("is {state}; only a PENDING or APPROVED approval can be reviewed"),
            );
        }
        GatewayError::AlreadyReviewed { approval_id, .. } => {
            metadata.insert("approval_id".into(), approval_id.clone());
        }
        GatewayError::Upstream {
            fault,
            aws_request_id,
        } => {
            if let Some(id) = aws_request_id {
                metadata.insert("aws_request_id".into(), id.clone());
            }
            if let Some(code) = &fault.aws_code {
                metadata.insert("aws_error_code".into(), code.clone());
            }
            if let Some(status) = fault.http_status {
                metadata.insert("http_status".into(), status.to_string());
            }
            if let Some(retry_after) = fault.retry_after {
                details.set_retry_info(Some(retry_after));
            }
        }
        _ => {}
    }
    details.set_error_info(err.reason(), ERROR_DOMAIN, metadata);
    tonic::Status::with_error_details(code_of(err), err.to_string(), details)
}

/// The metadata key that marks a status as "the body could not be decoded" for the HTTP layer,
/// which logs and counts such calls (the codec that makes the status knows no request) and then
/// removes the key.
pub const UNDECODABLE_MARK: &str = "x-datashare-gateway-undecodable";

/// The status of a request whose body is not a valid protobuf message of its method (garbage,
/// truncated, invalid UTF-8 in a string field): the caller's error, INVALID_ARGUMENT.
pub fn undecodable(detail: &str) -> tonic::Status {
    let mut details = ErrorDetails::new();
    details.set_error_info("UNDECODABLE_REQUEST", ERROR_DOMAIN, HashMap::new());
    let mut status = tonic::Status::with_error_details(
        Code::InvalidArgument,
        format!("the request body is not a valid message of this method: {detail}"),
        details,
    );
    status.metadata_mut().insert(
        UNDECODABLE_MARK,
        tonic::metadata::MetadataValue::from_static("1"),
    );
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errors::{FieldViolation, UpstreamFault};

    #[test]
    fn invalid_argument_names_each_field_and_rule() {
        let err = GatewayError::InvalidArgument(vec![
            FieldViolation {
                field: "data_share_arn",
                description: "must not be empty".into(),
            },
            FieldViolation {
                field: "consumer_region",
                description: "region must look like us-east-1".into(),
            },
        ]);
        let status = to_status(&err, "req-1");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status
                .message()
                .contains("data_share_arn: must not be empty")
        );
        let details = status.get_error_details();
        let bad = details.bad_request().expect("BadRequest detail");
        let fields: Vec<_> = bad
            .field_violations
            .iter()
            .map(|v| v.field.as_str())
            .collect();
        assert_eq!(fields, ["data_share_arn", "consumer_region"]);
        let info = details.error_info().expect("ErrorInfo detail");
        assert_eq!(info.reason, "INVALID_REQUEST");
        assert_eq!(info.domain, ERROR_DOMAIN);
        assert_eq!(
            info.metadata.get("request_id").map(String::as_str),
            Some("req-1")
        );
    }

    #[test]
    fn throttling_carries_retry_info_and_the_aws_code() {
        let err = GatewayError::Upstream {
            fault: UpstreamFault {
                aws_code: Some("Throttling".into()),
                retry_after: Some(Duration::from_secs(2)),
                http_status: Some(400),
                ..UpstreamFault::of_kind(FaultKind::Throttled)
            },
            aws_request_id: Some("aws-req".into()),
        };
        let status = to_status(&err, "req-2");
        assert_eq!(status.code(), Code::ResourceExhausted);
        let details = status.get_error_details();
        assert_eq!(
            details.retry_info().and_then(|r| r.retry_delay),
            Some(Duration::from_secs(2))
        );
        let info = details.error_info().expect("ErrorInfo");
        assert_eq!(info.reason, "Throttling");
        assert_eq!(
            info.metadata.get("aws_request_id").map(String::as_str),
            Some("aws-req")
        );
        assert_eq!(
            info.metadata.get("http_status").map(String::as_str),
            Some("400")
        );
    }

    #[test]
    fn internal_errors_do_not_leak_their_cause() {
        let err = GatewayError::Internal("secret=wJalrXUtnFEMI".into());
        let status = to_status(&err, "req-3");
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("wJalr"));
    }
}
