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
    fn handle<S, F>(&self, call: Call<Op, In>, next: S) -> CallFuture<Op::Reply>
    where
        S: Service<Call<Op, Self::Out>, Response = Op::Reply, Error = GatewayError, Future = F>
            + Send
            + 'static,
        F: std::future::Future<Output = Result<Op::Reply, GatewayError>> + Send + 'static;
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
