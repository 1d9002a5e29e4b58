//! The policy layer: evaluates each validated call and forwards only what policy allows.
//!
//! For a call that changes state in AWS, policy also decides whether it needs two-person
//! approval: a call denied as it stands (no approvals) but permitted with the approvals its live
//! approval has goes on, marked to spend that approval; one that more approvals would permit is
//! [`GatewayError::ApprovalRequired`]; one that no number of approvals would permit is
//! [`GatewayError::PolicyDenied`]. The live approval is read from the store only for a call
//! policy does not permit as it stands: the others, most calls, cost no store read.

use tower::Service;

use crate::approvals::Approvals;
use crate::call::{
    ApprovalFacts, ApprovalRole, ApprovalState, CallFuture, Decision, Operation, Validated,
    ValidatedCall,
};
use crate::errors::GatewayError;
use crate::middleware::Middleware;
use crate::policy::{PinnedPolicies, Policies};

/// The most approvals the policy layer asks policy about: a call that even this many would not
/// permit is denied outright.
pub const MAX_REQUIRED_APPROVALS: u32 = 10;

/// Evaluates each call against the running policy set. Takes validated calls (it needs the
/// principal and the validated request) and sits before anything that reaches Redshift; a
/// `validate_only` call that policy permits is answered here.
#[derive(Clone, Debug)]
pub struct Authorize {
    policies: Policies,
    approvals: Option<Approvals>,
}

impl Authorize {
    /// Evaluates against `policies` (which may be reloaded underneath); a gated call has no
    /// approvals.
    pub fn new(policies: Policies) -> Self {
        Authorize {
            policies,
            approvals: None,
        }
    }

    /// Also reads a gated call's live approval (and so `context.approvals`) from `approvals`,
    /// when policy does not permit the call without one.
    pub fn with_approvals(self, approvals: Option<Approvals>) -> Self {
        Authorize { approvals, ..self }
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

impl Verdict {
    fn decision(&self) -> &Decision {
        match self {
            Verdict::Permit { decision, .. }
            | Verdict::NeedsApprovals { decision, .. }
            | Verdict::Deny(decision) => decision,
        }
    }
}

/// The verdict on a gated call that `policies` does not permit without approvals (`bare`),
/// given the approvals its facts hold. The caller passes the set `bare` came from: a reload in
/// between must not make a call denied by the old set look "permitted with approvals" by the
/// new one.
fn gated_verdict<Op: Operation>(
    policies: &PinnedPolicies,
    call: &ValidatedCall<Op>,
    bare: Decision,
) -> Verdict {
    let principal = &call.stage.principal;
    let request = &call.stage.request;
    let facts = &call.stage.approvals;
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

/// Logs the decision and keeps it for the audit record.
fn record<Op: Operation>(call: &ValidatedCall<Op>, decision: &Decision) {
    tracing::debug!(
        principal = %call.stage.principal.id,
        action = Op::METHOD,
        allowed = decision.allowed,
        determining_policies = ?decision.determining_policies,
        "policy decision"
    );
    call.trail.lock().decision = Some(decision.clone());
}

/// Records the verdict's decision and acts on it: refuses the call, answers a `validate_only`
/// one, or hands it on.
fn conclude<Op, S, F>(
    mut call: ValidatedCall<Op>,
    verdict: Verdict,
    mut next: S,
) -> CallFuture<Op::Reply>
where
    Op: Operation,
    S: Service<ValidatedCall<Op>, Response = Op::Reply, Error = GatewayError, Future = F>
        + Send
        + 'static,
    F: std::future::Future<Output = Result<Op::Reply, GatewayError>> + Send + 'static,
{
    record(&call, verdict.decision());
    match verdict {
        Verdict::Deny(decision) => Box::pin(async move {
            Err(GatewayError::PolicyDenied {
                determining_policies: decision.determining_policies,
            })
        }),
        Verdict::NeedsApprovals { required, .. } => {
            let facts = &call.stage.approvals;
            let error = match &facts.live {
                Some(live) if live.state == ApprovalState::Denied => GatewayError::ApprovalDenied {
                    approval_id: live.id.clone(),
                },
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

impl<Op: Operation> Middleware<Op, Validated<Op::Request>> for Authorize {
    type Out = Validated<Op::Request>;

    fn handle<S, F>(&self, mut call: ValidatedCall<Op>, next: S) -> CallFuture<Op::Reply>
    where
        S: Service<ValidatedCall<Op>, Response = Op::Reply, Error = GatewayError, Future = F>
            + Send
            + 'static,
        F: std::future::Future<Output = Result<Op::Reply, GatewayError>> + Send + 'static,
    {
        // One set for every question of this call, across the store read below.
        let policies = self.policies.pinned();
        let principal = &call.stage.principal;
        let request = &call.stage.request;
        let gated = match Op::approval_role(request) {
            ApprovalRole::Gated { request, .. } => Some(request),
            ApprovalRole::None | ApprovalRole::Reviews(_) => None,
        };
        let Some(gated) = gated else {
            let decision = policies.evaluate_with::<Op>(principal, request, &call.stage.approvals);
            let verdict = if decision.allowed {
                Verdict::Permit {
                    decision,
                    spend: false,
                }
            } else {
                Verdict::Deny(decision)
            };
            return conclude(call, verdict, next);
        };
        // Without approvals first: most calls need none, must not spend one they have, and
        // need no store read.
        let bare = policies.evaluate_with::<Op>(principal, request, &ApprovalFacts::default());
        if bare.allowed {
            let verdict = Verdict::Permit {
                decision: bare,
                spend: false,
            };
            return conclude(call, verdict, next);
        }
        let Some(approvals) = self.approvals.clone() else {
            let verdict = gated_verdict(&policies, &call, bare);
            return conclude(call, verdict, next);
        };
        Box::pin(async move {
            // A store that cannot be read only matters to a call that needs an approval: one
            // that no number of approvals would permit is still denied as such.
            let (live, unreadable) =
                match approvals.live_for(&call.stage.principal.id, &gated).await {
                    Ok(live) => (live, None),
                    Err(err) => (None, Some(err)),
                };
            let facts = &mut call.stage.approvals;
            facts.approvals = live
                .as_ref()
                .filter(|l| l.state != ApprovalState::Denied)
                .map_or(0, |l| u32::try_from(l.approvers.len()).unwrap_or(u32::MAX));
            facts.live = live;
            let verdict = gated_verdict(&policies, &call, bare);
            if let (Some(err), Verdict::NeedsApprovals { .. }) = (unreadable, &verdict) {
                record(&call, verdict.decision());
                return Err(err);
            }
            conclude(call, verdict, next).await
        })
    }
}
