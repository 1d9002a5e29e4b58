//! Policy hot reload in the running gateway, under concurrent load: a reload never fails a call,
//! decisions switch cleanly once the new set is in, and an invalid set is refused while the old
//! one keeps serving, with the offending file named in the log, counted in `/metrics` and shown
//! in `/readyz`'s body.

use crate::support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use datashare_gateway::proto::datasharing::v1::AssociateConsumerRequest;
use datashare_gateway::proto::datasharing::v1::data_sharing_client::DataSharingClient;
use support::emulator::Emulator;
use support::gateway::{self, Gateway, GatewayOptions, NOTEBOOK, REPORTING, SALES_SHARE};
use support::prometheus::{Scrape, get, scrape};
use tempfile::TempDir;
use tokio::sync::Mutex;
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;

/// Lets analytics associate the entire account, which the examples forbid it.
const ANALYTICS_ACCOUNT: &str = r#"
@id("analytics-entire-account")
permit (
  principal,
  action == Action::"AssociateConsumer",
  resource
)
when {
  principal.groups.contains("analytics") &&
  context.consumer_kind == "account" &&
  ["111122223333", "444455556666", "777788889999"].contains(resource.producer_account)
};
"#;

/// The same permit, plus a policy naming an attribute the schema does not have: strict
/// validation refuses the whole set, so neither policy may take effect.
const UNKNOWN_ATTRIBUTE: &str = r#"
@id("analytics-entire-account-again")
permit (
  principal,
  action == Action::"AssociateConsumer",
  resource
)
when { principal.groups.contains("analytics") && context.consumer_kind == "account" };

@id("typo")
permit (principal, action, resource)
when { context.consumer_acount == "444455556666" };
"#;

/// A permit cut off in the middle: a syntax error.
const SYNTAX_ERROR: &str = r#"
@id("analytics-entire-account-broken")
permit (principal, action == Action::"AssociateConsumer", resource)
when { principal.groups.contains("analytics") &&
"#;

/// How long a reload may take to show (the watcher debounces 200 ms).
const RELOAD_WITHIN: Duration = Duration::from_secs(20);

/// A copy of examples/policies in a temporary directory.
fn policy_dir() -> TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let examples = gateway::repo_root().join("examples/policies");
    for entry in std::fs::read_dir(&examples).expect("examples/policies") {
        let path = entry.expect("entry").path();
        if let Some(name) = path.file_name() {
            std::fs::copy(&path, dir.path().join(name)).expect("copy policy file");
        }
    }
    dir
}

/// Writes `name` in one step (a rename), so no reload ever sees half a file.
fn write_atomically(dir: &Path, name: &str, text: &str) {
    let staging = dir.join(format!(".{name}.tmp"));
    std::fs::write(&staging, text).expect("write staging file");
    std::fs::rename(&staging, dir.join(name)).expect("rename into place");
}

fn sighup(gw: &Gateway) {
    let status = std::process::Command::new("kill")
        .arg("-HUP")
        .arg(gw.pid().to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -HUP");
}

fn notebook_entire_account(validate_only: bool) -> tonic::Request<AssociateConsumerRequest> {
    gateway::as_caller(
        NOTEBOOK,
        AssociateConsumerRequest {
            data_share_arn: SALES_SHARE.into(),
            associate_entire_account: true,
            validate_only,
            ..Default::default()
        },
    )
}

/// A call's result as the caller sees it: allowed, denied by policy, or anything else.
#[derive(Clone, Debug, PartialEq)]
enum Seen {
    Allowed,
    Denied,
    Failed(Code, String),
}

fn classify<T>(result: Result<T, tonic::Status>) -> Seen {
    match result {
        Ok(_) => Seen::Allowed,
        Err(status)
            if status.code() == Code::PermissionDenied
                && status
                    .get_error_details()
                    .error_info()
                    .is_some_and(|i| i.reason == "POLICY_DENIED") =>
        {
            Seen::Denied
        }
        Err(status) => Seen::Failed(status.code(), status.message().to_owned()),
    }
}

/// The decision on NOTEBOOK associating the entire account, by a validate_only call.
async fn decision(client: &mut DataSharingClient<Channel>) -> Seen {
    classify(
        client
            .associate_consumer(notebook_entire_account(true))
            .await,
    )
}

/// Polls (bounded) until the decision is `want`; returns when it was first observed.
async fn wait_for_decision(client: &mut DataSharingClient<Channel>, want: Seen) -> Instant {
    let deadline = Instant::now() + RELOAD_WITHIN;
    loop {
        let seen = decision(client).await;
        if seen == want {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "the decision did not become {want:?} (last: {seen:?})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Callers looping NOTEBOOK entire-account associations (real calls) until stopped; each call is
/// recorded with the instant it was sent.
struct Load {
    stop: Arc<AtomicBool>,
    results: Arc<Mutex<Vec<(Instant, Seen)>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(client: &DataSharingClient<Channel>, callers: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let results = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..callers)
            .map(|_| {
                let (stop, results, mut client) = (stop.clone(), results.clone(), client.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let sent = Instant::now();
                        let seen = classify(
                            client
                                .associate_consumer(notebook_entire_account(false))
                                .await,
                        );
                        results.lock().await.push((sent, seen));
                    }
                })
            })
            .collect();
        Load {
            stop,
            results,
            tasks,
        }
    }

    async fn finish(self) -> Vec<(Instant, Seen)> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("caller task");
        }
        let results = self.results.lock().await;
        results.clone()
    }

    /// Waits (bounded) until at least `n` more calls have completed.
    async fn wait_for_calls(&self, n: usize) {
        let target = self.results.lock().await.len() + n;
        let deadline = Instant::now() + RELOAD_WITHIN;
        while self.results.lock().await.len() < target {
            assert!(Instant::now() < deadline, "the callers stalled");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The results of calls sent in `[from, to)`.
fn sent_between(results: &[(Instant, Seen)], from: Instant, to: Instant) -> Vec<Seen> {
    results
        .iter()
        .filter(|(sent, _)| *sent >= from && *sent < to)
        .map(|(_, seen)| seen.clone())
        .collect()
}

fn assert_all(seen: &[Seen], want: &Seen, phase: &str) {
    assert!(!seen.is_empty(), "{phase}: no calls were sent");
    let other: Vec<_> = seen.iter().filter(|s| *s != want).collect();
    assert!(
        other.is_empty(),
        "{phase}: {} of {} calls were not {want:?}: {:?}",
        other.len(),
        seen.len(),
        &other[..other.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_load_switch_decisions_without_failing_a_call() {
    let emulator = Emulator::start();
    let dir = policy_dir();
    let mut options = GatewayOptions::new(emulator.endpoint_url());
    options.policy_dir = dir.path().to_owned();
    let gw = Gateway::start(options).await;
    let mut probe = gw.client().await;
    assert_eq!(
        decision(&mut probe).await,
        Seen::Denied,
        "the examples deny it"
    );

    let began = Instant::now();
    let load = Load::start(&gw.client().await, 8);
    load.wait_for_calls(50).await;

    // Add a permit: SIGHUP and the watcher both reload it.
    let added = Instant::now();
    write_atomically(dir.path(), "analytics-account.cedar", ANALYTICS_ACCOUNT);
    sighup(&gw);
    let allowed_from = wait_for_decision(&mut probe, Seen::Allowed).await;
    load.wait_for_calls(50).await;
    let logs = gw.logs();
    assert!(
        logs.contains("analytics-account.cedar: 1, analytics.cedar: 2, approvals.cedar: 5, data-platform.cedar: 2, guardrails.cedar: 3"),
        "the reload names each file's policy count: {logs}"
    );

    // Remove it again.
    let removed = Instant::now();
    std::fs::remove_file(dir.path().join("analytics-account.cedar")).expect("remove");
    sighup(&gw);
    let denied_from = wait_for_decision(&mut probe, Seen::Denied).await;
    load.wait_for_calls(50).await;

    // An invalid set is refused: the log names the file, and the old set keeps serving.
    let invalid = Instant::now();
    write_atomically(dir.path(), "broken.cedar", UNKNOWN_ATTRIBUTE);
    sighup(&gw);
    let deadline = Instant::now() + RELOAD_WITHIN;
    while !gw.logs().contains("broken.cedar") {
        assert!(
            Instant::now() < deadline,
            "the refused reload is not in the log:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let logs = gw.logs();
    assert!(logs.contains("policy reload refused"), "{logs}");
    assert!(
        logs.contains("consumer_acount"),
        "the error says what is wrong: {logs}"
    );
    let refused_seen = Instant::now();
    load.wait_for_calls(50).await;
    let end = Instant::now();
    assert_eq!(
        decision(&mut probe).await,
        Seen::Denied,
        "the old set serves"
    );

    let results = load.finish().await;
    let failed: Vec<_> = results
        .iter()
        .filter(|(_, s)| matches!(s, Seen::Failed(..)))
        .collect();
    assert!(
        failed.is_empty(),
        "no call fails because of a reload: {} of {} failed, e.g. {:?}",
        failed.len(),
        results.len(),
        &failed[..failed.len().min(5)]
    );
    assert_all(
        &sent_between(&results, began, added),
        &Seen::Denied,
        "before the permit",
    );
    assert_all(
        &sent_between(&results, allowed_from, removed),
        &Seen::Allowed,
        "with the permit",
    );
    assert_all(
        &sent_between(&results, denied_from, invalid),
        &Seen::Denied,
        "after its removal",
    );
    assert_all(
        &sent_between(&results, invalid, end),
        &Seen::Denied,
        "after the invalid set",
    );
    assert!(
        !sent_between(&results, refused_seen, end).is_empty(),
        "calls were made after the refusal was logged"
    );
    // Only allowed calls reached Redshift.
    let allowed = results.iter().filter(|(_, s)| *s == Seen::Allowed).count() as u64;
    assert_eq!(
        emulator.counter("AssociateDataShareConsumer", "received"),
        allowed
    );
}

#[tokio::test]
async fn a_policy_file_with_a_syntax_error_is_refused_and_named_in_the_log() {
    let emulator = Emulator::start();
    let dir = policy_dir();
    let mut options = GatewayOptions::new(emulator.endpoint_url());
    options.policy_dir = dir.path().to_owned();
    let gw = Gateway::start(options).await;
    let mut client = gw.client().await;
    let reporting = || {
        gateway::as_caller(
            REPORTING,
            AssociateConsumerRequest {
                data_share_arn: SALES_SHARE.into(),
                associate_entire_account: true,
                validate_only: true,
                ..Default::default()
            },
        )
    };

    write_atomically(dir.path(), "syntax.cedar", SYNTAX_ERROR);
    sighup(&gw);
    let deadline = Instant::now() + RELOAD_WITHIN;
    while !gw.logs().contains("syntax.cedar") {
        assert!(
            Instant::now() < deadline,
            "the refused reload is not in the log:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gw.logs().contains("policy reload refused"));
    // The running set is unchanged: analytics still may not, data-platform still may.
    assert_eq!(decision(&mut client).await, Seen::Denied);
    assert_eq!(
        classify(client.associate_consumer(reporting()).await),
        Seen::Allowed
    );

    // Fixing the file is picked up (the gateway was not left in a stuck state).
    write_atomically(dir.path(), "syntax.cedar", ANALYTICS_ACCOUNT);
    sighup(&gw);
    wait_for_decision(&mut client, Seen::Allowed).await;
    assert_eq!(
        emulator.counter("AssociateDataShareConsumer", "received"),
        0
    );
}

#[tokio::test]
async fn a_change_and_sighup_right_after_the_ready_line_are_reloaded() {
    let emulator = Emulator::start();
    let dir = policy_dir();
    let mut options = GatewayOptions::new(emulator.endpoint_url());
    options.policy_dir = dir.path().to_owned();
    let gw = Gateway::start(options).await;
    // No pause after the ready line: the reloader must already be listening.
    write_atomically(dir.path(), "analytics-account.cedar", ANALYTICS_ACCOUNT);
    sighup(&gw);
    let mut client = gw.client().await;
    wait_for_decision(&mut client, Seen::Allowed).await;
    // The file change alone may flip the decision first; the SIGHUP's own reload follows it
    // into the (non-blocking) log.
    assert!(gw.logged("\"trigger\":\"SIGHUP\"").await, "{}", gw.logs());
}

const RELOADS: &str = "datashare_gateway_policy_reload_total";
const SET_INFO: &str = "datashare_gateway_policy_set_info";

/// The `sha256` label of the one `policy_set_info` series.
fn serving_set(scrape: &Scrape) -> String {
    let sets: Vec<_> = scrape
        .samples
        .iter()
        .filter(|s| s.name == SET_INFO)
        .collect();
    assert_eq!(sets.len(), 1, "one serving set: {}", scrape.text);
    assert_eq!(sets[0].value, 1.0);
    sets[0].labels["sha256"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_reload_is_counted_and_shown_by_readyz_which_stays_200() {
    let emulator = Emulator::start();
    let dir = policy_dir();
    let mut options = GatewayOptions::new(emulator.endpoint_url());
    options.policy_dir = dir.path().to_owned();
    let gw = Gateway::start(options).await;
    let mut client = gw.client().await;
    let before = scrape(gw.admin).await;
    assert_eq!(before.value(RELOADS, &[("result", "refused")]), Some(0.0));
    assert_eq!(before.value(RELOADS, &[("result", "ok")]), Some(0.0));
    let original = serving_set(&before);
    assert_eq!(get(gw.admin, "/readyz").await, (200, "ok\n".to_owned()));

    // The guardrails become a link to nowhere, in one step (no reload may see them just gone):
    // the watcher sees it, the reload is refused.
    let guardrails = dir.path().join("guardrails.cedar");
    let kept = dir.path().join("guardrails.cedar.bak");
    std::fs::copy(&guardrails, &kept).expect("keep the guardrails");
    let link = dir.path().join(".guardrails.link");
    std::os::unix::fs::symlink(dir.path().join("release-2/guardrails.cedar"), &link)
        .expect("symlink");
    std::fs::rename(&link, &guardrails).expect("replace the guardrails by the link");
    let deadline = Instant::now() + RELOAD_WITHIN;
    let refused = loop {
        let now = scrape(gw.admin).await;
        if now.value(RELOADS, &[("result", "refused")]) >= Some(1.0) {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "no refused reload counted:\n{}\n{}",
            now.text,
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(serving_set(&refused), original, "the old set serves");
    let (status, body) = get(gw.admin, "/readyz").await;
    assert_eq!(
        status, 200,
        "a refused reload leaves the gateway ready: {body}"
    );
    assert!(body.starts_with("ok\n"), "{body}");
    assert!(
        body.contains("policy reload refused")
            && body.contains("guardrails.cedar is a dangling symlink"),
        "{body}"
    );
    let logs = gw.logs();
    assert!(
        logs.contains("guardrails.cedar is a dangling symlink"),
        "the log names the path: {logs}"
    );
    assert_eq!(
        decision(&mut client).await,
        Seen::Denied,
        "the old set serves"
    );

    // Putting the file back is a good reload: the refusal is gone, and the same files hash as
    // they did at start.
    std::fs::rename(&kept, &guardrails).expect("restore the guardrails");
    let deadline = Instant::now() + RELOAD_WITHIN;
    loop {
        // The reloader counts once the set is in, so the count may trail /readyz a little.
        let body = get(gw.admin, "/readyz").await.1;
        let after = scrape(gw.admin).await;
        if body == "ok\n" && after.value(RELOADS, &[("result", "ok")]) >= Some(1.0) {
            assert_eq!(serving_set(&after), original);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no good reload after the fix: {body}\n{}",
            after.text
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
