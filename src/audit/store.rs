//! What shipping needs of an object store: create-only uploads under a retention lock, and
//! reading objects back. `audit` owns this trait; an implementation (S3's, with the other AWS
//! clients) is handed in by the wiring, so the trail never names a cloud SDK.

use std::future::Future;
use std::io::{self, Read};
use std::path::Path;
use std::pin::Pin;
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use super::config::ObjectLockMode;

/// What an [`ObjectStore`] call resolves to.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// An object store the trail is shipped to.
pub trait ObjectStore: std::fmt::Debug + Send + Sync {
    /// How a reader names `key` (for S3, `s3://bucket/key`): in reports and alarms.
    fn url(&self, key: &str) -> String;

    /// Stores the first `upload.length` bytes of `upload.path` under `upload.key`, unless the
    /// name is taken: never overwrites, whoever wrote the object there. The store checks the
    /// bytes it receives against `upload.sha256` and keeps that checksum. The body is read from
    /// the file as it is sent, never held whole in memory.
    fn put_create_only<'a>(&'a self, upload: Upload<'a>) -> StoreFuture<'a, Stored>;

    /// The bytes of `key`.
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Vec<u8>>;

    /// Every version under `prefix`, delete markers included, in lexical order of keys: a
    /// plain listing hides an object behind a delete marker, which a locked bucket allows
    /// anyone with `s3:DeleteObject` to place.
    fn list_versions<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a, Vec<ObjectVersion>>;

    /// Whether the bucket exists and has Object Lock and versioning enabled, as the store says
    /// now: without them a shipped object could be replaced or deleted.
    fn bucket_state(&self) -> StoreFuture<'_, BucketState>;
}

/// What [`ObjectStore::bucket_state`] found.
#[derive(Clone, Debug)]
pub enum BucketState {
    /// The store says there is no such bucket.
    Missing,
    Found {
        object_lock: bool,
        /// Asked apart: an Object Lock answer refuses a bucket even when this one failed.
        versioning: Result<Versioning, StoreError>,
    },
}

/// A bucket's versioning status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Versioning {
    Enabled,
    Suspended,
    /// Never turned on.
    Off,
}

/// One entry of [`ObjectStore::list_versions`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectVersion {
    pub key: String,
    /// A delete marker, not an object: the key reads as missing.
    pub delete_marker: bool,
    /// The key's newest entry (what a plain read of the key finds).
    pub latest: bool,
}

/// One create-only upload of a local file.
#[derive(Clone, Debug)]
pub struct Upload<'a> {
    pub key: &'a str,
    pub path: &'a Path,
    /// The bytes to send: those `sha256` was computed over (a sealed file does not grow, but a
    /// checksum and a body that disagree would fail the upload).
    pub length: u64,
    pub sha256: [u8; 32],
    pub content_type: &'static str,
    pub lock_mode: ObjectLockMode,
    /// The object cannot be deleted or overwritten before this.
    pub retain_until: SystemTime,
}

/// How a create-only upload ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    Created,
    /// Nothing was written: an object by that name exists (an earlier upload whose answer was
    /// lost, or someone else's). The caller compares its bytes.
    Exists,
}

/// A store request that did not complete, in one line: the operation, the key, and the store's
/// own code and message (or what kept the request from an answer).
#[derive(Clone, Debug, thiserror::Error)]
#[error("{operation} {key}: {message}")]
pub struct StoreError {
    operation: &'static str,
    key: String,
    message: String,
    failure: Failure,
}

/// Whether retrying a failed request as it is can succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// No answer (unreachable, timed out), or one that means "later" (throttling, a server
    /// error): a passing outage.
    Passing,
    /// The store answered with a refusal that retrying will not change (the bucket has no
    /// Object Lock, access is denied, there is no such bucket): someone must fix the bucket or
    /// the role.
    Permanent,
}

impl StoreError {
    /// A [`Failure::Passing`] failure; `operation` as the store names it (`S3 PutObject`).
    pub fn new(
        operation: &'static str,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        StoreError {
            operation,
            key: key.into(),
            message: message.into(),
            failure: Failure::Passing,
        }
    }

    /// The same error, as `failure`.
    pub fn with_failure(self, failure: Failure) -> Self {
        StoreError { failure, ..self }
    }

    pub fn failure(&self) -> Failure {
        self.failure
    }
}

/// Read size while hashing a file: large enough that syscalls do not dominate, small enough
/// that a 64 MiB file is never held whole.
const HASH_CHUNK: usize = 1024 * 1024;

/// The SHA-256 of the file at `path` and its length, reading it once in chunks. Blocks: run it
/// with `spawn_blocking`.
pub(super) fn sha256_file(path: &Path) -> io::Result<([u8; 32], u64)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut chunk = vec![0; HASH_CHUNK];
    let mut length = 0u64;
    loop {
        let read = match file.read(&mut chunk) {
            Ok(0) => break,
            Ok(read) => read,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        hasher.update(&chunk[..read]);
        length += read as u64;
    }
    Ok((hasher.finalize().into(), length))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_of_several_chunks_hashes_as_its_whole_bytes() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("f");
        // Two whole chunks and a partial one.
        let bytes: Vec<u8> = (0..HASH_CHUNK * 5 / 2).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &bytes).expect("write");
        let (sha, length) = sha256_file(&path).expect("hash");
        assert_eq!(length, bytes.len() as u64);
        assert_eq!(sha, <[u8; 32]>::from(Sha256::digest(&bytes)));
    }
}
