//! A bound on concurrent upstream calls: callers over the limit wait briefly for a slot, then get
//! `RESOURCE_EXHAUSTED` with a retry hint instead of queueing without end.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tower::Service;

use crate::call::{Call, CallFuture, Operation};
use crate::errors::GatewayError;
use crate::middleware::{Middleware, forward_after};

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
        // A free slot is taken at once (tokio's semaphore hands released permits to waiters
        // first, so this does not jump the queue), and the call goes on before the future is
        // made (see `Middleware::handle`).
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            let inner = next.call(call);
            return Box::pin(async move {
                let _permit = permit;
                inner.await
            });
        }
        let slots = self.slots.clone();
        let queue_timeout = self.queue_timeout;
        forward_after(async move {
            match tokio::time::timeout(queue_timeout, slots.acquire_owned()).await {
                Ok(Ok(permit)) => Ok((permit, next.call(call))),
                // The semaphore is never closed; a timeout means every slot stayed busy.
                Ok(Err(_)) | Err(_) => Err(GatewayError::Overloaded),
            }
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
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tower::{Layer, ServiceExt};

    fn call() -> Call<AssociateConsumer> {
        associate_call(CallerCredential::None, Default::default())
    }

    /// A service over one slot whose calls wait until `release` turns true, behind a `Limit`
    /// with a 50 ms queue timeout; `reached` counts the calls that get through the limit.
    fn one_slot_held_until(
        release: tokio::sync::watch::Receiver<bool>,
        reached: Arc<AtomicUsize>,
    ) -> impl Service<
        Call<AssociateConsumer>,
        Response = AssociateReply,
        Error = GatewayError,
        Future: Send,
    > + Clone
    + Send
    + 'static {
        let held = tower::service_fn(move |_call: Call<AssociateConsumer>| {
            let mut release = release.clone();
            reached.fetch_add(1, Ordering::SeqCst);
            async move {
                let _ = release.wait_for(|r| *r).await;
                Ok::<_, GatewayError>(AssociateReply::Associated(Default::default()))
            }
        });
        MiddlewareLayer::new(Limit::new(1, Duration::from_millis(50))).layer(held)
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_over_the_limit_is_shed_after_the_queue_timeout() {
        let (release_tx, release_rx) = tokio::sync::watch::channel(false);
        let svc = one_slot_held_until(release_rx, Arc::default());
        let first = tokio::spawn(svc.clone().oneshot(call()));
        tokio::task::yield_now().await;
        let second = svc.clone().oneshot(call()).await;
        assert!(matches!(second, Err(GatewayError::Overloaded)));
        release_tx.send(true).unwrap();
        assert!(first.await.unwrap().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_queued_call_goes_on_when_a_slot_frees_within_the_queue_timeout() {
        let (release_tx, release_rx) = tokio::sync::watch::channel(false);
        let reached = Arc::new(AtomicUsize::new(0));
        let svc = one_slot_held_until(release_rx, reached.clone());
        let first = tokio::spawn(svc.clone().oneshot(call()));
        tokio::task::yield_now().await;
        let second = tokio::spawn(svc.clone().oneshot(call()));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(reached.load(Ordering::SeqCst), 1, "queued");
        release_tx.send(true).unwrap();
        assert!(first.await.unwrap().is_ok());
        assert!(
            second.await.unwrap().is_ok(),
            "forwarded once the slot freed"
        );
        assert_eq!(reached.load(Ordering::SeqCst), 2);
    }
}
