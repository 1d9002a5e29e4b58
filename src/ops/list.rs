//! `ListConsumerDataShares`: the datashares the consumer account can see, a page at a time
//! (Redshift `DescribeDataSharesForConsumer`, AIP-132 and AIP-158).

use crate::arn::{AccountId, NamespaceArn};
use crate::call::{
    ApprovalFacts, ContextValue, DataShare, Decision, Operation, PolicyInput, PolicyResource,
    ValidationEnv,
};
use crate::errors::FieldViolation;
use crate::ops::page_token;
use crate::ops::{Rpc, data_share_message};
use crate::proto::datasharing::v1 as pb;

/// The `ListConsumerDataShares` operation.
#[derive(Clone, Copy, Debug)]
pub struct ListConsumerDataShares;

/// A page when the caller asks for none (`page_size = 0`).
pub const DEFAULT_PAGE_SIZE: i32 = 50;
/// The largest page; larger requests are served this many (AIP-158), which is also the most
/// Redshift returns at once (`MaxRecords` 1–100).
pub const MAX_PAGE_SIZE: i32 = 100;

/// The request's parameters exactly as the caller sent them.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListParams {
    pub consumer_arn: String,
    /// The `DataShareStatus` enum value, as sent.
    pub status: i32,
    pub page_size: i32,
    /// Opaque to callers; recorded so that an audit reader can tell the pages of one listing.
    pub page_token: String,
    pub consumer_account: String,
}

/// The datashare statuses Redshift can filter a consumer's datashares by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusFilter {
    Active,
    Available,
}

impl StatusFilter {
    /// As Redshift spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            StatusFilter::Active => "ACTIVE",
            StatusFilter::Available => "AVAILABLE",
        }
    }
}

/// A validated `ListConsumerDataShares` request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListRequest {
    /// The consumer account whose datashares are listed.
    pub account: AccountId,
    /// Only datashares associated with this consumer namespace.
    pub consumer: Option<NamespaceArn>,
    /// Only datashares in this status.
    pub status: Option<StatusFilter>,
    /// Redshift's `MaxRecords`: 1 to [`MAX_PAGE_SIZE`].
    pub max_records: i32,
    /// Redshift's `Marker`, from the page token.
    pub marker: Option<String>,
    /// The filters' fingerprint, bound into the next page token.
    filters: String,
}

impl ListRequest {
    /// The page token for the page after this one, which Redshift says starts at `marker`;
    /// empty on the last page.
    pub fn next_page_token(&self, marker: Option<&str>) -> String {
        match marker {
            Some(marker) if !marker.is_empty() => page_token::encode(marker, &self.filters),
            _ => String::new(),
        }
    }
}

/// One page of datashares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListReply {
    pub data_shares: Vec<DataShare>,
    /// Empty on the last page.
    pub next_page_token: String,
}

impl Operation for ListConsumerDataShares {
    const METHOD: &'static str = "ListConsumerDataShares";
    const CHANGES_STATE: bool = false;
    type Params = ListParams;
    type Request = ListRequest;
    type Reply = ListReply;

    fn validate(
        params: &ListParams,
        env: &ValidationEnv,
    ) -> Result<ListRequest, Vec<FieldViolation>> {
        let mut violations = Vec::new();
        let text = [
            ("consumer_arn", params.consumer_arn.as_str()),
            ("consumer_account", params.consumer_account.as_str()),
            ("page_token", params.page_token.as_str()),
        ];
        if !super::plain_text(&text, &mut violations) {
            return Err(violations);
        }
        let consumer = if params.consumer_arn.is_empty() {
            None
        } else {
            match NamespaceArn::parse(&params.consumer_arn) {
                Ok(arn) => {
                    super::same_partition("consumer_arn", arn.partition, env, &mut violations)
                        .then_some(arn)
                }
                Err(err) => {
                    violations.push(FieldViolation {
                        field: "consumer_arn",
                        description: err.to_string(),
                    });
                    None
                }
            }
        };
        let status = match pb::DataShareStatus::try_from(params.status) {
            Ok(pb::DataShareStatus::Unspecified) => None,
            Ok(pb::DataShareStatus::Active) => Some(StatusFilter::Active),
            Ok(pb::DataShareStatus::Available) => Some(StatusFilter::Available),
            _ => {
                violations.push(FieldViolation {
                    field: "status",
                    description:
                    "must be DATA_SHARE_STATUS_ACTIVE or DATA_SHARE_STATUS_AVAILABLE, or unset: the statuses Redshift can list a consumer's datashares by".into(),
                });
                None
            }
        };
        let max_records = match params.page_size {
            size if size < 0 => {
                violations.push(FieldViolation {
                    field: "page_size",
                    description: "must not be negative".into(),
                });
                DEFAULT_PAGE_SIZE
            }
            0 => DEFAULT_PAGE_SIZE,
            size => size.min(MAX_PAGE_SIZE),
        };
        let account = if params.consumer_arn.is_empty() || consumer.is_some() {
            super::consumer_account(
                &params.consumer_account,
                consumer.as_ref().map(|arn| ("consumer_arn", arn)),
                env,
                "a listing without consumer_arn",
                &mut violations,
            )
        } else {
            None
        };
        let filters = page_token::filter_fingerprint(
            account.as_ref().map_or("", AccountId::as_str),
            &params.consumer_arn,
            status.map_or("", StatusFilter::as_str),
        );
        let marker = if params.page_token.is_empty() {
            None
        } else {
            match page_token::decode(&params.page_token, &filters) {
                Ok(marker) => Some(marker),
                Err(err) => {
                    violations.push(FieldViolation {
                        field: "page_token",
                        description: err.to_string(),
                    });
                    None
                }
            }
        };
        let Some(account) = account.filter(|_| violations.is_empty()) else {
            return Err(violations);
        };
        Ok(ListRequest {
            account,
            consumer,
            status,
            max_records,
            marker,
            filters,
        })
    }

    fn consumer_account(request: &ListRequest) -> Option<&AccountId> {
        Some(&request.account)
    }

    fn policy_input(request: &ListRequest, _approvals: &ApprovalFacts) -> PolicyInput {
        PolicyInput {
            action: Self::METHOD,
            resource: PolicyResource::ConsumerAccount(request.account.clone()),
            context: vec![
                (
                    "consumer_account",
                    ContextValue::String(request.account.to_string()),
                ),
                (
                    "consumer_arn",
                    ContextValue::String(
                        request
                            .consumer
                            .as_ref()
                            .map(ToString::to_string)
                            .unwrap_or_default(),
                    ),
                ),
                (
                    "status",
                    ContextValue::String(
                        request
                            .status
                            .map(StatusFilter::as_str)
                            .unwrap_or_default()
                            .into(),
                    ),
                ),
            ],
        }
    }

    fn validation_reply(_request: &ListRequest, _decision: &Decision) -> Option<ListReply> {
        // Listing changes nothing, so it has no validate_only.
        None
    }

    fn sample_request() -> ListRequest {
        ListRequest {
            account: super::sample_account(),
            consumer: None,
            status: Some(StatusFilter::Active),
            max_records: DEFAULT_PAGE_SIZE,
            marker: None,
            filters: page_token::filter_fingerprint("444455556666", "", "ACTIVE"),
        }
    }
}

impl Rpc for ListConsumerDataShares {
    type Message = pb::ListConsumerDataSharesRequest;
    type Response = pb::ListConsumerDataSharesResponse;

    fn params(message: pb::ListConsumerDataSharesRequest) -> ListParams {
        ListParams {
            consumer_arn: message.consumer_arn,
            status: message.status,
            page_size: message.page_size,
            page_token: message.page_token,
            consumer_account: message.consumer_account,
        }
    }

    fn response(reply: ListReply) -> pb::ListConsumerDataSharesResponse {
        pb::ListConsumerDataSharesResponse {
            data_shares: reply
                .data_shares
                .into_iter()
                .map(data_share_message)
                .collect(),
            next_page_token: reply.next_page_token,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> ValidationEnv {
        ValidationEnv {
            default_account: Some(AccountId::parse("444455556666").unwrap()),
            partition: crate::arn::Partition::Aws,
        }
    }

    fn validate(params: &ListParams) -> Result<ListRequest, Vec<FieldViolation>> {
        ListConsumerDataShares::validate(params, &env())
    }

    fn fields(params: ListParams) -> Vec<&'static str> {
        validate(&params)
            .unwrap_err()
            .into_iter()
            .map(|v| v.field)
            .collect()
    }

    #[test]
    fn page_size_defaults_and_is_capped() {
        let size = |page_size| {
            validate(&ListParams {
                page_size,
                ..Default::default()
            })
            .unwrap()
            .max_records
        };
        assert_eq!(size(0), 50);
        assert_eq!(size(7), 7);
        assert_eq!(size(100), 100);
        assert_eq!(size(5000), 100);
        assert_eq!(
            fields(ListParams {
                page_size: -1,
                ..Default::default()
            }),
            ["page_size"]
        );
    }

    #[test]
    fn only_active_and_available_can_be_listed_by() {
        for status in [pb::DataShareStatus::Active, pb::DataShareStatus::Available] {
            assert!(
                validate(&ListParams {
                    status: status as i32,
                    ..Default::default()
                })
                .is_ok()
            );
        }
        for status in [pb::DataShareStatus::Rejected as i32, 99] {
            assert_eq!(
                fields(ListParams {
                    status,
                    ..Default::default()
                }),
                ["status"]
            );
        }
    }

    #[test]
    fn the_next_token_brings_back_the_marker_for_the_same_filters_only() {
        let active = ListParams {
            status: pb::DataShareStatus::Active as i32,
            ..Default::default()
        };
        let first = validate(&active).unwrap();
        let token = first.next_page_token(Some("marker-7"));
        let second = validate(&ListParams {
            page_token: token.clone(),
            ..active.clone()
        })
        .unwrap();
        assert_eq!(second.marker.as_deref(), Some("marker-7"));
        assert_eq!(
            fields(ListParams {
                page_token: token,
                status: pb::DataShareStatus::Available as i32,
                ..active
            }),
            ["page_token"]
        );
        assert_eq!(first.next_page_token(None), "");
        assert_eq!(first.next_page_token(Some("")), "");
    }

    #[test]
    fn a_bad_consumer_arn_and_a_bad_token_are_both_named() {
        assert_eq!(
            fields(ListParams {
                consumer_arn: "arn:aws:redshift:us-east-1:444455556666:cluster:x".into(),
                page_token: "tampered".into(),
                ..Default::default()
            }),
            ["consumer_arn", "page_token"]
        );
    }

    #[test]
    fn a_token_is_bound_to_the_account_too() {
        let first = validate(&ListParams::default()).unwrap();
        let token = first.next_page_token(Some("marker-1"));
        assert_eq!(
            fields(ListParams {
                consumer_account: "777788889999".into(),
                page_token: token,
                ..Default::default()
            }),
            ["page_token"]
        );
    }
}
