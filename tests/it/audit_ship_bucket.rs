//! The bucket the trail ships to must keep what it is given (issue 22, N11), through the real
//! gateway process and moto's S3: `serve` and `check-config` refuse a bucket S3 says is missing
//! or lacks Object Lock or versioning, naming `audit.ship.bucket`; with S3 out of reach `serve`
//! starts with a warning and `check-config` passes with one; and a refusal S3 keeps giving while
//! the gateway runs is a permanent error (its own metric label, an ALARM line, a note in
//! `/readyz`'s body while readiness stays 200), retried until the bucket is fixed.

use crate::audit_ship::{BUCKET, calls, keygen, metric, options, wait_all_shipped};
use crate::support;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use support::emulator::Emulator;
use support::gateway::{self, Gateway, GatewayOptions};
use support::prometheus::get;
use support::s3::{self, Mode, Moto, Proxy};

/// Bounds every wait for something the gateway does on its own.
const PATIENCE: Duration = Duration::from_secs(60);

/// How the bucket is made before the gateway looks at it.
#[derive(Clone, Copy, Debug)]
enum Made {
    NotAtAll,
    Plain,
    VersionedWithoutLock,
    SuspendedWithoutLock,
}

async fn make_bucket(endpoint: &str, made: Made) {
    let client = s3::s3_client(endpoint).await;
    if matches!(made, Made::NotAtAll) {
        return;
    }
    client
        .create_bucket()
        .bucket(BUCKET)
        .send()
        .await
        .expect("create the bucket");
    let status = match made {
        Made::VersionedWithoutLock => aws_sdk_s3::types::BucketVersioningStatus::Enabled,
        Made::SuspendedWithoutLock => aws_sdk_s3::types::BucketVersioningStatus::Suspended,
        Made::NotAtAll | Made::Plain => return,
    };
    {
        client
            .put_bucket_versioning()
            .bucket(BUCKET)
            .versioning_configuration(
                aws_sdk_s3::types::VersioningConfiguration::builder()
                    .status(status)
                    .build(),
            )
            .send()
            .await
            .expect("enable versioning");
    }
}

/// `datashare-gateway <args> <config>` with the gateway's credentials, as the support starts
/// `serve`; its output once it exits (killed after 30 s: then `None`).
async fn run_to_exit(args: &[&str], config: &Path, options: &GatewayOptions) -> Option<Output> {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_datashare-gateway"))
        .args(args)
        .arg(config)
        .env("AWS_ACCESS_KEY_ID", &options.access_key)
        .env("AWS_SECRET_ACCESS_KEY", &options.secret_key)
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn datashare-gateway");
    tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .ok()
        .map(|out| out.expect("its output"))
}

/// The config the support would start `options` with, written to `dir/gateway.toml`.
fn write_config(dir: &Path, options: &GatewayOptions) -> std::path::PathBuf {
    let path = dir.join("gateway.toml");
    std::fs::write(&path, gateway::config_text(options, &dir.join("audit"))).expect("config");
    path
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_and_check_config_refuse_a_bucket_that_is_missing_or_lacks_object_lock() {
    let emulator = Emulator::start();
    let keys = tempfile::tempdir().expect("tmp");
    let (key, _) = keygen(keys.path(), "checkpoint.key");
    // (how the bucket is made, what the refusal must say, what it must not)
    let cases = [
        (Made::NotAtAll, "S3 has no such bucket", None),
        (
            Made::Plain,
            "Object Lock is not enabled and versioning is not enabled on the bucket",
            None,
        ),
        (
            Made::SuspendedWithoutLock,
            "Object Lock is not enabled and versioning is suspended on the bucket",
            None,
        ),
        (
            Made::VersionedWithoutLock,
            "Object Lock is not enabled on the bucket",
            Some("versioning"),
        ),
    ];
    for (made, says, not) in cases {
        let moto = Moto::start().await;
        make_bucket(&moto.endpoint, made).await;
        let options = options(&emulator, &key, &moto.endpoint);
        let dir = tempfile::tempdir().expect("tmp");
        let config = write_config(dir.path(), &options);
        let named = format!("audit.ship.bucket = \"{BUCKET}\": {says}");

        let out = run_to_exit(&["serve", "--config"], &config, &options)
            .await
            .unwrap_or_else(|| panic!("{made:?}: serve started"));
        let (stdout, stderr) = text(&out);
        assert!(!out.status.success(), "{made:?}: serve exited 0: {stderr}");
        assert!(stderr.contains(&named), "{made:?}: {stderr}");
        assert!(
            !stdout.contains("gateway_listening"),
            "{made:?}: serve announced itself: {stdout}"
        );
        if let Some(not) = not {
            let line = stderr
                .lines()
                .find(|l| l.contains(&named))
                .expect("the line");
            assert!(!line.contains(not), "{made:?}: {line}");
        }
        // Refused before the trail was opened: nothing was written.
        assert!(!dir.path().join("audit").exists(), "{made:?}");

        let out = run_to_exit(&["check-config"], &config, &options)
            .await
            .expect("check-config exits");
        let (stdout, stderr) = text(&out);
        assert!(
            !out.status.success(),
            "{made:?}: check-config passed: {stdout}"
        );
        assert!(stderr.contains(&named), "{made:?}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_s3_out_of_reach_serve_starts_with_a_warning_and_check_config_passes_with_one() {
    let emulator = Emulator::start();
    let keys = tempfile::tempdir().expect("tmp");
    let (key, _) = keygen(keys.path(), "checkpoint.key");
    // Every connection refused at once; the bucket behind it would be refused, were S3 asked.
    let moto = Moto::start().await;
    make_bucket(&moto.endpoint, Made::Plain).await;
    let proxy = Proxy::start(&moto.endpoint).await;
    proxy.set(Mode::Down);
    let mut options = options(&emulator, &key, &proxy.endpoint);
    options.audit_toml.push_str("timeout_ms = 1000\n");

    let dir = tempfile::tempdir().expect("tmp");
    let config = write_config(dir.path(), &options);
    let out = run_to_exit(&["check-config"], &config, &options)
        .await
        .expect("check-config exits");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!("warning: audit.ship.bucket = \"{BUCKET}\"")),
        "{stderr}"
    );
    assert!(stderr.contains("could not be checked"), "{stderr}");
    assert!(
        stdout.ends_with(
            ": ok except audit.ship.bucket, which could not be checked (see the warning)\n"
        ),
        "{stdout}"
    );

    let mut gw = Gateway::start(options).await;
    assert!(
        gw.logged("the check of audit.ship.bucket's Object Lock and versioning could not be made")
            .await,
        "{}",
        gw.logs()
    );
    calls(&gw, 3, "unchecked").await;
    assert!(gw.terminate().await, "clean exit; logs:\n{}", gw.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_that_refuses_locked_uploads_is_a_permanent_error_until_object_lock_is_on() {
    let emulator = Emulator::start();
    let keys = tempfile::tempdir().expect("tmp");
    let (key, _) = keygen(keys.path(), "checkpoint.key");
    let moto = Moto::start().await;
    make_bucket(&moto.endpoint, Made::VersionedWithoutLock).await;
    // S3 out of reach at start, so the start-up check cannot refuse the bucket; then S3 is back
    // and refuses every upload with Object Lock headers (InvalidRequest), as S3 does.
    let proxy = Proxy::start(&moto.endpoint).await;
    proxy.set(Mode::Down);
    let mut options = options(&emulator, &key, &proxy.endpoint);
    options.audit_toml.push_str("timeout_ms = 1000\n");
    let mut gw = Gateway::start(options).await;
    calls(&gw, 3, "refused").await;
    proxy.set(Mode::Up);

    let ship_total = "datashare_gateway_audit_ship_total";
    support::wait::until(
        PATIENCE,
        "an upload is counted as a permanent error",
        async || match metric(&gw, ship_total, &[("result", "permanent_error")]).await {
            n if n >= 1.0 => Ok(()),
            n => Err(n),
        },
    )
    .await;
    let logs = gw
        .logs_when(|logs| logs.contains("ALARM audit: S3 refuses"))
        .await;
    let alarm = logs
        .lines()
        .find(|l| l.contains("ALARM audit: S3 refuses the trail's uploads"))
        .unwrap_or_else(|| panic!("an ALARM line; logs:\n{logs}"));
    assert!(
        alarm.contains("Bucket is missing ObjectLockConfiguration"),
        "{alarm}"
    );
    assert!(!alarm.contains("resumes when S3 answers"), "{alarm}");
    // Readiness is unchanged (calls are served and recorded); the body says what is wrong.
    let (status, body) = get(gw.admin, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("ok\n"), "{body}");
    assert!(
        body.contains("audit shipping: S3 refuses the uploads (a permanent error")
            && body.contains("InvalidRequest"),
        "{body}"
    );
    calls(&gw, 2, "still-served").await;

    // Object Lock turned on (S3 allows it on a versioned bucket): the retries ship everything
    // and the note goes, with no restart.
    s3::s3_client(&moto.endpoint)
        .await
        .put_object_lock_configuration()
        .bucket(BUCKET)
        .object_lock_configuration(
            aws_sdk_s3::types::ObjectLockConfiguration::builder()
                .object_lock_enabled(aws_sdk_s3::types::ObjectLockEnabled::Enabled)
                .build(),
        )
        .send()
        .await
        .expect("enable Object Lock");
    wait_all_shipped(&gw).await;
    support::wait::until(
        PATIENCE,
        "the /readyz note goes once uploads ship",
        async || match get(gw.admin, "/readyz").await {
            (200, body) if body == "ok\n" => Ok(()),
            other => Err(other),
        },
    )
    .await;
    assert!(gw.terminate().await, "clean exit; logs:\n{}", gw.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_made_with_object_lock_passes_check_config_and_serve_says_it_was_checked() {
    let emulator = Emulator::start();
    let keys = tempfile::tempdir().expect("tmp");
    let (key, _) = keygen(keys.path(), "checkpoint.key");
    let moto = Moto::start().await;
    s3::create_locked_bucket(&moto.endpoint, BUCKET).await;
    let options = options(&emulator, &key, &moto.endpoint);
    let dir = tempfile::tempdir().expect("tmp");
    let config = write_config(dir.path(), &options);
    let out = run_to_exit(&["check-config"], &config, &options)
        .await
        .expect("check-config exits");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout, format!("{}: ok\n", config.display()), "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");

    let mut gw = Gateway::start(options).await;
    assert!(
        gw.logged("audit: the bucket has Object Lock and versioning enabled")
            .await,
        "{}",
        gw.logs()
    );
    calls(&gw, 3, "locked").await;
    wait_all_shipped(&gw).await;
    assert!(gw.terminate().await, "clean exit; logs:\n{}", gw.logs());
}
