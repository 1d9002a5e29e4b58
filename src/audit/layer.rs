//! The two audit layers: [`AuditLayer`] (outermost, one closing record per call) and
//! [`IntentLayer`] (just outside Redshift, the write-ahead intent).

use std::task::{Context, Poll};

use tower::{Layer, Service};

use super::record::{CallFacts, OutcomeFacts, RecordBody};
use super::writer::AuditLog;
use crate::call::{AssociateCall, AssociateReply, CallFuture};
use crate::errors::GatewayError;

type BoxFuture = CallFuture;

/// Outermost layer: after the inner stack returns, records one `call` record (the call was never
/// forwarded) or one `outcome` record (its intent was made durable).
///
/// A `call` record that cannot be made durable turns the result into
/// [`GatewayError::AuditUnavailable`]: nothing happens unrecorded. An `outcome` that cannot be
/// written does not change the result, because Redshift has already acted on it.
#[derive(Clone, Debug)]
pub struct AuditLayer {
    log: AuditLog,
}

impl AuditLayer {
    /// A layer writing to `log`.
    pub fn new(log: AuditLog) -> Self {
        AuditLayer { log }
    }
}

impl<S> Layer<S> for AuditLayer {
    type Service = Audit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Audit {
            inner,
            log: self.log.clone(),
        }
    }
}

/// The service of [`AuditLayer`].
#[derive(Clone, Debug)]
pub struct Audit<S> {
    inner: S,
    log: AuditLog,
}

impl<S> Service<AssociateCall> for Audit<S>
where
    S: Service<AssociateCall, Response = AssociateReply, Error = GatewayError>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    type Response = AssociateReply;
    type Error = GatewayError;
    type Future = BoxFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: AssociateCall) -> Self::Future {
        // The clone may not be ready; the readied service goes into the future.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let log = self.log.clone();
        let ctx = call.ctx.clone();
        let params = call.params.clone();
        let trail = call.trail.clone();
        Box::pin(async move {
            let result = inner.call(call).await;
            let state = trail.snapshot();
            let mut facts = CallFacts::of_call(&ctx, &params, &state);
            let outcome = OutcomeFacts::of_result(
                &result,
                &state,
                ctx.started.elapsed(),
                &mut facts.truncated,
            );
            match state.intent_seq {
                Some(intent_seq) => {
                    let body = RecordBody::Outcome {
                        intent_seq,
                        call: facts,
                        outcome,
                    };
                    if let Err(err) = log.append(body).await {
                        tracing::error!(
                            error = %err,
                            request_id = %ctx.request_id,
                            intent_seq,
                            "audit: the outcome of a forwarded call could not be recorded; \
                             its intent stays without an outcome"
                        );
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
                    Ok(_) => result,
                    Err(err) => Err(GatewayError::AuditUnavailable(Box::new(err))),
                },
            }
        })
    }
}

/// The layer just outside the Redshift service: makes the `intent` record durable, notes its
/// seq in the trail, and only then calls the inner service. When the intent cannot be made
/// durable the call fails with [`GatewayError::AuditUnavailable`] and is not forwarded.
///
/// Every call that reaches this layer gets an intent, `validate_only` ones included: whether
/// the service below calls Redshift is its business, and an extra intent is cheaper than an
/// unrecorded call.
#[derive(Clone, Debug)]
pub struct IntentLayer {
    log: AuditLog,
}

impl IntentLayer {
    /// A layer writing to `log`.
    pub fn new(log: AuditLog) -> Self {
        IntentLayer { log }
    }
}

impl<S> Layer<S> for IntentLayer {
    type Service = Intent<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Intent {
            inner,
            log: self.log.clone(),
        }
    }
}

/// The service of [`IntentLayer`].
#[derive(Clone, Debug)]
pub struct Intent<S> {
    inner: S,
    log: AuditLog,
}

impl<S> Service<AssociateCall> for Intent<S>
where
    S: Service<AssociateCall, Response = AssociateReply, Error = GatewayError>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    type Response = AssociateReply;
    type Error = GatewayError;
    type Future = BoxFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: AssociateCall) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let log = self.log.clone();
        Box::pin(async move {
            let facts = CallFacts::of_call(&call.ctx, &call.params, &call.trail.snapshot());
            match log.append(RecordBody::Intent(facts)).await {
                Ok(seq) => {
                    call.trail.lock().intent_seq = Some(seq);
                    inner.call(call).await
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
    use std::sync::Arc;
    use std::time::{Instant, SystemTime};

    use super::*;
    use crate::audit::AuditConfig;
    use crate::call::{
        AssociateParams, CallContext, CallerCredential, Decision, Method, Principal, Trail,
    };

    fn call_with(credential: CallerCredential) -> AssociateCall {
        AssociateCall {
            ctx: CallContext {
                method: Method::AssociateConsumer,
                request_id: "req-1".into(),
                trace_id: None,
                peer: None,
                credential,
                principal: None,
                received_at: SystemTime::now(),
                started: Instant::now(),
                deadline: None,
            },
            params: AssociateParams {
                data_share_arn: "arn:aws:redshift:us-east-1:123456789012:datashare:ns/s".into(),
                consumer_arn: "x".repeat(5000),
                ..AssociateParams::default()
            },
            request: None,
            trail: Arc::new(Trail::default()),
        }
    }

    #[tokio::test]
    async fn records_carry_no_credentials_or_error_causes_and_bound_strings() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let log = AuditLog::open(&AuditConfig::new(tmp.path()))
            .await
            .expect("open");
        let failing = tower::service_fn(|call: AssociateCall| async move {
            call.trail.lock().principal = Some(Principal {
                id: "spiffe://corp/team-a".into(),
                groups: vec!["admins".into()],
            });
            call.trail.lock().decision = Some(Decision {
                allowed: true,
                determining_policies: vec!["permit-team-a".into()],
            });
            Err::<AssociateReply, _>(GatewayError::Internal(
                "aws_secret_access_key=wJalrXUtnFEMIK7MDENG".into(),
            ))
        });
        let mut svc = AuditLayer::new(log.clone()).layer(failing);
        let call = call_with(CallerCredential::Header("Bearer SECRET-TOKEN-123".into()));
        let err = svc
            .call(call)
            .await
            .expect_err("internal error passes through");
        assert!(matches!(err, GatewayError::Internal(_)));
        log.close().await;

        let text = std::fs::read_to_string(
            crate::audit::writer::list_segments(tmp.path()).expect("list")[0]
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

    #[tokio::test]
    async fn a_forwarded_call_gets_intent_then_outcome_with_caller_gone() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let log = AuditLog::open(&AuditConfig::new(tmp.path()))
            .await
            .expect("open");
        let upstream = tower::service_fn(|call: AssociateCall| async move {
            let mut trail = call.trail.lock();
            trail.forwarded = true;
            trail.caller_gone = true;
            trail.upstream.aws_request_id = Some("aws-req-9".into());
            Ok::<_, GatewayError>(AssociateReply::Associated(Default::default()))
        });
        let inner = IntentLayer::new(log.clone()).layer(upstream);
        let mut svc = AuditLayer::new(log.clone()).layer(inner);
        svc.call(call_with(CallerCredential::None))
            .await
            .expect("associated");
        log.close().await;
        let path = crate::audit::writer::list_segments(tmp.path()).expect("list")[0]
            .1
            .clone();
        let text = std::fs::read_to_string(path).expect("read");
        let recs: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0]["kind"], "intent");
        assert_eq!(recs[1]["kind"], "outcome");
        assert_eq!(recs[1]["intent_seq"], recs[0]["seq"]);
        assert_eq!(recs[1]["outcome"]["code"], "OK");
        assert_eq!(recs[1]["outcome"]["caller_gone"], true);
        assert_eq!(recs[1]["outcome"]["forwarded"], true);
        assert_eq!(recs[1]["outcome"]["aws_request_id"], "aws-req-9");
    }
}
