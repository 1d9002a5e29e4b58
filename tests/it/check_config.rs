//! `check-config` refuses what `serve` would refuse, naming the key: files that must exist and
//! parse, variables that must be set, values that must parse, regions AWS has, listeners that
//! do not collide, durations and counts in their bounds (so that none can overflow a timer and
//! panic a worker). `--no-files` checks every rule except that the files the configuration names
//! exist, so a configuration meant for a pod (certificates and policies mounted there) can be
//! checked in CI.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa, KeyPair,
    KeyUsagePurpose,
};
use support::emulator::Emulator;
use support::gateway::{self, Gateway, GatewayOptions, REPORTING, SALES_SHARE};
use tempfile::TempDir;

/// The variable the example's `audit.hmac_key_env` names.
const KEY_ENV: &str = "DATASHARE_GATEWAY_AUDIT_KEY";

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/gateway.toml")
}

fn gateway_command(args: &[&str], config: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_datashare-gateway"));
    command
        .args(args)
        .arg(config)
        .env(KEY_ENV, "an audit key of at least sixteen bytes")
        // Credentials for the look at the audit bucket, which finds no S3 there (see `Valid`).
        .env("AWS_ACCESS_KEY_ID", "AKIDCHECKCONFIG")
        .env("AWS_SECRET_ACCESS_KEY", "check-config-secret")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_REGION")
        .env_remove("AWS_DEFAULT_REGION")
        .env_remove("DATASHARE_GATEWAY_LISTEN")
        .env_remove("RUST_LOG");
    command
}

fn check_config(args: &[&str], config: &Path) -> Output {
    let mut full = vec!["check-config"];
    full.extend_from_slice(args);
    gateway_command(&full, config)
        .output()
        .expect("run check-config")
}

/// `serve --config FILE`'s exit and stderr, when it exits within 30 s; `None` when it was still
/// running (then it is killed).
fn serve_refusal(config: &Path) -> Option<Output> {
    let mut child = gateway_command(&["serve", "--config"], config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if child.try_wait().expect("wait for serve").is_some() {
            return Some(child.wait_with_output().expect("serve's output"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// The production example with every file it names made in a temporary directory (TLS from a
/// fresh CA, the example policies, the external ids), a checkpoint key, the built-in schema as a
/// file, shipping to S3 and an OTLP endpoint: valid as it stands, everything present. Its S3
/// endpoint refuses connections, so the bucket is never asked about (a warning, not a refusal:
/// `audit_ship_bucket` tests the check against moto) and no test reaches AWS.
struct Valid {
    dir: TempDir,
    text: String,
}

impl Valid {
    fn new() -> Valid {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        let etc = root.join("etc");
        for sub in ["tls", "policies", "external-ids", "checkpoint-key"] {
            std::fs::create_dir_all(etc.join(sub)).expect("mkdir");
        }
        let mut ca = CertificateParams::default();
        ca.distinguished_name = DistinguishedName::new();
        ca.distinguished_name
            .push(DnType::CommonName, "check-config CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("CA key"))
            .expect("CA certificate");
        let key = KeyPair::generate().expect("server key");
        let server = CertificateParams::new(vec!["localhost".to_owned()])
            .expect("server params")
            .signed_by(&key, &ca)
            .expect("server certificate");
        std::fs::write(etc.join("tls/tls.crt"), server.pem()).expect("write cert");
        std::fs::write(etc.join("tls/tls.key"), key.serialize_pem()).expect("write key");
        std::fs::write(etc.join("tls/ca.crt"), ca.pem()).expect("write CA");
        let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/policies");
        for entry in std::fs::read_dir(&policies).expect("read the example policies") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "cedar") {
                std::fs::copy(
                    &path,
                    etc.join("policies").join(path.file_name().expect("name")),
                )
                .expect("copy a policy");
            }
        }
        for account in ["444455556666", "777788889999"] {
            std::fs::write(etc.join("external-ids").join(account), "an external id")
                .expect("write an external id");
        }
        let keygen = Command::new(env!("CARGO_BIN_EXE_datashare-gateway"))
            .args(["audit", "keygen", "--out"])
            .arg(etc.join("checkpoint-key/checkpoint.key"))
            .output()
            .expect("run audit keygen");
        assert!(keygen.status.success(), "{keygen:?}");

        let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("policy/schema.cedarschema");
        let text = std::fs::read_to_string(example())
            .expect("read the example")
            .replace("/etc/datashare-gateway", &etc.display().to_string())
            .replace(
                "/var/lib/datashare-gateway",
                &root.join("var").display().to_string(),
            )
            .replace(
                "poll_interval_secs = 5\n",
                &format!("poll_interval_secs = 5\nschema = {:?}\n", schema.display()),
            )
            .replace(
                "log_level = \"info\"\n",
                "log_level = \"info\"\notlp_endpoint = \"http://collector:4317\"\n",
            );
        let text = format!(
            "{text}\n[audit.checkpoint]\nsigning_key_file = {:?}\n\n\
             [audit.ship]\nbucket = \"example-datashare-gateway-audit\"\nregion = \"eu-west-1\"\n\
             endpoint_url = \"http://{}\"\nforce_path_style = true\n\
             object_lock_mode = \"COMPLIANCE\"\nretention_days = 400\n",
            etc.join("checkpoint-key/checkpoint.key")
                .display()
                .to_string(),
            refusing_address()
        );
        Valid { dir, text }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// The config with `from` replaced by `to` (which must change it), written to a file.
    fn with(&self, name: &str, from: &str, to: &str) -> PathBuf {
        assert!(
            self.text.contains(from),
            "{name}: the base config has no {from:?}"
        );
        let path = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, self.text.replacen(from, to, 1)).expect("write the config");
        path
    }
}

/// A loopback address nothing listens on (bound, then closed): connections are refused at once.
fn refusing_address() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
}

#[test]
fn each_config_serve_would_refuse_is_refused_naming_its_key() {
    let valid = Valid::new();
    let base = valid.with("valid", "", "");
    let out = check_config(&[], &base);
    assert!(
        out.status.success(),
        "the base config is valid: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let max = u64::MAX.to_string();
    let keepalive = format!("keepalive_interval_secs = {max}");
    let deadline = format!("session_cache_size = 10000\nmin_remaining_deadline_ms = {max}");
    let missing_key = format!("hmac_key_file = {:?}", valid.path("etc/missing-hmac-key"));
    let ca_as_key = format!("signing_key_file = {:?}", valid.path("etc/tls/ca.crt"));
    let audit_dir = format!("dir = {:?}", valid.path("var/audit"));
    let schema_line = valid
        .text
        .lines()
        .find(|l| l.starts_with("schema = "))
        .expect("the schema line")
        .to_owned();
    // (case, text in the valid config, its replacement, the key the refusal must name)
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "a missing HMAC key file",
            "hmac_key_env = \"DATASHARE_GATEWAY_AUDIT_KEY\"",
            &missing_key,
            "audit.hmac_key_file",
        ),
        (
            "an unset HMAC key variable",
            "hmac_key_env = \"DATASHARE_GATEWAY_AUDIT_KEY\"",
            "hmac_key_env = \"DATASHARE_GATEWAY_AUDIT_KEY_UNSET\"",
            "audit.hmac_key_env",
        ),
        (
            "a CA certificate as the checkpoint signing key",
            &format!(
                "signing_key_file = {:?}",
                valid.path("etc/checkpoint-key/checkpoint.key")
            ),
            &ca_as_key,
            "audit.checkpoint.signing_key_file",
        ),
        (
            "a missing external id file",
            "external-ids/777788889999\"",
            "external-ids/missing\"",
            "accounts.\"777788889999\".external_id_file",
        ),
        (
            "a schema that is not a Cedar schema",
            &schema_line,
            "schema = \"/etc/passwd\"",
            "policy.schema",
        ),
        (
            "a keepalive interval that overflows a timer",
            "keepalive_interval_secs = 30",
            &keepalive,
            "server.keepalive_interval_secs",
        ),
        (
            "a minimum remaining deadline no call can have",
            "session_cache_size = 10000",
            &deadline,
            "upstream.min_remaining_deadline_ms",
        ),
        (
            "the admin listener on the gRPC listener's address",
            "health_listen = \"0.0.0.0:50052\"",
            "health_listen = \"0.0.0.0:50052\"\nadmin_listen = \"0.0.0.0:50051\"",
            "server.admin_listen",
        ),
        (
            "a log level that is not a filter",
            "log_level = \"info\"",
            "log_level = \"not a filter[[\"",
            "telemetry.log_level",
        ),
        (
            "an OTLP endpoint that is not a URL",
            "otlp_endpoint = \"http://collector:4317\"",
            "otlp_endpoint = \"not a url\"",
            "telemetry.otlp_endpoint",
        ),
        (
            "a region AWS does not have",
            "region = \"us-east-1\"",
            "region = \"us-east-99\"",
            "upstream.region",
        ),
        (
            "a shipping region that is not a region",
            "region = \"eu-west-1\"",
            "region = \"mars-1\"",
            "audit.ship.region",
        ),
        (
            "an empty audit directory",
            &audit_dir,
            "dir = \"\"",
            "audit.dir",
        ),
        (
            "a queue timeout of zero",
            "queue_timeout_ms = 1000",
            "queue_timeout_ms = 0",
            "server.queue_timeout_ms",
        ),
        (
            "a caller's share of no slots",
            "per_caller_concurrency = 64",
            "per_caller_concurrency = 0",
            "server.per_caller_concurrency",
        ),
        (
            "a caller's share larger than the pool",
            "per_caller_concurrency = 64",
            "per_caller_concurrency = 257",
            "server.per_caller_concurrency",
        ),
        (
            "a caller's queue of no calls",
            "per_caller_queue = 256",
            "per_caller_queue = 0",
            "server.per_caller_queue",
        ),
        (
            "a rate of no calls",
            "calls_per_second = 200",
            "calls_per_second = 0",
            "server.per_caller_rate.calls_per_second",
        ),
        (
            "a burst of no calls",
            "burst = 400",
            "burst = 0",
            "server.per_caller_rate.burst",
        ),
        (
            "an Approvals pool of no slots",
            "approvals_concurrency_limit = 32",
            "approvals_concurrency_limit = 0",
            "server.approvals_concurrency_limit",
        ),
        (
            "a retention no one could shorten for longer than a century",
            "retention_days = 400",
            "retention_days = 36501",
            "audit.ship.retention_days",
        ),
        (
            "an idle timeout of zero",
            "idle_timeout_ms = 300000",
            "idle_timeout_ms = 0",
            "server.idle_timeout_ms",
        ),
        (
            "no pending reset streams allowed",
            "keepalive_timeout_secs = 10",
            "keepalive_timeout_secs = 10\nmax_pending_accept_reset_streams = 0",
            "server.max_pending_accept_reset_streams",
        ),
    ];
    let mut failures = Vec::new();
    for (index, (case, from, to, key)) in cases.iter().enumerate() {
        let path = valid.with(&format!("case-{index}"), from, to);
        check_case(case, &path, key, &mut failures);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `check-config` and `serve` both exit non-zero naming `key`; a failure is added to `failures`.
fn check_case(case: &str, path: &Path, key: &str, failures: &mut Vec<String>) {
    let out = check_config(&[], path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{case}: check-config says {}", stderr.trim_end());
    if out.status.success() || !stderr.contains(key) {
        failures.push(format!(
            "{case}: check-config exited {:?} without naming {key}: {stderr}",
            out.status.code()
        ));
    }
    match serve_refusal(path) {
        Some(out) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            if out.status.success() || !stderr.contains(key) {
                failures.push(format!(
                    "{case}: serve exited {:?} without naming {key}: {stderr}",
                    out.status.code()
                ));
            }
        }
        None => failures.push(format!("{case}: serve started")),
    }
}

#[test]
fn the_largest_allowed_values_are_accepted_and_one_more_is_refused() {
    let valid = Valid::new();
    // Every bounded [server] key at its largest.
    let largest = "keepalive_interval_secs = 3600\nkeepalive_timeout_secs = 600\n\
                   queue_timeout_ms = 60000\nhandshake_timeout_ms = 60000\n\
                   idle_timeout_ms = 86400000\n\
                   request_timeout_ms = 3600000\nshutdown_grace_secs = 3600\n";
    let text_of = |server: &str| {
        valid
            .text
            .replacen("keepalive_interval_secs = 30\n", "", 1)
            .replacen("keepalive_timeout_secs = 10\n", "", 1)
            .replacen("queue_timeout_ms = 1000\n", "", 1)
            .replacen("idle_timeout_ms = 300000\n", "", 1)
            .replacen("shutdown_grace_secs = 20\n", "", 1)
            .replacen("[server]\n", &format!("[server]\n{server}"), 1)
    };
    let path = valid.dir.path().join("largest.toml");
    std::fs::write(&path, text_of(largest)).expect("write");
    let out = check_config(&[], &path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (key, one_more) in [
        ("keepalive_interval_secs", "3601"),
        ("keepalive_timeout_secs", "601"),
        ("queue_timeout_ms", "60001"),
        ("handshake_timeout_ms", "60001"),
        ("idle_timeout_ms", "86400001"),
        ("request_timeout_ms", "3600001"),
        ("shutdown_grace_secs", "3601"),
    ] {
        let line = largest
            .lines()
            .find(|l| l.starts_with(key))
            .expect("the key's line");
        std::fs::write(
            &path,
            text_of(&largest.replacen(line, &format!("{key} = {one_more}"), 1)),
        )
        .expect("write");
        let out = check_config(&["--no-files"], &path);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{key} = {one_more} accepted");
        assert!(
            stderr.contains(&format!("server.{key} = {one_more}: must be")),
            "{stderr}"
        );
    }
}

#[tokio::test]
async fn a_gateway_with_every_server_duration_at_its_largest_serves_calls() {
    let emulator = Emulator::start();
    let mut options = GatewayOptions::new(emulator.endpoint_url());
    options.server_toml = "keepalive_interval_secs = 3600\nkeepalive_timeout_secs = 600\n\
                           queue_timeout_ms = 60000\nhandshake_timeout_ms = 60000\n\
                           idle_timeout_ms = 86400000\nrequest_timeout_ms = 3600000\n"
        .into();
    options.shutdown_grace_secs = 3600;
    options.upstream_toml = "min_remaining_deadline_ms = 60000".into();
    options.audit_toml = "write_timeout_ms = 60000".into();
    let gw = Gateway::start(options).await;
    // Two connections, each with a call: the keepalive timer is armed on each.
    for _ in 0..2 {
        let mut client = gw.client().await;
        let request = datashare_gateway::proto::datasharing::v1::AssociateConsumerRequest {
            data_share_arn: SALES_SHARE.into(),
            associate_entire_account: true,
            ..Default::default()
        };
        client
            .associate_consumer(gateway::as_caller(REPORTING, request))
            .await
            .expect("the call succeeds");
    }
    let logs = gw.logs();
    assert!(!logs.contains("panicked"), "{logs}");
}

#[test]
fn without_the_flag_a_missing_certificate_is_refused_by_name() {
    let out = check_config(&[], &example());
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("auth.cert = /etc/datashare-gateway/tls/tls.crt: no such file"),
        "{stderr}"
    );
}

#[test]
fn no_files_accepts_a_pod_config_whose_files_are_not_here() {
    let out = check_config(&["--no-files"], &example());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).ends_with(": ok\n"));
    // Nor need the variables it names be set here: they come from the pod's Secrets too.
    let out = gateway_command(&["check-config", "--no-files"], &example())
        .env_remove(KEY_ENV)
        .output()
        .expect("run check-config");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn no_files_still_refuses_a_rule_violation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.toml");
    let text = std::fs::read_to_string(example()).expect("read the example");
    let broken = text.replace("shutdown_grace_secs = 20", "shutdown_grace_secs = 5");
    assert_ne!(broken, text, "the example sets shutdown_grace_secs = 20");
    std::fs::write(&path, broken).expect("write");
    let out = check_config(&["--no-files"], &path);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "server.shutdown_grace_secs = 5: must be at least upstream.operation_timeout_ms"
        ),
        "{stderr}"
    );
}
