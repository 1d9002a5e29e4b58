//! `DisassociateConsumer`: undo an association of a datashare with the entire consumer account,
//! one consumer namespace, or all namespaces of a region (Redshift
//! `DisassociateDataShareConsumer`).

use crate::arn::{AccountId, DataShareArn, NamespaceArn};
use crate::call::{
    ApprovalFacts, ApprovalRole, DataShare, Decision, Operation, PolicyInput, ValidationEnv,
};
use crate::errors::FieldViolation;
use crate::ops::{
    ConsumerTarget, Rpc, ShareAnswer, ShareTarget, TargetFields, semantic_request,
    share_policy_input, share_response,
};
use crate::proto::datasharing::v1 as pb;

/// The `DisassociateConsumer` operation.
#[derive(Clone, Copy, Debug)]
pub struct DisassociateConsumer;

/// The request's parameters exactly as the caller sent them.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DisassociateParams {
    pub data_share_arn: String,
    pub disassociate_entire_account: bool,
    pub consumer_arn: String,
    pub consumer_region: String,
    pub validate_only: bool,
    pub consumer_account: String,
}

/// A validated `DisassociateConsumer` request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DisassociateRequest {
    pub data_share: DataShareArn,
    pub consumer: ConsumerTarget,
    /// The consumer account the gateway acts in.
    pub account: AccountId,
    /// Validate and check policy only; do not call Redshift.
    pub validate_only: bool,
}

/// A successful `DisassociateConsumer`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DisassociateReply {
    /// Redshift disassociated the datashare and described it.
    Disassociated(DataShare),
    /// `validate_only`: the request is valid and policy permits it.
    Validated(Decision),
}

impl Operation for DisassociateConsumer {
    const METHOD: &'static str = "DisassociateConsumer";
    const CHANGES_STATE: bool = true;
    type Params = DisassociateParams;
    type Request = DisassociateRequest;
    type Reply = DisassociateReply;

    fn validate(
        params: &DisassociateParams,
        env: &ValidationEnv,
    ) -> Result<DisassociateRequest, Vec<FieldViolation>> {
        let target = ShareTarget::validate(
            &params.data_share_arn,
            &TargetFields {
                entire_account_field: "disassociate_entire_account",
                entire_account: params.disassociate_entire_account,
                consumer_arn: &params.consumer_arn,
                consumer_region: &params.consumer_region,
            },
            &params.consumer_account,
            env,
        )?;
        Ok(DisassociateRequest {
            data_share: target.data_share,
            consumer: target.consumer,
            account: target.account,
            validate_only: params.validate_only,
        })
    }

    fn consumer_account(request: &DisassociateRequest) -> Option<&AccountId> {
        Some(&request.account)
    }

    fn policy_input(request: &DisassociateRequest, approvals: &ApprovalFacts) -> PolicyInput {
        share_policy_input(
            Self::METHOD,
            &request.data_share,
            &request.consumer,
            &request.account,
            // The schema shares one context type with AssociateConsumer; nothing is written here.
            false,
            approvals,
        )
    }

    fn approval_role(request: &DisassociateRequest) -> ApprovalRole<'_> {
        ApprovalRole::Gated {
            request: semantic_request(
                Self::METHOD,
                &request.data_share,
                &request.consumer,
                &request.account,
                false,
            ),
            validate_only: request.validate_only,
        }
    }

    fn validation_reply(
        request: &DisassociateRequest,
        decision: &Decision,
    ) -> Option<DisassociateReply> {
        request
            .validate_only
            .then(|| DisassociateReply::Validated(decision.clone()))
    }

    fn sample_request() -> DisassociateRequest {
        DisassociateRequest {
            data_share: super::sample_share(),
            consumer: ConsumerTarget::Namespace(
                NamespaceArn::parse(
                    "arn:aws:redshift-serverless:us-east-1:444455556666:namespace/0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9",
                )
                .unwrap_or_else(|_| unreachable!("a valid namespace ARN")),
            ),
            account: super::sample_account(),
            validate_only: false,
        }
    }
}

impl Rpc for DisassociateConsumer {
    type Message = pb::DisassociateConsumerRequest;
    type Response = pb::DisassociateConsumerResponse;

    fn params(message: pb::DisassociateConsumerRequest) -> DisassociateParams {
        DisassociateParams {
            data_share_arn: message.data_share_arn,
            disassociate_entire_account: message.disassociate_entire_account,
            consumer_arn: message.consumer_arn,
            consumer_region: message.consumer_region,
            validate_only: message.validate_only,
            consumer_account: message.consumer_account,
        }
    }

    fn response(reply: DisassociateReply) -> pb::DisassociateConsumerResponse {
        let answer = match reply {
            DisassociateReply::Disassociated(share) => ShareAnswer::Share(share),
            DisassociateReply::Validated(decision) => ShareAnswer::Decision(decision),
        };
        share_response!(pb::DisassociateConsumerResponse, answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHARE: &str = "arn:aws:redshift:us-east-1:111122223333:datashare:9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f/sales_share";

    fn env() -> ValidationEnv {
        ValidationEnv {
            default_account: Some(AccountId::parse("444455556666").unwrap()),
            partition: crate::arn::Partition::Aws,
        }
    }

    #[test]
    fn names_its_own_entire_account_field() {
        let err = DisassociateConsumer::validate(
            &DisassociateParams {
                data_share_arn: SHARE.into(),
                ..Default::default()
            },
            &env(),
        )
        .unwrap_err();
        assert_eq!(err[0].field, "disassociate_entire_account");
        assert!(
            err[0]
                .description
                .contains("disassociate_entire_account = true"),
            "{}",
            err[0].description
        );
        let two = DisassociateConsumer::validate(
            &DisassociateParams {
            data_share_arn: SHARE.into(),
            disassociate_entire_account: true,
            consumer_arn: "arn:aws:redshift:us-east-1:444455556666:namespace:5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9".into(),
            ..Default::default()
        }, &env())
        .unwrap_err();
        let fields: Vec<_> = two.iter().map(|v| v.field).collect();
        assert_eq!(fields, ["disassociate_entire_account", "consumer_arn"]);
    }

    #[test]
    fn validate_only_answers_with_the_decision() {
        let request = DisassociateConsumer::validate(
            &DisassociateParams {
                data_share_arn: SHARE.into(),
                disassociate_entire_account: true,
                validate_only: true,
                ..Default::default()
            },
            &env(),
        )
        .unwrap();
        let decision = Decision {
            allowed: true,
            determining_policies: vec!["p".into()],
        };
        assert_eq!(
            DisassociateConsumer::validation_reply(&request, &decision),
            Some(DisassociateReply::Validated(decision))
        );
    }
}
