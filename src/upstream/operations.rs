//! Each operation's Redshift call: which SDK operation it is, how its validated request becomes
//! the SDK's input, and how the SDK's output becomes the operation's reply.

use std::future::Future;
use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sdk_redshift::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_redshift::operation::RequestId;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;

use crate::call::{DataShare, DataShareAssociation, Operation};
use crate::ops::associate::{AssociateReply, AssociateRequest};
use crate::ops::disassociate::{DisassociateReply, DisassociateRequest};
use crate::ops::list::{ListReply, ListRequest};
use crate::ops::{AssociateConsumer, ConsumerTarget, DisassociateConsumer, ListConsumerDataShares};

/// An operation the upstream service can forward to Redshift.
pub trait Forward: Operation {
    /// The Redshift operation (`AssociateDataShareConsumer`), as metrics and spans name it.
    const AWS_OPERATION: &'static str;
    /// The SDK's output type.
    type Output: RequestId + Send;
    /// The SDK's modeled error type.
    type Error: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static;

    /// Sends the request, with `credentials` (a role session) instead of the client's own.
    fn send(
        client: &aws_sdk_redshift::Client,
        request: &Self::Request,
        credentials: Option<Credentials>,
    ) -> impl Future<Output = Result<Self::Output, SdkError<Self::Error, HttpResponse>>> + Send;

    /// The reply for Redshift's answer to `request`.
    fn reply(request: &Self::Request, output: Self::Output) -> Self::Reply;
}

/// The per-call configuration that signs with a role session's credentials.
fn signed_with(credentials: Credentials) -> aws_sdk_redshift::config::Builder {
    aws_sdk_redshift::config::Builder::default().credentials_provider(credentials)
}

/// Sends `$op` (a fluent builder), with `$credentials` if there are any.
macro_rules! send_with {
    ($op:expr, $credentials:expr) => {
        async move {
            match $credentials {
                Some(credentials) => {
                    $op.customize()
                        .config_override(signed_with(credentials))
                        .send()
                        .await
                }
                None => $op.send().await,
            }
        }
    };
}

impl Forward for AssociateConsumer {
    const AWS_OPERATION: &'static str = "AssociateDataShareConsumer";
    type Output =
        aws_sdk_redshift::operation::associate_data_share_consumer::AssociateDataShareConsumerOutput;
    type Error =
        aws_sdk_redshift::operation::associate_data_share_consumer::AssociateDataShareConsumerError;

    fn send(
        client: &aws_sdk_redshift::Client,
        request: &AssociateRequest,
        credentials: Option<Credentials>,
    ) -> impl Future<Output = Result<Self::Output, SdkError<Self::Error, HttpResponse>>> + Send
    {
        let op = client
            .associate_data_share_consumer()
            .data_share_arn(request.data_share.to_string())
            .set_allow_writes(request.allow_writes);
        let op = match &request.consumer {
            ConsumerTarget::EntireAccount => op.associate_entire_account(true),
            ConsumerTarget::Namespace(arn) => op.consumer_arn(arn.to_string()),
            ConsumerTarget::Region(region) => op.consumer_region(region.as_str()),
        };
        send_with!(op, credentials)
    }

    fn reply(_request: &AssociateRequest, out: Self::Output) -> AssociateReply {
        AssociateReply::Associated(data_share(DataShareParts {
            data_share_arn: out.data_share_arn(),
            producer_arn: out.producer_arn(),
            allow_publicly_accessible_consumers: out.allow_publicly_accessible_consumers(),
            associations: out.data_share_associations(),
            managed_by: out.managed_by(),
            data_share_type: out.data_share_type().map(|t| t.as_str()),
        }))
    }
}

impl Forward for DisassociateConsumer {
    const AWS_OPERATION: &'static str = "DisassociateDataShareConsumer";
    type Output = aws_sdk_redshift::operation::disassociate_data_share_consumer::DisassociateDataShareConsumerOutput;
    type Error = aws_sdk_redshift::operation::disassociate_data_share_consumer::DisassociateDataShareConsumerError;

    fn send(
        client: &aws_sdk_redshift::Client,
        request: &DisassociateRequest,
        credentials: Option<Credentials>,
    ) -> impl Future<Output = Result<Self::Output, SdkError<Self::Error, HttpResponse>>> + Send
    {
        let op = client
            .disassociate_data_share_consumer()
            .data_share_arn(request.data_share.to_string());
        let op = match &request.consumer {
            ConsumerTarget::EntireAccount => op.disassociate_entire_account(true),
            ConsumerTarget::Namespace(arn) => op.consumer_arn(arn.to_string()),
            ConsumerTarget::Region(region) => op.consumer_region(region.as_str()),
        };
        send_with!(op, credentials)
    }

    fn reply(_request: &DisassociateRequest, out: Self::Output) -> DisassociateReply {
        DisassociateReply::Disassociated(data_share(DataShareParts {
            data_share_arn: out.data_share_arn(),
            producer_arn: out.producer_arn(),
            allow_publicly_accessible_consumers: out.allow_publicly_accessible_consumers(),
            associations: out.data_share_associations(),
            managed_by: out.managed_by(),
            data_share_type: out.data_share_type().map(|t| t.as_str()),
        }))
    }
}

impl Forward for ListConsumerDataShares {
    const AWS_OPERATION: &'static str = "DescribeDataSharesForConsumer";
    type Output = aws_sdk_redshift::operation::describe_data_shares_for_consumer::DescribeDataSharesForConsumerOutput;
    type Error = aws_sdk_redshift::operation::describe_data_shares_for_consumer::DescribeDataSharesForConsumerError;

    fn send(
        client: &aws_sdk_redshift::Client,
        request: &ListRequest,
        credentials: Option<Credentials>,
    ) -> impl Future<Output = Result<Self::Output, SdkError<Self::Error, HttpResponse>>> + Send
    {
        let op = client
            .describe_data_shares_for_consumer()
            .set_consumer_arn(request.consumer.as_ref().map(ToString::to_string))
            .set_status(
                request
                    .status
                    .map(|s| aws_sdk_redshift::types::DataShareStatusForConsumer::from(s.as_str())),
            )
            .max_records(request.max_records)
            .set_marker(request.marker.clone());
        send_with!(op, credentials)
    }

    fn reply(request: &ListRequest, out: Self::Output) -> ListReply {
        ListReply {
            data_shares: out
                .data_shares()
                .iter()
                .map(|share| {
                    data_share(DataShareParts {
                        data_share_arn: share.data_share_arn(),
                        producer_arn: share.producer_arn(),
                        allow_publicly_accessible_consumers: share
                            .allow_publicly_accessible_consumers(),
                        associations: share.data_share_associations(),
                        managed_by: share.managed_by(),
                        data_share_type: share.data_share_type().map(|t| t.as_str()),
                    })
                })
                .collect(),
            next_page_token: request.next_page_token(out.marker()),
        }
    }
}

/// The datashare members the SDK's output types have in common.
struct DataShareParts<'a> {
    data_share_arn: Option<&'a str>,
    producer_arn: Option<&'a str>,
    allow_publicly_accessible_consumers: Option<bool>,
    associations: &'a [aws_sdk_redshift::types::DataShareAssociation],
    managed_by: Option<&'a str>,
    data_share_type: Option<&'a str>,
}

fn data_share(parts: DataShareParts<'_>) -> DataShare {
    DataShare {
        data_share_arn: parts.data_share_arn.map(str::to_owned),
        producer_arn: parts.producer_arn.map(str::to_owned),
        allow_publicly_accessible_consumers: parts.allow_publicly_accessible_consumers,
        associations: parts
            .associations
            .iter()
            .map(|a| DataShareAssociation {
                consumer_identifier: a.consumer_identifier().map(str::to_owned),
                status: a.status().map(|s| s.as_str().to_owned()),
                consumer_region: a.consumer_region().map(str::to_owned),
                created_date: a.created_date().and_then(|d| SystemTime::try_from(*d).ok()),
                status_change_date: a
                    .status_change_date()
                    .and_then(|d| SystemTime::try_from(*d).ok()),
                producer_allowed_writes: a.producer_allowed_writes(),
                consumer_accepted_writes: a.consumer_accepted_writes(),
            })
            .collect(),
        managed_by: parts.managed_by.map(str::to_owned),
        data_share_type: parts.data_share_type.map(str::to_owned),
    }
}
