//! The gateway's TOML configuration: serde structs that refuse unknown keys, validated once at
//! start with messages that name the key, the value and the rule. Defaults are the safe ones:
//! mTLS on, fail closed.

use crate::bounds::in_range;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use crate::approvals::ApprovalsConfig;
use crate::audit::AuditConfig;
use crate::identity::{AuthMode, PrincipalDirectory};
use crate::policy::PolicyConfig;
use crate::upstream::{AccountConfig, UpstreamConfig};

/// The whole configuration file.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[server]`: listeners and limits.
    #[serde(default)]
    pub server: ServerConfig,
    /// `[auth]`: how callers are identified.
    #[serde(default)]
    pub auth: AuthConfig,
    /// `[principals."<id>"]`: each known principal's groups, for policies.
    #[serde(default)]
    pub principals: PrincipalDirectory,
    /// `[policy]`: where the Cedar policies live.
    pub policy: PolicyConfig,
    /// `[audit]`: the durable audit trail.
    pub audit: AuditConfig,
    /// `[upstream]`: how Redshift is reached.
    pub upstream: UpstreamConfig,
    /// `[accounts."<id>"]`: the consumer accounts the gateway acts in through a role.
    #[serde(default)]
    pub accounts: std::collections::BTreeMap<String, AccountConfig>,
    /// `[telemetry]`: logs.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// `[approvals]`: the two-person approvals store.
    #[serde(default)]
    pub approvals: ApprovalsConfig,
}

/// `[server]`
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// The gRPC listen address. Overridden by `DATASHARE_GATEWAY_LISTEN`.
    pub listen: SocketAddr,
    /// A plaintext listener serving only `grpc.health.v1`, for probes that cannot present a
    /// client certificate (the kubelet's gRPC probe). Unset: no such listener.
    pub health_listen: Option<SocketAddr>,
    /// The admin HTTP listener: Prometheus `/metrics`, `/livez` and `/readyz`. Keep it off the
    /// public network.
    pub admin_listen: SocketAddr,
    /// The largest request or response message, in bytes. Requests are small; a tight bound
    /// keeps a misbehaving caller from making the gateway buffer megabytes.
    pub max_message_bytes: usize,
    /// Calls forwarded to Redshift at once; more wait up to `queue_timeout_ms`, then get
    /// `RESOURCE_EXHAUSTED`.
    pub concurrency_limit: usize,
    /// How long a call may wait for a free upstream slot, in milliseconds.
    pub queue_timeout_ms: u64,
    /// Slots of `concurrency_limit` one caller (principal) may hold at once; its further calls
    /// wait in a queue of its own, and freed slots go to the waiting callers in turn. Unset: a
    /// quarter of `concurrency_limit` (at least 1).
    pub per_caller_concurrency: Option<usize>,
    /// Calls of one caller that may wait for a slot; more are refused at once. Unset:
    /// `concurrency_limit`.
    pub per_caller_queue: Option<usize>,
    /// `[server.per_caller_rate]`: a token bucket per caller, checked right after identity.
    /// Unset: no rate.
    pub per_caller_rate: Option<crate::limits::RateConfig>,
    /// Approvals RPCs served at once: a pool of their own, so a flood of Redshift calls does not
    /// keep approvers out (and the other way round), shared between callers as the Redshift
    /// pool is (a quarter each, at least 1).
    pub approvals_concurrency_limit: usize,
    /// Calls in the gateway at once, whatever they are waiting on (policy, the approvals store,
    /// the audit trail, Redshift); more are refused at once with `RESOURCE_EXHAUSTED` and
    /// `RetryInfo`, before any policy or store work. At least `concurrency_limit`.
    pub max_in_flight_calls: usize,
    /// HTTP/2 keepalive ping interval, in seconds.
    pub keepalive_interval_secs: u64,
    /// How long to wait for a keepalive ping's answer, in seconds.
    pub keepalive_timeout_secs: u64,
    /// On SIGTERM/SIGINT, how long in-flight calls may take to finish, in seconds.
    pub shutdown_grace_secs: u64,
    /// This gateway's name in role session tags (`dsgw:gateway`) and logs. Unset: the host
    /// name.
    pub instance: Option<String>,
    /// Connections to the gRPC listener open at once; more are closed on accept.
    pub max_connections: usize,
    /// How long a client may take to finish the TLS handshake, in milliseconds.
    pub handshake_timeout_ms: u64,
    /// A connection with no call open for this long is closed (GOAWAY), in milliseconds: idle
    /// connections would otherwise hold their `max_connections` slot and their buffers for good.
    pub idle_timeout_ms: u64,
    /// Calls one connection may have open at once (HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS`).
    pub max_concurrent_streams: u32,
    /// Streams a client may reset before the server has accepted them (rapid-reset defence).
    pub max_pending_accept_reset_streams: usize,
    /// The longest a call's stream may last, from its first header to its answer, in
    /// milliseconds: bounds headers and bodies that never finish arriving. At least
    /// `upstream.operation_timeout_ms`.
    pub request_timeout_ms: u64,
}

impl ServerConfig {
    /// The Redshift operations' pool.
    pub fn redshift_pool(&self) -> crate::limits::PoolSizes {
        crate::limits::PoolSizes {
            slots: self.concurrency_limit,
            per_caller: self
                .per_caller_concurrency
                .unwrap_or_else(|| self.concurrency_limit.div_ceil(4)),
            queued_per_caller: self.per_caller_queue.unwrap_or(self.concurrency_limit),
        }
    }

    /// The Approvals RPCs' pool.
    pub fn approvals_pool(&self) -> crate::limits::PoolSizes {
        crate::limits::PoolSizes {
            slots: self.approvals_concurrency_limit,
            per_caller: self.approvals_concurrency_limit.div_ceil(4),
            queued_per_caller: self.approvals_concurrency_limit,
        }
    }

    /// `instance`, else the host name, else `datashare-gateway`.
    pub fn instance_name(&self) -> String {
        self.instance
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|h| h.trim().to_owned())
            })
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "datashare-gateway".to_owned())
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 50051)),
            health_listen: None,
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            max_message_bytes: 64 * 1024,
            concurrency_limit: 256,
            queue_timeout_ms: 1000,
            per_caller_concurrency: None,
            per_caller_queue: None,
            per_caller_rate: None,
            approvals_concurrency_limit: 32,
            max_in_flight_calls: 10_000,
            keepalive_interval_secs: 30,
            keepalive_timeout_secs: 10,
            shutdown_grace_secs: 20,
            instance: None,
            max_connections: 10_000,
            handshake_timeout_ms: 10_000,
            idle_timeout_ms: 300_000,
            max_concurrent_streams: 100,
            max_pending_accept_reset_streams: 20,
            request_timeout_ms: 30_000,
        }
    }
}

// The bounds of `[server]`'s durations and counts: every duration stays far from what would
// overflow a timer (hyper adds the keepalive interval to an `Instant`, which panics the worker
// serving the connection on overflow), and every count fits a semaphore.
/// `server.queue_timeout_ms`: 1 ms to a minute.
pub const QUEUE_TIMEOUT_MS: RangeInclusive<u64> = 1..=60_000;
/// `server.keepalive_interval_secs`: a second to an hour.
pub const KEEPALIVE_INTERVAL_SECS: RangeInclusive<u64> = 1..=3_600;
/// `server.keepalive_timeout_secs`: a second to ten minutes.
pub const KEEPALIVE_TIMEOUT_SECS: RangeInclusive<u64> = 1..=600;
/// `server.shutdown_grace_secs`: at most an hour (and at least `upstream.operation_timeout_ms`).
pub const MAX_SHUTDOWN_GRACE_SECS: u64 = 3_600;
/// `server.handshake_timeout_ms`: 1 ms to a minute.
pub const HANDSHAKE_TIMEOUT_MS: RangeInclusive<u64> = 1..=60_000;
/// `server.idle_timeout_ms`: 1 ms to a day.
pub const IDLE_TIMEOUT_MS: RangeInclusive<u64> = 1..=86_400_000;
/// `server.request_timeout_ms`: at most an hour (and at least `upstream.operation_timeout_ms`).
pub const MAX_REQUEST_TIMEOUT_MS: u64 = 3_600_000;
/// `server.concurrency_limit`.
pub const CONCURRENCY_LIMIT: RangeInclusive<usize> = 1..=100_000;
/// `server.per_caller_rate.calls_per_second` and `.burst`.
pub const PER_CALLER_RATE: RangeInclusive<u32> = 1..=1_000_000;
/// `server.max_in_flight_calls` (and at least `server.concurrency_limit`).
pub const MAX_IN_FLIGHT_CALLS: usize = 1_000_000;
/// `server.max_connections`.
pub const MAX_CONNECTIONS: RangeInclusive<usize> = 1..=1_000_000;
/// `server.max_concurrent_streams`.
pub const MAX_CONCURRENT_STREAMS: RangeInclusive<u64> = 1..=10_000;
/// `server.max_pending_accept_reset_streams`: 0 would refuse the first reset stream of every
/// connection (h2 answers it with GOAWAY).
pub const MAX_PENDING_ACCEPT_RESET_STREAMS: RangeInclusive<usize> = 1..=10_000;

/// An error and its causes on one line: `a: b: c`.
fn with_causes(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    message
}

/// Whether two listeners would fight over one port: the same port (not 0, which the kernel
/// picks), and the same address or a wildcard that covers the other (`[::]` covers IPv4 too).
fn listeners_collide(a: SocketAddr, b: SocketAddr) -> bool {
    let covers = |wild: SocketAddr, other: SocketAddr| {
        wild.ip().is_unspecified() && (wild.is_ipv6() || other.is_ipv4())
    };
    a.port() != 0 && a.port() == b.port() && (a.ip() == b.ip() || covers(a, b) || covers(b, a))
}

/// `[auth]`
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// `mtls` (the default): callers present client certificates signed by `client_ca`.
    /// `insecure`: plaintext, the caller names itself in `x-caller-id`; for development only.
    #[serde(default = "default_auth_mode")]
    pub mode: AuthMode,
    /// The server certificate chain (PEM). Required in mtls mode.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// The server private key (PEM). Required in mtls mode.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// The CA bundle that client certificates must chain to (PEM). Required in mtls mode.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

fn default_auth_mode() -> AuthMode {
    AuthMode::Mtls
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            mode: AuthMode::Mtls,
            cert: None,
            key: None,
            client_ca: None,
        }
    }
}

/// How logs are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable on a terminal, JSON otherwise.
    #[default]
    Auto,
    /// One JSON object per line.
    Json,
    /// Human-readable.
    Text,
}

/// `[telemetry]`
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter (`info`, `datashare_gateway=debug`, ...); `RUST_LOG` overrides it.
    pub log_level: String,
    /// OTLP/gRPC collector for traces (`http://collector:4317`). Unset: the standard
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`; neither: no traces.
    pub otlp_endpoint: Option<String>,
    /// The service name on exported spans, unless `OTEL_SERVICE_NAME` is set.
    pub service_name: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            log_format: LogFormat::Auto,
            log_level: "info".into(),
            otlp_endpoint: None,
            service_name: "datashare-gateway".into(),
        }
    }
}

impl TelemetryConfig {
    /// Checks the values; the message names the key, the value and the rule.
    pub fn validate(&self) -> Result<(), String> {
        // `EnvFilter::new` would drop a directive it cannot read and log at its default.
        tracing_subscriber::EnvFilter::try_new(&self.log_level).map_err(|e| {
            format!(
                "telemetry.log_level = {:?}: not a log filter (such as info or \
                 datashare_gateway=debug,info): {e}",
                self.log_level
            )
        })?;
        if let Some(endpoint) = &self.otlp_endpoint {
            let uri = endpoint.parse::<http::Uri>().ok();
            let usable = uri.as_ref().is_some_and(|uri| {
                matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some()
            });
            if !usable {
                return Err(format!(
                    "telemetry.otlp_endpoint = {endpoint:?}: must be an http:// or https:// URL \
                     with a host (http://collector:4317)"
                ));
            }
        }
        if self.service_name.is_empty() {
            return Err("telemetry.service_name = \"\": must not be empty".into());
        }
        Ok(())
    }
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (unknown key, wrong type, missing section).
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message, which names the key and shows the line.
        message: String,
    },
    /// A value breaks a rule.
    #[error("config file {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The key, the value and the rule.
        message: String,
    },
}

/// Whether validation checks that the files a configuration names exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Files {
    /// They must exist: the configuration is about to serve on this machine.
    Check,
    /// Every other rule only: the configuration is meant for a machine whose files are not here,
    /// such as a pod whose certificates and policies are volumes mounted at start.
    Skip,
}

impl Config {
    /// Reads, parses, applies environment overrides and validates a configuration file.
    /// Relative paths in the file are taken relative to the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_checking(path, Files::Check)
    }

    /// [`Config::load`], checking the files the configuration names exist or not as `files`
    /// says.
    pub fn load_checking(path: &Path, files: Files) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        let mut config = Config::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.into(),
            message,
        })?;
        config.resolve_paths(path.parent().unwrap_or(Path::new(".")));
        config.apply_env().map_err(|message| ConfigError::Invalid {
            path: path.into(),
            message,
        })?;
        config
            .validate_checking(files)
            .map_err(|message| ConfigError::Invalid {
                path: path.into(),
                message,
            })?;
        Ok(config)
    }

    /// Parses TOML text (no validation).
    pub fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    fn resolve_paths(&mut self, base: &Path) {
        // An empty path stays empty, for validation to refuse: joined, it would name the
        // config file's directory.
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() && !p.as_os_str().is_empty() {
                *p = base.join(&*p);
            }
        };
        for p in [
            &mut self.auth.cert,
            &mut self.auth.key,
            &mut self.auth.client_ca,
        ]
        .into_iter()
        .flatten()
        {
            resolve(p);
        }
        resolve(&mut self.policy.dir);
        if let Some(schema) = &mut self.policy.schema {
            resolve(schema);
        }
        resolve(&mut self.audit.dir);
        for account in self.accounts.values_mut() {
            if let Some(file) = &mut account.external_id_file {
                resolve(file);
            }
        }
        if let Some(key) = &mut self.audit.hmac_key_file {
            resolve(key);
        }
        // A relative SQLite path is the config file's neighbour, as every other path is.
        if let Some(store) = &mut self.approvals.store
            && let Some(path) = store.strip_prefix("sqlite:")
            && !path.starts_with('/')
            && !path.is_empty()
        {
            *store = format!("sqlite:{}", base.join(path).display());
        }
    }

    /// Environment overrides for endpoints (secrets come from the environment already: AWS
    /// credentials through the default chain, the audit HMAC key through `audit.hmac_key_env`).
    fn apply_env(&mut self) -> Result<(), String> {
        if let Ok(listen) = std::env::var("DATASHARE_GATEWAY_LISTEN") {
            self.server.listen = listen.parse().map_err(|_| {
                format!(
                    "DATASHARE_GATEWAY_LISTEN = {listen:?} (overriding server.listen): must be \
                     an address and port (0.0.0.0:50051)"
                )
            })?;
        }
        if let Ok(url) = std::env::var("DATASHARE_GATEWAY_ENDPOINT_URL") {
            self.upstream.endpoint_url = Some(url);
        }
        Ok(())
    }

    /// Checks every rule; the message names the key, the value and the rule.
    pub fn validate(&self) -> Result<(), String> {
        self.validate_checking(Files::Check)
    }

    /// [`Config::validate`], checking the files the configuration names exist or not as
    /// `files` says. `serve` runs this, through [`Config::load`], before it starts anything, and
    /// `check-config` runs the same: what one refuses, the other does.
    pub fn validate_checking(&self, files: Files) -> Result<(), String> {
        self.validate_values()?;
        match files {
            Files::Check => self.check_sources(),
            Files::Skip => Ok(()),
        }
    }

    /// Every rule on the values themselves: what `check-config --no-files` checks.
    fn validate_values(&self) -> Result<(), String> {
        // Upstream first: the server's rules compare with its timeouts, once they are in range.
        self.upstream.validate()?;
        self.validate_server()?;
        if self.auth.mode == AuthMode::Mtls {
            for (key, value) in [
                ("auth.cert", &self.auth.cert),
                ("auth.key", &self.auth.key),
                ("auth.client_ca", &self.auth.client_ca),
            ] {
                match value {
                    None => return Err(format!("{key}: required when auth.mode = \"mtls\"")),
                    Some(p) if p.as_os_str().is_empty() => {
                        return Err(format!("{key} = \"\": must name a file"));
                    }
                    Some(_) => {}
                }
            }
        }
        for (id, entry) in &self.principals {
            if id.is_empty() {
                return Err("principals: a principal id must not be empty".into());
            }
            if entry.groups.iter().any(|g| g.is_empty()) {
                return Err(format!(
                    "principals.{id:?}.groups: group names must not be empty"
                ));
            }
        }
        self.policy.validate_values().map_err(|e| e.to_string())?;
        self.audit.validate()?;
        self.approvals.validate()?;
        let region = self
            .upstream
            .region
            .clone()
            .or_else(|| std::env::var("AWS_REGION").ok())
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok());
        crate::upstream::validate_accounts(&self.accounts, region.as_deref())
            .map_err(|e| e.to_string())?;
        for (id, account) in &self.accounts {
            if account
                .external_id_file
                .as_ref()
                .is_some_and(|p| p.as_os_str().is_empty())
            {
                return Err(format!(
                    "accounts.\"{id}\".external_id_file = \"\": must name a file"
                ));
            }
        }
        if self.upstream.consumer_account.is_none() && self.accounts.is_empty() {
            return Err("upstream.consumer_account or [accounts]: the gateway must serve at least one consumer account".into());
        }
        if let Some(own) = &self.upstream.consumer_account
            && self.accounts.contains_key(own)
        {
            return Err(format!(
                "upstream.consumer_account = {own:?}: also in [accounts]; serve it one way"
            ));
        }
        if let Some(default) = &self.upstream.default_account
            && !self.accounts.contains_key(default)
            && self.upstream.consumer_account.as_ref() != Some(default)
        {
            return Err(format!(
                "upstream.default_account = {default:?}: not served (not in [accounts], not upstream.consumer_account)"
            ));
        }
        self.telemetry.validate()?;
        Ok(())
    }

    fn validate_server(&self) -> Result<(), String> {
        let s = &self.server;
        let operation_ms = self.upstream.operation_timeout_ms;
        if !(1024..=4 * 1024 * 1024).contains(&s.max_message_bytes) {
            return Err(format!(
                "server.max_message_bytes = {}: must be 1024 to 4194304",
                s.max_message_bytes
            ));
        }
        for (key, value, range) in [
            (
                "server.queue_timeout_ms",
                s.queue_timeout_ms,
                &QUEUE_TIMEOUT_MS,
            ),
            (
                "server.keepalive_interval_secs",
                s.keepalive_interval_secs,
                &KEEPALIVE_INTERVAL_SECS,
            ),
            (
                "server.keepalive_timeout_secs",
                s.keepalive_timeout_secs,
                &KEEPALIVE_TIMEOUT_SECS,
            ),
            (
                "server.handshake_timeout_ms",
                s.handshake_timeout_ms,
                &HANDSHAKE_TIMEOUT_MS,
            ),
            (
                "server.idle_timeout_ms",
                s.idle_timeout_ms,
                &IDLE_TIMEOUT_MS,
            ),
            (
                "server.max_concurrent_streams",
                u64::from(s.max_concurrent_streams),
                &MAX_CONCURRENT_STREAMS,
            ),
        ] {
            in_range(key, value, range)?;
        }
        for (key, value, range) in [
            (
                "server.concurrency_limit",
                s.concurrency_limit,
                &CONCURRENCY_LIMIT,
            ),
            (
                "server.max_connections",
                s.max_connections,
                &MAX_CONNECTIONS,
            ),
            (
                "server.approvals_concurrency_limit",
                s.approvals_concurrency_limit,
                &CONCURRENCY_LIMIT,
            ),
            (
                "server.max_pending_accept_reset_streams",
                s.max_pending_accept_reset_streams,
                &MAX_PENDING_ACCEPT_RESET_STREAMS,
            ),
        ] {
            in_range(key, value, range)?;
        }
        in_range(
            "server.max_in_flight_calls",
            s.max_in_flight_calls,
            &(s.concurrency_limit..=MAX_IN_FLIGHT_CALLS),
        )
        .map_err(|e| format!("{e} (at least server.concurrency_limit)"))?;
        if let Some(per_caller) = s.per_caller_concurrency {
            in_range(
                "server.per_caller_concurrency",
                per_caller,
                &(1..=s.concurrency_limit),
            )
            .map_err(|e| format!("{e} (at most server.concurrency_limit)"))?;
        }
        if let Some(queue) = s.per_caller_queue {
            in_range(
                "server.per_caller_queue",
                queue,
                &(1..=s.max_in_flight_calls),
            )
            .map_err(|e| format!("{e} (at most server.max_in_flight_calls)"))?;
        }
        if let Some(rate) = s.per_caller_rate {
            in_range(
                "server.per_caller_rate.calls_per_second",
                rate.calls_per_second,
                &PER_CALLER_RATE,
            )?;
            in_range("server.per_caller_rate.burst", rate.burst, &PER_CALLER_RATE)?;
        }
        if !(operation_ms..=MAX_REQUEST_TIMEOUT_MS).contains(&s.request_timeout_ms) {
            return Err(format!(
                "server.request_timeout_ms = {}: must be at least upstream.operation_timeout_ms \
                 ({operation_ms} ms) and at most {MAX_REQUEST_TIMEOUT_MS}",
                s.request_timeout_ms
            ));
        }
        // A forwarded call must be able to end within the drain, or its outcome is lost to it.
        if s.shutdown_grace_secs.saturating_mul(1000) < operation_ms {
            return Err(format!(
                "server.shutdown_grace_secs = {}: must be at least upstream.operation_timeout_ms ({operation_ms} ms), so that a call forwarded before shutdown can end within the drain",
                s.shutdown_grace_secs
            ));
        }
        if s.shutdown_grace_secs > MAX_SHUTDOWN_GRACE_SECS {
            return Err(format!(
                "server.shutdown_grace_secs = {}: must be at most {MAX_SHUTDOWN_GRACE_SECS}",
                s.shutdown_grace_secs
            ));
        }
        // It names the log in checkpoints (`datashare-gateway/<instance>`, a signed note's key
        // name: no spaces or `+`) and the S3 key prefix of shipped files.
        if let Some(instance) = &s.instance
            && (instance.is_empty()
                || instance.len() > 63
                || !instance
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')))
        {
            return Err(format!(
                "server.instance = {instance:?}: must be 1-63 letters, digits, dots, hyphens \
                 or underscores"
            ));
        }
        let mut listeners = vec![
            ("server.listen", s.listen),
            ("server.admin_listen", s.admin_listen),
        ];
        if let Some(health) = s.health_listen {
            listeners.push(("server.health_listen", health));
        }
        for (i, (key, addr)) in listeners.iter().enumerate() {
            if let Some((other, other_addr)) = listeners[..i]
                .iter()
                .find(|(_, earlier)| listeners_collide(*earlier, *addr))
            {
                return Err(format!(
                    "{key} = {addr}: the same port as {other} ({other_addr}); each listener \
                     needs its own"
                ));
            }
        }
        Ok(())
    }

    /// What the files and environment variables the configuration names hold, read and parsed
    /// as the start reads them, then dropped: TLS material, the policy set and its schema, the
    /// audit keys, the external ids. `--no-files` skips these: they exist only where the gateway
    /// runs (a pod's mounted Secrets and their variables).
    fn check_sources(&self) -> Result<(), String> {
        if self.auth.mode == AuthMode::Mtls {
            let mut pems = Vec::new();
            for (key, value) in [
                ("auth.cert", &self.auth.cert),
                ("auth.key", &self.auth.key),
                ("auth.client_ca", &self.auth.client_ca),
            ] {
                let path = value.as_deref().unwrap_or(Path::new(""));
                if !path.is_file() {
                    return Err(format!("{key} = {}: no such file", path.display()));
                }
                pems.push(
                    std::fs::read(path)
                        .map_err(|e| format!("{key} = {}: cannot read it: {e}", path.display()))?,
                );
            }
            crate::accept::mtls_acceptor(&pems[0], &pems[1], &pems[2])
                .map_err(|e| with_causes(&e))?;
        }
        self.policy.validate().map_err(|e| e.to_string())?;
        self.policy.check_schema()?;
        crate::policy::Policies::validate_set(&self.policy, &crate::operations::policy_probes())
            .map_err(|e| match e {
                crate::policy::PolicyError::Config { .. } => e.to_string(),
                _ => format!(
                    "policy.dir = {:?}: {}",
                    self.policy.dir.display().to_string(),
                    with_causes(&e)
                ),
            })?;
        self.audit.check_keys()?;
        crate::upstream::Accounts::load(&self.accounts, self.upstream.own_account().as_ref())
            .map_err(|e| with_causes(&e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[auth]
mode = "insecure"
[policy]
dir = "examples/policies"
[audit]
dir = "/tmp/audit"
[upstream]
consumer_account = "444455556666"
"#;

    #[test]
    fn the_production_example_parses_with_safe_defaults() {
        let config = Config::parse(include_str!("../examples/gateway.toml")).unwrap();
        assert_eq!(config.auth.mode, AuthMode::Mtls);
        assert_eq!(config.upstream.consumer_account, None);
        assert_eq!(
            config.upstream.default_account.as_deref(),
            Some("444455556666")
        );
        assert_eq!(config.accounts.len(), 2);
        assert!(
            crate::upstream::validate_accounts(&config.accounts, config.upstream.region.as_deref())
                .is_ok()
        );
        assert!(config.server.health_listen.is_some());
        assert_eq!(
            config.audit.hmac_key_env.as_deref(),
            Some("DATASHARE_GATEWAY_AUDIT_KEY")
        );
    }

    #[test]
    fn mtls_is_the_default_and_needs_its_files() {
        let text = MINIMAL.replace("mode = \"insecure\"", "");
        let config = Config::parse(&text).unwrap();
        assert_eq!(config.auth.mode, AuthMode::Mtls);
        let err = config.validate().unwrap_err();
        assert!(err.starts_with("auth.cert"), "{err}");
    }

    #[test]
    fn skipping_files_checks_every_other_rule() {
        // The production example names certificates and a policy directory that exist only in
        // its pod.
        let config = Config::parse(include_str!("../examples/gateway.toml")).unwrap();
        let err = config.validate().unwrap_err();
        assert!(
            err.starts_with("auth.cert = /etc/datashare-gateway/tls/tls.crt"),
            "{err}"
        );
        config.validate_checking(Files::Skip).unwrap();

        let mut config = config;
        config.server.shutdown_grace_secs = 1;
        let err = config.validate_checking(Files::Skip).unwrap_err();
        assert!(err.starts_with("server.shutdown_grace_secs = 1"), "{err}");
        let mut config = Config::parse(include_str!("../examples/gateway.toml")).unwrap();
        config.policy.poll_interval_secs = crate::policy::MAX_POLL_INTERVAL_SECS + 1;
        let err = config.validate_checking(Files::Skip).unwrap_err();
        assert!(err.starts_with("policy.poll_interval_secs"), "{err}");
        let mut config = Config::parse(include_str!("../examples/gateway.toml")).unwrap();
        config.auth.client_ca = None;
        let err = config.validate_checking(Files::Skip).unwrap_err();
        assert!(err.starts_with("auth.client_ca: required"), "{err}");
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = Config::parse(&format!("{MINIMAL}\n[server]\nlisten_port = 1\n")).unwrap_err();
        assert!(err.contains("listen_port"), "{err}");
    }

    #[test]
    fn bad_values_name_the_key_value_and_rule() {
        let mut config = Config::parse(MINIMAL).unwrap();
        config.server.max_message_bytes = 10;
        let err = config.validate().unwrap_err();
        assert!(
            err.contains("server.max_message_bytes = 10") && err.contains("1024"),
            "{err}"
        );
        let mut config = Config::parse(MINIMAL).unwrap();
        config.upstream.endpoint_url = Some("localhost:4566".into());
        let err = config.validate().unwrap_err();
        assert!(err.contains("upstream.endpoint_url"), "{err}");
    }

    #[test]
    fn the_instance_names_a_log_origin_and_an_s3_prefix() {
        for bad in ["", "gw 0", "gw+0", "gw/0"] {
            let mut config = Config::parse(MINIMAL).unwrap();
            config.server.instance = Some(bad.into());
            let err = config.validate().unwrap_err();
            assert!(err.contains("server.instance"), "{bad:?}: {err}");
        }
        let mut config = Config::parse(MINIMAL).unwrap();
        config.server.instance = Some("datashare-gateway-0.eu_1".into());
        assert!(config.validate().is_ok());
    }

    #[test]
    fn a_missing_checkpoint_key_is_named_unless_files_are_skipped() {
        let text = MINIMAL.replace(
            "[upstream]",
            "[audit.checkpoint]\nsigning_key_file = \"/nonexistent/checkpoint.key\"\n[upstream]",
        );
        let config = Config::parse(&text).unwrap();
        let err = config.validate().unwrap_err();
        assert!(err.contains("audit.checkpoint.signing_key_file"), "{err}");
        assert!(config.validate_checking(Files::Skip).is_ok());
    }

    /// Every bounded duration key of every section: its largest allowed value and a setter.
    type Bound = (&'static str, u64, fn(&mut Config, u64));

    fn duration_bounds() -> Vec<Bound> {
        vec![
            ("server.queue_timeout_ms", 60_000, |c, v| {
                c.server.queue_timeout_ms = v
            }),
            ("server.keepalive_interval_secs", 3_600, |c, v| {
                c.server.keepalive_interval_secs = v
            }),
            ("server.keepalive_timeout_secs", 600, |c, v| {
                c.server.keepalive_timeout_secs = v
            }),
            ("server.shutdown_grace_secs", 3_600, |c, v| {
                c.server.shutdown_grace_secs = v
            }),
            ("server.handshake_timeout_ms", 60_000, |c, v| {
                c.server.handshake_timeout_ms = v
            }),
            ("server.idle_timeout_ms", 86_400_000, |c, v| {
                c.server.idle_timeout_ms = v
            }),
            ("server.request_timeout_ms", 3_600_000, |c, v| {
                c.server.request_timeout_ms = v
            }),
            ("upstream.min_remaining_deadline_ms", 60_000, |c, v| {
                c.upstream.min_remaining_deadline_ms = v
            }),
            ("upstream.initial_backoff_ms", 60_000, |c, v| {
                c.upstream.initial_backoff_ms = v
            }),
            ("upstream.connect_timeout_ms", 60_000, |c, v| {
                c.upstream.connect_timeout_ms = v
            }),
            ("upstream.attempt_timeout_ms", 600_000, |c, v| {
                c.upstream.attempt_timeout_ms = v
            }),
            ("upstream.operation_timeout_ms", 600_000, |c, v| {
                c.upstream.operation_timeout_ms = v
            }),
            ("upstream.throttle_retry_after_ms", 600_000, |c, v| {
                c.upstream.throttle_retry_after_ms = v
            }),
            ("audit.write_timeout_ms", 60_000, |c, v| {
                c.audit.write_timeout_ms = v
            }),
            ("audit.checkpoint.interval_secs", 86_400, |c, v| {
                if let Some(checkpoint) = &mut c.audit.checkpoint {
                    checkpoint.interval_secs = v;
                }
            }),
            (
                "approvals.ttl_secs",
                crate::approvals::MAX_TTL_SECS,
                |c, v| c.approvals.ttl_secs = v,
            ),
            ("approvals.sweep_interval_secs", 3_600, |c, v| {
                c.approvals.sweep_interval_secs = v
            }),
            (
                "policy.poll_interval_secs",
                crate::policy::MAX_POLL_INTERVAL_SECS,
                |c, v| c.policy.poll_interval_secs = v,
            ),
            (
                "accounts.\"444455556666\".session_duration_secs",
                43_200,
                |c, v| {
                    for account in c.accounts.values_mut() {
                        account.session_duration_secs = v;
                    }
                },
            ),
        ]
    }

    #[test]
    fn every_duration_is_bounded_so_none_can_overflow_a_timer() {
        let with_checkpoint = |text: &str| {
            let mut config = Config::parse(text).unwrap();
            config.audit.checkpoint = Some(crate::audit::CheckpointConfig {
                signing_key_file: "/k".into(),
                interval_records: 1000,
                interval_secs: 60,
            });
            config
        };
        let example = include_str!("../examples/gateway.toml");
        let mut largest = with_checkpoint(example);
        for (_, max, set) in duration_bounds() {
            set(&mut largest, max);
        }
        largest.validate_checking(Files::Skip).unwrap();
        for (key, max, set) in duration_bounds() {
            for value in [max + 1, u64::MAX] {
                let mut config = largest.clone();
                set(&mut config, value);
                let err = config.validate_checking(Files::Skip).unwrap_err();
                assert!(err.starts_with(key), "{key} = {value}: {err}");
            }
        }
    }

    #[test]
    fn listeners_that_share_a_port_collide_unless_the_kernel_picks_it() {
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(listeners_collide(
            addr("0.0.0.0:9464"),
            addr("127.0.0.1:9464")
        ));
        assert!(listeners_collide(addr("[::]:9464"), addr("127.0.0.1:9464")));
        assert!(listeners_collide(addr("10.0.0.1:1"), addr("10.0.0.1:1")));
        assert!(!listeners_collide(addr("127.0.0.1:0"), addr("127.0.0.1:0")));
        assert!(!listeners_collide(addr("10.0.0.1:1"), addr("10.0.0.2:1")));
        assert!(!listeners_collide(addr("0.0.0.0:1"), addr("[::1]:1")));
        assert!(!listeners_collide(addr("0.0.0.0:1"), addr("0.0.0.0:2")));
    }

    #[test]
    fn telemetry_values_must_parse() {
        let mut telemetry = TelemetryConfig::default();
        telemetry.validate().unwrap();
        telemetry.log_level = "datashare_gateway=debug,info".into();
        telemetry.validate().unwrap();
        telemetry.otlp_endpoint = Some("https://collector.internal:4317".into());
        telemetry.validate().unwrap();
        for bad in ["not a url", "collector:4317", "http://", ""] {
            telemetry.otlp_endpoint = Some(bad.into());
            let err = telemetry.validate().unwrap_err();
            assert!(err.starts_with("telemetry.otlp_endpoint"), "{bad}: {err}");
        }
        telemetry.otlp_endpoint = None;
        telemetry.log_level = "not a filter[[".into();
        let err = telemetry.validate().unwrap_err();
        assert!(err.starts_with("telemetry.log_level"), "{err}");
    }

    #[test]
    fn an_empty_path_is_refused_not_taken_for_the_config_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, MINIMAL.replace("dir = \"/tmp/audit\"", "dir = \"\"")).unwrap();
        let err = Config::load_checking(&path, Files::Skip).unwrap_err();
        assert!(err.to_string().contains("audit.dir = \"\""), "{err}");
    }
}
