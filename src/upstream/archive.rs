//! S3 as the audit trail's archive: create-only uploads under Object Lock, and reading shipped
//! objects back. The AWS-neutral face of `aws-sdk-s3` for `audit::ship` and `audit verify`.

use std::time::{Duration, SystemTime};

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, ObjectLockMode as S3LockMode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sha2::{Digest, Sha256};

use crate::audit::ObjectLockMode;

/// Where an archive is, and how to reach it.
#[derive(Clone, Debug)]
pub struct ArchiveLocation<'a> {
    /// The region (`None`: the default chain's, else us-east-1).
    pub region: Option<&'a str>,
    /// An S3-compatible endpoint.
    pub endpoint_url: Option<&'a str>,
    /// Path-style addressing.
    pub force_path_style: bool,
}

/// A bucket the trail is shipped to.
#[derive(Clone, Debug)]
pub struct Archive {
    client: aws_sdk_s3::Client,
    bucket: String,
}

/// How a create-only upload ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stored {
    /// The object was created.
    Created,
    /// The name was taken by the same bytes (an earlier upload whose answer was lost).
    AlreadyPresent,
    /// The name is taken by other bytes: their SHA-256 (base64).
    Conflict(String),
}

/// An S3 request that did not complete, in one line (the service's code and message, or what
/// kept the request from an answer).
#[derive(Clone, Debug, thiserror::Error)]
#[error("S3 {operation} {key}: {message}")]
pub struct ArchiveError {
    operation: &'static str,
    key: String,
    message: String,
}

/// The SHA-256 of `bytes`, base64, as S3's `x-amz-checksum-sha256` carries it.
pub fn sha256_b64(bytes: &[u8]) -> String {
    B64.encode(Sha256::digest(bytes))
}

async fn client(location: &ArchiveLocation<'_>) -> aws_sdk_s3::Client {
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
                .connect_timeout(Duration::from_secs(5))
                .operation_attempt_timeout(Duration::from_secs(60))
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

fn brief<E, R>(operation: &'static str, key: &str, err: &SdkError<E, R>) -> ArchiveError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    let message = match (err.code(), err.message()) {
        (Some(code), message) => format!("{code}: {}", message.unwrap_or("(no message)")),
        // No answer (a refused connection, a timeout): what kept the request from one.
        _ => crate::errors::with_causes(err),
    };
    ArchiveError {
        operation,
        key: key.to_owned(),
        message,
    }
}

impl Archive {
    /// A client for `bucket`; credentials from the default AWS chain.
    pub async fn connect(bucket: &str, location: &ArchiveLocation<'_>) -> Archive {
        Archive {
            client: client(location).await,
            bucket: bucket.to_owned(),
        }
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Uploads `bytes` to `key` once: `If-None-Match: *`, their SHA-256 as the checksum S3
    /// checks and keeps, and an Object Lock retention until `retain_until`. A name already
    /// taken (412) is compared by content.
    pub async fn put_create_only(
        &self,
        key: &str,
        bytes: Vec<u8>,
        content_type: &str,
        mode: ObjectLockMode,
        retain_until: SystemTime,
    ) -> Result<Stored, ArchiveError> {
        let checksum = sha256_b64(&bytes);
        let mode = match mode {
            ObjectLockMode::Compliance => S3LockMode::Compliance,
            ObjectLockMode::Governance => S3LockMode::Governance,
        };
        let put = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .if_none_match("*")
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .checksum_sha256(&checksum)
            .object_lock_mode(mode)
            .object_lock_retain_until_date(aws_sdk_s3::primitives::DateTime::from(retain_until))
            .content_type(content_type)
            .body(ByteStream::from(bytes))
            .send()
            .await;
        let err = match put {
            Ok(_) => return Ok(Stored::Created),
            Err(err) => err,
        };
        if err.raw_response().map(|r| r.status().as_u16()) != Some(412) {
            return Err(brief("PutObject", key, &err));
        }
        let stored = sha256_b64(&self.get(key).await?);
        Ok(if stored == checksum {
            Stored::AlreadyPresent
        } else {
            Stored::Conflict(stored)
        })
    }

    /// The bytes of `key`.
    pub async fn get(&self, key: &str) -> Result<Vec<u8>, ArchiveError> {
        let object = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|err| brief("GetObject", key, &err))?;
        let body = object.body.collect().await.map_err(|err| ArchiveError {
            operation: "GetObject",
            key: key.to_owned(),
            message: err.to_string(),
        })?;
        Ok(body.into_bytes().to_vec())
    }

    /// The keys under `prefix`, in S3's (lexical) order.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, ArchiveError> {
        let mut keys = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|err| brief("ListObjectsV2", prefix, &err))?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_owned)),
            );
        }
        Ok(keys)
    }
}
