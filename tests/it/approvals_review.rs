//! What a reviewer is told about an approval that is no longer open.

use crate::support;

use datashare_gateway::proto::datasharing::v1::{
    ApproveRequest, AssociateConsumerRequest, DenyRequest,
};
use support::emulator::Emulator;
use support::gateway::{
    APPROVER, Gateway, GatewayOptions, LOADER, PROVISIONED_NS, SALES_SHARE, as_caller,
    required_approval,
};

#[tokio::test]
async fn denying_a_consumed_approval_says_it_can_no_longer_be_denied() {
    let emulator = Emulator::start();
    let gateway = Gateway::start(GatewayOptions::new(emulator.endpoint_url())).await;
    let writes = || AssociateConsumerRequest {
        data_share_arn: SALES_SHARE.into(),
        consumer_arn: PROVISIONED_NS.into(),
        allow_writes: Some(true),
        ..Default::default()
    };
    let mut client = gateway.client().await;
    let id = required_approval(
        &client
            .associate_consumer(as_caller(LOADER, writes()))
            .await
            .expect_err("needs approval"),
    );
    let mut approvals = gateway.approvals().await;
    approvals
        .approve(as_caller(
            APPROVER,
            ApproveRequest {
                approval_id: id.clone(),
                comment: String::new(),
            },
        ))
        .await
        .expect("approved");
    client
        .associate_consumer(as_caller(LOADER, writes()))
        .await
        .expect("spent");
    let status = approvals
        .deny(as_caller(
            APPROVER,
            DenyRequest {
                approval_id: id.clone(),
                comment: String::new(),
            },
        ))
        .await
        .expect_err("consumed");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert_eq!(
        status.message(),
        format!(
            "approval {id} is CONSUMED and can no longer be denied; only a PENDING or APPROVED approval can be"
        )
    );
    let status = approvals
        .approve(as_caller(
            APPROVER,
            ApproveRequest {
                approval_id: id.clone(),
                comment: String::new(),
            },
        ))
        .await
        .expect_err("consumed");
    assert!(
        status.message().contains("can no longer be approved"),
        "{}",
        status.message()
    );
}
