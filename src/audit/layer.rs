//! The two audit layers: [`Audit`] (outermost, one closing record per call) and [`Intent`] (just
//! outside Redshift, the write-ahead intent of a call that changes state).

use std::sync::Arc;

use tower::Service;

use super::log::AuditLog;
use super::record::{CallFacts, OutcomeFacts, RecordBody};

use crate::call::{ApprovalNote, Call, CallContext, CallFuture, CallNotes, Operation, Received};
use crate::policy::Permitted;

/// A call policy permitted, on its way to its intent.
type PermittedCall<Op> = Call<Op, Permitted<<Op as Operation>::Request>>;
use crate::errors::GatewayError;
use crate::middleware::{Middleware, forward_after};

/// Outermost: after the inner stack returns, records one `call` record (a call that changes
/// nothing, or was never forwarded) or one `outcome` record (its intent was made durable).
///
/// A `call` record is durable before the reply. An `outcome` is queued for the writer's next
/// batch and the reply goes out at once: its intent, durable before Redshift was called,
/// already records the change, so only a crash in the next millisecond or so leaves that intent
/// without an outcome (which `audit verify` lists).
///
/// A `call` record that cannot be made durable turns the result into
/// [`GatewayError::AuditUnavailable`]: nothing happens unrecorded, and no listing is answered
/// unrecorded. An `outcome` that cannot be written does not change the result, because Redshift
/// has already acted on it.
#[derive(Clone, Debug)]
pub struct Audit {
    log: AuditLog,
}

impl Audit {
    /// Writes to `log`.
    pub fn new(log: AuditLog) -> Self {
        Audit { log }
    }
}

impl<Op: Operation> Middleware<Op, Received> for Audit {
    type Out = Received;

    fn handle<S, F>(&self, call: Call<Op>, mut next: S) -> CallFuture<Op::Reply>
    where
        S: Service<Call<Op>, Response = Op::Reply, Error = GatewayError, Future = F>
            + Send
            + 'static,
        F: std::future::Future<Output = Result<Op::Reply, GatewayError>> + Send + 'static,
    {
        let log = self.log.clone();
        let ctx = call.ctx.clone();
        let params = call.params.clone();
        let notes = call.notes.clone();
        let inner = next.call(call);
        Box::pin(async move {
            let result = inner.await;
            // Boxed: recording's state is large and needed only now (see `Middleware::handle`).
            Box::pin(record_end::<Op>(log, ctx, params, notes, result)).await
        })
    }
}

/// Records the end of a call that returned `result`: its outcome (queued) when an intent was
/// written, else its `call` record (durable before the reply, or the call fails).
async fn record_end<Op: Operation>(
    log: AuditLog,
    ctx: CallContext,
    params: Op::Params,
    notes: Arc<CallNotes>,
    result: Result<Op::Reply, GatewayError>,
) -> Result<Op::Reply, GatewayError> {
    let state = notes.snapshot();
    let mut facts = CallFacts::of_call(&ctx, &params, &state);
    let outcome =
        OutcomeFacts::of_result(&result, &state, ctx.started.elapsed(), &mut facts.truncated);
    match state.intent_seq {
        Some(intent_seq) => {
            let body = RecordBody::Outcome {
                intent_seq,
                call: facts,
                outcome,
            };
            // Queued, not awaited: the reply goes out while the outcome is written with the
            // next batch (see `AuditLog::enqueue`).
            match log.enqueue(body).await {
                Ok(()) => notes.lock().recorded = true,
                Err(err) => tracing::error!(
                    error = %err,
                    request_id = %ctx.request_id,
                    intent_seq,
                    "audit: the outcome of a forwarded call could not be recorded; \
                     its intent stays without an outcome"
                ),
            }
            result
        }
        None => match log
            .append(RecordBody::Call {
                call: facts,
                outcome,
            })
            .await
        {
            Ok(_) => {
                notes.lock().recorded = true;
                result
            }
            Err(err) => Err(GatewayError::AuditUnavailable(Box::new(err))),
        },
    }
}

/// The stage of a permitted call whose write-ahead intent is durable (a call that changes
/// nothing has none). Only [`Intent`] makes one, so the approval is spent, and Redshift called,
/// only after the intent that names them.
#[derive(Clone, Debug)]
pub struct Intended<Request> {
    permitted: Permitted<Request>,
    intent_seq: Option<u64>,
}

impl<Request> Intended<Request> {
    /// What policy permitted.
    pub fn permitted(&self) -> &Permitted<Request> {
        &self.permitted
    }

    /// The audit sequence number of the call's intent record, for a call that changes state.
    pub fn intent_seq(&self) -> Option<u64> {
        self.intent_seq
    }
}

/// Just outside the approval spend and the Redshift service: for an operation that changes
/// state, makes the `intent` record durable (naming the approval the call is about to spend),
/// notes its seq, and only then hands the call on. When the intent cannot be made durable the
/// call fails with [`GatewayError::AuditUnavailable`]: nothing is spent and nothing forwarded.
/// Calls that change nothing pass straight through: [`Audit`] records them.
#[derive(Clone, Debug)]
pub struct Intent {
    log: AuditLog,
}

impl Intent {
    /// Writes to `log`.
    pub fn new(log: AuditLog) -> Self {
        Intent { log }
    }
}

impl<Op: Operation> Middleware<Op, Permitted<Op::Request>> for Intent {
    type Out = Intended<Op::Request>;

    fn handle<S, F>(&self, call: PermittedCall<Op>, mut next: S) -> CallFuture<Op::Reply>
    where
        S: Service<Call<Op, Self::Out>, Response = Op::Reply, Error = GatewayError, Future = F>
            + Send
            + 'static,
        F: std::future::Future<Output = Result<Op::Reply, GatewayError>> + Send + 'static,
    {
        if !Op::CHANGES_STATE {
            return Box::pin(next.call(call.map_stage(|permitted| Intended {
                permitted,
                intent_seq: None,
            })));
        }
        let log = self.log.clone();
        let mut facts = CallFacts::of_call(&call.ctx, &call.params, &call.notes.snapshot());
        facts.approval = call.stage.approval_to_spend().map(|live| ApprovalNote {
            approval_id: live.id.clone(),
            approvers: live.approvers.clone(),
        });
        forward_after(async move {
            match log.append(RecordBody::Intent(facts)).await {
                Ok(seq) => {
                    call.notes.lock().intent_seq = Some(seq);
                    let call = call.map_stage(|permitted| Intended {
                        permitted,
                        intent_seq: Some(seq),
                    });
                    Ok(((), next.call(call)))
                }
                Err(err) => {
                    tracing::error!(
                        error = %err,
                        request_id = %call.ctx.request_id,
                        "audit: the intent could not be made durable; the call is not forwarded"
                    );
                    Err(GatewayError::AuditUnavailable(Box::new(err)))
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use tower::Layer;

    use super::*;
    use crate::audit::AuditConfig;
    use crate::call::{CallerCredential, Decision, Principal};
    use crate::middleware::MiddlewareLayer;
    use crate::ops::AssociateConsumer;
    use crate::ops::associate::{AssociateParams, AssociateReply};
    use crate::testing::associate_call;

    fn call_with(credential: CallerCredential) -> Call<AssociateConsumer> {
        associate_call(
            credential,
            AssociateParams {
                data_share_arn: "arn:aws:redshift:us-east-1:123456789012:datashare:ns/s".into(),
                consumer_arn: "x".repeat(5000),
                ..AssociateParams::default()
            },
        )
    }

    #[tokio::test]
    async fn records_carry_no_credentials_or_error_causes_and_bound_strings() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let log = AuditLog::open(&AuditConfig::new(tmp.path()), "test")
            .await
            .expect("open");
        let failing = tower::service_fn(|call: Call<AssociateConsumer>| async move {
            call.notes.lock().principal = Some(Principal {
                id: "spiffe://corp/team-a".into(),
                groups: vec!["admins".into()],
            });
            call.notes.lock().decision = Some(Decision {
                allowed: true,
                determining_policies: vec!["permit-team-a".into()],
            });
            Err::<AssociateReply, _>(GatewayError::Internal(
                "aws_secret_access_key=wJalrXUtnFEMIK7MDENG".into(),
            ))
        });
        let mut svc = MiddlewareLayer::new(Audit::new(log.clone())).layer(failing);
        let call = call_with(CallerCredential::Header("Bearer SECRET-TOKEN-123".into()));
        let err = svc
            .call(call)
            .await
            .expect_err("internal error passes through");
        assert!(matches!(err, GatewayError::Internal(_)));
        log.close().await;

        let text = std::fs::read_to_string(
            crate::audit::segment::list_segments(tmp.path()).expect("list")[0]
                .1
                .clone(),
        )
        .expect("read");
        assert!(!text.contains("SECRET-TOKEN"), "{text}");
        assert!(!text.contains("wJalr"), "{text}");
        let rec: serde_json::Value = serde_json::from_str(text.trim_end()).expect("json");
        assert_eq!(rec["kind"], "call");
        assert_eq!(rec["principal"], "spiffe://corp/team-a");
        assert_eq!(rec["decision"]["determining_policies"][0], "permit-team-a");
        assert_eq!(rec["outcome"]["code"], "INTERNAL");
        assert_eq!(rec["outcome"]["reason"], "INTERNAL");
        assert_eq!(
            rec["params"]["consumer_arn"].as_str().expect("arn").len(),
            crate::audit::record::MAX_STRING_BYTES
        );
        assert_eq!(rec["truncated"][0], "params.consumer_arn");
    }
}
