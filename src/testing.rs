//! Shared helpers for the library's unit tests: calls at each stage and an inner service that
//! counts what reaches it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use tower::Service;

use crate::call::{Call, CallContext, CallFuture, CallerCredential, Operation};
use crate::errors::GatewayError;
use crate::ops::AssociateConsumer;
use crate::ops::associate::{AssociateParams, AssociateReply};

/// A call context as the handler would make it.
pub(crate) fn context(method: &'static str, credential: CallerCredential) -> CallContext {
    CallContext {
        method,
        request_id: "req-1".into(),
        trace_id: None,
        peer: None,
        credential,
        received_at: SystemTime::now(),
        started: Instant::now(),
        deadline: None,
        malformed_timeout: None,
    }
}

/// An `AssociateConsumer` call with `credential` and `params`.
pub(crate) fn associate_call(
    credential: CallerCredential,
    params: AssociateParams,
) -> Call<AssociateConsumer> {
    Call::new(context(AssociateConsumer::METHOD, credential), params)
}

/// An inner service that counts its calls, keeps the last call's stage, and answers `Ok`.
#[derive(Clone, Debug)]
pub(crate) struct Counting<Stage> {
    pub(crate) calls: Arc<AtomicUsize>,
    pub(crate) last_stage: Arc<Mutex<Option<Stage>>>,
}

impl<Stage> Default for Counting<Stage> {
    fn default() -> Self {
        Counting {
            calls: Arc::default(),
            last_stage: Arc::new(Mutex::new(None)),
        }
    }
}

impl<Stage> Counting<Stage> {
    pub(crate) fn count(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl<Stage: Clone + Send + 'static> Service<Call<AssociateConsumer, Stage>> for Counting<Stage> {
    type Response = AssociateReply;
    type Error = GatewayError;
    type Future = CallFuture<AssociateReply>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: Call<AssociateConsumer, Stage>) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        *self
            .last_stage
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(call.stage);
        Box::pin(async { Ok(AssociateReply::Associated(Default::default())) })
    }
}
