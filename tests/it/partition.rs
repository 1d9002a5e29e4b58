//! One partition: an account number names a different account in `aws-cn` and `aws-us-gov`, so
//! a gateway in a commercial region refuses ARNs and regions of another partition, naming the
//! field, before policy and before anything reaches AWS.

use crate::support;

use tonic_types::StatusExt;

use datashare_gateway::proto::datasharing::v1::{
    AssociateConsumerRequest, ListConsumerDataSharesRequest,
};
use support::emulator::Emulator;
use support::gateway::{
    Gateway, GatewayOptions, PROVISIONED_NS, REPORTING, SALES_SHARE, as_caller,
};

fn violations(status: &tonic::Status) -> Vec<(String, String)> {
    status
        .get_error_details()
        .bad_request()
        .map(|bad| {
            bad.field_violations
                .iter()
                .map(|v| (v.field.clone(), v.description.clone()))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn arns_and_regions_of_another_partition_are_invalid_argument_naming_the_field() {
    let emulator = Emulator::start();
    let gateway = Gateway::start(GatewayOptions::new(emulator.endpoint_url())).await;
    let mut client = gateway.client().await;
    let cn_share = SALES_SHARE
        .replace("arn:aws:", "arn:aws-cn:")
        .replace("us-east-1", "cn-north-1");
    let gov_namespace = PROVISIONED_NS
        .replace("arn:aws:", "arn:aws-us-gov:")
        .replace("us-east-1", "us-gov-west-1");
    let cases = [
        (
            AssociateConsumerRequest {
                data_share_arn: cn_share,
                associate_entire_account: true,
                ..Default::default()
            },
            "data_share_arn",
            "partition aws-cn",
        ),
        (
            AssociateConsumerRequest {
                data_share_arn: SALES_SHARE.into(),
                consumer_arn: gov_namespace.clone(),
                ..Default::default()
            },
            "consumer_arn",
            "partition aws-us-gov",
        ),
        (
            AssociateConsumerRequest {
                data_share_arn: SALES_SHARE.into(),
                consumer_region: "cn-northwest-1".into(),
                ..Default::default()
            },
            "consumer_region",
            "partition aws-cn",
        ),
    ];
    for (request, field, said) in cases {
        let status = client
            .associate_consumer(as_caller(REPORTING, request))
            .await
            .expect_err("another partition");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        let violations = violations(&status);
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert_eq!(violations[0].0, field);
        assert!(
            violations[0].1.contains(said) && violations[0].1.contains("works in aws"),
            "{violations:?}"
        );
    }
    let status = client
        .list_consumer_data_shares(as_caller(
            REPORTING,
            ListConsumerDataSharesRequest {
                consumer_arn: gov_namespace,
                ..Default::default()
            },
        ))
        .await
        .expect_err("another partition");
    assert_eq!(violations(&status)[0].0, "consumer_arn");
    for op in [
        "AssociateDataShareConsumer",
        "DescribeDataSharesForConsumer",
    ] {
        assert_eq!(emulator.counter(op, "received"), 0, "{op} reached Redshift");
    }
}
