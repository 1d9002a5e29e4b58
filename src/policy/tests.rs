use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use proptest::prelude::*;
use tonic::Code;
use tower::{Layer, Service};

use super::*;
use crate::arn::{AccountId, DataShareArn, NamespaceArn, Partition, Region};
use crate::call::{CallerCredential, ContextValue, PolicyResource, Validated, ValidatedCall};
use crate::errors::GatewayError;
use crate::middleware::MiddlewareLayer;
use crate::ops::associate::{AssociateReply, AssociateRequest};
use crate::ops::disassociate::DisassociateRequest;
use crate::ops::list::ListParams;
use crate::ops::{AssociateConsumer, ConsumerTarget, DisassociateConsumer, ListConsumerDataShares};
use crate::status::{code_of, to_status};
use crate::testing::{Counting, associate_call};

const REPORTING: &str = "spiffe://example.internal/ns/data/sa/reporting";
const LOADER: &str = "spiffe://example.internal/ns/data/sa/loader";
const NOTEBOOK: &str = "spiffe://example.internal/ns/analytics/sa/notebook";
const FRONTEND: &str = "spiffe://example.internal/ns/web/sa/frontend";
const STRANGER: &str = "spiffe://elsewhere.example/ns/x/sa/y";

const SALES: &str = "arn:aws:redshift:us-east-1:111122223333:datashare:9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f/sales_share";
const FINANCE: &str = "arn:aws:redshift:us-east-1:111122223333:datashare:9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f/finance_share";
const LEGAL_HOLD: &str = "arn:aws:redshift:us-east-1:111122223333:datashare:d1e2f3a4-b5c6-4d7e-8f90-a1b2c3d4e5f6/legal_hold_share";
const FOREIGN_SHARE: &str = "arn:aws:redshift:us-east-1:123456789012:datashare:9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f/sales_share";
const PROVISIONED: &str =
    "arn:aws:redshift:us-east-1:444455556666:namespace:5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9";
const SERVERLESS: &str = "arn:aws:redshift-serverless:us-east-1:444455556666:namespace/0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9";
const FOREIGN_NAMESPACE: &str =
    "arn:aws:redshift:us-east-1:999999999999:namespace:5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9";
const CHINA_NAMESPACE: &str =
    "arn:aws-cn:redshift:cn-north-1:444455556666:namespace:5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9";

const DATA_PLATFORM: &str = "data-platform-associate-in-org";
const ANALYTICS: &str = "analytics-associate-namespaces-in-org";
const WRITES: &str = "writes-require-data-writers";
const NEEDS_APPROVAL: &str = "writes-need-one-approval";
const PARTITION: &str = "no-cross-partition";
const LEGAL: &str = "legal-hold-d1e2f3a4";

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/policies")
}

fn account(s: &str) -> AccountId {
    AccountId::parse(s).unwrap()
}

fn examples() -> Policies {
    Policies::load(
        PolicyConfig::new(examples_dir()),
        crate::operations::policy_probes(),
    )
    .unwrap()
}

/// The dev principals' groups, read from the shipped `principals.toml`.
fn principal(id: &str) -> Principal {
    #[derive(serde::Deserialize)]
    struct File {
        principals: crate::identity::PrincipalDirectory,
    }
    let text = std::fs::read_to_string(examples_dir().join("principals.toml")).unwrap();
    let file: File = toml::from_str(&text).unwrap();
    Principal {
        id: id.into(),
        groups: file
            .principals
            .get(id)
            .map(|e| e.groups.clone())
            .unwrap_or_default(),
    }
}

/// The account a target acts in when the request names none: the namespace's, else the
/// default account 444455556666.
fn account_of(consumer: &ConsumerTarget) -> AccountId {
    match consumer {
        ConsumerTarget::Namespace(ns) => ns.account.clone(),
        _ => account("444455556666"),
    }
}

fn request(share: &str, consumer: ConsumerTarget, allow_writes: Option<bool>) -> AssociateRequest {
    AssociateRequest {
        data_share: DataShareArn::parse(share).unwrap(),
        account: account_of(&consumer),
        consumer,
        allow_writes,
        validate_only: false,
    }
}

fn ns(arn: &str) -> ConsumerTarget {
    ConsumerTarget::Namespace(NamespaceArn::parse(arn).unwrap())
}

fn region(r: &str) -> ConsumerTarget {
    ConsumerTarget::Region(Region::parse(r).unwrap())
}

fn decision(allowed: bool, ids: &[&str]) -> Decision {
    Decision {
        allowed,
        determining_policies: ids.iter().map(|s| s.to_string()).collect(),
    }
}

#[test]
fn every_example_rule_allows_and_denies_as_documented() {
    let policies = examples();
    let entire = || ConsumerTarget::EntireAccount;
    #[rustfmt::skip]
    let cases: Vec<(&str, &str, AssociateRequest, Decision)> = vec![
        // data-platform: any consumer kind in an org account.
        ("data-platform, provisioned namespace", REPORTING, request(SALES, ns(PROVISIONED), None), decision(true, &[DATA_PLATFORM])),
        ("data-platform, serverless namespace", REPORTING, request(SALES, ns(SERVERLESS), None), decision(true, &[DATA_PLATFORM])),
        ("data-platform, entire account", REPORTING, request(SALES, entire(), None), decision(true, &[DATA_PLATFORM])),
        ("data-platform, region", REPORTING, request(FINANCE, region("us-west-2"), None), decision(true, &[DATA_PLATFORM])),
        ("data-platform, consumer outside the org", REPORTING, request(SALES, ns(FOREIGN_NAMESPACE), None), decision(false, &[])),
        ("data-platform, producer outside the org", REPORTING, request(FOREIGN_SHARE, ns(PROVISIONED), None), decision(false, &[])),
        // analytics: namespaces only.
        ("analytics, provisioned namespace", NOTEBOOK, request(SALES, ns(PROVISIONED), None), decision(true, &[ANALYTICS])),
        ("analytics, serverless namespace", NOTEBOOK, request(FINANCE, ns(SERVERLESS), Some(false)), decision(true, &[ANALYTICS])),
        ("analytics, entire account", NOTEBOOK, request(SALES, entire(), None), decision(false, &[])),
        ("analytics, region", NOTEBOOK, request(SALES, region("us-east-1"), None), decision(false, &[])),
        ("analytics, consumer outside the org", NOTEBOOK, request(SALES, ns(FOREIGN_NAMESPACE), None), decision(false, &[])),
        // writes need data-writers.
        ("data-platform, writes", REPORTING, request(SALES, ns(PROVISIONED), Some(true)), decision(false, &[WRITES])),
        // ... and one approval (by someone else: the approvals layer counts only those).
        ("data-platform + data-writers, writes", LOADER, request(SALES, ns(PROVISIONED), Some(true)), decision(false, &[NEEDS_APPROVAL])),
        ("data-platform + data-writers, writes, entire account", LOADER, request(SALES, entire(), Some(true)), decision(false, &[NEEDS_APPROVAL])),
        ("analytics, writes", NOTEBOOK, request(SALES, ns(SERVERLESS), Some(true)), decision(false, &[WRITES])),
        ("data-platform, writes explicitly off", REPORTING, request(SALES, ns(PROVISIONED), Some(false)), decision(true, &[DATA_PLATFORM])),
        // no association across partitions.
        ("data-platform, namespace in another partition", REPORTING, request(SALES, ns(CHINA_NAMESPACE), None), decision(false, &[PARTITION])),
        ("data-platform, region in another partition", LOADER, request(SALES, region("cn-north-1"), None), decision(false, &[PARTITION])),
        ("analytics, namespace in another partition", NOTEBOOK, request(SALES, ns(CHINA_NAMESPACE), None), decision(false, &[PARTITION])),
        // legal hold: nothing on the held namespace.
        ("data-platform, legal hold", REPORTING, request(LEGAL_HOLD, ns(PROVISIONED), None), decision(false, &[LEGAL])),
        ("data-writers, legal hold, entire account", LOADER, request(LEGAL_HOLD, entire(), Some(true)), decision(false, &[LEGAL, NEEDS_APPROVAL])),
        ("analytics, legal hold", NOTEBOOK, request(LEGAL_HOLD, ns(SERVERLESS), None), decision(false, &[LEGAL])),
        ("data-platform, legal hold and writes", REPORTING, request(LEGAL_HOLD, ns(PROVISIONED), Some(true)), decision(false, &[LEGAL, WRITES])),
        // nothing else is permitted.
        ("no group", FRONTEND, request(SALES, ns(PROVISIONED), None), decision(false, &[])),
        ("no group, entire account", FRONTEND, request(SALES, entire(), None), decision(false, &[])),
        ("unknown principal", STRANGER, request(SALES, ns(PROVISIONED), None), decision(false, &[])),
    ];
    for (name, who, req, expected) in cases {
        let evaluation = policies.explain::<AssociateConsumer>(&principal(who), &req);
        assert_eq!(evaluation.decision, expected, "{name}");
        assert!(
            evaluation.errors.is_empty(),
            "{name}: {:?}",
            evaluation.errors
        );
    }
    // With one approval, writes by data-writers are permitted; nothing else changes.
    let approved = crate::call::ApprovalFacts::with_approvals(1);
    #[rustfmt::skip]
    let approved_cases: Vec<(&str, &str, AssociateRequest, Decision)> = vec![
        ("approved writes", LOADER, request(SALES, ns(PROVISIONED), Some(true)), decision(true, &[DATA_PLATFORM])),
        ("approved writes, entire account", LOADER, request(SALES, entire(), Some(true)), decision(true, &[DATA_PLATFORM])),
        ("approved writes, not a data-writer", REPORTING, request(SALES, ns(PROVISIONED), Some(true)), decision(false, &[WRITES])),
        ("approved writes, legal hold", LOADER, request(LEGAL_HOLD, entire(), Some(true)), decision(false, &[LEGAL])),
        ("approved, no writes", REPORTING, request(SALES, ns(PROVISIONED), None), decision(true, &[DATA_PLATFORM])),
    ];
    for (name, who, req, expected) in approved_cases {
        let decision =
            policies.evaluate_with::<AssociateConsumer>(&principal(who), &req, &approved);
        assert_eq!(decision, expected, "{name}");
    }
}

#[test]
fn entire_account_and_region_targets_use_the_resolved_account() {
    // A consumer account outside the org may not receive entire-account or region
    // associations, while a named org namespace is still fine.
    let policies = examples();
    let reporting = principal(REPORTING);
    let outside = |consumer: ConsumerTarget| AssociateRequest {
        account: account("999999999999"),
        ..request(SALES, consumer, None)
    };
    assert_eq!(
        policies.evaluate::<AssociateConsumer>(&reporting, &outside(ConsumerTarget::EntireAccount)),
        decision(false, &[])
    );
    assert_eq!(
        policies.evaluate::<AssociateConsumer>(&reporting, &outside(region("us-east-1"))),
        decision(false, &[])
    );
    // Another org account, named by consumer_account: allowed.
    let org = AssociateRequest {
        account: account("777788889999"),
        ..request(SALES, ConsumerTarget::EntireAccount, None)
    };
    assert_eq!(
        policies.evaluate::<AssociateConsumer>(&reporting, &org),
        decision(true, &[DATA_PLATFORM])
    );
}

fn copy_examples(to: &Path) {
    for entry in std::fs::read_dir(examples_dir()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
}

#[test]
fn the_legal_hold_forbid_beats_a_permit_for_everyone() {
    let dir = tempfile::tempdir().unwrap();
    copy_examples(dir.path());
    std::fs::write(
        dir.path().join("open.cedar"),
        "@id(\"open-bar\")\npermit (principal, action, resource);\n",
    )
    .unwrap();
    let policies = Policies::load(
        PolicyConfig::new(dir.path()),
        crate::operations::policy_probes(),
    )
    .unwrap();
    let frontend = principal(FRONTEND);
    assert_eq!(
        policies.evaluate::<AssociateConsumer>(&frontend, &request(SALES, ns(PROVISIONED), None)),
        decision(true, &["open-bar"])
    );
    assert_eq!(
        policies
            .evaluate::<AssociateConsumer>(&frontend, &request(LEGAL_HOLD, ns(PROVISIONED), None)),
        decision(false, &[LEGAL])
    );
}

#[test]
fn policies_without_an_id_annotation_are_named_by_file_and_index() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("team.cedar"),
        "forbid (principal, action, resource is DataShare) when { resource.name == \"secret\" };\n\
         permit (principal, action == Action::\"AssociateConsumer\", resource);\n",
    )
    .unwrap();
    let policies = Policies::load(
        PolicyConfig::new(dir.path()),
        crate::operations::policy_probes(),
    )
    .unwrap();
    assert_eq!(policies.policy_ids(), ["team.cedar#0", "team.cedar#1"]);
    let anyone = principal(STRANGER);
    assert_eq!(
        policies.evaluate::<AssociateConsumer>(&anyone, &request(SALES, ns(PROVISIONED), None)),
        decision(true, &["team.cedar#1"])
    );
}

#[test]
fn schema_validation_rejects_an_unknown_attribute_with_file_and_position() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.cedar"),
        "@id(\"owner-rule\")\npermit (principal, action == Action::\"AssociateConsumer\", resource)\nwhen { resource.owner == \"me\" };\n",
    )
    .unwrap();
    let err = Policies::load(
        PolicyConfig::new(dir.path()),
        crate::operations::policy_probes(),
    )
    .unwrap_err();
    let PolicyError::Invalid(diagnostics) = &err else {
        panic!("expected Invalid, got {err:?}");
    };
    assert_eq!(diagnostics.len(), 1);
    let d = &diagnostics[0];
    assert!(d.file.ends_with("bad.cedar"));
    assert_eq!(d.line, Some(3));
    assert_eq!(d.policy.as_deref(), Some("owner-rule"));
    assert!(d.message.contains("owner"), "{}", d.message);
    assert!(err.to_string().contains("bad.cedar:3:"), "{err}");
}

#[test]
fn syntax_errors_duplicates_and_empty_directories_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        Policies::load(
            PolicyConfig::new(dir.path()),
            crate::operations::policy_probes()
        ),
        Err(PolicyError::NoPolicies { .. })
    ));
    std::fs::write(
        dir.path().join("a.cedar"),
        "@id(\"x\") permit (principal, action, resource);",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b.cedar"),
        "@id(\"x\") forbid (principal, action, resource);",
    )
    .unwrap();
    let err = Policies::load(
        PolicyConfig::new(dir.path()),
        crate::operations::policy_probes(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("duplicate policy id"), "{err}");
    std::fs::write(
        dir.path().join("b.cedar"),
        "\n\npermit (principal action, resource);",
    )
    .unwrap();
    let err = Policies::load(
        PolicyConfig::new(dir.path()),
        crate::operations::policy_probes(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("b.cedar:3:"), "{err}");
}

#[test]
fn config_rejects_unknown_keys_and_missing_directories() {
    let config: PolicyConfig = toml::from_str("dir = \"examples/policies\"").unwrap();
    assert_eq!(config, PolicyConfig::new("examples/policies"));
    assert!(toml::from_str::<PolicyConfig>("dir = \"x\"\nwatched = true").is_err());
    let err = PolicyConfig::new("/nonexistent/policies")
        .validate()
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("policy.dir = \"/nonexistent/policies\""),
        "{err}"
    );
}

#[test]
fn a_custom_schema_that_does_not_describe_the_gateway_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    copy_examples(dir.path());
    let schema = dir.path().join("schema.cedarschema");
    // Missing the `name` attribute the gateway supplies.
    std::fs::write(&schema, DEFAULT_SCHEMA.replace("  name: String,\n", "")).unwrap();
    let config = PolicyConfig {
        schema: Some(schema),
        watch: false,
        ..PolicyConfig::new(dir.path())
    };
    let err = Policies::load(config, crate::operations::policy_probes()).unwrap_err();
    assert!(
        err.to_string()
            .contains("does not describe the gateway's AssociateConsumer requests"),
        "{err}"
    );
}

fn layer_call(principal: Principal, request: AssociateRequest) -> ValidatedCall<AssociateConsumer> {
    associate_call(
        CallerCredential::Certificate(principal.id.clone()),
        Default::default(),
    )
    .advance(Validated::new(principal, request))
}

type Stage = super::Permitted<AssociateRequest>;

#[tokio::test]
async fn validate_only_answers_validated_without_calling_the_inner_service() {
    let inner = Counting::<Stage>::default();
    let mut svc = MiddlewareLayer::new(Authorize::new(examples())).layer(inner.clone());
    let mut req = request(SALES, ns(PROVISIONED), None);
    req.validate_only = true;
    let call = layer_call(principal(REPORTING), req.clone());
    let notes = call.notes.clone();
    let reply = svc.call(call).await.unwrap();
    assert_eq!(
        reply,
        AssociateReply::Validated(decision(true, &[DATA_PLATFORM]))
    );
    assert_eq!(inner.count(), 0);
    assert_eq!(
        notes.snapshot().decision,
        Some(decision(true, &[DATA_PLATFORM]))
    );

    req.validate_only = false;
    let reply = svc
        .call(layer_call(principal(REPORTING), req))
        .await
        .unwrap();
    assert!(matches!(reply, AssociateReply::Associated(_)));
    assert_eq!(inner.count(), 1);
}

#[tokio::test]
async fn a_denial_is_permission_denied_recorded_and_not_forwarded() {
    let inner = Counting::<Stage>::default();
    let mut svc = MiddlewareLayer::new(Authorize::new(examples())).layer(inner.clone());
    let call = layer_call(
        principal(REPORTING),
        request(LEGAL_HOLD, ns(PROVISIONED), None),
    );
    let notes = call.notes.clone();
    let err = svc.call(call).await.unwrap_err();
    assert_eq!(code_of(&err), Code::PermissionDenied);
    assert!(
        matches!(&err, GatewayError::PolicyDenied { determining_policies } if determining_policies == &[LEGAL])
    );
    assert_eq!(notes.snapshot().decision, Some(decision(false, &[LEGAL])));
    assert_eq!(inner.count(), 0);
    let status = to_status(&err, "req-1");
    assert!(
        !status.message().contains("forbid"),
        "no policy text in errors"
    );
}

/// What one call through the policy layer (over a real SQLite approvals store) costs:
/// evaluations of the pinned set and reads of the store.
async fn cost_of(
    caller: &str,
    request: AssociateRequest,
) -> (Result<AssociateReply, GatewayError>, u64, u64) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let log = crate::audit::AuditLog::open(&crate::audit::AuditConfig::new(tmp.path()), "test")
        .await
        .expect("open the audit log");
    let metrics = crate::metrics::Metrics::new();
    let store = crate::approvals::Approvals::open(
        &crate::approvals::StoreLocation::Sqlite(tmp.path().join("approvals.db")),
        &crate::approvals::ApprovalsConfig::default(),
        log.clone(),
        metrics.clone(),
        crate::operations::approvable_methods(),
    )
    .await
    .expect("open the approvals store");
    let policies = examples();
    let lookup: Arc<dyn ApprovalLookup> = Arc::new(store);
    let mut svc =
        MiddlewareLayer::new(Authorize::new(policies.clone()).with_approvals(Some(lookup)))
            .layer(Counting::<Stage>::default());
    let before = policies.evaluations();
    let result = svc.call(layer_call(principal(caller), request)).await;
    let evaluations = policies.evaluations() - before;
    log.close().await;
    (result, evaluations, metrics.approval_lookups.get())
}

#[tokio::test]
async fn a_call_no_approvals_would_permit_costs_two_evaluations_and_no_store_read() {
    // Writes to the legal-hold share: forbidden whatever the approvals.
    let (result, evaluations, lookups) =
        cost_of(LOADER, request(LEGAL_HOLD, ns(PROVISIONED), Some(true))).await;
    assert!(
        matches!(&result, Err(GatewayError::PolicyDenied { determining_policies }) if determining_policies == &[LEGAL]),
        "{result:?}"
    );
    assert_eq!(evaluations, 2);
    assert_eq!(lookups, 0, "no store read");
}

#[tokio::test]
async fn finding_the_approvals_a_call_needs_bisects_one_pinned_set() {
    let (result, evaluations, lookups) =
        cost_of(LOADER, request(SALES, ns(PROVISIONED), Some(true))).await;
    assert!(
        matches!(
            &result,
            Err(GatewayError::ApprovalRequired {
                required_approvals: 1,
                approvals: 0,
                ..
            })
        ),
        "{result:?}"
    );
    // As it stands, with the most approvals, then at most ⌈log₂ 10⌉ to find the fewest.
    assert!(evaluations <= 2 + 4, "{evaluations} evaluations");
    assert_eq!(lookups, 1, "one read of the live approval");
    // A call permitted as it stands: one evaluation, no read.
    let (result, evaluations, lookups) =
        cost_of(REPORTING, request(SALES, ns(PROVISIONED), None)).await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!((evaluations, lookups), (1, 0));
}

const LOCKDOWN: &str = "@id(\"lockdown\")\nforbid (principal, action, resource);\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reload_under_concurrent_evaluation_never_shows_a_mixed_or_broken_set() {
    let dir = tempfile::tempdir().unwrap();
    copy_examples(dir.path());
    let policies = Policies::load(
        PolicyConfig::new(dir.path()),
        crate::operations::policy_probes(),
    )
    .unwrap();
    let old = decision(true, &[DATA_PLATFORM]);
    let new = decision(false, &["lockdown"]);
    let stop = Arc::new(AtomicBool::new(false));
    let seen_old = Arc::new(AtomicUsize::new(0));
    let seen_new = Arc::new(AtomicUsize::new(0));
    let mut evaluators = Vec::new();
    for _ in 0..8 {
        let (policies, stop) = (policies.clone(), stop.clone());
        let (seen_old, seen_new) = (seen_old.clone(), seen_new.clone());
        let (old, new) = (old.clone(), new.clone());
        evaluators.push(tokio::spawn(async move {
            let reporting = principal(REPORTING);
            let req = request(SALES, ns(PROVISIONED), None);
            while !stop.load(Ordering::SeqCst) {
                let evaluation = policies.explain::<AssociateConsumer>(&reporting, &req);
                assert!(evaluation.errors.is_empty(), "{:?}", evaluation.errors);
                if evaluation.decision == old {
                    seen_old.fetch_add(1, Ordering::SeqCst);
                } else if evaluation.decision == new {
                    seen_new.fetch_add(1, Ordering::SeqCst);
                } else {
                    panic!("decision from neither set: {:?}", evaluation.decision);
                }
                tokio::task::yield_now().await;
            }
        }));
    }
    let lockdown = dir.path().join("lockdown.cedar");
    for round in 0..40 {
        if round % 2 == 0 {
            std::fs::write(&lockdown, LOCKDOWN).unwrap();
            assert_eq!(policies.reload().unwrap(), 13);
        } else {
            std::fs::remove_file(&lockdown).unwrap();
            assert_eq!(policies.reload().unwrap(), 12);
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(policies.last_reload_error(), None);

    // An invalid set is refused; the running one (without lockdown) keeps serving.
    std::fs::write(
        &lockdown,
        "@id(\"lockdown\")\nforbid (principal, action, resource)\nwhen { context.nope };\n",
    )
    .unwrap();
    let err = policies.reload().unwrap_err();
    assert!(matches!(err, PolicyError::Invalid(_)));
    let last = policies
        .last_reload_error()
        .expect("last_reload_error is set");
    assert!(last.contains("lockdown.cedar:3:"), "{last}");
    assert_eq!(policies.len(), 12);
    assert_eq!(
        policies.evaluate::<AssociateConsumer>(
            &principal(REPORTING),
            &request(SALES, ns(PROVISIONED), None)
        ),
        old
    );

    stop.store(true, Ordering::SeqCst);
    for e in evaluators {
        e.await.unwrap();
    }
    assert!(seen_old.load(Ordering::SeqCst) > 0);

    // A good reload clears the error.
    std::fs::write(&lockdown, LOCKDOWN).unwrap();
    assert_eq!(policies.reload().unwrap(), 13);
    assert_eq!(policies.last_reload_error(), None);
    assert_eq!(
        policies.evaluate::<AssociateConsumer>(
            &principal(REPORTING),
            &request(SALES, ns(PROVISIONED), None)
        ),
        new
    );
}

/// Waits (bounded) for the reloader to pick a change up; the bound only limits a failing test.
async fn eventually(policies: &Policies, expected: &Decision) -> bool {
    for _ in 0..200 {
        if &policies.evaluate::<AssociateConsumer>(
            &principal(REPORTING),
            &request(SALES, ns(PROVISIONED), None),
        ) == expected
        {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reloader_picks_up_file_changes_and_sighup() {
    let dir = tempfile::tempdir().unwrap();
    copy_examples(dir.path());
    let config = PolicyConfig::new(dir.path());
    let policies = Policies::load(config, crate::operations::policy_probes()).unwrap();
    let reloader = policies
        .spawn_reloader(crate::metrics::Metrics::new())
        .unwrap();

    std::fs::write(dir.path().join("lockdown.cedar"), LOCKDOWN).unwrap();
    assert!(
        eventually(&policies, &decision(false, &["lockdown"])).await,
        "file change reloaded"
    );

    // A broken edit is refused and reported; the lockdown set keeps serving.
    std::fs::write(
        dir.path().join("lockdown.cedar"),
        "forbid (principal, action, resource",
    )
    .unwrap();
    for _ in 0..200 {
        if policies.last_reload_error().is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        policies
            .last_reload_error()
            .is_some_and(|e| e.contains("lockdown.cedar"))
    );
    assert!(eventually(&policies, &decision(false, &["lockdown"])).await);
    reloader.abort();

    // With watching off, only SIGHUP reloads.
    std::fs::remove_file(dir.path().join("lockdown.cedar")).unwrap();
    let config = PolicyConfig {
        watch: false,
        ..PolicyConfig::new(dir.path())
    };
    let quiet = Policies::load(config, crate::operations::policy_probes()).unwrap();
    std::fs::write(dir.path().join("lockdown.cedar"), LOCKDOWN).unwrap();
    let reloader = quiet
        .spawn_reloader(crate::metrics::Metrics::new())
        .unwrap();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(
        eventually(&quiet, &decision(false, &["lockdown"])).await,
        "SIGHUP reloaded"
    );
    reloader.abort();
}

#[test]
fn a_cedar_entry_that_is_not_a_readable_file_fails_the_load_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    copy_examples(dir.path());
    let link = dir.path().join("org-guardrails.cedar");
    std::os::unix::fs::symlink(dir.path().join("gone/guardrails.cedar"), &link).unwrap();
    let config = PolicyConfig::new(dir.path());
    let err = Policies::load(config.clone(), crate::operations::policy_probes()).unwrap_err();
    assert!(
        matches!(&err, PolicyError::NotAFile { path, what: "a dangling symlink" } if path == &link),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("org-guardrails.cedar is a dangling symlink"),
        "{err}"
    );
    // `check-config` validates the configuration without loading the set: it refuses it too.
    assert!(matches!(
        config.validate(),
        Err(PolicyError::NotAFile { .. })
    ));

    std::fs::remove_file(&link).unwrap();
    let nested = dir.path().join("team.cedar");
    std::fs::create_dir(&nested).unwrap();
    let err = Policies::load(config.clone(), crate::operations::policy_probes()).unwrap_err();
    assert!(
        matches!(&err, PolicyError::NotAFile { path, what: "a directory" } if path == &nested),
        "{err:?}"
    );
    assert!(
        matches!(
            Policies::validate_set(&config, &crate::operations::policy_probes()),
            Err(PolicyError::NotAFile { .. })
        ),
        "policy validate refuses it"
    );
}

#[test]
fn a_reload_that_would_lose_a_file_is_refused_and_the_running_set_stays() {
    let dir = tempfile::tempdir().unwrap();
    copy_examples(dir.path());
    let policies = Policies::load(
        PolicyConfig::new(dir.path()),
        crate::operations::policy_probes(),
    )
    .unwrap();
    assert_eq!(policies.len(), 12);
    let held = || {
        policies.evaluate::<AssociateConsumer>(
            &principal(REPORTING),
            &request(LEGAL_HOLD, ns(PROVISIONED), None),
        )
    };
    assert_eq!(held(), decision(false, &[LEGAL]));

    // The guardrails become a link to a file that is not there (a botched deployment).
    let guardrails = dir.path().join("guardrails.cedar");
    std::fs::remove_file(&guardrails).unwrap();
    std::os::unix::fs::symlink(dir.path().join("releases/guardrails.cedar"), &guardrails).unwrap();
    let err = policies.reload().unwrap_err();
    assert!(
        matches!(&err, PolicyError::NotAFile { path, .. } if path == &guardrails),
        "{err:?}"
    );
    assert_eq!(policies.len(), 12, "the running set stays whole");
    assert_eq!(held(), decision(false, &[LEGAL]));
    let last = policies.last_reload_error().expect("the refusal is kept");
    assert!(
        last.contains("guardrails.cedar is a dangling symlink"),
        "{last}"
    );
}

#[test]
fn the_summary_counts_policies_per_file_and_hashes_what_is_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    copy_examples(dir.path());
    let summary = Policies::validate_set(
        &PolicyConfig::new(dir.path()),
        &crate::operations::policy_probes(),
    )
    .unwrap();
    let counts: Vec<(&str, usize)> = summary
        .files
        .iter()
        .map(|f| (f.name.as_str(), f.policies))
        .collect();
    assert_eq!(
        counts,
        [
            ("analytics.cedar", 2),
            ("approvals.cedar", 5),
            ("data-platform.cedar", 2),
            ("guardrails.cedar", 3)
        ]
    );
    assert_eq!(
        summary.per_file(),
        "analytics.cedar: 2, approvals.cedar: 5, data-platform.cedar: 2, guardrails.cedar: 3"
    );
    let config = PolicyConfig::new(dir.path());
    assert_eq!(load::fingerprint(&config), summary.sha256);
    assert_eq!(summary.sha256.len(), 64);

    // Whitespace changes no policy but is a change on disk; a rename changes ids.
    let analytics = dir.path().join("analytics.cedar");
    let text = std::fs::read_to_string(&analytics).unwrap();
    std::fs::write(&analytics, format!("{text}\n")).unwrap();
    assert_ne!(load::fingerprint(&config), summary.sha256);
    std::fs::write(&analytics, &text).unwrap();
    assert_eq!(load::fingerprint(&config), summary.sha256);
    std::fs::rename(&analytics, dir.path().join("analytics2.cedar")).unwrap();
    assert_ne!(load::fingerprint(&config), summary.sha256);
}

#[test]
fn poll_interval_defaults_to_5_seconds_and_is_bounded_naming_the_key() {
    let config: PolicyConfig = toml::from_str("dir = \"examples/policies\"").unwrap();
    assert_eq!(config.poll_interval_secs, 5);
    let off: PolicyConfig =
        toml::from_str("dir = \"examples/policies\"\npoll_interval_secs = 0").unwrap();
    assert_eq!(off.poll_interval_secs, 0);
    let config = PolicyConfig {
        poll_interval_secs: MAX_POLL_INTERVAL_SECS + 1,
        ..PolicyConfig::new(examples_dir())
    };
    let err = config.validate().unwrap_err();
    assert!(
        err.to_string()
            .starts_with("policy.poll_interval_secs = \"86401\""),
        "{err}"
    );
    let config = PolicyConfig {
        poll_interval_secs: MAX_POLL_INTERVAL_SECS,
        ..PolicyConfig::new(examples_dir())
    };
    config.validate().unwrap();
}

/// Without the periodic check, so only the watcher can see a change.
fn watch_only(dir: &Path) -> PolicyConfig {
    PolicyConfig {
        poll_interval_secs: 0,
        ..PolicyConfig::new(dir)
    }
}

/// The example files, without principals.toml.
const EXAMPLE_FILES: [&str; 3] = ["analytics.cedar", "data-platform.cedar", "guardrails.cedar"];

fn append_lockdown(file: &Path) {
    let text = std::fs::read_to_string(file).unwrap();
    std::fs::write(file, format!("{text}\n{LOCKDOWN}")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_follows_a_configmap_update_that_swaps_the_data_symlink() {
    // As kubelet lays a ConfigMap volume out: `<key> -> ..data/<key>`, `..data -> ..<timestamp>`.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir(root.join("..2026_a")).unwrap();
    copy_examples(&root.join("..2026_a"));
    std::os::unix::fs::symlink("..2026_a", root.join("..data")).unwrap();
    for name in EXAMPLE_FILES {
        std::os::unix::fs::symlink(format!("..data/{name}"), root.join(name)).unwrap();
    }
    let policies = Policies::load(watch_only(root), crate::operations::policy_probes()).unwrap();
    let metrics = crate::metrics::Metrics::new();
    let reloader = policies.spawn_reloader(metrics.clone()).unwrap();
    let before = policies.summary().sha256;

    // The update: a new timestamped directory, a temporary link to it renamed over `..data`,
    // the old directory removed. No `*.cedar` entry of the watched directory changes.
    std::fs::create_dir(root.join("..2026_b")).unwrap();
    copy_examples(&root.join("..2026_b"));
    append_lockdown(&root.join("..2026_b/guardrails.cedar"));
    std::os::unix::fs::symlink("..2026_b", root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    std::fs::remove_dir_all(root.join("..2026_a")).unwrap();

    assert!(
        eventually(&policies, &decision(false, &["lockdown"])).await,
        "the swapped set serves"
    );
    assert_eq!(policies.len(), 8);
    assert_ne!(policies.summary().sha256, before);
    // The reloader counts once the new set is in, so the count may trail the swap a little. (Not
    // an exact count: another test's SIGHUP reloads every reloader in this process.)
    let ok = "datashare_gateway_policy_reload_total{result=\"ok\"}";
    let mut text = metrics.render();
    for _ in 0..100 {
        if !text.contains(&format!("{ok} 0")) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        text = metrics.render();
    }
    assert!(
        text.contains(ok) && !text.contains(&format!("{ok} 0")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "datashare_gateway_policy_set_info{{sha256=\"{}\"}} 1",
            policies.summary().sha256
        )),
        "{text}"
    );
    assert!(
        !text.contains(&before),
        "only the serving set is shown: {text}"
    );

    // And the next update, into the directory just swapped in, is seen too.
    std::fs::create_dir(root.join("..2026_c")).unwrap();
    copy_examples(&root.join("..2026_c"));
    std::os::unix::fs::symlink("..2026_c", root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    std::fs::remove_dir_all(root.join("..2026_b")).unwrap();
    assert!(
        eventually(&policies, &decision(true, &[DATA_PLATFORM])).await,
        "the second swap is seen"
    );
    assert_eq!(
        policies.summary().sha256,
        before,
        "the same files hash the same"
    );
    reloader.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_sees_edits_of_a_symlinked_policy_files_target() {
    let dir = tempfile::tempdir().unwrap();
    let policy_dir = dir.path().join("policies");
    let shared = dir.path().join("shared");
    std::fs::create_dir(&policy_dir).unwrap();
    std::fs::create_dir(&shared).unwrap();
    copy_examples(&policy_dir);
    let target = shared.join("guardrails.cedar");
    std::fs::rename(policy_dir.join("guardrails.cedar"), &target).unwrap();
    std::os::unix::fs::symlink(&target, policy_dir.join("guardrails.cedar")).unwrap();
    let policies =
        Policies::load(watch_only(&policy_dir), crate::operations::policy_probes()).unwrap();
    let reloader = policies
        .spawn_reloader(crate::metrics::Metrics::new())
        .unwrap();

    // Edited in place, where the link points.
    let original = std::fs::read_to_string(&target).unwrap();
    append_lockdown(&target);
    assert!(
        eventually(&policies, &decision(false, &["lockdown"])).await,
        "an in-place edit of the target is seen"
    );

    // Replaced by a rename, as editors save.
    let staging = shared.join(".guardrails.cedar.swp");
    std::fs::write(&staging, original).unwrap();
    std::fs::rename(&staging, &target).unwrap();
    assert!(
        eventually(&policies, &decision(true, &[DATA_PLATFORM])).await,
        "a replaced target is seen"
    );
    reloader.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_periodic_check_reloads_a_change_no_file_event_reports() {
    // A hard link edited through its other name: inotify reports the write to that name's
    // directory only, so the policy directory's watcher never hears of it. (Not asserted here:
    // another test's SIGHUP reloads every reloader in this process.)
    let dir = tempfile::tempdir().unwrap();
    let policy_dir = dir.path().join("policies");
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&policy_dir).unwrap();
    std::fs::create_dir(&elsewhere).unwrap();
    copy_examples(&policy_dir);
    let other_name = elsewhere.join("guardrails.cedar");
    std::fs::hard_link(policy_dir.join("guardrails.cedar"), &other_name).unwrap();

    let polling = Policies::load(
        PolicyConfig {
            poll_interval_secs: 1,
            ..PolicyConfig::new(&policy_dir)
        },
        crate::operations::policy_probes(),
    )
    .unwrap();
    let reloader = polling
        .spawn_reloader(crate::metrics::Metrics::new())
        .unwrap();

    append_lockdown(&other_name);
    assert!(
        eventually(&polling, &decision(false, &["lockdown"])).await,
        "the periodic check saw the change"
    );
    reloader.abort();
}

// --- Property: the layer forwards only what policy allows, and decides as the rules say. ---

const ORG: [&str; 3] = ["111122223333", "444455556666", "777788889999"];

/// The example rules restated in Rust, independently of Cedar.
fn oracle(p: &Principal, r: &AssociateRequest) -> bool {
    let has = |g: &str| p.groups.iter().any(|x| x == g);
    let share = &r.data_share;
    let (consumer_account, partition, is_namespace) = match &r.consumer {
        ConsumerTarget::Namespace(n) => (n.account.to_string(), n.partition, true),
        ConsumerTarget::Region(region) => (
            "444455556666".to_owned(),
            Partition::of_region(region),
            false,
        ),
        ConsumerTarget::EntireAccount => ("444455556666".to_owned(), share.partition, false),
    };
    let in_org = ORG.contains(&share.account.as_str()) && ORG.contains(&consumer_account.as_str());
    let permitted = in_org && (has("data-platform") || (has("analytics") && is_namespace));
    let forbidden = (r.allow_writes == Some(true) && !has("data-writers"))
        // Writes by data-writers need one approval; the call under test has none.
        || (r.allow_writes == Some(true) && has("data-writers"))
        || partition != share.partition
        || share.namespace.as_str() == "d1e2f3a4-b5c6-4d7e-8f90-a1b2c3d4e5f6";
    permitted && !forbidden
}

fn arb_principal() -> impl Strategy<Value = Principal> {
    let ids = prop::sample::select(vec![
        REPORTING,
        LOADER,
        NOTEBOOK,
        FRONTEND,
        STRANGER,
        "",
        "Service::\"x\"",
    ]);
    let groups = prop::sample::subsequence(
        vec!["data-platform", "analytics", "data-writers", "other", ""],
        0..=5,
    );
    (ids, groups).prop_map(|(id, groups)| Principal {
        id: id.to_owned(),
        groups: groups.into_iter().map(str::to_owned).collect(),
    })
}

fn arb_request() -> impl Strategy<Value = AssociateRequest> {
    let shares = prop::sample::select(vec![
        SALES,
        FINANCE,
        LEGAL_HOLD,
        FOREIGN_SHARE,
        "arn:aws-cn:redshift:cn-north-1:111122223333:datashare:9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f/cn_share",
        "arn:aws:redshift:eu-west-1:777788889999:datashare:9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f/eu_share",
    ]);
    let consumers = prop::sample::select(vec![
        "entire",
        "region:us-east-1",
        "region:cn-north-1",
        "region:us-gov-west-1",
        PROVISIONED,
        SERVERLESS,
        FOREIGN_NAMESPACE,
        CHINA_NAMESPACE,
        "arn:aws:redshift:us-west-2:777788889999:namespace:5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9",
    ]);
    let writes = prop::option::of(any::<bool>());
    (shares, consumers, writes, any::<bool>()).prop_map(
        |(share, consumer, allow_writes, validate_only)| {
            let consumer = match consumer {
                "entire" => ConsumerTarget::EntireAccount,
                c if c.starts_with("region:") => region(&c["region:".len()..]),
                c => ns(c),
            };
            AssociateRequest {
                validate_only,
                ..request(share, consumer, allow_writes)
            }
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_layer_never_forwards_without_an_allow(p in arb_principal(), r in arb_request()) {
        static POLICIES: std::sync::LazyLock<Policies> = std::sync::LazyLock::new(examples);
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let policies = POLICIES.clone();
        let inner = Counting::<Stage>::default();
        let mut svc = MiddlewareLayer::new(Authorize::new(policies.clone())).layer(inner.clone());
        let expected = oracle(&p, &r);
        let call = layer_call(p.clone(), r.clone());
        let notes = call.notes.clone();
        let result = runtime.block_on(svc.call(call));
        let recorded = notes.snapshot().decision.expect("decision recorded");
        let forwarded = inner.count() == 1;
        prop_assert_eq!(recorded.allowed, expected);
        prop_assert!(!forwarded || (recorded.allowed && !r.validate_only));
        match result {
            Ok(AssociateReply::Validated(d)) => prop_assert!(d.allowed && r.validate_only && !forwarded),
            Ok(AssociateReply::Associated(_)) => prop_assert!(recorded.allowed && forwarded),
            Err(GatewayError::PolicyDenied { determining_policies }) => {
                prop_assert!(!recorded.allowed && !forwarded);
                prop_assert_eq!(determining_policies, recorded.determining_policies);
            }
            Err(GatewayError::ApprovalRequired { required_approvals, .. }) => {
                prop_assert!(!recorded.allowed && !forwarded);
                prop_assert_eq!(required_approvals, 1);
                prop_assert_eq!(r.allow_writes, Some(true));
            }
            Err(other) => prop_assert!(false, "unexpected error {other:?}"),
        }
    }
}

const PINNED: &str = r#"
@id("reporting-finance")
permit (principal == Service::"spiffe://example.internal/ns/data/sa/reporting", action, resource is DataShare)
when { resource.name == "finance_share" && context.consumer_kind == "account" };
@id("notebook-no-serverless")
forbid (principal == Service::"spiffe://example.internal/ns/analytics/sa/notebook", action == Action::"AssociateConsumer", resource)
when { context.consumer_kind == "serverless_namespace" };
@id("frontend-sales")
permit (principal == Service::"spiffe://example.internal/ns/web/sa/frontend", action, resource == DataShare::"arn:aws:redshift:us-east-1:111122223333:datashare:9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f/sales_share");
@id("in-stranger")
permit (principal in Service::"spiffe://elsewhere.example/ns/x/sa/y", action, resource);
"#;

fn pinned_policies() -> Policies {
    let dir = tempfile::tempdir().unwrap();
    copy_examples(dir.path());
    std::fs::write(dir.path().join("pinned.cedar"), PINNED).unwrap();
    Policies::load(
        PolicyConfig::new(dir.path()),
        crate::operations::policy_probes(),
    )
    .unwrap()
}

#[test]
fn pinned_policies_apply_to_their_principal_only() {
    let policies = pinned_policies();
    assert_eq!(policies.len(), 16);
    let finance_entire = request(FINANCE, ConsumerTarget::EntireAccount, None);
    assert_eq!(
        policies.evaluate::<AssociateConsumer>(&principal(REPORTING), &finance_entire),
        decision(true, &[DATA_PLATFORM, "reporting-finance"])
    );
    assert_eq!(
        policies.evaluate::<AssociateConsumer>(
            &principal(NOTEBOOK),
            &request(SALES, ns(SERVERLESS), None)
        ),
        decision(false, &["notebook-no-serverless"])
    );
    assert_eq!(
        policies.evaluate::<AssociateConsumer>(
            &principal(FRONTEND),
            &request(SALES, ns(FOREIGN_NAMESPACE), None)
        ),
        decision(true, &["frontend-sales"])
    );
    assert_eq!(
        policies.evaluate::<AssociateConsumer>(
            &principal(FRONTEND),
            &request(FINANCE, ns(PROVISIONED), None)
        ),
        decision(false, &[])
    );
    assert_eq!(
        policies.evaluate::<AssociateConsumer>(
            &principal(STRANGER),
            &request(FINANCE, ns(PROVISIONED), None)
        ),
        decision(true, &["in-stranger"])
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn slicing_and_trusted_building_never_change_a_decision(p in arb_principal(), r in arb_request()) {
        static POLICIES: std::sync::LazyLock<Policies> = std::sync::LazyLock::new(pinned_policies);
        let snapshot = POLICIES.shared.current.load();
        let input = AssociateConsumer::policy_input(&r, &crate::call::ApprovalFacts::default());
        prop_assert_eq!(snapshot.evaluate(&p, &input), snapshot.evaluate_unsliced(&p, &input));
        // Evaluation skips the schema checks; every request it builds passes them.
        prop_assert!(snapshot.build(&p, &input, engine::Checks::AgainstSchema).is_ok());
    }
}

#[test]
fn action_groups_in_a_custom_schema_are_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("schema.cedarschema");
    let grouped = DEFAULT_SCHEMA.replace(
        "action AssociateConsumer appliesTo",
        "action Everything;\naction ManageConsumers in [Everything];\naction AssociateConsumer in [ManageConsumers] appliesTo",
    );
    assert_ne!(grouped, DEFAULT_SCHEMA);
    std::fs::write(&schema, grouped).unwrap();
    let policies_dir = dir.path().join("policies");
    std::fs::create_dir(&policies_dir).unwrap();
    std::fs::write(
        policies_dir.join("managers.cedar"),
        "@id(\"managers\")\npermit (principal, action in Action::\"ManageConsumers\", resource)\nwhen { principal.groups.contains(\"managers\") };\n\
         @id(\"auditors\")\npermit (principal, action in [Action::\"Everything\"], resource)\nwhen { principal.groups.contains(\"auditors\") };\n",
    )
    .unwrap();
    let config = PolicyConfig {
        schema: Some(schema),
        watch: false,
        ..PolicyConfig::new(policies_dir)
    };
    let policies = Policies::load(config, crate::operations::policy_probes()).unwrap();
    let manager = Principal {
        id: "m".into(),
        groups: vec!["managers".into()],
    };
    assert_eq!(
        policies.evaluate::<AssociateConsumer>(&manager, &request(SALES, ns(PROVISIONED), None)),
        decision(true, &["managers"])
    );
    // A group of a group: the action's entity carries every group above it.
    let auditor = Principal {
        id: "a".into(),
        groups: vec!["auditors".into()],
    };
    assert_eq!(
        policies.evaluate::<AssociateConsumer>(&auditor, &request(SALES, ns(PROVISIONED), None)),
        decision(true, &["auditors"])
    );
    assert_eq!(
        policies.evaluate::<AssociateConsumer>(
            &principal(STRANGER),
            &request(SALES, ns(PROVISIONED), None)
        ),
        decision(false, &[])
    );
}

/// Every action of the schema, against every kind of resource, for callers in and out of the
/// examples' groups: the slice for the action gives what the whole set gives (errors included,
/// when the resource is not the action's own).
#[test]
fn slicing_by_action_never_changes_a_decision() {
    let policies = examples();
    let snapshot = policies.shared.current.load();
    let share = DataShareArn::parse(SALES).unwrap();
    let approval = |requester: &str| {
        PolicyResource::Approval(crate::call::ApprovalResource {
            id: "ap-1".into(),
            requester: requester.into(),
            request: crate::ops::semantic_request(
                "AssociateConsumer",
                &DataShareArn::parse(SALES).unwrap(),
                &crate::ops::ConsumerTarget::EntireAccount,
                &AccountId::parse("444455556666").unwrap(),
                true,
            ),
            required_approvals: 1,
            state: crate::call::ApprovalState::Pending,
        })
    };
    let resources = [
        PolicyResource::DataShare(share),
        PolicyResource::ConsumerAccount(AccountId::parse("444455556666").unwrap()),
        approval(REPORTING),
        approval(LOADER),
        PolicyResource::ApprovalList,
    ];
    let context = vec![
        ("allow_writes", ContextValue::Bool(true)),
        ("approvals", ContextValue::Long(0)),
        ("consumer_partition", ContextValue::String("aws".into())),
        (
            "consumer_account",
            ContextValue::String("444455556666".into()),
        ),
        ("consumer_kind", ContextValue::String("account".into())),
    ];
    let callers = [
        principal(REPORTING),
        principal(LOADER),
        principal(NOTEBOOK),
        Principal {
            id: "approver".into(),
            groups: vec!["data-approvers".into()],
        },
        principal(STRANGER),
    ];
    let mut compared = 0;
    for action in snapshot.action_names() {
        for resource in &resources {
            for caller in &callers {
                let input = PolicyInput {
                    action,
                    resource: resource.clone(),
                    context: context.clone(),
                };
                assert_eq!(
                    snapshot.evaluate(caller, &input),
                    snapshot.evaluate_unsliced(caller, &input),
                    "{action} on {resource:?} by {}",
                    caller.id
                );
                compared += 1;
            }
        }
    }
    assert!(compared >= 6 * 5 * 5, "only {compared} cases");
}

#[test]
fn a_cached_caller_entity_is_not_reused_for_the_same_id_with_other_groups() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("managers.cedar"),
        "@id(\"managers\")\npermit (principal, action == Action::\"AssociateConsumer\", resource)\nwhen { principal.groups.contains(\"managers\") };\n",
    )
    .unwrap();
    let policies = Policies::load(
        PolicyConfig {
            watch: false,
            ..PolicyConfig::new(dir.path())
        },
        crate::operations::policy_probes(),
    )
    .unwrap();
    let with = |groups: &[&str]| Principal {
        id: "m".into(),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
    };
    let call = request(SALES, ns(PROVISIONED), None);
    for _ in 0..2 {
        assert_eq!(
            policies.evaluate::<AssociateConsumer>(&with(&["managers"]), &call),
            decision(true, &["managers"])
        );
        assert_eq!(
            policies.evaluate::<AssociateConsumer>(&with(&[]), &call),
            decision(false, &[])
        );
    }
}

#[test]
fn every_example_rule_for_disassociate_and_list() {
    let policies = examples();
    let disassociate = |share: &str, consumer: ConsumerTarget| DisassociateRequest {
        data_share: DataShareArn::parse(share).unwrap(),
        account: account_of(&consumer),
        consumer,
        validate_only: false,
    };
    let entire = || ConsumerTarget::EntireAccount;
    #[rustfmt::skip]
    let cases: Vec<(&str, &str, DisassociateRequest, Decision)> = vec![
        ("data-platform undoes an entire-account association", REPORTING, disassociate(SALES, entire()), decision(true, &[DATA_PLATFORM])),
        ("data-platform undoes a region association", REPORTING, disassociate(SALES, region("us-east-1")), decision(true, &[DATA_PLATFORM])),
        ("analytics undoes a namespace association", NOTEBOOK, disassociate(SALES, ns(SERVERLESS)), decision(true, &[ANALYTICS])),
        ("analytics may not undo an entire-account association", NOTEBOOK, disassociate(SALES, entire()), decision(false, &[])),
        ("frontend may not disassociate", FRONTEND, disassociate(SALES, ns(PROVISIONED)), decision(false, &[])),
        ("not a foreign producer's datashare", REPORTING, disassociate(FOREIGN_SHARE, entire()), decision(false, &[])),
        ("never across partitions", REPORTING, disassociate(SALES, ns(CHINA_NAMESPACE)), decision(false, &[PARTITION])),
        ("the legal hold forbids undoing too", REPORTING, disassociate(LEGAL_HOLD, entire()), decision(false, &[LEGAL])),
    ];
    for (what, who, request, expected) in cases {
        assert_eq!(
            policies.evaluate::<DisassociateConsumer>(&principal(who), &request),
            expected,
            "{what}"
        );
    }

    let env = crate::call::ValidationEnv {
        default_account: Some(account("444455556666")),
        partition: crate::arn::Partition::Aws,
    };
    let list = |params: ListParams| ListConsumerDataShares::validate(&params, &env).unwrap();
    let filtered = list(ListParams {
        consumer_arn: PROVISIONED.into(),
        status: crate::proto::datasharing::v1::DataShareStatus::Active as i32,
        ..Default::default()
    });
    #[rustfmt::skip]
    let cases = [
        ("data-platform lists", REPORTING, decision(true, &["data-platform-list-in-org"])),
        ("analytics lists", NOTEBOOK, decision(true, &["analytics-list-in-org"])),
        ("frontend may not list", FRONTEND, decision(false, &[])),
        ("a stranger may not list", STRANGER, decision(false, &[])),
    ];
    for (what, who, expected) in cases {
        for request in [list(ListParams::default()), filtered.clone()] {
            assert_eq!(
                policies.evaluate::<ListConsumerDataShares>(&principal(who), &request),
                expected,
                "{what}"
            );
        }
    }
}

#[test]
fn a_pinned_set_keeps_answering_as_it_did_across_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    copy_examples(dir.path());
    let policies = Policies::load(
        PolicyConfig::new(dir.path()),
        crate::operations::policy_probes(),
    )
    .unwrap();
    let reporting = principal(REPORTING);
    let req = request(SALES, ns(PROVISIONED), None);
    let none = ApprovalFacts::default();
    let pinned = policies.pinned();
    std::fs::write(dir.path().join("lockdown.cedar"), LOCKDOWN).unwrap();
    policies.reload().unwrap();
    // The serving set changed; the pinned one did not.
    assert_eq!(
        policies.evaluate::<AssociateConsumer>(&reporting, &req),
        decision(false, &["lockdown"])
    );
    assert_eq!(
        pinned.evaluate_with::<AssociateConsumer>(&reporting, &req, &none),
        decision(true, &[DATA_PLATFORM])
    );
    assert_eq!(
        policies
            .pinned()
            .evaluate_with::<AssociateConsumer>(&reporting, &req, &none),
        decision(false, &["lockdown"])
    );
}
