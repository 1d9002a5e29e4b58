//! The stage of a call that policy permitted: the only way past the policy layer.

use crate::call::{Decision, LiveApproval, Principal, Validated};

/// A validated call that policy permits, with the decision that permits it and, when it is
/// permitted only thanks to its live approval, that approval (to be spent once its intent is
/// durable). Only [`Authorize`](super::Authorize) makes one, so every layer that takes this
/// stage, and the upstream services, sit after policy: placing one before it does not compile.
/// (`server::build_stack`'s doc tests show a stack without policy, or with policy after the
/// intent, failing to compile.)
#[derive(Clone, Debug)]
pub struct Permitted<Request> {
    principal: Principal,
    request: Request,
    decision: Decision,
    approval_to_spend: Option<LiveApproval>,
}

impl<Request> Permitted<Request> {
    /// Policy's permit of `validated`.
    pub(super) fn new(
        validated: Validated<Request>,
        decision: Decision,
        approval_to_spend: Option<LiveApproval>,
    ) -> Self {
        Permitted {
            principal: validated.principal,
            request: validated.request,
            decision,
            approval_to_spend,
        }
    }

    /// A permit for the unit tests of the layers after policy.
    #[cfg(test)]
    pub(crate) fn for_test(principal: Principal, request: Request) -> Self {
        Permitted {
            principal,
            request,
            decision: Decision {
                allowed: true,
                determining_policies: vec!["test".into()],
            },
            approval_to_spend: None,
        }
    }

    /// Who is calling.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// The request policy permitted: what is carried out, unchanged.
    pub fn request(&self) -> &Request {
        &self.request
    }

    /// The decision that permits the call.
    pub fn decision(&self) -> &Decision {
        &self.decision
    }

    /// The approval the call is permitted by, which it must spend before it is carried out.
    pub fn approval_to_spend(&self) -> Option<&LiveApproval> {
        self.approval_to_spend.as_ref()
    }
}

impl<Request> crate::call::CallerKnown for Permitted<Request> {
    fn caller(&self) -> &Principal {
        &self.principal
    }
}
