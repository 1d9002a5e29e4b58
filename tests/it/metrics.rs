//! The admin listener: `/metrics` in the Prometheus text format counts exactly what happened, and
//! `/livez` and `/readyz` answer as grpc.health.v1 does.

use crate::support;

use datashare_gateway::proto::datasharing::v1::AssociateConsumerRequest;
use serde_json::json;
use support::emulator::Emulator;
use support::gateway::{
    self, FINANCE_SHARE, FRONTEND, Gateway, GatewayOptions, REPORTING, SALES_SHARE,
};
use support::prometheus::{get, scrape};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const METHOD: &str = "AssociateConsumer";
const OP: &str = "AssociateDataShareConsumer";

fn entire_account(share: &str) -> AssociateConsumerRequest {
    AssociateConsumerRequest {
        data_share_arn: share.into(),
        associate_entire_account: true,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_calls_decisions_upstream_outcomes_retries_and_audit_exactly() {
    let emulator = Emulator::start();
    let gw = Gateway::start(GatewayOptions::new(emulator.endpoint_url())).await;
    let mut client = gw.client().await;
    let mut call = async |caller: &str, message: AssociateConsumerRequest| {
        client
            .associate_consumer(gateway::as_caller(caller, message))
            .await
            .map(|_| ())
            .map_err(|s| s.code())
    };

    // One throttle on the first call: one SDK retry, the call still succeeds.
    emulator.inject_fault(json!({"kind": "throttling", "operation": OP, "count": 1}));
    for _ in 0..3 {
        assert_eq!(call(REPORTING, entire_account(SALES_SHARE)).await, Ok(()));
    }
    for _ in 0..2 {
        // FRONTEND is in no group: policy denies.
        assert_eq!(
            call(FRONTEND, entire_account(SALES_SHARE)).await,
            Err(Code::PermissionDenied)
        );
    }
    for _ in 0..4 {
        assert_eq!(
            call(REPORTING, entire_account("not-an-arn")).await,
            Err(Code::InvalidArgument)
        );
    }
    // finance_share was never granted to the consumer account: InvalidDataShareFault.
    assert_eq!(
        call(REPORTING, entire_account(FINANCE_SHARE)).await,
        Err(Code::FailedPrecondition)
    );

    // Outcomes are written just after their replies: scrape once every one is.
    gateway::audit_records(&gw.audit_dir);
    let m = scrape(gw.admin).await;
    let calls = |code: &str| {
        m.value(
            "datashare_gateway_calls_total",
            &[("method", METHOD), ("code", code)],
        )
    };
    // Canonical code names, as in the audit trail and the alert rules.
    assert_eq!(calls("OK"), Some(3.0), "{}", m.text);
    assert_eq!(calls("PERMISSION_DENIED"), Some(2.0));
    assert_eq!(calls("INVALID_ARGUMENT"), Some(4.0));
    assert_eq!(calls("FAILED_PRECONDITION"), Some(1.0));
    assert_eq!(
        m.sum("datashare_gateway_calls_total"),
        10.0,
        "no other codes"
    );

    // Invalid calls never reach policy; the failed one was allowed and failed upstream.
    let decisions = |d: &str| {
        m.value(
            "datashare_gateway_policy_decisions_total",
            &[("decision", d)],
        )
    };
    assert_eq!(decisions("allow"), Some(4.0));
    assert_eq!(decisions("deny"), Some(2.0));

    let upstream = |code: &str| {
        m.value(
            "datashare_gateway_upstream_calls_total",
            &[("operation", OP), ("aws_error_code", code)],
        )
    };
    assert_eq!(upstream("none"), Some(3.0));
    assert_eq!(upstream("InvalidDataShareFault"), Some(1.0));
    assert_eq!(m.sum("datashare_gateway_upstream_calls_total"), 4.0);
    assert_eq!(
        m.value(
            "datashare_gateway_upstream_duration_seconds_count",
            &[("operation", OP)]
        ),
        Some(4.0)
    );
    assert_eq!(
        m.value(
            "datashare_gateway_upstream_retries_total",
            &[("operation", OP)]
        ),
        Some(1.0)
    );

    assert_eq!(
        m.value(
            "datashare_gateway_call_duration_seconds_count",
            &[("method", METHOD)]
        ),
        Some(10.0),
        "every call is in the latency histogram"
    );
    let inf_bucket = m.value(
        "datashare_gateway_call_duration_seconds_bucket",
        &[("method", METHOD), ("le", "+Inf")],
    );
    assert_eq!(inf_bucket, Some(10.0));
    assert_eq!(m.value("datashare_gateway_in_flight_calls", &[]), Some(0.0));

    // Every call leaves at least one durable record; forwarded calls an intent and an outcome.
    let records = m
        .value("datashare_gateway_audit_records_total", &[])
        .expect("audit records counter");
    assert!(records >= 10.0, "audit records {records}");
    assert!(
        m.value("datashare_gateway_audit_fsyncs_total", &[])
            .is_some_and(|n| n > 0.0),
        "fsyncs are counted"
    );
    assert!(
        m.value("datashare_gateway_audit_fsync_seconds_total", &[])
            .is_some_and(|s| s > 0.0),
        "fsync time is counted"
    );
    assert_eq!(
        m.value("datashare_gateway_audit_queue_depth", &[]),
        Some(0.0)
    );
    assert_eq!(
        m.value("datashare_gateway_trace_spans_dropped_total", &[]),
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_only_go_up_between_scrapes() {
    let emulator = Emulator::start();
    let gw = Gateway::start(GatewayOptions::new(emulator.endpoint_url())).await;
    let mut client = gw.client().await;
    client
        .associate_consumer(gateway::as_caller(REPORTING, entire_account(SALES_SHARE)))
        .await
        .expect("call");
    // The call's outcome is written just after its reply: scrape once it is.
    gateway::audit_records(&gw.audit_dir);
    let first = scrape(gw.admin).await;
    let again = scrape(gw.admin).await;
    for name in [
        "datashare_gateway_audit_records_total",
        "datashare_gateway_audit_fsyncs_total",
    ] {
        assert_eq!(
            first.value(name, &[]),
            again.value(name, &[]),
            "{name}: a scrape counts nothing"
        );
    }
    client
        .associate_consumer(gateway::as_caller(REPORTING, entire_account(SALES_SHARE)))
        .await
        .expect("call");
    let after = scrape(gw.admin).await;
    let records = |s: &support::prometheus::Scrape| {
        s.value("datashare_gateway_audit_records_total", &[])
            .unwrap_or_default()
    };
    assert!(records(&after) > records(&again));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn livez_and_readyz_answer_200_while_grpc_health_says_serving() {
    let emulator = Emulator::start();
    let gw = Gateway::start(GatewayOptions::new(emulator.endpoint_url())).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", gw.addr))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut health = HealthClient::new(channel);
    let status = health
        .check(HealthCheckRequest {
            service: "datasharing.v1.DataSharing".into(),
        })
        .await
        .expect("health check")
        .into_inner()
        .status();
    assert_eq!(status, ServingStatus::Serving);
    assert_eq!(get(gw.admin, "/livez").await.0, 200);
    assert_eq!(get(gw.admin, "/readyz").await.0, 200);
    assert_eq!(get(gw.admin, "/nothing-here").await.0, 404);
    let scraped = scrape(gw.admin).await;
    assert_eq!(scraped.value("datashare_gateway_serving", &[]), Some(1.0));
    assert_eq!(
        scraped.value("datashare_gateway_audit_writable", &[]),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_and_grpc_health_both_turn_unready_when_the_audit_trail_cannot_be_written() {
    let emulator = Emulator::start();
    let mut options = GatewayOptions::new(emulator.endpoint_url());
    // Every batch starts a new file, so every write needs the directory.
    options.audit_toml = "max_file_bytes = 1".into();
    let gw = Gateway::start(options).await;
    let mut client = gw.client().await;
    let health = async || {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", gw.addr))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: "datasharing.v1.DataSharing".into(),
            })
            .await
            .expect("health check")
            .into_inner()
            .status()
    };
    assert_eq!(health().await, ServingStatus::Serving);
    assert_eq!(get(gw.admin, "/readyz").await.0, 200);
    // A first call fills the open file; the next write needs a new one.
    let mut first = gateway::as_caller(REPORTING, entire_account(SALES_SHARE));
    first
        .metadata_mut()
        .insert("x-request-id", "before".parse().expect("ascii id"));
    client
        .associate_consumer(first)
        .await
        .expect("a healthy trail forwards");
    // Its outcome is queued after the reply: written before the directory goes.
    gateway::outcome_of(&gw.audit_dir, "before").await;

    // Root ignores permission bits, but not a regular file where the directory should be.
    let moved = gw.dir.path().join("audit-moved");
    std::fs::rename(&gw.audit_dir, &moved).expect("move the audit directory away");
    std::fs::write(&gw.audit_dir, "not a directory").expect("block the path");
    let refused = client
        .associate_consumer(gateway::as_caller(REPORTING, entire_account(SALES_SHARE)))
        .await
        .expect_err("no durable audit, no call");
    assert_eq!(refused.code(), Code::Unavailable);
    // The verdict travels through a watch to both endpoints; give it a bounded moment.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while health().await != ServingStatus::NotServing && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(health().await, ServingStatus::NotServing);
    let (status, body) = get(gw.admin, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        get(gw.admin, "/livez").await.0,
        200,
        "alive, just not ready"
    );
    // What the alerts of deploy/kubernetes/monitoring.yaml read.
    let scraped = scrape(gw.admin).await;
    assert_eq!(scraped.value("datashare_gateway_serving", &[]), Some(0.0));
    assert_eq!(
        scraped.value("datashare_gateway_audit_writable", &[]),
        Some(0.0)
    );

    std::fs::remove_file(&gw.audit_dir).expect("unblock");
    std::fs::rename(&moved, &gw.audit_dir).expect("move the directory back");
    // The writer retries on its own; the bound only keeps a broken build from hanging.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while get(gw.admin, "/readyz").await.0 != 200 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(get(gw.admin, "/readyz").await.0, 200, "ready again");
    assert_eq!(health().await, ServingStatus::Serving);
    let scraped = scrape(gw.admin).await;
    assert_eq!(scraped.value("datashare_gateway_serving", &[]), Some(1.0));
    assert_eq!(
        scraped.value("datashare_gateway_audit_writable", &[]),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_label_carries_an_arn_a_principal_or_a_request_id() {
    let emulator = Emulator::start();
    let gw = Gateway::start(GatewayOptions::new(emulator.endpoint_url())).await;
    let mut client = gw.client().await;
    let mut request = gateway::as_caller(REPORTING, entire_account(FINANCE_SHARE));
    request
        .metadata_mut()
        .insert("x-request-id", "label-check-1".parse().expect("ascii"));
    let _ = client.associate_consumer(request).await;
    let _ = client
        .associate_consumer(gateway::as_caller(FRONTEND, entire_account(SALES_SHARE)))
        .await;
    let m = scrape(gw.admin).await;
    // The two calls are counted, so the labels checked below are the calls' own.
    let calls = |code: &str| {
        m.value(
            "datashare_gateway_calls_total",
            &[("method", METHOD), ("code", code)],
        )
    };
    assert_eq!(calls("FAILED_PRECONDITION"), Some(1.0), "{}", m.text);
    assert_eq!(calls("PERMISSION_DENIED"), Some(1.0), "{}", m.text);
    for sample in &m.samples {
        for (key, value) in &sample.labels {
            assert!(
                !value.contains("arn:") && !value.contains("spiffe://") && value != "label-check-1",
                "{} has an unbounded label {key}={value:?}",
                sample.name
            );
        }
    }
}
