//! No request reaches Redshift without an Allow: random callers and random requests through one
//! gateway and one emulator, each checked against the example policies evaluated in-process.

use crate::support;

use std::collections::BTreeMap;

use datashare_gateway::arn::AccountId;
use datashare_gateway::call::{ApprovalFacts, Operation, Principal, ValidationEnv};
use datashare_gateway::identity::PrincipalDirectory;
use datashare_gateway::ops::AssociateConsumer;
use datashare_gateway::ops::associate::AssociateParams;
use datashare_gateway::policy::{MAX_REQUIRED_APPROVALS, Policies, PolicyConfig};
use datashare_gateway::proto::datasharing::v1::AssociateConsumerRequest;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use support::emulator::{Emulator, LEGAL_HOLD_SHARE, OTHER_NAMESPACE};
use support::gateway::{
    self, FINANCE_SHARE, FRONTEND, Gateway, GatewayOptions, LOADER, NOTEBOOK, PROVISIONED_NS,
    REPORTING, SALES_SHARE, SERVERLESS_NS,
};
use tonic::Code;
use tonic_types::StatusExt;

const OP: &str = "AssociateDataShareConsumer";

/// The one consumer account the gateway under test serves (`upstream.consumer_account`).
const SERVED_ACCOUNT: &str = "444455556666";

const CALLERS: &[&str] = &[
    REPORTING,
    LOADER,
    NOTEBOOK,
    FRONTEND,
    "spiffe://example.internal/ns/other/sa/stranger",
    "reporting.data.svc",
];

const SHARES: &[&str] = &[
    SALES_SHARE,
    FINANCE_SHARE,
    LEGAL_HOLD_SHARE,
    // Produced outside the org.
    "arn:aws:redshift:us-east-1:999988887777:datashare:9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f/outside_share",
    // Other partitions.
    "arn:aws-cn:redshift:cn-north-1:111122223333:datashare:9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f/sales_share",
    "arn:aws-us-gov:redshift:us-gov-west-1:111122223333:datashare:d1e2f3a4-b5c6-4d7e-8f90-a1b2c3d4e5f6/legal_hold_share",
    // Invalid.
    "",
    "not-an-arn",
    "arn:aws-cn:redshift:us-east-1:111122223333:datashare:9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f/sales_share",
    "arn:aws:redshift:us-east-1:111122223333:namespace:9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f",
];

const NAMESPACES: &[&str] = &[
    PROVISIONED_NS,
    SERVERLESS_NS,
    OTHER_NAMESPACE,
    // Outside the org.
    "arn:aws:redshift:us-east-1:999988887777:namespace:5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9",
    "arn:aws-us-gov:redshift:us-gov-west-1:444455556666:namespace:5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9",
    "arn:aws-cn:redshift:cn-north-1:777788889999:namespace:7a7b7c7d-7e7f-4a0b-8c1d-2e3f4a5b6c7d",
    // Invalid.
    "arn:aws:redshift:us-east-1:444455556666:cluster:x",
    "garbage",
];

const REGIONS: &[&str] = &[
    "us-east-1",
    "us-west-2",
    "eu-west-1",
    "cn-north-1",
    "us-gov-west-1",
    "moon-base-1a",
];

/// One random call: who calls (None: no `x-caller-id`) and what it asks.
fn calls() -> impl Strategy<Value = (Option<&'static str>, AssociateParams)> {
    // Mostly exactly one consumer target (a valid combination), sometimes any combination.
    let consumer = prop_oneof![
        2 => Just((true, None, None)),
        3 => select(NAMESPACES).prop_map(|ns| (false, Some(ns), None)),
        2 => select(REGIONS).prop_map(|r| (false, None, Some(r))),
        1 => (
            any::<bool>(),
            prop::option::of(select(NAMESPACES)),
            prop::option::of(select(REGIONS)),
        ),
    ];
    // Weighted towards callers and datashares that some policy permits, so that allowed calls
    // are common enough to be checked.
    let caller = prop_oneof![
        4 => select(&CALLERS[..3]),
        1 => select(&CALLERS[3..]),
    ];
    let share = prop_oneof![
        4 => Just(SALES_SHARE),
        1 => Just(FINANCE_SHARE),
        2 => select(&SHARES[2..]),
    ];
    (
        prop::option::weighted(0.9, caller),
        share,
        consumer,
        prop::option::of(any::<bool>()),
        prop::bool::weighted(0.5),
    )
        .prop_map(
            |(caller, share, (entire, namespace, region), allow_writes, validate_only)| {
                (
                    caller,
                    AssociateParams {
                        data_share_arn: share.into(),
                        associate_entire_account: entire,
                        consumer_arn: namespace.unwrap_or_default().into(),
                        consumer_region: region.unwrap_or_default().into(),
                        allow_writes,
                        validate_only,
                        consumer_account: String::new(),
                    },
                )
            },
        )
}

fn dev_principals() -> PrincipalDirectory {
    #[derive(serde::Deserialize)]
    struct File {
        principals: PrincipalDirectory,
    }
    let text =
        std::fs::read_to_string(gateway::repo_root().join("examples/policies/principals.toml"))
            .expect("principals.toml");
    toml::from_str::<File>(&text)
        .expect("principals.toml parses")
        .principals
}

/// What the gateway must answer, from the policies evaluated in-process.
#[derive(Debug, PartialEq)]
enum Expected {
    Unauthenticated,
    Invalid,
    Denied(Vec<String>),
    /// Denied as it stands, permitted with approvals it does not have: nothing forwarded.
    ApprovalRequired,
    Validated(Vec<String>),
    /// Allowed, but into an account the gateway does not serve: refused before Redshift.
    NotServed,
    Forwarded,
}

fn expected(
    policies: &Policies,
    principals: &PrincipalDirectory,
    caller: Option<&str>,
    params: &AssociateParams,
) -> Expected {
    let Some(id) = caller else {
        return Expected::Unauthenticated;
    };
    let env = ValidationEnv {
        default_account: Some(AccountId::parse(SERVED_ACCOUNT).expect("account")),
        partition: datashare_gateway::arn::Partition::Aws,
    };
    let Ok(request) = AssociateConsumer::validate(params, &env) else {
        return Expected::Invalid;
    };
    let principal = Principal {
        id: id.to_owned(),
        groups: principals
            .get(id)
            .map(|e| e.groups.clone())
            .unwrap_or_default(),
    };
    let decision = policies.evaluate::<AssociateConsumer>(&principal, &request);
    let with = |n| {
        policies.evaluate_with::<AssociateConsumer>(
            &principal,
            &request,
            &ApprovalFacts::with_approvals(n),
        )
    };
    match (decision.allowed, params.validate_only) {
        (false, _) if (1..=MAX_REQUIRED_APPROVALS).any(|n| with(n).allowed) => {
            Expected::ApprovalRequired
        }
        // Named: the forbids no number of approvals lifts.
        (false, _) => Expected::Denied(sorted(with(MAX_REQUIRED_APPROVALS).determining_policies)),
        (true, true) => Expected::Validated(sorted(decision.determining_policies)),
        // The gateway under test serves one account; policy may allow others.
        (true, false) if request.account.as_str() != SERVED_ACCOUNT => Expected::NotServed,
        (true, false) => Expected::Forwarded,
    }
}

fn sorted(ids: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut ids: Vec<String> = ids.into_iter().filter(|s| !s.is_empty()).collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// proptest's TestError carries the failing case by value; the size is proptest's, once per run.
#[allow(clippy::result_large_err)]
async fn no_request_reaches_redshift_without_an_allow() {
    let emulator = Emulator::start();
    let gw = Gateway::start(GatewayOptions::new(emulator.endpoint_url())).await;
    let client = gw.client().await;
    let policies = Policies::load(
        PolicyConfig::new(gateway::repo_root().join("examples/policies")),
        datashare_gateway::operations::policy_probes(),
    )
    .expect("the examples load");
    let principals = dev_principals();
    let runtime = tokio::runtime::Handle::current();
    let mut seen: BTreeMap<&'static str, usize> = BTreeMap::new();
    let seen = std::sync::Mutex::new(&mut seen);

    // A fixed seed: CI explores the same 128 generated cases every run, so the coverage check
    // below can never flake; change the seed locally to explore others.
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases: 128,
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    // One emulator and one gateway for the whole run: proptest drives the cases synchronously,
    // each blocking on its gRPC call.
    let result = tokio::task::block_in_place(|| {
        runner.run(&calls(), |(caller, params)| {
            let want = expected(&policies, &principals, caller, &params);
            let mut client = client.clone();
            let before = emulator.counter(OP, "received");
            let message = AssociateConsumerRequest {
                data_share_arn: params.data_share_arn.clone(),
                associate_entire_account: params.associate_entire_account,
                consumer_arn: params.consumer_arn.clone(),
                consumer_region: params.consumer_region.clone(),
                allow_writes: params.allow_writes,
                validate_only: params.validate_only,
                consumer_account: String::new(),
            };
            let request = match caller {
                Some(id) => gateway::as_caller(id, message),
                None => tonic::Request::new(message),
            };
            let result = runtime.block_on(client.associate_consumer(request));
            let reached = emulator.counter(OP, "received") > before;
            prop_assert_eq!(
                reached,
                want == Expected::Forwarded,
                "Redshift reached iff valid, allowed and not validate_only; expected {:?}, got {:?}",
                want,
                result
            );
            let kind = match &want {
                Expected::Unauthenticated => {
                    let status = result.err().ok_or_else(|| TestCaseError::fail("no caller but OK"))?;
                    prop_assert_eq!(status.code(), Code::Unauthenticated);
                    "unauthenticated"
                }
                Expected::Invalid => {
                    let status = result.err().ok_or_else(|| TestCaseError::fail("invalid but OK"))?;
                    prop_assert_eq!(status.code(), Code::InvalidArgument);
                    "invalid"
                }
                Expected::Denied(determining) => {
                    let status = result.err().ok_or_else(|| TestCaseError::fail("denied but OK"))?;
                    prop_assert_eq!(status.code(), Code::PermissionDenied, "{:?}", status);
                    let info = status.get_error_details().error_info().cloned();
                    let info = info.ok_or_else(|| TestCaseError::fail("no ErrorInfo"))?;
                    prop_assert_eq!(info.reason.as_str(), "POLICY_DENIED");
                    let got = info
                        .metadata
                        .get("determining_policies")
                        .map(|d| sorted(d.split(',').map(str::to_owned)))
                        .unwrap_or_default();
                    prop_assert_eq!(&got, determining);
                    "denied"
                }
                Expected::ApprovalRequired => {
                    let status = result.err().ok_or_else(|| TestCaseError::fail("needs approval but OK"))?;
                    prop_assert_eq!(status.code(), Code::FailedPrecondition, "{:?}", status);
                    let reason = status.get_error_details().error_info().map(|i| i.reason.clone());
                    prop_assert_eq!(reason.as_deref(), Some("APPROVAL_REQUIRED"));
                    "approval required"
                }
                Expected::Validated(determining) => {
                    let reply = result
                        .map_err(|s| TestCaseError::fail(format!("validate_only allowed, got {s:?}")))?
                        .into_inner();
                    let got = reply
                        .validation
                        .map(|v| sorted(v.determining_policies))
                        .unwrap_or_default();
                    prop_assert_eq!(&got, determining);
                    "validated"
                }
                Expected::NotServed => {
                    let status = result.err().ok_or_else(|| TestCaseError::fail("unserved but OK"))?;
                    prop_assert_eq!(status.code(), Code::FailedPrecondition, "{:?}", status);
                    let reason = status.get_error_details().error_info().map(|i| i.reason.clone());
                    prop_assert_eq!(reason.as_deref(), Some("ACCOUNT_NOT_CONFIGURED"));
                    "not served"
                }
                Expected::Forwarded => {
                    // Redshift may refuse (a grant missing, another account's namespace); the
                    // policy did not.
                    if let Err(status) = &result {
                        let reason = status
                            .get_error_details()
                            .error_info()
                            .map(|i| i.reason.clone());
                        prop_assert_ne!(reason.as_deref(), Some("POLICY_DENIED"));
                    }
                    "forwarded"
                }
            };
            *seen.lock().expect("tally").entry(kind).or_default() += 1;
            Ok(())
        })
    });
    if let Err(err) = result {
        panic!("{err}");
    }
    // The generator reaches every outcome, so the property is not vacuous.
    let seen = seen.into_inner().expect("tally");
    for kind in [
        "unauthenticated",
        "invalid",
        "denied",
        "validated",
        "forwarded",
    ] {
        assert!(
            seen.get(kind).is_some_and(|n| *n > 0),
            "no {kind} case in {seen:?}"
        );
    }
}
