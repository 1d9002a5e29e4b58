//! The innermost service of the Approvals operations: where Redshift is for the DataSharing
//! ones, the approvals store is for these.

use std::sync::Arc;
use std::task::{Context, Poll};

use tower::Service;

use super::ClearedCall;
use super::ops::{ApprovalPage, ApprovalRequest, Approve, Deny, GetApproval, ListApprovals};
use super::{ApprovalRecord, Approvals, ReviewVerdict};
use crate::call::{ApprovalResource, CallFuture, Operation, Principal};
use crate::errors::GatewayError;

/// Whether policy lets a principal see one approval (Cedar `GetApproval`): what a listing
/// shows. Implemented by the policy set.
pub trait ReadPolicy: Send + Sync + std::fmt::Debug {
    /// True when `principal` may see `approval`.
    fn may_read(&self, principal: &Principal, approval: &ApprovalResource) -> bool;
}

/// Whether `principal` may read `approval`: what policy says of a GetApproval of it.
impl ReadPolicy for crate::policy::Policies {
    fn may_read(&self, principal: &Principal, approval: &ApprovalResource) -> bool {
        use super::ops::GetApproval;
        let facts = crate::call::ApprovalFacts {
            subject: Some(approval.clone()),
            ..crate::call::ApprovalFacts::default()
        };
        let request = super::ops::ApprovalRequest {
            approval_id: approval.id.clone(),
            comment: String::new(),
        };
        self.evaluate_with::<GetApproval>(principal, &request, &facts)
            .allowed
    }
}

/// The most approvals one listing call reads from the store before it answers with what it
/// found: a caller who may see few approvals among many gets short pages, not a long scan.
const MAX_SCANNED: u32 = 1_000;

/// Carries out the Approvals operations on the store.
#[derive(Clone, Debug)]
pub struct ApprovalsService {
    approvals: Approvals,
    read: Arc<dyn ReadPolicy>,
}

impl ApprovalsService {
    /// A service over `approvals`, listing what `read` lets each caller see.
    pub fn new(approvals: Approvals, read: Arc<dyn ReadPolicy>) -> Self {
        ApprovalsService { approvals, read }
    }
}

/// An operation [`ApprovalsService`] carries out.
pub trait CarryOut: Operation {
    /// Carries out a call that passed every layer.
    fn carry_out(service: &ApprovalsService, call: ClearedCall<Self>) -> CallFuture<Self::Reply>;
}

impl CarryOut for GetApproval {
    fn carry_out(
        service: &ApprovalsService,
        call: ClearedCall<Self>,
    ) -> CallFuture<ApprovalRecord> {
        let approvals = service.approvals.clone();
        Box::pin(async move {
            let id = call.stage.request().approval_id.clone();
            approvals
                .get(&id)
                .await?
                .ok_or(GatewayError::ApprovalNotFound { approval_id: id })
        })
    }
}

fn review<Op: Operation<Request = ApprovalRequest, Reply = ApprovalRecord>>(
    service: &ApprovalsService,
    call: ClearedCall<Op>,
    verdict: ReviewVerdict,
) -> CallFuture<ApprovalRecord> {
    let approvals = service.approvals.clone();
    Box::pin(async move {
        let request = call.stage.request();
        approvals
            .review(
                &request.approval_id,
                &call.stage.principal().id,
                verdict,
                &request.comment,
                &call.ctx.request_id,
            )
            .await
    })
}

impl CarryOut for Approve {
    fn carry_out(
        service: &ApprovalsService,
        call: ClearedCall<Self>,
    ) -> CallFuture<ApprovalRecord> {
        review(service, call, Approve::VERDICT)
    }
}

impl CarryOut for Deny {
    fn carry_out(
        service: &ApprovalsService,
        call: ClearedCall<Self>,
    ) -> CallFuture<ApprovalRecord> {
        review(service, call, Deny::VERDICT)
    }
}

impl CarryOut for ListApprovals {
    fn carry_out(service: &ApprovalsService, call: ClearedCall<Self>) -> CallFuture<ApprovalPage> {
        let approvals = service.approvals.clone();
        let read = service.read.clone();
        Box::pin(async move {
            let request = call.stage.request();
            let principal = call.stage.principal();
            let want = request.page_size as usize;
            let mut page = Vec::with_capacity(want);
            let mut after = request.after.clone();
            let mut scanned = 0u32;
            let batch = request.page_size.max(1) + 1;
            let now = std::time::SystemTime::now();
            // Reads batches until the page is full, the store is exhausted or the scan bound is
            // reached; the token resumes after the last approval read.
            let next = loop {
                let rows = approvals.list(request.state, after.as_ref(), batch).await?;
                let exhausted = rows.len() < batch as usize;
                let mut last_read = None;
                let mut full = false;
                for row in rows {
                    scanned += 1;
                    let visible = read.may_read(principal, &row.resource(now));
                    last_read = Some(row.clone());
                    if visible {
                        page.push(row);
                        if page.len() == want {
                            full = true;
                            break;
                        }
                    }
                }
                match last_read {
                    None => break None,
                    Some(last) if full => {
                        // More may follow: only a look tells, and an empty last page is fine.
                        let more = !exhausted
                            || !approvals
                                .list(request.state, Some(&cursor_of(&last)), 1)
                                .await?
                                .is_empty();
                        break more.then(|| request.next_page_token(&last));
                    }
                    Some(_) if exhausted => break None,
                    Some(last) if scanned >= MAX_SCANNED => {
                        break Some(request.next_page_token(&last));
                    }
                    Some(last) => after = Some(cursor_of(&last)),
                }
            };
            Ok(ApprovalPage {
                approvals: page,
                next_page_token: next.unwrap_or_default(),
            })
        })
    }
}

fn cursor_of(record: &ApprovalRecord) -> super::store::Cursor {
    super::store::Cursor {
        created_at_ms: super::store::to_ms(record.created_at),
        id: record.id.clone(),
    }
}

impl<Op: CarryOut> Service<ClearedCall<Op>> for ApprovalsService {
    type Response = Op::Reply;
    type Error = GatewayError;
    type Future = CallFuture<Op::Reply>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The store's pool waits for a connection itself, within its acquire timeout.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: ClearedCall<Op>) -> Self::Future {
        Op::carry_out(self, call)
    }
}
