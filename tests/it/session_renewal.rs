//! Role sessions renewed ahead of time, never at the caller's expense: a session in its last
//! five minutes is renewed in the background while calls go on with it; STS failing, throttling
//! or answering slowly then costs the calls nothing until the session has really run out.
//!
//! The emulator's clock, moved back, makes STS issue sessions that are already near their end
//! by the gateway's clock (sessions last 900 s: `-700` leaves 200 s, inside the window).

use crate::support;

use std::time::{Duration, Instant};

use datashare_gateway::proto::datasharing::v1::ListConsumerDataSharesRequest;
use serde_json::json;
use support::emulator::{Emulator, OTHER_ACCOUNT};
use support::gateway::{self, Gateway, GatewayOptions, LOADER, NOTEBOOK, REPORTING};
use tonic::Code;

const RENEWALS: &str = "datashare_gateway_sts_session_renewals_total";
/// The longest any test here waits for the gateway to get somewhere.
const PATIENCE: Duration = Duration::from_secs(30);

async fn list(gw: &Gateway, caller: &str, account: &str) -> Result<(), tonic::Status> {
    let mut client = gw.client().await;
    client
        .list_consumer_data_shares(gateway::as_caller(
            caller,
            ListConsumerDataSharesRequest {
                consumer_account: account.into(),
                ..Default::default()
            },
        ))
        .await
        .map(drop)
}

/// A list in the default account.
async fn list_mine(gw: &Gateway, caller: &str) -> Result<(), tonic::Status> {
    list(gw, caller, "").await
}

async fn renewals(gw: &Gateway, result: &str) -> f64 {
    support::prometheus::scrape(gw.admin)
        .await
        .value(RENEWALS, &[("result", result)])
        .unwrap_or(0.0)
}

/// Waits until `n` renewals ended with `result` (the metric counts one once its slot holds it).
async fn wait_for_renewals(gw: &Gateway, result: &str, n: f64) {
    let deadline = Instant::now() + PATIENCE;
    while renewals(gw, result).await < n {
        assert!(
            Instant::now() < deadline,
            "no {n} renewals ended {result}; logs:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn faults_injected(emulator: &Emulator, kind: &str) -> u64 {
    emulator.counters()["operations"]["AssumeRole"]["faults"][kind]
        .as_u64()
        .unwrap_or(0)
}

#[tokio::test]
async fn throttled_sts_in_the_renewal_window_fails_no_call() {
    let emulator = Emulator::start();
    let gw = Gateway::start(GatewayOptions::with_roles(emulator.endpoint_url())).await;
    emulator.advance_clock(-700);
    list_mine(&gw, REPORTING)
        .await
        .expect("the first call assumes a session");
    assert_eq!(emulator.counter("AssumeRole", "received"), 1);

    // STS throttles every AssumeRole from now on. Calls go on until two renewals (the second
    // after the back-off) have met it; every one of them succeeds.
    emulator.inject_fault(json!({"kind": "throttling", "operation": "AssumeRole"}));
    let deadline = Instant::now() + PATIENCE;
    let mut calls = 0;
    while renewals(&gw, "throttled").await < 2.0 {
        assert!(Instant::now() < deadline, "logs:\n{}", gw.logs());
        list_mine(&gw, REPORTING)
            .await
            .expect("a call while the session is valid");
        calls += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(calls >= 2, "{calls}");
    assert!(
        faults_injected(&emulator, "throttling") >= 2,
        "{}",
        emulator.counters()
    );

    // STS is back: the next renewal after the back-off brings a fresh session.
    emulator.clear_faults();
    let deadline = Instant::now() + PATIENCE;
    while renewals(&gw, "ok").await < 1.0 {
        assert!(Instant::now() < deadline, "logs:\n{}", gw.logs());
        list_mine(&gw, REPORTING)
            .await
            .expect("a call while the session is renewed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        gw.logged("renewing a role session failed").await,
        "{}",
        gw.logs()
    );
}

#[tokio::test]
async fn calls_in_the_renewal_window_do_not_wait_for_sts() {
    const STS_DELAY: Duration = Duration::from_secs(3);
    let emulator = Emulator::start();
    let mut options = GatewayOptions::with_roles(emulator.endpoint_url());
    // One slow STS answer is an answer, not a timeout.
    options.attempt_timeout_ms = 4500;
    let gw = Gateway::start(options).await;
    emulator.advance_clock(-700);
    list_mine(&gw, REPORTING)
        .await
        .expect("the first call assumes a session");

    // Only the renewal's AssumeRole is slow.
    emulator.inject_fault(json!({
        "kind": "latency",
        "operation": "AssumeRole",
        "latency_ms": STS_DELAY.as_millis() as u64,
        "count": 1,
    }));
    let window_opened = Instant::now();
    for i in 0..5 {
        let started = Instant::now();
        list_mine(&gw, REPORTING)
            .await
            .expect("a call in the window");
        let took = started.elapsed();
        assert!(
            took < STS_DELAY / 2,
            "call {i} took {took:?}: it waited for STS"
        );
    }
    assert!(
        window_opened.elapsed() < STS_DELAY,
        "the calls ran while STS was answering the renewal"
    );
    wait_for_renewals(&gw, "ok", 1.0).await;
    assert!(
        window_opened.elapsed() >= STS_DELAY,
        "the renewal met the delay"
    );
    // A call that must assume afresh (Redshift says its session expired) waits its turn behind
    // any renewal still due, so after it every renewal the five calls started has been made.
    emulator.inject_fault(json!({
        "kind": "error",
        "code": "ExpiredToken",
        "status": 400,
        "operation": "DescribeDataSharesForConsumer",
        "count": 1,
    }));
    list_mine(&gw, REPORTING)
        .await
        .expect("a fresh session after ExpiredToken");
    assert_eq!(
        emulator.counter("AssumeRole", "received"),
        3,
        "the first call's, one renewal for the five calls in the window, the fresh one"
    );
}

#[tokio::test]
async fn a_session_that_runs_out_while_sts_fails_ends_in_unavailable() {
    let emulator = Emulator::start();
    let gw = Gateway::start(GatewayOptions::with_roles(emulator.endpoint_url())).await;
    // Sessions end 36 s from the gateway's clock; it stops using them 30 s before (clock skew),
    // so the session is usable for about 6 s.
    let issued_after = Instant::now();
    emulator.advance_clock(-(900 - 36));
    list_mine(&gw, REPORTING)
        .await
        .expect("the first call assumes a session");

    emulator.inject_fault(json!({"kind": "service_unavailable", "operation": "AssumeRole"}));
    let deadline = Instant::now() + PATIENCE;
    let mut succeeded = 0;
    let err = loop {
        assert!(Instant::now() < deadline, "logs:\n{}", gw.logs());
        match list_mine(&gw, REPORTING).await {
            Ok(()) => succeeded += 1,
            Err(err) => break err,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let failed_after = issued_after.elapsed();
    // Expiration is stamped in whole seconds, so the session was usable for at least 5 s.
    assert!(
        failed_after >= Duration::from_secs(5),
        "a call failed after {failed_after:?}, while the session was valid: {err:?}"
    );
    assert!(succeeded >= 2, "{succeeded}");
    assert!(renewals(&gw, "error").await >= 1.0);
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");

    // STS is back: the next call assumes a session and succeeds.
    emulator.clear_faults();
    list_mine(&gw, REPORTING)
        .await
        .expect("a fresh session once STS answers");
}

#[tokio::test]
async fn renewals_are_counted_by_result_and_a_failed_one_keeps_the_session() {
    let emulator = Emulator::start();
    let gw = Gateway::start(GatewayOptions::with_roles(emulator.endpoint_url())).await;
    emulator.advance_clock(-700);
    // Four keys, each with a session in its window: each renewal below meets its own answer.
    let keys = [
        (REPORTING, "", "throttled"),
        (NOTEBOOK, "", "denied"),
        (LOADER, "", "error"),
        (REPORTING, OTHER_ACCOUNT, "ok"),
    ];
    for (caller, account, _) in keys {
        list(&gw, caller, account)
            .await
            .expect("the first call assumes a session");
    }
    for (caller, account, result) in keys {
        match result {
            "throttled" => emulator
                .inject_fault(json!({"kind": "throttling", "operation": "AssumeRole"})),
            "denied" => emulator.inject_fault(
                json!({"kind": "error", "code": "AccessDenied", "status": 403, "operation": "AssumeRole"}),
            ),
            "error" => emulator
                .inject_fault(json!({"kind": "service_unavailable", "operation": "AssumeRole"})),
            _ => {}
        }
        list(&gw, caller, account)
            .await
            .expect("a call in the window starts the renewal");
        wait_for_renewals(&gw, result, 1.0).await;
        // STS still answers as it did: only the kept session lets this call through.
        list(&gw, caller, account)
            .await
            .expect("the session is kept, whatever the renewal's result");
        emulator.clear_faults();
    }
    let scrape = support::prometheus::scrape(gw.admin).await;
    for result in ["ok", "throttled", "denied", "error"] {
        assert_eq!(
            scrape.value(RENEWALS, &[("result", result)]),
            Some(1.0),
            "{result}: {}",
            scrape.text
        );
    }
    // A refused renewal is logged as a refused AssumeRole is.
    assert!(gw.logged("STS refused AssumeRole").await, "{}", gw.logs());
}
