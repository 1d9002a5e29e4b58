//! The tower `Layer` + `Service` skeleton, written once for every layer of the call stack.
//!
//! A concern (identity, validation, policy, audit, limits, ...) implements [`Middleware`]: given a
//! call at one stage and the next service (already driven to readiness), it answers or hands the
//! call on, possibly at a later stage. [`MiddlewareLayer`] makes a tower layer of it; the service
//! it builds delegates `poll_ready` and clones-and-swaps the inner service as tower's docs explain.

use std::task::{Context, Poll};

use tower::{Layer, Service};

use crate::call::{Call, CallFuture, Operation};
use crate::errors::GatewayError;

/// One step of the stack for operation `Op`, taking calls at stage `In`.
pub trait Middleware<Op: Operation, In>: Clone + Send + Sync + 'static {
    /// The stage at which the call is handed to the next service.
    type Out: Send + 'static;

    /// Handles one call. `next` is ready: calling it once is allowed without `poll_ready`.
    ///
    /// Keep the returned future small: its box is sized for its largest state and lives until
    /// the call ends, so with thousands of calls waiting on Redshift every byte counts thousands
    /// of times. Call `next` before making the future when nothing needs awaiting first; when
    /// something does, await it in a box of its own ([`forward_after`]) that is freed before the
    /// long wait.
    fn handle<S, F>(&self, call: Call<Op, In>, next: S) -> CallFuture<Op::Reply>
    where
        S: Service<Call<Op, Self::Out>, Response = Op::Reply, Error = GatewayError, Future = F>
            + Send
            + 'static,
        F: std::future::Future<Output = Result<Op::Reply, GatewayError>> + Send + 'static;
}

/// The future of a layer that must await something (`before`) before it hands the call on:
/// `before` yields what the layer keeps for the rest of the call (a permit, say) and the inner
/// call's future (itself boxed). `before`, holding the call and its own awaits, is boxed apart and
/// freed when it ends, so the future that waits on the inner call holds little more than `T`.
pub fn forward_after<T, I, R, B>(before: B) -> CallFuture<R>
where
    T: Send + 'static,
    I: std::future::Future<Output = Result<R, GatewayError>> + Send + 'static,
    B: std::future::Future<Output = Result<(T, I), GatewayError>> + Send + 'static,
{
    let before = Box::pin(before);
    Box::pin(async move {
        let (_kept, inner) = before.await?;
        inner.await
    })
}

/// A tower layer over a [`Middleware`].
#[derive(Clone, Debug)]
pub struct MiddlewareLayer<M> {
    middleware: M,
}

impl<M> MiddlewareLayer<M> {
    /// A layer applying `middleware`.
    pub fn new(middleware: M) -> Self {
        MiddlewareLayer { middleware }
    }
}

impl<M: Clone, S> Layer<S> for MiddlewareLayer<M> {
    type Service = WithMiddleware<M, S>;

    fn layer(&self, inner: S) -> Self::Service {
        WithMiddleware {
            middleware: self.middleware.clone(),
            inner,
        }
    }
}

/// The service made by [`MiddlewareLayer`].
#[derive(Clone, Debug)]
pub struct WithMiddleware<M, S> {
    middleware: M,
    inner: S,
}

impl<M, S, Op, In> Service<Call<Op, In>> for WithMiddleware<M, S>
where
    Op: Operation,
    M: Middleware<Op, In>,
    S: Service<Call<Op, M::Out>, Response = Op::Reply, Error = GatewayError>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    type Response = Op::Reply;
    type Error = GatewayError;
    type Future = CallFuture<Op::Reply>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: Call<Op, In>) -> Self::Future {
        // Hand on the service that was driven to readiness; keep a fresh clone for the next call.
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        self.middleware.handle(call, ready)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::approvals::{Approvals, ApprovalsConfig, FindApprovals, StoreLocation};
    use crate::audit::{Audit, AuditConfig, AuditLog, Intent};
    use crate::call::{CallerCredential, Principal, Validated};
    use crate::limits::Limit;
    use crate::metrics::{Measure, Metrics};
    use crate::ops::AssociateConsumer;
    use crate::testing::{Counting, associate_call};

    /// What a layer's future holds for as long as its call is in flight.
    /// A pool of `slots` slots: with none, every call waits.
    fn limit(slots: usize) -> Limit {
        let sizes = crate::limits::PoolSizes {
            slots,
            per_caller: 1,
            queued_per_caller: 1,
        };
        Limit::new(sizes, Duration::from_secs(1), "test", None)
    }

    fn future_size<M, In>(middleware: &M, call: Call<AssociateConsumer, In>) -> usize
    where
        M: Middleware<AssociateConsumer, In>,
        M::Out: Clone,
        Counting<M::Out>: Service<
                Call<AssociateConsumer, M::Out>,
                Response = <AssociateConsumer as Operation>::Reply,
                Error = GatewayError,
                Future = CallFuture<<AssociateConsumer as Operation>::Reply>,
            >,
    {
        std::mem::size_of_val(&*middleware.handle(call, Counting::default()))
    }

    /// Each call in flight holds every layer's future until Redshift answers; a layer that kept
    /// room for the call it handed on (about 3 KiB each, before) cost 10,000 calls in flight
    /// about 100 MB. The budget is what a layer keeps for its own part after the inner call.
    #[tokio::test]
    async fn no_layer_keeps_room_for_the_call_it_handed_on() {
        const BUDGET: usize = 640;
        let tmp = tempfile::tempdir().expect("tempdir");
        let log = AuditLog::open(&AuditConfig::new(tmp.path()), "test")
            .await
            .expect("open");
        let metrics = Metrics::new();
        // A store, so the call takes the gated path (the approval looked up on the way back).
        let approvals = Approvals::open(
            &StoreLocation::Sqlite(tmp.path().join("approvals.db")),
            &ApprovalsConfig::default(),
            log.clone(),
            metrics.clone(),
            crate::operations::approvable_methods(),
        )
        .await
        .expect("open the approvals store");
        let received = || associate_call(CallerCredential::None, Default::default());
        let validated = || {
            received().advance(Validated::new(
                Principal {
                    id: "spiffe://corp/team-a".into(),
                    groups: Vec::new(),
                },
                AssociateConsumer::sample_request(),
            ))
        };
        let permitted = || {
            received().advance(crate::policy::Permitted::for_test(
                Principal {
                    id: "spiffe://corp/team-a".into(),
                    groups: Vec::new(),
                },
                AssociateConsumer::sample_request(),
            ))
        };
        let sizes = [
            ("Measure", future_size(&Measure::new(metrics), received())),
            ("Audit", future_size(&Audit::new(log.clone()), received())),
            (
                "FindApprovals",
                future_size(&FindApprovals::new(Some(approvals)), validated()),
            ),
            ("Limit (a free slot)", future_size(&limit(1), validated())),
            ("Limit (queued)", future_size(&limit(0), validated())),
            (
                "Intent",
                future_size(&Intent::new(log.clone()), permitted()),
            ),
        ];
        let call = std::mem::size_of_val(&validated());
        for (layer, size) in sizes {
            println!("{layer}: {size} bytes (the call: {call})");
            assert!(size <= BUDGET, "{layer}'s future is {size} bytes");
        }
        log.close().await;
    }

    #[test]
    fn forward_after_frees_what_it_awaited_first() {
        let large = [7u8; 4096];
        let future = forward_after(async move {
            let kept = std::hint::black_box(large)[0];
            Ok((kept, async { Ok::<_, GatewayError>(()) }))
        });
        assert!(std::mem::size_of_val(&*future) < 128);
    }
}
