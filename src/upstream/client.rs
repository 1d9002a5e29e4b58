//! The shared Redshift and STS clients ([`build_client`], [`Client`]), built from the default AWS
//! configuration chain with the gateway's retry and timeout settings, optionally signing with a
//! fixed key ([`StaticCredentials`]), and the interceptor that counts the SDK's retries by
//! operation (`RetryCounter`).

use std::sync::Arc;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_sdk_redshift::config::retry::RetryConfig;
use aws_sdk_redshift::config::timeout::TimeoutConfig;
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::{ConnectorBuilder, tls};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::retries::RequestAttempts;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

use super::UpstreamConfig;
use crate::metrics::Metrics;

/// Builds the shared Redshift and STS clients from the default AWS configuration chain
/// (credentials, region), with the gateway's retry and timeout settings. `credentials` replaces
/// the default credential chain (used by `dev`, which signs as the emulator's platform account).
/// Retries are counted by operation, for `operations` (`operations::redshift_operations`); any
/// other is counted as `other`.
pub async fn build_client(
    config: &UpstreamConfig,
    credentials: Option<StaticCredentials>,
    metrics: Arc<Metrics>,
    operations: Vec<&'static str>,
) -> Client {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(config.max_attempts)
                .with_initial_backoff(Duration::from_millis(config.initial_backoff_ms)),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
                .operation_attempt_timeout(Duration::from_millis(config.attempt_timeout_ms))
                .operation_timeout(Duration::from_millis(config.operation_timeout_ms))
                .build(),
        );
    loader = loader.http_client(https_client(config));
    if let Some(region) = &config.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    // DATASHARE_GATEWAY_ENDPOINT_URL is applied once, by `Config::load`; `dev` builds its
    // config in code and must keep pointing at its own emulator.
    if let Some(url) = &config.endpoint_url {
        loader = loader.endpoint_url(url.clone());
    }
    if let Some(credentials) = credentials {
        loader = loader.credentials_provider(aws_credential_types::Credentials::new(
            credentials.access_key_id,
            credentials.secret_access_key,
            None,
            None,
            "static",
        ));
    }
    let shared = loader.load().await;
    let conf = aws_sdk_redshift::config::Builder::from(&shared)
        .interceptor(RetryCounter {
            metrics,
            operations: operations.into(),
        })
        .build();
    Client {
        redshift: aws_sdk_redshift::Client::from_conf(conf),
        sts: aws_sdk_sts::Client::new(&shared),
    }
}

/// The SDK's default HTTPS client (hyper 1, rustls with aws-lc, the proxy from the environment),
/// with a bounded connection pool: a burst of calls opens up to `max_concurrent_requests`
/// connections, and the SDK's default keeps every one of them idle for 90 s.
fn https_client(config: &UpstreamConfig) -> SharedHttpClient {
    let max_idle = config.pool_max_idle_per_host;
    let idle_timeout = Duration::from_millis(config.pool_idle_timeout_ms);
    aws_smithy_http_client::Builder::new().build_with_connector_fn(
        move |settings, runtime_components| {
            let mut connector = ConnectorBuilder::default()
                .tls_provider(tls::Provider::Rustls(
                    tls::rustls_provider::CryptoMode::AwsLc,
                ))
                .pool_max_idle_per_host(max_idle)
                .pool_idle_timeout(idle_timeout);
            connector.set_connector_settings(settings.cloned());
            if let Some(components) = runtime_components {
                connector.set_sleep_impl(components.sleep_impl());
            }
            connector.set_proxy_config(Some(ProxyConfig::from_env()));
            connector.build()
        },
    )
}

/// The shared Redshift and STS clients; cheap to clone.
#[derive(Clone, Debug)]
pub struct Client {
    pub(super) redshift: aws_sdk_redshift::Client,
    pub(super) sts: aws_sdk_sts::Client,
}

impl Client {
    /// The region the clients send to (`upstream.region`, else the default chain's).
    pub fn region(&self) -> Option<&str> {
        self.redshift
            .config()
            .region()
            .map(|region| region.as_ref())
    }
}

/// A fixed access key, instead of the default credential chain.
#[derive(Clone)]
pub struct StaticCredentials {
    /// The access key id.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: String,
}

impl std::fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticCredentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// Counts the SDK's retries (attempts after the first) for the metrics.
#[derive(Debug)]
struct RetryCounter {
    metrics: Arc<Metrics>,
    /// The operations named in the metric's label: a bounded set.
    operations: Arc<[&'static str]>,
}

impl Intercept for RetryCounter {
    fn name(&self) -> &'static str {
        "RetryCounter"
    }

    fn read_before_attempt(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if cfg
            .load::<RequestAttempts>()
            .is_some_and(|a| a.attempts() > 1)
        {
            let name = cfg.load::<Metadata>().map(Metadata::name);
            let operation = self
                .operations
                .iter()
                .copied()
                .find(|operation| Some(*operation) == name)
                .unwrap_or("other");
            self.metrics.upstream_retry(operation);
        }
        Ok(())
    }
}
