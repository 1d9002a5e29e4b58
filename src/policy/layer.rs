//! The policy layer: evaluates each validated call and forwards only what policy allows.

use tower::Service;

use crate::call::{CallFuture, Operation, Validated, ValidatedCall};
use crate::errors::GatewayError;
use crate::middleware::Middleware;
use crate::policy::Policies;

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

impl<Op: Operation> Middleware<Op, Validated<Op::Request>> for Authorize {
    type Out = Validated<Op::Request>;

    fn handle<S, F>(&self, call: ValidatedCall<Op>, mut next: S) -> CallFuture<Op::Reply>
    where
        S: Service<ValidatedCall<Op>, Response = Op::Reply, Error = GatewayError, Future = F>
            + Send
            + 'static,
        F: std::future::Future<Output = Result<Op::Reply, GatewayError>> + Send + 'static,
    {
        let principal = &call.stage.principal;
        let decision = self.policies.evaluate::<Op>(principal, &call.stage.request);
        tracing::debug!(
            principal = %principal.id,
            action = Op::METHOD,
            allowed = decision.allowed,
            determining_policies = ?decision.determining_policies,
            "policy decision"
        );
        call.trail.lock().decision = Some(decision.clone());
        if !decision.allowed {
            return Box::pin(async move {
                Err(GatewayError::PolicyDenied {
                    determining_policies: decision.determining_policies,
                })
            });
        }
        if let Some(reply) = Op::validation_reply(&call.stage.request, &decision) {
            return Box::pin(async move { Ok(reply) });
        }
        Box::pin(next.call(call))
    }
}
