//! `reconcile` and CloudTrail's delivery (issue 23): an event that never arrives is a finding only
//! once the grace has passed, a file delivered late but inside the grace is none, and a call the
//! gateway never saw end (killed between its intent and its outcome) is resolved from AWS's side.

use std::process::Output;
use std::time::Duration;

use crate::reconcile::{findings_of, reconcile_command};
use crate::support;

use datashare_gateway::proto::datasharing::v1::AssociateConsumerRequest;
use serde_json::{Value, json};
use support::emulator::Emulator;
use support::gateway::{self, Gateway, GatewayOptions, REPORTING, SALES_SHARE};
use support::s3::Moto;

const BUCKET: &str = "org-cloudtrail";

/// The emulator delivering its trail to moto, only when flushed or released.
async fn emulator_with_trail() -> (Moto, Emulator) {
    let moto = Moto::start().await;
    support::s3::create_bucket(&moto.endpoint, BUCKET).await;
    let emulator = Emulator::start_with_args(&[
        "--trail-s3-endpoint",
        &moto.endpoint,
        "--trail-bucket",
        BUCKET,
        "--trail-interval-ms",
        "3600000",
    ]);
    (moto, emulator)
}

/// `reconcile` over the trail's bucket for the last hour, with `grace`; its output and findings.
fn reconcile(gw: &Gateway, moto: &Moto, grace: &str) -> (Output, Vec<Value>) {
    let out = reconcile_command(gw)
        .args(["--cloudtrail", &format!("s3://{BUCKET}/"), "--since", "1h"])
        .args(["--grace", grace, "--format", "json"])
        .args(["--s3-endpoint-url", &moto.endpoint, "--s3-force-path-style"])
        .output()
        .expect("run reconcile");
    let findings = findings_of(&out);
    (out, findings)
}

/// Runs `reconcile` with `grace`: no finding (exit 0), and `summary` in its summary line.
fn no_findings(gw: &Gateway, moto: &Moto, grace: &str, summary: &str) {
    let (out, findings) = reconcile(gw, moto, grace);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{findings:?} {stderr}");
    assert!(stderr.contains(summary), "{stderr}");
}

fn associate() -> tonic::Request<AssociateConsumerRequest> {
    gateway::as_caller(
        REPORTING,
        AssociateConsumerRequest {
            data_share_arn: SALES_SHARE.into(),
            associate_entire_account: true,
            ..Default::default()
        },
    )
}

/// The gateway's request id and Redshift's, of the one call whose answer was `response`.
async fn ids_of(gw: &Gateway, response: &tonic::Response<impl Sized>) -> (String, String) {
    let request_id = response
        .metadata()
        .get("x-request-id")
        .expect("x-request-id")
        .to_str()
        .expect("ascii")
        .to_owned();
    let outcome = gateway::outcome_of(&gw.audit_dir, &request_id).await;
    let aws = outcome["outcome"]["aws_request_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no aws_request_id in {outcome}"))
        .to_owned();
    (request_id, aws)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_event_is_missing_only_after_the_grace_and_a_late_file_inside_it_is_nothing() {
    let (moto, emulator) = emulator_with_trail().await;
    let gw = Gateway::start(GatewayOptions::with_roles(emulator.endpoint_url())).await;
    let mut client = gw.client().await;

    // A call whose event CloudTrail loses.
    let answer = client
        .associate_consumer(associate())
        .await
        .expect("associate");
    let (request_id, aws_request_id) = ids_of(&gw, &answer).await;
    let (status, dropped) = emulator.drop_event(json!({"request_id": aws_request_id}));
    assert_eq!(
        (status, dropped["dropped"].as_u64()),
        (200, Some(1)),
        "{dropped}"
    );
    emulator.flush_trail();

    // Inside a grace of an hour it is not yet a finding.
    no_findings(
        &gw,
        &moto,
        "1h",
        "0 call(s) matched, 1 within the delivery grace",
    );
    // Past a grace of two seconds it is, and the only one.
    let findings = support::wait::until(
        Duration::from_secs(20),
        "the call is past a 2 s grace",
        async || match reconcile(&gw, &moto, "2s") {
            (out, findings) if out.status.code() == Some(1) => Ok(findings),
            (out, _) => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
        },
    )
    .await;
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0]["kind"], "missing_in_aws");
    assert_eq!(findings[0]["call"]["request_id"], request_id.as_str());
    assert_eq!(
        findings[0]["call"]["aws_request_id"],
        aws_request_id.as_str()
    );

    // A second call whose file is held back: inside the grace, no finding; once it arrives,
    // matched.
    emulator.hold_trail(None);
    let answer = client
        .associate_consumer(associate())
        .await
        .expect("associate");
    ids_of(&gw, &answer).await; // its outcome is durable
    no_findings(
        &gw,
        &moto,
        "1h",
        "0 call(s) matched, 2 within the delivery grace",
    );
    assert!(
        !emulator.release_trail().is_empty(),
        "the held file delivered"
    );
    no_findings(
        &gw,
        &moto,
        "1h",
        "1 call(s) matched, 1 within the delivery grace",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_killed_between_its_intent_and_its_outcome_is_resolved_from_aws() {
    let (moto, emulator) = emulator_with_trail().await;
    let mut gw = Gateway::start(GatewayOptions::with_roles(emulator.endpoint_url())).await;
    // Redshift keeps the call until released: the gateway's intent is durable, its outcome not.
    emulator.inject_fault(json!({"kind": "hold", "operation": "AssociateDataShareConsumer"}));
    let mut client = gw.client().await;
    let call = tokio::spawn(async move { client.associate_consumer(associate()).await });
    support::wait::until(
        Duration::from_secs(10),
        "Redshift holds the call",
        async || match emulator.held() {
            1 => Ok(()),
            n => Err(n),
        },
    )
    .await;
    gw.kill9().await;
    assert!(
        call.await.expect("call task").is_err(),
        "the caller saw no answer"
    );
    // AWS carries it out after all.
    emulator.release();
    emulator.clear_faults();
    support::wait::until(
        Duration::from_secs(10),
        "the association's event",
        async || match emulator
            .events()
            .iter()
            .filter(|e| e["eventName"] == "AssociateDataShareConsumer")
            .count()
        {
            1 => Ok(()),
            n => Err(n),
        },
    )
    .await;
    assert!(!emulator.flush_trail().is_empty(), "trail files delivered");
    let gw = gw.restart().await;
    let intents = gateway::audit_records_now(&gw.audit_dir)
        .into_iter()
        .filter(|r| r["kind"] == "intent")
        .count();
    assert_eq!(intents, 1, "one intent, left without its outcome");

    let (out, findings) = reconcile(&gw, &moto, "0s");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{findings:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0]["kind"], "resolved");
    assert_eq!(findings[0]["happened"], true, "{findings:?}");
    assert_eq!(findings[0]["call"]["result"]["kind"], "intent_only");
    assert_eq!(
        findings[0]["event"]["operation"],
        "AssociateDataShareConsumer"
    );
}
