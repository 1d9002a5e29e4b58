//! The two approval layers of the stack: [`FindApprovals`] just before policy, [`SpendApproval`]
//! just before the write-ahead intent.

use tower::Service;

use super::Approvals;
use crate::call::{ApprovalNote, ApprovalRole, CallFuture, Operation, Validated, ValidatedCall};
use crate::errors::GatewayError;
use crate::middleware::Middleware;

/// Before policy: a call about one approval gets the approval as its resource, or `NOT_FOUND`.
/// On the way back, a gated call refused with `APPROVAL_REQUIRED` and no approval yet gets its
/// pending approval, created once per (requester, method, digest); a `validate_only` call
/// creates nothing. (A gated call's live approval is read by the policy layer, and only when
/// policy does not permit the call without one.) Without a store (`None`, in tests of other
/// layers) none is created.
#[derive(Clone, Debug)]
pub struct FindApprovals {
    approvals: Option<Approvals>,
}

impl FindApprovals {
    /// Looks approvals up in `approvals`.
    pub fn new(approvals: Option<Approvals>) -> Self {
        FindApprovals { approvals }
    }
}

impl<Op: Operation> Middleware<Op, Validated<Op::Request>> for FindApprovals {
    type Out = Validated<Op::Request>;

    fn handle<S, F>(&self, mut call: ValidatedCall<Op>, mut next: S) -> CallFuture<Op::Reply>
    where
        S: Service<ValidatedCall<Op>, Response = Op::Reply, Error = GatewayError, Future = F>
            + Send
            + 'static,
        F: std::future::Future<Output = Result<Op::Reply, GatewayError>> + Send + 'static,
    {
        let Some(approvals) = self.approvals.clone() else {
            return Box::pin(next.call(call));
        };
        match Op::approval_role(&call.stage.request) {
            ApprovalRole::None => Box::pin(next.call(call)),
            ApprovalRole::Reviews(id) => {
                let id = id.to_owned();
                Box::pin(async move {
                    let record = approvals
                        .get(&id)
                        .await?
                        .ok_or(GatewayError::ApprovalNotFound { approval_id: id })?;
                    call.stage.approvals.subject =
                        Some(record.resource(std::time::SystemTime::now()));
                    next.call(call).await
                })
            }
            ApprovalRole::Gated {
                request,
                validate_only,
            } => {
                let requester = call.stage.principal.id.clone();
                let request_id = call.ctx.request_id.clone();
                // Calls on before the future is made (see `Middleware::handle`).
                let inner = next.call(call);
                Box::pin(async move {
                    match inner.await {
                        Err(GatewayError::ApprovalRequired {
                            approval_id: None,
                            required_approvals,
                            ..
                        }) if !validate_only => {
                            // Boxed: the store's future is large and rarely needed.
                            let record = Box::pin(approvals.require(
                                &requester,
                                &request,
                                required_approvals,
                                &request_id,
                            ))
                            .await?;
                            Err(GatewayError::ApprovalRequired {
                                approvals: u32::try_from(record.approvers().len())
                                    .unwrap_or(u32::MAX),
                                approval_id: Some(record.id),
                                required_approvals,
                            })
                        }
                        other => other,
                    }
                })
            }
        }
    }
}

/// Just before the write-ahead intent (after limits and the deadline check, so that a call shed
/// there keeps its approval): a call policy permitted only thanks to its approval consumes it
/// by compare-and-set, and carries its id and approvers into the intent, the outcome and the
/// role session. A call that loses the race to an identical one is `APPROVAL_REQUIRED` (and
/// [`FindApprovals`] gives it a new pending approval).
#[derive(Clone, Debug)]
pub struct SpendApproval {
    approvals: Option<Approvals>,
}

impl SpendApproval {
    /// Spends approvals in `approvals`.
    pub fn new(approvals: Option<Approvals>) -> Self {
        SpendApproval { approvals }
    }
}

impl<Op: Operation> Middleware<Op, Validated<Op::Request>> for SpendApproval {
    type Out = Validated<Op::Request>;

    fn handle<S, F>(&self, call: ValidatedCall<Op>, mut next: S) -> CallFuture<Op::Reply>
    where
        S: Service<ValidatedCall<Op>, Response = Op::Reply, Error = GatewayError, Future = F>
            + Send
            + 'static,
        F: std::future::Future<Output = Result<Op::Reply, GatewayError>> + Send + 'static,
    {
        if !call.stage.approvals.must_spend {
            return Box::pin(next.call(call));
        }
        let approvals = self.approvals.clone();
        Box::pin(async move {
            let (Some(approvals), Some(live)) = (approvals, call.stage.approvals.live.clone())
            else {
                return Err(GatewayError::Internal(
                    "a call to spend an approval without one".into(),
                ));
            };
            let spent = approvals
                .consume(&live, &call.stage.principal.id, &call.ctx.request_id)
                .await?;
            let Some(record) = spent else {
                return Err(GatewayError::ApprovalRequired {
                    approval_id: None,
                    required_approvals: live.required_approvals,
                    approvals: 0,
                });
            };
            call.trail.lock().approval = Some(ApprovalNote {
                approval_id: record.id.clone(),
                approvers: record.approvers(),
            });
            next.call(call).await
        })
    }
}
