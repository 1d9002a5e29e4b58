//! A bound on concurrent upstream calls: callers over the limit wait briefly for a slot, then get
//! `RESOURCE_EXHAUSTED` with a retry hint instead of queueing without end.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::Semaphore;
use tower::{Layer, Service};

use crate::call::{AssociateCall, AssociateReply, CallFuture};
use crate::errors::GatewayError;

/// Limits concurrent calls to the inner service.
#[derive(Clone, Debug)]
pub struct LimitLayer {
    slots: Arc<Semaphore>,
    queue_timeout: Duration,
}

impl LimitLayer {
    /// At most `limit` calls at once; a call waits at most `queue_timeout` for a slot.
    pub fn new(limit: usize, queue_timeout: Duration) -> Self {
        LimitLayer {
            slots: Arc::new(Semaphore::new(limit)),
            queue_timeout,
        }
    }
}

impl<S> Layer<S> for LimitLayer {
    type Service = Limit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Limit {
            inner,
            slots: self.slots.clone(),
            queue_timeout: self.queue_timeout,
        }
    }
}

/// The service made by [`LimitLayer`].
#[derive(Clone, Debug)]
pub struct Limit<S> {
    inner: S,
    slots: Arc<Semaphore>,
    queue_timeout: Duration,
}

impl<S> Service<AssociateCall> for Limit<S>
where
    S: Service<AssociateCall, Response = AssociateReply, Error = GatewayError>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    type Response = AssociateReply;
    type Error = GatewayError;
    type Future = CallFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: AssociateCall) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let slots = self.slots.clone();
        let queue_timeout = self.queue_timeout;
        Box::pin(async move {
            let _permit = match tokio::time::timeout(queue_timeout, slots.acquire_owned()).await {
                Ok(Ok(permit)) => permit,
                // The semaphore is never closed; a timeout means every slot stayed busy.
                Ok(Err(_)) | Err(_) => return Err(GatewayError::Overloaded),
            };
            inner.call(call).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::{AssociateParams, CallContext, CallerCredential, Decision, Method, Trail};
    use std::time::{Instant, SystemTime};
    use tower::ServiceExt;

    fn call() -> AssociateCall {
        AssociateCall {
            ctx: CallContext {
                method: Method::AssociateConsumer,
                request_id: "r".into(),
                trace_id: None,
                peer: None,
                credential: CallerCredential::None,
                principal: None,
                received_at: SystemTime::now(),
                started: Instant::now(),
                deadline: None,
            },
            params: AssociateParams::default(),
            request: None,
            trail: Arc::new(Trail::default()),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_over_the_limit_is_shed_after_the_queue_timeout() {
        let (release_tx, release_rx) = tokio::sync::watch::channel(false);
        let slow = tower::service_fn(move |_call: AssociateCall| {
            let mut release = release_rx.clone();
            async move {
                let _ = release.wait_for(|r| *r).await;
                Ok::<_, GatewayError>(AssociateReply::Validated(Decision {
                    allowed: true,
                    determining_policies: vec![],
                }))
            }
        });
        let svc = LimitLayer::new(1, Duration::from_millis(50)).layer(slow);
        let first = tokio::spawn(svc.clone().oneshot(call()));
        tokio::task::yield_now().await;
        let second = svc.clone().oneshot(call()).await;
        assert!(matches!(second, Err(GatewayError::Overloaded)));
        release_tx.send(true).unwrap();
        assert!(first.await.unwrap().is_ok());
    }
}
