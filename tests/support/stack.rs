//! The real middleware stack (`server::build_stack`) in-process, over a stand-in for Redshift:
//! for tests of layer order and of what reaches the upstream service.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use datashare_gateway::approvals::ClearedCall;
use datashare_gateway::arn::AccountId;
use datashare_gateway::audit::AuditLog;
use datashare_gateway::call::{Call, CallContext, CallerCredential, Operation, ValidationEnv};
use datashare_gateway::errors::GatewayError;
use datashare_gateway::identity::PrincipalDirectory;
use datashare_gateway::metrics::Metrics;
use datashare_gateway::policy::{Policies, PolicyConfig};
use datashare_gateway::server::StackParts;
use datashare_gateway::upstream::Accounts;
use std::collections::BTreeMap;

/// The shipped example policies.
pub fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/policies")
}

/// The shipped example policies, loaded as `dev` loads them (consumer account 444455556666).
pub fn example_policies() -> Policies {
    Policies::load(
        PolicyConfig::new(examples_dir()),
        datashare_gateway::operations::policy_probes(),
    )
    .expect("the example policies load")
}

/// The dev principals and their groups (`examples/policies/principals.toml`).
pub fn example_principals() -> PrincipalDirectory {
    #[derive(serde::Deserialize)]
    struct File {
        principals: PrincipalDirectory,
    }
    let text = std::fs::read_to_string(examples_dir().join("principals.toml")).expect("read");
    toml::from_str::<File>(&text).expect("parse").principals
}

/// Stack parts with the example policies and principals, writing to `audit`, serving the
/// consumer account 444455556666 (also the default account). The concurrency limit is out of the
/// way: these tests are about the other layers (limits have their own).
pub fn parts(audit: AuditLog) -> StackParts {
    let account = AccountId::parse("444455556666").expect("account");
    StackParts {
        validation: ValidationEnv {
            default_account: Some(account.clone()),
            partition: datashare_gateway::arn::Partition::Aws,
        },
        accounts: Arc::new(Accounts::load(&BTreeMap::new(), Some(&account)).expect("accounts")),
        ..StackParts::new(
            Metrics::new(),
            audit,
            Arc::new(example_principals()),
            example_policies(),
            100_000,
            Duration::from_secs(10),
        )
    }
}

/// A call of `Op` from `credential`, as the handler would make it.
pub fn call<Op: Operation>(
    credential: CallerCredential,
    request_id: &str,
    params: Op::Params,
) -> Call<Op> {
    Call::new(
        CallContext {
            method: Op::METHOD,
            request_id: request_id.into(),
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
            peer: Some("127.0.0.1:40000".parse().expect("addr")),
            credential,
            received_at: SystemTime::now(),
            started: Instant::now(),
            deadline: None,
            malformed_timeout: None,
        },
        params,
    )
}

/// `x-caller-id` (insecure mode) naming `principal`.
pub fn caller(principal: &str) -> CallerCredential {
    CallerCredential::Header(principal.into())
}

/// Stands in for Redshift: counts the calls that reach it, notes them as forwarded with an AWS
/// request id of `aws-<request id>`, and answers with `reply()`.
#[derive(Clone)]
pub struct FakeUpstream<R> {
    pub forwarded: Arc<AtomicUsize>,
    reply: Arc<dyn Fn() -> R + Send + Sync>,
}

impl<R> std::fmt::Debug for FakeUpstream<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeUpstream").finish_non_exhaustive()
    }
}

impl<R> FakeUpstream<R> {
    pub fn new(reply: impl Fn() -> R + Send + Sync + 'static) -> Self {
        FakeUpstream {
            forwarded: Arc::default(),
            reply: Arc::new(reply),
        }
    }

    pub fn count(&self) -> usize {
        self.forwarded.load(Ordering::SeqCst)
    }
}

impl<Op> tower::Service<ClearedCall<Op>> for FakeUpstream<Op::Reply>
where
    Op: Operation,
{
    type Response = Op::Reply;
    type Error = GatewayError;
    type Future = std::future::Ready<Result<Op::Reply, GatewayError>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), GatewayError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: ClearedCall<Op>) -> Self::Future {
        self.forwarded.fetch_add(1, Ordering::SeqCst);
        let mut notes = call.notes.lock();
        notes.forwarded = true;
        notes.upstream.aws_request_id = Some(format!("aws-{}", call.ctx.request_id));
        std::future::ready(Ok((self.reply)()))
    }
}
