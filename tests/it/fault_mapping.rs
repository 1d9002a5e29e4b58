//! Every row of the fault-to-status table, provoked through the real aws-sdk-redshift client
//! against the emulator's fault injection, as a caller of the gateway sees it.

use crate::support;

use std::time::Duration;

use datashare_gateway::errors::FaultKind;
use datashare_gateway::proto::datasharing::v1::{
    AssociateConsumerRequest, DisassociateConsumerRequest, ListConsumerDataSharesRequest,
};
use serde_json::json;
use support::emulator::Emulator;
use support::gateway::{self, Gateway, GatewayOptions, REPORTING, SALES_SHARE};
use tonic::Code;
use tonic_types::StatusExt;

const OP: &str = "AssociateDataShareConsumer";

fn entire_account(share: &str) -> AssociateConsumerRequest {
    AssociateConsumerRequest {
        data_share_arn: share.into(),
        associate_entire_account: true,
        ..Default::default()
    }
}

/// Calls the gateway as the data-platform principal and returns the error status.
async fn call_err(gw: &Gateway, message: AssociateConsumerRequest) -> tonic::Status {
    let mut client = gw.client().await;
    client
        .associate_consumer(gateway::as_caller(REPORTING, message))
        .await
        .expect_err("the call should fail")
}

/// Checks the ErrorInfo every error carries and returns its reason and metadata.
fn error_info(status: &tonic::Status) -> (String, std::collections::HashMap<String, String>) {
    let details = status.get_error_details();
    let info = details
        .error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    assert_eq!(info.domain, "datashare-gateway");
    assert!(
        info.metadata.contains_key("request_id"),
        "{:?}",
        info.metadata
    );
    (info.reason.clone(), info.metadata.clone())
}

#[tokio::test]
async fn invalid_datashare_fault_is_failed_precondition() {
    let emulator = Emulator::start();
    let gw = Gateway::start(GatewayOptions::new(emulator.endpoint_url())).await;
    let status = call_err(&gw, entire_account(support::gateway::FINANCE_SHARE)).await;
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    let (reason, metadata) = error_info(&status);
    assert_eq!(reason, "InvalidDataShareFault");
    assert!(
        metadata
            .get("aws_request_id")
            .is_some_and(|id| !id.is_empty()),
        "{metadata:?}"
    );
    assert_eq!(
        metadata.get("aws_error_code").map(String::as_str),
        Some("InvalidDataShareFault")
    );
}

#[tokio::test]
async fn invalid_namespace_fault_is_not_found() {
    let emulator = Emulator::start();
    let gw = Gateway::start(GatewayOptions::new(emulator.endpoint_url())).await;
    // Well-formed, in the consumer account, but no such namespace.
    let unknown =
        "arn:aws:redshift:us-east-1:444455556666:namespace:00000000-0000-4000-8000-000000000000";
    let status = call_err(&gw, gateway::namespace_request(SALES_SHARE, unknown)).await;
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert_eq!(error_info(&status).0, "InvalidNamespaceFault");
}

#[tokio::test]
async fn every_other_aws_error_code_maps_by_the_table() {
    let emulator = Emulator::start();
    let gw = Gateway::start(GatewayOptions::new(emulator.endpoint_url())).await;
    let rows = [
        ("InvalidParameterValue", 400, Code::InvalidArgument),
        ("InvalidParameterCombination", 400, Code::InvalidArgument),
        ("MissingParameter", 400, Code::InvalidArgument),
        ("ResourceNotFoundFault", 404, Code::NotFound),
        ("UnauthorizedOperation", 400, Code::PermissionDenied),
        ("UnsupportedOperation", 400, Code::FailedPrecondition),
        ("ThrottlingException", 400, Code::ResourceExhausted),
        ("ExpiredToken", 400, Code::Internal),
        ("AccessDenied", 403, Code::Internal),
        ("BrandNewFault", 400, Code::Unknown),
    ];
    for (aws_code, http_status, want) in rows {
        // Three rules' worth: a retried code (throttling) sees the SDK's three attempts.
        emulator.inject_fault(
            json!({"kind": "error", "code": aws_code, "status": http_status, "operation": OP, "count": 3}),
        );
        let status = call_err(&gw, entire_account(SALES_SHARE)).await;
        emulator.clear_faults();
        assert_eq!(status.code(), want, "{aws_code}: {status:?}");
        let (reason, metadata) = error_info(&status);
        assert_eq!(reason, aws_code);
        assert_eq!(
            metadata.get("aws_error_code").map(String::as_str),
            Some(aws_code)
        );
    }
}

#[tokio::test]
async fn throttling_after_the_sdk_retries_is_resource_exhausted_with_retry_info() {
    let emulator = Emulator::start();
    let gw = Gateway::start(GatewayOptions::new(emulator.endpoint_url())).await;
    emulator.inject_fault(json!({"kind": "throttling", "operation": OP, "count": 3}));
    let status = call_err(&gw, entire_account(SALES_SHARE)).await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(error_info(&status).0, "Throttling");
    let retry = status
        .get_error_details()
        .retry_info()
        .and_then(|r| r.retry_delay);
    assert_eq!(retry, Some(Duration::from_millis(1500)));
    // The SDK made its three attempts before giving up.
    let attempts = emulator.attempts(OP);
    assert_eq!(attempts.values().sum::<u64>(), 3, "{attempts:?}");
    assert_eq!(attempts.keys().copied().collect::<Vec<_>>(), [1, 2, 3]);
}

#[tokio::test]
async fn throttling_that_stops_within_the_retries_succeeds() {
    let emulator = Emulator::start();
    let gw = Gateway::start(GatewayOptions::new(emulator.endpoint_url())).await;
    emulator.inject_fault(json!({"kind": "throttling", "operation": OP, "count": 2}));
    let mut client = gw.client().await;
    let reply = client
        .associate_consumer(gateway::as_caller(REPORTING, entire_account(SALES_SHARE)))
        .await;
    assert!(reply.is_ok(), "{reply:?}");
    assert_eq!(emulator.counter(OP, "received"), 3);
}

#[tokio::test]
async fn a_bare_429_is_resource_exhausted_without_retries() {
    let emulator = Emulator::start();
    let gw = Gateway::start(GatewayOptions::new(emulator.endpoint_url())).await;
    emulator.inject_fault(json!({"kind": "bare_429", "operation": OP, "count": 1}));
    let status = call_err(&gw, entire_account(SALES_SHARE)).await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(
        emulator.counter(OP, "received"),
        1,
        "the Rust SDK does not retry a bare 429"
    );
}

#[tokio::test]
async fn server_errors_after_retries_are_unavailable() {
    let emulator = Emulator::start();
    let gw = Gateway::start(GatewayOptions::new(emulator.endpoint_url())).await;
    for (kind, code) in [
        ("internal_failure", "InternalFailure"),
        ("service_unavailable", "ServiceUnavailable"),
    ] {
        emulator.reset_counters();
        emulator.inject_fault(json!({"kind": kind, "operation": OP, "count": 3}));
        let status = call_err(&gw, entire_account(SALES_SHARE)).await;
        assert_eq!(status.code(), Code::Unavailable, "{kind}: {status:?}");
        assert_eq!(error_info(&status).0, code);
        assert_eq!(emulator.counter(OP, "received"), 3, "{kind} is retried");
    }
}

#[tokio::test]
async fn an_attempt_timeout_is_deadline_exceeded() {
    let emulator = Emulator::start();
    let mut options = GatewayOptions::new(emulator.endpoint_url());
    options.max_attempts = 2;
    options.attempt_timeout_ms = 200;
    let gw = Gateway::start(options).await;
    emulator.inject_fault(json!({"kind": "latency", "latency_ms": 2000, "operation": OP}));
    let status = call_err(&gw, entire_account(SALES_SHARE)).await;
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(error_info(&status).0, "UPSTREAM_TIMEOUT");
}

#[tokio::test]
async fn an_operation_timeout_is_deadline_exceeded() {
    let emulator = Emulator::start();
    let mut options = GatewayOptions::new(emulator.endpoint_url());
    options.attempt_timeout_ms = 250;
    options.operation_timeout_ms = 300;
    let gw = Gateway::start(options).await;
    emulator.inject_fault(json!({"kind": "latency", "latency_ms": 2000, "operation": OP}));
    let status = call_err(&gw, entire_account(SALES_SHARE)).await;
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(error_info(&status).0, "UPSTREAM_TIMEOUT");
}

/// A gRPC call over a bare HTTP/2 connection: the `grpc-timeout` header without the client-side
/// timer every gRPC library adds, so what is seen is the gateway's own answer to an expired deadline.
async fn raw_call_with_grpc_timeout(
    gw: &Gateway,
    message: AssociateConsumerRequest,
    timeout: &str,
) -> (String, String) {
    raw_call_with_grpc_timeout_id(gw, message, timeout, "raw-call").await
}

/// As [`raw_call_with_grpc_timeout`], with an `x-request-id`.
async fn raw_call_with_grpc_timeout_id(
    gw: &Gateway,
    message: AssociateConsumerRequest,
    timeout: &str,
    request_id: &str,
) -> (String, String) {
    use http_body_util::{BodyExt, Full};
    use prost::Message;
    let stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let payload = message.encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&payload);
    let request = http::Request::post(format!(
        "http://{}/datasharing.v1.DataSharing/AssociateConsumer",
        gw.addr
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .header("grpc-timeout", timeout)
    .header("x-caller-id", REPORTING)
    .header("x-request-id", request_id)
    .body(Full::new(bytes::Bytes::from(frame)))
    .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let collected = body.collect().await.unwrap();
    // A status without a body comes in the headers ("trailers-only"); otherwise in the trailers.
    let trailers = collected.trailers().cloned().unwrap_or(parts.headers);
    let get = |k: &str| {
        trailers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    (get("grpc-status"), get("grpc-message"))
}

#[tokio::test]
async fn the_callers_own_deadline_is_deadline_exceeded_not_cancelled() {
    let emulator = Emulator::start();
    let gw = Gateway::start(GatewayOptions::new(emulator.endpoint_url())).await;
    emulator.inject_fault(json!({"kind": "latency", "latency_ms": 1500, "operation": OP}));
    let (status, message) =
        raw_call_with_grpc_timeout(&gw, entire_account(SALES_SHARE), "300m").await;
    assert_eq!(
        status,
        (Code::DeadlineExceeded as i32).to_string(),
        "{message}; {}",
        gw.logs()
    );
}

/// The calls metric counts what the caller got: a call whose deadline passes in the gateway is
/// DEADLINE_EXCEEDED there (canonical name, as in the audit trail), although the call runs on to
/// its own end (OK here), and no OK is counted for it.
#[tokio::test]
async fn a_deadline_passed_in_the_gateway_is_counted_as_deadline_exceeded() {
    let emulator = Emulator::start();
    let gw = Gateway::start(GatewayOptions::new(emulator.endpoint_url())).await;
    emulator
        .inject_fault(json!({"kind": "latency", "latency_ms": 1500, "operation": OP, "count": 1}));
    let (status, message) =
        raw_call_with_grpc_timeout_id(&gw, entire_account(SALES_SHARE), "300m", "late-1").await;
    assert_eq!(
        status,
        (Code::DeadlineExceeded as i32).to_string(),
        "{message}"
    );
    let outcome = gateway::outcome_of(&gw.audit_dir, "late-1").await;
    assert_eq!(outcome["outcome"]["code"], "OK", "{outcome}");
    assert_eq!(outcome["outcome"]["caller_gone"], true, "{outcome}");
    let m = crate::support::prometheus::scrape(gw.admin).await;
    let calls = |code: &str| {
        m.value(
            "datashare_gateway_calls_total",
            &[("method", "AssociateConsumer"), ("code", code)],
        )
    };
    assert_eq!(calls("DEADLINE_EXCEEDED"), Some(1.0), "{}", m.text);
    assert_eq!(m.sum("datashare_gateway_calls_total"), 1.0, "{}", m.text);
}

#[tokio::test]
async fn connection_refused_is_unavailable() {
    // A port that was just free: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut options = GatewayOptions::new(format!("http://{closed}"));
    options.max_attempts = 2;
    let gw = Gateway::start(options).await;
    let status = call_err(&gw, entire_account(SALES_SHARE)).await;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(error_info(&status).0, "UPSTREAM_UNREACHABLE");
}

#[tokio::test]
async fn a_connection_closed_without_an_answer_is_unavailable() {
    let emulator = Emulator::start();
    let gw = Gateway::start(GatewayOptions::new(emulator.endpoint_url())).await;
    emulator.inject_fault(json!({"kind": "close_connection", "operation": OP, "count": 3}));
    let status = call_err(&gw, entire_account(SALES_SHARE)).await;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(error_info(&status).0, "UPSTREAM_UNREACHABLE");
}

#[tokio::test]
async fn the_gateways_rejected_credentials_are_internal_and_logged() {
    let emulator = Emulator::start();
    for (access_key, secret, code) in [
        (
            "AKIAIOSFODNN7EXAMPLE",
            "not-the-secret",
            "SignatureDoesNotMatch",
        ),
        ("AKIAUNKNOWNKEY000000", "whatever", "InvalidClientTokenId"),
    ] {
        let mut options = GatewayOptions::new(emulator.endpoint_url());
        options.access_key = access_key.into();
        options.secret_key = secret.into();
        let gw = Gateway::start(options).await;
        let status = call_err(&gw, entire_account(SALES_SHARE)).await;
        assert_eq!(status.code(), Code::Internal, "{code}: {status:?}");
        assert_eq!(error_info(&status).0, code);
        assert!(
            !status.message().contains(secret),
            "the message must not leak the secret"
        );
        assert!(
            !gw.logs_after_a_call_of("AssociateConsumer")
                .await
                .contains(secret),
            "the logs must not leak the secret"
        );
    }
}

#[tokio::test]
async fn an_unparseable_answer_is_unknown() {
    let emulator = Emulator::start();
    let gw = Gateway::start(GatewayOptions::new(emulator.endpoint_url())).await;
    emulator.inject_fault(json!({"kind": "malformed_body", "operation": OP, "count": 1}));
    let status = call_err(&gw, entire_account(SALES_SHARE)).await;
    assert_eq!(status.code(), Code::Unknown, "{status:?}");
}

/// A Redshift outcome of `kind`, as the emulator's fault injection provokes it for `operation`
/// (the gateway under test makes at most 2 attempts of 300 ms each). `None` for the kinds only
/// a role session can meet: `accounts.rs` and `sts_faults.rs` provoke those through STS.
fn provoke(kind: FaultKind, operation: &str) -> Option<serde_json::Value> {
    let error = |code: &str, status: u16| json!({"kind": "error", "code": code, "status": status, "operation": operation, "count": 2});
    Some(match kind {
        FaultKind::InvalidState => error("InvalidDataShareFault", 400),
        FaultKind::NotFound => error("InvalidNamespaceFault", 400),
        FaultKind::InvalidParameter => error("InvalidParameterValue", 400),
        FaultKind::Unauthorized => error("UnauthorizedOperation", 400),
        FaultKind::Throttled => json!({"kind": "throttling", "operation": operation, "count": 2}),
        FaultKind::ServiceFailure => {
            json!({"kind": "internal_failure", "operation": operation, "count": 2})
        }
        FaultKind::Timeout => {
            json!({"kind": "latency", "latency_ms": 2000, "operation": operation})
        }
        FaultKind::Unreachable => {
            json!({"kind": "close_connection", "operation": operation, "count": 2})
        }
        FaultKind::CredentialsRejected => error("InvalidClientTokenId", 403),
        FaultKind::Unknown => json!({"kind": "malformed_body", "operation": operation, "count": 2}),
        FaultKind::AssumeRoleDenied | FaultKind::SessionExpired | FaultKind::RegionDisabled => {
            return None;
        }
    })
}

/// Every fault kind of the one mapping, for DisassociateConsumer and ListConsumerDataShares:
/// the status a caller sees is the one `status::fault_code` gives the kind.
#[tokio::test]
async fn every_fault_kind_maps_by_the_one_table_for_the_new_methods() {
    let emulator = Emulator::start();
    let mut options = GatewayOptions::new(emulator.endpoint_url());
    options.max_attempts = 2;
    options.attempt_timeout_ms = 300;
    let gw = Gateway::start(options).await;
    let mut client = gw.client().await;
    for kind in FaultKind::ALL {
        let expected = datashare_gateway::status::fault_code(kind);
        for operation in [
            "DisassociateDataShareConsumer",
            "DescribeDataSharesForConsumer",
        ] {
            let Some(fault) = provoke(kind, operation) else {
                continue;
            };
            emulator.clear_faults();
            emulator.inject_fault(fault);
            let result = if operation == "DisassociateDataShareConsumer" {
                client
                    .disassociate_consumer(gateway::as_caller(
                        REPORTING,
                        DisassociateConsumerRequest {
                            data_share_arn: SALES_SHARE.into(),
                            disassociate_entire_account: true,
                            ..Default::default()
                        },
                    ))
                    .await
                    .map(|_| ())
            } else {
                client
                    .list_consumer_data_shares(gateway::as_caller(
                        REPORTING,
                        ListConsumerDataSharesRequest::default(),
                    ))
                    .await
                    .map(|_| ())
            };
            let status = result.expect_err(&format!("{kind:?} {operation}"));
            assert_eq!(status.code(), expected, "{kind:?} {operation}: {status:?}");
            let (reason, _) = error_info(&status);
            assert!(!reason.is_empty(), "{kind:?} {operation}");
        }
    }
    emulator.clear_faults();
}

/// A deadline that is spent, or nearly, on arrival: the caller hears DEADLINE_EXCEEDED and
/// nothing is carried out behind its back (no intent, nothing forwarded); the record says why.
///
/// tonic runs its own `grpc-timeout` timer outside the gateway, from the moment the headers are
/// read. A deadline of a few milliseconds or less can run out before the gateway has decoded the
/// call (the body comes in a frame of its own; on a loaded machine the gateway may not run in
/// time): tonic then answers CANCELLED ("Timeout expired") and there never was a call, so it is
/// neither forwarded nor recorded, as for any request refused before it is decoded
/// (docs/audit.md). Either way nothing reaches Redshift. The gateway's own refusal is shown
/// without that race by `a_deadline_shorter_than_the_configured_minimum_is_refused_and_recorded`.
#[tokio::test]
async fn a_call_whose_deadline_is_spent_is_not_carried_out() {
    let emulator = Emulator::start();
    let gw = Gateway::start(GatewayOptions::new(emulator.endpoint_url())).await;
    let mut answered_by_the_gateway = Vec::new();
    for (timeout, request_id) in [("0n", "spent-0n"), ("1m", "spent-1m"), ("40m", "spent-40m")] {
        let (status, message) =
            raw_call_with_grpc_timeout_id(&gw, entire_account(SALES_SHARE), timeout, request_id)
                .await;
        match status.as_str() {
            "4" => answered_by_the_gateway.push(request_id),
            "1" => assert!(message.contains("Timeout"), "{timeout}: {message}"),
            _ => panic!(
                "grpc-timeout {timeout}: status {status} ({message}), want DEADLINE_EXCEEDED"
            ),
        }
    }
    // The stack runs on after the caller is answered; give it time to (not) forward.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        emulator.counter(OP, "received"),
        0,
        "nothing reached Redshift"
    );
    let records = gateway::audit_records(&gw.audit_dir);
    for request_id in ["spent-0n", "spent-1m", "spent-40m"] {
        let mine: Vec<_> = records
            .iter()
            .filter(|r| r["request_id"] == request_id)
            .collect();
        if !answered_by_the_gateway.contains(&request_id) {
            assert!(mine.is_empty(), "never a call, never recorded: {mine:#?}");
            continue;
        }
        assert_eq!(mine.len(), 1, "one record, no intent: {mine:#?}");
        assert_eq!(mine[0]["kind"], "call");
        assert_eq!(mine[0]["outcome"]["code"], "DEADLINE_EXCEEDED");
        assert_eq!(mine[0]["outcome"]["reason"], "DEADLINE_TOO_SHORT");
        assert_eq!(mine[0]["outcome"]["forwarded"], false);
    }
    // A deadline with room is served.
    let (status, _) =
        raw_call_with_grpc_timeout_id(&gw, entire_account(SALES_SHARE), "5S", "roomy").await;
    assert_eq!(status, "0");
}

/// With `upstream.min_remaining_deadline_ms` above the caller's deadline, the gateway refuses the
/// call itself, long before tonic's timer could: DEADLINE_EXCEEDED, recorded as
/// DEADLINE_TOO_SHORT, no intent, nothing forwarded.
#[tokio::test]
async fn a_deadline_shorter_than_the_configured_minimum_is_refused_and_recorded() {
    let emulator = Emulator::start();
    let mut options = GatewayOptions::new(emulator.endpoint_url());
    options.upstream_toml = "min_remaining_deadline_ms = 10000".into();
    let gw = Gateway::start(options).await;
    let (status, message) =
        raw_call_with_grpc_timeout_id(&gw, entire_account(SALES_SHARE), "3S", "too-short").await;
    assert_eq!(status, "4", "{message}");
    assert_eq!(
        emulator.counter(OP, "received"),
        0,
        "nothing reached Redshift"
    );
    let records = gateway::audit_records(&gw.audit_dir);
    let mine: Vec<_> = records
        .iter()
        .filter(|r| r["request_id"] == "too-short")
        .collect();
    assert_eq!(mine.len(), 1, "one record, no intent: {mine:#?}");
    assert_eq!(mine[0]["kind"], "call");
    assert_eq!(mine[0]["outcome"]["code"], "DEADLINE_EXCEEDED");
    assert_eq!(mine[0]["outcome"]["reason"], "DEADLINE_TOO_SHORT");
    assert_eq!(mine[0]["outcome"]["forwarded"], false);
}

/// A `grpc-timeout` the gateway cannot read is refused, not taken as "no deadline".
#[tokio::test]
async fn a_malformed_grpc_timeout_is_invalid_argument() {
    let emulator = Emulator::start();
    let gw = Gateway::start(GatewayOptions::new(emulator.endpoint_url())).await;
    for timeout in ["abc", "-1S", "5x", "123456789S", "+5S", "S"] {
        let (status, message) =
            raw_call_with_grpc_timeout_id(&gw, entire_account(SALES_SHARE), timeout, "bad").await;
        assert_eq!(status, "3", "grpc-timeout {timeout:?}: {message}");
        assert!(message.contains("grpc-timeout"), "{message}");
    }
    assert_eq!(emulator.counter(OP, "received"), 0);
}
