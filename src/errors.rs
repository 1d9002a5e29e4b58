//! The gateway's error type: why a call did not succeed, in the gateway's own terms.
//!
//! Nothing here names a gRPC code: `status` is the one place an error becomes a `tonic::Status`,
//! and `upstream` the one place an AWS SDK error becomes an [`UpstreamFault`].

use std::time::Duration;

/// One invalid field and the rule it breaks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldViolation {
    /// The request field, as named in the proto (`data_share_arn`).
    pub field: &'static str,
    /// The rule the value breaks.
    pub description: String,
}

/// What kind of fault Redshift (or the way to it) answered with, in AWS-neutral terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// The resource is not in a state that allows the operation (a datashare not available to
    /// this account, an unsupported operation).
    InvalidState,
    /// A named resource (namespace, datashare) does not exist.
    NotFound,
    /// Redshift refused a parameter.
    InvalidParameter,
    /// Redshift says the account may not do this.
    Unauthorized,
    /// Redshift kept throttling after the SDK's retries.
    Throttled,
    /// Redshift failed on its side (5xx) after the SDK's retries.
    ServiceFailure,
    /// The SDK's attempt or operation timeout ran out.
    Timeout,
    /// No connection could be made or it broke (refused, reset, closed).
    Unreachable,
    /// Redshift rejected the gateway's own credentials (or the gateway has none).
    CredentialsRejected,
    /// STS refused to let the gateway assume the consumer account's role (trust policy,
    /// external id, `sts:SetSourceIdentity` or `sts:TagSession` not allowed).
    AssumeRoleDenied,
    /// A role session Redshift called expired, and so did a fresh one (clock skew).
    SessionExpired,
    /// STS is not activated in the gateway's region for the account (`RegionDisabledException`).
    RegionDisabled,
    /// Anything else: an unparseable answer, an unknown error.
    Unknown,
}

/// Which AWS service answered with the fault.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AwsService {
    /// Redshift (the call itself).
    #[default]
    Redshift,
    /// STS (the role session the call needs).
    Sts,
}

impl AwsService {
    /// As callers read it.
    pub fn name(self) -> &'static str {
        match self {
            AwsService::Redshift => "Redshift",
            AwsService::Sts => "STS",
        }
    }
}

impl FaultKind {
    /// Every kind, in the order the fault table lists them.
    pub const ALL: [FaultKind; 13] = [
        FaultKind::InvalidState,
        FaultKind::NotFound,
        FaultKind::InvalidParameter,
        FaultKind::Unauthorized,
        FaultKind::Throttled,
        FaultKind::ServiceFailure,
        FaultKind::Timeout,
        FaultKind::Unreachable,
        FaultKind::CredentialsRejected,
        FaultKind::AssumeRoleDenied,
        FaultKind::SessionExpired,
        FaultKind::RegionDisabled,
        FaultKind::Unknown,
    ];

    /// The `ErrorInfo` reason when Redshift gave no error code.
    pub fn default_reason(self) -> &'static str {
        match self {
            FaultKind::InvalidState => "UPSTREAM_INVALID_STATE",
            FaultKind::NotFound => "UPSTREAM_NOT_FOUND",
            FaultKind::InvalidParameter => "UPSTREAM_INVALID_PARAMETER",
            FaultKind::Unauthorized => "UPSTREAM_UNAUTHORIZED",
            FaultKind::Throttled => "TooManyRequests",
            FaultKind::ServiceFailure => "UPSTREAM_FAILURE",
            FaultKind::Timeout => "UPSTREAM_TIMEOUT",
            FaultKind::Unreachable => "UPSTREAM_UNREACHABLE",
            FaultKind::CredentialsRejected => "UPSTREAM_CREDENTIALS",
            FaultKind::AssumeRoleDenied => "ASSUME_ROLE_DENIED",
            FaultKind::SessionExpired => "SESSION_EXPIRED",
            FaultKind::RegionDisabled => "STS_REGION_DISABLED",
            FaultKind::Unknown => "UPSTREAM_UNKNOWN",
        }
    }

    /// The `ErrorInfo` reason of an STS fault: always the gateway's own, so that a caller (and
    /// an alert) tells STS's faults from Redshift's; STS's code stays in the metadata.
    pub fn sts_reason(self) -> &'static str {
        match self {
            FaultKind::Throttled => "STS_THROTTLED",
            FaultKind::ServiceFailure | FaultKind::Unreachable => "STS_UNAVAILABLE",
            FaultKind::Timeout => "STS_TIMEOUT",
            FaultKind::CredentialsRejected => "STS_CREDENTIALS",
            FaultKind::InvalidState
            | FaultKind::NotFound
            | FaultKind::InvalidParameter
            | FaultKind::Unauthorized
            | FaultKind::Unknown => "STS_UNKNOWN",
            FaultKind::AssumeRoleDenied | FaultKind::SessionExpired | FaultKind::RegionDisabled => {
                self.default_reason()
            }
        }
    }
}

/// How a Redshift call failed, classified once in `upstream`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamFault {
    /// What kind of fault.
    pub kind: FaultKind,
    /// Which service answered with it.
    pub service: AwsService,
    /// The AWS error code (`InvalidDataShareFault`, `Throttling`, ...), when Redshift gave one.
    pub aws_code: Option<String>,
    /// Redshift's message, passed on when it helps the caller (modeled and parameter errors).
    pub message: Option<String>,
    /// The HTTP status Redshift answered with, when it answered.
    pub http_status: Option<u16>,
    /// For throttling: how long the caller should wait before retrying.
    pub retry_after: Option<Duration>,
}

impl UpstreamFault {
    /// An STS fault of `kind` with nothing else known.
    pub fn of_sts(kind: FaultKind) -> Self {
        UpstreamFault {
            service: AwsService::Sts,
            ..UpstreamFault::of_kind(kind)
        }
    }

    /// A Redshift fault of `kind` with nothing else known.
    pub fn of_kind(kind: FaultKind) -> Self {
        UpstreamFault {
            kind,
            service: AwsService::Redshift,
            aws_code: None,
            message: None,
            http_status: None,
            retry_after: None,
        }
    }
}

/// Why a call did not succeed. Converted to a status only by `status::to_status`.
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
    /// The audit trail cannot make the call's record durable, so the call is refused (or, for a
    /// call that changes nothing, its answer withheld).
    #[error("the audit trail is unavailable; the call was not completed")]
    AuditUnavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Policy permits the call, but the gateway does not serve the consumer account.
    #[error("the gateway does not serve consumer account {account}; ask its operators to add it")]
    AccountNotConfigured {
        /// The account.
        account: String,
    },
    /// The gateway is at its concurrency limit.
    #[error("the gateway is overloaded; retry with backoff")]
    Overloaded,
    /// This caller holds its whole share of the gateway's slots and its calls waited, or its
    /// queue is full: other callers are still served.
    #[error(
        "{limit} = {max}: this caller already has that many calls {}; other callers are served, retry with backoff",
        if *limit == "server.per_caller_queue" { "waiting" } else { "in flight" }
    )]
    CallerOverloaded {
        /// The configuration key of the limit reached.
        limit: &'static str,
        /// Its value.
        max: usize,
    },
    /// This caller is over its rate (`server.per_caller_rate`).
    #[error(
        "server.per_caller_rate: this caller is over {calls_per_second} calls a second (bursts of {burst}); retry in {} ms",
        retry_after.as_millis().max(1)
    )]
    RateLimited {
        /// When the caller's next call would be let through.
        retry_after: Duration,
        /// The configured rate.
        calls_per_second: u32,
        /// The configured burst.
        burst: u32,
    },
    /// The caller cancelled or its deadline passed while the call waited (for a slot, or for a
    /// role session); nothing was forwarded for it.
    #[error("the caller went away before the call was forwarded; nothing was forwarded")]
    CallerGone,
    /// The caller's deadline passed.
    #[error("the call's deadline passed before Redshift answered")]
    DeadlineExceeded,
    /// Too little of the caller's deadline was left to start the call; nothing was forwarded.
    #[error(
        "less than {} ms of the call's deadline remained; nothing was forwarded",
        min_remaining.as_millis()
    )]
    NotEnoughTime {
        /// The least time a call must have left (`upstream.min_remaining_deadline_ms`).
        min_remaining: Duration,
    },
    /// Redshift (or the way to it) failed.
    #[error("{}", describe_upstream(.fault))]
    Upstream {
        /// What failed.
        fault: UpstreamFault,
        /// Redshift's request id, when it answered.
        aws_request_id: Option<String>,
    },
    /// Policy permits the call only with approvals it does not have (yet): nothing was forwarded.
    #[error(
        "this request needs {required_approvals} approval(s) by another principal before it is carried out{}",
        approval_id.as_ref().map(|id| format!("; approval {id} is pending: ask an approver, then send the same request again")).unwrap_or_default()
    )]
    ApprovalRequired {
        /// The pending approval of this exact request (none for `validate_only`, which creates
        /// nothing, when there is none yet).
        approval_id: Option<String>,
        /// The approvals policy requires.
        required_approvals: u32,
        /// The valid approvals the request has.
        approvals: u32,
    },
    /// The approval of this exact request was denied; it stands until it expires.
    #[error("approval {approval_id} of this request was denied")]
    ApprovalDenied {
        /// The denied approval.
        approval_id: String,
    },
    /// No approval has this id.
    #[error("no approval {approval_id}")]
    ApprovalNotFound {
        /// The id asked for.
        approval_id: String,
    },
    /// The approval is no longer open for review (it was denied, consumed or has expired).
    #[error(
        "approval {approval_id} is {state} and can no longer be {verb}; only a PENDING or APPROVED approval can be"
    )]
    ApprovalClosed {
        /// The approval.
        approval_id: String,
        /// What the reviewer tried: `approved` or `denied`.
        verb: &'static str,
        /// Its state, as stored (`DENIED`, `CONSUMED`, `EXPIRED`).
        state: &'static str,
    },
    /// The requester tried to approve their own request.
    #[error("the requester cannot approve their own request")]
    SelfApproval,
    /// This principal already approved or denied the approval; one principal counts once.
    #[error("{principal} already reviewed approval {approval_id}; a principal counts once")]
    AlreadyReviewed {
        /// The approval.
        approval_id: String,
        /// The reviewer.
        principal: String,
    },
    /// Too many approvals are pending, of this requester or in all: no new one is made until
    /// some are reviewed, spent or expire.
    #[error(
        "{limit} = {max}: that many approvals are already pending{}; no new approval is made until some are reviewed or expire",
        if *limit == "approvals.max_pending_per_requester" { " for this requester" } else { " in all" }
    )]
    TooManyPendingApprovals {
        /// The configuration key of the limit reached.
        limit: &'static str,
        /// Its value.
        max: u32,
    },
    /// The approvals store cannot be reached or failed: calls that need it are refused.
    #[error("the approvals store is unavailable; the call was not completed")]
    ApprovalsUnavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The gateway shut down before the call ended (the grace period ran out).
    #[error("the gateway shut down before the call ended; check the outcome before retrying")]
    AbortedAtShutdown,
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
    let service = fault.service.name();
    match (fault.kind, &fault.aws_code, &fault.message) {
        (FaultKind::Throttled, _, _) => {
            format!("{service} is throttling requests; retry after the suggested delay")
        }
        (FaultKind::RegionDisabled, _, region) => format!(
            "STS is not activated in region {} for the consumer account: activate it in the account's IAM settings (Security Token Service regions)",
            region.as_deref().unwrap_or("(unknown)")
        ),
        (FaultKind::CredentialsRejected, _, _) => {
            "the gateway's own AWS credentials were rejected; this is not the caller's fault".into()
        }
        (FaultKind::AssumeRoleDenied, _, _) => {
            "STS refused the gateway's role session in the consumer account; this is not the caller's fault".into()
        }
        (FaultKind::SessionExpired, _, _) => {
            "the role session in the consumer account expired; retry later".into()
        }
        (FaultKind::Timeout, _, _) => format!("{service} did not answer in time"),
        (FaultKind::Unreachable, _, _) => format!("{service} could not be reached"),
        (FaultKind::ServiceFailure, _, _) if fault.service == AwsService::Sts => {
            "STS failed on its side; nothing was sent to Redshift".into()
        }
        (FaultKind::Unknown, _, _) if fault.service == AwsService::Sts => {
            "STS's answer could not be understood; nothing was sent to Redshift".into()
        }
        (FaultKind::Unknown, _, _) => {
            "Redshift's answer could not be understood; the outcome is unknown".into()
        }
        (_, Some(code), Some(message)) => format!("{service}: {code}: {message}"),
        (_, Some(code), None) => format!("{service}: {code}"),
        (kind, None, _) => format!("{service}: {}", kind.default_reason()),
    }
}

impl GatewayError {
    /// The `ErrorInfo` reason: the AWS error code for Redshift faults, else the gateway's own.
    pub fn reason(&self) -> String {
        match self {
            GatewayError::InvalidArgument(_) => "INVALID_REQUEST".into(),
            GatewayError::Unauthenticated(_) => "UNAUTHENTICATED".into(),
            GatewayError::PolicyDenied { .. } => "POLICY_DENIED".into(),
            GatewayError::AuditUnavailable(_) => "AUDIT_UNAVAILABLE".into(),
            GatewayError::AccountNotConfigured { .. } => "ACCOUNT_NOT_CONFIGURED".into(),
            GatewayError::Overloaded => "OVERLOADED".into(),
            GatewayError::CallerOverloaded { .. } => "CALLER_OVERLOADED".into(),
            GatewayError::RateLimited { .. } => "CALLER_RATE_LIMITED".into(),
            GatewayError::CallerGone => "CALLER_GONE".into(),
            GatewayError::TooManyPendingApprovals { .. } => "TOO_MANY_PENDING_APPROVALS".into(),
            GatewayError::DeadlineExceeded => "DEADLINE_EXCEEDED".into(),
            GatewayError::NotEnoughTime { .. } => "DEADLINE_TOO_SHORT".into(),
            // These are the gateway's own diagnoses; the AWS code stays in the metadata.
            GatewayError::Upstream { fault, .. } if fault.service == AwsService::Sts => {
                fault.kind.sts_reason().into()
            }
            GatewayError::Upstream { fault, .. }
                if matches!(
                    fault.kind,
                    FaultKind::AssumeRoleDenied | FaultKind::SessionExpired
                ) =>
            {
                fault.kind.default_reason().into()
            }
            GatewayError::Upstream { fault, .. } => fault
                .aws_code
                .clone()
                .unwrap_or_else(|| fault.kind.default_reason().into()),
            GatewayError::ApprovalRequired { .. } => "APPROVAL_REQUIRED".into(),
            GatewayError::ApprovalDenied { .. } => "APPROVAL_DENIED".into(),
            GatewayError::ApprovalNotFound { .. } => "APPROVAL_NOT_FOUND".into(),
            GatewayError::ApprovalClosed { .. } => "APPROVAL_CLOSED".into(),
            GatewayError::SelfApproval => "SELF_APPROVAL".into(),
            GatewayError::AlreadyReviewed { .. } => "ALREADY_REVIEWED".into(),
            GatewayError::ApprovalsUnavailable(_) => "APPROVALS_UNAVAILABLE".into(),
            GatewayError::AbortedAtShutdown => "ABORTED_AT_SHUTDOWN".into(),
            GatewayError::Internal(_) => "INTERNAL".into(),
        }
    }

    /// The AWS error code, for Redshift faults that carry one.
    pub fn aws_error_code(&self) -> Option<&str> {
        match self {
            GatewayError::Upstream { fault, .. } => fault.aws_code.as_deref(),
            _ => None,
        }
    }
}

/// An error and its causes on one line: "cannot read x.cedar: Permission denied (os error 13)".
pub fn with_causes(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upstream_reason_is_the_aws_code_or_the_kinds_own() {
        let coded = GatewayError::Upstream {
            fault: UpstreamFault {
                aws_code: Some("Throttling".into()),
                ..UpstreamFault::of_kind(FaultKind::Throttled)
            },
            aws_request_id: None,
        };
        assert_eq!(coded.reason(), "Throttling");
        let bare = GatewayError::Upstream {
            fault: UpstreamFault::of_kind(FaultKind::Timeout),
            aws_request_id: None,
        };
        assert_eq!(bare.reason(), "UPSTREAM_TIMEOUT");
        assert_eq!(bare.aws_error_code(), None);
    }

    #[test]
    fn every_violation_is_in_the_message() {
        let err = GatewayError::InvalidArgument(vec![
            FieldViolation {
                field: "data_share_arn",
                description: "must not be empty".into(),
            },
            FieldViolation {
                field: "page_size",
                description: "must not be negative".into(),
            },
        ]);
        assert_eq!(
            err.to_string(),
            "invalid request: data_share_arn: must not be empty; page_size: must not be negative"
        );
    }
}
