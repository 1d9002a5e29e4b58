//! The `[audit]` section of the gateway configuration.

use std::path::PathBuf;

/// `[audit]` section of the gateway config.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Directory of the audit files; made (mode 0700) at start if missing.
    pub dir: PathBuf,
    /// A file is closed and a new one started once it holds this many bytes (a file may exceed
    /// it by one batch). Default 64 MiB.
    #[serde(default = "default_max_file_bytes")]
    pub max_file_bytes: u64,
    /// Records waiting for the writer; a full queue makes callers wait. Default 4096.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// Most records made durable by one write and one fsync. Default 1024.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// File holding the HMAC-SHA256 key of the chain (trailing whitespace ignored, at least
    /// 16 bytes). Without a key the chain is plain SHA-256.
    #[serde(default)]
    pub hmac_key_file: Option<PathBuf>,
    /// Environment variable holding the HMAC-SHA256 key; exclusive with `hmac_key_file`.
    #[serde(default)]
    pub hmac_key_env: Option<String>,
    /// Also print every durable record as a JSON line on stdout. The file stays the system of
    /// record. Default false.
    #[serde(default)]
    pub mirror_stdout: bool,
    /// fsync every batch. Default true; false is only for benchmarks (records are then not
    /// durable when acknowledged).
    #[serde(default = "default_sync")]
    pub sync: bool,
    /// How long a record may take to become durable, in milliseconds. A slower append fails its
    /// call (UNAVAILABLE, nothing forwarded), and a write stuck longer than this turns health
    /// NOT_SERVING: a hung disk must not hang every call while readiness says all is well.
    #[serde(default = "default_write_timeout_ms")]
    pub write_timeout_ms: u64,
}

fn default_write_timeout_ms() -> u64 {
    2_000
}

fn default_max_file_bytes() -> u64 {
    64 * 1024 * 1024
}

fn default_queue_capacity() -> usize {
    4096
}

fn default_max_batch() -> usize {
    1024
}

fn default_sync() -> bool {
    true
}

impl AuditConfig {
    /// A configuration with the defaults, writing to `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        AuditConfig {
            dir: dir.into(),
            max_file_bytes: default_max_file_bytes(),
            queue_capacity: default_queue_capacity(),
            max_batch: default_max_batch(),
            hmac_key_file: None,
            hmac_key_env: None,
            mirror_stdout: false,
            sync: default_sync(),
            write_timeout_ms: default_write_timeout_ms(),
        }
    }

    /// Checks the rules each key must follow; the message names the key, the value and the rule.
    pub fn validate(&self) -> Result<(), String> {
        if self.dir.as_os_str().is_empty() {
            return Err("audit.dir must not be empty".into());
        }
        if self.max_file_bytes == 0 {
            return Err("audit.max_file_bytes = 0: must be at least 1".into());
        }
        if self.queue_capacity == 0 {
            return Err("audit.queue_capacity = 0: must be at least 1".into());
        }
        if self.write_timeout_ms == 0 {
            return Err("audit.write_timeout_ms = 0: must be at least 1".into());
        }
        if self.max_batch == 0 {
            return Err("audit.max_batch = 0: must be at least 1".into());
        }
        if self.hmac_key_file.is_some() && self.hmac_key_env.is_some() {
            return Err(
                "audit.hmac_key_file and audit.hmac_key_env are both set: give at most one".into(),
            );
        }
        if self.hmac_key_env.as_deref() == Some("") {
            return Err("audit.hmac_key_env = \"\": must name an environment variable".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_in_and_unknown_keys_are_refused() {
        let config: AuditConfig = toml::from_str("dir = \"/var/lib/gw/audit\"").expect("parse");
        assert_eq!(config.max_file_bytes, 64 * 1024 * 1024);
        assert_eq!((config.queue_capacity, config.max_batch), (4096, 1024));
        assert!(config.sync && !config.mirror_stdout);
        assert!(config.validate().is_ok());
        let err = toml::from_str::<AuditConfig>("dir = \"/x\"\nsnyc = false").expect_err("typo");
        assert!(err.to_string().contains("snyc"));
    }

    #[test]
    fn validation_names_the_key() {
        let mut config = AuditConfig::new("/x");
        config.max_batch = 0;
        assert!(
            config
                .validate()
                .expect_err("zero")
                .contains("audit.max_batch")
        );
        let mut config = AuditConfig::new("/x");
        config.hmac_key_env = Some("K".into());
        config.hmac_key_file = Some("/k".into());
        assert!(
            config
                .validate()
                .expect_err("both")
                .contains("hmac_key_file")
        );
    }
}
