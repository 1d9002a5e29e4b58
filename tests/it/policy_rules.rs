//! Every rule of `examples/policies` through the full gRPC path: each allowed call reaches
//! Redshift (the emulator) and each denied one does not, answering `PERMISSION_DENIED` with
//! ErrorInfo reason `POLICY_DENIED` and the determining policy ids; `validate_only` returns the
//! same decision without calling Redshift.

use crate::support;

use datashare_gateway::policy::{Policies, PolicyConfig};
use datashare_gateway::proto::datasharing::v1::data_sharing_client::DataSharingClient;
use datashare_gateway::proto::datasharing::v1::{
    AssociateConsumerRequest, DisassociateConsumerRequest, ListConsumerDataSharesRequest,
};
use support::emulator::{Emulator, LEGAL_HOLD_SHARE, OTHER_NAMESPACE};
use support::gateway::{
    self, FRONTEND, Gateway, GatewayOptions, LOADER, NOTEBOOK, PROVISIONED_NS, REPORTING,
    SALES_SHARE, SERVERLESS_NS,
};
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;

// The `@id`s of examples/policies.
const DATA_PLATFORM: &str = "data-platform-associate-in-org";
const ANALYTICS: &str = "analytics-associate-namespaces-in-org";
const WRITES: &str = "writes-require-data-writers";
const CROSS_PARTITION: &str = "no-cross-partition";
const LEGAL_HOLD: &str = "legal-hold-d1e2f3a4";
const DATA_PLATFORM_LIST: &str = "data-platform-list-in-org";
const ANALYTICS_LIST: &str = "analytics-list-in-org";

/// A namespace of an account outside the org.
const NON_ORG_NS: &str =
    "arn:aws:redshift:us-east-1:999988887777:namespace:5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9";
/// A datashare produced outside the org.
const NON_ORG_SHARE: &str = "arn:aws:redshift:us-east-1:999988887777:datashare:9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f/outside_share";
/// The consumer account's namespace, but in GovCloud: another partition than the datashares'.
const GOVCLOUD_NS: &str = "arn:aws-us-gov:redshift:us-gov-west-1:444455556666:namespace:5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9";
/// A datashare in the China partition.
const CN_SHARE: &str = "arn:aws-cn:redshift:cn-north-1:111122223333:datashare:9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f/sales_share";

#[derive(Clone, Copy, Debug)]
enum Consumer {
    EntireAccount,
    Namespace(&'static str),
    Region(&'static str),
}

/// The gRPC method a case calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    Associate,
    Disassociate,
    /// `ListConsumerDataShares`, filtered by the case's namespace if it names one.
    List,
}

impl Method {
    /// The Redshift operation it forwards to, as the emulator counts it.
    fn aws_operation(self) -> &'static str {
        match self {
            Method::Associate => "AssociateDataShareConsumer",
            Method::Disassociate => "DisassociateDataShareConsumer",
            Method::List => "DescribeDataSharesForConsumer",
        }
    }
}

/// One call and the decision the example policies must give it.
#[derive(Debug)]
struct Case {
    method: Method,
    principal: &'static str,
    share: &'static str,
    consumer: Consumer,
    allow_writes: Option<bool>,
    allowed: bool,
    determining: &'static [&'static str],
}

fn allow(principal: &'static str, share: &'static str, consumer: Consumer) -> Case {
    Case {
        method: Method::Associate,
        principal,
        share,
        consumer,
        allow_writes: None,
        allowed: true,
        determining: &[],
    }
}

fn deny(principal: &'static str, share: &'static str, consumer: Consumer) -> Case {
    Case {
        allowed: false,
        ..allow(principal, share, consumer)
    }
}

impl Case {
    /// Whether the datashare or the consumer is outside the commercial partition.
    fn outside_the_gateways_partition(&self) -> bool {
        let commercial = |arn: &str| arn.starts_with("arn:aws:");
        !commercial(self.share)
            || match self.consumer {
                Consumer::Namespace(arn) => !commercial(arn),
                Consumer::Region(region) => {
                    region.starts_with("cn-") || region.starts_with("us-gov-")
                }
                _ => false,
            }
    }

    fn by(mut self, determining: &'static [&'static str]) -> Case {
        self.determining = determining;
        self
    }

    fn writes(mut self, allow_writes: bool) -> Case {
        self.allow_writes = Some(allow_writes);
        self
    }

    fn disassociate(mut self) -> Case {
        self.method = Method::Disassociate;
        self
    }

    fn list(mut self) -> Case {
        self.method = Method::List;
        self
    }

    /// Sends the case's call; for validate_only, the determining policies of the answer.
    async fn send(
        &self,
        client: &mut DataSharingClient<Channel>,
        validate_only: bool,
    ) -> Result<Vec<String>, tonic::Status> {
        let determining =
            |validation: Option<datashare_gateway::proto::datasharing::v1::ValidationResult>| {
                validation
                    .map(|v| v.determining_policies)
                    .unwrap_or_default()
            };
        match self.method {
            Method::Associate => client
                .associate_consumer(gateway::as_caller(
                    self.principal,
                    self.message(validate_only),
                ))
                .await
                .map(|r| determining(r.into_inner().validation)),
            Method::Disassociate => client
                .disassociate_consumer(gateway::as_caller(
                    self.principal,
                    self.disassociate_message(validate_only),
                ))
                .await
                .map(|r| determining(r.into_inner().validation)),
            Method::List => client
                .list_consumer_data_shares(gateway::as_caller(
                    self.principal,
                    ListConsumerDataSharesRequest {
                        consumer_arn: match self.consumer {
                            Consumer::Namespace(arn) => arn.into(),
                            _ => String::new(),
                        },
                        ..Default::default()
                    },
                ))
                .await
                .map(|_| Vec::new()),
        }
    }

    fn disassociate_message(&self, validate_only: bool) -> DisassociateConsumerRequest {
        let mut m = DisassociateConsumerRequest {
            data_share_arn: self.share.into(),
            validate_only,
            ..Default::default()
        };
        match self.consumer {
            Consumer::EntireAccount => m.disassociate_entire_account = true,
            Consumer::Namespace(arn) => m.consumer_arn = arn.into(),
            Consumer::Region(region) => m.consumer_region = region.into(),
        }
        m
    }

    fn message(&self, validate_only: bool) -> AssociateConsumerRequest {
        let mut m = AssociateConsumerRequest {
            data_share_arn: self.share.into(),
            allow_writes: self.allow_writes,
            validate_only,
            ..Default::default()
        };
        match self.consumer {
            Consumer::EntireAccount => m.associate_entire_account = true,
            Consumer::Namespace(arn) => m.consumer_arn = arn.into(),
            Consumer::Region(region) => m.consumer_region = region.into(),
        }
        m
    }
}

fn sorted(ids: impl IntoIterator<Item = impl Into<String>>) -> Vec<String> {
    let mut ids: Vec<String> = ids
        .into_iter()
        .map(Into::into)
        .filter(|s| !s.is_empty())
        .collect();
    ids.sort();
    ids
}

/// Runs each case twice (validate_only, then for real) and checks the decision, the answer and
/// whether the emulator received the call.
async fn check(cases: &[Case]) {
    let emulator = Emulator::start();
    // As `dev` runs: both org consumer accounts served through their roles.
    let gw = Gateway::start(GatewayOptions::with_roles(emulator.endpoint_url())).await;
    let mut client = gw.client().await;
    for case in cases {
        if case.outside_the_gateways_partition() {
            check_refused_before_policy(&mut client, &emulator, case).await;
            continue;
        }
        check_validate_only(&mut client, &emulator, case).await;
        check_call(&mut client, &emulator, case).await;
        if case.allowed && case.method == Method::List {
            // A listing answers with data, not its decision: the audit record names it.
            // The newest record, written before the call was answered.
            let records = gateway::audit_records(&gw.audit_dir);
            let last = records.last().expect("a record");
            assert_eq!(last["method"], "ListConsumerDataShares");
            let recorded: Vec<String> = last["decision"]["determining_policies"]
                .as_array()
                .expect("determining policies")
                .iter()
                .map(|p| p.as_str().expect("id").to_owned())
                .collect();
            assert_eq!(
                sorted(recorded),
                sorted(case.determining.iter().copied()),
                "{case:?}"
            );
        }
    }
}

/// A case naming another partition than the gateway's (commercial, from its us-east-1): the
/// gateway refuses it as INVALID_ARGUMENT before policy (`no-cross-partition` stays as the
/// policy's own guard, covered by the policy unit tests), validate_only or not.
async fn check_refused_before_policy(
    client: &mut DataSharingClient<Channel>,
    emulator: &Emulator,
    case: &Case,
) {
    let op = case.method.aws_operation();
    let before = emulator.counter(op, "received");
    for validate_only in [true, false] {
        let status = case
            .send(client, validate_only)
            .await
            .expect_err("another partition");
        assert_eq!(status.code(), Code::InvalidArgument, "{case:?}: {status:?}");
        assert!(
            status.message().contains("is in partition aws-"),
            "{case:?}: {status:?}"
        );
    }
    assert_eq!(emulator.counter(op, "received"), before, "{case:?}");
}

async fn check_validate_only(
    client: &mut DataSharingClient<Channel>,
    emulator: &Emulator,
    case: &Case,
) {
    // A listing changes nothing, so it has no validate_only.
    if case.method == Method::List {
        return;
    }
    let op = case.method.aws_operation();
    let before = emulator.counter(op, "received");
    let result = case.send(client, true).await;
    if case.allowed {
        let determining = result.unwrap_or_else(|s| panic!("validate_only {case:?}: {s:?}"));
        assert_eq!(
            sorted(determining),
            sorted(case.determining.iter().copied()),
            "{case:?}"
        );
    } else {
        assert_policy_denied(result.map(|_| ()), case);
    }
    assert_eq!(
        emulator.counter(op, "received"),
        before,
        "validate_only never reaches Redshift: {case:?}"
    );
}

async fn check_call(client: &mut DataSharingClient<Channel>, emulator: &Emulator, case: &Case) {
    let op = case.method.aws_operation();
    let before = emulator.counter(op, "received");
    let result = case.send(client, false).await;
    let received = emulator.counter(op, "received") - before;
    if case.allowed {
        assert_eq!(received, 1, "an allowed call reaches Redshift: {case:?}");
        // Redshift may still refuse (another account's namespace), but not the policy.
        if let Err(status) = &result {
            assert_ne!(
                status
                    .get_error_details()
                    .error_info()
                    .map(|i| i.reason.clone()),
                Some("POLICY_DENIED".to_owned()),
                "{case:?}"
            );
        }
    } else {
        assert_eq!(
            received, 0,
            "a denied call never reaches Redshift: {case:?}"
        );
        assert_policy_denied(result.map(|_| ()), case);
    }
}

fn assert_policy_denied(result: Result<(), tonic::Status>, case: &Case) {
    let status = result.expect_err(&format!("denied: {case:?}"));
    assert_eq!(
        status.code(),
        Code::PermissionDenied,
        "{case:?}: {status:?}"
    );
    let info = status
        .get_error_details()
        .error_info()
        .cloned()
        .expect("ErrorInfo");
    assert_eq!(info.reason, "POLICY_DENIED", "{case:?}");
    assert_eq!(info.domain, "datashare-gateway");
    let determining = info
        .metadata
        .get("determining_policies")
        .unwrap_or_else(|| panic!("determining_policies in {info:?}"));
    assert_eq!(
        sorted(determining.split(',')),
        sorted(case.determining.iter().copied()),
        "{case:?}"
    );
}

#[test]
fn the_cases_cover_every_example_policy_id() {
    let policies = Policies::load(
        PolicyConfig::new(gateway::repo_root().join("examples/policies")),
        datashare_gateway::operations::policy_probes(),
    )
    .expect("the examples load");
    assert_eq!(
        sorted(policies.policy_ids()),
        sorted([
            DATA_PLATFORM,
            ANALYTICS,
            WRITES,
            CROSS_PARTITION,
            LEGAL_HOLD,
            DATA_PLATFORM_LIST,
            ANALYTICS_LIST,
            // The approval rules, each exercised end to end in tests/approvals.rs.
            "writes-need-one-approval",
            "data-approvers-review",
            "data-approvers-read-approvals",
            "requesters-read-own-approvals",
            "requesters-list-approvals",
        ])
    );
}

#[tokio::test]
async fn data_platform_may_associate_every_consumer_kind_in_the_org() {
    use Consumer::*;
    check(&[
        allow(REPORTING, SALES_SHARE, EntireAccount).by(&[DATA_PLATFORM]),
        allow(REPORTING, SALES_SHARE, Region("us-west-2")).by(&[DATA_PLATFORM]),
        allow(REPORTING, SALES_SHARE, Namespace(PROVISIONED_NS)).by(&[DATA_PLATFORM]),
        allow(REPORTING, SALES_SHARE, Namespace(SERVERLESS_NS)).by(&[DATA_PLATFORM]),
        allow(REPORTING, SALES_SHARE, Namespace(OTHER_NAMESPACE)).by(&[DATA_PLATFORM]),
        allow(LOADER, SALES_SHARE, EntireAccount).by(&[DATA_PLATFORM]),
        allow(REPORTING, SALES_SHARE, EntireAccount)
            .writes(false)
            .by(&[DATA_PLATFORM]),
    ])
    .await;
}

#[tokio::test]
async fn analytics_may_associate_only_namespaces_in_the_org() {
    use Consumer::*;
    check(&[
        allow(NOTEBOOK, SALES_SHARE, Namespace(PROVISIONED_NS)).by(&[ANALYTICS]),
        allow(NOTEBOOK, SALES_SHARE, Namespace(SERVERLESS_NS)).by(&[ANALYTICS]),
        allow(NOTEBOOK, SALES_SHARE, Namespace(OTHER_NAMESPACE)).by(&[ANALYTICS]),
        deny(NOTEBOOK, SALES_SHARE, EntireAccount),
        deny(NOTEBOOK, SALES_SHARE, Region("us-west-2")),
        deny(NOTEBOOK, SALES_SHARE, Region("us-east-1")),
    ])
    .await;
}

#[tokio::test]
async fn writes_need_the_data_writers_group() {
    use Consumer::*;
    check(&[
        deny(REPORTING, SALES_SHARE, Namespace(PROVISIONED_NS))
            .writes(true)
            .by(&[WRITES]),
        deny(REPORTING, SALES_SHARE, EntireAccount)
            .writes(true)
            .by(&[WRITES]),
        deny(NOTEBOOK, SALES_SHARE, Namespace(SERVERLESS_NS))
            .writes(true)
            .by(&[WRITES]),
        // Writes by a data-writer need a second person's approval: tests/approvals.rs.
        allow(LOADER, SALES_SHARE, Namespace(PROVISIONED_NS))
            .writes(false)
            .by(&[DATA_PLATFORM]),
    ])
    .await;
}

#[tokio::test]
async fn no_association_crosses_partitions() {
    use Consumer::*;
    check(&[
        deny(REPORTING, SALES_SHARE, Region("cn-north-1")).by(&[CROSS_PARTITION]),
        deny(LOADER, SALES_SHARE, Region("us-gov-west-1")).by(&[CROSS_PARTITION]),
        deny(REPORTING, SALES_SHARE, Namespace(GOVCLOUD_NS)).by(&[CROSS_PARTITION]),
        deny(NOTEBOOK, SALES_SHARE, Namespace(GOVCLOUD_NS)).by(&[CROSS_PARTITION]),
        deny(REPORTING, CN_SHARE, Namespace(PROVISIONED_NS)).by(&[CROSS_PARTITION]),
        // Every forbid that matches is named.
        deny(REPORTING, SALES_SHARE, Region("cn-north-1"))
            .writes(true)
            .by(&[CROSS_PARTITION, WRITES]),
    ])
    .await;
}

#[tokio::test]
async fn nothing_is_allowed_on_the_legal_hold_namespace_even_for_loader() {
    use Consumer::*;
    check(&[
        deny(LOADER, LEGAL_HOLD_SHARE, EntireAccount).by(&[LEGAL_HOLD]),
        deny(LOADER, LEGAL_HOLD_SHARE, Namespace(PROVISIONED_NS))
            .writes(true)
            .by(&[LEGAL_HOLD]),
        deny(REPORTING, LEGAL_HOLD_SHARE, Region("us-west-2")).by(&[LEGAL_HOLD]),
        deny(NOTEBOOK, LEGAL_HOLD_SHARE, Namespace(SERVERLESS_NS)).by(&[LEGAL_HOLD]),
        deny(FRONTEND, LEGAL_HOLD_SHARE, Namespace(PROVISIONED_NS)).by(&[LEGAL_HOLD]),
        deny(NOTEBOOK, LEGAL_HOLD_SHARE, Region("cn-north-1")).by(&[CROSS_PARTITION, LEGAL_HOLD]),
    ])
    .await;
}

#[tokio::test]
async fn a_caller_without_groups_is_denied_everything() {
    use Consumer::*;
    let stranger = "spiffe://example.internal/ns/other/sa/stranger";
    check(&[
        deny(FRONTEND, SALES_SHARE, EntireAccount),
        deny(FRONTEND, SALES_SHARE, Region("us-west-2")),
        deny(FRONTEND, SALES_SHARE, Namespace(PROVISIONED_NS)),
        deny(FRONTEND, SALES_SHARE, Namespace(SERVERLESS_NS)),
        deny(FRONTEND, SALES_SHARE, Namespace(PROVISIONED_NS))
            .writes(true)
            .by(&[WRITES]),
        deny(stranger, SALES_SHARE, Namespace(PROVISIONED_NS)),
    ])
    .await;
}

#[tokio::test]
async fn consumers_and_producers_outside_the_org_are_denied() {
    use Consumer::*;
    check(&[
        deny(REPORTING, SALES_SHARE, Namespace(NON_ORG_NS)),
        deny(LOADER, SALES_SHARE, Namespace(NON_ORG_NS)),
        deny(NOTEBOOK, SALES_SHARE, Namespace(NON_ORG_NS)),
        deny(REPORTING, NON_ORG_SHARE, EntireAccount),
        deny(NOTEBOOK, NON_ORG_SHARE, Namespace(PROVISIONED_NS)),
    ])
    .await;
}

#[tokio::test]
async fn whoever_may_associate_may_disassociate_the_same() {
    use Consumer::*;
    check(&[
        allow(REPORTING, SALES_SHARE, EntireAccount)
            .disassociate()
            .by(&[DATA_PLATFORM]),
        allow(REPORTING, SALES_SHARE, Region("us-west-2"))
            .disassociate()
            .by(&[DATA_PLATFORM]),
        allow(NOTEBOOK, SALES_SHARE, Namespace(SERVERLESS_NS))
            .disassociate()
            .by(&[ANALYTICS]),
        deny(NOTEBOOK, SALES_SHARE, EntireAccount).disassociate(),
        deny(NOTEBOOK, SALES_SHARE, Region("us-west-2")).disassociate(),
        deny(FRONTEND, SALES_SHARE, Namespace(PROVISIONED_NS)).disassociate(),
        deny(REPORTING, SALES_SHARE, Namespace(NON_ORG_NS)).disassociate(),
        deny(REPORTING, SALES_SHARE, Namespace(GOVCLOUD_NS))
            .disassociate()
            .by(&[CROSS_PARTITION]),
        deny(LOADER, LEGAL_HOLD_SHARE, EntireAccount)
            .disassociate()
            .by(&[LEGAL_HOLD]),
    ])
    .await;
}

#[tokio::test]
async fn data_platform_and_analytics_may_list_and_no_one_else() {
    use Consumer::*;
    check(&[
        allow(REPORTING, SALES_SHARE, EntireAccount)
            .list()
            .by(&[DATA_PLATFORM_LIST]),
        allow(REPORTING, SALES_SHARE, Namespace(PROVISIONED_NS))
            .list()
            .by(&[DATA_PLATFORM_LIST]),
        allow(NOTEBOOK, SALES_SHARE, EntireAccount)
            .list()
            .by(&[ANALYTICS_LIST]),
        allow(LOADER, SALES_SHARE, Namespace(SERVERLESS_NS))
            .list()
            .by(&[DATA_PLATFORM_LIST]),
        deny(FRONTEND, SALES_SHARE, EntireAccount).list(),
        deny(
            "spiffe://example.internal/ns/other/sa/stranger",
            SALES_SHARE,
            EntireAccount,
        )
        .list(),
    ])
    .await;
}
