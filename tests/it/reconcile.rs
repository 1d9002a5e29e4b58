//! `datashare-gateway reconcile` end to end: calls through the gateway (over its roles, in two
//! consumer accounts) against the emulator's CloudTrail record of what AWS did. What came through
//! the gateway adds up; a direct change by an administrator is a bypass; a change with the
//! gateway role's credentials taken outside the gateway is unrecorded.

use std::path::Path;
use std::process::{Command, Output};

use crate::support;

use datashare_gateway::proto::datasharing::v1::{
    AssociateConsumerRequest, DisassociateConsumerRequest, ListConsumerDataSharesRequest,
};
use support::emulator::{
    CONSUMER_ROLE, CONSUMER_ROLE_EXTERNAL_ID, Emulator, OTHER_ACCOUNT, PLATFORM_KEY,
};
use support::gateway::{self, Gateway, GatewayOptions, REPORTING, SALES_SHARE};

/// Writes the emulator's events as one CloudTrail log file and runs reconcile over it.
fn reconcile(emulator: &Emulator, gw: &Gateway, dir: &Path) -> (Output, Vec<serde_json::Value>) {
    let trail = dir.join("cloudtrail.json");
    std::fs::write(
        &trail,
        serde_json::json!({"Records": emulator.events()}).to_string(),
    )
    .expect("write the trail file");
    let out = Command::new(env!("CARGO_BIN_EXE_datashare-gateway"))
        .arg("reconcile")
        .arg("--config")
        .arg(&gw.config_file)
        .arg("--cloudtrail")
        .arg(&trail)
        .args(["--grace", "0s", "--format", "json"])
        .output()
        .expect("run reconcile");
    let findings = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("one finding a line"))
        .collect();
    (out, findings)
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
    let out = Command::new(env!("CARGO_BIN_EXE_datashare-gateway"))
        .arg("reconcile")
        .arg("--config")
        .arg(&gw.config_file)
        .args(["--cloudtrail", "/nonexistent/cloudtrail.json.gz"])
        .output()
        .expect("run reconcile");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/cloudtrail.json.gz"));
}

/// Delivers the emulator's events to `bucket` as CloudTrail would: one gzip file per account,
/// under its day's prefix.
async fn deliver(emulator: &Emulator, client: &aws_sdk_s3::Client, bucket: &str, batch: usize) {
    use std::io::Write;
    let mut by_account = std::collections::BTreeMap::<String, Vec<serde_json::Value>>::new();
    for event in emulator.events() {
        let account = event["recipientAccountId"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        by_account.entry(account).or_default().push(event);
    }
    for (account, events) in by_account {
        let time = events[0]["eventTime"].as_str().expect("eventTime");
        let (date, clock) = (&time[..10], &time[11..16]);
        let key = format!(
            "AWSLogs/{account}/CloudTrail/us-east-1/{}/{account}_CloudTrail_us-east-1_{}T{}Z_batch{batch:011}.json.gz",
            date.replace('-', "/"),
            date.replace('-', ""),
            clock.replace(':', "")
        );
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(
            serde_json::json!({"Records": events})
                .to_string()
                .as_bytes(),
        )
        .expect("gzip");
        client
            .put_object()
            .bucket(bucket)
            .key(&key)
            .body(gz.finish().expect("gzip").into())
            .send()
            .await
            .expect("deliver a trail file");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trail_files_are_read_from_the_trails_bucket_by_account_and_day() {
    let moto = support::s3::Moto::start().await;
    let s3 = support::s3::s3_client(&moto.endpoint).await;
    s3.create_bucket()
        .bucket("org-cloudtrail")
        .send()
        .await
        .expect("the trail's bucket");
    let emulator = Emulator::start();
    let gw = Gateway::start(GatewayOptions::with_roles(emulator.endpoint_url())).await;
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
    deliver(&emulator, &s3, "org-cloudtrail", 1).await;
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_datashare-gateway"))
            .arg("reconcile")
            .arg("--config")
            .arg(&gw.config_file)
            .args([
                "--cloudtrail",
                "s3://org-cloudtrail/",
                "--since",
                "1h",
                "--grace",
                "0s",
            ])
            .args(["--s3-endpoint-url", &moto.endpoint, "--s3-force-path-style"])
            .env("AWS_ACCESS_KEY_ID", "AKIDRECONCILE")
            .env("AWS_SECRET_ACCESS_KEY", "reconcile-secret")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
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

    // The next delivery holds only what happens next: an administrator's direct change.
    emulator.reset_events();
    emulator
        .consumer()
        .disassociate_data_share_consumer()
        .data_share_arn(SALES_SHARE)
        .disassociate_entire_account(true)
        .send()
        .await
        .expect("the administrator's own call");
    deliver(&emulator, &s3, "org-cloudtrail", 2).await;
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
    let without_since = Command::new(env!("CARGO_BIN_EXE_datashare-gateway"))
        .arg("reconcile")
        .arg("--config")
        .arg(&gw.config_file)
        .args(["--cloudtrail", "s3://org-cloudtrail/"])
        .output()
        .expect("run reconcile");
    assert_eq!(without_since.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&without_since.stderr).contains("needs --since"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateways_side_is_read_from_the_archive_its_trail_ships_to() {
    let moto = support::s3::Moto::start().await;
    support::s3::create_locked_bucket(&moto.endpoint, "audit-archive").await;
    let emulator = Emulator::start();
    let keys = tempfile::tempdir().expect("temp dir");
    let key = keys.path().join("checkpoint.key");
    let keygen = Command::new(env!("CARGO_BIN_EXE_datashare-gateway"))
        .args(["audit", "keygen", "--out"])
        .arg(&key)
        .output()
        .expect("keygen");
    assert!(keygen.status.success());
    let mut options = GatewayOptions::with_roles(emulator.endpoint_url());
    options.audit_toml = format!(
        "[audit.checkpoint]\nsigning_key_file = {key:?}\ninterval_records = 10\ninterval_secs = 1\n\n\
         [audit.ship]\nbucket = \"audit-archive\"\nprefix = \"trail\"\nregion = \"us-east-1\"\n\
         endpoint_url = \"{}\"\nforce_path_style = true\n\
         object_lock_mode = \"COMPLIANCE\"\nretention_days = 1\nseal_interval_secs = 1\n",
        moto.endpoint
    );
    let gw = Gateway::start(options).await;
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
    let dir = tempfile::tempdir().expect("temp dir");
    let trail = dir.path().join("cloudtrail.json");
    std::fs::write(
        &trail,
        serde_json::json!({"Records": emulator.events()}).to_string(),
    )
    .expect("write the trail file");
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_datashare-gateway"))
            .arg("reconcile")
            .arg("--config")
            .arg(&gw.config_file)
            .args(["--audit", "s3://audit-archive/trail/", "--cloudtrail"])
            .arg(&trail)
            .args([
                "--grace",
                "0s",
                "--s3-endpoint-url",
                &moto.endpoint,
                "--s3-force-path-style",
            ])
            .env("AWS_ACCESS_KEY_ID", "AKIDRECONCILE")
            .env("AWS_SECRET_ACCESS_KEY", "reconcile-secret")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
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
