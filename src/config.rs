//! The gateway's TOML configuration: serde structs that refuse unknown keys, validated once at
//! start with messages that name the key, the value and the rule. Defaults are the safe ones:
//! mTLS on, fail closed.

use std::net::SocketAddr;
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
            max_in_flight_calls: 10_000,
            keepalive_interval_secs: 30,
            keepalive_timeout_secs: 10,
            shutdown_grace_secs: 20,
            instance: None,
            max_connections: 10_000,
            handshake_timeout_ms: 10_000,
            max_concurrent_streams: 100,
            max_pending_accept_reset_streams: 20,
            request_timeout_ms: 30_000,
        }
    }
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
        config.apply_env();
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
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
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
    fn apply_env(&mut self) {
        if let Ok(listen) = std::env::var("DATASHARE_GATEWAY_LISTEN")
            && let Ok(addr) = listen.parse()
        {
            self.server.listen = addr;
        }
        if let Ok(url) = std::env::var("DATASHARE_GATEWAY_ENDPOINT_URL") {
            self.upstream.endpoint_url = Some(url);
        }
    }

    /// Checks every rule; the message names the key, the value and the rule.
    pub fn validate(&self) -> Result<(), String> {
        self.validate_checking(Files::Check)
    }

    /// [`Config::validate`], checking the files the configuration names exist or not as
    /// `files` says.
    pub fn validate_checking(&self, files: Files) -> Result<(), String> {
        let s = &self.server;
        if !(1024..=4 * 1024 * 1024).contains(&s.max_message_bytes) {
            return Err(format!(
                "server.max_message_bytes = {}: must be 1024 to 4194304",
                s.max_message_bytes
            ));
        }
        for (key, value) in [
            ("server.max_connections", s.max_connections as u64),
            ("server.handshake_timeout_ms", s.handshake_timeout_ms),
            (
                "server.max_concurrent_streams",
                u64::from(s.max_concurrent_streams),
            ),
        ] {
            if value == 0 {
                return Err(format!("{key} = 0: must be positive"));
            }
        }
        if s.request_timeout_ms < self.upstream.operation_timeout_ms {
            return Err(format!(
                "server.request_timeout_ms = {}: must be at least upstream.operation_timeout_ms ({} ms)",
                s.request_timeout_ms, self.upstream.operation_timeout_ms
            ));
        }
        if s.concurrency_limit == 0 {
            return Err("server.concurrency_limit = 0: must be positive".into());
        }
        if s.max_in_flight_calls < s.concurrency_limit {
            return Err(format!(
                "server.max_in_flight_calls = {}: must be at least server.concurrency_limit ({})",
                s.max_in_flight_calls, s.concurrency_limit
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
        // A forwarded call must be able to end within the drain, or its outcome is lost to it.
        if s.shutdown_grace_secs.saturating_mul(1000) < self.upstream.operation_timeout_ms {
            return Err(format!(
                "server.shutdown_grace_secs = {}: must be at least upstream.operation_timeout_ms ({} ms), so that a call forwarded before shutdown can end within the drain",
                s.shutdown_grace_secs, self.upstream.operation_timeout_ms
            ));
        }
        if s.keepalive_interval_secs == 0 || s.keepalive_timeout_secs == 0 {
            return Err(
                "server.keepalive_interval_secs and server.keepalive_timeout_secs must be positive"
                    .into(),
            );
        }
        if self.auth.mode == AuthMode::Mtls {
            for (key, value) in [
                ("auth.cert", &self.auth.cert),
                ("auth.key", &self.auth.key),
                ("auth.client_ca", &self.auth.client_ca),
            ] {
                match value {
                    None => return Err(format!("{key}: required when auth.mode = \"mtls\"")),
                    Some(p) if files == Files::Check && !p.is_file() => {
                        return Err(format!("{key} = {}: no such file", p.display()));
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
        match files {
            Files::Check => self.policy.validate(),
            Files::Skip => self.policy.validate_values(),
        }
        .map_err(|e| e.to_string())?;
        self.audit.validate()?;
        if let Some(checkpoint) = &self.audit.checkpoint
            && files == Files::Check
            && !checkpoint.signing_key_file.is_file()
        {
            return Err(format!(
                "audit.checkpoint.signing_key_file = {}: no such file",
                checkpoint.signing_key_file.display()
            ));
        }
        self.approvals.validate()?;
        self.upstream.validate()?;
        let region = self
            .upstream
            .region
            .clone()
            .or_else(|| std::env::var("AWS_REGION").ok())
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok());
        crate::upstream::validate_accounts(&self.accounts, region.as_deref())
            .map_err(|e| e.to_string())?;
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
}
