//! `server.max_in_flight_calls`: past it, a call is refused at once with RESOURCE_EXHAUSTED and
//! RetryInfo, before any policy, store or audit work, and counted.

use std::time::Duration;

use crate::support;

use datashare_gateway::proto::datasharing::v1::AssociateConsumerRequest;
use serde_json::json;
use support::emulator::Emulator;
use support::gateway::{self, FRONTEND, Gateway, GatewayOptions, REPORTING, SALES_SHARE};
use support::prometheus::scrape;
use tonic::Code;
use tonic_types::StatusExt;

const OP: &str = "AssociateDataShareConsumer";

fn entire_account() -> AssociateConsumerRequest {
    AssociateConsumerRequest {
        data_share_arn: SALES_SHARE.into(),
        associate_entire_account: true,
        ..Default::default()
    }
}

fn with_request_id(caller: &str, id: &str) -> tonic::Request<AssociateConsumerRequest> {
    let mut request = gateway::as_caller(caller, entire_account());
    request
        .metadata_mut()
        .insert("x-request-id", id.parse().expect("ascii"));
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_over_the_in_flight_cap_is_refused_before_policy_and_counted() {
    let emulator = Emulator::start();
    let gw = Gateway::start(GatewayOptions {
        server_toml: "concurrency_limit = 1\nmax_in_flight_calls = 1\n".into(),
        ..GatewayOptions::new(emulator.endpoint_url())
    })
    .await;
    emulator
        .inject_fault(json!({"kind": "latency", "latency_ms": 1500, "operation": OP, "count": 1}));
    let mut first_client = gw.client().await;
    let first = tokio::spawn(async move {
        first_client
            .associate_consumer(with_request_id(REPORTING, "holds-the-slot"))
            .await
            .map(|_| ())
    });
    // The first call holds the only slot once it is in the stack.
    let held = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let m = scrape(gw.admin).await;
            if m.value("datashare_gateway_in_flight_calls", &[]) == Some(1.0) {
                return m.value("datashare_gateway_policy_evaluations_total", &[]);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the first call got into the stack");

    // Even a call policy would deny is refused as overloaded: nothing looked at it.
    let refused = gw
        .client()
        .await
        .associate_consumer(with_request_id(FRONTEND, "over-the-cap"))
        .await
        .expect_err("over the cap");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    let details = refused.get_error_details();
    assert!(details.retry_info().is_some(), "RetryInfo: {refused:?}");
    assert_eq!(gateway::error_info(&refused).0, "OVERLOADED", "{refused:?}");
    let m = scrape(gw.admin).await;
    assert_eq!(
        m.value("datashare_gateway_in_flight_cap_refusals_total", &[]),
        Some(1.0)
    );
    assert_eq!(
        m.value("datashare_gateway_policy_evaluations_total", &[]),
        held,
        "no policy evaluation for the refused call"
    );
    assert_eq!(
        m.value(
            "datashare_gateway_calls_total",
            &[
                ("method", "AssociateConsumer"),
                ("code", "RESOURCE_EXHAUSTED")
            ]
        ),
        Some(1.0)
    );

    first.await.expect("task").expect("the first call succeeds");
    gateway::outcome_of(&gw.audit_dir, "holds-the-slot").await;
    assert!(
        gateway::audit_records(&gw.audit_dir)
            .iter()
            .all(|r| r["request_id"] != "over-the-cap"),
        "nothing was attempted, so nothing is recorded"
    );
    // The slot is free again.
    gw.client()
        .await
        .associate_consumer(with_request_id(REPORTING, "after"))
        .await
        .expect("a call fits again");
    assert_eq!(emulator.counter(OP, "received"), 2);
}
