//! The two approval layers of the stack: [`FindApprovals`] just before policy, [`SpendApproval`]
//! just after the write-ahead intent.

use tower::Service;

use super::Approvals;
use crate::audit::Intended;
use crate::call::{
    ApprovalNote, ApprovalRole, Call, CallFuture, Operation, Principal, Validated, ValidatedCall,
};
use crate::errors::GatewayError;
use crate::middleware::{Middleware, forward_after};

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

/// The stage of a call cleared to be carried out: permitted, its intent durable, and the
/// approval it was permitted by (if any) spent. Only [`SpendApproval`] makes one, and the
/// upstream services take only this stage.
#[derive(Clone, Debug)]
pub struct Cleared<Request> {
    intended: Intended<Request>,
    spent: Option<ApprovalNote>,
}

impl<Request> Cleared<Request> {
    /// Who is calling.
    pub fn principal(&self) -> &Principal {
        self.intended.permitted().principal()
    }

    /// The request policy permitted.
    pub fn request(&self) -> &Request {
        self.intended.permitted().request()
    }

    /// The approval the call spent, when policy permitted it only thanks to one.
    pub fn spent(&self) -> Option<&ApprovalNote> {
        self.spent.as_ref()
    }

    /// The audit sequence number of the call's intent, for a call that changes state.
    pub fn intent_seq(&self) -> Option<u64> {
        self.intended.intent_seq()
    }
}

/// A call cleared to be carried out: what the upstream services take.
pub type ClearedCall<Op> = Call<Op, Cleared<<Op as Operation>::Request>>;

/// After the write-ahead intent, which names the approval: a call policy permitted only thanks
/// to its approval consumes it by compare-and-set, and carries its id and approvers into the
/// outcome and the role session. An audit outage before the intent so leaves the approval
/// unspent. A call that loses the race to an identical one is not forwarded: its outcome notes
/// the approval another call spent (`approval_already_spent`), and it is `APPROVAL_REQUIRED`
/// ([`FindApprovals`] gives it a new pending approval).
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

impl<Op: Operation> Middleware<Op, Intended<Op::Request>> for SpendApproval {
    type Out = Cleared<Op::Request>;

    fn handle<S, F>(
        &self,
        call: Call<Op, Intended<Op::Request>>,
        mut next: S,
    ) -> CallFuture<Op::Reply>
    where
        S: Service<Call<Op, Self::Out>, Response = Op::Reply, Error = GatewayError, Future = F>
            + Send
            + 'static,
        F: std::future::Future<Output = Result<Op::Reply, GatewayError>> + Send + 'static,
    {
        let Some(live) = call.stage.permitted().approval_to_spend().cloned() else {
            return Box::pin(next.call(call.map_stage(|intended| Cleared {
                intended,
                spent: None,
            })));
        };
        let approvals = self.approvals.clone();
        forward_after(async move {
            // Policy found the approval in this store: without one, nothing could be spent.
            let Some(approvals) = approvals else {
                return Err(GatewayError::Internal(
                    "an approval to spend without an approvals store".into(),
                ));
            };
            let spent = approvals
                .consume(
                    &live,
                    &call.stage.permitted().principal().id,
                    &call.ctx.request_id,
                )
                .await?;
            let Some(record) = spent else {
                call.notes.lock().approval_already_spent = Some(live.id.clone());
                return Err(GatewayError::ApprovalRequired {
                    approval_id: None,
                    required_approvals: live.required_approvals,
                    approvals: 0,
                });
            };
            let note = ApprovalNote {
                approval_id: record.id.clone(),
                approvers: record.approvers(),
            };
            call.notes.lock().approval = Some(note.clone());
            let call = call.map_stage(|intended| Cleared {
                intended,
                spent: Some(note),
            });
            Ok(((), next.call(call)))
        })
    }
}
