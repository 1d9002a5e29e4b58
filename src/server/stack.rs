//! The middleware stack: what every operation's stack is built from ([`StackParts`]) and the one
//! function that builds it ([`build_stack`]), outermost layer first with the reason each sits
//! where it does. The stages the layers make and take hold that order at compile time.

use std::sync::Arc;
use std::time::Duration;

use tower::ServiceBuilder;
use tower::util::BoxCloneSyncService;

use super::CallService;
use crate::approvals::{Approvals, ClearedCall, FindApprovals, SpendApproval};
use crate::audit::{Audit, AuditLog, Intent};
use crate::call::{Operation, ValidationEnv};
use crate::config::ServerConfig;
use crate::errors::GatewayError;
use crate::identity::{Authenticate, PrincipalDirectory};
use crate::limits::{CallerRates, Limit, RateLimit, RequireTime};
use crate::metrics::{Measure, Metrics};
use crate::middleware::MiddlewareLayer;
use crate::policy::{ApprovalLookup, Authorize, Policies};
use crate::telemetry::StageSpan;
use crate::upstream::{Accounts, RequireServedAccount};
use crate::validation::Validate;

/// What every operation's stack is built from, besides the upstream service.
#[derive(Clone, Debug)]
pub struct StackParts {
    /// Where calls are counted.
    pub metrics: Arc<Metrics>,
    pub audit: AuditLog,
    /// Principals and their groups.
    pub principals: Arc<PrincipalDirectory>,
    pub policies: Policies,
    /// Shared by every Redshift operation's stack: one pool of slots, shared fairly by callers.
    pub limit: Limit,
    /// Shared by the Approvals RPCs' stacks: a pool of their own.
    pub approvals_limit: Limit,
    /// Each caller's rate, shared by every stack; `None`: no rate.
    pub rates: Option<Arc<CallerRates>>,
    /// The default consumer account, for requests that name none.
    pub validation: ValidationEnv,
    /// The consumer accounts served; calls into others are refused.
    pub accounts: Arc<Accounts>,
    /// The least time a call's deadline must leave before it is started.
    pub min_remaining: Duration,
    /// The approvals store; `None` (tests of other layers): no call has approvals, none is made.
    pub approvals: Option<Approvals>,
    /// Calls the handler lets into the stacks at once (`server.max_in_flight_calls`).
    pub max_in_flight_calls: usize,
}

impl StackParts {
    /// The parts, with a concurrency limit of `concurrency_limit` calls (a quarter to a caller),
    /// each waiting at most `queue_timeout` for a slot, the default Approvals pool, no rate, no
    /// default account and no account served (set `validation` and `accounts` for that, and
    /// [`StackParts::with_limits`] for the configured limits).
    pub fn new(
        metrics: Arc<Metrics>,
        audit: AuditLog,
        principals: Arc<PrincipalDirectory>,
        policies: Policies,
        concurrency_limit: usize,
        queue_timeout: Duration,
    ) -> Self {
        let server = ServerConfig {
            concurrency_limit,
            queue_timeout_ms: u64::try_from(queue_timeout.as_millis()).unwrap_or(u64::MAX),
            ..ServerConfig::default()
        };
        StackParts {
            limit: Limit::new(
                server.redshift_pool(),
                queue_timeout,
                "redshift",
                Some(metrics.clone()),
            ),
            approvals_limit: Limit::new(
                server.approvals_pool(),
                queue_timeout,
                "approvals",
                Some(metrics.clone()),
            ),
            rates: None,
            metrics,
            audit,
            principals,
            policies,
            validation: ValidationEnv::default(),
            accounts: Arc::new(Accounts::default()),
            min_remaining: Duration::from_millis(
                crate::upstream::DEFAULT_MIN_REMAINING_DEADLINE_MS,
            ),
            approvals: None,
            max_in_flight_calls: server.max_in_flight_calls,
        }
    }

    /// The same parts with `server`'s pools, rate and cap on calls in flight.
    pub fn with_limits(self, server: &ServerConfig) -> Self {
        let queue_timeout = Duration::from_millis(server.queue_timeout_ms);
        let metrics = Some(self.metrics.clone());
        StackParts {
            limit: Limit::new(
                server.redshift_pool(),
                queue_timeout,
                "redshift",
                metrics.clone(),
            ),
            approvals_limit: Limit::new(
                server.approvals_pool(),
                queue_timeout,
                "approvals",
                metrics,
            ),
            rates: server.per_caller_rate.and_then(CallerRates::new),
            max_in_flight_calls: server.max_in_flight_calls,
            ..self
        }
    }

    /// The parts of the Approvals RPCs' stacks: the same, over their own pool.
    pub fn for_approvals(&self) -> Self {
        StackParts {
            limit: self.approvals_limit.clone(),
            ..self.clone()
        }
    }
}

/// Builds the stack of operation `Op` over `upstream`, outermost first. Every operation gets the
/// same layers in the same order, and the stages hold the order: identity makes
/// `Authenticated`, validation `Validated`, policy `Permitted`, the intent `Intended` and the
/// approval spend `Cleared`, each taken only by the layers that must come after it, so a layer
/// placed before the stage it depends on does not compile. A stack without policy, for one:
///
/// ```compile_fail
/// # use datashare_gateway::{approvals::*, audit::*, call::*, middleware::*, policy::*};
/// # use datashare_gateway::ops::{AssociateConsumer, associate::{AssociateReply, AssociateRequest}};
/// # use datashare_gateway::errors::GatewayError;
/// # use tower::ServiceBuilder;
/// fn stack<U>(intent: Intent, spend: SpendApproval, upstream: U) -> impl tower::Service<
///     ValidatedCall<AssociateConsumer>,
///     Response = AssociateReply,
///     Error = GatewayError,
/// >
/// where
///     U: tower::Service<Call<AssociateConsumer, Cleared<AssociateRequest>>, Response = AssociateReply, Error = GatewayError>
///         + Clone + Send + 'static,
///     U::Future: Send,
/// {
///     ServiceBuilder::new()
///         .layer(MiddlewareLayer::new(intent))
///         .layer(MiddlewareLayer::new(spend))
///         .service(upstream)
/// }
/// ```
///
/// or with the approval spent before its intent:
///
/// ```compile_fail
/// # use datashare_gateway::{approvals::*, audit::*, call::*, middleware::*, policy::*};
/// # use datashare_gateway::ops::{AssociateConsumer, associate::{AssociateReply, AssociateRequest}};
/// # use datashare_gateway::errors::GatewayError;
/// # use tower::ServiceBuilder;
/// fn stack<U>(authorize: Authorize, intent: Intent, spend: SpendApproval, upstream: U) -> impl tower::Service<
///     ValidatedCall<AssociateConsumer>,
///     Response = AssociateReply,
///     Error = GatewayError,
/// >
/// where
///     U: tower::Service<Call<AssociateConsumer, Cleared<AssociateRequest>>, Response = AssociateReply, Error = GatewayError>
///         + Clone + Send + 'static,
///     U::Future: Send,
/// {
///     ServiceBuilder::new()
///         .layer(MiddlewareLayer::new(authorize))
///         .layer(MiddlewareLayer::new(spend))
///         .layer(MiddlewareLayer::new(intent))
///         .service(upstream)
/// }
/// ```
///
/// The same function in order compiles: `tests::the_stages_compose_only_in_order`.
pub fn build_stack<Op, U>(parts: &StackParts, upstream: U) -> CallService<Op>
where
    Op: Operation,
    U: tower::Service<ClearedCall<Op>, Response = Op::Reply, Error = GatewayError>
        + Clone
        + Send
        + Sync
        + 'static,
    U::Future: Send,
{
    let stack = ServiceBuilder::new()
        // Metrics outermost: every call is counted, whatever ends it.
        .layer(MiddlewareLayer::new(Measure::new(parts.metrics.clone())))
        // Audit outside everything that can refuse a call, so denials and invalid input are recorded.
        .layer(MiddlewareLayer::new(Audit::new(parts.audit.clone())))
        // Identity before anything looks at the parameters: no principal, no further. Identity,
        // validation and the approval lookup get no span of their own: they take microseconds
        // (the RPC span's status says how far a refused call got), and each span is a cost on
        // every call and in the export queue.
        .layer(MiddlewareLayer::new(Authenticate::new(
            parts.principals.clone(),
        )))
        // The caller's rate right after identity: a caller over it costs no validation, policy
        // or store work.
        .layer(MiddlewareLayer::new(RateLimit::new(
            parts.rates.clone(),
            Some(parts.metrics.clone()),
        )))
        // Validation before policy: policies see only well-formed, parsed requests.
        .layer(MiddlewareLayer::new(Validate::new(
            parts.validation.clone(),
        )))
        // What policy decides with, from the approvals store: the approval a call is about. On
        // the way back, a call refused for want of approval gets its pending approval.
        .layer(MiddlewareLayer::new(FindApprovals::new(
            parts.approvals.clone(),
        )))
        // Policy before any upstream work, and the only maker of the `Permitted` stage that
        // every layer below takes; validate_only ends here with the decision. A gated call's
        // live approval is read here, and only when approvals could make policy permit it.
        .layer(MiddlewareLayer::new(StageSpan::new("policy")))
        .layer(MiddlewareLayer::new(
            Authorize::new(parts.policies.clone()).with_approvals(
                parts
                    .approvals
                    .clone()
                    .map(|store| Arc::new(store) as Arc<dyn ApprovalLookup>),
            ),
        ))
        // An account the gateway does not serve is refused once policy has allowed the call,
        // before anything is attempted (no intent, no STS, no Redshift).
        .layer(MiddlewareLayer::new(RequireServedAccount::new(
            parts.accounts.clone(),
        )))
        // Limits outside the write-ahead intent: a shed call leaves no intent behind. After
        // policy, so a slot is never held by a call policy refuses; per caller, so one caller's
        // flood waits in its own queue.
        .layer(MiddlewareLayer::new(parts.limit.clone()))
        // A call whose deadline is (nearly) spent is not started: no intent, nothing forwarded,
        // rather than a change carried out for a caller who has been told it failed.
        .layer(MiddlewareLayer::new(RequireTime::new(parts.min_remaining)))
        // Write-ahead: a state change's intent, naming the approval it will spend, is durable
        // before anything changes (fail closed). Only it makes the `Intended` stage.
        .layer(MiddlewareLayer::new(StageSpan::new("audit.intent")))
        .layer(MiddlewareLayer::new(Intent::new(parts.audit.clone())))
        // The approval is spent after its intent is durable, so an audit outage leaves it
        // unspent; only this layer makes the `Cleared` stage the upstream services take.
        .layer(MiddlewareLayer::new(SpendApproval::new(
            parts.approvals.clone(),
        )))
        .service(upstream);
    BoxCloneSyncService::new(stack)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::Call;

    /// The in-order twin of `build_stack`'s `compile_fail` examples: the same function with
    /// policy before the intent and the intent before the spend compiles, so those fail for
    /// the order alone.
    #[test]
    fn the_stages_compose_only_in_order() {
        use crate::errors::GatewayError;
        use crate::ops::AssociateConsumer;
        use crate::ops::associate::{AssociateReply as Reply, AssociateRequest};
        fn stack<U>(
            authorize: Authorize,
            intent: Intent,
            spend: SpendApproval,
            upstream: U,
        ) -> impl tower::Service<
            crate::call::ValidatedCall<AssociateConsumer>,
            Response = Reply,
            Error = GatewayError,
        >
        where
            U: tower::Service<
                    Call<AssociateConsumer, crate::approvals::Cleared<AssociateRequest>>,
                    Response = Reply,
                    Error = GatewayError,
                > + Clone
                + Send
                + 'static,
            U::Future: Send,
        {
            ServiceBuilder::new()
                .layer(MiddlewareLayer::new(authorize))
                .layer(MiddlewareLayer::new(intent))
                .layer(MiddlewareLayer::new(spend))
                .service(upstream)
        }
        // Naming the function is the check: it type-checks only in this order.
        let _ = stack::<crate::testing::Counting<crate::approvals::Cleared<AssociateRequest>>>;
    }
}
