//! Logs are JSON lines when stderr is not a terminal (the test support writes them to a file), and
//! each call's line carries its request id and trace id.

use crate::support;

use datashare_gateway::proto::datasharing::v1::AssociateConsumerRequest;
use support::emulator::Emulator;
use support::gateway::{self, FRONTEND, Gateway, GatewayOptions, REPORTING, SALES_SHARE};
use support::otlp::Receiver;

fn message() -> AssociateConsumerRequest {
    AssociateConsumerRequest {
        data_share_arn: SALES_SHARE.into(),
        associate_entire_account: true,
        ..Default::default()
    }
}

fn json_lines(logs: &str) -> Vec<serde_json::Value> {
    logs.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("a log line is not JSON ({e}): {l}"))
        })
        .collect()
}

/// The log lines of the call with `request_id` (the field is the line's own, top level).
fn lines_of(lines: &[serde_json::Value], request_id: &str) -> Vec<serde_json::Value> {
    lines
        .iter()
        .filter(|l| l["request_id"] == request_id)
        .cloned()
        .collect()
}

fn with_request_id(caller: &str, request_id: &str) -> tonic::Request<AssociateConsumerRequest> {
    let mut request = gateway::as_caller(caller, message());
    request
        .metadata_mut()
        .insert("x-request-id", request_id.parse().expect("ascii"));
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_calls_log_line_is_json_with_its_request_id_and_trace_id() {
    let emulator = Emulator::start();
    let receiver = Receiver::start().await;
    let mut options = GatewayOptions::new(emulator.endpoint_url());
    options.telemetry_toml = format!("otlp_endpoint = {:?}", receiver.endpoint());
    let gw = Gateway::start(options).await;
    let mut client = gw.client().await;

    let allowed = client
        .associate_consumer(with_request_id(REPORTING, "log-allowed-1"))
        .await
        .expect("allowed");
    let denied = client
        .associate_consumer(with_request_id(FRONTEND, "log-denied-1"))
        .await
        .expect_err("denied");
    let trace_of = |metadata: &tonic::metadata::MetadataMap| {
        metadata
            .get("x-trace-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .expect("x-trace-id")
    };
    let cases = [
        ("log-allowed-1", trace_of(allowed.metadata()), "OK"),
        (
            "log-denied-1",
            trace_of(denied.metadata()),
            "PERMISSION_DENIED",
        ),
    ];

    let logs = gw
        .logs_when(|logs| {
            cases
                .iter()
                .all(|(request_id, _, _)| logs.contains(&format!("\"{request_id}\"")))
        })
        .await;
    let lines = json_lines(&logs);
    for (request_id, trace_id, code) in cases {
        let call_lines = lines_of(&lines, request_id);
        assert!(
            !call_lines.is_empty(),
            "no log line carries request_id {request_id}: {lines:#?}"
        );
        for line in &call_lines {
            assert_eq!(line["trace_id"], trace_id.as_str(), "{line}");
            assert!(
                line["timestamp"].is_string() && line["level"].is_string(),
                "{line}"
            );
        }
        let summary = call_lines
            .iter()
            .find(|l| l["message"] == "AssociateConsumer")
            .unwrap_or_else(|| panic!("no summary line for {request_id}: {call_lines:#?}"));
        assert_eq!(summary["code"], code, "{summary}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_exporter_the_log_line_carries_the_callers_trace_id() {
    let emulator = Emulator::start();
    let gw = Gateway::start(GatewayOptions::new(emulator.endpoint_url())).await;
    let mut client = gw.client().await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut request = with_request_id(REPORTING, "log-untraced-1");
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-00f067aa0ba902b7-01")
            .parse()
            .expect("ascii"),
    );
    let response = client.associate_consumer(request).await.expect("call");
    assert_eq!(
        response
            .metadata()
            .get("x-trace-id")
            .and_then(|v| v.to_str().ok()),
        Some(trace_id)
    );
    let lines = json_lines(
        &gw.logs_when(|logs| logs.contains("\"log-untraced-1\""))
            .await,
    );
    let call_lines = lines_of(&lines, "log-untraced-1");
    assert!(!call_lines.is_empty(), "{lines:#?}");
    for line in call_lines {
        assert_eq!(line["trace_id"], trace_id, "{line}");
    }
}
