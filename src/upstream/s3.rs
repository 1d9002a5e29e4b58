//! S3 as the audit trail's [`ObjectStore`]: create-only uploads under Object Lock, streamed from
//! the file with the checksum the shipper computed, reading shipped objects back, and the
//! bucket's Object Lock and versioning as S3 reports them. Each failure is classified here, once:
//! a refusal retrying will not change is [`Failure::Permanent`].

use std::str::FromStr;
use std::time::Duration;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{
    BucketVersioningStatus, ChecksumAlgorithm, ObjectLockEnabled, ObjectLockMode as S3LockMode,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use crate::audit::{
    BucketState, Failure, ObjectLockMode, ObjectStore, ObjectVersion, ShipConfig, StoreError,
    StoreFuture, Stored, Upload, Versioning,
};

/// Where a bucket is, and how to reach it.
#[derive(Clone, Debug)]
pub struct S3Location<'a> {
    /// `None`: the default chain's, else us-east-1.
    pub region: Option<&'a str>,
    /// Another endpoint than AWS's: an S3-compatible store, a test server.
    pub endpoint_url: Option<&'a str>,
    /// `endpoint/bucket/key` rather than `bucket.endpoint/key`, for S3-compatible stores.
    pub force_path_style: bool,
    /// How long one request may take before it is given up (and retried once). The shipper's
    /// is `audit.ship.timeout_ms`; a reader's may be longer.
    pub attempt_timeout: Duration,
}

/// A bucket the trail is shipped to or read back from.
#[derive(Clone, Debug)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
}

/// `s3://bucket/prefix`, as `audit verify --checkpoints` takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Url {
    pub bucket: String,
    /// May be empty (the whole bucket).
    pub prefix: String,
}

/// An `s3://` URL that names no bucket.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{url}: {problem}")]
pub struct BadS3Url {
    url: String,
    problem: &'static str,
}

impl FromStr for S3Url {
    type Err = BadS3Url;

    fn from_str(url: &str) -> Result<S3Url, BadS3Url> {
        let bad = |problem| BadS3Url {
            url: url.to_owned(),
            problem,
        };
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| bad("not an s3:// URL"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad("no bucket"));
        }
        Ok(S3Url {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
        })
    }
}

async fn client(location: &S3Location<'_>) -> aws_sdk_s3::Client {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(region) = location.region {
        loader = loader.region(aws_config::Region::new(region.to_owned()));
    }
    let shared = loader.load().await;
    let mut builder = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(location.force_path_style)
        // The SHA-256 checksum is given explicitly; no second (CRC) checksum is needed.
        .request_checksum_calculation(aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired)
        // One retry inside the SDK; the shipper's own backoff does the rest.
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(2))
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(location.attempt_timeout.min(Duration::from_secs(5)))
                .operation_attempt_timeout(location.attempt_timeout)
                .build(),
        );
    if shared.region().is_none() {
        builder = builder.region(aws_config::Region::new("us-east-1"));
    }
    if let Some(url) = location.endpoint_url {
        builder = builder.endpoint_url(url);
    }
    aws_sdk_s3::Client::from_conf(builder.build())
}

/// S3's answers that retrying as is cannot change: the bucket, its configuration or the role
/// must be fixed first. `InvalidRequest` is what PutObject with Object Lock headers gets from a
/// bucket without Object Lock; a wrong `audit.ship.region` gets `PermanentRedirect` or
/// `AuthorizationHeaderMalformed`. Throttling, server errors and expired session tokens (IRSA
/// renews them) pass.
const PERMANENT_CODES: &[&str] = &[
    "AccessDenied",
    "AccountProblem",
    "AllAccessDisabled",
    "AuthorizationHeaderMalformed",
    "InvalidAccessKeyId",
    "InvalidBucketState",
    "InvalidRequest",
    "NoSuchBucket",
    "PermanentRedirect",
];

fn failure_of(code: Option<&str>) -> Failure {
    match code {
        Some(code) if PERMANENT_CODES.contains(&code) => Failure::Permanent,
        _ => Failure::Passing,
    }
}

/// The status in a GetBucketVersioning answer (200) the SDK could not read: some S3-compatible
/// servers (moto 5) wrap it in `<GetBucketVersioningResponse>`, where S3 sends
/// `<VersioningConfiguration>`, the only root the SDK takes. `None`: not such an answer.
fn versioning_in(body: &[u8]) -> Option<Versioning> {
    let text = std::str::from_utf8(body).ok()?;
    if !text.contains("<GetBucketVersioningResponse") && !text.contains("<VersioningConfiguration")
    {
        return None;
    }
    let status = text
        .split_once("<Status>")
        .and_then(|(_, rest)| rest.split_once("</Status>"))
        .map(|(status, _)| status);
    match status {
        Some("Enabled") => Some(Versioning::Enabled),
        Some("Suspended") => Some(Versioning::Suspended),
        // No status: versioning was never turned on.
        None => Some(Versioning::Off),
        Some(_) => None,
    }
}

fn brief<E, R>(operation: &'static str, key: &str, err: &SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    let message = match (err.code(), err.message()) {
        (Some(code), message) => format!("{code}: {}", message.unwrap_or("(no message)")),
        // No answer (a refused connection, a timeout): what kept the request from one.
        _ => crate::errors::with_causes(err),
    };
    // Only S3's own answer can be permanent; no answer at all is an outage.
    let failure = match err {
        SdkError::ServiceError(_) => failure_of(err.code()),
        _ => Failure::Passing,
    };
    StoreError::new(operation, key, message).with_failure(failure)
}

impl S3Store {
    /// A client for `bucket`; credentials from the default AWS chain.
    pub async fn connect(bucket: &str, location: &S3Location<'_>) -> S3Store {
        S3Store {
            client: client(location).await,
            bucket: bucket.to_owned(),
        }
    }

    /// The bucket `[audit.ship]` names, reached as it says.
    pub async fn for_shipping(ship: &ShipConfig) -> S3Store {
        let location = S3Location {
            region: Some(&ship.region),
            endpoint_url: ship.endpoint_url.as_deref(),
            force_path_style: ship.force_path_style,
            attempt_timeout: ship.timeout(),
        };
        S3Store::connect(&ship.bucket, &location).await
    }

    /// `If-None-Match: *`, so a name already taken (412) is never overwritten; the SHA-256 as
    /// the checksum S3 checks and keeps, so the SDK computes none of its own.
    async fn put(&self, upload: Upload<'_>) -> Result<Stored, StoreError> {
        const OPERATION: &str = "S3 PutObject";
        let body = ByteStream::read_from()
            .path(upload.path)
            .length(Length::Exact(upload.length))
            // Fewer reads than the 64 KiB default, for files of up to 64 MiB.
            .buffer_size(1024 * 1024)
            .build()
            .await
            .map_err(|err| {
                StoreError::new(OPERATION, upload.key, crate::errors::with_causes(&err))
            })?;
        let mode = match upload.lock_mode {
            ObjectLockMode::Compliance => S3LockMode::Compliance,
            ObjectLockMode::Governance => S3LockMode::Governance,
        };
        let put = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(upload.key)
            .if_none_match("*")
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .checksum_sha256(B64.encode(upload.sha256))
            .object_lock_mode(mode)
            .object_lock_retain_until_date(aws_sdk_s3::primitives::DateTime::from(
                upload.retain_until,
            ))
            .content_type(upload.content_type)
            .body(body)
            .send()
            .await;
        match put {
            Ok(_) => Ok(Stored::Created),
            Err(err) if err.raw_response().map(|r| r.status().as_u16()) == Some(412) => {
                Ok(Stored::Exists)
            }
            Err(err) => Err(brief(OPERATION, upload.key, &err)),
        }
    }

    async fn get_bytes(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        const OPERATION: &str = "S3 GetObject";
        let object = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|err| brief(OPERATION, key, &err))?;
        let body = object
            .body
            .collect()
            .await
            .map_err(|err| StoreError::new(OPERATION, key, crate::errors::with_causes(&err)))?;
        Ok(body.into_bytes().to_vec())
    }

    async fn list_versions_of(&self, prefix: &str) -> Result<Vec<ObjectVersion>, StoreError> {
        let mut found = Vec::new();
        // ListObjectVersions has no paginator in the SDK: its two markers carry the position.
        let (mut key_marker, mut version_marker) = (None::<String>, None::<String>);
        loop {
            let page = self
                .client
                .list_object_versions()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_key_marker(key_marker.take())
                .set_version_id_marker(version_marker.take())
                .send()
                .await
                .map_err(|err| brief("S3 ListObjectVersions", prefix, &err))?;
            let versions = page.versions().iter().map(|v| ObjectVersion {
                key: v.key().unwrap_or_default().to_owned(),
                delete_marker: false,
                latest: v.is_latest().unwrap_or(false),
            });
            let markers = page.delete_markers().iter().map(|m| ObjectVersion {
                key: m.key().unwrap_or_default().to_owned(),
                delete_marker: true,
                latest: m.is_latest().unwrap_or(false),
            });
            found.extend(versions.chain(markers));
            if page.is_truncated() != Some(true) {
                break;
            }
            key_marker = page.next_key_marker().map(str::to_owned);
            version_marker = page.next_version_id_marker().map(str::to_owned);
            if key_marker.is_none() {
                break;
            }
        }
        // S3 lists versions and markers apart; one order for the reader.
        found.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(found)
    }

    /// GetObjectLockConfiguration and GetBucketVersioning, together. A failed GetBucketVersioning
    /// is kept, not returned: the Object Lock answer alone can refuse the bucket.
    async fn bucket_state_of(&self) -> Result<BucketState, StoreError> {
        let bucket_url = self.url("");
        let (lock, versioning) = tokio::join!(
            self.client
                .get_object_lock_configuration()
                .bucket(&self.bucket)
                .send(),
            self.client
                .get_bucket_versioning()
                .bucket(&self.bucket)
                .send(),
        );
        let object_lock = match lock {
            Ok(answer) => {
                answer
                    .object_lock_configuration()
                    .and_then(|c| c.object_lock_enabled())
                    == Some(&ObjectLockEnabled::Enabled)
            }
            // S3's answer for a bucket made without Object Lock.
            Err(err) if err.code() == Some("ObjectLockConfigurationNotFoundError") => false,
            Err(err) if err.code() == Some("NoSuchBucket") => return Ok(BucketState::Missing),
            Err(err) => return Err(brief("S3 GetObjectLockConfiguration", &bucket_url, &err)),
        };
        let versioning = match versioning {
            Ok(answer) => Ok(match answer.status() {
                Some(BucketVersioningStatus::Enabled) => Versioning::Enabled,
                Some(BucketVersioningStatus::Suspended) => Versioning::Suspended,
                // No status: versioning was never turned on.
                _ => Versioning::Off,
            }),
            Err(err) if err.code() == Some("NoSuchBucket") => return Ok(BucketState::Missing),
            Err(err) => {
                let answered = err
                    .raw_response()
                    .filter(|raw| raw.status().as_u16() == 200)
                    .and_then(|raw| raw.body().bytes())
                    .and_then(versioning_in);
                answered.ok_or_else(|| brief("S3 GetBucketVersioning", &bucket_url, &err))
            }
        };
        Ok(BucketState::Found {
            object_lock,
            versioning,
        })
    }
}

impl ObjectStore for S3Store {
    fn url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    fn put_create_only<'a>(&'a self, upload: Upload<'a>) -> StoreFuture<'a, Stored> {
        Box::pin(self.put(upload))
    }

    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Vec<u8>> {
        Box::pin(self.get_bytes(key))
    }

    fn list_versions<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a, Vec<ObjectVersion>> {
        Box::pin(self.list_versions_of(prefix))
    }

    fn bucket_state(&self) -> StoreFuture<'_, BucketState> {
        Box::pin(self.bucket_state_of())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_s3_url_names_a_bucket_and_maybe_a_prefix() {
        let url: S3Url = "s3://trail/gw-0/checkpoints/".parse().expect("url");
        assert_eq!(
            (url.bucket.as_str(), url.prefix.as_str()),
            ("trail", "gw-0/checkpoints/")
        );
        let url: S3Url = "s3://trail".parse().expect("url");
        assert_eq!((url.bucket.as_str(), url.prefix.as_str()), ("trail", ""));
        for bad in ["s3:///x", "https://trail/x"] {
            assert!(bad.parse::<S3Url>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_versioning_answer_under_another_root_is_read_for_its_status() {
        let wrapped = |inner: &str| {
            format!(
                "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<GetBucketVersioningResponse \
                 xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">{inner}\
                 </GetBucketVersioningResponse>"
            )
        };
        assert_eq!(
            versioning_in(wrapped("<Status>Enabled</Status>").as_bytes()),
            Some(Versioning::Enabled)
        );
        assert_eq!(
            versioning_in(wrapped("<Status>Suspended</Status>").as_bytes()),
            Some(Versioning::Suspended)
        );
        assert_eq!(
            versioning_in(
                b"<GetBucketVersioningResponse xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"/>"
            ),
            Some(Versioning::Off)
        );
        assert_eq!(
            versioning_in(wrapped("<Status>Maybe</Status>").as_bytes()),
            None
        );
        assert_eq!(
            versioning_in(b"<Error><Code>InternalError</Code></Error>"),
            None
        );
    }

    #[test]
    fn refusals_that_need_a_fix_are_permanent_and_outages_pass() {
        for code in ["InvalidRequest", "AccessDenied", "NoSuchBucket"] {
            assert_eq!(failure_of(Some(code)), Failure::Permanent, "{code}");
        }
        for code in [
            Some("SlowDown"),
            Some("InternalError"),
            Some("ExpiredToken"),
            Some("RequestTimeout"),
            None,
        ] {
            assert_eq!(failure_of(code), Failure::Passing, "{code:?}");
        }
    }
}
