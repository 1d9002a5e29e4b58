//! The durable audit trail through the real gateway process: it fails closed when the trail
//! cannot be written, survives a `kill -9` with a verifiable chain, records callers that go away,
//! records every call exactly once under load, and holds no credentials.

use crate::support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use datashare_gateway::proto::datasharing::v1::AssociateConsumerRequest;
use datashare_gateway::proto::datasharing::v1::data_sharing_client::DataSharingClient;
use serde_json::{Value, json};
use support::emulator::{Emulator, PRODUCER_KEY, raw_http};
use support::gateway::{
    self, FRONTEND, Gateway, GatewayOptions, PROVISIONED_NS, REPORTING, SALES_SHARE,
};
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_types::StatusExt;

const OP: &str = "AssociateDataShareConsumer";
const SERVICE: &str = "datasharing.v1.DataSharing";

/// Bounds every wait for something the gateway does on its own, so a broken build fails
/// instead of hanging.
const PATIENCE: Duration = Duration::from_secs(30);

/// A call `REPORTING` may make.
fn allowed() -> AssociateConsumerRequest {
    gateway::namespace_request(SALES_SHARE, PROVISIONED_NS)
}

/// `caller` sends `message` with `x-request-id: request_id`.
async fn call(
    client: &mut DataSharingClient<Channel>,
    caller: &str,
    message: AssociateConsumerRequest,
    request_id: &str,
) -> Result<(), tonic::Status> {
    let mut request = gateway::as_caller(caller, message);
    request
        .metadata_mut()
        .insert("x-request-id", request_id.parse().expect("ascii id"));
    client.associate_consumer(request).await.map(drop)
}

fn audit_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("read the audit directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    files
}

/// Runs the real `datashare-gateway audit verify DIR`: its success and its stdout.
fn verify(dir: &Path) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_datashare-gateway"))
        .args(["audit", "verify"])
        .arg(dir)
        .output()
        .expect("run audit verify");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn seqs(recs: &[Value]) -> Vec<u64> {
    recs.iter()
        .map(|r| r["seq"].as_u64().expect("seq"))
        .collect()
}

fn str_of<'a>(record: &'a Value, key: &str) -> &'a str {
    record[key].as_str().unwrap_or_default()
}

/// The records of one request id.
fn by_request_id(recs: &[Value]) -> HashMap<String, Vec<&Value>> {
    let mut by_id: HashMap<String, Vec<&Value>> = HashMap::new();
    for r in recs.iter().filter(|r| r["kind"] != "recovery") {
        by_id
            .entry(str_of(r, "request_id").to_owned())
            .or_default()
            .push(r);
    }
    by_id
}

async fn health(gw: &Gateway, service: &str) -> ServingStatus {
    let channel = Channel::from_shared(format!("http://{}", gw.addr))
        .expect("uri")
        .connect()
        .await
        .expect("connect to health");
    let mut client = HealthClient::new(channel);
    let response = client
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .expect("health check")
        .into_inner();
    response.status()
}

fn readyz(gw: &Gateway) -> u16 {
    raw_http(gw.admin, "GET", "/readyz", &[], b"").0
}

/// Waits until both health services and `/readyz` agree on `serving`.
async fn wait_for_readiness(gw: &Gateway, serving: bool) {
    let (status, http) = if serving {
        (ServingStatus::Serving, 200)
    } else {
        (ServingStatus::NotServing, 503)
    };
    let reached = tokio::time::timeout(PATIENCE, async {
        loop {
            if health(gw, "").await == status
                && health(gw, SERVICE).await == status
                && readyz(gw) == http
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        reached.is_ok(),
        "health did not become {status:?} (/readyz {http}); logs:\n{}",
        gw.logs()
    );
}

fn reason(status: &tonic::Status) -> Option<String> {
    status
        .get_error_details()
        .error_info()
        .map(|info| info.reason.clone())
}

#[tokio::test]
async fn an_unwritable_audit_directory_refuses_calls_reports_not_serving_and_recovers() {
    let emulator = Emulator::start();
    let mut options = GatewayOptions::new(emulator.endpoint_url());
    // Every batch starts a new file, so every write needs the directory.
    options.audit_max_file_bytes = Some(1);
    let mut gw = Gateway::start(options).await;
    let mut client = gw.client().await;
    call(&mut client, REPORTING, allowed(), "before")
        .await
        .expect("a writable trail lets calls through");
    // Its outcome is queued after the reply: written before the directory goes.
    gateway::outcome_of(&gw.audit_dir, "before").await;
    wait_for_readiness(&gw, true).await;
    emulator.reset_counters();

    // Root ignores permission bits, but not a regular file where the directory should be.
    let moved = gw.dir.path().join("audit-moved");
    std::fs::rename(&gw.audit_dir, &moved).expect("move the audit directory away");
    std::fs::write(&gw.audit_dir, "not a directory").expect("block its path");

    let refused = call(&mut client, REPORTING, allowed(), "refused-allowed")
        .await
        .expect_err("no durable intent, no call");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert_eq!(reason(&refused).as_deref(), Some("AUDIT_UNAVAILABLE"));
    assert_eq!(emulator.counter(OP, "received"), 0, "nothing is forwarded");
    // A call that would never be forwarded is refused too: it could not be recorded.
    let denied = call(&mut client, FRONTEND, allowed(), "refused-denied")
        .await
        .expect_err("no durable call record, no answer");
    assert_eq!(denied.code(), Code::Unavailable, "{denied:?}");
    assert_eq!(reason(&denied).as_deref(), Some("AUDIT_UNAVAILABLE"));
    wait_for_readiness(&gw, false).await;

    std::fs::remove_file(&gw.audit_dir).expect("unblock the path");
    std::fs::rename(&moved, &gw.audit_dir).expect("move the audit directory back");
    // No call arrives meanwhile: the gateway finds out on its own.
    wait_for_readiness(&gw, true).await;
    call(&mut client, REPORTING, allowed(), "after")
        .await
        .expect("calls succeed again");
    assert_eq!(emulator.counter(OP, "received"), 1);
    assert!(gw.terminate().await, "clean exit; logs:\n{}", gw.logs());

    let (ok, out) = verify(&gw.audit_dir);
    assert!(ok, "{out}");
    let trail: Vec<String> = gateway::audit_records(&gw.audit_dir)
        .iter()
        .map(|r| format!("{}:{}", str_of(r, "kind"), str_of(r, "request_id")))
        .collect();
    assert_eq!(
        trail,
        [
            "intent:before",
            "outcome:before",
            "intent:after",
            "outcome:after"
        ]
    );
}

#[tokio::test]
async fn a_deleted_audit_directory_refuses_calls_instead_of_losing_their_records() {
    let emulator = Emulator::start();
    let mut gw = Gateway::start(GatewayOptions::new(emulator.endpoint_url())).await;
    let mut client = gw.client().await;
    call(&mut client, REPORTING, allowed(), "before")
        .await
        .expect("a writable trail lets calls through");
    // Otherwise the outcome, queued after the reply, is kept and written to the new directory.
    gateway::outcome_of(&gw.audit_dir, "before").await;
    emulator.reset_counters();

    // The open file survives as an unlinked inode: writing to it would succeed and be lost.
    std::fs::remove_dir_all(&gw.audit_dir).expect("delete the audit directory");
    std::fs::write(&gw.audit_dir, "not a directory").expect("block its path");

    let refused = call(&mut client, REPORTING, allowed(), "refused")
        .await
        .expect_err("a record written to a deleted file is not durable");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert_eq!(reason(&refused).as_deref(), Some("AUDIT_UNAVAILABLE"));
    assert_eq!(emulator.counter(OP, "received"), 0, "nothing is forwarded");
    wait_for_readiness(&gw, false).await;

    // The gateway makes the directory again once it can.
    std::fs::remove_file(&gw.audit_dir).expect("unblock the path");
    wait_for_readiness(&gw, true).await;
    call(&mut client, REPORTING, allowed(), "after")
        .await
        .expect("calls succeed again");
    assert!(gw.terminate().await, "clean exit; logs:\n{}", gw.logs());

    let trail: Vec<String> = gateway::audit_records(&gw.audit_dir)
        .iter()
        .map(|r| format!("{}:{}", str_of(r, "kind"), str_of(r, "request_id")))
        .filter(|r| !r.starts_with("recovery:"))
        .collect();
    assert_eq!(trail, ["intent:after", "outcome:after"]);
}

/// Runs the binary with `args` until it exits (bounded); returns its success and stderr.
async fn run_to_exit(args: &[&std::ffi::OsStr]) -> (bool, String) {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_datashare-gateway"))
        .args(args)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn datashare-gateway");
    let out = tokio::time::timeout(PATIENCE, child.wait_with_output())
        .await
        .expect("the gateway exits instead of serving")
        .expect("wait for the gateway");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn serve_exits_at_start_naming_an_audit_directory_it_cannot_make() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let blocker = tmp.path().join("regular-file");
    std::fs::write(&blocker, "x").expect("write");
    let audit_dir = blocker.join("audit");
    let config = tmp.path().join("gateway.toml");
    let options = GatewayOptions::new("http://127.0.0.1:9");
    std::fs::write(&config, gateway::config_text(&options, &audit_dir)).expect("write config");

    let (ok, stderr) = run_to_exit(&["serve".as_ref(), "--config".as_ref(), config.as_ref()]).await;
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains(&audit_dir.display().to_string()),
        "{stderr}"
    );
}

#[tokio::test]
async fn dev_exits_naming_an_audit_directory_it_cannot_make() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let blocker = tmp.path().join("regular-file");
    std::fs::write(&blocker, "x").expect("write");
    let audit_dir = blocker.join("audit");
    let policies = support::gateway::repo_root().join("examples/policies");
    let any_port = "127.0.0.1:0".as_ref();

    let (ok, stderr) = run_to_exit(&[
        "dev".as_ref(),
        "--audit-dir".as_ref(),
        audit_dir.as_ref(),
        "--policies".as_ref(),
        policies.as_ref(),
        "--listen".as_ref(),
        any_port,
        "--emulator-listen".as_ref(),
        any_port,
        "--emulator-admin".as_ref(),
        any_port,
        "--admin-listen".as_ref(),
        any_port,
    ])
    .await;
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot create the audit directory {}",
            audit_dir.display()
        )),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_under_load_leaves_a_verifiable_chain_with_an_intent_for_every_forwarded_call() {
    const CALLERS: usize = 32;
    let emulator = Emulator::start();
    let gw = Gateway::start(GatewayOptions::new(emulator.endpoint_url())).await;
    let succeeded = Arc::new(Mutex::new(Vec::<String>::new()));
    let crashed = Arc::new(AtomicBool::new(false));
    let mut callers = Vec::new();
    for task in 0..CALLERS {
        let mut client = gw.client().await;
        let succeeded = Arc::clone(&succeeded);
        let crashed = Arc::clone(&crashed);
        callers.push(tokio::spawn(async move {
            let mut unexpected = Vec::new();
            for i in 0.. {
                let id = format!("load-{task}-{i}");
                match call(&mut client, REPORTING, allowed(), &id).await {
                    Ok(()) => succeeded.lock().expect("lock").push(id),
                    Err(_) if crashed.load(Ordering::SeqCst) => break,
                    Err(status) => unexpected.push(status),
                }
            }
            unexpected
        }));
    }
    let loaded = tokio::time::timeout(PATIENCE, async {
        while succeeded.lock().expect("lock").len() < 300 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(loaded.is_ok(), "calls do not succeed; logs:\n{}", gw.logs());

    let mut gw = gw;
    crashed.store(true, Ordering::SeqCst);
    gw.kill9().await;
    for caller in callers {
        let unexpected = caller.await.expect("join");
        assert!(unexpected.is_empty(), "before the crash: {unexpected:?}");
    }
    let before_restart = succeeded.lock().expect("lock").len();

    let mut gw = gw.restart().await;
    let mut client = gw.client().await;
    for i in 0..5 {
        let id = format!("after-restart-{i}");
        call(&mut client, REPORTING, allowed(), &id)
            .await
            .expect("the restarted gateway serves");
        succeeded.lock().expect("lock").push(id);
    }
    assert!(gw.terminate().await, "clean exit; logs:\n{}", gw.logs());

    let (ok, out) = verify(&gw.audit_dir);
    assert!(ok, "{out}");
    // Read as it is: the gateway has stopped, and intents the crash left without an outcome
    // would only make `audit_records` wait for outcomes that never come.
    let recs = gateway::audit_records_now(&gw.audit_dir);
    assert_eq!(
        seqs(&recs),
        (1..=recs.len() as u64).collect::<Vec<_>>(),
        "one chain, without gaps, across the restart"
    );
    let restart_at = recs
        .iter()
        .position(|r| str_of(r, "request_id") == "after-restart-0")
        .expect("the calls after the restart are recorded");
    assert!(
        recs[..restart_at]
            .iter()
            .any(|r| str_of(r, "request_id").starts_with("load-")),
        "the chain continues the records from before the crash"
    );

    let intents = recs.iter().filter(|r| r["kind"] == "intent").count() as u64;
    let received = emulator.counter(OP, "received");
    assert!(received >= before_restart as u64 + 5, "{received}");
    assert!(
        intents >= received,
        "{intents} intents for {received} calls Redshift received"
    );
    // An outcome is queued, not awaited, before its reply, and a caller's next intent is queued
    // after that reply: once that intent was durable, so was the outcome before it. So only a
    // caller's last answered call before the crash may have lost its outcome (an intent without
    // an outcome, which `verify` lists); every other answered call has both.
    let by_id = by_request_id(&recs);
    let succeeded = succeeded.lock().expect("lock").clone();
    let last_of_each_caller: std::collections::HashSet<String> = (0..CALLERS)
        .filter_map(|task| {
            succeeded
                .iter()
                .filter_map(|id| id.strip_prefix(&format!("load-{task}-")))
                .filter_map(|i| i.parse::<u64>().ok())
                .max()
                .map(|i| format!("load-{task}-{i}"))
        })
        .collect();
    let mut outcome_lost = 0;
    for id in &succeeded {
        let kinds: Vec<&str> = by_id
            .get(id)
            .map(|rs| rs.iter().map(|r| str_of(r, "kind")).collect())
            .unwrap_or_default();
        if kinds == ["intent"] && last_of_each_caller.contains(id) {
            outcome_lost += 1;
            continue;
        }
        assert_eq!(kinds, ["intent", "outcome"], "{id}");
    }
    assert!(outcome_lost <= CALLERS, "{outcome_lost}");
}

#[tokio::test]
async fn a_caller_that_goes_away_mid_call_still_gets_an_outcome_marked_caller_gone() {
    let emulator = Emulator::start();
    let mut gw = Gateway::start(GatewayOptions::new(emulator.endpoint_url())).await;
    emulator.inject_fault(json!({"kind": "latency", "operation": OP, "latency_ms": 800}));

    // A caller whose deadline passes while Redshift works.
    let mut client = gw.client().await;
    let mut request = gateway::as_caller(REPORTING, allowed());
    request
        .metadata_mut()
        .insert("x-request-id", "deadline-passed".parse().expect("ascii"));
    request.set_timeout(Duration::from_millis(100));
    let status = client
        .associate_consumer(request)
        .await
        .expect_err("the deadline passes first");
    // The gateway answers DEADLINE_EXCEEDED just before the deadline; tonic's own client timer
    // may still fire first and report CANCELLED.
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status:?}"
    );

    // A caller that cancels once its call has reached Redshift.
    let forwarded_before = emulator.counter(OP, "received");
    let mut client = gw.client().await;
    let cancelled =
        tokio::spawn(async move { call(&mut client, REPORTING, allowed(), "cancelled").await });
    let reached = tokio::time::timeout(PATIENCE, async {
        while emulator.counter(OP, "received") == forwarded_before {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(reached.is_ok(), "the call never reached Redshift");
    cancelled.abort();
    assert!(cancelled.await.is_err_and(|e| e.is_cancelled()));

    for id in ["deadline-passed", "cancelled"] {
        let outcome = gateway::outcome_of(&gw.audit_dir, id).await;
        assert_eq!(outcome["outcome"]["caller_gone"], true, "{outcome}");
        assert_eq!(outcome["outcome"]["forwarded"], true, "{outcome}");
        // Redshift's answer, not the caller's fate, is what the outcome records.
        assert_eq!(outcome["outcome"]["code"], "OK", "{outcome}");
        assert!(
            outcome["outcome"]["aws_request_id"].is_string(),
            "{outcome}"
        );
    }
    assert!(gw.terminate().await, "clean exit; logs:\n{}", gw.logs());
    let (ok, out) = verify(&gw.audit_dir);
    assert!(ok, "{out}");
    assert!(!out.contains("intents without an outcome"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_calls_from_64_clients_are_each_recorded_exactly_once() {
    const CALLS: usize = 10_000;
    const CLIENTS: usize = 64;
    /// What call `i` is, and what its caller sees.
    fn plan(i: usize) -> (&'static str, AssociateConsumerRequest, Code) {
        match i % 3 {
            0 => (REPORTING, allowed(), Code::Ok),
            1 => (FRONTEND, allowed(), Code::PermissionDenied),
            _ => (
                REPORTING,
                gateway::namespace_request("not-an-arn", PROVISIONED_NS),
                Code::InvalidArgument,
            ),
        }
    }
    let id_of = |i: usize| format!("c-{i:05}");

    let emulator = Emulator::start();
    let mut gw = Gateway::start(GatewayOptions::new(emulator.endpoint_url())).await;
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let mut grpc = gw.client().await;
        clients.push(tokio::spawn(async move {
            let mut wrong = Vec::new();
            for i in (client..CALLS).step_by(CLIENTS) {
                let (caller, message, expected) = plan(i);
                let got = match call(&mut grpc, caller, message, &id_of(i)).await {
                    Ok(()) => Code::Ok,
                    Err(status) => status.code(),
                };
                if got != expected {
                    wrong.push((i, got));
                }
            }
            wrong
        }));
    }
    for client in clients {
        let wrong = client.await.expect("join");
        assert!(wrong.is_empty(), "unexpected codes: {wrong:?}");
    }
    assert!(gw.terminate().await, "clean exit; logs:\n{}", gw.logs());

    let recs = gateway::audit_records(&gw.audit_dir);
    assert_eq!(seqs(&recs), (1..=recs.len() as u64).collect::<Vec<_>>());
    let by_id = by_request_id(&recs);
    assert_eq!(by_id.len(), CALLS, "no record of a request id not sent");
    let intent_ids: HashMap<u64, &str> = recs
        .iter()
        .filter(|r| r["kind"] == "intent")
        .map(|r| (r["seq"].as_u64().expect("seq"), str_of(r, "request_id")))
        .collect();
    for i in 0..CALLS {
        let id = id_of(i);
        let rs = by_id.get(&id).map(Vec::as_slice).unwrap_or_default();
        let kinds: Vec<&str> = rs.iter().map(|r| str_of(r, "kind")).collect();
        let (_, _, expected) = plan(i);
        if expected == Code::Ok {
            assert_eq!(kinds, ["intent", "outcome"], "{id}");
            let intent_seq = rs[1]["intent_seq"].as_u64().expect("intent_seq");
            assert_eq!(intent_ids.get(&intent_seq), Some(&id.as_str()));
            assert_eq!(rs[1]["outcome"]["code"], "OK", "{id}");
        } else {
            assert_eq!(kinds, ["call"], "{id}");
            let code = if expected == Code::PermissionDenied {
                "PERMISSION_DENIED"
            } else {
                "INVALID_ARGUMENT"
            };
            assert_eq!(rs[0]["outcome"]["code"], code, "{id}");
            assert_eq!(rs[0]["outcome"]["forwarded"], false, "{id}");
        }
    }
    assert_eq!(
        emulator.counter(OP, "received"),
        CALLS.div_ceil(3) as u64,
        "exactly the allowed calls reach Redshift"
    );
    let (ok, out) = verify(&gw.audit_dir);
    assert!(ok, "{out}");
    assert!(!out.contains("intents without an outcome"), "{out}");
}

#[tokio::test]
async fn the_audit_files_hold_no_secret_keys_or_signatures() {
    const SECRETS: [&str; 4] = [
        support::gateway::CONSUMER_SECRET_KEY,
        PRODUCER_KEY.1,
        "Signature=",
        "AWS4-HMAC-SHA256",
    ];
    let emulator = Emulator::start();
    emulator.inject_fault(json!({"kind": "error", "operation": OP, "count": 1,
        "code": "AccessDenied", "status": 403}));
    let mut good = Gateway::start(GatewayOptions::new(emulator.endpoint_url())).await;
    // Signs with a secret that is not the access key's: Redshift refuses the signature.
    let mut options = GatewayOptions::new(emulator.endpoint_url());
    options.secret_key = PRODUCER_KEY.1.into();
    let mut bad = Gateway::start(options).await;

    let mut client = good.client().await;
    let faulted = call(&mut client, REPORTING, allowed(), "faulted").await;
    assert!(faulted.is_err(), "the injected error reaches the caller");
    call(&mut client, REPORTING, allowed(), "allowed")
        .await
        .expect("associated");
    call(&mut client, FRONTEND, allowed(), "denied")
        .await
        .expect_err("denied");
    let mut client = bad.client().await;
    call(&mut client, REPORTING, allowed(), "bad-signature")
        .await
        .expect_err("the signature does not match");
    assert!(good.terminate().await, "clean exit; logs:\n{}", good.logs());
    assert!(bad.terminate().await, "clean exit; logs:\n{}", bad.logs());

    let mut scanned = 0;
    for gw in [&good, &bad] {
        let recs = gateway::audit_records(&gw.audit_dir);
        assert!(!recs.is_empty());
        scanned += recs.len();
        for file in audit_files(&gw.audit_dir) {
            let text = std::fs::read_to_string(&file).expect("read");
            for secret in SECRETS {
                assert!(!text.contains(secret), "{secret} in {}", file.display());
            }
        }
    }
    let recs = gateway::audit_records(&bad.audit_dir);
    let outcome = recs
        .iter()
        .find(|r| r["kind"] == "outcome")
        .expect("an outcome");
    assert_eq!(
        outcome["outcome"]["aws_error_code"], "SignatureDoesNotMatch",
        "{outcome}"
    );
    assert!(scanned >= 2 + 2 + 1 + 2, "{scanned} records");
}
