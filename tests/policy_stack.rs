//! Identity, validation and policy wired as the server will wire them (public API only): who may
//! do what with the example policies, and that nothing denied reaches the upstream service.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Instant, SystemTime};

use datashare_gateway::arn::AccountId;
use datashare_gateway::call::{
    AssociateCall, AssociateParams, AssociateReply, CallContext, CallerCredential, Method, Trail,
};
use datashare_gateway::errors::GatewayError;
use datashare_gateway::identity::{IdentityLayer, PrincipalDirectory};
use datashare_gateway::policy::{Policies, PolicyConfig, PolicyLayer};
use datashare_gateway::validation::ValidateLayer;
use tonic::Code;
use tower::{Service, ServiceBuilder, ServiceExt};

const SALES: &str = "arn:aws:redshift:us-east-1:111122223333:datashare:9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f/sales_share";
const SERVERLESS: &str = "arn:aws:redshift-serverless:us-east-1:444455556666:namespace/0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9";

fn examples() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/policies")
}

fn directory() -> PrincipalDirectory {
    #[derive(serde::Deserialize)]
    struct File {
        principals: PrincipalDirectory,
    }
    let text = std::fs::read_to_string(examples().join("principals.toml")).unwrap();
    toml::from_str::<File>(&text).unwrap().principals
}

fn call(credential: CallerCredential, params: AssociateParams) -> AssociateCall {
    AssociateCall {
        ctx: CallContext {
            method: Method::AssociateConsumer,
            request_id: "req".into(),
            trace_id: None,
            peer: None,
            credential,
            principal: None,
            received_at: SystemTime::now(),
            started: Instant::now(),
            deadline: None,
        },
        params,
        request: None,
        trail: Arc::new(Trail::default()),
    }
}

fn cert(id: &str) -> CallerCredential {
    CallerCredential::Certificate(id.into())
}

#[tokio::test]
async fn the_stack_authenticates_validates_and_authorizes_before_forwarding() {
    let policies = Policies::load(
        PolicyConfig::new(examples()),
        AccountId::parse("444455556666").unwrap(),
    )
    .unwrap();
    let forwarded = Arc::new(AtomicUsize::new(0));
    let upstream = {
        let forwarded = forwarded.clone();
        tower::service_fn(move |_call: AssociateCall| {
            forwarded.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, GatewayError>(AssociateReply::Associated(Default::default())) }
        })
    };
    let mut stack = ServiceBuilder::new()
        .layer(IdentityLayer::new(Arc::new(directory())))
        .layer(ValidateLayer)
        .layer(PolicyLayer::new(policies))
        .service(upstream);

    let namespace = AssociateParams {
        data_share_arn: SALES.into(),
        consumer_arn: SERVERLESS.into(),
        ..Default::default()
    };
    let entire = AssociateParams {
        data_share_arn: SALES.into(),
        associate_entire_account: true,
        ..Default::default()
    };
    let cases = [
        (
            CallerCredential::None,
            namespace.clone(),
            Err(Code::Unauthenticated),
        ),
        (
            cert("spiffe://example.internal/ns/analytics/sa/notebook"),
            namespace.clone(),
            Ok(()),
        ),
        (
            cert("spiffe://example.internal/ns/analytics/sa/notebook"),
            entire.clone(),
            Err(Code::PermissionDenied),
        ),
        (
            cert("spiffe://example.internal/ns/data/sa/reporting"),
            entire.clone(),
            Ok(()),
        ),
        (
            cert("spiffe://example.internal/ns/web/sa/frontend"),
            namespace.clone(),
            Err(Code::PermissionDenied),
        ),
        (
            cert("spiffe://example.internal/ns/data/sa/reporting"),
            AssociateParams {
                allow_writes: Some(true),
                ..namespace.clone()
            },
            Err(Code::PermissionDenied),
        ),
        (
            cert("spiffe://example.internal/ns/data/sa/loader"),
            AssociateParams {
                allow_writes: Some(true),
                ..namespace.clone()
            },
            Ok(()),
        ),
        (
            cert("spiffe://example.internal/ns/data/sa/reporting"),
            AssociateParams {
                consumer_arn: "nope".into(),
                ..namespace.clone()
            },
            Err(Code::InvalidArgument),
        ),
    ];
    let mut expected_forwards = 0;
    for (credential, params, expected) in cases {
        let description = format!("{credential:?} {params:?}");
        let result = stack
            .ready()
            .await
            .unwrap()
            .call(call(credential, params))
            .await;
        match expected {
            Ok(()) => {
                expected_forwards += 1;
                assert!(
                    matches!(result, Ok(AssociateReply::Associated(_))),
                    "{description}: {result:?}"
                );
            }
            Err(code) => assert_eq!(result.unwrap_err().code(), code, "{description}"),
        }
        assert_eq!(
            forwarded.load(Ordering::SeqCst),
            expected_forwards,
            "{description}"
        );
    }

    // validate_only: the decision comes back and nothing is forwarded.
    let result = stack
        .ready()
        .await
        .unwrap()
        .call(call(
            cert("spiffe://example.internal/ns/data/sa/reporting"),
            AssociateParams {
                validate_only: true,
                ..entire
            },
        ))
        .await
        .unwrap();
    let AssociateReply::Validated(decision) = result else {
        panic!("expected Validated, got {result:?}");
    };
    assert!(decision.allowed);
    assert_eq!(
        decision.determining_policies,
        ["data-platform-associate-in-org"]
    );
    assert_eq!(forwarded.load(Ordering::SeqCst), expected_forwards);
}
