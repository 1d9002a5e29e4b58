//! The `datasharing.v1.Approvals` operations: GetApproval, ListApprovals, Approve, Deny. Each is
//! an [`Operation`] on the same stack as every call; [`super::ApprovalsService`] carries them out.

use std::time::SystemTime;

use crate::arn::AccountId;
use crate::call::{
    ApprovalFacts, ApprovalResource, ApprovalRole, ApprovalState, ContextValue, Decision,
    FieldValue, Operation, PolicyInput, PolicyResource, RequestField, SemanticRequest,
    ValidationEnv,
};
use crate::errors::FieldViolation;
use crate::ops::{Rpc, page_token, plain_text};
use crate::proto::datasharing::v1 as pb;

use super::store::Cursor;
use super::{ApprovalRecord, ReviewVerdict};

/// The gRPC service of these operations.
pub const SERVICE: &str = "datasharing.v1.Approvals";
/// The longest review comment, in characters.
pub const MAX_COMMENT_CHARS: usize = 1024;
/// A listing page when the caller asks for none.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// The largest listing page.
pub const MAX_PAGE_SIZE: u32 = 100;

/// `GetApproval`.
#[derive(Clone, Copy, Debug)]
pub struct GetApproval;
/// `ListApprovals`.
#[derive(Clone, Copy, Debug)]
pub struct ListApprovals;
/// `Approve`.
#[derive(Clone, Copy, Debug)]
pub struct Approve;
/// `Deny`.
#[derive(Clone, Copy, Debug)]
pub struct Deny;

/// GetApproval's parameters as sent.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct GetParams {
    pub approval_id: String,
}

/// Approve's and Deny's parameters as sent.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReviewParams {
    pub approval_id: String,
    pub comment: String,
}

/// ListApprovals' parameters as sent.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ListApprovalsParams {
    /// The `ApprovalState` enum value, as sent.
    pub state: i32,
    pub page_size: i32,
    pub page_token: String,
}

/// A validated request about one approval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApprovalRequest {
    /// The approval's id, as the store spells it (a lower-case UUID).
    pub approval_id: String,
    /// The reviewer's comment (empty for GetApproval).
    pub comment: String,
}

/// A validated ListApprovals request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListApprovalsRequest {
    /// Only this state.
    pub state: Option<ApprovalState>,
    /// 1 to [`MAX_PAGE_SIZE`].
    pub page_size: u32,
    /// Where the page starts, from the page token.
    pub(crate) after: Option<Cursor>,
    fingerprint: String,
}

impl ListApprovalsRequest {
    /// The token of the page after the approval `last`, listed last on this page.
    pub(crate) fn next_page_token(&self, last: &ApprovalRecord) -> String {
        let marker = format!("{}:{}", super::store::to_ms(last.created_at), last.id);
        page_token::encode(&marker, &self.fingerprint)
    }
}

/// One page of approvals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApprovalPage {
    pub approvals: Vec<ApprovalRecord>,
    /// Empty on the last page.
    pub next_page_token: String,
}

fn approval_id(value: &str, violations: &mut Vec<FieldViolation>) -> Option<String> {
    if value.is_empty() {
        violations.push(FieldViolation {
            field: "approval_id",
            description: "required: the approval's id (ErrorInfo metadata approval_id of an APPROVAL_REQUIRED error)".into(),
        });
        return None;
    }
    match uuid::Uuid::parse_str(value) {
        Ok(id) => Some(id.hyphenated().to_string()),
        Err(_) => {
            violations.push(FieldViolation {
                field: "approval_id",
                description:
                    "must be an approval id: a UUID such as 3f2c6f1e-8a4b-4c1d-9e7f-0a1b2c3d4e5f"
                        .into(),
            });
            None
        }
    }
}

fn validate_about(id: &str, comment: &str) -> Result<ApprovalRequest, Vec<FieldViolation>> {
    let mut violations = Vec::new();
    if !plain_text(
        &[("approval_id", id), ("comment", comment)],
        &mut violations,
    ) {
        return Err(violations);
    }
    if comment.chars().count() > MAX_COMMENT_CHARS {
        violations.push(FieldViolation {
            field: "comment",
            description: format!("at most {MAX_COMMENT_CHARS} characters"),
        });
    }
    let approval_id = approval_id(id, &mut violations);
    match approval_id {
        Some(approval_id) if violations.is_empty() => Ok(ApprovalRequest {
            approval_id,
            comment: comment.to_owned(),
        }),
        _ => Err(violations),
    }
}

/// The policy input of a call about one approval: the approval as the resource (looked up by
/// `FindApprovals` before policy; an unknown one never reaches policy).
fn about_input(
    action: &'static str,
    request: &ApprovalRequest,
    facts: &ApprovalFacts,
) -> PolicyInput {
    let resource = facts.subject.clone().unwrap_or_else(|| ApprovalResource {
        id: request.approval_id.clone(),
        requester: String::new(),
        request: sample_semantic_request(),
        required_approvals: 0,
        state: ApprovalState::Expired,
    });
    PolicyInput {
        action,
        resource: PolicyResource::Approval(resource),
        context: Vec::new(),
    }
}

fn sample_semantic_request() -> SemanticRequest {
    SemanticRequest {
        method: "AssociateConsumer",
        fields: vec![
            RequestField::text("data_share_arn", ""),
            RequestField::text("consumer_kind", "account"),
            RequestField::text("consumer", ""),
            RequestField::text("consumer_account", ""),
            RequestField::flag("allow_writes", false),
        ],
    }
}

/// A sample approval for the policy loader's schema probe.
pub fn sample_facts() -> ApprovalFacts {
    ApprovalFacts {
        subject: Some(ApprovalResource {
            id: "00000000-0000-4000-8000-000000000000".into(),
            requester: "probe".into(),
            request: sample_semantic_request(),
            required_approvals: 1,
            state: ApprovalState::Pending,
        }),
        ..ApprovalFacts::default()
    }
}

fn sample_about() -> ApprovalRequest {
    ApprovalRequest {
        approval_id: "00000000-0000-4000-8000-000000000000".into(),
        comment: String::new(),
    }
}

/// The operations about one approval share everything but their names and what they do.
macro_rules! about_one_approval {
    ($op:ty, $method:literal, $changes:literal, $params:ty, $reply:ty) => {
        impl Operation for $op {
            const METHOD: &'static str = $method;
            const CHANGES_STATE: bool = $changes;
            type Params = $params;
            type Request = ApprovalRequest;
            type Reply = $reply;

            fn validate(
                params: &$params,
                _env: &ValidationEnv,
            ) -> Result<ApprovalRequest, Vec<FieldViolation>> {
                validate_about(&params.approval_id, params_comment(params))
            }

            fn consumer_account(_request: &ApprovalRequest) -> Option<&AccountId> {
                None
            }

            fn policy_input(request: &ApprovalRequest, facts: &ApprovalFacts) -> PolicyInput {
                about_input(Self::METHOD, request, facts)
            }

            fn approval_role(request: &ApprovalRequest) -> ApprovalRole<'_> {
                ApprovalRole::Reviews(&request.approval_id)
            }

            fn validation_reply(
                _request: &ApprovalRequest,
                _decision: &Decision,
            ) -> Option<$reply> {
                None
            }

            fn sample_request() -> ApprovalRequest {
                sample_about()
            }
        }
    };
}

fn params_comment<P: HasComment>(params: &P) -> &str {
    params.comment()
}

/// The comment of a call's parameters (none for GetApproval).
trait HasComment {
    fn comment(&self) -> &str;
}

impl HasComment for GetParams {
    fn comment(&self) -> &str {
        ""
    }
}

impl HasComment for ReviewParams {
    fn comment(&self) -> &str {
        &self.comment
    }
}

about_one_approval!(GetApproval, "GetApproval", false, GetParams, ApprovalRecord);
// Approving and denying change the gateway's state: their intent is durable first.
about_one_approval!(Approve, "Approve", true, ReviewParams, ApprovalRecord);
about_one_approval!(Deny, "Deny", true, ReviewParams, ApprovalRecord);

impl Approve {
    /// The verdict an Approve call gives.
    pub const VERDICT: ReviewVerdict = ReviewVerdict::Approve;
}

impl Deny {
    /// The verdict a Deny call gives.
    pub const VERDICT: ReviewVerdict = ReviewVerdict::Deny;
}

fn state_from_proto(value: i32) -> Result<Option<ApprovalState>, ()> {
    match pb::ApprovalState::try_from(value) {
        Ok(pb::ApprovalState::Unspecified) => Ok(None),
        Ok(pb::ApprovalState::Pending) => Ok(Some(ApprovalState::Pending)),
        Ok(pb::ApprovalState::Approved) => Ok(Some(ApprovalState::Approved)),
        Ok(pb::ApprovalState::Denied) => Ok(Some(ApprovalState::Denied)),
        Ok(pb::ApprovalState::Consumed) => Ok(Some(ApprovalState::Consumed)),
        Ok(pb::ApprovalState::Expired) => Ok(Some(ApprovalState::Expired)),
        Err(_) => Err(()),
    }
}

fn state_to_proto(state: ApprovalState) -> pb::ApprovalState {
    match state {
        ApprovalState::Pending => pb::ApprovalState::Pending,
        ApprovalState::Approved => pb::ApprovalState::Approved,
        ApprovalState::Denied => pb::ApprovalState::Denied,
        ApprovalState::Consumed => pb::ApprovalState::Consumed,
        ApprovalState::Expired => pb::ApprovalState::Expired,
    }
}

impl Operation for ListApprovals {
    const METHOD: &'static str = "ListApprovals";
    const CHANGES_STATE: bool = false;
    type Params = ListApprovalsParams;
    type Request = ListApprovalsRequest;
    type Reply = ApprovalPage;

    fn validate(
        params: &ListApprovalsParams,
        _env: &ValidationEnv,
    ) -> Result<ListApprovalsRequest, Vec<FieldViolation>> {
        let mut violations = Vec::new();
        if !plain_text(&[("page_token", &params.page_token)], &mut violations) {
            return Err(violations);
        }
        let state = state_from_proto(params.state).unwrap_or_else(|()| {
            violations.push(FieldViolation {
                field: "state",
                description: "must be an ApprovalState, or unset for every state".into(),
            });
            None
        });
        let page_size = match params.page_size {
            size if size < 0 => {
                violations.push(FieldViolation {
                    field: "page_size",
                    description: "must not be negative".into(),
                });
                DEFAULT_PAGE_SIZE
            }
            0 => DEFAULT_PAGE_SIZE,
            size => u32::try_from(size)
                .unwrap_or(MAX_PAGE_SIZE)
                .min(MAX_PAGE_SIZE),
        };
        let fingerprint =
            page_token::approvals_fingerprint(state.map_or("", ApprovalState::as_str));
        let after = if params.page_token.is_empty() {
            None
        } else {
            let cursor = page_token::decode(&params.page_token, &fingerprint)
                .map_err(|err| err.to_string())
                .and_then(|marker| {
                    let (created, id) = marker
                        .split_once(':')
                        .ok_or_else(|| "not a page token of ListApprovals".to_owned())?;
                    let created_at_ms = created
                        .parse()
                        .map_err(|_| "not a page token of ListApprovals".to_owned())?;
                    Ok(Cursor {
                        created_at_ms,
                        id: id.to_owned(),
                    })
                });
            match cursor {
                Ok(cursor) => Some(cursor),
                Err(description) => {
                    violations.push(FieldViolation {
                        field: "page_token",
                        description,
                    });
                    None
                }
            }
        };
        if !violations.is_empty() {
            return Err(violations);
        }
        Ok(ListApprovalsRequest {
            state,
            page_size,
            after,
            fingerprint,
        })
    }

    fn consumer_account(_request: &ListApprovalsRequest) -> Option<&AccountId> {
        None
    }

    fn policy_input(request: &ListApprovalsRequest, _facts: &ApprovalFacts) -> PolicyInput {
        PolicyInput {
            action: Self::METHOD,
            resource: PolicyResource::ApprovalList,
            context: vec![(
                "state",
                ContextValue::String(request.state.map_or("", ApprovalState::as_str).into()),
            )],
        }
    }

    fn validation_reply(
        _request: &ListApprovalsRequest,
        _decision: &Decision,
    ) -> Option<ApprovalPage> {
        None
    }

    fn sample_request() -> ListApprovalsRequest {
        ListApprovalsRequest {
            state: Some(ApprovalState::Pending),
            page_size: DEFAULT_PAGE_SIZE,
            after: None,
            fingerprint: page_token::approvals_fingerprint("PENDING"),
        }
    }
}

/// An approved request as the API shows it: an association's fields by name, and every field.
fn approved_request(request: &SemanticRequest) -> pb::ApprovedRequest {
    use pb::approved_request_field::Value;
    pb::ApprovedRequest {
        data_share_arn: request.text("data_share_arn").to_owned(),
        consumer_kind: request.text("consumer_kind").to_owned(),
        consumer: request.text("consumer").to_owned(),
        consumer_account: request.text("consumer_account").to_owned(),
        allow_writes: request.flag("allow_writes"),
        fields: request
            .fields
            .iter()
            .map(|field| pb::ApprovedRequestField {
                name: field.name.clone(),
                value: Some(match &field.value {
                    FieldValue::Text(text) => Value::Text(text.clone()),
                    FieldValue::Flag(flag) => Value::Flag(*flag),
                }),
            })
            .collect(),
    }
}

/// An approval as the API shows it, at `now`.
pub fn approval_message(record: ApprovalRecord, now: SystemTime) -> pb::Approval {
    let state = state_to_proto(record.state_at(now)) as i32;
    let review = |r: &super::Review| pb::ApprovalReview {
        principal: r.principal.clone(),
        time: Some(prost_types::Timestamp::from(r.at)),
        comment: r.comment.clone(),
    };
    pb::Approval {
        approval_id: record.id.clone(),
        state,
        requester: record.requester.clone(),
        method: record.request.method.to_owned(),
        request: Some(approved_request(&record.request)),
        request_digest: record.digest.clone(),
        required_approvals: i32::try_from(record.required_approvals).unwrap_or(i32::MAX),
        approvals: record
            .reviews
            .iter()
            .filter(|r| r.verdict == ReviewVerdict::Approve)
            .map(review)
            .collect(),
        denials: record
            .reviews
            .iter()
            .filter(|r| r.verdict == ReviewVerdict::Deny)
            .map(review)
            .collect(),
        create_time: Some(prost_types::Timestamp::from(record.created_at)),
        expire_time: Some(prost_types::Timestamp::from(record.expires_at)),
        consume_time: record.consumed_at.map(prost_types::Timestamp::from),
        consumed_by_request_id: record.consumed_by_request_id.unwrap_or_default(),
    }
}

impl Rpc for GetApproval {
    const SERVICE: &'static str = SERVICE;
    type Message = pb::GetApprovalRequest;
    type Response = pb::GetApprovalResponse;

    fn params(message: pb::GetApprovalRequest) -> GetParams {
        GetParams {
            approval_id: message.approval_id,
        }
    }

    fn response(reply: ApprovalRecord) -> pb::GetApprovalResponse {
        pb::GetApprovalResponse {
            approval: Some(approval_message(reply, SystemTime::now())),
        }
    }
}

impl Rpc for Approve {
    const SERVICE: &'static str = SERVICE;
    type Message = pb::ApproveRequest;
    type Response = pb::ApproveResponse;

    fn params(message: pb::ApproveRequest) -> ReviewParams {
        ReviewParams {
            approval_id: message.approval_id,
            comment: message.comment,
        }
    }

    fn response(reply: ApprovalRecord) -> pb::ApproveResponse {
        pb::ApproveResponse {
            approval: Some(approval_message(reply, SystemTime::now())),
        }
    }
}

impl Rpc for Deny {
    const SERVICE: &'static str = SERVICE;
    type Message = pb::DenyRequest;
    type Response = pb::DenyResponse;

    fn params(message: pb::DenyRequest) -> ReviewParams {
        ReviewParams {
            approval_id: message.approval_id,
            comment: message.comment,
        }
    }

    fn response(reply: ApprovalRecord) -> pb::DenyResponse {
        pb::DenyResponse {
            approval: Some(approval_message(reply, SystemTime::now())),
        }
    }
}

impl Rpc for ListApprovals {
    const SERVICE: &'static str = SERVICE;
    type Message = pb::ListApprovalsRequest;
    type Response = pb::ListApprovalsResponse;

    fn params(message: pb::ListApprovalsRequest) -> ListApprovalsParams {
        ListApprovalsParams {
            state: message.state,
            page_size: message.page_size,
            page_token: message.page_token,
        }
    }

    fn response(reply: ApprovalPage) -> pb::ListApprovalsResponse {
        let now = SystemTime::now();
        pb::ListApprovalsResponse {
            approvals: reply
                .approvals
                .into_iter()
                .map(|a| approval_message(a, now))
                .collect(),
            next_page_token: reply.next_page_token,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_approval_id_is_a_uuid_and_comments_are_bounded_plain_text() {
        let ok = validate_about("3F2C6F1E-8A4B-4C1D-9E7F-0A1B2C3D4E5F", "looks right").unwrap();
        assert_eq!(ok.approval_id, "3f2c6f1e-8a4b-4c1d-9e7f-0a1b2c3d4e5f");
        let fields = |r: Result<ApprovalRequest, Vec<FieldViolation>>| {
            r.unwrap_err()
                .into_iter()
                .map(|v| v.field)
                .collect::<Vec<_>>()
        };
        assert_eq!(fields(validate_about("", "")), ["approval_id"]);
        assert_eq!(fields(validate_about("nope", "")), ["approval_id"]);
        assert_eq!(
            fields(validate_about(
                "3f2c6f1e-8a4b-4c1d-9e7f-0a1b2c3d4e5f",
                &"x".repeat(1025)
            )),
            ["comment"]
        );
        assert_eq!(
            fields(validate_about(
                "3f2c6f1e-8a4b-4c1d-9e7f-0a1b2c3d4e5f",
                "a\u{202e}b"
            )),
            ["comment"]
        );
    }

    #[test]
    fn a_list_token_is_bound_to_its_state_filter() {
        let env = ValidationEnv::default();
        let pending = ListApprovalsParams {
            state: pb::ApprovalState::Pending as i32,
            ..Default::default()
        };
        let first = ListApprovals::validate(&pending, &env).unwrap();
        assert_eq!(first.page_size, DEFAULT_PAGE_SIZE);
        let record = ApprovalRecord {
            id: "3f2c6f1e-8a4b-4c1d-9e7f-0a1b2c3d4e5f".into(),
            requester: "r".into(),
            request: sample_semantic_request(),
            digest: String::new(),
            required_approvals: 1,
            stored_state: ApprovalState::Pending,
            created_at: SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1234),
            expires_at: SystemTime::UNIX_EPOCH,
            created_by_request_id: String::new(),
            consumed_at: None,
            consumed_by_request_id: None,
            reviews: Vec::new(),
        };
        let token = first.next_page_token(&record);
        let second = ListApprovals::validate(
            &ListApprovalsParams {
                page_token: token.clone(),
                ..pending.clone()
            },
            &env,
        )
        .unwrap();
        assert_eq!(
            second.after,
            Some(Cursor {
                created_at_ms: 1234,
                id: record.id.clone()
            })
        );
        let other = ListApprovals::validate(
            &ListApprovalsParams {
                page_token: token,
                state: 0,
                ..pending
            },
            &env,
        )
        .unwrap_err();
        assert_eq!(other[0].field, "page_token");
        let bad_state = ListApprovals::validate(
            &ListApprovalsParams {
                state: 42,
                ..Default::default()
            },
            &env,
        )
        .unwrap_err();
        assert_eq!(bad_state[0].field, "state");
    }
}
