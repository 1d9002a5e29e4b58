//! `AssociateConsumer`: associate a datashare with the entire consumer account, one consumer
//! namespace, or all namespaces of a region (Redshift `AssociateDataShareConsumer`).

use crate::arn::{AccountId, DataShareArn, Region};
use crate::call::{
    ApprovalFacts, ApprovalRole, DataShare, Decision, Operation, PolicyInput, ValidationEnv,
};
use crate::errors::FieldViolation;
use crate::ops::{
    ConsumerTarget, Rpc, ShareAnswer, ShareTarget, TargetFields, semantic_request,
    share_policy_input, share_response,
};
use crate::proto::datasharing::v1 as pb;

/// The `AssociateConsumer` operation.
#[derive(Clone, Copy, Debug)]
pub struct AssociateConsumer;

/// The request's parameters exactly as the caller sent them.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AssociateParams {
    pub data_share_arn: String,
    pub associate_entire_account: bool,
    pub consumer_arn: String,
    pub consumer_region: String,
    pub allow_writes: Option<bool>,
    pub validate_only: bool,
    pub consumer_account: String,
}

/// A validated `AssociateConsumer` request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssociateRequest {
    pub data_share: DataShareArn,
    pub consumer: ConsumerTarget,
    /// The consumer account the gateway acts in.
    pub account: AccountId,
    /// `AllowWrites`, as given: unset leaves the choice to Redshift.
    pub allow_writes: Option<bool>,
    /// Validate and check policy only; do not call Redshift.
    pub validate_only: bool,
}

/// A successful `AssociateConsumer`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AssociateReply {
    /// Redshift associated the datashare and described it.
    Associated(DataShare),
    /// `validate_only`: the request is valid and policy permits it.
    Validated(Decision),
}

impl Operation for AssociateConsumer {
    const METHOD: &'static str = "AssociateConsumer";
    const CHANGES_STATE: bool = true;
    type Params = AssociateParams;
    type Request = AssociateRequest;
    type Reply = AssociateReply;

    fn validate(
        params: &AssociateParams,
        env: &ValidationEnv,
    ) -> Result<AssociateRequest, Vec<FieldViolation>> {
        let target = ShareTarget::validate(
            &params.data_share_arn,
            &TargetFields {
                entire_account_field: "associate_entire_account",
                entire_account: params.associate_entire_account,
                consumer_arn: &params.consumer_arn,
                consumer_region: &params.consumer_region,
            },
            &params.consumer_account,
            env,
        )?;
        Ok(AssociateRequest {
            data_share: target.data_share,
            consumer: target.consumer,
            account: target.account,
            allow_writes: params.allow_writes,
            validate_only: params.validate_only,
        })
    }

    fn consumer_account(request: &AssociateRequest) -> Option<&AccountId> {
        Some(&request.account)
    }

    fn policy_input(request: &AssociateRequest, approvals: &ApprovalFacts) -> PolicyInput {
        share_policy_input(
            Self::METHOD,
            &request.data_share,
            &request.consumer,
            &request.account,
            request.allow_writes.unwrap_or(false),
            approvals,
        )
    }

    fn approval_role(request: &AssociateRequest) -> ApprovalRole<'_> {
        ApprovalRole::Gated {
            request: semantic_request(
                Self::METHOD,
                &request.data_share,
                &request.consumer,
                &request.account,
                request.allow_writes.unwrap_or(false),
            ),
            validate_only: request.validate_only,
        }
    }

    fn validation_reply(request: &AssociateRequest, decision: &Decision) -> Option<AssociateReply> {
        request
            .validate_only
            .then(|| AssociateReply::Validated(decision.clone()))
    }

    fn sample_request() -> AssociateRequest {
        AssociateRequest {
            data_share: super::sample_share(),
            consumer: ConsumerTarget::Region(
                Region::parse("us-east-1").unwrap_or_else(|_| unreachable!("a valid region")),
            ),
            account: super::sample_account(),
            allow_writes: None,
            validate_only: false,
        }
    }
}

impl Rpc for AssociateConsumer {
    type Message = pb::AssociateConsumerRequest;
    type Response = pb::AssociateConsumerResponse;

    fn params(message: pb::AssociateConsumerRequest) -> AssociateParams {
        AssociateParams {
            data_share_arn: message.data_share_arn,
            associate_entire_account: message.associate_entire_account,
            consumer_arn: message.consumer_arn,
            consumer_region: message.consumer_region,
            allow_writes: message.allow_writes,
            validate_only: message.validate_only,
            consumer_account: message.consumer_account,
        }
    }

    fn response(reply: AssociateReply) -> pb::AssociateConsumerResponse {
        let answer = match reply {
            AssociateReply::Associated(share) => ShareAnswer::Share(share),
            AssociateReply::Validated(decision) => ShareAnswer::Decision(decision),
        };
        share_response!(pb::AssociateConsumerResponse, answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::ContextValue;

    const SHARE: &str = "arn:aws:redshift:us-east-1:111122223333:datashare:9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f/sales_share";
    const NAMESPACE: &str =
        "arn:aws:redshift:us-east-1:444455556666:namespace:5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9";

    fn params() -> AssociateParams {
        AssociateParams {
            data_share_arn: SHARE.into(),
            ..Default::default()
        }
    }

    fn fields(err: Vec<FieldViolation>) -> Vec<&'static str> {
        err.into_iter().map(|v| v.field).collect()
    }

    fn env() -> ValidationEnv {
        ValidationEnv {
            default_account: Some(AccountId::parse("444455556666").unwrap()),
            partition: crate::arn::Partition::Aws,
        }
    }

    fn validate(params: &AssociateParams) -> Result<AssociateRequest, Vec<FieldViolation>> {
        AssociateConsumer::validate(params, &env())
    }

    #[test]
    fn arns_and_regions_of_another_partition_are_refused_naming_the_field() {
        // aws-cn 444455556666 is not the commercial 444455556666: carried out through the
        // gateway's own role of that number, it would act in the wrong account.
        let cn_share = SHARE
            .replace("arn:aws:", "arn:aws-cn:")
            .replace("us-east-1", "cn-north-1");
        let err = validate(&AssociateParams {
            data_share_arn: cn_share,
            associate_entire_account: true,
            ..params()
        })
        .unwrap_err();
        assert_eq!(fields(err.clone()), ["data_share_arn"]);
        assert!(
            err[0].description.contains("partition aws-cn")
                && err[0].description.contains("works in aws"),
            "{}",
            err[0].description
        );
        let gov_namespace = NAMESPACE
            .replace("arn:aws:", "arn:aws-us-gov:")
            .replace("us-east-1", "us-gov-west-1");
        let err = validate(&AssociateParams {
            consumer_arn: gov_namespace,
            ..params()
        })
        .unwrap_err();
        assert_eq!(fields(err), ["consumer_arn"]);
        let err = validate(&AssociateParams {
            consumer_region: "cn-northwest-1".into(),
            ..params()
        })
        .unwrap_err();
        assert_eq!(fields(err), ["consumer_region"]);
        // The same requests pass a gateway in that partition.
        let cn = ValidationEnv {
            partition: crate::arn::Partition::AwsCn,
            ..env()
        };
        assert!(
            AssociateConsumer::validate(
                &AssociateParams {
                    consumer_region: "cn-northwest-1".into(),
                    data_share_arn: SHARE
                        .replace("arn:aws:", "arn:aws-cn:")
                        .replace("us-east-1", "cn-north-1"),
                    ..params()
                },
                &cn
            )
            .is_ok()
        );
    }

    #[test]
    fn accepts_each_consumer_kind() {
        let entire = validate(&AssociateParams {
            associate_entire_account: true,
            ..params()
        })
        .unwrap();
        assert_eq!(entire.consumer, ConsumerTarget::EntireAccount);
        let ns = validate(&AssociateParams {
            consumer_arn: NAMESPACE.into(),
            ..params()
        })
        .unwrap();
        assert!(matches!(ns.consumer, ConsumerTarget::Namespace(_)));
        let region = validate(&AssociateParams {
            consumer_region: "eu-west-1".into(),
            ..params()
        })
        .unwrap();
        assert_eq!(
            region.consumer,
            ConsumerTarget::Region(Region::parse("eu-west-1").unwrap())
        );
    }

    #[test]
    fn requires_exactly_one_consumer() {
        let none = validate(&params()).unwrap_err();
        assert_eq!(fields(none), ["associate_entire_account"]);
        let two = validate(&AssociateParams {
            associate_entire_account: true,
            consumer_region: "us-east-1".into(),
            ..params()
        })
        .unwrap_err();
        assert_eq!(fields(two), ["associate_entire_account", "consumer_region"]);
    }

    #[test]
    fn reports_every_bad_field_at_once() {
        let err = validate(&AssociateParams {
            data_share_arn: "arn:aws:redshift:us-east-1:1:datashare:x/y".into(),
            consumer_arn: "arn:aws:redshift:us-east-1:444455556666:cluster:abc".into(),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(err.len(), 2);
        assert_eq!(err[0].field, "data_share_arn");
        assert!(
            err[0].description.contains("12 digits"),
            "{}",
            err[0].description
        );
        assert_eq!(err[1].field, "consumer_arn");
        assert!(
            err[1].description.contains("namespace"),
            "{}",
            err[1].description
        );
    }

    #[test]
    fn missing_datashare_arn_is_named_as_required() {
        let err = validate(&AssociateParams {
            associate_entire_account: true,
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(err[0].field, "data_share_arn");
        assert!(err[0].description.starts_with("required"));
    }

    #[test]
    fn policy_sees_allow_writes_and_the_consumer() {
        let request = validate(&AssociateParams {
            consumer_region: "us-west-2".into(),
            allow_writes: Some(true),
            ..params()
        })
        .unwrap();
        let input = AssociateConsumer::policy_input(&request, &ApprovalFacts::default());
        assert_eq!(input.action, "AssociateConsumer");
        let get = |name: &str| {
            input
                .context
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(get("allow_writes"), Some(ContextValue::Bool(true)));
        assert_eq!(
            get("consumer_account"),
            Some(ContextValue::String("444455556666".into()))
        );
        assert_eq!(
            get("consumer_kind"),
            Some(ContextValue::String("region".into()))
        );
    }

    #[test]
    fn the_account_is_the_namespaces_or_named_or_the_default() {
        let ns = validate(&AssociateParams {
            consumer_arn: NAMESPACE.into(),
            ..params()
        })
        .unwrap();
        assert_eq!(ns.account.as_str(), "444455556666");
        let named = validate(&AssociateParams {
            associate_entire_account: true,
            consumer_account: "777788889999".into(),
            ..params()
        })
        .unwrap();
        assert_eq!(named.account.as_str(), "777788889999");
        let mismatch = validate(&AssociateParams {
            consumer_arn: NAMESPACE.into(),
            consumer_account: "777788889999".into(),
            ..params()
        })
        .unwrap_err();
        assert_eq!(fields(mismatch), ["consumer_account", "consumer_arn"]);
        let none = AssociateConsumer::validate(
            &AssociateParams {
                consumer_region: "us-east-1".into(),
                ..params()
            },
            &ValidationEnv::default(),
        )
        .unwrap_err();
        assert_eq!(none[0].field, "consumer_account");
        assert!(
            none[0]
                .description
                .starts_with("required for an entire-account or region target"),
            "{}",
            none[0].description
        );
        let bad = validate(&AssociateParams {
            associate_entire_account: true,
            consumer_account: "1234".into(),
            ..params()
        })
        .unwrap_err();
        assert_eq!(fields(bad), ["consumer_account"]);
    }

    #[test]
    fn misleading_characters_are_refused_naming_their_code_point() {
        let rlo = format!("{SHARE}\u{202E}");
        for (value, expected) in [
            (rlo.as_str(), "U+202E"),
            (
                "arn:aws:redshift:us-east-1:111122223333:datashare:9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f/sales\u{200B}share",
                "U+200B",
            ),
            (
                "arn:aws:redshift:us-east-1:111122223333:datashare:9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f/sales\u{2028}",
                "U+2028",
            ),
            (
                "arn:aws:redshift:us-east-1:111122223333:datashare:9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f/sales\u{7}",
                "U+0007",
            ),
        ] {
            let err = validate(&AssociateParams {
                data_share_arn: value.into(),
                associate_entire_account: true,
                ..Default::default()
            })
            .unwrap_err();
            assert_eq!(fields(err.clone()), ["data_share_arn"]);
            assert!(
                err[0].description.contains(expected),
                "{}",
                err[0].description
            );
        }
        let spaced = validate(&AssociateParams {
            consumer_region: " us-east-1".into(),
            ..params()
        })
        .unwrap_err();
        assert_eq!(fields(spaced.clone()), ["consumer_region"]);
        assert!(spaced[0].description.contains("white space"));
    }

    #[test]
    fn a_present_but_malformed_arn_is_not_called_missing() {
        let err = validate(&AssociateParams {
            data_share_arn: "arn:aws:redshift:us-east-1:1:datashare:x/y".into(),
            associate_entire_account: true,
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            !err[0].description.starts_with("required"),
            "{}",
            err[0].description
        );
    }
}
