//! The datashare-consumer operations the gateway serves, one module each: their parameters,
//! validation, policy input and proto glue. Every layer of the stack is generic over
//! [`Operation`]; an operation is a type here plus its `upstream::Forward` impl.
//!
//! - [`associate`]: `AssociateConsumer` (Redshift `AssociateDataShareConsumer`).
//! - [`disassociate`]: `DisassociateConsumer` (Redshift `DisassociateDataShareConsumer`).
//! - [`list`]: `ListConsumerDataShares` (Redshift `DescribeDataSharesForConsumer`).

pub mod associate;
pub mod disassociate;
pub mod list;
pub(crate) mod page_token;

pub use associate::AssociateConsumer;
pub use disassociate::DisassociateConsumer;
pub use list::ListConsumerDataShares;

use crate::arn::{AccountId, DataShareArn, NamespaceArn, NamespaceKind, Partition, Region};
use crate::call::{
    ApprovalFacts, ContextValue, DataShare, Operation, PolicyInput, RequestField, SemanticRequest,
    ValidationEnv,
};
use crate::errors::FieldViolation;
use crate::proto::datasharing::v1 as pb;

/// An operation as a gRPC method: how its protobuf request becomes parameters and its reply a
/// protobuf response. The handler in `server` is written once over this.
pub trait Rpc: Operation {
    /// The gRPC service the method belongs to.
    const SERVICE: &'static str = "datasharing.v1.DataSharing";
    /// The protobuf request message.
    type Message: prost::Message + Default + PartialEq + Send + 'static;
    /// The protobuf response message.
    type Response: Send + 'static;
    /// The parameters as sent.
    fn params(message: Self::Message) -> Self::Params;
    /// The response for a successful call.
    fn response(reply: Self::Reply) -> Self::Response;
}

/// The one consumer a datashare is associated with (or disassociated from).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConsumerTarget {
    /// The whole consumer account.
    EntireAccount,
    /// One consumer namespace (`ConsumerArn`).
    Namespace(NamespaceArn),
    /// All existing and future namespaces of a region (`ConsumerRegion`).
    Region(Region),
}

/// The consumer fields of a request, by their proto names.
pub(crate) struct TargetFields<'a> {
    /// The field meaning "the entire account" (`associate_entire_account`, ...).
    pub(crate) entire_account_field: &'static str,
    /// Its value.
    pub(crate) entire_account: bool,
    /// `consumer_arn`
    pub(crate) consumer_arn: &'a str,
    /// `consumer_region`
    pub(crate) consumer_region: &'a str,
}

/// Parses a required datashare ARN, naming `field` when it is missing or malformed.
pub(crate) fn data_share_arn(
    field: &'static str,
    value: &str,
    violations: &mut Vec<FieldViolation>,
) -> Option<DataShareArn> {
    match DataShareArn::parse(value) {
        Ok(arn) => Some(arn),
        Err(_) if value.is_empty() => {
            violations.push(FieldViolation {
                field,
                description: "required: the datashare's ARN, arn:{partition}:redshift:{region}:{account}:datashare:{namespace-guid}/{name}".into(),
            });
            None
        }
        Err(err) => {
            violations.push(FieldViolation {
                field,
                description: err.to_string(),
            });
            None
        }
    }
}

/// Refuses `partition` (of the value in `field`) unless it is the gateway's: the same account
/// number is a different account in `aws-cn` or `aws-us-gov`, and the gateway's roles and
/// credentials are its own partition's.
pub(crate) fn same_partition(
    field: &'static str,
    partition: Partition,
    env: &ValidationEnv,
    violations: &mut Vec<FieldViolation>,
) -> bool {
    if partition == env.partition {
        return true;
    }
    violations.push(FieldViolation {
        field,
        description: format!(
            "is in partition {partition}; this gateway works in {} (an account number names a different account in each partition)",
            env.partition
        ),
    });
    false
}

/// A control, format (bidi overrides, zero-width characters), line or paragraph separator
/// character: one that makes text read differently from what it is.
pub(crate) fn misleading(c: char) -> bool {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    // Printable ASCII is the common case; the category lookup is a table search.
    !matches!(c, ' '..='~')
        && matches!(
            c.general_category(),
            GeneralCategory::Control
                | GeneralCategory::Format
                | GeneralCategory::LineSeparator
                | GeneralCategory::ParagraphSeparator
        )
}

/// Checks that every string field is plain text: no control, format (bidi overrides,
/// zero-width characters), line or paragraph separator characters, and no leading or trailing
/// white space. Such characters make a value read differently from what it is, in logs, audit
/// records and consoles. Returns false when any field broke the rule (each is named).
pub(crate) fn plain_text(
    fields: &[(&'static str, &str)],
    violations: &mut Vec<FieldViolation>,
) -> bool {
    let before = violations.len();
    for (field, value) in fields {
        if let Some(c) = value.chars().find(|c| misleading(*c)) {
            violations.push(FieldViolation {
                field,
                description: format!(
                    "contains U+{:04X}, a control, format or separator character; only visible characters are accepted",
                    u32::from(c)
                ),
            });
        } else if value.trim() != *value {
            violations.push(FieldViolation {
                field,
                description: "has leading or trailing white space".into(),
            });
        }
    }
    violations.len() == before
}

/// Exactly one consumer target, each field checked; every violation is named.
pub(crate) fn consumer_target(
    fields: &TargetFields<'_>,
    violations: &mut Vec<FieldViolation>,
) -> Option<ConsumerTarget> {
    let entire = fields.entire_account_field;
    let given = [
        (entire, fields.entire_account),
        ("consumer_arn", !fields.consumer_arn.is_empty()),
        ("consumer_region", !fields.consumer_region.is_empty()),
    ];
    let rule = |what: &str| {
        format!(
            "exactly one of {entire} = true, consumer_arn or consumer_region must be set; {what}"
        )
    };
    match given.iter().filter(|(_, set)| *set).count() {
        0 => {
            violations.push(FieldViolation {
                field: entire,
                description: rule("none is"),
            });
            None
        }
        1 if fields.entire_account => Some(ConsumerTarget::EntireAccount),
        1 if !fields.consumer_arn.is_empty() => match NamespaceArn::parse(fields.consumer_arn) {
            Ok(arn) => Some(ConsumerTarget::Namespace(arn)),
            Err(err) => {
                violations.push(FieldViolation {
                    field: "consumer_arn",
                    description: err.to_string(),
                });
                None
            }
        },
        1 => match Region::parse(fields.consumer_region) {
            Ok(region) => Some(ConsumerTarget::Region(region)),
            Err(err) => {
                violations.push(FieldViolation {
                    field: "consumer_region",
                    description: err.to_string(),
                });
                None
            }
        },
        _ => {
            for (field, set) in given {
                if set {
                    violations.push(FieldViolation {
                        field,
                        description: rule("several are"),
                    });
                }
            }
            None
        }
    }
}

/// The account a request acts in: the consumer namespace's, which `consumer_account` (when
/// set) must equal; else `consumer_account`; else the configured default. `namespace_field`
/// names the field holding the namespace ARN; `required` says what needs an account.
pub(crate) fn consumer_account(
    consumer_account: &str,
    namespace: Option<(&'static str, &NamespaceArn)>,
    env: &ValidationEnv,
    required: &str,
    violations: &mut Vec<FieldViolation>,
) -> Option<AccountId> {
    let named = if consumer_account.is_empty() {
        None
    } else {
        match AccountId::parse(consumer_account) {
            Ok(account) => Some(account),
            Err(err) => {
                violations.push(FieldViolation {
                    field: "consumer_account",
                    description: err.to_string(),
                });
                return None;
            }
        }
    };
    match (named, namespace) {
        (Some(named), Some((field, arn))) if named != arn.account => {
            let description = format!(
                "consumer_account {named} does not match the account of {field} ({})",
                arn.account
            );
            violations.push(FieldViolation {
                field: "consumer_account",
                description: description.clone(),
            });
            violations.push(FieldViolation { field, description });
            None
        }
        (_, Some((_, arn))) => Some(arn.account.clone()),
        (Some(named), None) => Some(named),
        (None, None) => match &env.default_account {
            Some(account) => Some(account.clone()),
            None => {
                violations.push(FieldViolation {
                    field: "consumer_account",
                    description: format!(
                        "required for {required} (the gateway has no upstream.default_account)"
                    ),
                });
                None
            }
        },
    }
}

/// The account a request with a consumer target acts in (see [`consumer_account`]). Without a
/// valid target only `consumer_account`'s own form is checked.
pub(crate) fn target_account(
    named: &str,
    target: Option<&ConsumerTarget>,
    env: &ValidationEnv,
    violations: &mut Vec<FieldViolation>,
) -> Option<AccountId> {
    match target {
        Some(ConsumerTarget::Namespace(arn)) => consumer_account(
            named,
            Some(("consumer_arn", arn)),
            env,
            "an entire-account or region target",
            violations,
        ),
        Some(_) => consumer_account(
            named,
            None,
            env,
            "an entire-account or region target",
            violations,
        ),
        None => {
            if !named.is_empty()
                && let Err(err) = AccountId::parse(named)
            {
                violations.push(FieldViolation {
                    field: "consumer_account",
                    description: err.to_string(),
                });
            }
            None
        }
    }
}

/// What AssociateConsumer and DisassociateConsumer requests share, validated together: the
/// datashare, exactly one consumer target, and the account the gateway acts in.
pub(crate) struct ShareTarget {
    pub(crate) data_share: DataShareArn,
    pub(crate) consumer: ConsumerTarget,
    pub(crate) account: AccountId,
}

impl ShareTarget {
    /// Validates the datashare, the target and the account; every violation is named.
    pub(crate) fn validate(
        data_share_arn: &str,
        fields: &TargetFields<'_>,
        named_account: &str,
        env: &ValidationEnv,
    ) -> Result<Self, Vec<FieldViolation>> {
        let mut violations = Vec::new();
        let text = [
            ("data_share_arn", data_share_arn),
            ("consumer_arn", fields.consumer_arn),
            ("consumer_region", fields.consumer_region),
            ("consumer_account", named_account),
        ];
        if !plain_text(&text, &mut violations) {
            return Err(violations);
        }
        let data_share = self::data_share_arn("data_share_arn", data_share_arn, &mut violations)
            .filter(|arn| same_partition("data_share_arn", arn.partition, env, &mut violations));
        let consumer = consumer_target(fields, &mut violations).filter(|target| match target {
            ConsumerTarget::Namespace(arn) => {
                same_partition("consumer_arn", arn.partition, env, &mut violations)
            }
            ConsumerTarget::Region(region) => same_partition(
                "consumer_region",
                Partition::of_region(region),
                env,
                &mut violations,
            ),
            ConsumerTarget::EntireAccount => true,
        });
        let account = target_account(named_account, consumer.as_ref(), env, &mut violations);
        match (data_share, consumer, account) {
            (Some(data_share), Some(consumer), Some(account)) if violations.is_empty() => {
                Ok(ShareTarget {
                    data_share,
                    consumer,
                    account,
                })
            }
            _ => Err(violations),
        }
    }
}

/// The policy input of `action` on a datashare and consumer target (`ConsumerContext`), with
/// the approvals this exact request has.
pub(crate) fn share_policy_input(
    action: &'static str,
    data_share: &DataShareArn,
    consumer: &ConsumerTarget,
    account: &AccountId,
    allow_writes: bool,
    approvals: &ApprovalFacts,
) -> PolicyInput {
    let mut context = consumer_context(consumer, account, data_share);
    context.push(("allow_writes", ContextValue::Bool(allow_writes)));
    context.push((
        "approvals",
        ContextValue::Long(i64::from(approvals.approvals)),
    ));
    PolicyInput {
        action,
        resource: crate::call::PolicyResource::DataShare(data_share.clone()),
        context,
    }
}

/// The semantic fields of a request on a datashare and consumer target: what an approval binds.
/// The names and their order are those approvals have been stored with since the first
/// release (see [`SemanticRequest::digest`]).
pub(crate) fn semantic_request(
    method: &'static str,
    data_share: &DataShareArn,
    consumer: &ConsumerTarget,
    account: &AccountId,
    allow_writes: bool,
) -> SemanticRequest {
    let (target_kind, target_value) = target_kind_and_value(consumer);
    SemanticRequest {
        method,
        fields: vec![
            RequestField::text("data_share_arn", data_share.to_string()),
            RequestField::text("consumer_kind", target_kind),
            RequestField::text("consumer", target_value),
            RequestField::text("consumer_account", account.to_string()),
            RequestField::flag("allow_writes", allow_writes),
        ],
    }
}

/// A consumer target as policies and approvals name it: its kind, and the namespace ARN or the
/// region (empty for the entire account).
fn target_kind_and_value(target: &ConsumerTarget) -> (&'static str, String) {
    match target {
        ConsumerTarget::Namespace(ns) => (
            match ns.kind {
                NamespaceKind::Provisioned => "provisioned_namespace",
                NamespaceKind::Serverless => "serverless_namespace",
            },
            ns.to_string(),
        ),
        ConsumerTarget::Region(region) => ("region", region.to_string()),
        ConsumerTarget::EntireAccount => ("account", String::new()),
    }
}

/// The Cedar context describing a consumer target (`ConsumerContext` in the schema, without
/// `allow_writes`).
fn consumer_context(
    target: &ConsumerTarget,
    account: &AccountId,
    data_share: &DataShareArn,
) -> Vec<(&'static str, ContextValue)> {
    let (kind, _) = target_kind_and_value(target);
    let (account, arn, region, partition) = match target {
        ConsumerTarget::Namespace(ns) => (
            ns.account.to_string(),
            ns.to_string(),
            ns.region.to_string(),
            ns.partition,
        ),
        ConsumerTarget::Region(region) => (
            account.to_string(),
            String::new(),
            region.to_string(),
            Partition::of_region(region),
        ),
        // The consumer account, reached through the datashare's partition: an entire-account
        // association cannot cross partitions.
        ConsumerTarget::EntireAccount => (
            account.to_string(),
            String::new(),
            String::new(),
            data_share.partition,
        ),
    };
    vec![
        ("consumer_kind", ContextValue::String(kind.into())),
        ("consumer_account", ContextValue::String(account)),
        ("consumer_arn", ContextValue::String(arn)),
        ("consumer_region", ContextValue::String(region)),
        (
            "consumer_partition",
            ContextValue::String(partition.as_str().into()),
        ),
        (
            "entire_account",
            ContextValue::Bool(matches!(target, ConsumerTarget::EntireAccount)),
        ),
    ]
}

/// The response of a call that answers with one datashare or, for `validate_only`, the policy
/// decision: `AssociateConsumerResponse` and `DisassociateConsumerResponse` have these fields,
/// with the same numbers, and differ only in name.
macro_rules! share_response {
    ($response:ty, $answer:expr) => {{
        // A type alias is what a struct literal can name when the type comes in as a `ty`.
        type Response = $response;
        match $answer {
            $crate::ops::ShareAnswer::Decision(decision) => Response {
                validation: Some($crate::proto::datasharing::v1::ValidationResult {
                    determining_policies: decision.determining_policies,
                }),
                ..Default::default()
            },
            $crate::ops::ShareAnswer::Share(share) => {
                let share = $crate::ops::data_share_message(share);
                Response {
                    data_share_arn: share.data_share_arn,
                    producer_arn: share.producer_arn,
                    allow_publicly_accessible_consumers: share.allow_publicly_accessible_consumers,
                    associations: share.associations,
                    managed_by: share.managed_by,
                    data_share_type: share.data_share_type,
                    validation: None,
                }
            }
        }
    }};
}
pub(crate) use share_response;

/// What [`share_response!`] answers with.
pub(crate) enum ShareAnswer {
    /// Redshift's datashare after the change.
    Share(DataShare),
    /// The decision on a `validate_only` request.
    Decision(crate::call::Decision),
}

/// A datashare as the API returns it.
pub(crate) fn data_share_message(share: DataShare) -> pb::DataShare {
    pb::DataShare {
        data_share_arn: share.data_share_arn.unwrap_or_default(),
        producer_arn: share.producer_arn.unwrap_or_default(),
        allow_publicly_accessible_consumers: share
            .allow_publicly_accessible_consumers
            .unwrap_or(false),
        associations: share
            .associations
            .into_iter()
            .map(|a| pb::DataShareAssociation {
                consumer_identifier: a.consumer_identifier.unwrap_or_default(),
                status: status_from(a.status.as_deref()) as i32,
                consumer_region: a.consumer_region.unwrap_or_default(),
                created_date: a.created_date.map(prost_types::Timestamp::from),
                status_change_date: a.status_change_date.map(prost_types::Timestamp::from),
                producer_allowed_writes: a.producer_allowed_writes,
                consumer_accepted_writes: a.consumer_accepted_writes,
            })
            .collect(),
        managed_by: share.managed_by.unwrap_or_default(),
        data_share_type: match share.data_share_type.as_deref() {
            Some("INTERNAL") => pb::DataShareType::Internal,
            _ => pb::DataShareType::Unspecified,
        } as i32,
    }
}

fn status_from(status: Option<&str>) -> pb::DataShareStatus {
    match status {
        Some("ACTIVE") => pb::DataShareStatus::Active,
        Some("PENDING_AUTHORIZATION") => pb::DataShareStatus::PendingAuthorization,
        Some("AUTHORIZED") => pb::DataShareStatus::Authorized,
        Some("DEAUTHORIZED") => pb::DataShareStatus::Deauthorized,
        Some("REJECTED") => pb::DataShareStatus::Rejected,
        Some("AVAILABLE") => pb::DataShareStatus::Available,
        _ => pb::DataShareStatus::Unspecified,
    }
}

/// A sample consumer account for [`Operation::sample_request`].
fn sample_account() -> AccountId {
    AccountId::parse("444455556666").unwrap_or_else(|_| unreachable!("twelve digits"))
}

/// A sample datashare ARN for [`Operation::sample_request`].
fn sample_share() -> DataShareArn {
    // A constant that parses: checked by the unit test below.
    DataShareArn::parse(SAMPLE_SHARE).unwrap_or_else(|_| unreachable!("SAMPLE_SHARE parses"))
}

const SAMPLE_SHARE: &str =
    "arn:aws:redshift:us-east-1:111122223333:datashare:9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f/probe";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_share_parses() {
        assert!(DataShareArn::parse(SAMPLE_SHARE).is_ok());
    }
}
