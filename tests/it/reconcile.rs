//! `datashare-gateway reconcile` end to end: calls through the gateway (over its roles, in two
//! consumer accounts) against the emulator's CloudTrail record of what AWS did. What came through
//! the gateway adds up; a direct change by an administrator is a bypass; a change with the
//! gateway role's credentials taken outside the gateway is unrecorded.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::{audit_ship, support};

use datashare_gateway::proto::datasharing::v1::{
    AssociateConsumerRequest, DisassociateConsumerRequest, ListConsumerDataSharesRequest,
};
use support::emulator::{
    CONSUMER_ROLE, CONSUMER_ROLE_EXTERNAL_ID, Emulator, OTHER_ACCOUNT, PLATFORM_KEY,
};
use support::gateway::{self, Gateway, GatewayOptions, REPORTING, SALES_SHARE};

/// `datashare-gateway reconcile --config <gw's>`, with AWS credentials for S3 (moto's) in its
/// environment and never a real AWS's.
pub(crate) fn reconcile_command(gw: &Gateway) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_datashare-gateway"));
    command
        .arg("reconcile")
        .arg("--config")
        .arg(&gw.config_file)
        .env("AWS_ACCESS_KEY_ID", "AKIDRECONCILE")
        .env("AWS_SECRET_ACCESS_KEY", "reconcile-secret")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    command
}

/// The emulator's event log as one CloudTrail log file in `dir`.
fn trail_file(emulator: &Emulator, dir: &Path) -> PathBuf {
    let trail = dir.join("cloudtrail.json");
    std::fs::write(
        &trail,
        serde_json::json!({"Records": emulator.events()}).to_string(),
    )
    .expect("write the trail file");
    trail
}

/// Writes the emulator's events as one CloudTrail log file and runs reconcile over it.
fn reconcile(emulator: &Emulator, gw: &Gateway, dir: &Path) -> (Output, Vec<serde_json::Value>) {
    let out = reconcile_command(gw)
        .arg("--cloudtrail")
        .arg(trail_file(emulator, dir))
        .args(["--grace", "0s", "--format", "json"])
        .output()
        .expect("run reconcile");
    let findings = findings_of(&out);
    (out, findings)
}

/// The findings of a `--format json` run: one a line.
pub(crate) fn findings_of(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("one finding a line"))
        .collect()
}

/// REPORTING associates the sales share with the whole default account, through the gateway.
async fn associate_through(gw: &Gateway) {
    gw.client()
        .await
        .associate_consumer(gateway::as_caller(
            REPORTING,
            AssociateConsumerRequest {
                data_share_arn: SALES_SHARE.into(),
                associate_entire_account: true,
                ..Default::default()
            },
        ))
        .await
        .expect("associate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateways_calls_add_up_and_what_went_around_it_is_found() {
    let emulator = Emulator::start();
    let gw = Gateway::start(GatewayOptions::with_roles(emulator.endpoint_url())).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut client = gw.client().await;
    // All three methods, in both served accounts.
    for account in ["", OTHER_ACCOUNT] {
        client
            .associate_consumer(gateway::as_caller(
                REPORTING,
                AssociateConsumerRequest {
                    data_share_arn: SALES_SHARE.into(),
                    associate_entire_account: true,
                    consumer_account: account.into(),
                    ..Default::default()
                },
            ))
            .await
            .expect("associate");
        client
            .list_consumer_data_shares(gateway::as_caller(
                REPORTING,
                ListConsumerDataSharesRequest {
                    consumer_account: account.into(),
                    ..Default::default()
                },
            ))
            .await
            .expect("list");
    }
    client
        .disassociate_consumer(gateway::as_caller(
            REPORTING,
            DisassociateConsumerRequest {
                data_share_arn: SALES_SHARE.into(),
                disassociate_entire_account: true,
                ..Default::default()
            },
        ))
        .await
        .expect("disassociate");
    // The outcomes are durable before reconcile reads them.
    support::wait::until(
        std::time::Duration::from_secs(10),
        "5 forwarded outcomes",
        async || {
            let forwarded = gateway::audit_records_now(&gw.audit_dir)
                .iter()
                .filter(|r| r["outcome"]["forwarded"] == true)
                .count();
            if forwarded == 5 {
                Ok(())
            } else {
                Err(forwarded)
            }
        },
    )
    .await;

    let (out, findings) = reconcile(&emulator, &gw, dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{findings:?} {stderr}");
    assert!(findings.is_empty(), "{findings:?}");
    assert!(
        stderr.contains("0 finding(s)") && stderr.contains("5 call(s) matched"),
        "{stderr}"
    );

    // An administrator of the consumer account associates directly.
    emulator
        .consumer()
        .associate_data_share_consumer()
        .data_share_arn(SALES_SHARE)
        .associate_entire_account(true)
        .send()
        .await
        .expect("the administrator's own call");
    let (out, findings) = reconcile(&emulator, &gw, dir.path());
    assert_eq!(out.status.code(), Some(1), "{findings:?}");
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0]["kind"], "bypass");
    assert_eq!(
        findings[0]["event"]["actor_arn"], "arn:aws:iam::444455556666:user/consumer-admin",
        "{findings:?}"
    );
    assert_eq!(
        findings[0]["event"]["parameters"]["data_share_arn"],
        SALES_SHARE
    );

    // Someone holding the platform's credentials assumes the gateway's role outside it.
    let creds = emulator
        .sts_client(PLATFORM_KEY)
        .assume_role()
        .role_arn(CONSUMER_ROLE)
        .role_session_name("dsgw-not-the-gateway")
        .external_id(CONSUMER_ROLE_EXTERNAL_ID)
        .source_identity("someone@example.internal")
        .send()
        .await
        .expect("AssumeRole outside the gateway")
        .credentials()
        .expect("credentials")
        .clone();
    emulator
        .session_client(&creds)
        .disassociate_data_share_consumer()
        .data_share_arn(SALES_SHARE)
        .disassociate_entire_account(true)
        .send()
        .await
        .expect("the stolen session's call");
    let (out, findings) = reconcile(&emulator, &gw, dir.path());
    assert_eq!(out.status.code(), Some(1));
    let kinds: Vec<_> = findings
        .iter()
        .map(|f| f["kind"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(kinds, ["bypass", "unrecorded"], "{findings:?}");
    assert_eq!(
        findings[1]["event"]["source_identity"], "someone@example.internal",
        "{findings:?}"
    );

    // What cannot be read is exit 2, never taken for "no findings" or "findings".
    let out = reconcile_command(&gw)
        .args(["--cloudtrail", "/nonexistent/cloudtrail.json.gz"])
        .output()
        .expect("run reconcile");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/cloudtrail.json.gz"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trail_files_are_read_from_the_trails_bucket_by_account_and_day() {
    let moto = support::s3::Moto::start().await;
    support::s3::create_bucket(&moto.endpoint, "org-cloudtrail").await;
    // The emulator delivers its trail files to the bucket as CloudTrail does, here only when
    // flushed.
    let emulator = Emulator::start_with_args(&[
        "--trail-s3-endpoint",
        &moto.endpoint,
        "--trail-bucket",
        "org-cloudtrail",
        "--trail-interval-ms",
        "3600000",
    ]);
    let gw = Gateway::start(GatewayOptions::with_roles(emulator.endpoint_url())).await;
    associate_through(&gw).await;
    support::wait::until(
        std::time::Duration::from_secs(10),
        "the outcome",
        async || match gateway::audit_records_now(&gw.audit_dir)
            .iter()
            .any(|r| r["kind"] == "outcome")
        {
            true => Ok(()),
            false => Err(()),
        },
    )
    .await;
    assert!(!emulator.flush_trail().is_empty(), "trail files delivered");
    let run = || {
        reconcile_command(&gw)
            .args(["--cloudtrail", "s3://org-cloudtrail/", "--since", "1h"])
            .args(["--grace", "0s", "--s3-endpoint-url", &moto.endpoint])
            .arg("--s3-force-path-style")
            .output()
            .expect("run reconcile")
    };
    let out = run();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("0 finding(s)") && stdout.contains("1 call(s) matched"),
        "{stdout}"
    );

    // An administrator's direct change, in the next delivery.
    emulator
        .consumer()
        .disassociate_data_share_consumer()
        .data_share_arn(SALES_SHARE)
        .disassociate_entire_account(true)
        .send()
        .await
        .expect("the administrator's own call");
    assert!(!emulator.flush_trail().is_empty(), "trail files delivered");
    let out = run();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("bypass") && stdout.contains("user/consumer-admin"),
        "{stdout}"
    );
    assert!(
        stdout.contains("1 finding(s)") && stdout.contains("1 call(s) matched"),
        "{stdout}"
    );
    let without_since = reconcile_command(&gw)
        .args(["--cloudtrail", "s3://org-cloudtrail/"])
        .output()
        .expect("run reconcile");
    assert_eq!(without_since.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&without_since.stderr).contains("needs --since"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateways_side_is_read_from_the_archive_its_trail_ships_to() {
    let moto = support::s3::Moto::start().await;
    support::s3::create_locked_bucket(&moto.endpoint, audit_ship::BUCKET).await;
    let emulator = Emulator::start();
    let keys = tempfile::tempdir().expect("temp dir");
    let (key, _) = audit_ship::keygen(keys.path(), "checkpoint.key");
    // The shipping tests' trail (checkpoints, a bucket under Object Lock, files sealed every
    // second), from a gateway acting through its roles.
    let options = GatewayOptions {
        audit_toml: audit_ship::options(&emulator, &key, &moto.endpoint).audit_toml,
        ..GatewayOptions::with_roles(emulator.endpoint_url())
    };
    let gw = Gateway::start(options).await;
    associate_through(&gw).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let trail = trail_file(&emulator, dir.path());
    let run = || {
        reconcile_command(&gw)
            .arg("--audit")
            .arg(format!("s3://{}/trail/", audit_ship::BUCKET))
            .arg("--cloudtrail")
            .arg(&trail)
            .args(["--grace", "0s", "--s3-endpoint-url", &moto.endpoint])
            .arg("--s3-force-path-style")
            .output()
            .expect("run reconcile")
    };
    // Until the file holding the outcome is sealed and shipped, the archive lacks the call and
    // its event is unrecorded; once shipped, it adds up.
    let out = support::wait::until(
        std::time::Duration::from_secs(60),
        "the archive accounts for the call",
        async || {
            let out = run();
            match out.status.code() {
                Some(0) => Ok(out),
                _ => Err(String::from_utf8_lossy(&out.stdout).into_owned()),
            }
        },
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("1 call(s) matched"), "{stdout}");
}
