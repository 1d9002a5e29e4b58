//! Identity, validation and policy in the real stack (`server::build_stack`) over a stand-in for
//! Redshift: who may do what with the example policies, for every operation, and that nothing
//! invalid or denied reaches the upstream service.

use crate::support;

use datashare_gateway::audit::{AuditConfig, AuditLog};
use datashare_gateway::call::{CallerCredential, DataShare};
use datashare_gateway::ops::associate::{AssociateParams, AssociateReply};
use datashare_gateway::ops::disassociate::{DisassociateParams, DisassociateReply};
use datashare_gateway::ops::list::{ListParams, ListReply};
use datashare_gateway::ops::{AssociateConsumer, DisassociateConsumer, ListConsumerDataShares};
use datashare_gateway::server::build_stack;
use datashare_gateway::status::code_of;
use support::stack::{FakeUpstream, call, caller, parts};
use tonic::Code;
use tower::ServiceExt;

const SALES: &str = "arn:aws:redshift:us-east-1:111122223333:datashare:9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f/sales_share";
const SERVERLESS: &str = "arn:aws:redshift-serverless:us-east-1:444455556666:namespace/0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9";
const REPORTING: &str = "spiffe://example.internal/ns/data/sa/reporting";
const NOTEBOOK: &str = "spiffe://example.internal/ns/analytics/sa/notebook";
const LOADER: &str = "spiffe://example.internal/ns/data/sa/loader";
const FRONTEND: &str = "spiffe://example.internal/ns/web/sa/frontend";

async fn audit_log(dir: &std::path::Path) -> AuditLog {
    AuditLog::open(&AuditConfig::new(dir), "test")
        .await
        .expect("audit")
}

#[tokio::test]
async fn the_stack_authenticates_validates_and_authorizes_before_forwarding() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let parts = parts(audit_log(tmp.path()).await);
    let upstream = FakeUpstream::new(|| AssociateReply::Associated(DataShare::default()));
    let stack = build_stack::<AssociateConsumer, _>(&parts, upstream.clone());

    let namespace = AssociateParams {
        data_share_arn: SALES.into(),
        consumer_arn: SERVERLESS.into(),
        ..Default::default()
    };
    let entire = AssociateParams {
        data_share_arn: SALES.into(),
        associate_entire_account: true,
        ..Default::default()
    };
    let writes = AssociateParams {
        allow_writes: Some(true),
        ..namespace.clone()
    };
    let invalid = AssociateParams {
        consumer_arn: "nope".into(),
        ..namespace.clone()
    };
    let cases = [
        (
            CallerCredential::None,
            namespace.clone(),
            Err(Code::Unauthenticated),
        ),
        (caller(NOTEBOOK), namespace.clone(), Ok(())),
        (
            caller(NOTEBOOK),
            entire.clone(),
            Err(Code::PermissionDenied),
        ),
        (caller(REPORTING), entire.clone(), Ok(())),
        (
            caller(FRONTEND),
            namespace.clone(),
            Err(Code::PermissionDenied),
        ),
        (
            caller(REPORTING),
            writes.clone(),
            Err(Code::PermissionDenied),
        ),
        // Writes by a data-writer need an approval; these stack parts have no store, so it
        // stays FAILED_PRECONDITION (tests/approvals.rs runs the whole flow).
        (caller(LOADER), writes, Err(Code::FailedPrecondition)),
        (caller(REPORTING), invalid, Err(Code::InvalidArgument)),
    ];
    let mut expected_forwards = 0;
    for (credential, params, expected) in cases {
        let description = format!("{credential:?} {params:?}");
        let result = stack.clone().oneshot(call(credential, "r", params)).await;
        match expected {
            Ok(()) => {
                expected_forwards += 1;
                assert!(
                    matches!(result, Ok(AssociateReply::Associated(_))),
                    "{description}: {result:?}"
                );
            }
            Err(code) => assert_eq!(code_of(&result.unwrap_err()), code, "{description}"),
        }
        assert_eq!(upstream.count(), expected_forwards, "{description}");
    }

    // validate_only: the decision comes back and nothing is forwarded.
    let result = stack
        .clone()
        .oneshot(call(
            caller(REPORTING),
            "v",
            AssociateParams {
                validate_only: true,
                ..entire
            },
        ))
        .await
        .unwrap();
    let AssociateReply::Validated(decision) = result else {
        panic!("expected Validated, got {result:?}");
    };
    assert!(decision.allowed);
    assert_eq!(
        decision.determining_policies,
        ["data-platform-associate-in-org"]
    );
    assert_eq!(upstream.count(), expected_forwards);
}

#[tokio::test]
async fn disassociate_and_list_go_through_the_same_layers() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let parts = parts(audit_log(tmp.path()).await);
    let disassociate_upstream =
        FakeUpstream::new(|| DisassociateReply::Disassociated(DataShare::default()));
    let disassociate =
        build_stack::<DisassociateConsumer, _>(&parts, disassociate_upstream.clone());
    let list_upstream = FakeUpstream::new(|| ListReply {
        data_shares: Vec::new(),
        next_page_token: String::new(),
    });
    let list = build_stack::<ListConsumerDataShares, _>(&parts, list_upstream.clone());

    let entire = DisassociateParams {
        data_share_arn: SALES.into(),
        disassociate_entire_account: true,
        ..Default::default()
    };
    let err = disassociate
        .clone()
        .oneshot(call(CallerCredential::None, "d0", entire.clone()))
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), Code::Unauthenticated);
    let err = disassociate
        .clone()
        .oneshot(call(caller(NOTEBOOK), "d1", entire.clone()))
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), Code::PermissionDenied);
    let err = disassociate
        .clone()
        .oneshot(call(
            caller(REPORTING),
            "d2",
            DisassociateParams {
                consumer_region: "us-east-1".into(),
                ..entire.clone()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), Code::InvalidArgument);
    assert_eq!(disassociate_upstream.count(), 0);
    let validated = disassociate
        .clone()
        .oneshot(call(
            caller(REPORTING),
            "d3",
            DisassociateParams {
                validate_only: true,
                ..entire.clone()
            },
        ))
        .await
        .unwrap();
    assert!(matches!(validated, DisassociateReply::Validated(d) if d.allowed));
    assert_eq!(disassociate_upstream.count(), 0);
    disassociate
        .clone()
        .oneshot(call(caller(REPORTING), "d4", entire))
        .await
        .expect("data-platform may disassociate the entire account");
    assert_eq!(disassociate_upstream.count(), 1);

    let err = list
        .clone()
        .oneshot(call(caller(FRONTEND), "l1", ListParams::default()))
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), Code::PermissionDenied);
    let err = list
        .clone()
        .oneshot(call(
            caller(REPORTING),
            "l2",
            ListParams {
                page_token: "tampered".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), Code::InvalidArgument);
    assert_eq!(list_upstream.count(), 0);
    for who in [REPORTING, NOTEBOOK] {
        list.clone()
            .oneshot(call(caller(who), "l3", ListParams::default()))
            .await
            .expect("data-platform and analytics may list");
    }
    assert_eq!(list_upstream.count(), 2);
}
