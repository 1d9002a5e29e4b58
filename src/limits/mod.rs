//! Limits on what callers may ask of the gateway, each a layer of the stack:
//! - [`Limit`]: a pool of call slots shared fairly between callers ([`fair`]): a caller over its
//!   share waits in its own queue, a caller over its queue is refused at once, and a call that
//!   waits longer than `server.queue_timeout_ms` gets `RESOURCE_EXHAUSTED` with a retry hint.
//!   The Redshift operations and the Approvals RPCs each have a pool of their own.
//! - [`RateLimit`]: a rate per caller ([`rate`]), refused with the time until the next token.
//! - [`RequireTime`]: no call started with too little of its deadline left.
//!
//! All are per replica: with several replicas, a caller gets a share and a rate from each.

pub mod fair;
pub mod rate;

use std::sync::Arc;
use std::time::Duration;

use tower::Service;

pub use fair::{FairShares, PoolSizes};
pub use rate::{CallerRates, RateConfig};

use crate::call::{Call, CallFuture, CallerKnown, Operation};
use crate::errors::GatewayError;
use crate::metrics::Metrics;
use crate::middleware::{Middleware, forward_after};

/// A pool of call slots shared fairly between callers, across every operation of the stacks
/// built over it.
#[derive(Clone, Debug)]
pub struct Limit {
    shares: Arc<FairShares>,
    queue_timeout: Duration,
    /// The pool's name in metrics (`redshift`, `approvals`).
    pool: &'static str,
    metrics: Option<Arc<Metrics>>,
}

impl Limit {
    /// A pool of `sizes`, a call waiting at most `queue_timeout` for a slot; `pool` names it in
    /// the shed calls' metric.
    pub fn new(
        sizes: PoolSizes,
        queue_timeout: Duration,
        pool: &'static str,
        metrics: Option<Arc<Metrics>>,
    ) -> Self {
        Limit {
            shares: FairShares::new(sizes),
            queue_timeout,
            pool,
            metrics,
        }
    }

    fn shed(&self, reason: &'static str) {
        if let Some(metrics) = &self.metrics {
            metrics.call_shed(self.pool, reason);
        }
    }
}

impl<Op: Operation, Stage: CallerKnown + Send + 'static> Middleware<Op, Stage> for Limit {
    type Out = Stage;

    fn handle<S, F>(&self, call: Call<Op, Stage>, mut next: S) -> CallFuture<Op::Reply>
    where
        S: Service<Call<Op, Stage>, Response = Op::Reply, Error = GatewayError, Future = F>
            + Send
            + 'static,
        F: std::future::Future<Output = Result<Op::Reply, GatewayError>> + Send + 'static,
    {
        let sizes = self.shares.sizes();
        let waiting = match self.shares.admit(&call.stage.caller().id) {
            // The call goes on before the future is made (see `Middleware::handle`).
            fair::Admission::Now(share) => {
                let inner = next.call(call);
                return Box::pin(async move {
                    let _share = share;
                    inner.await
                });
            }
            fair::Admission::QueueFull => {
                self.shed("caller_queue_full");
                return Box::pin(async move {
                    Err(GatewayError::CallerOverloaded {
                        limit: "server.per_caller_queue",
                        max: sizes.queued_per_caller,
                    })
                });
            }
            fair::Admission::Queued(waiting) => waiting,
        };
        let limit = self.clone();
        forward_after(async move {
            let notes = call.notes.clone();
            let waited = tokio::select! {
                granted = tokio::time::timeout(limit.queue_timeout, waiting.granted()) => granted,
                () = notes.caller_gone() => return Err(GatewayError::CallerGone),
            };
            match waited {
                Ok(Some(share)) => Ok((share, next.call(call))),
                // It waited for its own calls: its share was full all along.
                Err(_) if limit.shares.holds_its_share(&call.stage.caller().id) => {
                    limit.shed("caller_busy");
                    Err(GatewayError::CallerOverloaded {
                        limit: "server.per_caller_concurrency",
                        max: sizes.per_caller,
                    })
                }
                Ok(None) | Err(_) => {
                    limit.shed("pool_busy");
                    Err(GatewayError::Overloaded)
                }
            }
        })
    }
}

/// Refuses a call whose caller is over its rate, before validation and policy spend anything on
/// it.
#[derive(Clone, Debug)]
pub struct RateLimit {
    rates: Option<Arc<CallerRates>>,
    metrics: Option<Arc<Metrics>>,
}

impl RateLimit {
    /// Checks calls against `rates`; `None`: no rate.
    pub fn new(rates: Option<Arc<CallerRates>>, metrics: Option<Arc<Metrics>>) -> Self {
        RateLimit { rates, metrics }
    }
}

impl<Op: Operation, Stage: CallerKnown + Send + 'static> Middleware<Op, Stage> for RateLimit {
    type Out = Stage;

    fn handle<S, F>(&self, call: Call<Op, Stage>, mut next: S) -> CallFuture<Op::Reply>
    where
        S: Service<Call<Op, Stage>, Response = Op::Reply, Error = GatewayError, Future = F>
            + Send
            + 'static,
        F: std::future::Future<Output = Result<Op::Reply, GatewayError>> + Send + 'static,
    {
        if let Some(rates) = &self.rates
            && let Err(over) = rates.check(call.stage.caller())
        {
            if let Some(metrics) = &self.metrics {
                metrics.call_shed("all", "caller_rate");
            }
            return Box::pin(async move {
                Err(GatewayError::RateLimited {
                    retry_after: over.retry_after,
                    calls_per_second: over.config.calls_per_second,
                    burst: over.config.burst,
                })
            });
        }
        Box::pin(next.call(call))
    }
}

/// Refuses to start a call with less than `min_remaining` of its deadline left: the caller will
/// have given up before Redshift answers, so the change would be carried out unseen.
#[derive(Clone, Debug)]
pub struct RequireTime {
    min_remaining: Duration,
}

impl RequireTime {
    /// Refuses calls with less than `min_remaining` left.
    pub fn new(min_remaining: Duration) -> Self {
        RequireTime { min_remaining }
    }
}

impl<Op: Operation, Stage: Send + 'static> Middleware<Op, Stage> for RequireTime {
    type Out = Stage;

    fn handle<S, F>(&self, call: Call<Op, Stage>, mut next: S) -> CallFuture<Op::Reply>
    where
        S: Service<Call<Op, Stage>, Response = Op::Reply, Error = GatewayError, Future = F>
            + Send
            + 'static,
        F: std::future::Future<Output = Result<Op::Reply, GatewayError>> + Send + 'static,
    {
        if call.ctx.deadline_within(self.min_remaining) {
            let min_remaining = self.min_remaining;
            return Box::pin(async move { Err(GatewayError::NotEnoughTime { min_remaining }) });
        }
        Box::pin(next.call(call))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::{Authenticated, CallerCredential, Principal};
    use crate::middleware::MiddlewareLayer;
    use crate::ops::AssociateConsumer;
    use crate::ops::associate::AssociateReply;
    use crate::testing::associate_call;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tower::{Layer, ServiceExt};

    type ByCaller = Call<AssociateConsumer, Authenticated>;

    fn call_of(caller: &str) -> ByCaller {
        associate_call(CallerCredential::None, Default::default()).advance(Authenticated {
            principal: Principal {
                id: caller.into(),
                groups: Vec::new(),
            },
        })
    }

    type HeldService = tower::util::BoxCloneService<ByCaller, AssociateReply, GatewayError>;

    /// A service behind a `Limit` of `slots` slots, `per_caller` a caller and a 50 ms queue
    /// timeout, whose calls wait until `release`; `reached` counts the calls that got through.
    struct Held {
        svc: HeldService,
        release: tokio::sync::watch::Sender<bool>,
        reached: Arc<AtomicUsize>,
    }

    impl Held {
        fn new(slots: usize, per_caller: usize) -> Held {
            let (release, released) = tokio::sync::watch::channel(false);
            let reached = Arc::new(AtomicUsize::new(0));
            let counted = reached.clone();
            let held = tower::service_fn(move |_call: ByCaller| {
                let mut released = released.clone();
                counted.fetch_add(1, Ordering::SeqCst);
                async move {
                    let _ = released.wait_for(|r| *r).await;
                    Ok::<_, GatewayError>(AssociateReply::Associated(Default::default()))
                }
            });
            let sizes = PoolSizes {
                slots,
                per_caller,
                queued_per_caller: 8,
            };
            let limit = Limit::new(sizes, Duration::from_millis(50), "test", None);
            Held {
                svc: tower::util::BoxCloneService::new(MiddlewareLayer::new(limit).layer(held)),
                release,
                reached,
            }
        }

        /// A call of `caller` sent in a task of its own, given its turn to reach the limit.
        async fn spawn(
            &self,
            caller: &str,
        ) -> tokio::task::JoinHandle<Result<AssociateReply, GatewayError>> {
            let task = tokio::spawn(self.svc.clone().oneshot(call_of(caller)));
            tokio::task::yield_now().await;
            task
        }

        fn reached(&self) -> usize {
            self.reached.load(Ordering::SeqCst)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_over_the_limit_is_shed_after_the_queue_timeout() {
        let held = Held::new(1, 1);
        let first = held.spawn("a").await;
        let second = held.svc.clone().oneshot(call_of("b")).await;
        assert!(
            matches!(second, Err(GatewayError::Overloaded)),
            "{second:?}"
        );
        held.release.send(true).unwrap();
        assert!(first.await.unwrap().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_that_waited_on_its_own_share_is_told_so() {
        let held = Held::new(4, 1);
        let first = held.spawn("a").await;
        let second = held.svc.clone().oneshot(call_of("a")).await;
        assert!(
            matches!(
                second,
                Err(GatewayError::CallerOverloaded {
                    limit: "server.per_caller_concurrency",
                    max: 1
                })
            ),
            "{second:?}"
        );
        // Meanwhile another caller gets one of the free slots at once.
        let other = held.spawn("b").await;
        assert_eq!(held.reached(), 2, "a's first call and b's");
        held.release.send(true).unwrap();
        assert!(other.await.unwrap().is_ok());
        assert!(first.await.unwrap().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_queued_call_goes_on_when_a_slot_frees_within_the_queue_timeout() {
        let held = Held::new(1, 1);
        let first = held.spawn("a").await;
        let second = held.spawn("b").await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(held.reached(), 1, "queued");
        held.release.send(true).unwrap();
        assert!(first.await.unwrap().is_ok());
        assert!(
            second.await.unwrap().is_ok(),
            "forwarded once the slot freed"
        );
        assert_eq!(held.reached(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_queued_call_whose_caller_left_stops_waiting_and_is_not_forwarded() {
        let held = Held::new(1, 1);
        let first = held.spawn("a").await;
        let queued = call_of("b");
        let notes = queued.notes.clone();
        let second = tokio::spawn(held.svc.clone().oneshot(queued));
        tokio::task::yield_now().await;
        notes.mark_caller_gone();
        assert!(matches!(
            second.await.unwrap(),
            Err(GatewayError::CallerGone)
        ));
        held.release.send(true).unwrap();
        assert!(first.await.unwrap().is_ok());
        assert_eq!(
            held.reached(),
            1,
            "the gone caller's call was not forwarded"
        );
    }
}
