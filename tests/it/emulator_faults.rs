//! Fault injection, read back through the admin counters and the SDK's own attempt header.

use crate::support;

use std::collections::BTreeMap;

use aws_sdk_redshift::error::{ProvideErrorMetadata, SdkError};
use serde_json::json;
use support::emulator::*;

const OP: &str = "DescribeDataShares";

#[tokio::test]
async fn two_throttles_then_success_takes_three_sdk_attempts() {
    let emu = Emulator::start();
    emu.inject_fault(json!({"kind": "throttling", "operation": OP, "count": 2}));
    let out = emu.consumer().describe_data_shares().send().await.unwrap();
    assert!(!out.data_shares().is_empty());
    assert_eq!(emu.attempts(OP), BTreeMap::from([(1, 1), (2, 1), (3, 1)]));
    assert_eq!(emu.counter(OP, "received"), 3);
    assert_eq!(emu.counter(OP, "forwarded"), 1);
    assert_eq!(emu.counter(OP, "answered"), 3);
    assert_eq!(emu.counters()["operations"][OP]["faults"]["throttling"], 2);
}

#[tokio::test]
async fn three_throttles_exhaust_the_retries_with_code_throttling() {
    let emu = Emulator::start();
    emu.inject_fault(json!({"kind": "throttling", "operation": OP, "count": 3}));
    let err = emu
        .consumer()
        .describe_data_shares()
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("Throttling"));
    assert_eq!(err.message(), Some("Rate exceeded"));
    assert_eq!(emu.counter(OP, "received"), 3);
    assert_eq!(emu.counter(OP, "forwarded"), 0);
}

#[tokio::test]
async fn internal_failure_and_service_unavailable_are_retried() {
    let emu = Emulator::start();
    emu.inject_fault(json!({"kind": "internal_failure", "operation": OP, "count": 1}));
    emu.inject_fault(json!({"kind": "service_unavailable", "operation": OP, "count": 1}));
    emu.consumer().describe_data_shares().send().await.unwrap();
    assert_eq!(emu.counter(OP, "received"), 3);
    let faults = &emu.counters()["operations"][OP]["faults"];
    assert_eq!(
        (
            faults["internal_failure"].as_u64(),
            faults["service_unavailable"].as_u64()
        ),
        (Some(1), Some(1))
    );

    emu.reset_counters();
    emu.inject_fault(json!({"kind": "service_unavailable", "operation": OP}));
    let err = emu
        .consumer()
        .describe_data_shares()
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("ServiceUnavailable"));
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(503));
    assert_eq!(emu.counter(OP, "received"), 3);
}

#[tokio::test]
async fn a_bare_429_is_not_retried_by_the_rust_sdk() {
    let emu = Emulator::start();
    emu.inject_fault(json!({"kind": "bare_429", "operation": OP, "count": 1}));
    let err = emu
        .consumer()
        .describe_data_shares()
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(429));
    assert_eq!(emu.attempts(OP), BTreeMap::from([(1, 1)]));
    assert_eq!(emu.counter(OP, "forwarded"), 0);
}

#[tokio::test]
async fn latency_delays_but_does_not_fail_the_call() {
    let emu = Emulator::start();
    emu.inject_fault(
        json!({"kind": "latency", "operation": OP, "count": 1, "latency_ms": 50, "jitter_ms": 20}),
    );
    emu.consumer().describe_data_shares().send().await.unwrap();
    assert_eq!(emu.counter(OP, "forwarded"), 1);
    assert_eq!(emu.counters()["operations"][OP]["faults"], json!({}));
}

#[tokio::test]
async fn latency_past_the_attempt_timeout_is_a_timeout_error() {
    use aws_sdk_redshift::config::timeout::TimeoutConfig;
    use std::time::Duration;
    let emu = Emulator::start();
    emu.inject_fault(json!({"kind": "latency", "operation": OP, "latency_ms": 3000}));
    let conf = emu
        .consumer()
        .config()
        .to_builder()
        .timeout_config(
            TimeoutConfig::builder()
                .operation_attempt_timeout(Duration::from_millis(200))
                .operation_timeout(Duration::from_secs(2))
                .build(),
        )
        .retry_config(aws_sdk_redshift::config::retry::RetryConfig::disabled())
        .build();
    let err = aws_sdk_redshift::Client::from_conf(conf)
        .describe_data_shares()
        .send()
        .await
        .unwrap_err();
    assert!(matches!(err, SdkError::TimeoutError(_)), "{err:?}");
}

#[tokio::test]
async fn a_closed_connection_is_a_dispatch_error_and_not_answered() {
    let emu = Emulator::start();
    emu.inject_fault(json!({"kind": "close_connection", "operation": OP}));
    let c = client(&emu.endpoint_url(), CONSUMER_KEY.0, CONSUMER_KEY.1, 1);
    let err = c.describe_data_shares().send().await.unwrap_err();
    assert!(matches!(err, SdkError::DispatchFailure(_)), "{err:?}");
    assert_eq!(emu.counter(OP, "received"), 1);
    assert_eq!(emu.counter(OP, "answered"), 0);
    assert_eq!(emu.counter(OP, "forwarded"), 0);
}

#[tokio::test]
async fn a_malformed_body_is_a_response_error() {
    let emu = Emulator::start();
    emu.inject_fault(json!({"kind": "malformed_body", "operation": OP, "count": 1}));
    let c = client(&emu.endpoint_url(), CONSUMER_KEY.0, CONSUMER_KEY.1, 1);
    let err = c.describe_data_shares().send().await.unwrap_err();
    assert!(
        matches!(err, SdkError::ResponseError(_) | SdkError::ServiceError(_)),
        "{err:?}"
    );
    assert!(
        err.as_service_error().is_none_or(|e| e.code().is_none()),
        "{err:?}"
    );
    assert_eq!(emu.counter(OP, "answered"), 1);
}

#[tokio::test]
async fn faults_for_one_operation_leave_others_alone_and_can_be_cleared() {
    let emu = Emulator::start();
    emu.inject_fault(json!({"kind": "throttling", "operation": "RejectDataShare"}));
    emu.consumer().describe_data_shares().send().await.unwrap();
    let (_, faults) = emu.admin("GET", "/faults", None);
    assert_eq!(faults["faults"].as_array().map(Vec::len), Some(1));
    emu.clear_faults();
    emu.consumer()
        .reject_data_share()
        .data_share_arn(SALES_SHARE)
        .send()
        .await
        .unwrap();
    assert_eq!(emu.counter("RejectDataShare", "forwarded"), 1);
}

#[tokio::test]
async fn a_fraction_of_one_fails_every_call_and_zero_none() {
    let emu = Emulator::start();
    emu.inject_fault(json!({"kind": "internal_failure", "probability": 1.0}));
    let c = client(&emu.endpoint_url(), CONSUMER_KEY.0, CONSUMER_KEY.1, 1);
    assert_eq!(
        c.describe_data_shares().send().await.unwrap_err().code(),
        Some("InternalFailure")
    );
    emu.clear_faults();
    emu.inject_fault(json!({"kind": "internal_failure", "probability": 0.0}));
    c.describe_data_shares().send().await.unwrap();
    let (status, _) = emu.admin(
        "POST",
        "/faults",
        Some(&json!({"kind": "throttling", "probability": 2.0})),
    );
    assert_eq!(status, 400);
}

#[tokio::test]
async fn cli_fault_flags_apply_from_the_start() {
    let emu = Emulator::start_with_args(&["--fault", "throttling,op=DescribeDataShares,count=1"]);
    emu.consumer().describe_data_shares().send().await.unwrap();
    assert_eq!(emu.attempts(OP), BTreeMap::from([(1, 1), (2, 1)]));
}

#[tokio::test]
async fn reset_restores_fixtures_and_clears_faults_and_counters() {
    let emu = Emulator::start();
    emu.consumer()
        .reject_data_share()
        .data_share_arn(SALES_SHARE)
        .send()
        .await
        .unwrap();
    emu.inject_fault(json!({"kind": "throttling"}));
    emu.reset();
    assert_eq!(emu.counters()["operations"], json!({}));
    let out = emu
        .consumer()
        .describe_data_shares()
        .data_share_arn(SALES_SHARE)
        .send()
        .await
        .unwrap();
    assert_eq!(out.data_shares().len(), 1);
    let state = emu.state();
    assert_eq!(state["region"], "us-east-1");
    assert!(state["datashares"].as_array().is_some_and(|d| d.len() == 3));
}

#[tokio::test]
async fn a_held_call_stays_in_flight_until_released_and_clearing_the_faults_releases_it_too() {
    let emu = Emulator::start();
    emu.inject_fault(json!({"kind": "hold", "operation": OP, "count": 1}));
    let c = emu.consumer();
    let held = tokio::spawn(async move { c.describe_data_shares().send().await });
    emu.wait_held(1).await;
    assert_eq!(emu.counter(OP, "received"), 1);
    assert_eq!(emu.counter(OP, "answered"), 0, "not answered while held");
    assert!(!held.is_finished());
    // count=1: the next call is not held.
    emu.consumer().describe_data_shares().send().await.unwrap();
    assert_eq!(emu.held(), 1);
    assert_eq!(emu.release(), 1);
    let out = held
        .await
        .expect("no panic")
        .expect("answered once released");
    assert!(!out.data_shares().is_empty());
    assert_eq!(emu.held(), 0);
    assert_eq!(emu.counters()["operations"][OP]["faults"], json!({}));

    // Without a count every call is held; DELETE /faults lets them go as well.
    emu.inject_fault(json!({"kind": "hold", "operation": OP}));
    let c = emu.consumer();
    let held = tokio::spawn(async move { c.describe_data_shares().send().await });
    emu.wait_held(1).await;
    emu.clear_faults();
    held.await
        .expect("no panic")
        .expect("answered once the rule is cleared");
    assert_eq!(emu.held(), 0);
}
