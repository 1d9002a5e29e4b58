//! Traces over OTLP/gRPC to a receiver inside the test: the caller's `traceparent` is the parent,
//! the RPC, the policy and audit-intent stages, the Redshift call and each SDK attempt are spans
//! of that trace, the trace id reaches the audit record and the response metadata; an
//! unreachable collector costs calls nothing and its lost spans are counted; the standard
//! `OTEL_*` variables work.

use crate::support;

use std::time::Duration;

use datashare_gateway::proto::datasharing::v1::AssociateConsumerRequest;
use serde_json::json;
use support::emulator::Emulator;
use support::gateway::{self, FINANCE_SHARE, Gateway, GatewayOptions, REPORTING, SALES_SHARE};
use support::otlp::{ReceivedSpan, Receiver};
use tonic::Code;

const RPC_SPAN: &str = "datasharing.v1.DataSharing/AssociateConsumer";
const UPSTREAM_SPAN: &str = "Redshift/AssociateDataShareConsumer";
const ATTEMPT_SPAN: &str = "try_attempt";
/// Long enough for the gateway's 500 ms export delay many times over.
const ARRIVAL: Duration = Duration::from_secs(20);

fn options(emulator: &Emulator, otlp_endpoint: &str) -> GatewayOptions {
    let mut options = GatewayOptions::new(emulator.endpoint_url());
    options.telemetry_toml = format!("otlp_endpoint = {otlp_endpoint:?}");
    options
}

fn message(share: &str) -> AssociateConsumerRequest {
    AssociateConsumerRequest {
        data_share_arn: share.into(),
        associate_entire_account: true,
        ..Default::default()
    }
}

/// A request from REPORTING carrying `traceparent: 00-<trace_id>-<parent>-01`.
fn traced(
    message: AssociateConsumerRequest,
    trace_id: &str,
    parent: &str,
) -> tonic::Request<AssociateConsumerRequest> {
    let mut request = gateway::as_caller(REPORTING, message);
    let traceparent = format!("00-{trace_id}-{parent}-01");
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().expect("ascii"));
    request
        .metadata_mut()
        .insert("tracestate", "vendor=opaque".parse().expect("ascii"));
    request
}

fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

/// Whether `span` descends from `ancestor` among `spans`.
fn descends_from(spans: &[ReceivedSpan], span: &ReceivedSpan, ancestor: &ReceivedSpan) -> bool {
    let mut parent = span.parent_span_id.clone();
    for _ in 0..spans.len() {
        if parent == ancestor.span_id {
            return true;
        }
        match spans.iter().find(|s| s.span_id == parent) {
            Some(p) => parent = p.parent_span_id.clone(),
            None => return false,
        }
    }
    false
}

fn one<'a>(spans: &'a [ReceivedSpan], name: &str) -> &'a ReceivedSpan {
    let found: Vec<_> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "one {name} span expected in {spans:#?}");
    found[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traced_call_continues_the_callers_trace_through_every_stage_and_each_sdk_attempt() {
    let emulator = Emulator::start();
    let receiver = Receiver::start().await;
    let gw = Gateway::start(options(&emulator, &receiver.endpoint())).await;
    let mut client = gw.client().await;
    // Two throttles, then success: three SDK attempts under one Redshift call.
    emulator.inject_fault(json!({
        "kind": "throttling",
        "operation": "AssociateDataShareConsumer",
        "count": 2,
    }));

    let trace_id = random_hex(16);
    let caller_span = random_hex(8);
    let mut request = traced(message(SALES_SHARE), &trace_id, &caller_span);
    request
        .metadata_mut()
        .insert("x-request-id", "trace-test-1".parse().expect("ascii"));
    let response = client
        .associate_consumer(request)
        .await
        .expect("the call succeeds after two throttles");
    assert_eq!(
        response
            .metadata()
            .get("x-trace-id")
            .and_then(|v| v.to_str().ok()),
        Some(trace_id.as_str()),
        "the response names the caller's trace"
    );

    let spans = receiver
        .wait_for(ARRIVAL, |spans| {
            spans.iter().any(|s| s.name == RPC_SPAN)
                && spans.iter().filter(|s| s.name == ATTEMPT_SPAN).count() >= 3
        })
        .await;
    let spans: Vec<_> = spans
        .into_iter()
        .filter(|s| s.trace_id == trace_id)
        .collect();

    let rpc = one(&spans, RPC_SPAN);
    assert_eq!(
        rpc.parent_span_id, caller_span,
        "the caller's span is the parent"
    );
    assert_eq!(rpc.attr("rpc.system"), Some("grpc"));
    assert_eq!(rpc.attr("rpc.service"), Some("datasharing.v1.DataSharing"));
    assert_eq!(rpc.attr("rpc.method"), Some("AssociateConsumer"));
    assert_eq!(rpc.attr("rpc.grpc.status_code"), Some("0"));
    assert_eq!(rpc.attr("principal"), Some(REPORTING));
    assert_eq!(rpc.attr("policy.decision"), Some("allow"));
    assert_eq!(rpc.attr("request_id"), Some("trace-test-1"));
    assert!(
        rpc.events.is_empty(),
        "the access line repeats these attributes; it is not sent again as an event: {:?}",
        rpc.events
    );

    // Identity and validation take microseconds and have no span of their own.
    for stage in ["policy", "audit.intent"] {
        let span = one(&spans, stage);
        assert!(
            descends_from(&spans, span, rpc),
            "{stage} is inside the RPC span"
        );
    }

    let upstream = one(&spans, UPSTREAM_SPAN);
    assert!(descends_from(&spans, upstream, rpc));
    assert!(
        upstream
            .attr("aws.request_id")
            .is_some_and(|id| !id.is_empty()),
        "{upstream:?}"
    );
    assert_eq!(upstream.attr("aws.error_code"), None);

    let mut attempts: Vec<_> = spans
        .iter()
        .filter(|s| s.name == ATTEMPT_SPAN)
        .inspect(|s| {
            assert_eq!(
                s.parent_span_id, upstream.span_id,
                "an SDK attempt is a child of the Redshift span: {s:?}"
            )
        })
        .map(|s| s.attr("attempt").unwrap_or_default().to_owned())
        .collect();
    attempts.sort();
    assert_eq!(attempts, ["1", "2", "3"], "one span per SDK attempt");

    let records: Vec<_> = gateway::audit_records(&gw.audit_dir)
        .into_iter()
        .filter(|r| r["request_id"] == "trace-test-1")
        .collect();
    assert!(!records.is_empty(), "the call has audit records");
    for record in records {
        assert_eq!(record["trace_id"], trace_id.as_str(), "{record}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_call_records_the_grpc_status_and_the_aws_error_code_on_its_spans() {
    let emulator = Emulator::start();
    let receiver = Receiver::start().await;
    let gw = Gateway::start(options(&emulator, &receiver.endpoint())).await;
    let mut client = gw.client().await;

    let trace_id = random_hex(16);
    // finance_share was never granted to the consumer account: InvalidDataShareFault.
    let status = client
        .associate_consumer(traced(message(FINANCE_SHARE), &trace_id, &random_hex(8)))
        .await
        .expect_err("finance_share is not associable");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(
        status
            .metadata()
            .get("x-trace-id")
            .and_then(|v| v.to_str().ok()),
        Some(trace_id.as_str())
    );

    let spans = receiver
        .wait_for(ARRIVAL, |spans| spans.iter().any(|s| s.name == RPC_SPAN))
        .await;
    let spans: Vec<_> = spans
        .into_iter()
        .filter(|s| s.trace_id == trace_id)
        .collect();
    let rpc = one(&spans, RPC_SPAN);
    assert_eq!(
        rpc.attr("rpc.grpc.status_code"),
        Some((Code::FailedPrecondition as i32).to_string().as_str())
    );
    assert_eq!(rpc.attr("policy.decision"), Some("allow"));
    let upstream = one(&spans, UPSTREAM_SPAN);
    assert_eq!(
        upstream.attr("aws.error_code"),
        Some("InvalidDataShareFault")
    );
    assert!(
        upstream
            .attr("aws.request_id")
            .is_some_and(|id| !id.is_empty())
    );
}

/// Makes `calls` sequential calls, each with a 2 s deadline (an exporter on the call path would
/// blow it), then waits for `/metrics` to count dropped spans.
async fn calls_succeed_and_lost_spans_are_counted(gw: &Gateway, calls: usize) {
    let mut client = gw.client().await;
    for i in 0..calls {
        let mut request = gateway::as_caller(REPORTING, message(SALES_SHARE));
        request.set_timeout(Duration::from_secs(2));
        client
            .associate_consumer(request)
            .await
            .unwrap_or_else(|s| panic!("call {i} failed with the collector away: {s:?}"));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let dropped = loop {
        let scrape = support::prometheus::scrape(gw.admin).await;
        let dropped = scrape
            .value("datashare_gateway_trace_spans_dropped_total", &[])
            .expect("the dropped-spans counter is exposed");
        if dropped > 0.0 || tokio::time::Instant::now() >= deadline {
            break dropped;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        dropped > 0.0,
        "spans that could not be exported are counted"
    );
    // The gateway still answers after the exports failed.
    let mut request = gateway::as_caller(REPORTING, message(SALES_SHARE));
    request.set_timeout(Duration::from_secs(2));
    client
        .associate_consumer(request)
        .await
        .expect("calls still succeed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_refuses_connections_costs_calls_nothing_and_its_spans_are_counted() {
    let emulator = Emulator::start();
    // A port nobody listens on: bind, note it, close.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let gw = Gateway::start(options(&emulator, &format!("http://{closed}"))).await;
    calls_succeed_and_lost_spans_are_counted(&gw, 30).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_never_answers_costs_calls_nothing_and_its_spans_are_counted() {
    let emulator = Emulator::start();
    // Accepts connections and never reads or writes: every export hangs until it times out.
    let black_hole = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = black_hole.local_addr().expect("addr");
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = black_hole.accept().await {
            held.push(stream);
        }
    });
    let gw = Gateway::start(options(&emulator, &format!("http://{addr}"))).await;
    calls_succeed_and_lost_spans_are_counted(&gw, 30).await;
    holder.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standard_otel_environment_variables_configure_the_exporter_and_service_name() {
    let emulator = Emulator::start();
    let receiver = Receiver::start().await;
    let mut options = GatewayOptions::new(emulator.endpoint_url());
    // No otlp_endpoint in the config: only the environment names the collector.
    options.env = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), receiver.endpoint()),
        ("OTEL_SERVICE_NAME".into(), "gateway-from-env".into()),
    ];
    let gw = Gateway::start(options).await;
    let mut client = gw.client().await;
    let trace_id = random_hex(16);
    client
        .associate_consumer(traced(message(SALES_SHARE), &trace_id, &random_hex(8)))
        .await
        .expect("call");

    let spans = receiver
        .wait_for(ARRIVAL, |spans| spans.iter().any(|s| s.name == RPC_SPAN))
        .await;
    let rpc = one(&spans, RPC_SPAN);
    assert_eq!(rpc.trace_id, trace_id);
    assert_eq!(rpc.service_name.as_deref(), Some("gateway-from-env"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configured_service_name_names_the_resource_and_shutdown_flushes_spans() {
    let emulator = Emulator::start();
    let receiver = Receiver::start().await;
    let mut options = options(&emulator, &receiver.endpoint());
    options
        .telemetry_toml
        .push_str("\nservice_name = \"gateway-from-config\"");
    let mut gw = Gateway::start(options).await;
    let mut client = gw.client().await;
    client
        .associate_consumer(gateway::as_caller(REPORTING, message(SALES_SHARE)))
        .await
        .expect("call");
    drop(client);
    // SIGTERM flushes the queue: the spans are there once the process has exited.
    assert!(gw.terminate().await, "clean exit");
    let spans = receiver.spans();
    let rpc = one(&spans, RPC_SPAN);
    assert_eq!(rpc.service_name.as_deref(), Some("gateway-from-config"));
    assert_eq!(rpc.trace_id.len(), 32, "a trace of its own: {rpc:?}");
    assert!(
        rpc.parent_span_id.is_empty(),
        "a root span without traceparent"
    );
}

/// Through a role session: an `sts.AssumeRole` span inside the call's trace, a cache miss on the
/// first call and a hit on the second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_session_is_traced_as_sts_assume_role_with_its_cache_outcome() {
    let emulator = Emulator::start();
    let receiver = Receiver::start().await;
    let mut options = GatewayOptions::with_roles(emulator.endpoint_url());
    options.telemetry_toml = format!("otlp_endpoint = {:?}", receiver.endpoint());
    let gw = Gateway::start(options).await;
    let mut client = gw.client().await;
    let mut trace_ids = Vec::new();
    for _ in 0..2 {
        let trace_id = random_hex(16);
        client
            .associate_consumer(traced(message(SALES_SHARE), &trace_id, &random_hex(8)))
            .await
            .expect("associated through the role");
        trace_ids.push(trace_id);
    }
    let spans = receiver
        .wait_for(ARRIVAL, |spans| {
            spans.iter().filter(|s| s.name == "sts.AssumeRole").count() >= 2
                && spans.iter().filter(|s| s.name == RPC_SPAN).count() >= 2
        })
        .await;
    for (trace_id, hit) in trace_ids.iter().zip(["false", "true"]) {
        let in_trace: Vec<_> = spans
            .iter()
            .filter(|s| &s.trace_id == trace_id)
            .cloned()
            .collect();
        let rpc = one(&in_trace, RPC_SPAN);
        let sts = one(&in_trace, "sts.AssumeRole");
        assert!(descends_from(&in_trace, sts, rpc), "{sts:?}");
        assert_eq!(sts.attr("cache.hit"), Some(hit), "{sts:?}");
        if hit == "false" {
            assert!(
                sts.attr("aws.request_id").is_some_and(|id| !id.is_empty()),
                "{sts:?}"
            );
        }
    }
    assert_eq!(emulator.counter("AssumeRole", "received"), 1);
}
