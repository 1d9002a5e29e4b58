//! The three consumer operations end to end: a tonic client, the gateway process, the emulator
//! process and the real aws-sdk-redshift between them. Associate, list, disassociate, list again;
//! paging; tampered page tokens; validate_only for Disassociate; and every call in the audit trail,
//! verified by `audit verify`.

use crate::support;

use std::collections::BTreeSet;
use std::process::Command;

use datashare_gateway::proto::datasharing::v1::{
    AssociateConsumerRequest, DataShareStatus, DisassociateConsumerRequest,
    ListConsumerDataSharesRequest, ListConsumerDataSharesResponse,
};
use serde_json::json;
use support::emulator::Emulator;
use support::gateway::{
    self, FRONTEND, Gateway, GatewayOptions, NOTEBOOK, PROVISIONED_NS, REPORTING, SALES_SHARE,
};
use tonic::Code;
use tonic_types::StatusExt;

async fn list(
    gw: &Gateway,
    caller: &str,
    request: ListConsumerDataSharesRequest,
) -> Result<ListConsumerDataSharesResponse, tonic::Status> {
    let mut client = gw.client().await;
    client
        .list_consumer_data_shares(gateway::as_caller(caller, request))
        .await
        .map(tonic::Response::into_inner)
}

/// The consumer namespace's association with SALES_SHARE as a listing shows it, if any.
async fn sales_status_for_namespace(gw: &Gateway) -> Option<i32> {
    let page = list(
        gw,
        REPORTING,
        ListConsumerDataSharesRequest {
            consumer_arn: PROVISIONED_NS.into(),
            ..Default::default()
        },
    )
    .await
    .expect("list");
    assert!(page.next_page_token.is_empty(), "one page is enough here");
    page.data_shares
        .iter()
        .find(|s| s.data_share_arn == SALES_SHARE)
        .and_then(|s| {
            s.associations
                .iter()
                .find(|a| a.consumer_identifier == PROVISIONED_NS)
                .map(|a| a.status)
        })
}

#[tokio::test]
async fn associate_list_disassociate_list_and_the_trail_verifies() {
    let emulator = Emulator::start();
    let gw = Gateway::start(GatewayOptions::new(emulator.endpoint_url())).await;
    let mut client = gw.client().await;

    assert_eq!(sales_status_for_namespace(&gw).await, None);
    client
        .associate_consumer(gateway::as_caller(
            REPORTING,
            gateway::namespace_request(SALES_SHARE, PROVISIONED_NS),
        ))
        .await
        .expect("associate");
    assert_eq!(
        sales_status_for_namespace(&gw).await,
        Some(DataShareStatus::Active as i32),
        "the association appears, ACTIVE"
    );
    let active = list(
        &gw,
        NOTEBOOK,
        ListConsumerDataSharesRequest {
            status: DataShareStatus::Active as i32,
            ..Default::default()
        },
    )
    .await
    .expect("analytics may list");
    assert!(
        active
            .data_shares
            .iter()
            .any(|s| s.data_share_arn == SALES_SHARE),
        "{active:?}"
    );

    // validate_only: the decision, and Redshift is not called.
    emulator.reset_counters();
    let validated = client
        .disassociate_consumer(gateway::as_caller(
            REPORTING,
            DisassociateConsumerRequest {
                data_share_arn: SALES_SHARE.into(),
                consumer_arn: PROVISIONED_NS.into(),
                validate_only: true,
                ..Default::default()
            },
        ))
        .await
        .expect("validate_only")
        .into_inner();
    assert_eq!(
        validated
            .validation
            .expect("a decision")
            .determining_policies,
        ["data-platform-associate-in-org"]
    );
    assert!(validated.data_share_arn.is_empty());
    assert_eq!(
        emulator.counter("DisassociateDataShareConsumer", "received"),
        0
    );
    assert_eq!(
        sales_status_for_namespace(&gw).await,
        Some(DataShareStatus::Active as i32)
    );

    // The frontend may not undo it; the analytics team may (a namespace target).
    let denied = client
        .disassociate_consumer(gateway::as_caller(
            FRONTEND,
            DisassociateConsumerRequest {
                data_share_arn: SALES_SHARE.into(),
                consumer_arn: PROVISIONED_NS.into(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("frontend is denied");
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert_eq!(
        emulator.counter("DisassociateDataShareConsumer", "received"),
        0
    );
    let undone = client
        .disassociate_consumer(gateway::as_caller(
            NOTEBOOK,
            DisassociateConsumerRequest {
                data_share_arn: SALES_SHARE.into(),
                consumer_arn: PROVISIONED_NS.into(),
                ..Default::default()
            },
        ))
        .await
        .expect("disassociate")
        .into_inner();
    assert_eq!(undone.data_share_arn, SALES_SHARE);
    assert!(
        !undone
            .associations
            .iter()
            .any(|a| a.consumer_identifier == PROVISIONED_NS
                && a.status == DataShareStatus::Active as i32),
        "{undone:?}"
    );
    assert_eq!(sales_status_for_namespace(&gw).await, None, "it disappears");
    assert_eq!(
        sales_status_for_namespace(&gw).await,
        None,
        "and stays gone"
    );

    // Every call is in the trail, named by its method, and the trail verifies.
    let out = Command::new(env!("CARGO_BIN_EXE_datashare-gateway"))
        .args(["audit", "verify"])
        .arg(&gw.audit_dir)
        .output()
        .expect("audit verify");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let records = gateway::audit_records(&gw.audit_dir);
    let kinds = |method: &str| -> Vec<String> {
        records
            .iter()
            .filter(|r| r["method"] == method)
            .map(|r| r["kind"].as_str().expect("kind").to_owned())
            .collect()
    };
    assert_eq!(kinds("AssociateConsumer"), ["intent", "outcome"]);
    // validate_only and the denial: one record each; the real call: intent and outcome.
    assert_eq!(
        kinds("DisassociateConsumer"),
        ["call", "call", "intent", "outcome"]
    );
    // Five listings, one record each, none with an intent.
    assert_eq!(kinds("ListConsumerDataShares"), ["call"; 6]);
    let undo_outcome = records
        .iter()
        .find(|r| r["method"] == "DisassociateConsumer" && r["kind"] == "outcome")
        .expect("the outcome");
    assert_eq!(undo_outcome["params"]["consumer_arn"], PROVISIONED_NS);
    assert_eq!(undo_outcome["outcome"]["forwarded"], true);
    assert_eq!(undo_outcome["principal"], NOTEBOOK);
    let listing = records
        .iter()
        .find(|r| r["method"] == "ListConsumerDataShares")
        .expect("a listing");
    assert_eq!(listing["outcome"]["forwarded"], true);
    assert!(
        listing["outcome"]["aws_request_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );
}

/// Every page of the listing with `page_size`: the datashare ARNs in order, and the page count.
async fn list_all(gw: &Gateway, page_size: i32) -> (Vec<String>, usize) {
    let mut seen = Vec::new();
    let mut pages = 0;
    let mut token = String::new();
    loop {
        let page = list(
            gw,
            REPORTING,
            ListConsumerDataSharesRequest {
                page_size,
                page_token: token,
                ..Default::default()
            },
        )
        .await
        .expect("list");
        pages += 1;
        assert!(page.data_shares.len() <= 50);
        seen.extend(page.data_shares.into_iter().map(|s| s.data_share_arn));
        if page.next_page_token.is_empty() {
            return (seen, pages);
        }
        token = page.next_page_token;
    }
}

#[tokio::test]
async fn paging_returns_every_datashare_once_and_refuses_tampered_tokens() {
    let emulator = Emulator::start();
    let gw = Gateway::start(GatewayOptions::new(emulator.endpoint_url())).await;
    let (before, _) = list_all(&gw, 50).await;

    let seeded: Vec<_> = (0..120)
        .map(|i| {
            json!({
                "producer_namespace": "9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f",
                "name": format!("paged_{i:03}"),
                "grants": [{"consumer": "444455556666", "status": "AUTHORIZED"}],
            })
        })
        .collect();
    emulator.seed(json!({ "datashares": seeded }));

    let (seen, pages) = list_all(&gw, 50).await;
    let distinct: BTreeSet<_> = seen.iter().collect();
    assert_eq!(distinct.len(), seen.len(), "no datashare twice");
    assert_eq!(seen.len(), before.len() + 120, "every datashare once");
    for i in 0..120 {
        let arn = format!(
            "arn:aws:redshift:us-east-1:111122223333:datashare:9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f/paged_{i:03}"
        );
        assert!(distinct.contains(&arn), "{arn} missing");
    }
    assert_eq!(pages, seen.len().div_ceil(50));
    assert_eq!(pages, 3, "{} datashares in pages of 50", seen.len());

    // page_size 0 means 50.
    let first = list(&gw, REPORTING, ListConsumerDataSharesRequest::default())
        .await
        .expect("first page");
    assert_eq!(first.data_shares.len(), 50);
    let token = first.next_page_token;

    emulator.reset_counters();
    let mut tampered = token.clone().into_bytes();
    let middle = tampered.len() / 2;
    tampered[middle] = if tampered[middle] == b'A' { b'B' } else { b'A' };
    let cases = [
        (String::from_utf8(tampered).expect("ascii"), 0),
        ("not-a-token".to_owned(), 0),
        // A good token sent with other filters.
        (token.clone(), DataShareStatus::Active as i32),
    ];
    for (page_token, status) in cases {
        let err = list(
            &gw,
            REPORTING,
            ListConsumerDataSharesRequest {
                page_token,
                status,
                ..Default::default()
            },
        )
        .await
        .expect_err("refused");
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        let details = err.get_error_details();
        let bad = details.bad_request().expect("BadRequest");
        assert_eq!(bad.field_violations[0].field, "page_token");
    }
    assert_eq!(
        emulator.counter("DescribeDataSharesForConsumer", "received"),
        0,
        "nothing invalid reaches Redshift"
    );
    // The untouched token still works.
    let second = list(
        &gw,
        REPORTING,
        ListConsumerDataSharesRequest {
            page_token: token,
            ..Default::default()
        },
    )
    .await
    .expect("second page");
    assert_eq!(second.data_shares.len(), 50);
}

#[tokio::test]
async fn a_bad_list_or_disassociate_names_every_field() {
    let emulator = Emulator::start();
    let gw = Gateway::start(GatewayOptions::new(emulator.endpoint_url())).await;
    let err = list(
        &gw,
        REPORTING,
        ListConsumerDataSharesRequest {
            consumer_arn: "arn:aws:redshift:us-east-1:444455556666:cluster:nope".into(),
            status: DataShareStatus::Rejected as i32,
            page_size: -1,
            ..Default::default()
        },
    )
    .await
    .expect_err("invalid");
    assert_eq!(err.code(), Code::InvalidArgument);
    let details = err.get_error_details();
    let fields: Vec<_> = details
        .bad_request()
        .expect("BadRequest")
        .field_violations
        .iter()
        .map(|v| v.field.clone())
        .collect();
    assert_eq!(fields, ["consumer_arn", "status", "page_size"]);

    let mut client = gw.client().await;
    let err = client
        .disassociate_consumer(gateway::as_caller(
            REPORTING,
            DisassociateConsumerRequest {
                data_share_arn: "arn:aws:redshift:us-east-1:1:datashare:x/y".into(),
                disassociate_entire_account: true,
                consumer_region: "us-east-1".into(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("invalid");
    let details = err.get_error_details();
    let fields: Vec<_> = details
        .bad_request()
        .expect("BadRequest")
        .field_violations
        .iter()
        .map(|v| v.field.clone())
        .collect();
    assert_eq!(
        fields,
        [
            "data_share_arn",
            "disassociate_entire_account",
            "consumer_region"
        ]
    );
    assert_eq!(
        emulator.counter("DescribeDataSharesForConsumer", "received")
            + emulator.counter("DisassociateDataShareConsumer", "received"),
        0
    );
    // AssociateConsumer beside them is unchanged: validate_only answers.
    let ok = client
        .associate_consumer(gateway::as_caller(
            REPORTING,
            AssociateConsumerRequest {
                data_share_arn: SALES_SHARE.into(),
                associate_entire_account: true,
                validate_only: true,
                ..Default::default()
            },
        ))
        .await;
    assert!(ok.is_ok(), "{ok:?}");
}
