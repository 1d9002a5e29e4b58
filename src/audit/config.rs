//! The `[audit]` section of the gateway configuration.

use crate::bounds::in_range;
use std::ops::RangeInclusive;
use std::path::PathBuf;

/// `audit.write_timeout_ms`: 1 ms to a minute (a record slower than that to become durable is a
/// disk that has stopped).
pub(crate) const WRITE_TIMEOUT_MS: RangeInclusive<u64> = 1..=60_000;
/// `audit.checkpoint.interval_secs`: a second to a day.
pub(crate) const CHECKPOINT_INTERVAL_SECS: RangeInclusive<u64> = 1..=86_400;
/// `audit.queue_capacity`: a channel's slots.
pub(crate) const QUEUE_CAPACITY: RangeInclusive<usize> = 1..=1_000_000;
/// `audit.max_batch`: records buffered for one write.
pub(crate) const MAX_BATCH: RangeInclusive<usize> = 1..=100_000;
/// `audit.ship.retention_days`: a day to a century. S3 would take a later date, but a
/// retention past a century is a typo, and under COMPLIANCE nobody could shorten it.
pub(crate) const RETENTION_DAYS: RangeInclusive<u32> = 1..=36_500;
/// `audit.ship.timeout_ms`: ten minutes at most, far from any overflow.
pub(crate) const SHIP_TIMEOUT_MS: RangeInclusive<u64> = 1..=600_000;

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
    /// `[audit.checkpoint]`: signed checkpoints of the chain head. Unset: none are made.
    #[serde(default)]
    pub checkpoint: Option<CheckpointConfig>,
    /// `[audit.ship]`: sealed files and checkpoints copied to S3. Unset: the trail stays local.
    #[serde(default)]
    pub ship: Option<ShipConfig>,
}

/// `[audit.checkpoint]`
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// The Ed25519 private key (PKCS#8 PEM, as `openssl genpkey -algorithm ed25519` or
    /// `datashare-gateway audit keygen` writes it).
    pub signing_key_file: PathBuf,
    /// A checkpoint after this many records. Default 1000.
    #[serde(default = "default_interval_records")]
    pub interval_records: u64,
    /// A checkpoint at least this often while records are written, in seconds. Default 60.
    #[serde(default = "default_interval_secs")]
    pub interval_secs: u64,
}

/// `[audit.ship]`
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShipConfig {
    /// The bucket (created with Object Lock enabled).
    pub bucket: String,
    /// Objects go under `<prefix>/<instance>/`. Default empty (under `<instance>/`).
    #[serde(default)]
    pub prefix: String,
    /// The bucket's region.
    pub region: String,
    /// Another S3 endpoint (an S3-compatible store, a test server). Unset: AWS's.
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), for S3-compatible stores. Default false.
    #[serde(default)]
    pub force_path_style: bool,
    /// `COMPLIANCE` (nobody can shorten or remove the retention, root included) or
    /// `GOVERNANCE` (a principal with `s3:BypassGovernanceRetention` can).
    pub object_lock_mode: ObjectLockMode,
    /// How long each object is retained, in days: 1 to 36500.
    pub retention_days: u32,
    /// The open file is sealed (closed, a new one started) and shipped at least this often,
    /// in seconds, even if it is not full. Default 300.
    #[serde(default = "default_seal_interval_secs")]
    pub seal_interval_secs: u64,
    /// Delete local audit files and checkpoints this many days after they were last written,
    /// once shipped (never before, and never the newest audit file). Unset: keep them all.
    #[serde(default)]
    pub local_retention_days: Option<u32>,
    /// How long one upload (or read back) may take, in milliseconds, before it counts as a
    /// failure (`audit_ship_total{result="error"}`, a warning) and is retried with backoff: a
    /// store that accepts connections and never answers shows within seconds. It must cover
    /// sending a whole file (`audit.max_file_bytes`) over the link to S3. Default 5000, at most
    /// 600000.
    #[serde(default = "default_ship_timeout_ms")]
    pub timeout_ms: u64,
}

/// The Object Lock mode of shipped objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
pub enum ObjectLockMode {
    /// Nobody can shorten or remove the retention.
    #[serde(rename = "COMPLIANCE")]
    Compliance,
    /// A principal with `s3:BypassGovernanceRetention` can.
    #[serde(rename = "GOVERNANCE")]
    Governance,
}

fn default_interval_records() -> u64 {
    1_000
}

fn default_interval_secs() -> u64 {
    60
}

fn default_seal_interval_secs() -> u64 {
    300
}

fn default_ship_timeout_ms() -> u64 {
    5_000
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
            checkpoint: None,
            ship: None,
        }
    }

    /// Checks the rules each key must follow; the message names the key, the value and the rule.
    pub fn validate(&self) -> Result<(), String> {
        if self.dir.as_os_str().is_empty() {
            return Err("audit.dir = \"\": must name a directory".into());
        }
        if self.max_file_bytes == 0 {
            return Err("audit.max_file_bytes = 0: must be at least 1".into());
        }
        in_range("audit.queue_capacity", self.queue_capacity, &QUEUE_CAPACITY)?;
        in_range(
            "audit.write_timeout_ms",
            self.write_timeout_ms,
            &WRITE_TIMEOUT_MS,
        )?;
        in_range("audit.max_batch", self.max_batch, &MAX_BATCH)?;
        if let Some(path) = &self.hmac_key_file
            && path.as_os_str().is_empty()
        {
            return Err("audit.hmac_key_file = \"\": must name a file".into());
        }
        if self.hmac_key_file.is_some() && self.hmac_key_env.is_some() {
            return Err(
                "audit.hmac_key_file and audit.hmac_key_env are both set: give at most one".into(),
            );
        }
        if self.hmac_key_env.as_deref() == Some("") {
            return Err("audit.hmac_key_env = \"\": must name an environment variable".into());
        }
        if let Some(checkpoint) = &self.checkpoint {
            if checkpoint.interval_records == 0 {
                return Err("audit.checkpoint.interval_records = 0: must be at least 1".into());
            }
            if checkpoint.signing_key_file.as_os_str().is_empty() {
                return Err("audit.checkpoint.signing_key_file = \"\": must name a file".into());
            }
            in_range(
                "audit.checkpoint.interval_secs",
                checkpoint.interval_secs,
                &CHECKPOINT_INTERVAL_SECS,
            )?;
        }
        if let Some(ship) = &self.ship {
            ship.validate(self.checkpoint.is_some())?;
        }
        Ok(())
    }

    /// Loads the HMAC key and the checkpoint signing key as the log's start does, and drops
    /// them: a file that is missing or is not a key, or an unset variable, is refused naming its
    /// key. Never shows a key's bytes.
    pub fn check_keys(&self) -> Result<(), String> {
        let named = |err: super::record::KeyError| {
            let key = if self.hmac_key_file.is_some() {
                "audit.hmac_key_file"
            } else {
                "audit.hmac_key_env"
            };
            let mut message = format!("{key}: {err}");
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            message
        };
        super::record::HmacKey::load(self.hmac_key_file.as_deref(), self.hmac_key_env.as_deref())
            .map_err(named)?;
        if let Some(checkpoint) = &self.checkpoint {
            let path = &checkpoint.signing_key_file;
            if !path.is_file() {
                return Err(format!(
                    "audit.checkpoint.signing_key_file = {}: no such file",
                    path.display()
                ));
            }
            super::checkpoint::load_signing_key(path)
                .map_err(|e| format!("audit.checkpoint.signing_key_file: {e}"))?;
        }
        Ok(())
    }
}

impl ShipConfig {
    fn validate(&self, checkpoints: bool) -> Result<(), String> {
        // Bucket names: 3-63 lowercase letters, digits, dots and hyphens.
        let bucket_ok = (3..=63).contains(&self.bucket.len())
            && self
                .bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
        if !bucket_ok {
            return Err(format!(
                "audit.ship.bucket = {:?}: must be an S3 bucket name (3-63 lowercase letters, \
                 digits, dots and hyphens)",
                self.bucket
            ));
        }
        if self.prefix.starts_with('/') || self.prefix.contains("//") {
            return Err(format!(
                "audit.ship.prefix = {:?}: must not start with / or hold an empty segment",
                self.prefix
            ));
        }
        crate::arn::Region::parse_configured(&self.region)
            .map_err(|e| format!("audit.ship.region = {:?}: {e}", self.region))?;
        if let Some(url) = &self.endpoint_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(format!(
                "audit.ship.endpoint_url = {url:?}: must start with http:// or https://"
            ));
        }
        in_range(
            "audit.ship.retention_days",
            self.retention_days,
            &RETENTION_DAYS,
        )?;
        if self.seal_interval_secs == 0 {
            return Err("audit.ship.seal_interval_secs = 0: must be at least 1".into());
        }
        if self.local_retention_days == Some(0) {
            return Err(
                "audit.ship.local_retention_days = 0: must be at least 1 (or unset)".into(),
            );
        }
        in_range("audit.ship.timeout_ms", self.timeout_ms, &SHIP_TIMEOUT_MS)?;
        if !checkpoints {
            return Err(
                "audit.ship is set without audit.checkpoint: shipped files without signed \
                 checkpoints cannot show that none is missing; configure [audit.checkpoint]"
                    .into(),
            );
        }
        Ok(())
    }

    /// How long one store request may take (`timeout_ms`).
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.timeout_ms)
    }

    /// The key prefix of this gateway's objects: `<prefix>/<instance>/` (no leading slash).
    pub fn key_prefix(&self, instance: &str) -> String {
        let prefix = self.prefix.trim_end_matches('/');
        if prefix.is_empty() {
            format!("{instance}/")
        } else {
            format!("{prefix}/{instance}/")
        }
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

    #[test]
    fn checkpoint_and_ship_sections_parse_with_defaults_and_name_bad_keys() {
        let config: AuditConfig = toml::from_str(
            "dir = \"/a\"\n[checkpoint]\nsigning_key_file = \"/k\"\n\
             [ship]\nbucket = \"trail\"\nregion = \"eu-west-1\"\n\
             object_lock_mode = \"COMPLIANCE\"\nretention_days = 365\n",
        )
        .expect("parse");
        let checkpoint = config.checkpoint.as_ref().expect("checkpoint");
        assert_eq!(
            (checkpoint.interval_records, checkpoint.interval_secs),
            (1000, 60)
        );
        let ship = config.ship.as_ref().expect("ship");
        assert_eq!(ship.seal_interval_secs, 300);
        assert_eq!(ship.timeout_ms, 5_000);
        assert_eq!(ship.object_lock_mode, ObjectLockMode::Compliance);
        assert_eq!(ship.key_prefix("gw-0"), "gw-0/");
        assert!(config.validate().is_ok());

        let mut bad = config.clone();
        bad.checkpoint = None;
        assert!(
            bad.validate()
                .expect_err("no checkpoint")
                .contains("audit.checkpoint")
        );
        let mut bad = config.clone();
        if let Some(ship) = bad.ship.as_mut() {
            ship.bucket = "Trail_1".into();
        }
        assert!(
            bad.validate()
                .expect_err("bucket")
                .contains("audit.ship.bucket")
        );
        for timeout_ms in [0, SHIP_TIMEOUT_MS.end() + 1, u64::MAX] {
            let mut bad = config.clone();
            if let Some(ship) = bad.ship.as_mut() {
                ship.timeout_ms = timeout_ms;
            }
            let err = bad.validate().expect_err("timeout");
            assert!(err.contains("audit.ship.timeout_ms"), "{err}");
        }
        for (retention_days, accepted) in [(0, false), (1, true), (36_500, true), (36_501, false)] {
            let mut changed = config.clone();
            if let Some(ship) = changed.ship.as_mut() {
                ship.retention_days = retention_days;
            }
            match changed.validate() {
                Ok(()) => assert!(accepted, "{retention_days} accepted"),
                Err(err) => {
                    assert!(!accepted, "{retention_days}: {err}");
                    assert_eq!(
                        err,
                        format!("audit.ship.retention_days = {retention_days}: must be 1 to 36500")
                    );
                }
            }
        }
        let err = toml::from_str::<AuditConfig>(
            "dir = \"/a\"\n[ship]\nbucket = \"b\"\nregion = \"r\"\n\
             object_lock_mode = \"LEGAL\"\nretention_days = 1\n",
        )
        .expect_err("mode");
        assert!(err.to_string().contains("COMPLIANCE"), "{err}");
    }
}
