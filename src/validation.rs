//! Validation of a decoded `AssociateConsumer` request, before anything else sees it.
//!
//! Every broken rule is reported, each naming its field, so a caller fixes everything in one go.
//! The validation layer runs inside the audit layer, so invalid calls are recorded too, and
//! outside policy and upstream, so nothing invalid is ever evaluated or forwarded.

use std::task::{Context, Poll};

use tower::{Layer, Service};

use crate::arn::{DataShareArn, NamespaceArn, Region};
use crate::call::{
    AssociateCall, AssociateParams, AssociateReply, AssociateRequest, CallFuture, ConsumerTarget,
};
use crate::errors::{FieldViolation, GatewayError};

/// Validates the request's fields and combination.
pub fn validate(params: &AssociateParams) -> Result<AssociateRequest, Vec<FieldViolation>> {
    let mut violations = Vec::new();
    let mut violation = |field: &'static str, description: String| {
        violations.push(FieldViolation { field, description });
    };

    let data_share = match DataShareArn::parse(&params.data_share_arn) {
        Ok(arn) => Some(arn),
        Err(err) => {
            violation("data_share_arn", format!("required; {err}"));
            None
        }
    };

    let given = [
        params.associate_entire_account,
        !params.consumer_arn.is_empty(),
        !params.consumer_region.is_empty(),
    ];
    let consumer = match given.iter().filter(|g| **g).count() {
        0 => {
            violation(
                "associate_entire_account",
                "exactly one of associate_entire_account = true, consumer_arn or consumer_region must be set; none is"
                    .into(),
            );
            None
        }
        1 if params.associate_entire_account => Some(ConsumerTarget::EntireAccount),
        1 if !params.consumer_arn.is_empty() => match NamespaceArn::parse(&params.consumer_arn) {
            Ok(arn) => Some(ConsumerTarget::Namespace(arn)),
            Err(err) => {
                violation("consumer_arn", err.to_string());
                None
            }
        },
        1 => match Region::parse(&params.consumer_region) {
            Ok(region) => Some(ConsumerTarget::Region(region)),
            Err(err) => {
                violation("consumer_region", err.to_string());
                None
            }
        },
        _ => {
            let names = [
                ("associate_entire_account", given[0]),
                ("consumer_arn", given[1]),
                ("consumer_region", given[2]),
            ];
            for (field, set) in names {
                if set {
                    violation(
                        field,
                        "exactly one of associate_entire_account = true, consumer_arn or consumer_region must be set; several are"
                            .into(),
                    );
                }
            }
            None
        }
    };

    match (data_share, consumer) {
        (Some(data_share), Some(consumer)) if violations.is_empty() => Ok(AssociateRequest {
            data_share,
            consumer,
            allow_writes: params.allow_writes,
            validate_only: params.validate_only,
        }),
        _ => Err(violations),
    }
}

/// Validates each call and stores the validated request in it; invalid calls end here.
#[derive(Clone, Debug, Default)]
pub struct ValidateLayer;

impl<S> Layer<S> for ValidateLayer {
    type Service = Validate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Validate { inner }
    }
}

/// The service made by [`ValidateLayer`].
#[derive(Clone, Debug)]
pub struct Validate<S> {
    inner: S,
}

impl<S> Service<AssociateCall> for Validate<S>
where
    S: Service<AssociateCall, Response = AssociateReply, Error = GatewayError>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    type Response = AssociateReply;
    type Error = GatewayError;
    type Future = CallFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut call: AssociateCall) -> Self::Future {
        match validate(&call.params) {
            Ok(request) => {
                call.request = Some(request);
                // Take the service that was driven to readiness; leave a fresh clone behind.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                Box::pin(async move { inner.call(call).await })
            }
            Err(violations) => {
                Box::pin(async move { Err(GatewayError::InvalidArgument(violations)) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
