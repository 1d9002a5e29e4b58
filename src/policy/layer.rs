//! The policy layer: evaluates each validated call and hands on only what policy permits, as a
//! [`Permitted`] call.
//!
//! For a call that changes state in AWS, policy also decides whether it needs two-person
//! approval: a call denied as it stands (no approvals) but permitted with the approvals its live
//! approval has goes on, carrying that approval to spend; one that more approvals would permit is
//! [`GatewayError::ApprovalRequired`]; one that no number of approvals would permit is
//! [`GatewayError::PolicyDenied`].
//!
//! Cost, because denied calls are the cheapest to send: a call permitted as it stands takes one
//! evaluation; a gated call that no number of approvals would permit takes two (as it stands,
//! then with [`MAX_REQUIRED_APPROVALS`]) and no store read. Only a call that approvals could
//! permit reads its live approval, and the fewest approvals it needs is found by bisection over
//! one pinned set: at most ⌈log₂ MAX⌉ more evaluations.

use std::sync::Arc;

use tower::Service;

use super::permitted::Permitted;
use crate::call::{
    ApprovalFacts, ApprovalRole, ApprovalState, Call, CallFuture, Decision, LiveApproval,
    Operation, SemanticRequest, Validated, ValidatedCall,
};
use crate::errors::GatewayError;
use crate::middleware::Middleware;
use crate::policy::{PinnedPolicies, Policies};

/// The most approvals the policy layer asks policy about: a call that even this many would not
/// permit is denied outright.
pub const MAX_REQUIRED_APPROVALS: u32 = 10;

/// What the policy layer needs of the approvals store (which implements it): the live approval
/// of one request by one requester. A trait, so that policy knows nothing of the store.
pub trait ApprovalLookup: std::fmt::Debug + Send + Sync + 'static {
    /// The live approval (pending, approved, or denied and not yet expired) of `request` by
    /// `requester`.
    fn live_for<'a>(&'a self, requester: &'a str, request: &'a SemanticRequest)
    -> LookupFuture<'a>;
}

/// What [`ApprovalLookup::live_for`] returns.
pub type LookupFuture<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Option<LiveApproval>, GatewayError>> + Send + 'a>,
>;

/// Evaluates each call against the running policy set. Takes validated calls (it needs the
/// principal and the validated request), hands on [`Permitted`] ones, and answers a
/// `validate_only` call that policy permits itself.
#[derive(Clone, Debug)]
pub struct Authorize {
    policies: Policies,
    approvals: Option<Arc<dyn ApprovalLookup>>,
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
    /// when approvals could make policy permit it.
    pub fn with_approvals(self, approvals: Option<Arc<dyn ApprovalLookup>>) -> Self {
        Authorize { approvals, ..self }
    }
}

/// What policy rules on a call, approvals considered.
#[derive(Debug)]
enum Ruling {
    /// Permitted; with the live approval to spend when only thanks to its approvals.
    Permit {
        decision: Decision,
        spend: Option<LiveApproval>,
    },
    /// Denied as it stands, but this many approvals would permit it.
    NeedsApprovals { decision: Decision, required: u32 },
    /// Denied whatever the approvals.
    Deny(Decision),
}

impl Ruling {
    fn decision(&self) -> &Decision {
        match self {
            Ruling::Permit { decision, .. }
            | Ruling::NeedsApprovals { decision, .. }
            | Ruling::Deny(decision) => decision,
        }
    }
}

/// The fewest approvals in `fewest..=MAX_REQUIRED_APPROVALS` that `permits`, knowing that
/// `MAX_REQUIRED_APPROVALS` does: bisection, at most ⌈log₂ MAX⌉ calls of `permits`. Policies
/// that ask for "at least n approvals" permit every count from n up, which bisection relies on;
/// whatever the policies, the count returned is one that permits.
fn fewest_approvals(fewest: u32, mut permits: impl FnMut(u32) -> bool) -> u32 {
    let (mut low, mut high) = (fewest.min(MAX_REQUIRED_APPROVALS), MAX_REQUIRED_APPROVALS);
    while low < high {
        let middle = low + (high - low) / 2;
        if permits(middle) {
            high = middle;
        } else {
            low = middle + 1;
        }
    }
    high
}

/// The approvals a live approval gives its request: none once denied.
fn approvals_of(live: &LiveApproval) -> u32 {
    if live.state == ApprovalState::Denied {
        0
    } else {
        u32::try_from(live.approvers.len()).unwrap_or(u32::MAX)
    }
}

/// The ruling on a gated call that approvals could permit (the set permits it with
/// [`MAX_REQUIRED_APPROVALS`] but not as it stands: `bare`), given its live approval. The caller
/// passes the set `bare` came from: a reload in between must not make a call denied by the old
/// set look "permitted with approvals" by the new one.
fn gated_ruling<Op: Operation>(
    policies: &PinnedPolicies,
    call: &ValidatedCall<Op>,
    bare: Decision,
    live: Option<LiveApproval>,
) -> Ruling {
    let principal = &call.stage.principal;
    let request = &call.stage.request;
    let approvals = live.as_ref().map_or(0, approvals_of);
    if approvals > 0 {
        let facts = ApprovalFacts {
            approvals,
            live: live.clone(),
            subject: None,
        };
        let with = policies.evaluate_with::<Op>(principal, request, &facts);
        if with.allowed {
            return Ruling::Permit {
                decision: with,
                spend: live,
            };
        }
    }
    let required = fewest_approvals(approvals.saturating_add(1), |n| {
        policies
            .evaluate_with::<Op>(principal, request, &ApprovalFacts::with_approvals(n))
            .allowed
    });
    Ruling::NeedsApprovals {
        decision: bare,
        required,
    }
}

/// Logs the decision and notes it for the audit record.
fn note_decision<Op: Operation>(call: &ValidatedCall<Op>, decision: &Decision) {
    tracing::debug!(
        principal = %call.stage.principal.id,
        action = Op::METHOD,
        allowed = decision.allowed,
        determining_policies = ?decision.determining_policies,
        "policy decision"
    );
    call.notes.lock().decision = Some(decision.clone());
}

/// Notes the ruling's decision and acts on it: refuses the call, answers a `validate_only` one,
/// or hands it on permitted.
fn conclude<Op, S, F>(
    call: ValidatedCall<Op>,
    ruling: Ruling,
    live: Option<&LiveApproval>,
    mut next: S,
) -> CallFuture<Op::Reply>
where
    Op: Operation,
    S: Service<
            Call<Op, Permitted<Op::Request>>,
            Response = Op::Reply,
            Error = GatewayError,
            Future = F,
        > + Send
        + 'static,
    F: std::future::Future<Output = Result<Op::Reply, GatewayError>> + Send + 'static,
{
    note_decision(&call, ruling.decision());
    match ruling {
        Ruling::Deny(decision) => Box::pin(async move {
            Err(GatewayError::PolicyDenied {
                determining_policies: decision.determining_policies,
            })
        }),
        Ruling::NeedsApprovals { required, .. } => {
            let error = match live {
                Some(live) if live.state == ApprovalState::Denied => GatewayError::ApprovalDenied {
                    approval_id: live.id.clone(),
                },
                live => GatewayError::ApprovalRequired {
                    approval_id: live.map(|l| l.id.clone()),
                    required_approvals: required,
                    approvals: live.map_or(0, approvals_of),
                },
            };
            Box::pin(async move { Err(error) })
        }
        Ruling::Permit { decision, spend } => {
            // validate_only answers here: it says the call would go through, and spends
            // nothing.
            if let Some(reply) = Op::validation_reply(&call.stage.request, &decision) {
                return Box::pin(async move { Ok(reply) });
            }
            Box::pin(next.call(call.map_stage(|stage| Permitted::new(stage, decision, spend))))
        }
    }
}

impl<Op: Operation> Middleware<Op, Validated<Op::Request>> for Authorize {
    type Out = Permitted<Op::Request>;

    fn handle<S, F>(&self, call: ValidatedCall<Op>, next: S) -> CallFuture<Op::Reply>
    where
        S: Service<Call<Op, Self::Out>, Response = Op::Reply, Error = GatewayError, Future = F>
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
            let ruling = if decision.allowed {
                Ruling::Permit {
                    decision,
                    spend: None,
                }
            } else {
                Ruling::Deny(decision)
            };
            return conclude(call, ruling, None, next);
        };
        // Without approvals first: most calls need none, must not spend one they have, and
        // need no store read.
        let bare = policies.evaluate_with::<Op>(principal, request, &ApprovalFacts::default());
        if bare.allowed {
            let ruling = Ruling::Permit {
                decision: bare,
                spend: None,
            };
            return conclude(call, ruling, None, next);
        }
        // Then with the most approvals asked about: a call that even those would not permit is
        // denied without a store read, naming the forbids that deny it whatever its approvals
        // (a legal hold, not "writes need an approval").
        let most = policies.evaluate_with::<Op>(
            principal,
            request,
            &ApprovalFacts::with_approvals(MAX_REQUIRED_APPROVALS),
        );
        if !most.allowed {
            return conclude(call, Ruling::Deny(most), None, next);
        }
        let Some(approvals) = self.approvals.clone() else {
            let ruling = gated_ruling(&policies, &call, bare, None);
            return conclude(call, ruling, None, next);
        };
        Box::pin(async move {
            let live = approvals
                .live_for(&call.stage.principal.id, &gated)
                .await
                .inspect_err(|_| note_decision(&call, &bare))?;
            let ruling = gated_ruling(&policies, &call, bare, live.clone());
            conclude(call, ruling, live.as_ref(), next).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bisection_finds_the_fewest_approvals_in_at_most_four_evaluations() {
        for needed in 1..=MAX_REQUIRED_APPROVALS {
            for fewest in 1..=needed {
                let mut evaluations = 0;
                let found = fewest_approvals(fewest, |n| {
                    evaluations += 1;
                    n >= needed
                });
                assert_eq!(found, needed, "needed {needed}, from {fewest}");
                // ⌈log₂ 10⌉ = 4.
                assert!(evaluations <= 4, "{evaluations} evaluations for {needed}");
            }
        }
    }

    #[test]
    fn whatever_the_policies_the_count_found_permits() {
        // Non-monotone: only exactly 7 or 10 permit.
        let found = fewest_approvals(1, |n| n == 7 || n == MAX_REQUIRED_APPROVALS);
        assert!(found == 7 || found == MAX_REQUIRED_APPROVALS);
    }
}
