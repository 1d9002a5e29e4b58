//! The audit layers in the real stack (`server::build_stack`): fail closed when the trail cannot
//! be written (a state change is not forwarded, a listing not answered), and record every call
//! exactly once under concurrency.

use crate::support;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use datashare_gateway::audit::{AuditConfig, AuditLog};
use datashare_gateway::call::DataShare;
use datashare_gateway::errors::GatewayError;
use datashare_gateway::ops::associate::{AssociateParams, AssociateReply};
use datashare_gateway::ops::list::{ListParams, ListReply};
use datashare_gateway::ops::{AssociateConsumer, ListConsumerDataShares};
use datashare_gateway::server::build_stack;
use datashare_gateway::status::code_of;
use support::stack::{FakeUpstream, call, caller, parts};
use tower::ServiceExt;

const REPORTING: &str = "spiffe://example.internal/ns/data/sa/reporting";
const FRONTEND: &str = "spiffe://example.internal/ns/web/sa/frontend";

fn region_params() -> AssociateParams {
    AssociateParams {
        data_share_arn: "arn:aws:redshift:us-east-1:111122223333:datashare:9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f/sales_share".into(),
        consumer_region: "us-east-1".into(),
        ..AssociateParams::default()
    }
}

fn associate_upstream() -> FakeUpstream<AssociateReply> {
    FakeUpstream::new(|| AssociateReply::Associated(DataShare::default()))
}

fn list_upstream() -> FakeUpstream<ListReply> {
    FakeUpstream::new(|| ListReply {
        data_shares: vec![DataShare::default()],
        next_page_token: String::new(),
    })
}

fn verify(dir: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_datashare-gateway"))
        .args(["audit", "verify"])
        .arg(dir)
        .output()
        .expect("run the binary");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test]
async fn an_unwritable_trail_refuses_calls_without_forwarding_and_recovers() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("audit");
    let moved = tmp.path().join("moved");
    let mut config = AuditConfig::new(&dir);
    // Every batch starts a new file, so every write needs the directory.
    config.max_file_bytes = 1;
    let log = AuditLog::open(&config, "test").await.expect("open");
    let mut health = log.health();
    let parts = parts(log.clone());
    let upstream = associate_upstream();
    let stack = build_stack::<AssociateConsumer, _>(&parts, upstream.clone());
    let lister = list_upstream();
    let list = build_stack::<ListConsumerDataShares, _>(&parts, lister.clone());

    stack
        .clone()
        .oneshot(call(caller(REPORTING), "before", region_params()))
        .await
        .expect("a healthy trail forwards");
    assert_eq!(upstream.count(), 1);
    assert!(*health.borrow());
    // The outcome is queued after the reply; were it still queued, the writer could make the
    // directory again under the moved one's name before the path is blocked.
    support::gateway::outcome_of(&dir, "before").await;

    // Root ignores permission bits, but not a regular file where the directory should be.
    std::fs::rename(&dir, &moved).expect("move the directory away");
    std::fs::write(&dir, "not a directory").expect("block the path");

    let err = stack
        .clone()
        .oneshot(call(caller(REPORTING), "refused", region_params()))
        .await
        .expect_err("no durable intent, no call");
    assert!(matches!(err, GatewayError::AuditUnavailable(_)), "{err:?}");
    assert_eq!(code_of(&err), tonic::Code::Unavailable);
    assert_eq!(upstream.count(), 1, "the upstream service was called");
    assert!(!*health.borrow(), "health must report the failure");

    // A listing changes nothing, so it has no intent; but its answer is not given unrecorded.
    let err = list
        .clone()
        .oneshot(call(
            caller(REPORTING),
            "list-refused",
            ListParams::default(),
        ))
        .await
        .expect_err("an unrecordable listing is withheld");
    assert!(matches!(err, GatewayError::AuditUnavailable(_)), "{err:?}");

    std::fs::remove_file(&dir).expect("unblock");
    std::fs::rename(&moved, &dir).expect("move the directory back");
    // The writer retries on its own: health comes back before any call arrives (the bound
    // only keeps a broken build from hanging).
    tokio::time::timeout(Duration::from_secs(60), health.wait_for(|healthy| *healthy))
        .await
        .expect("health comes back without calls")
        .expect("the writer is running");
    stack
        .clone()
        .oneshot(call(caller(REPORTING), "after", region_params()))
        .await
        .expect("writes succeed again");
    assert_eq!(upstream.count(), 2);
    let page = list
        .clone()
        .oneshot(call(caller(REPORTING), "list-after", ListParams::default()))
        .await
        .expect("a recorded listing is answered");
    assert_eq!(page.data_shares.len(), 1);
    assert!(*health.borrow());
    log.close().await;

    let (ok, out) = verify(&dir);
    assert!(ok, "{out}");
    let recs = support::gateway::audit_records(&dir);
    let ids: Vec<_> = recs
        .iter()
        .map(|r| {
            format!(
                "{}:{}:{}",
                r["kind"].as_str().expect("kind"),
                r["method"].as_str().expect("method"),
                r["request_id"].as_str().expect("id")
            )
        })
        .collect();
    assert_eq!(
        ids,
        [
            "intent:AssociateConsumer:before",
            "outcome:AssociateConsumer:before",
            "intent:AssociateConsumer:after",
            "outcome:AssociateConsumer:after",
            "call:ListConsumerDataShares:list-after",
        ]
    );
    let listing = &recs[4];
    assert_eq!(listing["outcome"]["forwarded"], true);
    assert_eq!(listing["outcome"]["code"], "OK");
    assert_eq!(listing["decision"]["allowed"], true);
    assert_eq!(listing["params"]["page_size"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_concurrent_calls_are_each_recorded_once() {
    const CALLS: usize = 10_000;
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut config = AuditConfig::new(tmp.path());
    config.max_file_bytes = 1024 * 1024;
    config.queue_capacity = 256;
    // What is tested is that each is recorded once, not how fast: on a busy 2-core machine the
    // last of 10,000 queued appends can wait longer than the 2 s default.
    config.write_timeout_ms = 60_000;
    let log = AuditLog::open(&config, "test").await.expect("open");
    let upstream = associate_upstream();
    let stack = build_stack::<AssociateConsumer, _>(&parts(log.clone()), upstream.clone());
    let tasks: Vec<_> = (0..CALLS)
        .map(|i| {
            let stack = stack.clone();
            // Every third call comes from a principal the policies deny.
            let who = if i % 3 == 0 { FRONTEND } else { REPORTING };
            let id = format!("req-{i}");
            tokio::spawn(
                async move { stack.oneshot(call(caller(who), &id, region_params())).await },
            )
        })
        .collect();
    let mut denied = 0;
    for task in tasks {
        match task.await.expect("join") {
            Ok(_) => {}
            Err(GatewayError::PolicyDenied { .. }) => denied += 1,
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    log.close().await;
    let allowed = CALLS - denied;
    assert_eq!(upstream.count(), allowed);

    let recs = support::gateway::audit_records(tmp.path());
    let seqs: Vec<u64> = recs
        .iter()
        .map(|r| r["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(
        seqs,
        (1..=recs.len() as u64).collect::<Vec<_>>(),
        "contiguous"
    );
    assert_eq!(recs.len(), 2 * allowed + denied);

    let mut by_id: HashMap<String, Vec<&serde_json::Value>> = HashMap::new();
    for r in &recs {
        by_id
            .entry(r["request_id"].as_str().expect("id").to_owned())
            .or_default()
            .push(r);
    }
    assert_eq!(by_id.len(), CALLS);
    let intent_seq_of: HashMap<u64, &str> = recs
        .iter()
        .filter(|r| r["kind"] == "intent")
        .map(|r| {
            (
                r["seq"].as_u64().expect("seq"),
                r["request_id"].as_str().expect("id"),
            )
        })
        .collect();
    for (id, rs) in &by_id {
        let kinds: Vec<_> = rs
            .iter()
            .map(|r| r["kind"].as_str().expect("kind"))
            .collect();
        let n: usize = id[4..].parse().expect("number");
        if n.is_multiple_of(3) {
            assert_eq!(kinds, ["call"], "{id}");
            assert_eq!(rs[0]["outcome"]["code"], "PERMISSION_DENIED");
            assert_eq!(rs[0]["principal"], FRONTEND);
            assert_eq!(rs[0]["decision"]["allowed"], false);
            assert_eq!(rs[0]["outcome"]["forwarded"], false);
        } else {
            assert_eq!(kinds, ["intent", "outcome"], "{id}");
            let intent_seq = rs[1]["intent_seq"].as_u64().expect("intent_seq");
            assert_eq!(intent_seq_of.get(&intent_seq), Some(&id.as_str()));
            assert_eq!(rs[1]["outcome"]["code"], "OK");
            assert_eq!(rs[1]["outcome"]["aws_request_id"], format!("aws-{id}"));
            assert_eq!(rs[1]["principal"], REPORTING);
            assert_eq!(rs[1]["peer"], "127.0.0.1:40000");
        }
    }

    let (ok, out) = verify(tmp.path());
    assert!(ok, "{out}");
    assert!(!out.contains("intents without an outcome"), "{out}");
}
