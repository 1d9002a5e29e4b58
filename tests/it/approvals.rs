//! Two-person approval end to end: the gateway process (SQLite approvals store), the emulator,
//! and the emulator's counters proving what reached Redshift. The dev policies make an
//! AssociateConsumer with allow_writes need one approval by a data-approver other than the
//! requester.

use crate::support;

use datashare_gateway::proto::datasharing::v1::{
    ApprovalState, ApproveRequest, AssociateConsumerRequest, DenyRequest, GetApprovalRequest,
    ListApprovalsRequest,
};
use serde_json::Value;
use support::emulator::{CONSUMER_KEY, Emulator};
use support::gateway::{
    self, APPROVER, Gateway, GatewayOptions, LOADER, PROVISIONED_NS, REPORTING, SALES_SHARE,
    SERVERLESS_NS, as_caller, error_info, required_approval,
};
use tonic::Code;
use tonic_types::StatusExt;

const OP: &str = "AssociateDataShareConsumer";
const FRONTEND: &str = gateway::FRONTEND;
/// In data-writers and data-approvers both: may ask for writes and approve, but not their own.
const WRITER_APPROVER: &str = "spiffe://example.internal/ns/data/sa/writer-approver";

fn writes(consumer_arn: &str) -> AssociateConsumerRequest {
    AssociateConsumerRequest {
        data_share_arn: SALES_SHARE.into(),
        consumer_arn: consumer_arn.into(),
        allow_writes: Some(true),
        ..Default::default()
    }
}

fn review(id: &str, comment: &str) -> ApproveRequest {
    ApproveRequest {
        approval_id: id.into(),
        comment: comment.into(),
    }
}

fn with_request_id<M>(caller: &str, request_id: &str, message: M) -> tonic::Request<M> {
    let mut request = as_caller(caller, message);
    request
        .metadata_mut()
        .insert("x-request-id", request_id.parse().expect("ascii"));
    request
}

/// The dev setup: both consumer accounts through their roles (so approved calls get their own
/// tagged session), plus a principal in both data-writers and data-approvers.
fn options(emulator: &Emulator) -> GatewayOptions {
    GatewayOptions {
        extra_toml: format!(
            "[principals.\"{WRITER_APPROVER}\"]\ngroups = [\"data-platform\", \"data-writers\", \"data-approvers\"]\n"
        ),
        ..GatewayOptions::with_roles(emulator.endpoint_url())
    }
}

fn approval_records(gw: &Gateway, id: &str) -> Vec<Value> {
    gateway::audit_records(&gw.audit_dir)
        .into_iter()
        .filter(|r| r["kind"] == "approval" && r["approval_id"] == id)
        .collect()
}

fn audit_verifies(dir: &std::path::Path) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_datashare-gateway"))
        .args(["audit", "verify"])
        .arg(dir)
        .output()
        .expect("run audit verify");
    assert!(
        out.status.success(),
        "audit verify failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn an_approved_request_is_forwarded_once_and_the_next_needs_a_new_approval() {
    let emulator = Emulator::start();
    let gw = Gateway::start(options(&emulator)).await;
    let mut client = gw.client().await;
    let mut approvals = gw.approvals().await;

    // The loader asks: refused for want of approval, with a PreconditionFailure; nothing sent.
    let refused = client
        .associate_consumer(as_caller(LOADER, writes(PROVISIONED_NS)))
        .await
        .expect_err("needs approval");
    let id = required_approval(&refused);
    let (_, metadata) = error_info(&refused);
    assert_eq!(metadata["required_approvals"], "1");
    assert_eq!(metadata["approvals"], "0");
    let failure = refused
        .get_error_details()
        .precondition_failure()
        .cloned()
        .expect("PreconditionFailure");
    assert_eq!(failure.violations[0].r#type, "APPROVAL");
    assert_eq!(failure.violations[0].subject, format!("approvals/{id}"));
    // The same caller repeating the same request (another request id) gets the same approval.
    let again = client
        .associate_consumer(with_request_id(LOADER, "repeat-1", writes(PROVISIONED_NS)))
        .await
        .expect_err("still needs approval");
    assert_eq!(required_approval(&again), id);
    // validate_only says so too, names the pending approval, and creates nothing.
    let mut check = writes(PROVISIONED_NS);
    check.validate_only = true;
    let would = client
        .associate_consumer(as_caller(LOADER, check.clone()))
        .await
        .expect_err("validate_only reports the approval needed");
    assert_eq!(required_approval(&would), id);
    assert_eq!(emulator.counter(OP, "received"), 0);

    // The approver approves.
    let approved = approvals
        .approve(as_caller(
            APPROVER,
            review(&id, "reviewed the change ticket"),
        ))
        .await
        .expect("an approver approves")
        .into_inner()
        .approval
        .expect("the approval");
    assert_eq!(approved.state(), ApprovalState::Approved);
    assert_eq!(approved.requester, LOADER);
    assert_eq!(approved.method, "AssociateConsumer");
    let request = approved.request.expect("the request's fields");
    assert_eq!(request.data_share_arn, SALES_SHARE);
    assert_eq!(request.consumer_kind, "provisioned_namespace");
    assert_eq!(request.consumer, PROVISIONED_NS);
    assert_eq!(request.consumer_account, "444455556666");
    assert!(request.allow_writes);
    assert_eq!(approved.request_digest.len(), 64);
    assert_eq!(approved.approvals[0].principal, APPROVER);
    assert_eq!(approved.approvals[0].comment, "reviewed the change ticket");
    // validate_only now says the call would go through, and spends nothing.
    let validated = client
        .associate_consumer(as_caller(LOADER, check))
        .await
        .expect("validate_only with an approval")
        .into_inner();
    assert!(validated.validation.is_some());
    assert_eq!(emulator.counter(OP, "received"), 0);

    // The loader repeats the request: forwarded, once.
    emulator.reset_events();
    let done = client
        .associate_consumer(with_request_id(LOADER, "spend-1", writes(PROVISIONED_NS)))
        .await
        .expect("the approved request goes through")
        .into_inner();
    let association = done
        .associations
        .iter()
        .find(|a| a.consumer_identifier == PROVISIONED_NS)
        .expect("the association");
    assert_eq!(association.consumer_accepted_writes, Some(true));
    assert_eq!(emulator.counter(OP, "forwarded"), 1);

    // Again: a new approval is needed, and nothing more reaches Redshift.
    let next = client
        .associate_consumer(as_caller(LOADER, writes(PROVISIONED_NS)))
        .await
        .expect_err("a spent approval does not count again");
    let next_id = required_approval(&next);
    assert_ne!(next_id, id);
    assert_eq!(emulator.counter(OP, "received"), 1);

    let spent = approvals
        .get_approval(as_caller(
            LOADER,
            GetApprovalRequest {
                approval_id: id.clone(),
            },
        ))
        .await
        .expect("the requester reads their approval")
        .into_inner()
        .approval
        .expect("the approval");
    assert_eq!(spent.state(), ApprovalState::Consumed);
    assert_eq!(spent.consumed_by_request_id, "spend-1");
    assert!(spent.consume_time.is_some());

    // The Redshift call was made with a session of its own, tagged with the approval: the
    // AssumeRole event that issued the access key the call was signed with carries the tag.
    let events = emulator.events();
    let redshift_call = events
        .iter()
        .find(|e| e["eventName"] == OP)
        .expect("the Redshift event");
    let key = &redshift_call["userIdentity"]["accessKeyId"];
    let assume = events
        .iter()
        .find(|e| {
            e["eventName"] == "AssumeRole"
                && e["responseElements"]["credentials"]["accessKeyId"] == *key
        })
        .expect("the AssumeRole event of the call's session");
    let tags = assume["requestParameters"]["tags"]
        .as_array()
        .expect("tags");
    assert!(
        tags.iter()
            .any(|t| t["key"] == "dsgw:approval" && t["value"] == id.as_str()),
        "{tags:?}"
    );
    assert!(
        !assume["requestParameters"]["transitiveTagKeys"]
            .as_array()
            .is_some_and(|keys| keys.iter().any(|k| k == "dsgw:approval")),
        "the approval tag is not transitive"
    );

    // The trail: every transition, and the intent and outcome name the approval and approvers.
    let transitions: Vec<_> = approval_records(&gw, &id)
        .iter()
        .map(|r| r["transition"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(transitions, ["created", "approved", "consumed"]);
    let records = gateway::audit_records(&gw.audit_dir);
    let intent = records
        .iter()
        .find(|r| r["kind"] == "intent" && r["request_id"] == "spend-1")
        .expect("the intent");
    assert_eq!(intent["approval"]["approval_id"], id.as_str());
    assert_eq!(intent["approval"]["approvers"][0], APPROVER);
    let outcome = records
        .iter()
        .find(|r| r["kind"] == "outcome" && r["request_id"] == "spend-1")
        .expect("the outcome");
    assert_eq!(outcome["approval"]["approval_id"], id.as_str());
    assert_eq!(outcome["outcome"]["code"], "OK");
    let refusal = records
        .iter()
        .find(|r| r["kind"] == "call" && r["request_id"] == "repeat-1")
        .expect("the refused call's record");
    assert_eq!(refusal["outcome"]["reason"], "APPROVAL_REQUIRED");
    assert_eq!(refusal["outcome"]["approval_id"], id.as_str());
    audit_verifies(&gw.audit_dir);

    let scrape = support::prometheus::scrape(gw.admin).await;
    for (transition, n) in [
        ("created", 2.0),
        ("approved", 1.0),
        ("consumed", 1.0),
        ("expired", 0.0),
    ] {
        assert_eq!(
            scrape.value(
                "datashare_gateway_approval_transitions_total",
                &[("transition", transition)]
            ),
            Some(n),
            "{transition}"
        );
    }
    // The gauge is refreshed from the store just after each transition: one pending (the
    // newest), none approved.
    let mut pending = None;
    for _ in 0..50 {
        let scrape = support::prometheus::scrape(gw.admin).await;
        pending = scrape.value("datashare_gateway_approvals", &[("state", "pending")]);
        if pending == Some(1.0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(pending, Some(1.0));
    assert!(gw.logged("approval pending").await);
}

#[tokio::test]
async fn only_another_principal_permitted_by_policy_approves_and_each_counts_once() {
    let emulator = Emulator::start();
    let gw = Gateway::start(options(&emulator)).await;
    let mut client = gw.client().await;
    let mut approvals = gw.approvals().await;
    let refused = client
        .associate_consumer(as_caller(WRITER_APPROVER, writes(PROVISIONED_NS)))
        .await
        .expect_err("needs approval");
    let id = required_approval(&refused);

    // Policy lets this principal approve, but never their own request.
    let own = approvals
        .approve(as_caller(WRITER_APPROVER, review(&id, "mine")))
        .await
        .expect_err("self-approval");
    assert_eq!(own.code(), Code::PermissionDenied);
    assert_eq!(error_info(&own).0, "SELF_APPROVAL");
    // Not a data-approver: policy says no.
    for outsider in [REPORTING, LOADER, FRONTEND] {
        let denied = approvals
            .approve(as_caller(outsider, review(&id, "me too")))
            .await
            .expect_err("not an approver");
        assert_eq!(denied.code(), Code::PermissionDenied, "{outsider}");
        assert_eq!(error_info(&denied).0, "POLICY_DENIED");
    }
    // Others cannot read it either; the requester and approvers can.
    let read = |caller: &'static str| {
        let mut approvals = approvals.clone();
        let id = id.clone();
        async move {
            approvals
                .get_approval(as_caller(caller, GetApprovalRequest { approval_id: id }))
                .await
        }
    };
    assert_eq!(
        read(REPORTING).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    assert!(read(WRITER_APPROVER).await.is_ok());
    assert!(read(APPROVER).await.is_ok());
    let reporting_list = approvals
        .list_approvals(as_caller(REPORTING, ListApprovalsRequest::default()))
        .await
        .expect("reporting may list: it sees its own, none")
        .into_inner();
    assert!(reporting_list.approvals.is_empty());
    let frontend_list = approvals
        .list_approvals(as_caller(FRONTEND, ListApprovalsRequest::default()))
        .await
        .expect_err("frontend may do nothing");
    assert_eq!(frontend_list.code(), Code::PermissionDenied);
    let unknown = approvals
        .get_approval(as_caller(
            APPROVER,
            GetApprovalRequest {
                approval_id: "3f2c6f1e-8a4b-4c1d-9e7f-0a1b2c3d4e5f".into(),
            },
        ))
        .await
        .expect_err("no such approval");
    assert_eq!(unknown.code(), Code::NotFound);

    assert_eq!(emulator.counter(OP, "received"), 0);
    let approved = approvals
        .approve(as_caller(APPROVER, review(&id, "ok")))
        .await
        .expect("an approver approves")
        .into_inner();
    assert_eq!(
        approved.approval.expect("approval").state(),
        ApprovalState::Approved
    );
    let twice = approvals
        .approve(as_caller(APPROVER, review(&id, "ok again")))
        .await
        .expect_err("one principal counts once");
    assert_eq!(twice.code(), Code::AlreadyExists);
    assert_eq!(error_info(&twice).0, "ALREADY_REVIEWED");

    client
        .associate_consumer(as_caller(WRITER_APPROVER, writes(PROVISIONED_NS)))
        .await
        .expect("approved by someone else: forwarded");
    assert_eq!(emulator.counter(OP, "forwarded"), 1);
    let closed = approvals
        .approve(as_caller(APPROVER, review(&id, "late")))
        .await
        .expect_err("a consumed approval is closed");
    assert_eq!(closed.code(), Code::FailedPrecondition);
    let (reason, metadata) = error_info(&closed);
    assert_eq!(reason, "APPROVAL_CLOSED");
    assert_eq!(metadata["state"], "CONSUMED");
}

#[tokio::test]
async fn a_denied_request_is_refused_until_its_approval_expires() {
    let emulator = Emulator::start();
    let gw = Gateway::start(options(&emulator)).await;
    let mut client = gw.client().await;
    let mut approvals = gw.approvals().await;
    let id = required_approval(
        &client
            .associate_consumer(as_caller(LOADER, writes(PROVISIONED_NS)))
            .await
            .expect_err("needs approval"),
    );
    let denied = approvals
        .deny(as_caller(
            APPROVER,
            DenyRequest {
                approval_id: id.clone(),
                comment: "no writes into sales".into(),
            },
        ))
        .await
        .expect("an approver denies")
        .into_inner()
        .approval
        .expect("approval");
    assert_eq!(denied.state(), ApprovalState::Denied);
    assert_eq!(denied.denials[0].comment, "no writes into sales");
    let retry = client
        .associate_consumer(as_caller(LOADER, writes(PROVISIONED_NS)))
        .await
        .expect_err("denied");
    assert_eq!(retry.code(), Code::FailedPrecondition);
    let (reason, metadata) = error_info(&retry);
    assert_eq!(reason, "APPROVAL_DENIED");
    assert_eq!(metadata["approval_id"], id);
    let late = approvals
        .approve(as_caller(APPROVER, review(&id, "changed my mind")))
        .await
        .expect_err("a denied approval is closed");
    assert_eq!(error_info(&late).0, "APPROVAL_CLOSED");
    assert_eq!(emulator.counter(OP, "received"), 0);
    let transitions: Vec<_> = approval_records(&gw, &id)
        .iter()
        .map(|r| r["transition"].clone())
        .collect();
    assert_eq!(transitions, ["created", "denied"]);
}

#[tokio::test]
async fn an_approval_expires_after_its_ttl() {
    let emulator = Emulator::start();
    let mut options = options(&emulator);
    options
        .extra_toml
        .push_str("[approvals]\nttl_secs = 1\nsweep_interval_secs = 1\n");
    let gw = Gateway::start(options).await;
    let mut client = gw.client().await;
    let mut approvals = gw.approvals().await;
    let id = required_approval(
        &client
            .associate_consumer(as_caller(LOADER, writes(PROVISIONED_NS)))
            .await
            .expect_err("needs approval"),
    );
    // The shortest TTL the configuration takes: the approval must be approved within the
    // second it lives (two local calls; far less on any machine).
    let approved = approvals
        .approve(as_caller(APPROVER, review(&id, "ok")))
        .await
        .expect("approved in time (within the 1 s TTL)")
        .into_inner()
        .approval
        .expect("approval");
    let nanos = |t: Option<prost_types::Timestamp>| {
        let t = t.expect("a timestamp");
        i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos)
    };
    assert_eq!(
        nanos(approved.expire_time) - nanos(approved.create_time),
        1_000_000_000,
        "it expires ttl_secs after its creation"
    );
    // The gateway's clock is the wall clock: wait for the expiry itself, the sweep's `expired`
    // record, rather than for a time long enough to be sure of it.
    support::wait::until(
        std::time::Duration::from_secs(10),
        &format!("approval {id} is recorded as expired"),
        async || {
            let transitions: Vec<Value> = gateway::audit_records_now(&gw.audit_dir)
                .into_iter()
                .filter(|r| r["kind"] == "approval" && r["approval_id"] == id.as_str())
                .map(|r| r["transition"].clone())
                .collect();
            if transitions.iter().any(|t| t == "expired") {
                Ok(())
            } else {
                Err(transitions)
            }
        },
    )
    .await;
    let get = approvals
        .get_approval(as_caller(
            LOADER,
            GetApprovalRequest {
                approval_id: id.clone(),
            },
        ))
        .await
        .expect("readable")
        .into_inner()
        .approval
        .expect("approval");
    assert_eq!(get.state(), ApprovalState::Expired);
    let retry = client
        .associate_consumer(as_caller(LOADER, writes(PROVISIONED_NS)))
        .await
        .expect_err("an expired approval is not spent");
    assert_ne!(required_approval(&retry), id);
    let late = approvals
        .approve(as_caller(APPROVER, review(&id, "too late")))
        .await
        .expect_err("expired");
    let (reason, metadata) = error_info(&late);
    assert_eq!(
        (reason.as_str(), metadata["state"].as_str()),
        ("APPROVAL_CLOSED", "EXPIRED")
    );
    assert_eq!(emulator.counter(OP, "received"), 0);
    let transitions: Vec<_> = approval_records(&gw, &id)
        .iter()
        .map(|r| r["transition"].clone())
        .collect();
    assert_eq!(transitions, ["created", "approved", "expired"]);
    let listed = approvals
        .list_approvals(as_caller(
            APPROVER,
            ListApprovalsRequest {
                state: ApprovalState::Expired as i32,
                ..Default::default()
            },
        ))
        .await
        .expect("list expired")
        .into_inner();
    assert_eq!(listed.approvals.len(), 1);
    assert_eq!(listed.approvals[0].approval_id, id);
}

#[tokio::test]
async fn a_different_request_does_not_spend_the_approval() {
    let emulator = Emulator::start();
    let gw = Gateway::start(options(&emulator)).await;
    let mut client = gw.client().await;
    let mut approvals = gw.approvals().await;
    let id = required_approval(
        &client
            .associate_consumer(as_caller(LOADER, writes(PROVISIONED_NS)))
            .await
            .expect_err("needs approval"),
    );
    approvals
        .approve(as_caller(APPROVER, review(&id, "namespace only")))
        .await
        .expect("approved");

    // Another consumer: its own approval, nothing forwarded.
    let other = client
        .associate_consumer(as_caller(LOADER, writes(SERVERLESS_NS)))
        .await
        .expect_err("another consumer needs its own approval");
    assert_ne!(required_approval(&other), id);
    // Another caller with the same fields: its own approval.
    let mut same_fields = writes(PROVISIONED_NS);
    same_fields.consumer_account = "444455556666".into();
    let by_other = client
        .associate_consumer(as_caller(WRITER_APPROVER, same_fields.clone()))
        .await
        .expect_err("another requester needs its own approval");
    assert_ne!(required_approval(&by_other), id);
    assert_eq!(emulator.counter(OP, "received"), 0);
    // allow_writes changed: this request needs no approval, and spends none.
    let mut read_only = writes(PROVISIONED_NS);
    read_only.allow_writes = Some(false);
    client
        .associate_consumer(as_caller(LOADER, read_only))
        .await
        .expect("no writes, no approval needed");
    assert_eq!(emulator.counter(OP, "forwarded"), 1);
    let still = approvals
        .get_approval(as_caller(
            APPROVER,
            GetApprovalRequest {
                approval_id: id.clone(),
            },
        ))
        .await
        .expect("get")
        .into_inner()
        .approval
        .expect("approval");
    assert_eq!(still.state(), ApprovalState::Approved);
    // The approved request, spelled with the account it resolves to anyway: the same request.
    client
        .associate_consumer(as_caller(LOADER, same_fields))
        .await
        .expect("the approved request, the account named explicitly");
    assert_eq!(emulator.counter(OP, "forwarded"), 2);

    // The approvers' view: newest first, paged.
    let first = approvals
        .list_approvals(as_caller(
            APPROVER,
            ListApprovalsRequest {
                page_size: 2,
                ..Default::default()
            },
        ))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(first.approvals.len(), 2);
    assert!(!first.next_page_token.is_empty());
    let second = approvals
        .list_approvals(as_caller(
            APPROVER,
            ListApprovalsRequest {
                page_size: 2,
                page_token: first.next_page_token.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("second page")
        .into_inner();
    let ids: Vec<_> = first
        .approvals
        .iter()
        .chain(&second.approvals)
        .map(|a| a.approval_id.clone())
        .collect();
    assert_eq!(ids.len(), 3);
    assert_eq!(ids[2], id, "newest first: the first approval is last");
    assert!(second.next_page_token.is_empty());
    let tampered = approvals
        .list_approvals(as_caller(
            APPROVER,
            ListApprovalsRequest {
                page_size: 2,
                page_token: first.next_page_token,
                state: ApprovalState::Pending as i32,
            },
        ))
        .await
        .expect_err("a token for another filter");
    assert_eq!(tampered.code(), Code::InvalidArgument);
    // The loader sees only its own.
    let own = approvals
        .list_approvals(as_caller(LOADER, ListApprovalsRequest::default()))
        .await
        .expect("list own")
        .into_inner();
    assert!(own.approvals.iter().all(|a| a.requester == LOADER));
    assert_eq!(own.approvals.len(), 2);
}

#[tokio::test]
async fn an_approval_survives_a_restart_of_the_gateway() {
    let emulator = Emulator::start();
    let gw = Gateway::start(options(&emulator)).await;
    let id = required_approval(
        &gw.client()
            .await
            .associate_consumer(as_caller(LOADER, writes(PROVISIONED_NS)))
            .await
            .expect_err("needs approval"),
    );
    gw.approvals()
        .await
        .approve(as_caller(APPROVER, review(&id, "before the restart")))
        .await
        .expect("approved");
    let gw = gw.restart().await;
    gw.client()
        .await
        .associate_consumer(as_caller(LOADER, writes(PROVISIONED_NS)))
        .await
        .expect("the approval survived the restart");
    assert_eq!(emulator.counter(OP, "forwarded"), 1);
    assert!(gw.audit_dir.join("approvals.db").is_file());
    audit_verifies(&gw.audit_dir);
    let _ = CONSUMER_KEY;
}

/// The approval is spent only after the intent naming it is durable: an audit outage before the
/// intent leaves it unspent, and the same approval is spent once, by the next attempt.
#[tokio::test]
async fn an_audit_outage_before_the_intent_leaves_the_approval_unspent() {
    let emulator = Emulator::start();
    // The store outside the audit directory, which the test takes away.
    let store_dir = tempfile::tempdir().expect("tempdir");
    let store = format!("sqlite:{}", store_dir.path().join("approvals.db").display());
    let mut options = options(&emulator);
    options
        .extra_toml
        .push_str(&format!("[approvals]\nstore = {store:?}\n"));
    // Every batch starts a new file, so every write needs the directory.
    options.audit_max_file_bytes = Some(1);
    let gw = Gateway::start(options).await;
    let mut client = gw.client().await;
    let id = required_approval(
        &client
            .associate_consumer(as_caller(LOADER, writes(PROVISIONED_NS)))
            .await
            .expect_err("needs approval"),
    );
    gw.approvals()
        .await
        .approve(as_caller(APPROVER, review(&id, "one write load")))
        .await
        .expect("approved");
    emulator.reset_counters();

    // Root ignores permission bits, but not a regular file where the directory should be.
    let moved = gw.dir.path().join("audit-moved");
    std::fs::rename(&gw.audit_dir, &moved).expect("move the audit directory away");
    std::fs::write(&gw.audit_dir, "not a directory").expect("block its path");
    let refused = client
        .associate_consumer(with_request_id(
            LOADER,
            "during-outage",
            writes(PROVISIONED_NS),
        ))
        .await
        .expect_err("no durable intent, no call");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert_eq!(error_info(&refused).0, "AUDIT_UNAVAILABLE");
    assert_eq!(emulator.counter(OP, "received"), 0, "nothing is forwarded");
    std::fs::remove_file(&gw.audit_dir).expect("unblock the path");
    std::fs::rename(&moved, &gw.audit_dir).expect("move the audit directory back");

    let state = gw
        .approvals()
        .await
        .get_approval(as_caller(
            LOADER,
            GetApprovalRequest {
                approval_id: id.clone(),
            },
        ))
        .await
        .expect("the requester reads its approval")
        .into_inner()
        .approval
        .expect("the approval");
    assert_eq!(
        state.state(),
        ApprovalState::Approved,
        "the outage spent nothing"
    );
    client
        .associate_consumer(with_request_id(
            LOADER,
            "after-outage",
            writes(PROVISIONED_NS),
        ))
        .await
        .expect("the approval is still good for one call");
    assert_eq!(emulator.counter(OP, "received"), 1);

    gateway::outcome_of(&gw.audit_dir, "after-outage").await;
    let consumed: Vec<Value> = approval_records(&gw, &id)
        .into_iter()
        .filter(|r| r["transition"] == "consumed")
        .collect();
    assert_eq!(consumed.len(), 1, "{consumed:?}");
    assert_eq!(consumed[0]["request_id"], "after-outage");
    let intent = gateway::audit_records(&gw.audit_dir)
        .into_iter()
        .find(|r| r["kind"] == "intent" && r["request_id"] == "after-outage")
        .expect("the second call's intent");
    assert_eq!(
        intent["approval"]["approval_id"], id,
        "the intent names the approval it spends"
    );
}
