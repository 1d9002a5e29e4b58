//! A CloudTrail trail over the event log: every delivery period the events recorded since the
//! last one go to S3 as one gzip log file per recipient account and region, each followed by a
//! signed digest file chained to that account's previous digest. The admin API can deliver at
//! once, hold deliveries back (late files), and drop an event (a missing one).
//!
//! - `files`: keys, log files, digests and the string a digest's signature is made over.

mod files;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use rand::Rng as _;
use rand::distr::Alphanumeric;
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::EmulatorError;
use crate::arn::Region;
use crate::clock::Clock;
use crate::events::{Event, EventLog};
use crate::signing::{SIGNATURE_ALGORITHM, SigningKey};
use files::{ChainLink, Digest, Layout, Recipient};

/// Deliveries every 5 s unless configured (real CloudTrail: about every 5 minutes).
const DEFAULT_INTERVAL_MS: u64 = 5_000;
const INTERVAL_MS: (u64, u64) = (10, 3_600_000);
/// How long one S3 request may take before the delivery gives up and retries next period.
const S3_OPERATION_TIMEOUT: Duration = Duration::from_secs(10);

fn default_trail_name() -> String {
    "datashare-emulator".to_owned()
}

fn default_interval_ms() -> u64 {
    DEFAULT_INTERVAL_MS
}

fn default_s3_region() -> String {
    "us-east-1".to_owned()
}

fn default_s3_access_key_id() -> String {
    "emulator".to_owned()
}

/// A secret that never shows in a `Debug` output or a log line.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl Default for Secret {
    fn default() -> Self {
        Secret("emulator".to_owned())
    }
}

/// Where and how often the trail delivers. CLI: the `--trail-*` flags.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrailConfig {
    /// The S3 endpoint (`http://127.0.0.1:5000` for moto's server); path-style requests.
    pub s3_endpoint: String,
    /// The bucket; it must exist.
    pub bucket: String,
    /// CloudTrail's `S3KeyPrefix`: keys start `PREFIX/AWSLogs/`.
    #[serde(default)]
    pub key_prefix: Option<String>,
    /// An organization trail's organization id (`o-…`): keys become `AWSLogs/ORG-ID/ACCOUNT/…`.
    #[serde(default)]
    pub organization_id: Option<String>,
    /// The trail's name, which digest file names carry.
    #[serde(default = "default_trail_name")]
    pub name: String,
    /// Milliseconds between deliveries, 10 to 3,600,000.
    #[serde(default = "default_interval_ms")]
    pub delivery_interval_ms: u64,
    /// The region S3 requests are signed for.
    #[serde(default = "default_s3_region")]
    pub s3_region: String,
    /// The access key S3 requests are signed with (moto accepts any).
    #[serde(default = "default_s3_access_key_id")]
    pub s3_access_key_id: String,
    /// Its secret; never logged.
    #[serde(default)]
    pub s3_secret_access_key: Secret,
}

impl TrailConfig {
    /// A trail delivering to `bucket` at `s3_endpoint`, with every other setting's default.
    pub fn new(s3_endpoint: impl Into<String>, bucket: impl Into<String>) -> Self {
        TrailConfig {
            s3_endpoint: s3_endpoint.into(),
            bucket: bucket.into(),
            key_prefix: None,
            organization_id: None,
            name: default_trail_name(),
            delivery_interval_ms: DEFAULT_INTERVAL_MS,
            s3_region: default_s3_region(),
            s3_access_key_id: default_s3_access_key_id(),
            s3_secret_access_key: Secret::default(),
        }
    }

    /// Checks every setting; an error names the key, the value and the rule.
    pub fn validate(&self) -> Result<(), EmulatorError> {
        let invalid = |key: &str, value: &str, rule: &str| {
            Err(EmulatorError::InvalidConfig {
                key: format!("trail.{key}"),
                value: value.to_owned(),
                rule: rule.to_owned(),
            })
        };
        if !(self.s3_endpoint.starts_with("http://") || self.s3_endpoint.starts_with("https://")) {
            return invalid(
                "s3_endpoint",
                &self.s3_endpoint,
                "must be an http:// or https:// URL",
            );
        }
        // S3's bucket naming rules, less the ones about IP-address look-alikes.
        let b = &self.bucket;
        let edges_ok = |s: &str| {
            s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && s.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        };
        if !(3..=63).contains(&b.len())
            || !b
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
            || !edges_ok(b)
        {
            return invalid(
                "bucket",
                b,
                "must be 3 to 63 of a-z, 0-9, '.' and '-', starting and ending with a letter or digit",
            );
        }
        if let Some(p) = &self.key_prefix
            && (p.is_empty() || p.len() > 200 || p.starts_with('/') || p.ends_with('/'))
        {
            // CloudTrail's S3KeyPrefix: at most 200 characters.
            return invalid(
                "key_prefix",
                p,
                "must be 1 to 200 characters, neither starting nor ending with '/'",
            );
        }
        if let Some(o) = &self.organization_id {
            // AWS Organizations' organization id pattern: ^o-[a-z0-9]{10,32}$.
            let body = o.strip_prefix("o-").unwrap_or_default();
            if !(10..=32).contains(&body.len())
                || !body
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            {
                return invalid(
                    "organization_id",
                    o,
                    "must be o- and 10 to 32 of a-z and 0-9",
                );
            }
        }
        // CloudTrail's trail names: 3 to 128 of letters, digits, '.', '_' and '-', starting and
        // ending with a letter or digit.
        let n = &self.name;
        if !(3..=128).contains(&n.len())
            || !n
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            || !n.starts_with(|c: char| c.is_ascii_alphanumeric())
            || !n.ends_with(|c: char| c.is_ascii_alphanumeric())
        {
            return invalid(
                "name",
                n,
                "must be 3 to 128 of letters, digits, '.', '_' and '-', starting and ending with a letter or digit",
            );
        }
        if !(INTERVAL_MS.0..=INTERVAL_MS.1).contains(&self.delivery_interval_ms) {
            return invalid(
                "delivery_interval_ms",
                &self.delivery_interval_ms.to_string(),
                "must be 10 to 3600000",
            );
        }
        if Region::parse(&self.s3_region).is_err() {
            return invalid("s3_region", &self.s3_region, "must be a region name");
        }
        Ok(())
    }
}

/// An object built and not yet in S3 (it is retried, in order, every period).
#[derive(Debug)]
struct Object {
    key: String,
    body: Vec<u8>,
    /// User metadata: a digest's `signature` and `signature-algorithm`.
    metadata: Vec<(&'static str, String)>,
}

/// What delivering has built, sent and chained so far.
#[derive(Debug, Default)]
struct Delivery {
    unsent: VecDeque<Object>,
    chains: HashMap<Recipient, ChainLink>,
    delivered_objects: u64,
    last_error: Option<String>,
}

/// Whether deliveries are held back.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Hold {
    No,
    UntilReleased,
    Until(Instant),
}

/// The outcome of one delivery, for the admin API.
#[derive(Debug, Default)]
pub(crate) struct Delivered {
    pub(crate) keys: Vec<String>,
    pub(crate) held: bool,
    pub(crate) unsent: usize,
    pub(crate) error: Option<String>,
}

impl Delivered {
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "delivered": self.keys,
            "held": self.held,
            "unsent_objects": self.unsent,
            "upload_error": self.error,
        })
    }
}

/// The trail: its settings, its S3 client and its delivery state.
#[derive(Debug)]
pub(crate) struct Trail {
    config: TrailConfig,
    layout: Layout,
    client: aws_sdk_s3::Client,
    /// When the trail started logging: the first digest's start.
    started: OffsetDateTime,
    /// One delivery at a time; held across the uploads.
    delivery: tokio::sync::Mutex<Delivery>,
    hold: Mutex<Hold>,
    /// Wakes the delivery loop (a release, a hold that changed).
    pub(crate) wake: tokio::sync::Notify,
}

impl Trail {
    pub(crate) fn new(
        config: TrailConfig,
        home_region: &str,
        now: OffsetDateTime,
    ) -> Result<Self, EmulatorError> {
        config.validate()?;
        let credentials = aws_sdk_s3::config::Credentials::new(
            config.s3_access_key_id.clone(),
            config.s3_secret_access_key.0.clone(),
            None,
            None,
            "emulator-trail",
        );
        let s3 = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new(config.s3_region.clone()))
            .endpoint_url(config.s3_endpoint.clone())
            // moto and other local S3 servers serve path-style URLs only.
            .force_path_style(true)
            .credentials_provider(credentials)
            // A stuck S3 must not stall the delivery loop: the objects are retried next period.
            .timeout_config(
                aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                    .operation_timeout(S3_OPERATION_TIMEOUT)
                    .build(),
            )
            .build();
        Ok(Trail {
            layout: Layout {
                bucket: config.bucket.clone(),
                key_prefix: config.key_prefix.clone(),
                organization_id: config.organization_id.clone(),
                trail_name: config.name.clone(),
                home_region: home_region.to_owned(),
            },
            config,
            client: aws_sdk_s3::Client::from_conf(s3),
            started: now,
            delivery: tokio::sync::Mutex::new(Delivery::default()),
            hold: Mutex::new(Hold::No),
            wake: tokio::sync::Notify::new(),
        })
    }

    pub(crate) fn interval(&self) -> Duration {
        Duration::from_millis(self.config.delivery_interval_ms)
    }

    fn hold_now(&self) -> Hold {
        let mut hold = self.hold.lock().unwrap_or_else(PoisonError::into_inner);
        if let Hold::Until(t) = *hold
            && Instant::now() >= t
        {
            *hold = Hold::No;
        }
        *hold
    }

    /// Holds deliveries until [`Trail::release`], or for `secs` when given.
    pub(crate) fn hold(&self, secs: Option<f64>) {
        let until = match secs {
            Some(s) => Hold::Until(Instant::now() + Duration::from_secs_f64(s)),
            None => Hold::UntilReleased,
        };
        *self.hold.lock().unwrap_or_else(PoisonError::into_inner) = until;
        self.wake.notify_one();
    }

    /// Lifts any hold.
    pub(crate) fn release(&self) {
        *self.hold.lock().unwrap_or_else(PoisonError::into_inner) = Hold::No;
    }

    /// How long the delivery loop sleeps: a period, or less when a timed hold ends sooner.
    pub(crate) fn next_wait(&self) -> Duration {
        match self.hold_now() {
            Hold::Until(t) => t
                .saturating_duration_since(Instant::now())
                .min(self.interval()),
            Hold::No | Hold::UntilReleased => self.interval(),
        }
    }

    /// Delivers everything pending, unless held: first the objects an earlier delivery could
    /// not send, then one log file and one digest per recipient for the events recorded since
    /// the last delivery.
    pub(crate) async fn deliver(
        &self,
        events: &EventLog,
        clock: &Clock,
        signing_key: &SigningKey,
    ) -> Delivered {
        let mut delivery = self.delivery.lock().await;
        if self.hold_now() != Hold::No {
            return Delivered {
                held: true,
                unsent: delivery.unsent.len(),
                ..Delivered::default()
            };
        }
        let now = clock.now();
        let mut build_error = None;
        // The key before the events: without it the events stay in the log for the next try.
        match signing_key.get(now) {
            Ok(signer) => {
                let taken = events.take_undelivered();
                if let Err(e) = self.build(&mut delivery, taken, now, &signer) {
                    build_error = Some(e.to_string());
                }
            }
            Err(e) => build_error = Some(e.to_string()),
        }
        let mut delivered = Delivered::default();
        while let Some(object) = delivery.unsent.front() {
            match self.put(object).await {
                Ok(()) => {
                    delivered.keys.push(object.key.clone());
                    delivery.unsent.pop_front();
                    delivery.delivered_objects += 1;
                }
                Err(e) => {
                    tracing::warn!(key = %object.key, error = %e, "trail upload failed; retried next period");
                    delivered.error = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = build_error {
            tracing::error!(error = %e, "cannot build trail files");
            delivered.error.get_or_insert(e);
        }
        delivery.last_error.clone_from(&delivered.error);
        delivered.unsent = delivery.unsent.len();
        if !delivered.keys.is_empty() {
            tracing::info!(objects = delivered.keys.len(), "trail files delivered");
        }
        delivered
    }

    /// Adds the log files and digests for `taken` to the unsent objects: one log file per
    /// recipient and period, and one digest per period that had one (assumption: CloudTrail
    /// may split files and delivers an hourly digest even when empty).
    fn build(
        &self,
        delivery: &mut Delivery,
        taken: Vec<Event>,
        now: OffsetDateTime,
        signer: &crate::signing::Signer,
    ) -> Result<(), BuildError> {
        let mut by_recipient: BTreeMap<Recipient, Vec<Event>> = BTreeMap::new();
        for event in taken {
            let to = Recipient {
                account: event.recipient_account_id.clone(),
                region: event.aws_region.clone(),
            };
            by_recipient.entry(to).or_default().push(event);
        }
        let bucket = &self.layout.bucket;
        for (to, records) in by_recipient {
            let unique: String = rand::rng()
                .sample_iter(Alphanumeric)
                .take(16)
                .map(char::from)
                .collect();
            let key = self.layout.log_file_key(&to, now, &unique);
            let log = files::log_file(bucket, key.clone(), &records)?;
            delivery.unsent.push_back(Object {
                key,
                body: log.gzip,
                metadata: Vec::new(),
            });
            let previous = delivery.chains.get(&to);
            // Digest times are whole seconds and name the file: a digest ending in the same
            // second as the previous one is put one second later (assumption; CloudTrail's are
            // an hour apart).
            let now_secs = now.replace_nanosecond(0).unwrap_or(now);
            let end = previous.map_or(now_secs, |p| {
                now_secs.max(p.end + time::Duration::seconds(1))
            });
            let start = previous.map_or(self.started.min(end), |p| p.end);
            let digest = Digest::new(
                &self.layout,
                &to,
                (start, end),
                signer.fingerprint(),
                previous,
                vec![log.entry],
            );
            let json = serde_json::to_vec(&digest)?;
            let signature = signer.sign_hex(files::string_to_sign(&digest, &json).as_bytes())?;
            let link = ChainLink {
                bucket: bucket.clone(),
                key: digest.digest_s3_object.clone(),
                hash: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&json)),
                signature: signature.clone(),
                end,
            };
            delivery.unsent.push_back(Object {
                key: link.key.clone(),
                body: files::gzip(&json)?,
                metadata: vec![
                    ("signature", signature),
                    ("signature-algorithm", SIGNATURE_ALGORITHM.to_owned()),
                ],
            });
            delivery.chains.insert(to, link);
        }
        Ok(())
    }

    async fn put(&self, object: &Object) -> Result<(), String> {
        let mut put = self
            .client
            .put_object()
            .bucket(&self.layout.bucket)
            .key(&object.key)
            // No Content-Encoding: clients read the gzip bytes as stored (assumption).
            .content_type("application/json")
            .body(ByteStream::from(object.body.clone()));
        for (name, value) in &object.metadata {
            put = put.metadata(*name, value);
        }
        put.send().await.map(|_| ()).map_err(|e| {
            // The SDK's Display is terse ("service error"); DisplayErrorContext names the causes.
            aws_sdk_s3::error::DisplayErrorContext(&e).to_string()
        })
    }

    /// `GET /trail`.
    pub(crate) async fn status(&self, events: &EventLog) -> Value {
        let delivery = self.delivery.lock().await;
        let held = match self.hold_now() {
            Hold::No => json!(false),
            Hold::UntilReleased => json!(true),
            Hold::Until(t) => {
                json!({ "for_secs": t.saturating_duration_since(Instant::now()).as_secs_f64() })
            }
        };
        json!({
            "s3_endpoint": self.config.s3_endpoint,
            "bucket": self.config.bucket,
            "key_prefix": self.config.key_prefix,
            "organization_id": self.config.organization_id,
            "name": self.config.name,
            "delivery_interval_ms": self.config.delivery_interval_ms,
            "held": held,
            "undelivered_events": events.undelivered(),
            "unsent_objects": delivery.unsent.len(),
            "delivered_objects": delivery.delivered_objects,
            "last_error": delivery.last_error,
        })
    }
}

/// Why trail files could not be built.
#[derive(Debug, thiserror::Error)]
enum BuildError {
    #[error("cannot serialize or compress a trail file")]
    Io(#[from] std::io::Error),
    #[error("cannot serialize a trail file")]
    Json(#[from] serde_json::Error),
    #[error("cannot sign a digest")]
    Sign(#[from] crate::signing::SigningKeyError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked_naming_the_key() {
        let ok = TrailConfig::new("http://127.0.0.1:5000", "trail-bucket");
        assert!(ok.validate().is_ok());
        let refused = |change: &dyn Fn(&mut TrailConfig)| {
            let mut c = ok.clone();
            change(&mut c);
            c.validate().unwrap_err().to_string()
        };
        assert!(
            refused(&|c| c.s3_endpoint = "127.0.0.1:5000".into()).contains("trail.s3_endpoint")
        );
        assert!(refused(&|c| c.bucket = "Trail_Bucket".into()).contains("trail.bucket"));
        assert!(refused(&|c| c.key_prefix = Some("/x".into())).contains("trail.key_prefix"));
        assert!(
            refused(&|c| c.organization_id = Some("o-short".into()))
                .contains("trail.organization_id")
        );
        assert!(refused(&|c| c.name = "-x-".into()).contains("trail.name"));
        assert!(refused(&|c| c.delivery_interval_ms = 1).contains("trail.delivery_interval_ms"));
        assert!(refused(&|c| c.s3_region = "mars".into()).contains("trail.s3_region"));
        let mut org = ok.clone();
        org.organization_id = Some("o-a1b2c3d4e5".into());
        org.key_prefix = Some("audit/ct".into());
        assert!(org.validate().is_ok());
    }

    #[test]
    fn a_config_document_refuses_unknown_keys_and_hides_the_secret() {
        let parsed: Result<TrailConfig, _> = serde_json::from_value(json!({
            "s3_endpoint": "http://x", "bucket": "b", "colour": "red"
        }));
        assert!(parsed.is_err());
        let c: TrailConfig = serde_json::from_value(json!({
            "s3_endpoint": "http://x", "bucket": "bbb", "s3_secret_access_key": "hunter2"
        }))
        .unwrap();
        assert_eq!(c.delivery_interval_ms, DEFAULT_INTERVAL_MS);
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
