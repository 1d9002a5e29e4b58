//! Many consumer accounts through one gateway: per-caller AssumeRole into each account (through
//! the real aws-sdk-sts and aws-sdk-redshift against the emulator), the caller named in AWS's own
//! trail (the emulator's CloudTrail-like events), the session cache, and every refusal.

use crate::support;

use std::process::Command;

use datashare_gateway::proto::datasharing::v1::{
    AssociateConsumerRequest, ListConsumerDataSharesRequest,
};
use serde_json::{Value, json};
use support::emulator::{
    CONSUMER_ROLE, Emulator, OTHER_ACCOUNT, OTHER_NAMESPACE, OTHER_ROLE, PLATFORM_KEY,
};
use support::gateway::{
    self, CONSUMER_ACCOUNT, Gateway, GatewayOptions, LOADER, NOTEBOOK, PROVISIONED_NS, REPORTING,
    SALES_SHARE,
};
use tonic::Code;
use tonic_types::StatusExt;

const ASSOCIATE: &str = "AssociateDataShareConsumer";
const LIST: &str = "DescribeDataSharesForConsumer";

/// What `REPORTING` is called in AWS's trail.
const REPORTING_SOURCE_IDENTITY: &str = "reporting.data@example.internal";

/// A caller and what AWS's trail calls it.
struct TrailName {
    principal: &'static str,
    source_identity: &'static str,
    session_name: &'static str,
}

/// Two service accounts alike in all that the cut keeps (8 hex digits of digest named them alike):
/// the README's examples.
const NIGHTLY: [TrailName; 2] = [
    TrailName {
        principal: "spiffe://example.internal/ns/data-platform/sa/nightly-export-job-for-finance-team-5121",
        source_identity: "nightly-export-job-for-finance-team-5121.data-p-43b461ede86d25bc",
        session_name: "dsgw-nightly-export-job-for-finance-team-5121.d-43b461ede86d25bc",
    },
    TrailName {
        principal: "spiffe://example.internal/ns/data-platform/sa/nightly-export-job-for-finance-team-61998",
        source_identity: "nightly-export-job-for-finance-team-61998.data--43b461ed1531d944",
        session_name: "dsgw-nightly-export-job-for-finance-team-61998.-43b461ed1531d944",
    },
];

fn list_in(account: &str) -> ListConsumerDataSharesRequest {
    ListConsumerDataSharesRequest {
        consumer_account: account.into(),
        ..Default::default()
    }
}

async fn list(
    gw: &Gateway,
    caller: &str,
    request: ListConsumerDataSharesRequest,
) -> Result<Vec<String>, tonic::Status> {
    let mut client = gw.client().await;
    client
        .list_consumer_data_shares(gateway::as_caller(caller, request))
        .await
        .map(|r| {
            r.into_inner()
                .data_shares
                .into_iter()
                .map(|s| s.data_share_arn)
                .collect()
        })
}

fn reason(status: &tonic::Status) -> String {
    status
        .get_error_details()
        .error_info()
        .map(|i| i.reason.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn calls_into_both_accounts_are_made_by_the_callers_role_session() {
    let emulator = Emulator::start();
    let gw = Gateway::start(GatewayOptions::with_roles(emulator.endpoint_url())).await;

    // The default account, and the other account by name: sales_share is available to both.
    let mine = list(&gw, REPORTING, ListConsumerDataSharesRequest::default())
        .await
        .expect("list the default account");
    assert!(mine.iter().any(|arn| arn == SALES_SHARE), "{mine:?}");
    let theirs = list(&gw, REPORTING, list_in(OTHER_ACCOUNT))
        .await
        .expect("list the other account");
    assert!(theirs.iter().any(|arn| arn == SALES_SHARE), "{theirs:?}");
    // A namespace ARN names its account.
    let mut client = gw.client().await;
    client
        .associate_consumer(gateway::as_caller(
            REPORTING,
            gateway::namespace_request(SALES_SHARE, OTHER_NAMESPACE),
        ))
        .await
        .expect("associate in the other account");

    let events = emulator.events();
    let redshift: Vec<&Value> = events
        .iter()
        .filter(|e| e["eventSource"] == "redshift.amazonaws.com")
        .collect();
    assert_eq!(redshift.len(), 3, "{events:#?}");
    for (event, account, role) in [
        (redshift[0], CONSUMER_ACCOUNT, CONSUMER_ROLE),
        (redshift[1], OTHER_ACCOUNT, OTHER_ROLE),
        (redshift[2], OTHER_ACCOUNT, OTHER_ROLE),
    ] {
        let who = &event["userIdentity"];
        assert_eq!(event["recipientAccountId"], account, "{event:#}");
        assert_eq!(who["type"], "AssumedRole", "{event:#}");
        let arn = who["arn"].as_str().expect("arn");
        assert!(
            arn.starts_with(&format!(
                "arn:aws:sts::{account}:assumed-role/datashare-gateway/dsgw-"
            )),
            "{arn}"
        );
        assert_eq!(
            who["sessionContext"]["sourceIdentity"],
            REPORTING_SOURCE_IDENTITY
        );
        assert_eq!(who["sessionContext"]["sessionIssuer"]["arn"], role);
    }
    assert_eq!(redshift[2]["eventName"], ASSOCIATE);
    // Each AssumeRole came from the platform account, with the caller in its tags.
    let assumes: Vec<&Value> = events
        .iter()
        .filter(|e| e["eventName"] == "AssumeRole")
        .collect();
    assert_eq!(assumes.len(), 2, "one session per account");
    for assume in &assumes {
        assert_eq!(assume["userIdentity"]["accessKeyId"], PLATFORM_KEY.0);
        let params = &assume["requestParameters"];
        assert_eq!(params["sourceIdentity"], REPORTING_SOURCE_IDENTITY);
        let tags = params["tags"].as_array().expect("tags");
        assert!(
            tags.contains(&json!({"key": "dsgw:principal", "value": REPORTING})),
            "{tags:?}"
        );
        assert!(tags.iter().any(|t| t["key"] == "dsgw:gateway"), "{tags:?}");
    }

    // The audit trail names the session, the caller as AWS sees it, and STS's request id.
    let records = gateway::audit_records(&gw.audit_dir);
    let outcome = records
        .iter()
        .find(|r| r["kind"] == "outcome" && r["method"] == "AssociateConsumer")
        .expect("the association's outcome");
    assert!(
        outcome["outcome"]["assumed_role_arn"]
            .as_str()
            .is_some_and(|a| a.starts_with(&format!("arn:aws:sts::{OTHER_ACCOUNT}:assumed-role/"))),
        "{outcome:#}"
    );
    assert_eq!(
        outcome["outcome"]["source_identity"],
        REPORTING_SOURCE_IDENTITY
    );
    assert!(
        outcome["outcome"]["sts_request_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );
    let intent = records
        .iter()
        .find(|r| r["kind"] == "intent" && r["method"] == "AssociateConsumer")
        .expect("the intent");
    assert!(
        intent["seq"].as_u64() < outcome["seq"].as_u64(),
        "the intent comes first"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_cached_per_caller_and_assumed_once_for_concurrent_callers() {
    let emulator = Emulator::start();
    let gw = Gateway::start(GatewayOptions::with_roles(emulator.endpoint_url())).await;

    // 64 concurrent first calls by one principal: one AssumeRole.
    let client = gw.client().await;
    let calls: Vec<_> = (0..64)
        .map(|_| {
            let mut client = client.clone();
            async move {
                client
                    .list_consumer_data_shares(gateway::as_caller(
                        NOTEBOOK,
                        ListConsumerDataSharesRequest::default(),
                    ))
                    .await
            }
        })
        .collect();
    for result in futures_join_all(calls).await {
        result.expect("a concurrent call");
    }
    assert_eq!(emulator.counter("AssumeRole", "received"), 1);

    // 50 more calls by another principal into one account: one more.
    for _ in 0..50 {
        list(&gw, REPORTING, ListConsumerDataSharesRequest::default())
            .await
            .expect("list");
    }
    assert_eq!(emulator.counter("AssumeRole", "received"), 2);
    assert_eq!(emulator.counter(LIST, "received"), 114);
    // Sessions are never shared: each principal's calls carry its own source identity.
    let identities: std::collections::BTreeSet<String> = emulator
        .events()
        .iter()
        .filter(|e| e["eventName"] == LIST)
        .map(|e| {
            e["userIdentity"]["sessionContext"]["sourceIdentity"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(
        identities.into_iter().collect::<Vec<_>>(),
        [
            "notebook.analytics@example.internal",
            REPORTING_SOURCE_IDENTITY
        ]
    );
    let metrics = support::prometheus::scrape(gw.admin).await;
    assert_eq!(
        metrics.value(
            "datashare_gateway_sts_assume_role_total",
            &[("result", "ok")]
        ),
        Some(2.0)
    );
    assert_eq!(
        metrics.value("datashare_gateway_sts_sessions_cached", &[]),
        Some(2.0)
    );
}

/// Joins futures without a dependency: each is spawned on the runtime.
async fn futures_join_all<F>(futures: Vec<F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.expect("join"));
    }
    out
}

#[tokio::test]
async fn callers_alike_up_to_the_cut_have_their_own_names_in_the_trail() {
    let emulator = Emulator::start();
    let mut options = GatewayOptions::with_roles(emulator.endpoint_url());
    options.extra_toml = NIGHTLY
        .iter()
        .map(|caller| {
            format!(
                "[principals.\"{}\"]\ngroups = [\"data-platform\"]\n",
                caller.principal
            )
        })
        .collect();
    let gw = Gateway::start(options).await;
    for caller in &NIGHTLY {
        list(
            &gw,
            caller.principal,
            ListConsumerDataSharesRequest::default(),
        )
        .await
        .expect("list");
    }

    let events = emulator.events();
    for TrailName {
        principal,
        source_identity,
        session_name,
    } in NIGHTLY
    {
        let assume = events
            .iter()
            .find(|e| {
                e["eventName"] == "AssumeRole"
                    && e["requestParameters"]["sourceIdentity"] == source_identity
            })
            .unwrap_or_else(|| panic!("no AssumeRole as {source_identity}: {events:#?}"));
        let params = &assume["requestParameters"];
        assert_eq!(params["roleSessionName"], session_name, "{assume:#}");
        assert!(
            params["tags"].as_array().is_some_and(
                |tags| tags.contains(&json!({"key": "dsgw:principal", "value": principal}))
            ),
            "{assume:#}"
        );
        let call = events
            .iter()
            .find(|e| {
                e["eventName"] == LIST
                    && e["userIdentity"]["sessionContext"]["sourceIdentity"] == source_identity
            })
            .unwrap_or_else(|| panic!("no {LIST} as {source_identity}: {events:#?}"));
        assert_eq!(
            call["userIdentity"]["arn"],
            format!(
                "arn:aws:sts::{CONSUMER_ACCOUNT}:assumed-role/datashare-gateway/{session_name}"
            ),
            "{call:#}"
        );
    }
}

#[tokio::test]
async fn a_session_is_reused_and_an_expired_one_replaced() {
    let emulator = Emulator::start();
    let gw = Gateway::start(GatewayOptions::with_roles(emulator.endpoint_url())).await;
    for _ in 0..3 {
        list(&gw, REPORTING, ListConsumerDataSharesRequest::default())
            .await
            .expect("list");
    }
    assert_eq!(emulator.counter("AssumeRole", "received"), 1);

    // The emulator's clock jumps past the cached session's end (skew): Redshift answers
    // ExpiredToken, the gateway drops the session and assumes a fresh one, once.
    emulator.advance_clock(1000);
    list(&gw, REPORTING, ListConsumerDataSharesRequest::default())
        .await
        .expect("a fresh session after ExpiredToken");
    assert_eq!(emulator.counter("AssumeRole", "received"), 2);

    // ExpiredToken again with the fresh session: UNAVAILABLE, not the caller's fault.
    emulator.inject_fault(
        json!({"kind": "error", "code": "ExpiredToken", "status": 400, "operation": LIST, "count": 2}),
    );
    let err = list(&gw, REPORTING, ListConsumerDataSharesRequest::default())
        .await
        .expect_err("expired twice");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert_eq!(reason(&err), "SESSION_EXPIRED");
}

#[tokio::test]
async fn sts_refusals_throttling_and_outages_map_by_the_table() {
    let emulator = Emulator::start();

    // A wrong external id: the trust policy refuses; nothing reaches Redshift.
    let mut options = GatewayOptions::with_roles(emulator.endpoint_url());
    options.accounts[0].2 = "not-the-external-id".into();
    let gw = Gateway::start(options).await;
    for _ in 0..3 {
        let err = list(&gw, REPORTING, ListConsumerDataSharesRequest::default())
            .await
            .expect_err("refused");
        assert_eq!(err.code(), Code::Internal, "{err:?}");
        assert_eq!(reason(&err), "ASSUME_ROLE_DENIED");
        assert!(!err.message().contains("not-the-external-id"));
    }
    assert_eq!(emulator.counter(LIST, "received"), 0);
    // The refusal is remembered for a while: the three calls made one STS request.
    assert_eq!(emulator.counter("AssumeRole", "received"), 1);
    assert!(
        !gw.logs_after_a_call_of("ListConsumerDataShares")
            .await
            .contains("not-the-external-id"),
        "the external id is never logged"
    );
    let records = gateway::audit_records(&gw.audit_dir);
    assert!(
        records
            .iter()
            .all(|r| !r.to_string().contains("not-the-external-id"))
    );
    drop(gw);

    let gw = Gateway::start(GatewayOptions::with_roles(emulator.endpoint_url())).await;
    // STS throttles through the SDK's retries: RESOURCE_EXHAUSTED with RetryInfo.
    emulator.inject_fault(json!({"kind": "throttling", "operation": "AssumeRole", "count": 3}));
    let err = list(&gw, NOTEBOOK, ListConsumerDataSharesRequest::default())
        .await
        .expect_err("throttled");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.get_error_details().retry_info().is_some());
    // STS failing: UNAVAILABLE.
    emulator.clear_faults();
    emulator.inject_fault(
        json!({"kind": "service_unavailable", "operation": "AssumeRole", "count": 3}),
    );
    let err = list(&gw, NOTEBOOK, ListConsumerDataSharesRequest::default())
        .await
        .expect_err("STS down");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    // STS unreachable (the connection closed): UNAVAILABLE.
    emulator.clear_faults();
    emulator
        .inject_fault(json!({"kind": "close_connection", "operation": "AssumeRole", "count": 3}));
    let err = list(&gw, NOTEBOOK, ListConsumerDataSharesRequest::default())
        .await
        .expect_err("STS unreachable");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert_eq!(emulator.counter(LIST, "received"), 0);
    emulator.clear_faults();
    list(&gw, NOTEBOOK, ListConsumerDataSharesRequest::default())
        .await
        .expect("STS is back");
}

#[tokio::test]
async fn an_account_the_gateway_does_not_serve_is_refused_and_recorded() {
    let emulator = Emulator::start();
    let gw = Gateway::start(GatewayOptions::with_roles(emulator.endpoint_url())).await;
    let mut client = gw.client().await;
    // 111122223333 is an org account (policy allows it) but not in [accounts].
    let err = client
        .associate_consumer(gateway::as_caller(
            REPORTING,
            AssociateConsumerRequest {
                data_share_arn: SALES_SHARE.into(),
                associate_entire_account: true,
                consumer_account: "111122223333".into(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("not served");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(reason(&err), "ACCOUNT_NOT_CONFIGURED");
    assert_eq!(emulator.counter("AssumeRole", "received"), 0);
    assert_eq!(emulator.counter(ASSOCIATE, "received"), 0);
    let records = gateway::audit_records(&gw.audit_dir);
    assert_eq!(records.len(), 1, "one record, no intent: {records:#?}");
    assert_eq!(records[0]["kind"], "call");
    assert_eq!(records[0]["outcome"]["reason"], "ACCOUNT_NOT_CONFIGURED");
    assert_eq!(records[0]["params"]["consumer_account"], "111122223333");
    assert_eq!(records[0]["decision"]["allowed"], true);

    // consumer_account must agree with the namespace ARN's account.
    let err = client
        .associate_consumer(gateway::as_caller(
            REPORTING,
            AssociateConsumerRequest {
                data_share_arn: SALES_SHARE.into(),
                consumer_arn: PROVISIONED_NS.into(),
                consumer_account: OTHER_ACCOUNT.into(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("mismatch");
    assert_eq!(err.code(), Code::InvalidArgument);
    let details = err.get_error_details();
    let fields: Vec<_> = details
        .bad_request()
        .expect("BadRequest")
        .field_violations
        .iter()
        .map(|v| v.field.clone())
        .collect();
    assert_eq!(fields, ["consumer_account", "consumer_arn"]);
    assert_eq!(emulator.counter("AssumeRole", "received"), 0);

    // Policy sees the named account: the loader (data-platform) may act in the other account.
    let allowed = client
        .associate_consumer(gateway::as_caller(
            LOADER,
            AssociateConsumerRequest {
                data_share_arn: SALES_SHARE.into(),
                associate_entire_account: true,
                consumer_account: OTHER_ACCOUNT.into(),
                validate_only: true,
                ..Default::default()
            },
        ))
        .await
        .expect("validate_only in the other account")
        .into_inner();
    assert!(allowed.validation.is_some());
}

#[tokio::test]
async fn without_a_default_account_an_entire_account_target_must_name_one() {
    let emulator = Emulator::start();
    let mut options = GatewayOptions::with_roles(emulator.endpoint_url());
    options.default_account = None;
    let gw = Gateway::start(options).await;
    let mut client = gw.client().await;
    let err = client
        .associate_consumer(gateway::as_caller(
            REPORTING,
            AssociateConsumerRequest {
                data_share_arn: SALES_SHARE.into(),
                consumer_region: "us-east-1".into(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("no account");
    assert_eq!(err.code(), Code::InvalidArgument);
    let details = err.get_error_details();
    let violation = &details.bad_request().expect("BadRequest").field_violations[0];
    assert_eq!(violation.field, "consumer_account");
    assert!(
        violation
            .description
            .starts_with("required for an entire-account or region target"),
        "{}",
        violation.description
    );
}

#[test]
fn check_config_refuses_a_role_outside_its_account_or_partition() {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |accounts: &str| {
        let path = dir.path().join("gateway.toml");
        std::fs::write(
            &path,
            format!(
                "[auth]\nmode = \"insecure\"\n[policy]\ndir = {:?}\n[audit]\ndir = {:?}\n[upstream]\nregion = \"us-east-1\"\n{accounts}",
                gateway::repo_root().join("examples/policies").display().to_string(),
                dir.path().join("audit").display().to_string(),
            ),
        )
        .expect("write");
        Command::new(env!("CARGO_BIN_EXE_datashare-gateway"))
            .arg("check-config")
            .arg(&path)
            .output()
            .expect("run")
    };
    let ok = write(
        "[accounts.\"444455556666\"]\nrole_arn = \"arn:aws:iam::444455556666:role/datashare-gateway\"\n",
    );
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    for (table, expected) in [
        (
            "[accounts.\"444455556666\"]\nrole_arn = \"arn:aws:iam::777788889999:role/x\"\n",
            "accounts.\"444455556666\".role_arn",
        ),
        (
            "[accounts.\"444455556666\"]\nrole_arn = \"arn:aws-cn:iam::444455556666:role/x\"\n",
            "partition aws-cn",
        ),
        ("", "at least one consumer account"),
    ] {
        let out = write(table);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{table}");
        assert!(stderr.contains(expected), "{table}: {stderr}");
    }
}
