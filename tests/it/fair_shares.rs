//! Fair shares (issue 22, N2 and N3): one caller's flood costs another caller nothing but its
//! own share, a caller over its rate is told when to come back, and a slow STS for one caller
//! neither delays another whose session is cached nor is called again for callers who left.

use std::time::Duration;

use crate::support;

use datashare_gateway::proto::datasharing::v1::ListConsumerDataSharesRequest;
use serde_json::json;
use support::emulator::Emulator;
use support::flood::{Flood, LIST, list};
use support::gateway::{self, Gateway, GatewayOptions, NOTEBOOK, REPORTING};
use support::prometheus::scrape;
use tonic::Code;
use tonic_types::StatusExt;

/// `calls` calls of `caller`, `at_once` at a time over one connection each; the statuses.
async fn calls_of(gw: &Gateway, caller: &'static str, calls: usize, at_once: usize) -> Vec<Code> {
    let mut tasks = Vec::new();
    for lane in 0..at_once {
        let mut client = gw.client().await;
        let mine = (calls / at_once) + usize::from(lane < calls % at_once);
        tasks.push(tokio::spawn(async move {
            let mut codes = Vec::new();
            for _ in 0..mine {
                codes.push(match list(&mut client, caller).await {
                    Ok(()) => Code::Ok,
                    Err(status) => status.code(),
                });
            }
            codes
        }));
    }
    let mut codes = Vec::new();
    for task in tasks {
        codes.extend(task.await.expect("caller task"));
    }
    codes
}

fn ok_share(codes: &[Code]) -> f64 {
    codes.iter().filter(|c| **c == Code::Ok).count() as f64 / codes.len() as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_caller_flooding_leaves_the_other_its_share() {
    let emulator = Emulator::start();
    // Every listing takes 200 ms at Redshift: 8 slots serve 40 calls a second.
    emulator.inject_fault(json!({"kind": "latency", "latency_ms": 200, "operation": LIST}));
    let gw = Gateway::start(GatewayOptions {
        server_toml: "concurrency_limit = 8\nqueue_timeout_ms = 1000\n".into(),
        ..GatewayOptions::new(emulator.endpoint_url())
    })
    .await;

    let alone = calls_of(&gw, NOTEBOOK, 24, 3).await;
    assert_eq!(ok_share(&alone), 1.0, "alone: {alone:?}");

    // One caller keeps 600 calls in the air (6 connections, each call sent again as soon as it
    // is answered) while the other makes its 24.
    let flood = Flood::start(&gw, REPORTING, 6, 100).await;
    let during = calls_of(&gw, NOTEBOOK, 24, 3).await;
    let flood_reasons = flood.stop().await;
    println!(
        "the other caller's success: alone {:.2}, during the flood {:.2}; the flood: {flood_reasons:?}",
        ok_share(&alone),
        ok_share(&during)
    );
    // A generous bound: the other caller waits for at most its turn, never for the flood.
    assert!(ok_share(&during) >= 0.9, "during the flood: {during:?}");
    assert!(
        flood_reasons.get("CALLER_OVERLOADED").copied().unwrap_or(0) > 0,
        "the flood was refused as the caller's own overload: {flood_reasons:?}"
    );
    assert!(
        !flood_reasons.contains_key("OVERLOADED"),
        "the pool was never full for want of fairness: {flood_reasons:?}"
    );
    // (Its overflow is counted as caller_queue_full: `Flood::start` waits for that count.)
    let m = scrape(gw.admin).await;
    // Its queued calls waited for its own share, never for the pool.
    let pool_busy = m.value(
        "datashare_gateway_calls_shed_total",
        &[("pool", "redshift"), ("reason", "pool_busy")],
    );
    assert_eq!(pool_busy, None, "the pool itself was never the bottleneck");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_over_its_rate_is_told_when_to_come_back_and_the_other_is_not() {
    let emulator = Emulator::start();
    let gw = Gateway::start(GatewayOptions {
        server_toml: "[server.per_caller_rate]\ncalls_per_second = 1\nburst = 3\n".into(),
        ..GatewayOptions::new(emulator.endpoint_url())
    })
    .await;
    let mut client = gw.client().await;
    for _ in 0..3 {
        list(&mut client, REPORTING)
            .await
            .expect("within the burst");
    }
    let forwarded = emulator.counter(LIST, "received");
    let refused = list(&mut client, REPORTING)
        .await
        .expect_err("over the rate");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_eq!(gateway::error_info(&refused).0, "CALLER_RATE_LIMITED");
    assert!(
        refused.message().contains("server.per_caller_rate"),
        "{}",
        refused.message()
    );
    let details = refused.get_error_details();
    let retry = details
        .retry_info()
        .and_then(|r| r.retry_delay)
        .expect("RetryInfo");
    assert!(
        retry > Duration::ZERO && retry <= Duration::from_secs(1),
        "the next token is at most a second away: {retry:?}"
    );
    let quota = details.quota_failure().expect("QuotaFailure");
    assert_eq!(quota.violations[0].subject, "server.per_caller_rate");
    assert_eq!(
        emulator.counter(LIST, "received"),
        forwarded,
        "nothing reached Redshift"
    );
    list(&mut client, NOTEBOOK)
        .await
        .expect("another caller has its own bucket");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sts_that_holds_one_callers_assume_role_delays_no_other_and_is_not_called_for_callers_who_left()
 {
    let emulator = Emulator::start();
    let gw = Gateway::start(GatewayOptions {
        server_toml: "concurrency_limit = 8\n".into(),
        upstream_toml: "min_remaining_deadline_ms = 10\n".into(),
        ..GatewayOptions::with_roles(emulator.endpoint_url())
    })
    .await;
    let mut client = gw.client().await;
    // NOTEBOOK's session is cached before STS turns slow.
    list(&mut client, NOTEBOOK).await.expect("first call");
    let assumed_before = emulator.counter("AssumeRole", "received");
    // REPORTING's AssumeRole is held by STS until released.
    emulator.inject_fault(json!({"kind": "hold", "operation": "AssumeRole", "count": 1}));
    // 20 calls of REPORTING, each with a 400 ms deadline, at once: one AssumeRole for all.
    let mut short = Vec::new();
    for _ in 0..20 {
        let mut client = client.clone();
        short.push(tokio::spawn(async move {
            let mut request =
                gateway::as_caller(REPORTING, ListConsumerDataSharesRequest::default());
            request.set_timeout(Duration::from_millis(400));
            client.list_consumer_data_shares(request).await.map(|_| ())
        }));
    }
    emulator.wait_held(1).await;
    // Meanwhile NOTEBOOK's calls go through on its cached session: answered while REPORTING's
    // AssumeRole is still held, so they waited for none of it.
    for _ in 0..3 {
        list(&mut client, NOTEBOOK)
            .await
            .expect("a cached session is not held up by another caller's STS");
    }
    assert_eq!(emulator.held(), 1, "REPORTING's AssumeRole is still held");
    // Two of them hold REPORTING's share (a quarter of 8) and wait for STS until their
    // deadline, eight wait in its queue, the rest are refused at once as its own overload.
    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    for task in short {
        let status = task
            .await
            .expect("task")
            .expect_err("the deadline is shorter than STS");
        let code = match status.code() {
            Code::DeadlineExceeded | Code::Cancelled => "deadline",
            Code::ResourceExhausted if gateway::error_info(&status).0 == "CALLER_OVERLOADED" => {
                "caller overloaded"
            }
            _ => panic!("{status:?}"),
        };
        *codes.entry(code.to_owned()).or_default() += 1;
    }
    assert!(
        codes.get("deadline").copied().unwrap_or(0) >= 2,
        "{codes:?}"
    );
    // The one AssumeRole ends and its session is cached: REPORTING's next call uses it.
    assert_eq!(emulator.release(), 1);
    support::wait::until(
        Duration::from_secs(10),
        "the slow AssumeRole ended",
        async || match emulator.counter("AssumeRole", "answered") - assumed_before {
            0 => Err(0),
            n => Ok(n),
        },
    )
    .await;
    list(&mut client, REPORTING)
        .await
        .expect("the session the slow call brought");
    assert_eq!(
        emulator.counter("AssumeRole", "received") - assumed_before,
        1,
        "one AssumeRole for 20 callers who left and the next call"
    );
    let records = gateway::audit_records(&gw.audit_dir);
    let gone = records
        .iter()
        .filter(|r| r["outcome"]["reason"] == "CALLER_GONE")
        .count();
    assert!(gone > 0, "the calls that stopped waiting are recorded so");
}
