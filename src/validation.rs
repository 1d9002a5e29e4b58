//! The validation layer: turns the decoded parameters into the operation's validated request,
//! before anything else looks at them.
//!
//! Every broken rule is reported, each naming its field, so a caller fixes everything in one go
//! (the rules live with each operation, in `ops`). The layer runs inside the audit layer, so
//! invalid calls are recorded too, and outside policy and upstream, so nothing invalid is ever
//! evaluated or forwarded.

use tower::Service;

use crate::call::{Authenticated, Call, CallFuture, Operation, Validated, ValidationEnv};
use crate::errors::GatewayError;
use crate::middleware::Middleware;

/// Validates each call's parameters; invalid calls end here with `InvalidArgument`.
#[derive(Clone, Debug, Default)]
pub struct Validate {
    env: ValidationEnv,
}

impl Validate {
    /// Validates with `env` (the default consumer account).
    pub fn new(env: ValidationEnv) -> Self {
        Validate { env }
    }
}

impl<Op: Operation> Middleware<Op, Authenticated> for Validate {
    type Out = Validated<Op::Request>;

    fn handle<S, F>(&self, call: Call<Op, Authenticated>, mut next: S) -> CallFuture<Op::Reply>
    where
        S: Service<Call<Op, Self::Out>, Response = Op::Reply, Error = GatewayError, Future = F>
            + Send
            + 'static,
        F: std::future::Future<Output = Result<Op::Reply, GatewayError>> + Send + 'static,
    {
        if let Some(value) = &call.ctx.malformed_timeout {
            let violation = crate::errors::FieldViolation {
                field: "grpc-timeout",
                description: format!(
                    "{value:?} is not a gRPC timeout: 1 to 8 digits and a unit (H, M, S, m, u, n)"
                ),
            };
            return Box::pin(async move { Err(GatewayError::InvalidArgument(vec![violation])) });
        }
        match Op::validate(&call.params, &self.env) {
            Ok(request) => {
                let principal = call.stage.principal.clone();
                let call = call.advance(Validated::new(principal, request));
                Box::pin(next.call(call))
            }
            Err(violations) => {
                Box::pin(async move { Err(GatewayError::InvalidArgument(violations)) })
            }
        }
    }
}
