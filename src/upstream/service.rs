//! [`RedshiftService`]: the tower service at the bottom of every Redshift operation's stack. It
//! routes a cleared call to its consumer account (the gateway's own credentials or a role
//! session for the caller, one of its own for an approved call), waits its turn to talk to AWS,
//! checks the deadline again, sends, retries once on a fresh session when a cached one turns out
//! expired, notes what happened for the audit record and the metrics, and classifies a failure.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use aws_sdk_redshift::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_redshift::operation::RequestId;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use tower::Service;
use tracing::Instrument;

use super::accounts::Route;
use super::sessions::{self, Lease, SessionCache};
use super::source_identity::source_identity;
use super::{Accounts, Client, Forward, RoleTarget, UpstreamConfig, classify};
use crate::approvals::ClearedCall;
use crate::call::{CallFuture, Operation, SessionNote, UpstreamNote};
use crate::errors::{FaultKind, GatewayError, UpstreamFault};
use crate::metrics::Metrics;

/// Forwards validated calls of every operation to Redshift, in the call's consumer account:
/// with the gateway's own credentials, or through a role session for the caller.
#[derive(Clone, Debug)]
pub struct RedshiftService {
    client: aws_sdk_redshift::Client,
    accounts: Arc<Accounts>,
    sessions: Arc<SessionCache>,
    throttle_retry_after: Duration,
    min_remaining: Duration,
    metrics: Arc<Metrics>,
    /// Turns to talk to AWS: without a bound, every admitted call would hold an SDK request
    /// (a connection and its buffers) at once, and a slow Redshift would time them all out.
    turns: Arc<tokio::sync::Semaphore>,
}

impl RedshiftService {
    /// A service over the shared clients, serving `accounts`; `instance` names this gateway in
    /// every role session's tags.
    pub fn new(
        client: Client,
        config: &UpstreamConfig,
        accounts: Arc<Accounts>,
        instance: String,
        metrics: Arc<Metrics>,
    ) -> Self {
        let throttle_retry_after = Duration::from_millis(config.throttle_retry_after_ms);
        RedshiftService {
            client: client.redshift,
            accounts,
            sessions: Arc::new(SessionCache::new(
                client.sts,
                config.session_cache_size,
                instance,
                throttle_retry_after,
                metrics.clone(),
            )),
            throttle_retry_after,
            min_remaining: Duration::from_millis(config.min_remaining_deadline_ms),
            metrics,
            turns: Arc::new(tokio::sync::Semaphore::new(config.max_concurrent_requests)),
        }
    }

    /// A turn to talk to Redshift, or `CallerGone` when the caller leaves first.
    async fn turn<Op: Operation, Stage>(
        &self,
        call: &crate::call::Call<Op, Stage>,
    ) -> Result<tokio::sync::SemaphorePermit<'_>, GatewayError> {
        tokio::select! {
            // The semaphore is never closed, so acquiring only waits for a turn.
            turn = self.turns.acquire() => turn.map_err(|e| GatewayError::Internal(Box::new(e))),
            () = call.notes.caller_gone() => Err(GatewayError::CallerGone),
        }
    }

    /// Refuses to call Redshift when the caller's deadline is (nearly) spent or the caller has
    /// gone: checked again here because a role session or a turn may have taken the time since
    /// the intent.
    fn require_time<Op: Operation, Stage>(
        &self,
        call: &crate::call::Call<Op, Stage>,
    ) -> Result<(), GatewayError> {
        if call.notes.is_caller_gone() {
            return Err(GatewayError::CallerGone);
        }
        if call.ctx.deadline_within(self.min_remaining) {
            return Err(GatewayError::NotEnoughTime {
                min_remaining: self.min_remaining,
            });
        }
        Ok(())
    }
}

impl<Op: Forward> Service<ClearedCall<Op>> for RedshiftService {
    type Response = Op::Reply;
    type Error = GatewayError;
    type Future = CallFuture<Op::Reply>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The SDK client pools connections itself; it is always ready to take a call.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: ClearedCall<Op>) -> Self::Future {
        let service = self.clone();
        let span = tracing::info_span!(
            "redshift",
            otel.name = format!("Redshift/{}", Op::AWS_OPERATION),
            otel.kind = "client",
            rpc.system = "aws-api",
            rpc.service = "Redshift",
            rpc.method = Op::AWS_OPERATION,
            aws.request_id = tracing::field::Empty,
            aws.error_code = tracing::field::Empty,
        );
        let record_span = span.clone();
        let call_future = async move {
            let account = Op::consumer_account(call.stage.request())
                .cloned()
                .ok_or_else(|| {
                    GatewayError::Internal("a Redshift call without a consumer account".into())
                })?;
            let route = service.accounts.route(&account).cloned().ok_or_else(|| {
                GatewayError::AccountNotConfigured {
                    account: account.to_string(),
                }
            })?;
            let principal = call.stage.principal().id.clone();
            let started = std::time::Instant::now();
            let result = match &route {
                Route::OwnCredentials => {
                    let _turn = service.turn(&call).await?;
                    service.require_time(&call)?;
                    call.notes.lock().forwarded = true;
                    Op::send(&service.client, call.stage.request(), None).await
                }
                Route::Role(role) => {
                    let approval = call.stage.spent().cloned();
                    let lease = match &approval {
                        // An approved call gets a session of its own, tagged with the approval.
                        // Boxed, as is the retry below: these states are large and end before
                        // the long wait (see `Middleware::handle`).
                        Some(note) => {
                            Box::pin(service.lease_for_approval(
                                &call,
                                role,
                                &principal,
                                &note.approval_id,
                            ))
                            .await?
                        }
                        None => {
                            Box::pin(service.lease(&call, account.as_str(), role, &principal))
                                .await?
                        }
                    };
                    // The turn after the session: a slow STS for one caller holds no turn that
                    // another's call, whose session is cached, is waiting for.
                    let _turn = service.turn(&call).await?;
                    service.require_time(&call)?;
                    call.notes.lock().forwarded = true;
                    let result = Op::send(
                        &service.client,
                        call.stage.request(),
                        Some(lease.session.credentials.clone()),
                    )
                    .await;
                    if lease.cached && is_expired_token(&result) {
                        // Clock skew: the cached session expired sooner than its stamp says.
                        // Drop it and try once more with a fresh one; a second expiry is the
                        // gateway's trouble, not the caller's.
                        drop(result);
                        let again = Box::pin(async {
                            service
                                .sessions
                                .forget(account.as_str(), role, &principal)
                                .await;
                            let fresh = service
                                .lease(&call, account.as_str(), role, &principal)
                                .await?;
                            Ok::<_, GatewayError>(
                                Op::send(
                                    &service.client,
                                    call.stage.request(),
                                    Some(fresh.session.credentials.clone()),
                                )
                                .await,
                            )
                        })
                        .await?;
                        if is_expired_token(&again) {
                            return Err(GatewayError::Upstream {
                                fault: UpstreamFault {
                                    aws_code: Some("ExpiredToken".into()),
                                    ..UpstreamFault::of_kind(FaultKind::SessionExpired)
                                },
                                aws_request_id: again
                                    .as_ref()
                                    .err()
                                    .and_then(|e| e.request_id())
                                    .map(str::to_owned),
                            });
                        }
                        again
                    } else {
                        result
                    }
                }
            };
            let note = UpstreamNote {
                aws_request_id: match &result {
                    Ok(out) => out.request_id().map(str::to_owned),
                    Err(err) => err.request_id().map(str::to_owned),
                },
                aws_error_code: result
                    .as_ref()
                    .err()
                    .and_then(|e| e.code())
                    .map(str::to_owned),
            };
            service.metrics.upstream_call(
                Op::AWS_OPERATION,
                note.aws_error_code.as_deref(),
                started,
            );
            if let Some(id) = &note.aws_request_id {
                record_span.record("aws.request_id", id.as_str());
            }
            if let Some(code) = &note.aws_error_code {
                record_span.record("aws.error_code", code.as_str());
            }
            call.notes.lock().upstream = note.clone();
            match result {
                Ok(out) => Ok(Op::reply(call.stage.request(), out)),
                Err(err) => Err(classify(
                    err,
                    note.aws_request_id,
                    service.throttle_retry_after,
                )),
            }
        };
        Box::pin(call_future.instrument(span))
    }
}

impl RedshiftService {
    /// An uncached role session for one approved call, noted in the call's notes.
    async fn lease_for_approval<Op: Operation, Stage>(
        &self,
        call: &crate::call::Call<Op, Stage>,
        role: &RoleTarget,
        principal: &str,
        approval_id: &str,
    ) -> Result<Lease, GatewayError> {
        let gone = call.notes.gone_token();
        let Some(result) = self
            .sessions
            .for_approval(role, principal, approval_id, &gone)
            .await
        else {
            return Err(GatewayError::CallerGone);
        };
        self.note_session(call, principal, result)
    }

    fn note_session<Op: Operation, Stage>(
        &self,
        call: &crate::call::Call<Op, Stage>,
        principal: &str,
        result: Result<Lease, sessions::AssumeFailure>,
    ) -> Result<Lease, GatewayError> {
        match result {
            Ok(lease) => {
                call.notes.lock().session = SessionNote {
                    assumed_role_arn: Some(lease.session.assumed_role_arn.clone()),
                    source_identity: Some(lease.session.source_identity.clone()),
                    sts_request_id: lease.session.sts_request_id.clone(),
                };
                Ok(lease)
            }
            Err(failure) => {
                call.notes.lock().session = SessionNote {
                    assumed_role_arn: None,
                    source_identity: Some(source_identity(principal)),
                    sts_request_id: failure.sts_request_id.clone(),
                };
                Err(failure.into_error())
            }
        }
    }

    /// A role session for the call's caller, noted in the call's notes for the audit record.
    async fn lease<Op: Operation, Stage>(
        &self,
        call: &crate::call::Call<Op, Stage>,
        account: &str,
        role: &RoleTarget,
        principal: &str,
    ) -> Result<Lease, GatewayError> {
        let gone = call.notes.gone_token();
        let Some(result) = self.sessions.session(account, role, principal, &gone).await else {
            return Err(GatewayError::CallerGone);
        };
        self.note_session(call, principal, result)
    }
}

fn is_expired_token<T, E: ProvideErrorMetadata>(
    result: &Result<T, SdkError<E, HttpResponse>>,
) -> bool {
    matches!(result, Err(SdkError::ServiceError(service)) if matches!(service.err().code(), Some("ExpiredToken" | "ExpiredTokenException")))
}
