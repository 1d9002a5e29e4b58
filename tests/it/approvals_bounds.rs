//! Pending approvals are bounded: one requester cannot fill the store (and the trail) with
//! approvals nobody will review.

use crate::support;

use tonic_types::StatusExt;

use datashare_gateway::proto::datasharing::v1::AssociateConsumerRequest;
use support::emulator::Emulator;
use support::gateway::{
    Gateway, GatewayOptions, LOADER, PROVISIONED_NS, SALES_SHARE, as_caller, error_info,
    required_approval,
};

fn writes_to(target: &str) -> AssociateConsumerRequest {
    let mut request = AssociateConsumerRequest {
        data_share_arn: SALES_SHARE.into(),
        allow_writes: Some(true),
        ..Default::default()
    };
    match target {
        "entire account" => request.associate_entire_account = true,
        arn if arn.starts_with("arn:") => request.consumer_arn = arn.into(),
        region => request.consumer_region = region.into(),
    }
    request
}

#[tokio::test]
async fn a_requester_past_max_pending_per_requester_is_resource_exhausted_naming_the_limit() {
    let emulator = Emulator::start();
    let gateway = Gateway::start(GatewayOptions {
        extra_toml: "[approvals]\nmax_pending_per_requester = 2\n".into(),
        ..GatewayOptions::new(emulator.endpoint_url())
    })
    .await;
    let mut client = gateway.client().await;
    let mut pending = Vec::new();
    for target in [PROVISIONED_NS, "us-west-2"] {
        let status = client
            .associate_consumer(as_caller(LOADER, writes_to(target)))
            .await
            .expect_err("needs approval");
        pending.push(required_approval(&status));
    }
    let status = client
        .associate_consumer(as_caller(LOADER, writes_to("entire account")))
        .await
        .expect_err("a third pending approval");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(
        status
            .message()
            .contains("approvals.max_pending_per_requester = 2"),
        "{}",
        status.message()
    );
    let (reason, metadata) = error_info(&status);
    assert_eq!(reason, "TOO_MANY_PENDING_APPROVALS");
    assert_eq!(
        metadata.get("limit").map(String::as_str),
        Some("approvals.max_pending_per_requester")
    );
    let quota = status.get_error_details();
    let quota = quota.quota_failure().expect("a QuotaFailure detail");
    assert_eq!(
        quota.violations[0].subject,
        "approvals.max_pending_per_requester"
    );
    // A request that already has its approval still gets it named, cap or not.
    let again = client
        .associate_consumer(as_caller(LOADER, writes_to(PROVISIONED_NS)))
        .await
        .expect_err("still pending");
    assert_eq!(required_approval(&again), pending[0]);
    assert_eq!(
        emulator.counter("AssociateDataShareConsumer", "received"),
        0,
        "nothing reached Redshift"
    );
    let created = support::gateway::audit_records(&gateway.audit_dir)
        .iter()
        .filter(|r| r["kind"] == "approval" && r["transition"] == "created")
        .count();
    assert_eq!(
        created, 2,
        "no approval, and no record of one, past the cap"
    );
}
