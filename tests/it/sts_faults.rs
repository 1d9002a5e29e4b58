//! STS's faults in STS's words: a caller (and an SRE's alert) tells a role session that could
//! not be made from a Redshift call that failed, by the reason and the message.

use crate::support;

use datashare_gateway::proto::datasharing::v1::ListConsumerDataSharesRequest;
use serde_json::json;
use support::emulator::Emulator;
use support::gateway::{self, Gateway, GatewayOptions, NOTEBOOK};
use tonic::Code;

const LIST: &str = "DescribeDataSharesForConsumer";

async fn list(gw: &Gateway) -> tonic::Status {
    gw.client()
        .await
        .list_consumer_data_shares(gateway::as_caller(
            NOTEBOOK,
            ListConsumerDataSharesRequest::default(),
        ))
        .await
        .expect_err("STS fails")
}

#[tokio::test]
async fn sts_faults_say_sts_and_a_disabled_region_is_failed_precondition_naming_it() {
    let emulator = Emulator::start();
    // As `dev` runs: every call needs a role session from STS.
    let gw = Gateway::start(GatewayOptions::with_roles(emulator.endpoint_url())).await;
    let cases = [
        (
            json!({"kind": "throttling", "operation": "AssumeRole", "count": 3}),
            Code::ResourceExhausted,
            "STS_THROTTLED",
            "STS is throttling requests",
        ),
        (
            json!({"kind": "service_unavailable", "operation": "AssumeRole", "count": 3}),
            Code::Unavailable,
            "STS_UNAVAILABLE",
            "STS failed on its side",
        ),
        (
            json!({"kind": "close_connection", "operation": "AssumeRole", "count": 3}),
            Code::Unavailable,
            "STS_UNAVAILABLE",
            "STS could not be reached",
        ),
        (
            json!({"kind": "error", "operation": "AssumeRole", "code": "RegionDisabledException",
                   "status": 403, "count": 3}),
            Code::FailedPrecondition,
            "STS_REGION_DISABLED",
            "STS is not activated in region us-east-1",
        ),
    ];
    for (fault, code, reason, said) in cases {
        emulator.clear_faults();
        emulator.inject_fault(fault.clone());
        let status = list(&gw).await;
        assert_eq!(status.code(), code, "{fault}: {status:?}");
        let (got, metadata) = gateway::error_info(&status);
        assert_eq!(got, reason, "{fault}: {status:?}");
        assert!(
            status.message().contains(said),
            "{fault}: {}",
            status.message()
        );
        assert!(
            !status.message().contains("Redshift is")
                && !status.message().contains("Redshift could"),
            "{fault}: {}",
            status.message()
        );
        if fault["kind"] == "error" {
            assert_eq!(
                metadata.get("aws_error_code").map(String::as_str),
                Some("RegionDisabledException"),
                "STS's own code stays in the metadata"
            );
        }
    }
    assert_eq!(
        emulator.counter(LIST, "received"),
        0,
        "nothing reached Redshift"
    );
}
