//! The policy layer: evaluates each validated call and forwards only what policy allows.
//!
//! For a call that changes state in AWS, policy also decides whether it needs two-person
//! approval: a call denied as it stands (no approvals) but permitted with the approvals its live
//! approval has goes on, marked to spend that approval; one that more approvals would permit is
//! [`GatewayError::ApprovalRequired`]; one that no number of approvals would permit is
//! [`GatewayError::PolicyDenied`].

use tower::Service;

use crate::call::{
    ApprovalFacts, ApprovalRole, ApprovalState, CallFuture, Decision, Operation, Validated,
    ValidatedCall,
};
use crate::errors::GatewayError;
use crate::middleware::Middleware;
use crate::policy::Policies;

/// The most approvals the policy layer asks policy about: a call that even this many would not
/// permit is denied outright.
pub const MAX_REQUIRED_APPROVALS: u32 = 10;

/// Evaluates each call against the running policy set. Takes validated calls (it needs the
/// principal and the validated request) and sits before anything that reaches Redshift; a
/// `validate_only` call that policy permits is answered here.
#[derive(Clone, Debug)]
pub struct Authorize {
    policies: Policies,
}

impl Authorize {
    /// Evaluates against `policies` (which may be reloaded underneath).
    pub fn new(policies: Policies) -> Self {
        Authorize { policies }
    }
}

/// What policy says of a call, approvals considered.
#[derive(Debug)]
enum Verdict {
    /// Permitted; `spend` when only thanks to the live approval's approvals.
    Permit { decision: Decision, spend: bool },
    /// Denied as it stands, but this many approvals would permit it.
    NeedsApprovals { decision: Decision, required: u32 },
    /// Denied whatever the approvals.
    Deny(Decision),
}

impl Authorize {
    fn verdict<Op: Operation>(&self, call: &ValidatedCall<Op>) -> Verdict {
        let principal = &call.stage.principal;
        let request = &call.stage.request;
        let facts = &call.stage.approvals;
        // One set for every question below: a reload between two of them must not make a call
        // denied by the old set look "permitted with approvals" by the new one.
        let policies = self.policies.pinned();
        if !matches!(Op::approval_role(request), ApprovalRole::Gated { .. }) {
            let decision = policies.evaluate_with::<Op>(principal, request, facts);
            return if decision.allowed {
                Verdict::Permit {
                    decision,
                    spend: false,
                }
            } else {
                Verdict::Deny(decision)
            };
        }
        // Without approvals first: most calls need none, and must not spend one they have.
        let bare = policies.evaluate_with::<Op>(principal, request, &ApprovalFacts::default());
        if bare.allowed {
            return Verdict::Permit {
                decision: bare,
                spend: false,
            };
        }
        if facts.approvals > 0 {
            let with = policies.evaluate_with::<Op>(principal, request, facts);
            if with.allowed {
                return Verdict::Permit {
                    decision: with,
                    spend: true,
                };
            }
        }
        let required = (facts.approvals + 1..=MAX_REQUIRED_APPROVALS).find(|n| {
            policies
                .evaluate_with::<Op>(principal, request, &ApprovalFacts::with_approvals(*n))
                .allowed
        });
        match required {
            Some(required) => Verdict::NeedsApprovals {
                decision: bare,
                required,
            },
            // Named: the forbids that deny it whatever its approvals, not those approvals would
            // lift (a legal hold, not "writes need an approval").
            None => Verdict::Deny(policies.evaluate_with::<Op>(
                principal,
                request,
                &ApprovalFacts::with_approvals(MAX_REQUIRED_APPROVALS),
            )),
        }
    }
}

impl<Op: Operation> Middleware<Op, Validated<Op::Request>> for Authorize {
    type Out = Validated<Op::Request>;

    fn handle<S, F>(&self, mut call: ValidatedCall<Op>, mut next: S) -> CallFuture<Op::Reply>
    where
        S: Service<ValidatedCall<Op>, Response = Op::Reply, Error = GatewayError, Future = F>
            + Send
            + 'static,
        F: std::future::Future<Output = Result<Op::Reply, GatewayError>> + Send + 'static,
    {
        let verdict = self.verdict(&call);
        let decision = match &verdict {
            Verdict::Permit { decision, .. }
            | Verdict::NeedsApprovals { decision, .. }
            | Verdict::Deny(decision) => decision.clone(),
        };
        tracing::debug!(
            principal = %call.stage.principal.id,
            action = Op::METHOD,
            allowed = decision.allowed,
            determining_policies = ?decision.determining_policies,
            "policy decision"
        );
        call.trail.lock().decision = Some(decision.clone());
        match verdict {
            Verdict::Deny(decision) => Box::pin(async move {
                Err(GatewayError::PolicyDenied {
                    determining_policies: decision.determining_policies,
                })
            }),
            Verdict::NeedsApprovals { required, .. } => {
                let facts = &call.stage.approvals;
                let error = match &facts.live {
                    Some(live) if live.state == ApprovalState::Denied => {
                        GatewayError::ApprovalDenied {
                            approval_id: live.id.clone(),
                        }
                    }
                    live => GatewayError::ApprovalRequired {
                        approval_id: live.as_ref().map(|l| l.id.clone()),
                        required_approvals: required,
                        approvals: facts.approvals,
                    },
                };
                Box::pin(async move { Err(error) })
            }
            Verdict::Permit { decision, spend } => {
                // validate_only answers here: it says the call would go through, and spends
                // nothing.
                if let Some(reply) = Op::validation_reply(&call.stage.request, &decision) {
                    return Box::pin(async move { Ok(reply) });
                }
                call.stage.approvals.must_spend = spend;
                Box::pin(next.call(call))
            }
        }
    }
}
