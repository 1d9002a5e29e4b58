//! Shutdown on a bad day: a call still running when the grace period ends is aborted and
//! recorded as such (no intent is left without an outcome), and the plaintext health listener
//! keeps answering NOT_SERVING through the drain.

use crate::support;

use std::process::Command;
use std::time::Duration;

use datashare_gateway::proto::datasharing::v1::AssociateConsumerRequest;
use serde_json::json;
use support::emulator::Emulator;
use support::gateway::{self, Gateway, GatewayOptions, REPORTING, SALES_SHARE};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

fn free_port() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
}

async fn health(addr: std::net::SocketAddr) -> Option<i32> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect_timeout(Duration::from_secs(1))
        .connect()
        .await
        .ok()?;
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .ok()
        .map(|r| r.into_inner().status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_outliving_the_grace_period_is_recorded_as_aborted_and_health_answers_through_the_drain()
 {
    let emulator = Emulator::start();
    let health_addr = free_port();
    let mut options = GatewayOptions::with_roles(emulator.endpoint_url());
    // One second of grace, and timeouts that fit it (the configuration requires so)...
    options.shutdown_grace_secs = 1;
    options.max_attempts = 1;
    options.attempt_timeout_ms = 950;
    options.operation_timeout_ms = 1000;
    options.server_toml = format!("health_listen = \"{health_addr}\"");
    let gw = Gateway::start(options).await;
    // ...but STS and then Redshift each take most of it: the call outlives the grace period.
    emulator.inject_fault(json!({"kind": "latency", "operation": "AssumeRole", "latency_ms": 800}));
    emulator.inject_fault(
        json!({"kind": "latency", "operation": "AssociateDataShareConsumer", "latency_ms": 800}),
    );
    assert_eq!(
        health(health_addr).await,
        Some(ServingStatus::Serving as i32)
    );

    let mut client = gw.client().await;
    let mut request = gateway::as_caller(
        REPORTING,
        AssociateConsumerRequest {
            data_share_arn: SALES_SHARE.into(),
            associate_entire_account: true,
            ..Default::default()
        },
    );
    request
        .metadata_mut()
        .insert("x-request-id", "outlives-the-drain".parse().expect("ascii"));
    let assumed_before = emulator.counter("AssumeRole", "received");
    let call = tokio::spawn(async move { client.associate_consumer(request).await });
    // In flight: STS has the call's AssumeRole (counted on arrival, before its latency).
    support::wait::until(
        Duration::from_secs(10),
        "the call's AssumeRole reaches the emulator",
        async || match emulator.counter("AssumeRole", "received") {
            n if n > assumed_before => Ok(()),
            _ => Err(emulator.counters()),
        },
    )
    .await;
    gw.sigterm();
    // The listener stops only after the drain, so an answer of NOT_SERVING comes during it.
    support::wait::until(
        Duration::from_secs(10),
        "the probe listener answers NOT_SERVING during the drain",
        async || match health(health_addr).await {
            Some(status) if status == ServingStatus::NotServing as i32 => Ok(()),
            other => Err(other),
        },
    )
    .await;
    let mut gw = gw;
    assert!(gw.terminate().await, "clean exit; logs:\n{}", gw.logs());
    // The caller is told what its record says: aborted at shutdown, not an internal error.
    let status = call.await.expect("task").expect_err("aborted");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    let (reason, _) = gateway::error_info(&status);
    assert_eq!(reason, "ABORTED_AT_SHUTDOWN", "{status:?}");
    assert!(
        !gw.logs().contains("\"level\":\"ERROR\"") && !gw.logs().contains(" ERROR "),
        "an expected cancel logs no ERROR:\n{}",
        gw.logs()
    );

    let records = gateway::audit_records(&gw.audit_dir);
    let mine: Vec<_> = records
        .iter()
        .filter(|r| r["request_id"] == "outlives-the-drain")
        .collect();
    let kinds: Vec<_> = mine
        .iter()
        .map(|r| r["kind"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(kinds, ["intent", "outcome"], "{mine:#?}");
    assert_eq!(mine[1]["outcome"]["reason"], "ABORTED_AT_SHUTDOWN");
    assert_eq!(mine[1]["outcome"]["code"], "UNAVAILABLE");
    let out = Command::new(env!("CARGO_BIN_EXE_datashare-gateway"))
        .args(["audit", "verify"])
        .arg(&gw.audit_dir)
        .output()
        .expect("audit verify");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    assert!(!report.contains("intents without an outcome"), "{report}");
}

#[test]
fn a_grace_period_shorter_than_the_operation_timeout_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut options = GatewayOptions::new("http://127.0.0.1:1");
    options.shutdown_grace_secs = 2;
    options.operation_timeout_ms = 5000;
    let path = dir.path().join("gateway.toml");
    std::fs::write(
        &path,
        gateway::config_text(&options, &dir.path().join("audit")),
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_datashare-gateway"))
        .arg("check-config")
        .arg(&path)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("server.shutdown_grace_secs = 2"),
        "{stderr}"
    );
}
