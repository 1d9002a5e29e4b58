//! The audit layers: fail closed when the trail cannot be written, and record every call exactly
//! once under concurrency.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use datashare_gateway::audit::{AuditConfig, AuditLayer, AuditLog, IntentLayer};
use datashare_gateway::call::{
    AssociateCall, AssociateParams, AssociateReply, CallContext, CallerCredential, Decision,
    Method, Principal, Trail,
};
use datashare_gateway::errors::GatewayError;
use tower::{Layer, ServiceExt};

fn call(request_id: String) -> AssociateCall {
    AssociateCall {
        ctx: CallContext {
            method: Method::AssociateConsumer,
            request_id,
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
            peer: Some("127.0.0.1:40000".parse().expect("addr")),
            credential: CallerCredential::Header("team-a".into()),
            principal: None,
            received_at: SystemTime::now(),
            started: Instant::now(),
            deadline: None,
        },
        params: AssociateParams {
            data_share_arn: "arn:aws:redshift:us-east-1:123456789012:datashare:ns/share".into(),
            consumer_region: "eu-west-1".into(),
            ..AssociateParams::default()
        },
        request: None,
        trail: Arc::new(Trail::default()),
    }
}

/// Stands in for Redshift: counts the calls it gets.
fn counting_upstream(
    count: Arc<AtomicUsize>,
) -> impl tower::Service<
    AssociateCall,
    Response = AssociateReply,
    Error = GatewayError,
    Future = impl Future<Output = Result<AssociateReply, GatewayError>> + Send,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |call: AssociateCall| {
        let count = Arc::clone(&count);
        async move {
            count.fetch_add(1, Ordering::SeqCst);
            let mut trail = call.trail.lock();
            trail.forwarded = true;
            trail.upstream.aws_request_id = Some(format!("aws-{}", call.ctx.request_id));
            Ok(AssociateReply::Associated(Default::default()))
        }
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

fn records(dir: &Path) -> Vec<serde_json::Value> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .collect();
    paths.sort();
    paths
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .expect("read")
                .lines()
                .map(|l| serde_json::from_str(l).expect("json"))
                .collect::<Vec<serde_json::Value>>()
        })
        .collect()
}

#[tokio::test]
async fn an_unwritable_trail_refuses_calls_without_forwarding_and_recovers() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("audit");
    let moved = tmp.path().join("moved");
    let mut config = AuditConfig::new(&dir);
    // Every batch starts a new file, so every write needs the directory.
    config.max_file_bytes = 1;
    let log = AuditLog::open(&config).await.expect("open");
    let mut health = log.health();
    let forwarded = Arc::new(AtomicUsize::new(0));
    let stack = AuditLayer::new(log.clone())
        .layer(IntentLayer::new(log.clone()).layer(counting_upstream(Arc::clone(&forwarded))));

    stack
        .clone()
        .oneshot(call("before".into()))
        .await
        .expect("a healthy trail forwards");
    assert_eq!(forwarded.load(Ordering::SeqCst), 1);
    assert!(*health.borrow());

    // Root ignores permission bits, but not a regular file where the directory should be.
    std::fs::rename(&dir, &moved).expect("move the directory away");
    std::fs::write(&dir, "not a directory").expect("block the path");

    let intent_only =
        IntentLayer::new(log.clone()).layer(counting_upstream(Arc::clone(&forwarded)));
    let err = intent_only
        .oneshot(call("refused-intent".into()))
        .await
        .expect_err("no durable intent, no call");
    assert!(matches!(err, GatewayError::AuditUnavailable(_)), "{err:?}");
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert_eq!(
        forwarded.load(Ordering::SeqCst),
        1,
        "the inner service was called"
    );
    assert!(!*health.borrow(), "health must report the failure");

    let err = stack
        .clone()
        .oneshot(call("refused-stack".into()))
        .await
        .expect_err("the whole stack fails closed");
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert_eq!(forwarded.load(Ordering::SeqCst), 1);

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
        .oneshot(call("after".into()))
        .await
        .expect("writes succeed again");
    assert_eq!(forwarded.load(Ordering::SeqCst), 2);
    assert!(*health.borrow());
    log.close().await;

    let (ok, out) = verify(&dir);
    assert!(ok, "{out}");
    let ids: Vec<_> = records(&dir)
        .iter()
        .map(|r| {
            format!(
                "{}:{}",
                r["kind"].as_str().expect("kind"),
                r["request_id"].as_str().expect("id")
            )
        })
        .collect();
    assert_eq!(
        ids,
        [
            "intent:before",
            "outcome:before",
            "intent:after",
            "outcome:after"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_concurrent_calls_are_each_recorded_once() {
    const CALLS: usize = 10_000;
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut config = AuditConfig::new(tmp.path());
    config.max_file_bytes = 1024 * 1024;
    config.queue_capacity = 256;
    let log = AuditLog::open(&config).await.expect("open");
    let forwarded = Arc::new(AtomicUsize::new(0));

    // A stand-in for identity + policy between the two audit layers: every third call is
    // denied and never reaches the intent layer.
    let below = IntentLayer::new(log.clone()).layer(counting_upstream(Arc::clone(&forwarded)));
    let policy = tower::service_fn(move |call: AssociateCall| {
        let below = below.clone();
        async move {
            let n: usize = call.ctx.request_id[4..].parse().expect("number");
            let allowed = !n.is_multiple_of(3);
            {
                let mut trail = call.trail.lock();
                trail.principal = Some(Principal {
                    id: "team-a".into(),
                    groups: vec!["producers".into()],
                });
                trail.decision = Some(Decision {
                    allowed,
                    determining_policies: vec![
                        if allowed { "permit-a" } else { "forbid-a" }.into(),
                    ],
                });
            }
            if !allowed {
                return Err(GatewayError::PolicyDenied {
                    determining_policies: vec!["forbid-a".into()],
                });
            }
            below.oneshot(call).await
        }
    });
    let stack = AuditLayer::new(log.clone()).layer(policy);

    let tasks: Vec<_> = (0..CALLS)
        .map(|i| {
            let stack = stack.clone();
            tokio::spawn(async move { stack.oneshot(call(format!("req-{i}"))).await })
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
    assert_eq!(forwarded.load(Ordering::SeqCst), allowed);

    let recs = records(tmp.path());
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
            assert_eq!(rs[0]["decision"]["determining_policies"][0], "forbid-a");
            assert_eq!(rs[0]["outcome"]["forwarded"], false);
        } else {
            assert_eq!(kinds, ["intent", "outcome"], "{id}");
            let intent_seq = rs[1]["intent_seq"].as_u64().expect("intent_seq");
            assert_eq!(intent_seq_of.get(&intent_seq), Some(&id.as_str()));
            assert_eq!(rs[1]["outcome"]["code"], "OK");
            assert_eq!(rs[1]["outcome"]["aws_request_id"], format!("aws-{id}"));
            assert_eq!(rs[1]["principal"], "team-a");
            assert_eq!(rs[1]["peer"], "127.0.0.1:40000");
        }
    }

    let (ok, out) = verify(tmp.path());
    assert!(ok, "{out}");
    assert!(!out.contains("intents without an outcome"), "{out}");
}
