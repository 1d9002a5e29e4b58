//! AssociateConsumer end to end: a tonic client, the gateway process, the emulator process, and
//! the real aws-sdk-redshift client between them.

use crate::support;

use std::time::Duration;

use datashare_gateway::proto::datasharing::v1::{AssociateConsumerRequest, DataShareStatus};
use support::emulator::Emulator;
use support::gateway::{
    self, Gateway, GatewayOptions, PROVISIONED_NS, REPORTING, SALES_SHARE, SERVERLESS_NS,
};
use tonic::Code;
use tonic_types::StatusExt;

const OP: &str = "AssociateDataShareConsumer";

fn request(f: impl FnOnce(&mut AssociateConsumerRequest)) -> AssociateConsumerRequest {
    let mut r = AssociateConsumerRequest {
        data_share_arn: SALES_SHARE.into(),
        ..Default::default()
    };
    f(&mut r);
    r
}

#[tokio::test]
async fn associates_each_consumer_kind_and_returns_the_datashare_as_redshift_describes_it() {
    let emulator = Emulator::start();
    let gw = Gateway::start(GatewayOptions::new(emulator.endpoint_url())).await;
    let mut client = gw.client().await;

    let cases = [
        (
            request(|r| r.associate_entire_account = true),
            "444455556666",
            "",
        ),
        (
            request(|r| r.consumer_arn = PROVISIONED_NS.into()),
            PROVISIONED_NS,
            "",
        ),
        (
            request(|r| r.consumer_arn = SERVERLESS_NS.into()),
            SERVERLESS_NS,
            "",
        ),
        (
            request(|r| r.consumer_region = "us-west-2".into()),
            "444455556666",
            "us-west-2",
        ),
    ];
    for (message, identifier, region) in cases {
        let response = client
            .associate_consumer(gateway::as_caller(REPORTING, message.clone()))
            .await;
        let response = response
            .unwrap_or_else(|s| panic!("{message:?}: {s:?}"))
            .into_inner();
        assert_eq!(response.data_share_arn, SALES_SHARE);
        assert_eq!(
            response.producer_arn,
            "arn:aws:redshift:us-east-1:111122223333:namespace:9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f"
        );
        let association = response
            .associations
            .iter()
            .find(|a| a.consumer_identifier == identifier && a.consumer_region == region)
            .unwrap_or_else(|| {
                panic!(
                    "no association for {identifier} {region}: {:?}",
                    response.associations
                )
            });
        assert_eq!(association.status(), DataShareStatus::Active);
        let created = association.created_date.expect("created_date");
        let changed = association.status_change_date.expect("status_change_date");
        assert!(created.seconds > 1_600_000_000 && changed.seconds >= created.seconds);
        assert!(response.validation.is_none());
    }
    // Four associations forwarded, four answered.
    assert_eq!(emulator.counter(OP, "forwarded"), 4);
}

#[tokio::test]
async fn allow_writes_reaches_redshift_and_comes_back() {
    let emulator = Emulator::start();
    let gw = Gateway::start(GatewayOptions::new(emulator.endpoint_url())).await;
    let mut client = gw.client().await;
    let message = request(|r| {
        r.consumer_arn = PROVISIONED_NS.into();
        r.allow_writes = Some(true);
    });
    // The example policies want a second person's approval for writes (tests/approvals.rs).
    let refused = client
        .associate_consumer(gateway::as_caller(gateway::LOADER, message.clone()))
        .await
        .expect_err("writes need an approval");
    let approval_id = gateway::required_approval(&refused);
    gw.approvals()
        .await
        .approve(gateway::as_caller(
            gateway::APPROVER,
            datashare_gateway::proto::datasharing::v1::ApproveRequest {
                approval_id,
                comment: "test".into(),
            },
        ))
        .await
        .expect("approved");
    let response = client
        .associate_consumer(gateway::as_caller(gateway::LOADER, message))
        .await
        .unwrap()
        .into_inner();
    let association = response
        .associations
        .iter()
        .find(|a| a.consumer_identifier == PROVISIONED_NS)
        .unwrap();
    assert_eq!(association.consumer_accepted_writes, Some(true));
}

#[tokio::test]
async fn validate_only_checks_everything_but_does_not_call_redshift() {
    let emulator = Emulator::start();
    let gw = Gateway::start(GatewayOptions::new(emulator.endpoint_url())).await;
    let mut client = gw.client().await;
    let message = request(|r| {
        r.consumer_arn = PROVISIONED_NS.into();
        r.validate_only = true;
    });
    let response = client
        .associate_consumer(gateway::as_caller(REPORTING, message))
        .await
        .unwrap()
        .into_inner();
    let validation = response
        .validation
        .expect("validate_only returns the decision");
    assert!(
        !validation.determining_policies.is_empty(),
        "the permitting policies are named"
    );
    assert!(response.data_share_arn.is_empty());
    assert_eq!(
        emulator.counter(OP, "received"),
        0,
        "validate_only never reaches Redshift"
    );
}

#[tokio::test]
async fn invalid_requests_name_each_field_and_never_reach_redshift() {
    let emulator = Emulator::start();
    let gw = Gateway::start(GatewayOptions::new(emulator.endpoint_url())).await;
    let mut client = gw.client().await;

    let cases: Vec<(AssociateConsumerRequest, Vec<&str>, &str)> = vec![
        (
            AssociateConsumerRequest {
                associate_entire_account: true,
                ..Default::default()
            },
            vec!["data_share_arn"],
            "required",
        ),
        (
            request(|_| {}),
            vec!["associate_entire_account"],
            "exactly one",
        ),
        (
            request(|r| {
                r.associate_entire_account = true;
                r.consumer_arn = PROVISIONED_NS.into();
            }),
            vec!["associate_entire_account", "consumer_arn"],
            "exactly one",
        ),
        (
            request(|r| r.consumer_region = "moon-base-1a".into()),
            vec!["consumer_region"],
            "region",
        ),
        (
            request(|r| {
                r.consumer_arn = "arn:aws:redshift:us-east-1:444455556666:cluster:x".into()
            }),
            vec!["consumer_arn"],
            "namespace",
        ),
        (
            request(|r| {
                r.data_share_arn =
                    "arn:aws-cn:redshift:us-east-1:111122223333:datashare:9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f/s"
                        .into();
                r.associate_entire_account = true;
            }),
            vec!["data_share_arn"],
            "partition",
        ),
        (
            request(|r| {
                r.data_share_arn = format!("{SALES_SHARE}{}", "x".repeat(3000));
                r.associate_entire_account = true;
            }),
            vec!["data_share_arn"],
            "at most 2048",
        ),
    ];
    for (message, fields, rule) in cases {
        let status = client
            .associate_consumer(gateway::as_caller(REPORTING, message.clone()))
            .await
            .expect_err("invalid");
        assert_eq!(status.code(), Code::InvalidArgument, "{message:?}");
        let details = status.get_error_details();
        let bad = details.bad_request().expect("BadRequest");
        let got: Vec<_> = bad
            .field_violations
            .iter()
            .map(|v| v.field.as_str())
            .collect();
        assert_eq!(got, fields, "{message:?}");
        assert!(
            bad.field_violations
                .iter()
                .any(|v| v.description.contains(rule)),
            "{rule} in {bad:?}"
        );
        assert_eq!(
            details.error_info().map(|i| i.reason.as_str()),
            Some("INVALID_REQUEST")
        );
    }
    assert_eq!(
        emulator.counter(OP, "received"),
        0,
        "nothing invalid reaches Redshift"
    );
}

#[tokio::test]
async fn the_request_id_is_echoed_or_generated() {
    let emulator = Emulator::start();
    let gw = Gateway::start(GatewayOptions::new(emulator.endpoint_url())).await;
    let mut client = gw.client().await;

    let mut req = gateway::as_caller(REPORTING, request(|r| r.associate_entire_account = true));
    req.metadata_mut()
        .insert("x-request-id", "caller-chosen-42".parse().unwrap());
    let response = client.associate_consumer(req).await.unwrap();
    assert_eq!(
        response.metadata().get("x-request-id").unwrap(),
        "caller-chosen-42"
    );

    let status = client
        .associate_consumer(gateway::as_caller(REPORTING, request(|_| {})))
        .await
        .unwrap_err();
    let generated = status
        .metadata()
        .get("x-request-id")
        .expect("generated id")
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(generated.len(), 36, "a UUID: {generated}");
    let info = status.get_error_details().error_info().cloned().unwrap();
    assert_eq!(info.metadata.get("request_id"), Some(&generated));
    assert!(gw.logged(&generated).await, "the request id is in the logs");
}

#[tokio::test]
async fn health_reports_serving() {
    let emulator = Emulator::start();
    let gw = Gateway::start(GatewayOptions::new(emulator.endpoint_url())).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", gw.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    for service in ["", "datasharing.v1.DataSharing"] {
        let reply = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            reply.status(),
            tonic_health::pb::health_check_response::ServingStatus::Serving
        );
    }
}

#[tokio::test]
async fn an_oversized_message_is_refused_before_it_is_decoded() {
    let emulator = Emulator::start();
    let gw = Gateway::start(GatewayOptions::new(emulator.endpoint_url())).await;
    let mut client = gw.client().await;
    // server.max_message_bytes defaults to 64 KiB; requests are a few hundred bytes.
    let message = request(|r| {
        r.associate_entire_account = true;
        r.consumer_region = "x".repeat(100 * 1024);
    });
    let status = client
        .associate_consumer(gateway::as_caller(REPORTING, message))
        .await
        .expect_err("too large");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert_eq!(emulator.counter(OP, "received"), 0);
    // The connection is still usable afterwards.
    let ok = client
        .associate_consumer(gateway::as_caller(
            REPORTING,
            request(|r| r.associate_entire_account = true),
        ))
        .await;
    assert!(ok.is_ok(), "{ok:?}");
}

#[tokio::test]
async fn sigterm_drains_in_flight_calls_with_readyz_down_and_metrics_up_then_exits_cleanly() {
    let emulator = Emulator::start();
    // The emulator holds the call until the test lets it go: it is in flight for as long as the
    // checks below take, however slow the machine (the timeouts, and the grace period that must
    // cover them, are far beyond what the checks need: no attempt times out and is retried).
    let mut options = GatewayOptions::new(emulator.endpoint_url());
    options.attempt_timeout_ms = 20_000;
    options.operation_timeout_ms = 20_000;
    options.shutdown_grace_secs = 20;
    let mut gw = Gateway::start(options).await;
    emulator.inject_fault(serde_json::json!({"kind": "hold", "operation": OP, "count": 1}));
    let mut client = gw.client().await;
    let in_flight = tokio::spawn(async move {
        client
            .associate_consumer(gateway::as_caller(
                REPORTING,
                request(|r| r.associate_entire_account = true),
            ))
            .await
    });
    emulator.wait_held(1).await;
    let pid = gw.pid().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    support::wait::until(
        Duration::from_secs(10),
        "/readyz answers 503 once the drain begins",
        async || match support::prometheus::get(gw.admin, "/readyz").await.0 {
            503 => Ok(()),
            other => Err(other),
        },
    )
    .await;
    let (status, body) = support::prometheus::get(gw.admin, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("datashare_gateway_in_flight_calls 1"),
        "{body}"
    );
    assert!(!in_flight.is_finished(), "still held during the drain");
    assert_eq!(emulator.release(), 1);
    assert!(
        in_flight.await.unwrap().is_ok(),
        "the in-flight call finished"
    );
    assert!(gw.terminate().await, "exits 0 after the drain");
}
