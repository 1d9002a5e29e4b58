//! The fault-to-status table the README shows, rendered from the mapping itself: the outcomes
//! `upstream` classifies into each fault kind, and the gRPC status `status` gives each kind and
//! each of the gateway's own errors. It sits apart from both so that neither imports the other.

use std::time::Duration;

use crate::errors::{AwsService, FaultKind, GatewayError};
use crate::status::{code_name, code_of, fault_code};
use crate::upstream;

/// One row of the fault-to-status table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultRow {
    /// What happened.
    pub what: String,
    /// The status the caller gets (with the details it carries).
    pub status: String,
    /// The `ErrorInfo` reason.
    pub reason: String,
    /// Whether and when to retry.
    pub retry: &'static str,
}

/// The whole table: the gateway's own refusals, then every Redshift fault kind with the AWS
/// outcomes `upstream` classifies as that kind.
pub fn rows() -> Vec<FaultRow> {
    let own = |what: &str, err: GatewayError, extra: &str, retry| FaultRow {
        what: what.into(),
        status: format!("`{}`{extra}", code_name(code_of(&err))),
        reason: format!("`{}`", err.reason()),
        retry,
    };
    let mut rows = vec![
        FaultRow {
            what: "message larger than `server.max_message_bytes`".into(),
            status: "`OUT_OF_RANGE` (refused by tonic before decoding, so not audited)".into(),
            reason: "none".into(),
            retry: "no",
        },
        FaultRow {
            what: "content type not `application/grpc` (or `+proto`)".into(),
            status: "HTTP 415 (refused before decoding, so not audited)".into(),
            reason: "none".into(),
            retry: "no: speak gRPC",
        },
        FaultRow {
            what: "request body not a valid protobuf message of its method".into(),
            status: "`INVALID_ARGUMENT` (refused before decoding into a call, so not audited; logged and counted)".into(),
            reason: "`UNDECODABLE_REQUEST`".into(),
            retry: "no: fix the client",
        },
        own(
            "invalid request",
            GatewayError::InvalidArgument(Vec::new()),
            " + `BadRequest`",
            "no: fix the fields",
        ),
        own(
            "no caller identity",
            GatewayError::Unauthenticated(String::new()),
            "",
            "no",
        ),
        own(
            "policy denies",
            GatewayError::PolicyDenied {
                determining_policies: Vec::new(),
            },
            " (metadata `determining_policies`)",
            "no",
        ),
        own(
            "audit record cannot be made durable",
            GatewayError::AuditUnavailable("".into()),
            "",
            "yes, later",
        ),
        own(
            "policy permits the call, but the gateway does not serve the consumer account",
            GatewayError::AccountNotConfigured {
                account: String::new(),
            },
            " (metadata `consumer_account`)",
            "no: ask the gateway's operators",
        ),
        own(
            "policy permits the call only with approvals of this exact request by other principals, and it has too few (nothing forwarded; a pending approval is created, or the caller's own pending one named)",
            GatewayError::ApprovalRequired {
                approval_id: None,
                required_approvals: 0,
                approvals: 0,
            },
            " + `PreconditionFailure` (metadata `approval_id`, `required_approvals`, `approvals`)",
            "after an approver approves: send the same request again",
        ),
        own(
            "the approval of this exact request was denied (until it expires)",
            GatewayError::ApprovalDenied {
                approval_id: String::new(),
            },
            " + `PreconditionFailure` (metadata `approval_id`)",
            "no; after it expires a new request asks again",
        ),
        own(
            "`Approvals`: no approval with this id",
            GatewayError::ApprovalNotFound {
                approval_id: String::new(),
            },
            "",
            "no",
        ),
        own(
            "`Approvals`: approving or denying an approval that was denied, consumed or has expired",
            GatewayError::ApprovalClosed {
                approval_id: String::new(),
                verb: "approved",
                state: "EXPIRED",
            },
            " + `PreconditionFailure` (metadata `state`)",
            "no",
        ),
        own(
            "`Approvals`: the requester approving their own request",
            GatewayError::SelfApproval,
            "",
            "no: another principal must approve",
        ),
        own(
            "`Approvals`: a principal approving or denying twice",
            GatewayError::AlreadyReviewed {
                approval_id: String::new(),
                principal: String::new(),
            },
            "",
            "no: one principal counts once",
        ),
        own(
            "a request needs a new approval, but its requester has `approvals.max_pending_per_requester` pending (or all have `approvals.max_pending`); nothing is stored or forwarded",
            GatewayError::TooManyPendingApprovals {
                limit: "approvals.max_pending_per_requester",
                max: 0,
            },
            " + `QuotaFailure` (metadata `limit`: the key)",
            "after some are reviewed or expire",
        ),
        own(
            "the approvals store cannot be reached (a call that needs it is refused; fail closed)",
            GatewayError::ApprovalsUnavailable("".into()),
            "",
            "yes, later",
        ),
        own(
            "the gateway shut down before the call ended (grace period over; recorded as such)",
            GatewayError::AbortedAtShutdown,
            "",
            "check the outcome first (list the datashare): Redshift may have acted",
        ),
        own(
            "gateway at its concurrency limit",
            GatewayError::Overloaded,
            " + `RetryInfo`",
            "yes, with backoff",
        ),
        own(
            "this caller holds its `server.per_caller_concurrency` share and its call waited `server.queue_timeout_ms`, or it has `server.per_caller_queue` calls waiting (other callers are still served)",
            GatewayError::CallerOverloaded {
                limit: "server.per_caller_concurrency",
                max: 0,
            },
            " + `RetryInfo` + `QuotaFailure` (metadata `limit`: the key)",
            "yes, with backoff: fewer calls at once",
        ),
        own(
            "this caller is over `server.per_caller_rate` (checked right after identity)",
            GatewayError::RateLimited {
                retry_after: Duration::ZERO,
                calls_per_second: 0,
                burst: 0,
            },
            " + `RetryInfo` (the time until its next call is let through) + `QuotaFailure`",
            "yes, after `retry_delay`",
        ),
        own(
            "the caller cancelled or its deadline passed while its call waited for a slot or a role session (nothing forwarded; the caller sees its own cancel or deadline, the audit record this)",
            GatewayError::CallerGone,
            "",
            "caller's choice",
        ),
        own(
            "caller's `grpc-timeout` ran out",
            GatewayError::DeadlineExceeded,
            "",
            "caller's choice",
        ),
        own(
            "less than `upstream.min_remaining_deadline_ms` of the deadline left before the intent or before Redshift (nothing forwarded)",
            GatewayError::NotEnoughTime {
                min_remaining: Duration::ZERO,
            },
            "",
            "with a longer deadline",
        ),
    ];
    for rule in upstream::fault_rules() {
        let kind = rule.kind;
        let (extra, retry) = match kind {
            FaultKind::InvalidState => ("", "no: the resource is not in a state that allows it"),
            FaultKind::NotFound | FaultKind::InvalidParameter | FaultKind::Unauthorized => {
                ("", "no")
            }
            FaultKind::Throttled => (" + `RetryInfo`", "yes, after `retry_delay`"),
            FaultKind::ServiceFailure | FaultKind::Timeout | FaultKind::Unreachable => ("", "yes"),
            FaultKind::CredentialsRejected | FaultKind::AssumeRoleDenied => {
                (" (logged at error level)", "no: page the operator")
            }
            FaultKind::SessionExpired => ("", "yes"),
            FaultKind::RegionDisabled => ("", "no: page the operator"),
            FaultKind::Unknown => ("", "check state before retrying"),
        };
        let reason = match kind {
            // STS's faults have the gateway's own reasons, whatever STS's code.
            _ if rule.service == AwsService::Sts => format!("`{}`", kind.sts_reason()),
            FaultKind::Timeout
            | FaultKind::Unreachable
            | FaultKind::AssumeRoleDenied
            | FaultKind::SessionExpired => format!("`{}`", kind.default_reason()),
            _ => format!("the AWS code, else `{}`", kind.default_reason()),
        };
        rows.push(FaultRow {
            what: rule.outcome,
            status: format!("`{}`{extra}", code_name(fault_code(kind))),
            reason,
            retry,
        });
    }
    rows
}

/// The table as the README shows it (Markdown).
pub fn markdown() -> String {
    let mut out = String::from(
        "| What happened | gRPC status | ErrorInfo reason | Retry? |\n|---|---|---|---|\n",
    );
    for row in rows() {
        out.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            row.what, row.status, row.reason, row.retry
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fault_kind_is_in_the_table() {
        let table = markdown();
        for kind in FaultKind::ALL {
            let status = format!("`{}`", code_name(fault_code(kind)));
            assert!(
                table.contains(&status),
                "{kind:?} ({status}) missing from the table"
            );
            assert!(
                upstream::fault_rules().iter().any(|r| r.kind == kind),
                "no upstream rule yields {kind:?}"
            );
        }
    }

    /// The README shows the table rendered from this mapping; they cannot drift apart.
    #[test]
    fn the_readme_fault_table_is_rendered_from_this_mapping() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
            .expect("README.md");
        const BEGIN: &str = "<!-- fault-table:begin (generated from src/fault_table.rs) -->\n";
        const END: &str = "<!-- fault-table:end -->";
        let start = readme
            .find(BEGIN)
            .expect("the README's fault table markers")
            + BEGIN.len();
        let end = readme[start..].find(END).expect("the end marker") + start;
        let expected = markdown();
        assert!(
            readme[start..end] == expected,
            "README.md's fault table differs from the mapping (src/fault_table.rs); replace it with:\n{expected}"
        );
    }
}
