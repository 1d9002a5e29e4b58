//! The gateway's error type and the one place it becomes a `tonic::Status`.
//!
//! Every error status carries `google.rpc.ErrorInfo` (reason, domain [`ERROR_DOMAIN`], metadata
//! with the request id and, for Redshift faults, the AWS error code and request id). Invalid
//! input carries `google.rpc.BadRequest`; throttling carries `google.rpc.RetryInfo`. Messages
//! help the caller and never carry credentials, signatures or internal causes.

use std::collections::HashMap;
use std::time::Duration;

use tonic::Code;
use tonic_types::{ErrorDetails, StatusExt};

/// The `google.rpc.ErrorInfo` domain of every error the gateway returns.
pub const ERROR_DOMAIN: &str = "datashare-gateway";

/// One invalid field and the rule it breaks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldViolation {
    /// The request field, as named in the proto (`data_share_arn`).
    pub field: &'static str,
    /// The rule the value breaks.
    pub description: String,
}

/// How a Redshift call failed, classified once in `upstream`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpstreamFault {
    /// A modeled or common AWS error answered by Redshift (or the emulator).
    Service {
        /// The gRPC code the fault table gives this AWS error.
        code: Code,
        /// The AWS error code (`InvalidDataShareFault`, `Throttling`, ...).
        aws_code: String,
        /// Redshift's message, passed on when it helps the caller.
        message: Option<String>,
        /// The HTTP status Redshift answered with.
        http_status: u16,
    },
    /// Redshift kept throttling after the SDK's retries.
    Throttled {
        /// The AWS error code.
        aws_code: String,
        /// How long the caller should wait before retrying.
        retry_after: Duration,
    },
    /// Redshift rejected the gateway's own credentials (or the gateway has none).
    CredentialsRejected {
        /// The AWS error code, when Redshift answered.
        aws_code: Option<String>,
    },
    /// The SDK's attempt or operation timeout ran out.
    Timeout,
    /// No connection could be made or it broke (refused, reset, closed).
    Unreachable,
    /// Anything else: an unparseable answer, an unknown error.
    Unknown {
        /// The AWS error code, if any.
        aws_code: Option<String>,
    },
}

/// Why a call did not succeed. Converted to a status only by [`GatewayError::to_status`].
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The request breaks one or more field rules.
    #[error("invalid request: {}", describe_violations(.0))]
    InvalidArgument(Vec<FieldViolation>),
    /// No caller identity could be established.
    #[error("{0}")]
    Unauthenticated(String),
    /// The organisation's policy does not permit the call.
    #[error("policy does not permit this call")]
    PolicyDenied {
        /// The policies that determined the denial (empty: nothing permitted it).
        determining_policies: Vec<String>,
    },
    /// The audit trail cannot make the call's record durable, so the call is refused.
    #[error("the audit trail is unavailable; the call was not forwarded")]
    AuditUnavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The gateway is at its concurrency limit.
    #[error("the gateway is overloaded; retry with backoff")]
    Overloaded,
    /// The caller's deadline passed.
    #[error("the call's deadline passed before Redshift answered")]
    DeadlineExceeded,
    /// Redshift (or the way to it) failed.
    #[error("{}", describe_upstream(.fault))]
    Upstream {
        /// What failed.
        fault: UpstreamFault,
        /// Redshift's request id, when it answered.
        aws_request_id: Option<String>,
    },
    /// A bug or misconfiguration inside the gateway.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

fn describe_violations(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ")
}

fn describe_upstream(fault: &UpstreamFault) -> String {
    match fault {
        UpstreamFault::Service {
            aws_code,
            message: Some(m),
            ..
        } => format!("Redshift: {aws_code}: {m}"),
        UpstreamFault::Service {
            aws_code,
            message: None,
            ..
        } => format!("Redshift: {aws_code}"),
        UpstreamFault::Throttled { .. } => {
            "Redshift is throttling requests; retry after the suggested delay".into()
        }
        UpstreamFault::CredentialsRejected { .. } => {
            "the gateway's own AWS credentials were rejected; this is not the caller's fault".into()
        }
        UpstreamFault::Timeout => "Redshift did not answer in time".into(),
        UpstreamFault::Unreachable => "Redshift could not be reached".into(),
        UpstreamFault::Unknown { .. } => {
            "Redshift's answer could not be understood; the outcome is unknown".into()
        }
    }
}

impl GatewayError {
    /// The gRPC code of this error: the fault table, in code.
    pub fn code(&self) -> Code {
        match self {
            GatewayError::InvalidArgument(_) => Code::InvalidArgument,
            GatewayError::Unauthenticated(_) => Code::Unauthenticated,
            GatewayError::PolicyDenied { .. } => Code::PermissionDenied,
            GatewayError::AuditUnavailable(_) => Code::Unavailable,
            GatewayError::Overloaded => Code::ResourceExhausted,
            GatewayError::DeadlineExceeded => Code::DeadlineExceeded,
            GatewayError::Upstream { fault, .. } => match fault {
                UpstreamFault::Service { code, .. } => *code,
                UpstreamFault::Throttled { .. } => Code::ResourceExhausted,
                UpstreamFault::CredentialsRejected { .. } => Code::Internal,
                UpstreamFault::Timeout => Code::DeadlineExceeded,
                UpstreamFault::Unreachable => Code::Unavailable,
                UpstreamFault::Unknown { .. } => Code::Unknown,
            },
            GatewayError::Internal(_) => Code::Internal,
        }
    }

    /// The `ErrorInfo` reason: the AWS error code for Redshift faults, else the gateway's own.
    pub fn reason(&self) -> String {
        match self {
            GatewayError::InvalidArgument(_) => "INVALID_REQUEST".into(),
            GatewayError::Unauthenticated(_) => "UNAUTHENTICATED".into(),
            GatewayError::PolicyDenied { .. } => "POLICY_DENIED".into(),
            GatewayError::AuditUnavailable(_) => "AUDIT_UNAVAILABLE".into(),
            GatewayError::Overloaded => "OVERLOADED".into(),
            GatewayError::DeadlineExceeded => "DEADLINE_EXCEEDED".into(),
            GatewayError::Upstream { fault, .. } => match fault {
                UpstreamFault::Service { aws_code, .. }
                | UpstreamFault::Throttled { aws_code, .. } => aws_code.clone(),
                UpstreamFault::CredentialsRejected { aws_code } => aws_code
                    .clone()
                    .unwrap_or_else(|| "UPSTREAM_CREDENTIALS".into()),
                UpstreamFault::Timeout => "UPSTREAM_TIMEOUT".into(),
                UpstreamFault::Unreachable => "UPSTREAM_UNREACHABLE".into(),
                UpstreamFault::Unknown { aws_code } => aws_code
                    .clone()
                    .unwrap_or_else(|| "UPSTREAM_UNKNOWN".into()),
            },
            GatewayError::Internal(_) => "INTERNAL".into(),
        }
    }

    /// The AWS error code, for Redshift faults that carry one.
    pub fn aws_error_code(&self) -> Option<&str> {
        match self {
            GatewayError::Upstream { fault, .. } => match fault {
                UpstreamFault::Service { aws_code, .. }
                | UpstreamFault::Throttled { aws_code, .. } => Some(aws_code),
                UpstreamFault::CredentialsRejected { aws_code }
                | UpstreamFault::Unknown { aws_code } => aws_code.as_deref(),
                _ => None,
            },
            _ => None,
        }
    }

    /// Builds the status the caller receives, with its rich error details.
    pub fn to_status(&self, request_id: &str) -> tonic::Status {
        let mut metadata = HashMap::from([("request_id".to_owned(), request_id.to_owned())]);
        let mut details = ErrorDetails::new();
        match self {
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
                details.set_retry_info(Some(Duration::from_millis(100)));
            }
            GatewayError::Upstream {
                fault,
                aws_request_id,
            } => {
                if let Some(id) = aws_request_id {
                    metadata.insert("aws_request_id".into(), id.clone());
                }
                if let Some(code) = self.aws_error_code() {
                    metadata.insert("aws_error_code".into(), code.to_owned());
                }
                if let UpstreamFault::Throttled { retry_after, .. } = fault {
                    details.set_retry_info(Some(*retry_after));
                }
                if let UpstreamFault::Service { http_status, .. } = fault {
                    metadata.insert("http_status".into(), http_status.to_string());
                }
            }
            _ => {}
        }
        details.set_error_info(self.reason(), ERROR_DOMAIN, metadata);
        tonic::Status::with_error_details(self.code(), self.to_string(), details)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let status = err.to_status("req-1");
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
            fault: UpstreamFault::Throttled {
                aws_code: "Throttling".into(),
                retry_after: Duration::from_secs(2),
            },
            aws_request_id: Some("aws-req".into()),
        };
        let status = err.to_status("req-2");
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
    }

    #[test]
    fn internal_errors_do_not_leak_their_cause() {
        let err = GatewayError::Internal("secret=wJalrXUtnFEMI".into());
        let status = err.to_status("req-3");
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("wJalr"));
    }
}
