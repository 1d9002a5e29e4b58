//! The policy layer: evaluates each validated call and forwards only what policy allows.

use std::task::{Context, Poll};

use tower::{Layer, Service};

use crate::call::{AssociateCall, AssociateReply, CallFuture};
use crate::errors::GatewayError;
use crate::policy::Policies;

/// Evaluates each call against the running policy set. Sits after identity and validation (it
/// needs the principal and the validated request) and before anything that reaches Redshift.
#[derive(Clone, Debug)]
pub struct PolicyLayer {
    policies: Policies,
}

impl PolicyLayer {
    /// A layer evaluating against `policies` (which may be reloaded underneath).
    pub fn new(policies: Policies) -> Self {
        PolicyLayer { policies }
    }
}

impl<S> Layer<S> for PolicyLayer {
    type Service = PolicyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PolicyService {
            inner,
            policies: self.policies.clone(),
        }
    }
}

/// The service made by [`PolicyLayer`].
#[derive(Clone, Debug)]
pub struct PolicyService<S> {
    inner: S,
    policies: Policies,
}

type BoxFuture = CallFuture;

impl<S> Service<AssociateCall> for PolicyService<S>
where
    S: Service<AssociateCall, Response = AssociateReply, Error = GatewayError>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    type Response = AssociateReply;
    type Error = GatewayError;
    type Future = BoxFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: AssociateCall) -> Self::Future {
        let (Some(principal), Some(request)) = (call.ctx.principal.as_ref(), call.request.as_ref())
        else {
            // The stack is mis-built: identity and validation must run before policy.
            let missing = if call.ctx.principal.is_none() {
                "policy layer reached without a principal"
            } else {
                "policy layer reached without a validated request"
            };
            return Box::pin(async move { Err(GatewayError::Internal(missing.into())) });
        };
        let decision = self.policies.evaluate(principal, request);
        let validate_only = request.validate_only;
        tracing::debug!(
            principal = %principal.id,
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
        if validate_only {
            return Box::pin(async move { Ok(AssociateReply::Validated(decision)) });
        }
        // Take the service that was driven to readiness; leave a fresh clone behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move { inner.call(call).await })
    }
}
