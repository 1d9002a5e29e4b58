//! Shipping the trail off the box: every sealed audit file and every checkpoint is uploaded
//! once to an [`ObjectStore`] (S3 in production), create-only, with its SHA-256 checksum and an
//! Object Lock retention, under `<prefix>/<instance>/<trail id>/` (checkpoints under
//! `checkpoints/`). The trail id (see `trail`) keeps a trail begun after a lost volume apart from
//! the old one; a trail without one (made by an earlier release) ships under
//! `<prefix>/<instance>/` as it always did.
//!
//! Uploads run on their own task and never hold up a call: the local trail stays the
//! write-ahead guarantee, and the gateway keeps serving while the store is unreachable (the
//! unshipped-bytes gauge grows; alert on it). What has been shipped is marked by an empty file
//! in `<audit dir>/.shipped/`; a crash between an upload and its mark makes the next attempt
//! find the name taken, which counts as done when the stored object holds the same bytes, and is
//! an alarm when it does not. Nothing local is deleted before it is shipped.
//!
//! Each file is hashed once, streaming, on a blocking thread, and uploaded from the file; every
//! directory listing, stat, mark and removal runs on a blocking thread too.
//!
//! A passing outage (no answer, throttling) is a warning and a retry. A refusal retrying will not
//! change ([`Failure::Permanent`]: a bucket without Object Lock, access denied) is an alarm and is
//! shown in `/readyz`'s body until an upload succeeds; it is retried all the same, so that a fix
//! takes effect without a restart. [`check_bucket`] is the look at the bucket `serve` and
//! `check-config` take before any of this.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::task::{JoinError, spawn_blocking};

use super::checkpoint::{CHECKPOINT_DIR, checkpoint_seq};
use super::config::ShipConfig;
use super::segment::{list_segments, segment_number};
use super::store::{
    BucketState, Failure, ObjectStore, StoreError, Stored, Upload, Versioning, sha256_file,
};
use super::trail::{is_trail_id, read_trail_id};
use crate::metrics::{Metrics, ScrapeSource};

/// Where shipped files are marked, inside the audit directory.
const MARKS: &str = ".shipped";

/// Between passes while everything is shipped. The writer wakes the shipper when it seals a
/// file or writes a checkpoint, so this is only a safety net.
const IDLE_PASS: Duration = Duration::from_secs(30);

/// Longest wait between retries while the store fails.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The background task that ships the trail; [`Shipper::finish`] makes its last pass.
#[derive(Debug)]
pub struct Shipper {
    finishing: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// One file to ship.
#[derive(Debug)]
struct Item {
    path: PathBuf,
    /// The object key.
    key: String,
    /// The name of its mark in `.shipped/`.
    mark: String,
}

/// What one look at the audit directory found.
#[derive(Debug, Default)]
struct Scan {
    /// The sealed audit files and the checkpoints not yet shipped, oldest first.
    due: Vec<Item>,
    /// Every unshipped file's bytes, the open (unsealed) one included.
    unshipped_bytes: u64,
    /// The age of the oldest due file: the open file's age is no delay.
    oldest_unshipped_secs: u64,
}

#[derive(Debug)]
struct Run {
    store: Arc<dyn ObjectStore>,
    config: ShipConfig,
    dir: PathBuf,
    key_prefix: String,
    metrics: Arc<Metrics>,
    /// Names whose key holds different bytes: never retried in this process (an alarm).
    conflicts: HashSet<String>,
    /// The names marked shipped in `.shipped/`, read once at start.
    shipped: HashSet<String>,
    refused: Arc<Refused>,
}

/// The permanent failure the last pass ended in, until a pass completes: a note in `/readyz`'s
/// body, not a readiness verdict (calls are still recorded locally and served).
#[derive(Debug, Default)]
struct Refused(std::sync::Mutex<Option<String>>);

impl Refused {
    fn set(&self, why: Option<String>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = why;
    }
}

impl ScrapeSource for Refused {
    fn refresh(&self, _: &Metrics) {}

    fn readiness_note(&self) -> Option<String> {
        let why = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()?;
        Some(format!(
            "audit shipping: S3 refuses the uploads (a permanent error, retried until fixed; \
             calls are still served and recorded locally): {why}"
        ))
    }
}

/// Why one upload did not complete.
#[derive(Debug, thiserror::Error)]
enum ShipError {
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{url}: no answer within audit.ship.timeout_ms = {timeout_ms}")]
    TimedOut { url: String, timeout_ms: u64 },
    #[error("{url} already holds different bytes (SHA-256 {stored}, local {local})")]
    Conflict {
        url: String,
        stored: String,
        local: String,
    },
    /// A blocking task panicked, or the runtime is shutting down.
    #[error("a blocking task of the shipper did not complete")]
    Task(#[from] JoinError),
}

impl ShipError {
    fn is_permanent(&self) -> bool {
        matches!(self, ShipError::Store(err) if err.failure() == Failure::Permanent)
    }
}

/// What [`check_bucket`] found.
#[derive(Debug)]
pub enum BucketCheck {
    /// Object Lock and versioning are enabled.
    Protected,
    /// S3 answered, and the bucket is missing or unprotected: `serve` and `check-config` refuse.
    Refused(UnprotectedBucket),
    /// No answer within `audit.ship.timeout_ms`, or an answer that does not tell (access to
    /// the bucket's configuration denied): why, in one line.
    Unchecked(String),
}

/// A bucket the trail must not be shipped to, named by its key.
#[derive(Debug, thiserror::Error)]
#[error(
    "audit.ship.bucket = {bucket:?}: {problem}; create the bucket with Object Lock enabled \
     (see docs/audit.md, \"The bucket\")"
)]
pub struct UnprotectedBucket {
    bucket: String,
    problem: String,
}

/// Asks the store whether `config.bucket` exists with Object Lock and versioning enabled,
/// within `audit.ship.timeout_ms`.
pub async fn check_bucket(store: &dyn ObjectStore, config: &ShipConfig) -> BucketCheck {
    let state = match tokio::time::timeout(config.timeout(), store.bucket_state()).await {
        Ok(Ok(state)) => state,
        Ok(Err(err)) => return BucketCheck::Unchecked(err.to_string()),
        Err(_) => {
            return BucketCheck::Unchecked(format!(
                "{}: no answer within audit.ship.timeout_ms = {}",
                store.url(""),
                config.timeout_ms
            ));
        }
    };
    let refused = |problem: String| {
        BucketCheck::Refused(UnprotectedBucket {
            bucket: config.bucket.clone(),
            problem,
        })
    };
    match state {
        BucketState::Missing => refused("S3 has no such bucket".into()),
        BucketState::Found {
            object_lock,
            versioning,
        } => {
            let mut missing = Vec::new();
            if !object_lock {
                missing.push("Object Lock is not enabled");
            }
            match &versioning {
                Ok(Versioning::Enabled) | Err(_) => {}
                Ok(Versioning::Suspended) => missing.push("versioning is suspended"),
                Ok(Versioning::Off) => missing.push("versioning is not enabled"),
            }
            match versioning {
                _ if !missing.is_empty() => refused(format!(
                    "{} on the bucket, so shipped objects could be replaced or deleted",
                    missing.join(" and ")
                )),
                Err(err) => BucketCheck::Unchecked(err.to_string()),
                Ok(_) => BucketCheck::Protected,
            }
        }
    }
}

impl Shipper {
    /// Starts shipping `dir`'s sealed files (those numbered below `sealed_below`) and its
    /// checkpoints to `store`.
    pub fn start(
        store: Arc<dyn ObjectStore>,
        config: &ShipConfig,
        dir: &Path,
        instance: &str,
        sealed_below: watch::Receiver<u64>,
        metrics: Arc<Metrics>,
    ) -> Shipper {
        let refused = Arc::new(Refused::default());
        metrics.add_source(refused.clone());
        let run = Run {
            store,
            config: config.clone(),
            dir: dir.to_owned(),
            key_prefix: config.key_prefix(instance),
            metrics,
            conflicts: HashSet::new(),
            shipped: HashSet::new(),
            refused,
        };
        let (finishing, finish_rx) = watch::channel(false);
        let task = tokio::spawn(run.serve(sealed_below, finish_rx));
        Shipper { finishing, task }
    }

    /// After the writer has stopped (the open file sealed, a final checkpoint written): ships
    /// what is left, for at most `within`.
    pub async fn finish(self, within: Duration) {
        let _ = self.finishing.send(true);
        let mut task = self.task;
        if tokio::time::timeout(within, &mut task).await.is_err() {
            task.abort();
            tracing::warn!(
                within_secs = within.as_secs(),
                "audit: shipping did not finish within the grace period; the rest is shipped \
                 at the next start"
            );
        }
    }
}

impl Run {
    async fn serve(
        mut self,
        mut sealed_below: watch::Receiver<u64>,
        mut finishing: watch::Receiver<bool>,
    ) {
        let dir = self.dir.clone();
        let trail_id = spawn_blocking(move || read_trail_id(&dir))
            .await
            .map_err(std::io::Error::other)
            .and_then(|read| read);
        match trail_id {
            Ok(Some(id)) => self.key_prefix = format!("{}{id}/", self.key_prefix),
            Ok(None) => {}
            Err(err) => {
                // Never under a guessed key: the objects would mix with another trail's.
                tracing::error!(
                    error = %err,
                    "ALARM audit: the trail id cannot be read; nothing is shipped"
                );
                return;
            }
        }
        let marks = self.dir.join(MARKS);
        self.shipped = spawn_blocking(move || read_marks(&marks))
            .await
            .unwrap_or_default();
        let mut backoff = Duration::from_secs(1);
        loop {
            let sealed = *sealed_below.borrow_and_update();
            let finish = *finishing.borrow_and_update();
            let failed = self.pass(sealed, &mut sealed_below).await;
            if finish && sealed == u64::MAX && failed.is_none() {
                return;
            }
            // A file sealed during the pass was seen there (for the gauges), not shipped.
            let sealed_meanwhile = *sealed_below.borrow() != sealed;
            let wait = match failed {
                Some(err) => {
                    if err.is_permanent() {
                        // Not "resumes when S3 answers": S3 did answer, and will answer the same
                        // until someone fixes the bucket or the role.
                        tracing::error!(
                            error = %err,
                            retry_in_secs = backoff.as_secs(),
                            "ALARM audit: S3 refuses the trail's uploads and retrying will not \
                             change that (a bucket without Object Lock, access denied, no such \
                             bucket); the local trail keeps every record; fix the bucket or the \
                             role: uploads are retried and ship once S3 accepts them"
                        );
                        self.refused.set(Some(err.to_string()));
                    } else {
                        // The wording is what the alert's runbook (deploy/kubernetes) says to
                        // look for.
                        tracing::warn!(
                            error = %err,
                            retry_in_secs = backoff.as_secs(),
                            "audit: shipping to S3 fails; the local trail keeps every record and \
                             shipping resumes when S3 answers"
                        );
                    }
                    let wait = backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    wait
                }
                None => {
                    self.refused.set(None);
                    if sealed_meanwhile {
                        continue;
                    }
                    backoff = Duration::from_secs(1);
                    IDLE_PASS
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                changed = sealed_below.changed() => if changed.is_err() {
                    // The writer is gone: what it sealed is all there will be.
                    tokio::time::sleep(wait).await;
                },
                _ = finishing.changed(), if !finish => {}
            }
        }
    }

    /// One pass: ships everything due, updates the gauges, applies local retention. Returns
    /// the first failure (the rest of the pass still ran). While an upload is under way, a file
    /// the writer seals (`sealing`) updates the gauges at once.
    async fn pass(
        &mut self,
        sealed_below: u64,
        sealing: &mut watch::Receiver<u64>,
    ) -> Option<ShipError> {
        let scan = match self.scan(sealed_below).await {
            Ok(scan) => scan,
            Err(err) => return Some(err),
        };
        // Before uploading too: an upload stuck on an unreachable store must not hide the
        // backlog.
        self.update_gauges(&scan);
        let mut first_failure = None;
        for item in &scan.due {
            if self.conflicts.contains(&item.mark) {
                continue;
            }
            let shipped = {
                let upload = self.ship(item);
                tokio::pin!(upload);
                loop {
                    tokio::select! {
                        result = &mut upload => break result,
                        Ok(()) = sealing.changed() => {
                            let now_sealed = *sealing.borrow_and_update();
                            if let Ok(scan) = self.scan(now_sealed).await {
                                self.update_gauges(&scan);
                            }
                        }
                    }
                }
            };
            match shipped {
                Ok(result) => {
                    self.metrics.audit_shipped(result);
                    self.mark(item).await;
                    self.shipped.insert(item.mark.clone());
                }
                Err(err @ ShipError::Conflict { .. }) => {
                    self.metrics.audit_shipped("conflict");
                    tracing::error!(
                        error = %err,
                        file = %item.path.display(),
                        "ALARM audit: a shipped object differs from the local file; the local \
                         file is kept and not shipped again (investigate: the bucket or the \
                         disk was written by someone else)"
                    );
                    self.conflicts.insert(item.mark.clone());
                }
                Err(err) => {
                    self.metrics.audit_shipped(if err.is_permanent() {
                        "permanent_error"
                    } else {
                        "error"
                    });
                    first_failure.get_or_insert(err);
                    // The store is likely down: the rest waits for the retry.
                    break;
                }
            }
        }
        match self.scan(sealed_below).await {
            Ok(scan) => self.update_gauges(&scan),
            Err(err) => {
                first_failure.get_or_insert(err);
            }
        }
        if let Some(days) = self.config.local_retention_days {
            self.delete_old_shipped(days).await;
        }
        first_failure
    }

    async fn scan(&self, sealed_below: u64) -> Result<Scan, ShipError> {
        let dir = self.dir.clone();
        let key_prefix = self.key_prefix.clone();
        let shipped = self.shipped.clone();
        Ok(spawn_blocking(move || scan(&dir, &key_prefix, &shipped, sealed_below)).await?)
    }

    /// Marks a shipped file. A mark lost in a crash costs one more upload attempt, which finds
    /// the name taken by the same bytes, so the mark is not synced.
    async fn mark(&self, item: &Item) {
        let marks = self.dir.join(MARKS);
        let name = item.mark.clone();
        let made = spawn_blocking(move || {
            use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
            // Private like the trail beside it (a directory made 0755 by an earlier release
            // is narrowed too).
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&marks)?;
            std::fs::set_permissions(&marks, std::fs::Permissions::from_mode(0o700))?;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(marks.join(name))
                .map(drop)
        })
        .await
        .unwrap_or_else(|err| Err(std::io::Error::other(err)));
        if let Err(err) = made {
            tracing::warn!(error = %err, file = %item.mark, "audit: cannot mark a shipped file");
        }
    }

    /// Uploads one file create-only; `Ok("shipped")`, or `Ok("already_present")` when the name
    /// is taken by the same bytes (a re-upload after a crash).
    async fn ship(&self, item: &Item) -> Result<&'static str, ShipError> {
        let path = item.path.clone();
        let (sha256, length) = spawn_blocking(move || sha256_file(&path))
            .await?
            .map_err(|err| ShipError::Read(item.path.clone(), err))?;
        let retain_until =
            SystemTime::now() + Duration::from_secs(u64::from(self.config.retention_days) * 86_400);
        let content_type = if item.mark.ends_with(".jsonl") {
            "application/x-ndjson"
        } else {
            "text/plain; charset=utf-8"
        };
        let upload = Upload {
            key: &item.key,
            path: &item.path,
            length,
            sha256,
            content_type,
            lock_mode: self.config.object_lock_mode,
            retain_until,
        };
        match self
            .timed(&item.key, self.store.put_create_only(upload))
            .await?
        {
            Stored::Created => Ok("shipped"),
            Stored::Exists => {
                let bytes = self.timed(&item.key, self.store.get(&item.key)).await?;
                let stored: [u8; 32] =
                    spawn_blocking(move || Sha256::digest(&bytes).into()).await?;
                if stored == sha256 {
                    Ok("already_present")
                } else {
                    Err(ShipError::Conflict {
                        url: self.store.url(&item.key),
                        stored: B64.encode(stored),
                        local: B64.encode(sha256),
                    })
                }
            }
        }
    }

    /// `request`, given up after `audit.ship.timeout_ms`.
    async fn timed<T>(
        &self,
        key: &str,
        request: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, ShipError> {
        match tokio::time::timeout(self.config.timeout(), request).await {
            Ok(answer) => Ok(answer?),
            Err(_) => Err(ShipError::TimedOut {
                url: self.store.url(key),
                timeout_ms: self.config.timeout_ms,
            }),
        }
    }

    fn update_gauges(&self, scan: &Scan) {
        self.metrics
            .audit_unshipped_bytes
            .set(i64::try_from(scan.unshipped_bytes).unwrap_or(i64::MAX));
        self.metrics
            .audit_oldest_unshipped_seconds
            .set(i64::try_from(scan.oldest_unshipped_secs).unwrap_or(i64::MAX));
    }

    /// Deletes shipped audit files and checkpoints last written more than `days` ago; never an
    /// unshipped one, and never the newest audit file (the chain continues from it).
    async fn delete_old_shipped(&mut self, days: u32) {
        let dir = self.dir.clone();
        let shipped = self.shipped.clone();
        let limit = Duration::from_secs(u64::from(days) * 86_400);
        let deleted = spawn_blocking(move || delete_old_shipped(&dir, &shipped, limit))
            .await
            .unwrap_or_default();
        for name in deleted {
            self.shipped.remove(&name);
        }
    }
}

/// The names marked shipped in `marks`.
fn read_marks(marks: &Path) -> HashSet<String> {
    std::fs::read_dir(marks)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// What is due in `dir` (audit files numbered below `sealed_below`, checkpoints) and not in
/// `shipped`, and the gauges' figures. Blocks.
fn scan(dir: &Path, key_prefix: &str, shipped: &HashSet<String>, sealed_below: u64) -> Scan {
    let mut scan = Scan::default();
    let now = SystemTime::now();
    let mut count = |path: &Path, counts_for_age: bool| {
        let Ok(meta) = std::fs::metadata(path) else {
            return;
        };
        scan.unshipped_bytes += meta.len();
        if counts_for_age {
            let age = meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .map_or(0, |age| age.as_secs());
            scan.oldest_unshipped_secs = scan.oldest_unshipped_secs.max(age);
        }
    };
    let mut due = Vec::new();
    for (number, path) in list_segments(dir).unwrap_or_default() {
        let name = file_name(&path);
        if shipped.contains(&name) {
            continue;
        }
        // The open file is unshipped by definition but still being written: its bytes count,
        // its age is no delay.
        let sealed = number < sealed_below;
        count(&path, sealed);
        if sealed {
            due.push(Item {
                key: format!("{key_prefix}{name}"),
                mark: name,
                path,
            });
        }
    }
    for path in checkpoint_files(dir) {
        let name = file_name(&path);
        if !shipped.contains(&name) {
            count(&path, true);
            due.push(Item {
                key: format!("{key_prefix}{CHECKPOINT_DIR}/{name}"),
                mark: name,
                path,
            });
        }
    }
    scan.due = due;
    scan
}

/// Deletes the files of `dir` that are in `shipped` and older than `limit` (never the newest
/// audit file), and their marks; returns their names. Blocks.
fn delete_old_shipped(dir: &Path, shipped: &HashSet<String>, limit: Duration) -> Vec<String> {
    let segments = list_segments(dir).unwrap_or_default();
    let newest = segments.last().map(|(n, _)| *n);
    let old_files = segments
        .into_iter()
        .filter(|(n, _)| Some(*n) != newest)
        .map(|(_, p)| p)
        .chain(checkpoint_files(dir));
    let mut deleted = Vec::new();
    for path in old_files {
        let name = file_name(&path);
        let old = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|age| age > limit);
        if old && shipped.contains(&name) {
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    let _ = std::fs::remove_file(dir.join(MARKS).join(&name));
                    tracing::info!(file = %path.display(), "audit: deleted a shipped file past local_retention_days");
                    deleted.push(name);
                }
                Err(err) => {
                    tracing::warn!(error = %err, file = %path.display(), "audit: cannot delete a shipped file");
                }
            }
        }
    }
    deleted
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The checkpoint files of an audit directory, oldest first.
fn checkpoint_files(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(dir.join(CHECKPOINT_DIR))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| {
                    let seq = e.file_name().to_str().and_then(checkpoint_seq)?;
                    Some((seq, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.into_iter().map(|(_, p)| p).collect()
}

/// One trail found in an archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchivedTrail {
    /// Its key prefix: `<prefix>/<instance>/<trail id>/`, or `<prefix>/<instance>/` for a trail
    /// made by an earlier release.
    pub prefix: String,
    /// `None`: a trail without an id.
    pub trail_id: Option<String>,
    /// The keys of its audit files and of its checkpoints that can be read, in key order.
    pub audit_files: Vec<String>,
    pub checkpoints: Vec<String>,
}

/// What an archive holds under a prefix.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Archive {
    pub trails: Vec<ArchivedTrail>,
    /// Audit files and checkpoints with a delete marker, as [`ObjectStore::url`] names them:
    /// on a locked bucket the object is still there, but a plain listing no longer shows it,
    /// which is how a cut trail would be hidden. Tampering.
    pub delete_markers: Vec<String>,
}

/// The trails shipped to `store` under `prefix`, read from the versioned listing.
pub async fn read_archive(store: &dyn ObjectStore, prefix: &str) -> Result<Archive, StoreError> {
    let versions = store.list_versions(prefix).await?;
    let mut archive = Archive::default();
    let mut marked: HashSet<&str> = HashSet::new();
    for version in versions.iter().filter(|v| v.delete_marker) {
        if trail_of(&version.key).is_some() && marked.insert(&version.key) {
            archive.delete_markers.push(store.url(&version.key));
        }
    }
    let mut trails: std::collections::BTreeMap<String, ArchivedTrail> = Default::default();
    for version in versions.iter().filter(|v| v.latest && !v.delete_marker) {
        let Some((trail_prefix, is_checkpoint)) = trail_of(&version.key) else {
            continue;
        };
        let trail = trails
            .entry(trail_prefix.to_owned())
            .or_insert_with(|| ArchivedTrail {
                prefix: trail_prefix.to_owned(),
                trail_id: trail_prefix
                    .trim_end_matches('/')
                    .rsplit('/')
                    .next()
                    .filter(|last| is_trail_id(last))
                    .map(str::to_owned),
                audit_files: Vec::new(),
                checkpoints: Vec::new(),
            });
        match is_checkpoint {
            true => trail.checkpoints.push(version.key.clone()),
            false => trail.audit_files.push(version.key.clone()),
        }
    }
    archive.trails = trails.into_values().collect();
    Ok(archive)
}

/// The prefix of the trail `key` belongs to, and whether it is a checkpoint; `None` for
/// anything but an audit file or a checkpoint.
fn trail_of(key: &str) -> Option<(&str, bool)> {
    let name = key.rsplit('/').next().unwrap_or(key);
    // The directory with its slash ("" at the bucket's root).
    let dir = &key[..key.len() - name.len()];
    if segment_number(name).is_some() {
        return Some((dir, false));
    }
    if checkpoint_seq(name).is_some() {
        let trail = dir.strip_suffix(&format!("{CHECKPOINT_DIR}/"))?;
        return Some((trail, true));
    }
    None
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use super::*;
    use crate::audit::ObjectLockMode;
    use crate::audit::segment::segment_name;
    use crate::audit::store::{ObjectVersion, StoreFuture};

    /// What a put was given.
    #[derive(Clone, Debug, PartialEq, Eq)]
    struct Put {
        key: String,
        path: PathBuf,
        length: u64,
        sha256: [u8; 32],
    }

    /// An object store in memory that records every put.
    #[derive(Debug, Default)]
    struct Recording {
        puts: Mutex<Vec<Put>>,
        objects: Mutex<BTreeMap<String, Vec<u8>>>,
        /// Keys whose newest version is a delete marker.
        delete_markers: Mutex<Vec<String>>,
        /// What every put and [`ObjectStore::bucket_state`] fail with, while set.
        refusing: Mutex<Option<StoreError>>,
        /// What [`ObjectStore::bucket_state`] answers (a protected bucket when unset).
        bucket: Mutex<Option<BucketState>>,
    }

    impl ObjectStore for Recording {
        fn url(&self, key: &str) -> String {
            format!("mem://{key}")
        }

        fn put_create_only<'a>(&'a self, upload: Upload<'a>) -> StoreFuture<'a, Stored> {
            Box::pin(async move {
                if let Some(err) = self.refusing.lock().expect("refusing").clone() {
                    return Err(err);
                }
                self.puts.lock().expect("puts").push(Put {
                    key: upload.key.to_owned(),
                    path: upload.path.to_owned(),
                    length: upload.length,
                    sha256: upload.sha256,
                });
                let mut objects = self.objects.lock().expect("objects");
                if objects.contains_key(upload.key) {
                    return Ok(Stored::Exists);
                }
                let bytes = std::fs::read(upload.path).expect("the file to upload");
                objects.insert(upload.key.to_owned(), bytes);
                Ok(Stored::Created)
            })
        }

        fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Vec<u8>> {
            Box::pin(async move {
                let objects = self.objects.lock().expect("objects");
                objects
                    .get(key)
                    .cloned()
                    .ok_or_else(|| StoreError::new("get", key, "no such key"))
            })
        }

        fn list_versions<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a, Vec<ObjectVersion>> {
            Box::pin(async move {
                let objects = self.objects.lock().expect("objects");
                let markers = self.delete_markers.lock().expect("markers");
                let mut found: Vec<ObjectVersion> = objects
                    .keys()
                    .filter(|k| k.starts_with(prefix))
                    .map(|key| ObjectVersion {
                        key: key.clone(),
                        delete_marker: false,
                        latest: !markers.contains(key),
                    })
                    .collect();
                found.extend(markers.iter().map(|key| ObjectVersion {
                    key: key.clone(),
                    delete_marker: true,
                    latest: true,
                }));
                found.sort_by(|a, b| a.key.cmp(&b.key));
                Ok(found)
            })
        }

        fn bucket_state(&self) -> StoreFuture<'_, BucketState> {
            Box::pin(async move {
                if let Some(err) = self.refusing.lock().expect("refusing").clone() {
                    return Err(err);
                }
                Ok(self
                    .bucket
                    .lock()
                    .expect("bucket")
                    .clone()
                    .unwrap_or(BucketState::Found {
                        object_lock: true,
                        versioning: Ok(Versioning::Enabled),
                    }))
            })
        }
    }

    fn run(store: Arc<Recording>, dir: &Path) -> Run {
        let config: ShipConfig = toml::from_str(
            "bucket = \"trail\"\nregion = \"us-east-1\"\n\
             object_lock_mode = \"COMPLIANCE\"\nretention_days = 1\n",
        )
        .expect("ship config");
        assert_eq!(config.object_lock_mode, ObjectLockMode::Compliance);
        Run {
            store,
            key_prefix: config.key_prefix("gw"),
            config,
            dir: dir.to_owned(),
            metrics: Metrics::new(),
            conflicts: HashSet::new(),
            shipped: HashSet::new(),
            refused: Arc::default(),
        }
    }

    /// Bytes no prefix of which hashes like the whole: several hashing chunks and a partial one.
    fn contents(len: usize, salt: u8) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8 ^ salt).collect()
    }

    #[tokio::test]
    async fn a_sealed_file_is_uploaded_from_its_path_with_the_sha256_of_all_its_bytes() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let sealed = tmp.path().join(segment_name(1));
        let bytes = contents(5 * 1024 * 1024 / 2, 0);
        std::fs::write(&sealed, &bytes).expect("sealed file");
        std::fs::write(tmp.path().join(segment_name(2)), b"open\n").expect("open file");
        let store = Arc::new(Recording::default());
        let mut run = run(Arc::clone(&store), tmp.path());
        let (_sealed, mut sealing) = watch::channel(2);

        assert!(run.pass(2, &mut sealing).await.is_none());

        let puts = store.puts.lock().expect("puts").clone();
        assert_eq!(
            puts,
            [Put {
                key: format!("gw/{}", segment_name(1)),
                path: sealed,
                length: bytes.len() as u64,
                sha256: Sha256::digest(&bytes).into(),
            }],
            "one upload, of the sealed file only"
        );
        assert!(tmp.path().join(MARKS).join(segment_name(1)).is_file());
        // Shipped and marked: the next pass uploads nothing.
        assert!(run.pass(2, &mut sealing).await.is_none());
        assert_eq!(store.puts.lock().expect("puts").len(), 1);
    }

    #[tokio::test]
    async fn a_name_taken_by_the_same_bytes_is_shipped_and_by_other_bytes_is_an_alarm() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let same = contents(3000, 1);
        std::fs::write(tmp.path().join(segment_name(1)), &same).expect("file 1");
        std::fs::write(tmp.path().join(segment_name(2)), contents(3000, 2)).expect("file 2");
        let store = Arc::new(Recording::default());
        {
            let mut objects = store.objects.lock().expect("objects");
            objects.insert(format!("gw/{}", segment_name(1)), same);
            objects.insert(
                format!("gw/{}", segment_name(2)),
                b"someone else's".to_vec(),
            );
        }
        let mut run = run(Arc::clone(&store), tmp.path());
        let (_sealed, mut sealing) = watch::channel(3);

        assert!(
            run.pass(3, &mut sealing).await.is_none(),
            "a conflict is an alarm, not a retry"
        );

        assert!(run.shipped.contains(&segment_name(1)));
        assert!(!run.shipped.contains(&segment_name(2)));
        assert!(run.conflicts.contains(&segment_name(2)));
        assert!(!tmp.path().join(MARKS).join(segment_name(2)).exists());
        // Not retried in this process.
        assert!(run.pass(3, &mut sealing).await.is_none());
        assert_eq!(store.puts.lock().expect("puts").len(), 2);
    }

    #[tokio::test]
    async fn a_new_trail_ships_under_its_id_and_an_old_one_under_its_old_keys() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::write(tmp.path().join(segment_name(1)), b"old\n").expect("file 1");
        let store = Arc::new(Recording::default());
        let (_sealed, mut sealing) = watch::channel(2);
        let mut old = run(Arc::clone(&store), tmp.path());
        assert!(old.pass(2, &mut sealing).await.is_none());

        let lost = tempfile::tempdir().expect("tempdir");
        let id = crate::audit::trail::establish(lost.path(), false)
            .expect("id")
            .expect("a new trail has one");
        std::fs::write(lost.path().join(segment_name(1)), b"new\n").expect("file 1");
        let new = run(Arc::clone(&store), lost.path());
        let (sealed, sealing) = watch::channel(2);
        let (_finishing, finish_rx) = watch::channel(false);
        let task = tokio::spawn(new.serve(sealing, finish_rx));
        let expected = format!("gw/{id}/{}", segment_name(1));
        while !store
            .objects
            .lock()
            .expect("objects")
            .contains_key(&expected)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        task.abort();
        drop(sealed);

        let keys: HashSet<String> = store
            .objects
            .lock()
            .expect("objects")
            .keys()
            .cloned()
            .collect();
        assert_eq!(
            keys,
            HashSet::from([expected, format!("gw/{}", segment_name(1))])
        );
        assert_eq!(
            store.puts.lock().expect("puts").len(),
            2,
            "no conflict: one put each"
        );
    }

    #[tokio::test]
    async fn an_archive_is_read_trail_by_trail_with_its_delete_markers() {
        let store = Recording::default();
        let id = "0123456789abcdef0123456789abcdef";
        let checkpoint = crate::audit::checkpoint::checkpoint_name(7);
        {
            let mut objects = store.objects.lock().expect("objects");
            for key in [
                format!("gw/{}", segment_name(1)),
                format!("gw/checkpoints/{checkpoint}"),
                format!("gw/{id}/{}", segment_name(1)),
                format!("gw/{id}/{}", segment_name(2)),
                format!("gw/{id}/checkpoints/{checkpoint}"),
            ] {
                objects.insert(key, b"x".to_vec());
            }
            objects.insert("gw/checkpoints/README".into(), b"not one".to_vec());
        }
        store
            .delete_markers
            .lock()
            .expect("markers")
            .push(format!("gw/{id}/{}", segment_name(2)));

        let archive = read_archive(&store, "gw/").await.expect("read");

        assert_eq!(
            archive.delete_markers,
            [format!("mem://gw/{id}/{}", segment_name(2))]
        );
        assert_eq!(
            archive.trails,
            [
                ArchivedTrail {
                    prefix: "gw/".into(),
                    trail_id: None,
                    audit_files: vec![format!("gw/{}", segment_name(1))],
                    checkpoints: vec![format!("gw/checkpoints/{checkpoint}")],
                },
                ArchivedTrail {
                    prefix: format!("gw/{id}/"),
                    trail_id: Some(id.into()),
                    audit_files: vec![format!("gw/{id}/{}", segment_name(1))],
                    checkpoints: vec![format!("gw/{id}/checkpoints/{checkpoint}")],
                },
            ]
        );
    }

    fn ship_config() -> ShipConfig {
        toml::from_str(
            "bucket = \"trail\"\nregion = \"us-east-1\"\n\
             object_lock_mode = \"COMPLIANCE\"\nretention_days = 1\n",
        )
        .expect("ship config")
    }

    #[tokio::test]
    async fn a_bucket_is_refused_naming_the_key_and_what_it_lacks() {
        let config = ship_config();
        let store = Recording::default();
        assert!(matches!(
            check_bucket(&store, &config).await,
            BucketCheck::Protected
        ));
        let unread = || {
            Err(StoreError::new(
                "S3 GetBucketVersioning",
                "s3://trail/",
                "no answer",
            ))
        };
        for (state, lacks) in [
            (BucketState::Missing, "S3 has no such bucket"),
            // The Object Lock answer is enough.
            (
                BucketState::Found {
                    object_lock: false,
                    versioning: unread(),
                },
                "Object Lock is not enabled on the bucket",
            ),
            (
                BucketState::Found {
                    object_lock: false,
                    versioning: Ok(Versioning::Enabled),
                },
                "Object Lock is not enabled on the bucket",
            ),
            (
                BucketState::Found {
                    object_lock: false,
                    versioning: Ok(Versioning::Off),
                },
                "Object Lock is not enabled and versioning is not enabled",
            ),
            (
                BucketState::Found {
                    object_lock: true,
                    versioning: Ok(Versioning::Suspended),
                },
                "versioning is suspended",
            ),
        ] {
            *store.bucket.lock().expect("bucket") = Some(state.clone());
            let BucketCheck::Refused(refusal) = check_bucket(&store, &config).await else {
                panic!("{state:?} is refused");
            };
            let message = refusal.to_string();
            assert!(
                message.starts_with("audit.ship.bucket = \"trail\": ") && message.contains(lacks),
                "{message}"
            );
        }
        // Object Lock on, versioning unknown: no verdict.
        *store.bucket.lock().expect("bucket") = Some(BucketState::Found {
            object_lock: true,
            versioning: unread(),
        });
        assert!(matches!(
            check_bucket(&store, &config).await,
            BucketCheck::Unchecked(why) if why.contains("GetBucketVersioning")
        ));
        // An error that does not tell is no verdict, whatever its kind.
        *store.refusing.lock().expect("refusing") = Some(
            StoreError::new(
                "S3 GetObjectLockConfiguration",
                "s3://trail/",
                "AccessDenied: no",
            )
            .with_failure(Failure::Permanent),
        );
        assert!(matches!(
            check_bucket(&store, &config).await,
            BucketCheck::Unchecked(why) if why.contains("AccessDenied")
        ));
    }

    #[tokio::test]
    async fn a_permanent_refusal_is_counted_apart_and_noted_until_a_pass_ships() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::write(tmp.path().join(segment_name(1)), b"sealed\n").expect("file 1");
        let store = Arc::new(Recording::default());
        *store.refusing.lock().expect("refusing") = Some(
            StoreError::new(
                "S3 PutObject",
                "gw/x",
                "InvalidRequest: Bucket is missing ObjectLockConfiguration",
            )
            .with_failure(Failure::Permanent),
        );
        let run = run(Arc::clone(&store), tmp.path());
        let metrics = run.metrics.clone();
        let refused = run.refused.clone();
        metrics.add_source(refused.clone());
        let (sealed, sealing) = watch::channel(2);
        let (_finishing, finish_rx) = watch::channel(false);
        let task = tokio::spawn(run.serve(sealing, finish_rx));
        while refused.readiness_note().is_none() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let notes = metrics.readiness_notes();
        assert!(
            notes.iter().any(|n| n.contains("permanent")
                && n.contains("Bucket is missing ObjectLockConfiguration")),
            "{notes:?}"
        );
        let rendered = metrics.render();
        assert!(
            rendered.contains("audit_ship_total{result=\"permanent_error\"} 1"),
            "{rendered}"
        );
        assert!(
            rendered.contains("audit_ship_total{result=\"error\"} 0"),
            "{rendered}"
        );

        // Fixed: the retry ships, and the note goes.
        *store.refusing.lock().expect("refusing") = None;
        while refused.readiness_note().is_some() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            store
                .objects
                .lock()
                .expect("objects")
                .contains_key(&format!("gw/{}", segment_name(1)))
        );
        task.abort();
        drop(sealed);
    }
}
