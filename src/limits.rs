//! A bound on concurrent upstream calls: callers over the limit wait briefly for a slot, then get
//! `RESOURCE_EXHAUSTED` with a retry hint instead of queueing without end.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tower::Service;

use crate::call::{Call, CallFuture, Operation};
use crate::errors::GatewayError;
use crate::middleware::Middleware;

/// Limits concurrent calls to the inner service, across every operation.
#[derive(Clone, Debug)]
pub struct Limit {
    slots: Arc<Semaphore>,
    queue_timeout: Duration,
}

impl Limit {
    /// At most `limit` calls at once; a call waits at most `queue_timeout` for a slot.
    pub fn new(limit: usize, queue_timeout: Duration) -> Self {
        Limit {
            slots: Arc::new(Semaphore::new(limit)),
            queue_timeout,
        }
    }
}

impl<Op: Operation, Stage: Send + 'static> Middleware<Op, Stage> for Limit {
    type Out = Stage;

    fn handle<S, F>(&self, call: Call<Op, Stage>, mut next: S) -> CallFuture<Op::Reply>
    where
        S: Service<Call<Op, Stage>, Response = Op::Reply, Error = GatewayError, Future = F>
            + Send
            + 'static,
        F: std::future::Future<Output = Result<Op::Reply, GatewayError>> + Send + 'static,
    {
        let slots = self.slots.clone();
        let queue_timeout = self.queue_timeout;
        Box::pin(async move {
            let _permit = match tokio::time::timeout(queue_timeout, slots.acquire_owned()).await {
                Ok(Ok(permit)) => permit,
                // The semaphore is never closed; a timeout means every slot stayed busy.
                Ok(Err(_)) | Err(_) => return Err(GatewayError::Overloaded),
            };
            next.call(call).await
        })
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
    use crate::call::CallerCredential;
    use crate::middleware::MiddlewareLayer;
    use crate::ops::AssociateConsumer;
    use crate::ops::associate::AssociateReply;
    use crate::testing::associate_call;
    use tower::{Layer, ServiceExt};

    fn call() -> Call<AssociateConsumer> {
        associate_call(CallerCredential::None, Default::default())
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_over_the_limit_is_shed_after_the_queue_timeout() {
        let (release_tx, release_rx) = tokio::sync::watch::channel(false);
        let slow = tower::service_fn(move |_call: Call<AssociateConsumer>| {
            let mut release = release_rx.clone();
            async move {
                let _ = release.wait_for(|r| *r).await;
                Ok::<_, GatewayError>(AssociateReply::Associated(Default::default()))
            }
        });
        let svc = MiddlewareLayer::new(Limit::new(1, Duration::from_millis(50))).layer(slow);
        let first = tokio::spawn(svc.clone().oneshot(call()));
        tokio::task::yield_now().await;
        let second = svc.clone().oneshot(call()).await;
        assert!(matches!(second, Err(GatewayError::Overloaded)));
        release_tx.send(true).unwrap();
        assert!(first.await.unwrap().is_ok());
    }
}
