//! Shipping the trail off the box: every sealed audit file and every checkpoint is uploaded
//! once to S3, create-only (`If-None-Match: *`), with its SHA-256 checksum and an Object Lock
//! retention, under `<prefix>/<instance>/` (checkpoints under `checkpoints/`).
//!
//! Uploads run on their own task and never hold up a call: the local trail stays the
//! write-ahead guarantee, and the gateway keeps serving while S3 is unreachable (the
//! unshipped-bytes gauge grows; alert on it). What has been shipped is marked by an empty file
//! in `<audit dir>/.shipped/`; a crash between an upload and its mark makes the next attempt
//! meet a 412, which counts as done when the stored object holds the same bytes, and is an alarm
//! when it does not. Nothing local is deleted before it is shipped.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::checkpoint::{CHECKPOINT_DIR, checkpoint_seq};
use super::config::ShipConfig;
use super::writer::list_segments;
use crate::metrics::Metrics;
use crate::upstream::{Archive, ArchiveError, ArchiveLocation, Stored};

/// Where shipped files are marked, inside the audit directory.
const MARKS: &str = ".shipped";

/// Between passes while everything is shipped. The writer wakes the shipper when it seals a
/// file or writes a checkpoint, so this is only a safety net.
const IDLE_PASS: Duration = Duration::from_secs(30);

/// Longest wait between retries while S3 fails.
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

#[derive(Debug)]
struct Run {
    archive: Archive,
    config: ShipConfig,
    dir: PathBuf,
    key_prefix: String,
    metrics: Arc<Metrics>,
    /// Names whose key holds different bytes: never retried in this process (an alarm).
    conflicts: HashSet<String>,
    /// The names marked shipped in `.shipped/`, read once at start.
    shipped: HashSet<String>,
}

/// Why one upload did not complete.
#[derive(Debug, thiserror::Error)]
enum ShipError {
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error(transparent)]
    S3(#[from] ArchiveError),
    #[error("s3://{bucket}/{key} already holds different bytes (SHA-256 {stored}, local {local})")]
    Conflict {
        bucket: String,
        key: String,
        stored: String,
        local: String,
    },
}

impl Shipper {
    /// Starts shipping `dir`'s sealed files (those numbered below `sealed_below`) and its
    /// checkpoints.
    pub async fn start(
        config: &ShipConfig,
        dir: &Path,
        instance: &str,
        sealed_below: watch::Receiver<u64>,
        metrics: Arc<Metrics>,
    ) -> Shipper {
        let location = ArchiveLocation {
            region: Some(&config.region),
            endpoint_url: config.endpoint_url.as_deref(),
            force_path_style: config.force_path_style,
        };
        let run = Run {
            archive: Archive::connect(&config.bucket, &location).await,
            config: config.clone(),
            dir: dir.to_owned(),
            key_prefix: config.key_prefix(instance),
            metrics,
            conflicts: HashSet::new(),
            shipped: std::fs::read_dir(dir.join(MARKS))
                .map(|entries| {
                    entries
                        .filter_map(Result::ok)
                        .filter_map(|e| e.file_name().into_string().ok())
                        .collect()
                })
                .unwrap_or_default(),
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
        let mut backoff = Duration::from_secs(1);
        loop {
            let sealed = *sealed_below.borrow_and_update();
            let finish = *finishing.borrow_and_update();
            let failed = self.pass(sealed).await;
            if finish && sealed == u64::MAX && failed.is_none() {
                return;
            }
            let wait = match failed {
                Some(err) => {
                    tracing::warn!(
                        error = %err,
                        retry_in_secs = backoff.as_secs(),
                        "audit: shipping to S3 fails; the local trail keeps every record and \
                         shipping resumes when S3 answers"
                    );
                    let wait = backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    wait
                }
                None => {
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
    /// the first failure (the rest of the pass still ran).
    async fn pass(&mut self, sealed_below: u64) -> Option<ShipError> {
        let (due, unsealed) = self.due(sealed_below);
        // Before uploading too: an upload stuck on an unreachable S3 must not hide the backlog.
        self.update_gauges(&due, &unsealed);
        let mut first_failure = None;
        for item in &due {
            if self.conflicts.contains(&item.mark) {
                continue;
            }
            match self.ship(item).await {
                Ok(result) => {
                    self.metrics.audit_shipped(result);
                    self.mark(item);
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
                    self.metrics.audit_shipped("error");
                    first_failure.get_or_insert(err);
                    // S3 is likely down: the rest waits for the retry.
                    break;
                }
            }
        }
        let (due, unsealed) = self.due(sealed_below);
        self.update_gauges(&due, &unsealed);
        if let Some(days) = self.config.local_retention_days {
            self.delete_old_shipped(days);
        }
        first_failure
    }

    /// The sealed audit files and the checkpoints not yet shipped, oldest first; and the open
    /// (unsealed) files, which count as unshipped but are not due.
    fn due(&self, sealed_below: u64) -> (Vec<Item>, Vec<PathBuf>) {
        let mut due = Vec::new();
        let mut unsealed = Vec::new();
        for (number, path) in list_segments(&self.dir).unwrap_or_default() {
            let name = file_name(&path);
            if self.is_marked(&name) {
                continue;
            }
            if number < sealed_below {
                due.push(Item {
                    key: format!("{}{name}", self.key_prefix),
                    mark: name,
                    path,
                });
            } else {
                unsealed.push(path);
            }
        }
        for path in checkpoint_files(&self.dir) {
            let name = file_name(&path);
            if !self.is_marked(&name) {
                due.push(Item {
                    key: format!("{}{CHECKPOINT_DIR}/{name}", self.key_prefix),
                    mark: name,
                    path,
                });
            }
        }
        (due, unsealed)
    }

    fn is_marked(&self, name: &str) -> bool {
        self.shipped.contains(name)
    }

    /// Marks a shipped file. A mark lost in a crash costs one more upload attempt, which the
    /// 412 check answers, so the mark is not synced.
    fn mark(&self, item: &Item) {
        let marks = self.dir.join(MARKS);
        let made = std::fs::create_dir_all(&marks)
            .and_then(|()| std::fs::File::create(marks.join(&item.mark)).map(drop));
        if let Err(err) = made {
            tracing::warn!(error = %err, file = %item.mark, "audit: cannot mark a shipped file");
        }
    }

    /// Uploads one file create-only; `Ok("shipped")`, or `Ok("already_present")` when a 412
    /// finds the same bytes stored (a re-upload after a crash).
    async fn ship(&self, item: &Item) -> Result<&'static str, ShipError> {
        let bytes = tokio::fs::read(&item.path)
            .await
            .map_err(|err| ShipError::Read(item.path.clone(), err))?;
        let local = crate::upstream::sha256_b64(&bytes);
        let retain_until =
            SystemTime::now() + Duration::from_secs(u64::from(self.config.retention_days) * 86_400);
        let content_type = if item.mark.ends_with(".jsonl") {
            "application/x-ndjson"
        } else {
            "text/plain; charset=utf-8"
        };
        let stored = self
            .archive
            .put_create_only(
                &item.key,
                bytes,
                content_type,
                self.config.object_lock_mode,
                retain_until,
            )
            .await?;
        match stored {
            Stored::Created => Ok("shipped"),
            Stored::AlreadyPresent => Ok("already_present"),
            Stored::Conflict(stored) => Err(ShipError::Conflict {
                bucket: self.archive.bucket().to_owned(),
                key: item.key.clone(),
                stored,
                local,
            }),
        }
    }

    fn update_gauges(&self, due: &[Item], unsealed: &[PathBuf]) {
        let now = SystemTime::now();
        let mut bytes = 0u64;
        let mut oldest = 0u64;
        // The open file is unshipped by definition but still being written: its bytes count,
        // its age is no delay.
        let sealed = due.iter().map(|i| (&i.path, true));
        for (path, counts_for_age) in sealed.chain(unsealed.iter().map(|p| (p, false))) {
            let Ok(meta) = std::fs::metadata(path) else {
                continue;
            };
            bytes += meta.len();
            if counts_for_age {
                let age = meta
                    .modified()
                    .ok()
                    .and_then(|m| now.duration_since(m).ok())
                    .map_or(0, |age| age.as_secs());
                oldest = oldest.max(age);
            }
        }
        self.metrics
            .audit_unshipped_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        self.metrics
            .audit_oldest_unshipped_seconds
            .set(i64::try_from(oldest).unwrap_or(i64::MAX));
    }

    /// Deletes shipped audit files and checkpoints last written more than `days` ago; never an
    /// unshipped one, and never the newest audit file (the chain continues from it).
    fn delete_old_shipped(&mut self, days: u32) {
        let limit = Duration::from_secs(u64::from(days) * 86_400);
        let segments = list_segments(&self.dir).unwrap_or_default();
        let newest = segments.last().map(|(n, _)| *n);
        let old_files = segments
            .into_iter()
            .filter(|(n, _)| Some(*n) != newest)
            .map(|(_, p)| p)
            .chain(checkpoint_files(&self.dir));
        for path in old_files {
            let name = file_name(&path);
            let old = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|age| age > limit);
            if old && self.is_marked(&name) {
                match std::fs::remove_file(&path) {
                    Ok(()) => {
                        let _ = std::fs::remove_file(self.dir.join(MARKS).join(&name));
                        self.shipped.remove(&name);
                        tracing::info!(file = %path.display(), "audit: deleted a shipped file past local_retention_days");
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, file = %path.display(), "audit: cannot delete a shipped file");
                    }
                }
            }
        }
    }
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

/// The checkpoints shipped under `s3://bucket/prefix/`, each with its `s3://` name. Credentials
/// and region come from the default chain (us-east-1 if it names none).
pub async fn read_shipped_checkpoints(
    url: &str,
    endpoint_url: Option<&str>,
    force_path_style: bool,
) -> Result<Vec<(String, Vec<u8>)>, Box<dyn std::error::Error + Send + Sync>> {
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| format!("{url}: not an s3:// URL"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(format!("{url}: no bucket").into());
    }
    let location = ArchiveLocation {
        region: None,
        endpoint_url,
        force_path_style,
    };
    let archive = Archive::connect(bucket, &location).await;
    let mut notes = Vec::new();
    for key in archive.list(prefix).await? {
        let name = key.rsplit('/').next().unwrap_or(&key);
        if checkpoint_seq(name).is_some() {
            let bytes = archive.get(&key).await?;
            notes.push((format!("s3://{bucket}/{key}"), bytes));
        }
    }
    Ok(notes)
}
