//! The log handle and its writer thread.
//!
//! One thread owns the file, the sequence number and the chain, so the hot path takes no lock:
//! callers queue a record with a oneshot and wait; the thread takes everything queued (up to
//! `max_batch`), numbers and chains it, writes it with one `write` and one `fsync`, and answers.
//! File I/O blocks that thread only, never a tokio worker.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use tokio::sync::{mpsc, oneshot, watch};

use ed25519_dalek::SigningKey;

use super::checkpoint::{self, CheckpointBody, CheckpointKeyError};
use super::config::AuditConfig;
use super::record::{
    Chain, CheckpointNote, EncodedBody, GENESIS, HmacKey, KeyError, RawRecord, RecordBody,
    RecoveryNote, SCHEMA_VERSION, WriterRecord, encode_body, rfc3339, split_line,
};

/// Why the audit log cannot start or cannot make a record durable.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The `[audit]` configuration breaks a rule.
    #[error("invalid audit configuration: {0}")]
    Config(String),
    /// The HMAC key could not be loaded.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The checkpoint signing key could not be loaded.
    #[error("audit.checkpoint.signing_key_file: {0}")]
    CheckpointKey(#[from] CheckpointKeyError),
    /// A signed checkpoint covers records the log no longer holds: it was cut short.
    #[error(
        "{checkpoint} covers seq {covered} but the audit files end at seq {last}: records were \
         cut off the end of the trail (or its newest file deleted); refusing to continue this \
         chain (run `audit verify --public-key` and investigate)"
    )]
    CutShort {
        /// The checkpoint file.
        checkpoint: PathBuf,
        /// The seq it covers.
        covered: u64,
        /// The seq the files end at.
        last: u64,
    },
    /// The audit directory could not be made.
    #[error("cannot create the audit directory {path}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A new audit file could not be created at start.
    #[error("cannot create an audit file in {path}")]
    CreateFile {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// An existing audit file could not be read at start.
    #[error("cannot read the audit file or directory {path}")]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The last record on disk does not verify, so the chain cannot be continued.
    #[error("{path} line {line}: {problem}; refusing to continue this chain")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The 1-based line.
        line: usize,
        /// What is wrong.
        problem: String,
    },
    /// A record could not be written and synced.
    #[error("cannot make the audit record durable")]
    Write(#[source] Arc<io::Error>),
    /// A record could not be serialised.
    #[error("cannot encode the audit record")]
    Encode(#[source] serde_json::Error),
    /// The writer has stopped (closed, or the log was shut down).
    #[error("the audit writer has stopped")]
    Closed,
    /// The writer thread could not be started.
    #[error("cannot start the audit writer thread")]
    Spawn(#[source] io::Error),
    /// The record was not durable within `audit.write_timeout_ms`; it is withdrawn if the
    /// writer has not taken it yet.
    #[error("the audit record was not durable within {0} ms")]
    Timeout(u64),
}

/// Counters for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditStats {
    /// Records queued and not yet taken by the writer.
    pub queue_depth: usize,
    /// Records made durable (recovery records included).
    pub records_written: u64,
    /// Batches written.
    pub batches: u64,
    /// `fsync` calls on audit files (directory syncs not counted).
    pub fsyncs: u64,
    /// Total microseconds spent in those `fsync` calls.
    pub fsync_micros_total: u64,
    /// The longest of them, in microseconds.
    pub fsync_micros_max: u64,
    /// Batches that failed to become durable.
    pub write_errors: u64,
    /// Signed checkpoints written.
    pub checkpoints: u64,
    /// Checkpoints that could not be written.
    pub checkpoint_errors: u64,
}

#[derive(Debug, Default)]
struct Counters {
    /// When the writer started its current write, in milliseconds after `epoch` plus one; 0
    /// while it is not writing. Read by the watchdog.
    busy_since_ms: AtomicU64,
    epoch: OnceEpoch,
    records_written: AtomicU64,
    batches: AtomicU64,
    fsyncs: AtomicU64,
    fsync_micros_total: AtomicU64,
    fsync_micros_max: AtomicU64,
    write_errors: AtomicU64,
    checkpoints: AtomicU64,
    checkpoint_errors: AtomicU64,
}

/// The instant the writer's `busy_since_ms` counts from.
#[derive(Debug)]
struct OnceEpoch(Instant);

impl Default for OnceEpoch {
    fn default() -> Self {
        OnceEpoch(Instant::now())
    }
}

impl Counters {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.0.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// How long the current write has been going on, if one is.
    fn busy_for(&self) -> Option<std::time::Duration> {
        match self.busy_since_ms.load(Ordering::Relaxed) {
            0 => None,
            since => Some(std::time::Duration::from_millis(
                self.now_ms().saturating_sub(since - 1),
            )),
        }
    }
}

type Reply = oneshot::Sender<Result<u64, AuditError>>;

#[derive(Debug)]
enum Msg {
    Append {
        /// Set by a caller that stopped waiting: the writer drops the record if it has not
        /// taken it yet.
        withdrawn: Arc<std::sync::atomic::AtomicBool>,
        body: EncodedBody,
        reply: Reply,
    },
    /// A record no caller waits for (see [`AuditLog::enqueue`]).
    Queued(EncodedBody),
    /// While unhealthy: try to write (a new file, pending recovery records) without a call.
    Probe,
    /// Once a second while checkpoints or sealing are configured: time-based work.
    Tick,
    Shutdown(oneshot::Sender<()>),
}

/// How often an unhealthy writer retries on its own, so that health can come back while no
/// calls arrive (callers stop sending to a NOT_SERVING gateway).
const PROBE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// A cloneable handle on the audit log. [`AuditLog::open`] makes the directory, recovers the
/// chain and starts the writer thread.
#[derive(Clone, Debug)]
pub struct AuditLog {
    tx: mpsc::Sender<Msg>,
    health: watch::Receiver<bool>,
    sealed_below: watch::Receiver<u64>,
    counters: Arc<Counters>,
    write_timeout: std::time::Duration,
}

impl AuditLog {
    /// Makes the directory (0700), continues the chain found there (writing a `recovery` record
    /// for a torn tail) and starts the writer. Fails when any of that fails. `instance` names
    /// the log in its checkpoints (`datashare-gateway/<instance>`).
    #[tracing::instrument(skip(config), fields(dir = %config.dir.display()))]
    pub async fn open(config: &AuditConfig, instance: &str) -> Result<AuditLog, AuditError> {
        config.validate().map_err(AuditError::Config)?;
        let key = HmacKey::load(
            config.hmac_key_file.as_deref(),
            config.hmac_key_env.as_deref(),
        )?;
        let checkpointer = match &config.checkpoint {
            Some(c) => Some(Checkpointer {
                key: checkpoint::load_signing_key(&c.signing_key_file)?,
                origin: checkpoint::origin(instance),
                every_records: c.interval_records,
                every: std::time::Duration::from_secs(c.interval_secs),
                covered: checkpoint::newest_seq(&config.dir),
                quiet_through: 0,
                last_at: Instant::now(),
            }),
            None => None,
        };
        let (sealed_tx, sealed_below) = watch::channel(0);
        let timed_work = config.checkpoint.is_some() || config.ship.is_some();
        let (tx, rx) = mpsc::channel(config.queue_capacity);
        let (health_tx, health) = watch::channel(true);
        let health_tx = Arc::new(health_tx);
        let watchdog_health = Arc::clone(&health_tx);
        let counters = Arc::new(Counters::default());
        let write_timeout = std::time::Duration::from_millis(config.write_timeout_ms);
        let (ready_tx, ready_rx) = oneshot::channel();
        let config = config.clone();
        let thread_counters = Arc::clone(&counters);
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || {
                match Writer::start(
                    &config,
                    key,
                    checkpointer,
                    sealed_tx,
                    health_tx,
                    thread_counters,
                ) {
                    Ok(writer) => {
                        // The receiver only goes away if `open` was cancelled; the writer then
                        // stops when the queue's senders are dropped.
                        let _ = ready_tx.send(Ok(()));
                        writer.run(rx);
                    }
                    Err(err) => {
                        let _ = ready_tx.send(Err(err));
                    }
                }
            })
            .map_err(AuditError::Spawn)?;
        ready_rx.await.map_err(|_| AuditError::Closed)??;
        tokio::spawn(probe_while_unhealthy(tx.downgrade(), health.clone()));
        if timed_work {
            tokio::spawn(tick(tx.downgrade()));
        }
        tokio::spawn(watch_for_a_stuck_writer(
            tx.downgrade(),
            Arc::clone(&counters),
            watchdog_health,
            write_timeout,
        ));
        Ok(AuditLog {
            tx,
            health,
            sealed_below,
            counters,
            write_timeout,
        })
    }

    /// Queues a record for the next batch and returns without waiting for it to be durable: the
    /// reply to a call can then go out while its outcome is being written. The writer keeps a
    /// queued record until it is written, retrying after a failed write, and `close` writes every
    /// queued record first: only a crash before the next batch loses it. Waits while the queue is
    /// full, at most `audit.write_timeout_ms`.
    pub async fn enqueue(&self, body: RecordBody) -> Result<(), AuditError> {
        let body = encode_body(&body).map_err(AuditError::Encode)?;
        let msg = match self.tx.try_send(Msg::Queued(body)) {
            Ok(()) => return Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(AuditError::Closed),
            Err(mpsc::error::TrySendError::Full(msg)) => msg,
        };
        match tokio::time::timeout(self.write_timeout, self.tx.send(msg)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(AuditError::Closed),
            Err(_) => Err(self.timed_out()),
        }
    }

    fn timed_out(&self) -> AuditError {
        AuditError::Timeout(u64::try_from(self.write_timeout.as_millis()).unwrap_or(u64::MAX))
    }

    /// Queues a record and resolves with its seq once it is durable. Waits while the queue is
    /// full, at most `audit.write_timeout_ms` in all: a record not durable by then fails with
    /// [`AuditError::Timeout`] and is withdrawn unless the writer has already taken it.
    pub async fn append(&self, body: RecordBody) -> Result<u64, AuditError> {
        // Serialised here, on the caller's task, so that the single writer thread only numbers,
        // chains and hashes.
        let body = encode_body(&body).map_err(AuditError::Encode)?;
        let (reply, answer) = oneshot::channel();
        let withdrawn = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let queued = Msg::Append {
            withdrawn: Arc::clone(&withdrawn),
            body,
            reply,
        };
        let durable = async {
            self.tx.send(queued).await.map_err(|_| AuditError::Closed)?;
            answer.await.map_err(|_| AuditError::Closed)?
        };
        match tokio::time::timeout(self.write_timeout, durable).await {
            Ok(result) => result,
            Err(_) => {
                withdrawn.store(true, Ordering::Relaxed);
                Err(self.timed_out())
            }
        }
    }

    /// True while audit writes succeed: false from a failed write until the next good one.
    pub fn health(&self) -> watch::Receiver<bool> {
        self.health.clone()
    }

    /// Every audit file numbered below this is sealed: complete, never written again (the
    /// shipper's cue). `u64::MAX` once the writer has stopped. Receivers are also woken (the
    /// value unchanged) when a checkpoint is written, so the shipper need not poll.
    pub fn sealed_below(&self) -> watch::Receiver<u64> {
        self.sealed_below.clone()
    }

    /// The writer's counters and the queue depth, for metrics.
    pub fn stats(&self) -> AuditStats {
        let c = &self.counters;
        AuditStats {
            queue_depth: self.tx.max_capacity() - self.tx.capacity(),
            records_written: c.records_written.load(Ordering::Relaxed),
            batches: c.batches.load(Ordering::Relaxed),
            fsyncs: c.fsyncs.load(Ordering::Relaxed),
            fsync_micros_total: c.fsync_micros_total.load(Ordering::Relaxed),
            fsync_micros_max: c.fsync_micros_max.load(Ordering::Relaxed),
            write_errors: c.write_errors.load(Ordering::Relaxed),
            checkpoints: c.checkpoints.load(Ordering::Relaxed),
            checkpoint_errors: c.checkpoint_errors.load(Ordering::Relaxed),
        }
    }

    /// Makes everything already queued durable, then stops the writer. Appends through other
    /// handles after this fail with [`AuditError::Closed`].
    pub async fn close(self) {
        let (done, stopped) = oneshot::channel();
        if self.tx.send(Msg::Shutdown(done)).await.is_ok() {
            // An error means the writer already stopped, which is what was asked.
            let _ = stopped.await;
        }
    }
}

/// Asks the writer to retry every [`PROBE_INTERVAL`] while it is unhealthy. Holds only a weak
/// sender, so it never keeps the writer alive; ends with it.
async fn probe_while_unhealthy(tx: mpsc::WeakSender<Msg>, mut health: watch::Receiver<bool>) {
    loop {
        if health.wait_for(|healthy| !*healthy).await.is_err() {
            return;
        }
        tokio::time::sleep(PROBE_INTERVAL).await;
        let Some(tx) = tx.upgrade() else {
            return;
        };
        // A full queue holds records, and writing them is a retry too.
        let _ = tx.try_send(Msg::Probe);
    }
}

/// Sends the writer a [`Msg::Tick`] every second, for checkpoints and seals due by time. Holds
/// only a weak sender, so it never keeps the writer alive; ends with it.
async fn tick(tx: mpsc::WeakSender<Msg>) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(tx) = tx.upgrade() else {
            return;
        };
        // A full queue means the writer is busy writing, and it checks after every batch.
        let _ = tx.try_send(Msg::Tick);
    }
}

/// Turns health NOT_SERVING while a write has been stuck longer than `write_timeout` (a hung
/// disk returns no error, so the writer cannot say so itself). The writer turns it back on with
/// its next durable batch. Ends with the writer.
async fn watch_for_a_stuck_writer(
    tx: mpsc::WeakSender<Msg>,
    counters: Arc<Counters>,
    health: Arc<watch::Sender<bool>>,
    write_timeout: std::time::Duration,
) {
    let period = (write_timeout / 4).max(std::time::Duration::from_millis(20));
    loop {
        tokio::time::sleep(period).await;
        if tx.upgrade().is_none() {
            return;
        }
        if counters.busy_for().is_some_and(|busy| busy > write_timeout)
            && health.send_if_modified(|healthy| std::mem::replace(healthy, false))
        {
            tracing::error!(
                timeout_ms = u64::try_from(write_timeout.as_millis()).unwrap_or(u64::MAX),
                "audit: a write is stuck (hung disk?); NOT_SERVING until it completes"
            );
        }
    }
}

/// `audit-` + the file's number, 20 digits, so that names sort in write order.
pub(crate) fn segment_name(number: u64) -> String {
    format!("audit-{number:020}.jsonl")
}

/// The number of an audit file's name, or `None` for other names.
pub(crate) fn segment_number(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("audit-")?.strip_suffix(".jsonl")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The audit files of `dir`, oldest first.
pub(crate) fn list_segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(number) = entry.file_name().to_str().and_then(segment_number) {
            found.push((number, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

fn make_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// The byte ranges of the complete (newline-terminated) lines of `bytes`, without newlines.
pub(crate) fn complete_lines(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut lines = Vec::new();
    let mut start = 0;
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'\n' {
            lines.push((start, i));
            start = i + 1;
        }
    }
    lines
}

#[derive(Debug)]
struct Segment {
    file: File,
    name: String,
    number: u64,
    /// Bytes known durable (or at least written) in the file.
    len: u64,
    opened: Instant,
}

/// Signs checkpoints of the chain head.
struct Checkpointer {
    key: SigningKey,
    origin: String,
    every_records: u64,
    every: std::time::Duration,
    /// The seq the newest checkpoint covers.
    covered: u64,
    /// The seq of the newest checkpoint's own record, which needs no checkpoint of its own.
    quiet_through: u64,
    last_at: Instant,
}

impl std::fmt::Debug for Checkpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Checkpointer")
            .field("origin", &self.origin)
            .field("covered", &self.covered)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Writer {
    dir: PathBuf,
    chain: Chain,
    max_file_bytes: u64,
    max_batch: usize,
    sync: bool,
    mirror_stdout: bool,
    next_seq: u64,
    prev: String,
    /// The seq and hash of the last durable record.
    durable: (u64, String),
    segment: Option<Segment>,
    next_segment: u64,
    /// Records of the writer's own not yet durable: `recovery` (torn bytes) and `checkpoint`.
    pending: Vec<WriterRecord>,
    /// Queued records (no caller waits) of batches that failed: written first in the next one.
    unwritten: Vec<EncodedBody>,
    checkpointer: Option<Checkpointer>,
    /// Seal the open file once it is this old (`audit.ship.seal_interval_secs`).
    seal_every: Option<std::time::Duration>,
    sealed_below: watch::Sender<u64>,
    health: Arc<watch::Sender<bool>>,
    counters: Arc<Counters>,
    /// Test hooks: stall or fail writes.
    #[cfg(test)]
    faults: Arc<test_faults::Faults>,
}

/// Where the chain ends in the existing files, and which bytes after it are torn.
#[derive(Debug)]
struct Recovered {
    last_seq: u64,
    last_hash: String,
    torn: Vec<RecoveryNote>,
}

fn recover(
    dir: &Path,
    segments: &[(u64, PathBuf)],
    chain: &Chain,
) -> Result<Recovered, AuditError> {
    let mut torn = Vec::new();
    for (_, path) in segments.iter().rev() {
        let bytes = std::fs::read(path).map_err(|source| AuditError::Read {
            path: path.clone(),
            source,
        })?;
        if bytes.is_empty() {
            continue;
        }
        let name = path.strip_prefix(dir).unwrap_or(path).display().to_string();
        let lines = complete_lines(&bytes);
        let mut last = None;
        for (index, &(start, end)) in lines.iter().enumerate().rev() {
            let Some(split) = split_line(&bytes[start..end]) else {
                continue;
            };
            let Ok(raw) = serde_json::from_slice::<RawRecord>(&split.hashed) else {
                continue;
            };
            let corrupt = |problem: String| AuditError::Corrupt {
                path: path.clone(),
                line: index + 1,
                problem,
            };
            if raw.v != SCHEMA_VERSION {
                return Err(corrupt(format!(
                    "schema version {} is not {SCHEMA_VERSION}",
                    raw.v
                )));
            }
            if raw.alg != chain.alg() {
                return Err(corrupt(format!(
                    "the record is hashed with {} but the configuration gives {}",
                    raw.alg,
                    chain.alg()
                )));
            }
            if chain.digest(&split.hashed) != split.hash {
                return Err(corrupt(
                    "the last record's hash does not verify (edited, or a different HMAC key)"
                        .into(),
                ));
            }
            last = Some((raw.seq, split.hash.to_owned(), end + 1));
            break;
        }
        let good_end = last.as_ref().map_or(0, |l| l.2);
        if good_end < bytes.len() {
            torn.push(RecoveryNote {
                file: name,
                offset: good_end as u64,
                length: (bytes.len() - good_end) as u64,
                cause: "torn tail found at start".into(),
            });
        }
        if let Some((last_seq, last_hash, _)) = last {
            // Older notes first: the order in which the bytes were written.
            torn.reverse();
            return Ok(Recovered {
                last_seq,
                last_hash,
                torn,
            });
        }
    }
    torn.reverse();
    Ok(Recovered {
        last_seq: 0,
        last_hash: GENESIS.to_owned(),
        torn,
    })
}

impl Writer {
    fn start(
        config: &AuditConfig,
        key: Option<HmacKey>,
        checkpointer: Option<Checkpointer>,
        sealed_below: watch::Sender<u64>,
        health: Arc<watch::Sender<bool>>,
        counters: Arc<Counters>,
    ) -> Result<Writer, AuditError> {
        let dir = config.dir.clone();
        make_dir(&dir).map_err(|source| AuditError::CreateDir {
            path: dir.clone(),
            source,
        })?;
        let segments = list_segments(&dir).map_err(|source| AuditError::Read {
            path: dir.clone(),
            source,
        })?;
        let chain = Chain::new(key);
        let recovered = recover(&dir, &segments, &chain)?;
        if let Some(c) = &checkpointer
            && c.covered > recovered.last_seq
        {
            return Err(AuditError::CutShort {
                checkpoint: dir
                    .join(checkpoint::CHECKPOINT_DIR)
                    .join(checkpoint::checkpoint_name(c.covered)),
                covered: c.covered,
                last: recovered.last_seq,
            });
        }
        for note in &recovered.torn {
            tracing::warn!(
                file = %note.file,
                offset = note.offset,
                length = note.length,
                "audit: torn bytes found at start; left in place and acknowledged by a recovery record"
            );
        }
        let mut writer = Writer {
            dir,
            chain,
            max_file_bytes: config.max_file_bytes,
            max_batch: config.max_batch,
            sync: config.sync,
            mirror_stdout: config.mirror_stdout,
            next_seq: recovered.last_seq + 1,
            durable: (recovered.last_seq, recovered.last_hash.clone()),
            prev: recovered.last_hash,
            segment: None,
            next_segment: segments.last().map_or(1, |(n, _)| n + 1),
            pending: recovered
                .torn
                .into_iter()
                .map(WriterRecord::Recovery)
                .collect(),
            unwritten: Vec::new(),
            checkpointer,
            seal_every: config
                .ship
                .as_ref()
                .map(|ship| std::time::Duration::from_secs(ship.seal_interval_secs)),
            sealed_below,
            health,
            counters,
            #[cfg(test)]
            faults: test_faults::for_dir(&config.dir),
        };
        // A new file at every start: a file with a torn tail is never appended to, and problems
        // with the directory show now rather than on the first call.
        let segment = writer
            .open_segment()
            .map_err(|source| AuditError::CreateFile {
                path: writer.dir.clone(),
                source,
            })?;
        writer.segment = Some(segment);
        writer.mark_sealed();
        if !writer.pending.is_empty() {
            writer.commit(Vec::new()).map_err(AuditError::Write)?;
        }
        Ok(writer)
    }

    fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let mut stoppers = Vec::new();
        while let Some(first) = rx.blocking_recv() {
            let mut batch = Vec::new();
            let mut probe = false;
            let mut next = Some(first);
            while let Some(msg) = next.take() {
                match msg {
                    // A caller that gave up has been answered; its record is not written.
                    Msg::Append { withdrawn, .. } if withdrawn.load(Ordering::Relaxed) => {}
                    Msg::Append { body, reply, .. } => batch.push((body, Some(reply))),
                    Msg::Queued(body) => batch.push((body, None)),
                    Msg::Probe => probe = true,
                    Msg::Tick => {}
                    Msg::Shutdown(done) => {
                        // Refuse new records; those already queued are still written below.
                        rx.close();
                        stoppers.push(done);
                    }
                }
                if batch.len() < self.max_batch {
                    next = rx.try_recv().ok();
                }
            }
            // Queued records kept from a failed batch imply unhealthy: the probe retries them.
            if !batch.is_empty() || (probe && !*self.health.borrow()) {
                // Failures are answered to each waiter inside `commit`.
                let _ = self.commit(batch);
            }
            self.checkpoint_or_seal_if_due();
        }
        if !self.unwritten.is_empty() {
            // One last try; a failure is logged by `commit`.
            let _ = self.commit(Vec::new());
        }
        if !self.unwritten.is_empty() {
            tracing::error!(
                records = self.unwritten.len(),
                "audit: stopping with queued records that could not be written"
            );
        }
        // Stopped: seal the open file with a final checkpoint, for the shipper's last pass.
        self.seal("shutdown");
        self.sealed_below.send_replace(u64::MAX);
        for done in stoppers {
            let _ = done.send(());
        }
    }

    /// Numbers, chains, writes and syncs the pending recovery notes, the queued records of failed
    /// batches and `batch`, then answers each waiter. On failure the sequence and chain are
    /// rolled back, so the next batch reuses them in a new file, and queued records are kept for
    /// it.
    fn commit(&mut self, batch: Vec<(EncodedBody, Option<Reply>)>) -> Result<(), Arc<io::Error>> {
        let ts = rfc3339(SystemTime::now());
        let (seq0, prev0) = (self.next_seq, self.prev.clone());
        let notes = std::mem::take(&mut self.pending);
        let last_durable = self.durable.clone();
        let mut buf = Vec::with_capacity(256 + batch.len() * 1024);
        let mut outcome = Ok(());
        for note in &notes {
            match encode_body(note) {
                Ok(body) => {
                    self.encode(&mut buf, &ts, &body);
                }
                Err(err) => outcome = Err(io::Error::other(err)),
            }
        }
        let mut queued = std::mem::take(&mut self.unwritten);
        for body in &queued {
            self.encode(&mut buf, &ts, body);
        }
        let mut waiters = Vec::with_capacity(batch.len());
        for (body, reply) in batch {
            let seq = self.encode(&mut buf, &ts, &body);
            match reply {
                Some(reply) => waiters.push((seq, reply)),
                None => queued.push(body),
            }
        }
        if outcome.is_ok() {
            self.counters
                .busy_since_ms
                .store(self.counters.now_ms() + 1, Ordering::Relaxed);
            outcome = self.write_durable(&buf);
            self.counters.busy_since_ms.store(0, Ordering::Relaxed);
        }
        match outcome {
            Ok(()) => {
                self.durable = (self.next_seq - 1, self.prev.clone());
                let written = (notes.len() + queued.len() + waiters.len()) as u64;
                self.counters
                    .records_written
                    .fetch_add(written, Ordering::Relaxed);
                self.counters.batches.fetch_add(1, Ordering::Relaxed);
                if !*self.health.borrow() {
                    tracing::info!("audit: writes succeed again");
                }
                self.health
                    .send_if_modified(|healthy| !std::mem::replace(healthy, true));
                if self.mirror_stdout {
                    let mut out = io::stdout().lock();
                    if let Err(err) = out.write_all(&buf).and_then(|()| out.flush()) {
                        tracing::warn!(error = %err, "audit: cannot mirror records to stdout");
                    }
                }
                for (seq, reply) in waiters {
                    // A waiter that went away still had its record written.
                    let _ = reply.send(Ok(seq));
                }
                Ok(())
            }
            Err(err) => {
                let err = Arc::new(err);
                self.next_seq = seq0;
                self.prev = prev0;
                self.durable = last_durable;
                let mut restored = notes;
                restored.append(&mut self.pending);
                self.pending = restored;
                self.unwritten = queued;
                self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
                self.health.send_replace(false);
                tracing::error!(
                    error = %err,
                    records = waiters.len(),
                    queued = self.unwritten.len(),
                    "audit: cannot make records durable; calls are refused until writes succeed \
                     (queued records are kept and written then)"
                );
                for (_, reply) in waiters {
                    let _ = reply.send(Err(AuditError::Write(Arc::clone(&err))));
                }
                Err(err)
            }
        }
    }

    fn encode(&mut self, buf: &mut Vec<u8>, ts: &str, body: &EncodedBody) -> u64 {
        let seq = self.next_seq;
        self.prev = self.chain.encode_line(buf, seq, ts, body, &self.prev);
        self.next_seq += 1;
        seq
    }

    fn write_durable(&mut self, buf: &[u8]) -> io::Result<()> {
        let rotate = match &self.segment {
            None => true,
            Some(s) => s.len > 0 && s.len + buf.len() as u64 > self.max_file_bytes,
        };
        if rotate {
            // The full file is sealed with a checkpoint of its last record; the checkpoint's own
            // record goes out with the next batch.
            if self.segment.take().is_some() {
                self.checkpoint("rotation");
            }
            self.mark_sealed();
            self.segment = Some(self.open_segment()?);
            self.mark_sealed();
        }
        let Some(segment) = self.segment.as_mut() else {
            return Err(io::Error::other("no audit file is open"));
        };
        #[cfg(test)]
        let injected = self.faults.before_write();
        #[cfg(not(test))]
        let injected: io::Result<()> = Ok(());
        let result = injected
            .and_then(|()| segment.file.write_all(buf))
            .and_then(|()| {
                if !self.sync {
                    return Ok(());
                }
                let started = Instant::now();
                segment.file.sync_data()?;
                let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                let c = &self.counters;
                c.fsyncs.fetch_add(1, Ordering::Relaxed);
                c.fsync_micros_total.fetch_add(micros, Ordering::Relaxed);
                c.fsync_micros_max.fetch_max(micros, Ordering::Relaxed);
                Ok(())
            });
        // Writes to a file whose directory was deleted succeed, and the records go with it.
        let result = result.and_then(|()| match segment.file.metadata()?.nlink() {
            0 => Err(io::Error::other("the audit file was deleted")),
            _ => Ok(()),
        });
        match result {
            Ok(()) => {
                segment.len += buf.len() as u64;
                Ok(())
            }
            Err(err) => {
                self.abandon_segment(buf.len() as u64, &err);
                Err(err)
            }
        }
    }

    /// After a failed write or sync the file's state is unknown (and after a failed fsync the
    /// kernel may have dropped the pages), so it is never written again; bytes past the last
    /// good batch are acknowledged by a `recovery` record in the next file.
    fn abandon_segment(&mut self, attempted: u64, err: &io::Error) {
        let Some(segment) = self.segment.take() else {
            return;
        };
        let on_disk = segment
            .file
            .metadata()
            .map_or(segment.len + attempted, |m| m.len());
        // A file nothing reached (a full disk refuses the first byte) holds no unknown state:
        // retry it rather than leave an empty file behind at every retry.
        if on_disk == 0 && segment.len == 0 {
            self.segment = Some(segment);
            return;
        }
        self.mark_sealed();
        if on_disk > segment.len {
            self.pending.push(WriterRecord::Recovery(RecoveryNote {
                file: segment.name,
                offset: segment.len,
                length: on_disk - segment.len,
                cause: format!("write failed: {err}"),
            }));
        }
    }

    fn open_segment(&mut self) -> io::Result<Segment> {
        // The directory may have been removed while running; making it again is cheap.
        make_dir(&self.dir)?;
        let name = segment_name(self.next_segment);
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(0o600)
            .open(self.dir.join(&name))?;
        let number = self.next_segment;
        self.next_segment += 1;
        if self.sync {
            // The new name must survive a crash along with the records in it.
            File::open(&self.dir)?.sync_all()?;
        }
        Ok(Segment {
            file,
            name,
            number,
            len: 0,
            opened: Instant::now(),
        })
    }

    /// Publishes which files are sealed: all below the open one (all so far, if none is open).
    fn mark_sealed(&self) {
        let below = self
            .segment
            .as_ref()
            .map_or(self.next_segment, |s| s.number);
        self.sealed_below.send_if_modified(|old| {
            let changed = *old != below;
            *old = below;
            changed
        });
    }

    /// After each batch and each tick: a checkpoint when `interval_records` records or
    /// `interval_secs` have passed since the last, and a seal when the open file is older than
    /// `seal_interval_secs`.
    fn checkpoint_or_seal_if_due(&mut self) {
        if let (Some(every), Some(segment)) = (self.seal_every, &self.segment)
            && segment.len > 0
            && segment.opened.elapsed() >= every
        {
            self.seal("seal");
            return;
        }
        let durable = self.durable.0;
        let reason = match &self.checkpointer {
            Some(c) => {
                let uncovered = durable.saturating_sub(c.covered.max(c.quiet_through));
                if uncovered >= c.every_records {
                    Some("records")
                } else if uncovered > 0 && c.last_at.elapsed() >= c.every {
                    Some("interval")
                } else {
                    None
                }
            }
            None => None,
        };
        if let Some(reason) = reason {
            self.checkpoint(reason);
            self.write_own_records();
        }
    }

    /// Seals the open file: a checkpoint of its last record, that checkpoint's record, and the
    /// next record goes to a new file.
    fn seal(&mut self, reason: &'static str) {
        if self.segment.as_ref().is_none_or(|s| s.len == 0) {
            return;
        }
        self.checkpoint(reason);
        self.write_own_records();
        if self.segment.take().is_some() {
            self.mark_sealed();
        }
    }

    /// Makes the writer's own pending records durable now (without a call's batch).
    fn write_own_records(&mut self) {
        if !self.pending.is_empty()
            && self.commit(Vec::new()).is_ok()
            && let Some(c) = self.checkpointer.as_mut()
        {
            c.quiet_through = self.durable.0;
        }
    }

    /// Signs a checkpoint of the last durable record, writes it durably under `checkpoints/`
    /// and queues its `checkpoint` record. A failure is logged and counted, and retried at the
    /// next interval: the records themselves are already durable.
    fn checkpoint(&mut self, reason: &'static str) {
        let Some(c) = self.checkpointer.as_mut() else {
            return;
        };
        let (seq, head) = self.durable.clone();
        if seq == 0 || seq <= c.covered {
            return;
        }
        c.last_at = Instant::now();
        let body = CheckpointBody {
            origin: c.origin.clone(),
            seq,
            head: head.clone(),
            time: rfc3339(SystemTime::now()),
        };
        let note = checkpoint::sign(&body, &c.key);
        match checkpoint::write_durable(&self.dir, seq, &note) {
            Ok(file) => {
                c.covered = seq;
                self.counters.checkpoints.fetch_add(1, Ordering::Relaxed);
                self.sealed_below.send_modify(|_| {});
                self.pending.push(WriterRecord::Checkpoint(CheckpointNote {
                    checkpoint: file,
                    covers_seq: seq,
                    head,
                    origin: c.origin.clone(),
                    key_id: checkpoint::key_id_hex(&c.origin, &c.key.verifying_key()),
                    reason,
                }));
            }
            Err(err) => {
                self.counters
                    .checkpoint_errors
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    error = %err,
                    seq,
                    "audit: cannot write a checkpoint; retried at the next interval"
                );
            }
        }
    }
}

/// Test hooks, found by the audit directory so a test can reach the writer it opened.
#[cfg(test)]
pub(crate) mod test_faults {
    use std::collections::HashMap;
    use std::io;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Condvar, Mutex, OnceLock};

    /// What the writer of one directory is told to do.
    #[derive(Debug, Default)]
    pub(crate) struct Faults {
        /// Writes to fail with ENOSPC before any byte is written.
        pub(crate) full_disk: AtomicUsize,
        /// While true, writes block (a hung disk).
        pub(crate) stalled: Mutex<bool>,
        pub(crate) unstall: Condvar,
    }

    impl Faults {
        pub(super) fn before_write(&self) -> io::Result<()> {
            let mut stalled = self.stalled.lock().unwrap_or_else(|p| p.into_inner());
            while *stalled {
                stalled = self
                    .unstall
                    .wait(stalled)
                    .unwrap_or_else(|p| p.into_inner());
            }
            drop(stalled);
            let left = self.full_disk.load(Ordering::Relaxed);
            if left > 0 {
                self.full_disk.store(left - 1, Ordering::Relaxed);
                return Err(io::Error::from_raw_os_error(28));
            }
            Ok(())
        }

        pub(crate) fn stall(&self, on: bool) {
            *self.stalled.lock().unwrap_or_else(|p| p.into_inner()) = on;
            self.unstall.notify_all();
        }
    }

    fn registry() -> &'static Mutex<HashMap<PathBuf, Arc<Faults>>> {
        static FAULTS: OnceLock<Mutex<HashMap<PathBuf, Arc<Faults>>>> = OnceLock::new();
        FAULTS.get_or_init(Default::default)
    }

    /// The hooks of the writer of `dir` (made on first use).
    pub(crate) fn for_dir(dir: &Path) -> Arc<Faults> {
        registry()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(dir.to_owned())
            .or_default()
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::audit::record::CallFacts;
    use crate::audit::verify::verify;

    fn intent(id: &str) -> RecordBody {
        RecordBody::Intent(CallFacts {
            request_id: id.into(),
            method: "AssociateConsumer".into(),
            ..CallFacts::default()
        })
    }

    fn lines_of(dir: &Path) -> Vec<serde_json::Value> {
        let mut all = Vec::new();
        for (_, path) in list_segments(dir).expect("list") {
            let text = std::fs::read_to_string(&path).expect("read");
            for line in text.lines() {
                if let Ok(v) = serde_json::from_str(line) {
                    all.push(v);
                }
            }
        }
        all
    }

    /// Polls the trail until `n` records are in it (the writer works on its own thread).
    async fn until_records(dir: &Path, n: usize) -> Vec<serde_json::Value> {
        for _ in 0..500 {
            let recs = lines_of(dir);
            if recs.len() >= n {
                return recs;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        lines_of(dir)
    }

    #[tokio::test]
    async fn a_queued_record_is_written_with_a_batch_nobody_waits_for() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let log = AuditLog::open(&AuditConfig::new(tmp.path()), "test")
            .await
            .expect("open");
        // Held: the writer cannot have written it when `enqueue` returns.
        let faults = test_faults::for_dir(tmp.path());
        faults.stall(true);
        log.enqueue(intent("queued")).await.expect("queued");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(lines_of(tmp.path()).is_empty(), "not written while held");
        faults.stall(false);
        let recs = until_records(tmp.path(), 1).await;
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0]["request_id"], "queued");
        // Chained with what follows.
        assert_eq!(log.append(intent("awaited")).await.expect("append"), 2);
        log.close().await;
        let report = verify(&[tmp.path().to_owned()], &Chain::default());
        assert!(report.failure.is_none(), "{:?}", report.failure);
    }

    #[tokio::test]
    async fn queued_records_survive_failed_writes_and_go_first_once_writes_succeed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let log = AuditLog::open(&AuditConfig::new(tmp.path()), "test")
            .await
            .expect("open");
        let faults = test_faults::for_dir(tmp.path());
        faults.full_disk.store(3, Ordering::Relaxed);
        log.enqueue(intent("queued-1")).await.expect("queued");
        log.enqueue(intent("queued-2")).await.expect("queued");
        // Whatever batches those went in, the disk stays full for three writes: waiters fail.
        while faults.full_disk.load(Ordering::Relaxed) > 0 {
            let _ = log.append(intent("refused")).await;
        }
        assert!(lines_of(tmp.path()).is_empty(), "nothing written yet");
        // The next write (a waiter's or the writer's own retry) succeeds and carries them.
        let recs = until_records(tmp.path(), 2).await;
        let ids: Vec<&str> = recs
            .iter()
            .filter_map(|r| r["request_id"].as_str())
            .collect();
        assert_eq!(&ids[..2], ["queued-1", "queued-2"], "{ids:?}");
        assert!(!ids.contains(&"refused"), "{ids:?}");
        log.close().await;
        let report = verify(&[tmp.path().to_owned()], &Chain::default());
        assert!(report.failure.is_none(), "{:?}", report.failure);
    }

    #[tokio::test]
    async fn close_writes_every_queued_record_first() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let log = AuditLog::open(&AuditConfig::new(tmp.path()), "test")
            .await
            .expect("open");
        for i in 0..100 {
            log.enqueue(intent(&format!("q-{i}")))
                .await
                .expect("queued");
        }
        log.close().await;
        let recs = lines_of(tmp.path());
        assert_eq!(recs.len(), 100);
        assert_eq!(recs[99]["request_id"], "q-99");
    }

    #[tokio::test]
    async fn a_full_disk_is_retried_in_the_same_file_not_a_new_one_each_time() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let config = AuditConfig::new(tmp.path());
        let log = AuditLog::open(&config, "test").await.expect("open");
        let faults = test_faults::for_dir(tmp.path());
        faults.full_disk.store(5, Ordering::Relaxed);
        for i in 0..5 {
            let err = log.append(intent(&format!("full-{i}"))).await;
            assert!(matches!(err, Err(AuditError::Write(_))), "{err:?}");
        }
        assert!(!*log.health().borrow(), "a full disk is unhealthy");
        log.append(intent("after")).await.expect("room again");
        assert!(*log.health().borrow());
        log.close().await;
        let files = list_segments(tmp.path()).expect("list");
        assert_eq!(files.len(), 1, "one file, retried: {files:?}");
        let recs = lines_of(tmp.path());
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0]["request_id"], "after");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stuck_write_times_out_its_callers_and_turns_health_off_until_it_completes() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut config = AuditConfig::new(tmp.path());
        config.write_timeout_ms = 200;
        let log = AuditLog::open(&config, "test").await.expect("open");
        let mut health = log.health();
        let faults = test_faults::for_dir(tmp.path());
        faults.stall(true);
        // The writer takes the first record and hangs on it; the second waits in the queue.
        let first = tokio::spawn({
            let log = log.clone();
            async move { log.append(intent("taken-while-stuck")).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let second = log.append(intent("queued-while-stuck")).await;
        assert!(
            matches!(second, Err(AuditError::Timeout(200))),
            "{second:?}"
        );
        let first = first.await.expect("join");
        assert!(matches!(first, Err(AuditError::Timeout(200))), "{first:?}");
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            health.wait_for(|healthy| !*healthy),
        )
        .await
        .expect("the watchdog turns health off")
        .expect("health");
        faults.stall(false);
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            health.wait_for(|healthy| *healthy),
        )
        .await
        .expect("health comes back when the write completes")
        .expect("health");
        log.append(intent("after")).await.expect("writes again");
        log.close().await;
        let ids: Vec<_> = lines_of(tmp.path())
            .iter()
            .map(|r| r["request_id"].as_str().unwrap_or("").to_owned())
            .collect();
        // The record the writer had taken was written when the disk came back; the one still
        // queued when its caller gave up was withdrawn.
        assert_eq!(ids, ["taken-while-stuck", "after"]);
    }

    #[tokio::test]
    async fn records_chain_and_verify_plain_and_keyed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let key_file = tmp.path().join("key");
        std::fs::write(&key_file, "an audit key of enough bytes\n").expect("key");
        for key in [None, Some(key_file.clone())] {
            let dir = tmp
                .path()
                .join(if key.is_some() { "keyed" } else { "plain" });
            let mut config = AuditConfig::new(&dir);
            config.hmac_key_file = key.clone();
            let log = AuditLog::open(&config, "test").await.expect("open");
            for i in 0..5 {
                assert_eq!(
                    log.append(intent(&format!("r{i}"))).await.expect("append"),
                    i + 1
                );
            }
            log.close().await;
            let chain = Chain::new(HmacKey::load(key.as_deref(), None).expect("key"));
            let report = verify(std::slice::from_ref(&dir), &chain);
            assert!(report.failure.is_none(), "{report:?}");
            assert_eq!(report.records, 5);
            let recs = lines_of(&dir);
            assert_eq!(recs[0]["prev"], GENESIS);
            assert_eq!(recs[1]["prev"], recs[0]["hash"]);
            assert_eq!(recs[0]["alg"], chain.alg());
        }
    }

    #[tokio::test]
    async fn rotation_keeps_the_chain_across_files() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut config = AuditConfig::new(tmp.path());
        config.max_file_bytes = 2000;
        let log = AuditLog::open(&config, "test").await.expect("open");
        for i in 0..30 {
            log.append(intent(&format!("r{i}"))).await.expect("append");
        }
        log.close().await;
        let files = list_segments(tmp.path()).expect("list");
        assert!(files.len() >= 3, "{files:?}");
        let report = verify(&[tmp.path().to_owned()], &Chain::default());
        assert!(report.failure.is_none(), "{report:?}");
        assert_eq!(report.records, 30);
    }

    /// A log in `tmp/audit` signing a checkpoint every `interval_records` records (never by
    /// time) with a new key in `tmp/checkpoint.key`: (config, audit dir, key file).
    fn checkpointed(tmp: &Path, interval_records: u64) -> (AuditConfig, PathBuf, PathBuf) {
        let key_file = tmp.join("checkpoint.key");
        checkpoint::generate_key_pair(&key_file).expect("keygen");
        let dir = tmp.join("audit");
        let mut config = AuditConfig::new(&dir);
        config.checkpoint = Some(crate::audit::CheckpointConfig {
            signing_key_file: key_file.clone(),
            interval_records,
            interval_secs: 3600,
        });
        (config, dir, key_file)
    }

    #[tokio::test]
    async fn checkpoints_come_every_n_records_and_are_recorded_in_the_chain() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (config, dir, key_file) = checkpointed(tmp.path(), 5);
        let log = AuditLog::open(&config, "gw-a").await.expect("open");
        for i in 0..12 {
            log.append(intent(&format!("r{i}"))).await.expect("append");
        }
        log.close().await;
        let lines = lines_of(&dir);
        let checkpoints: Vec<&serde_json::Value> =
            lines.iter().filter(|l| l["kind"] == "checkpoint").collect();
        // Every 5 records (its own record not counted), then one at shutdown.
        let covered: Vec<u64> = checkpoints
            .iter()
            .map(|c| c["covers_seq"].as_u64().expect("seq"))
            .collect();
        assert_eq!(covered, [5, 11, 14], "{checkpoints:?}");
        assert!(
            checkpoints
                .iter()
                .all(|c| c["origin"] == "datashare-gateway/gw-a")
        );
        let public = load_verifying(&key_file);
        for c in &checkpoints {
            let note = std::fs::read(dir.join(c["checkpoint"].as_str().expect("path")))
                .expect("checkpoint file");
            let body = checkpoint::open(&note, &public).expect("signed");
            assert_eq!(serde_json::json!(body.head), c["head"]);
            let record = &lines[usize::try_from(body.seq).expect("seq") - 1];
            assert_eq!(record["hash"], c["head"], "the head is that record's hash");
        }
        let report = verify(std::slice::from_ref(&dir), &Chain::default());
        assert!(report.failure.is_none(), "{report:?}");
    }

    fn load_verifying(private: &Path) -> ed25519_dalek::VerifyingKey {
        checkpoint::load_verifying_key(&PathBuf::from(format!("{}.pub", private.display())))
            .expect("public key")
    }

    #[tokio::test]
    async fn a_trail_cut_short_is_refused_at_start_naming_the_checkpoint() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (config, dir, _) = checkpointed(tmp.path(), 1000);
        let log = AuditLog::open(&config, "gw-a").await.expect("open");
        for i in 0..4 {
            log.append(intent(&format!("r{i}"))).await.expect("append");
        }
        log.close().await;
        // The shutdown checkpoint covers seq 4; cut records 3.. off.
        let (_, file) = list_segments(&dir).expect("list").pop().expect("a file");
        let text = std::fs::read_to_string(&file).expect("read");
        let kept: Vec<&str> = text.lines().take(2).collect();
        std::fs::write(&file, format!("{}\n", kept.join("\n"))).expect("cut");
        let err = AuditLog::open(&config, "gw-a")
            .await
            .expect_err("cut short");
        let text = err.to_string();
        assert!(
            text.contains("checkpoint-00000000000000000004.txt") && text.contains("end at seq 2"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_restart_continues_the_sequence_and_chain() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let config = AuditConfig::new(tmp.path());
        let log = AuditLog::open(&config, "test").await.expect("open");
        for i in 0..3 {
            log.append(intent(&format!("r{i}"))).await.expect("append");
        }
        log.close().await;
        let log = AuditLog::open(&config, "test").await.expect("reopen");
        assert_eq!(log.append(intent("after")).await.expect("append"), 4);
        log.close().await;
        let report = verify(&[tmp.path().to_owned()], &Chain::default());
        assert!(report.failure.is_none(), "{report:?}");
        assert_eq!(report.records, 4);
    }

    #[tokio::test]
    async fn a_torn_tail_is_kept_acknowledged_and_the_chain_continues() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let config = AuditConfig::new(tmp.path());
        let log = AuditLog::open(&config, "test").await.expect("open");
        for i in 0..3 {
            log.append(intent(&format!("r{i}"))).await.expect("append");
        }
        log.close().await;
        let (_, first) = list_segments(tmp.path()).expect("list").remove(0);
        let good_len = std::fs::metadata(&first).expect("meta").len();
        let torn = b"{\"v\":1,\"seq\":4,\"ts\":\"2026-";
        let mut f = OpenOptions::new().append(true).open(&first).expect("open");
        f.write_all(torn).expect("tear");
        drop(f);

        // Before recovery, verify refuses the unacknowledged torn tail.
        let before = verify(&[tmp.path().to_owned()], &Chain::default());
        assert!(before.failure.is_some());

        let log = AuditLog::open(&config, "test").await.expect("reopen");
        assert_eq!(log.append(intent("after")).await.expect("append"), 5);
        log.close().await;

        let recs = lines_of(tmp.path());
        let recovery = recs
            .iter()
            .find(|r| r["kind"] == "recovery")
            .expect("recovery record");
        assert_eq!(recovery["seq"], 4);
        assert_eq!(recovery["file"], segment_name(1));
        assert_eq!(recovery["offset"], good_len);
        assert_eq!(recovery["length"], torn.len());
        // The evidence is still there.
        assert_eq!(
            std::fs::metadata(&first).expect("meta").len(),
            good_len + torn.len() as u64
        );
        let report = verify(&[tmp.path().to_owned()], &Chain::default());
        assert!(report.failure.is_none(), "{report:?}");
        assert_eq!(report.acknowledged.len(), 1);
        assert_eq!(report.records, 5);
    }

    #[tokio::test]
    async fn files_are_0600_and_the_directory_0700() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("nested").join("audit");
        let log = AuditLog::open(&AuditConfig::new(&dir), "test")
            .await
            .expect("open");
        log.append(intent("r")).await.expect("append");
        log.close().await;
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        for (_, file) in list_segments(&dir).expect("list") {
            assert_eq!(mode(&file), 0o600);
        }
    }

    #[tokio::test]
    async fn a_directory_that_cannot_be_made_is_named_at_start() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let blocker = tmp.path().join("regular-file");
        std::fs::write(&blocker, "x").expect("write");
        let dir = blocker.join("audit");
        let err = AuditLog::open(&AuditConfig::new(&dir), "test")
            .await
            .expect_err("a directory under a file");
        assert!(
            err.to_string().contains(&dir.display().to_string()),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_record_written_to_a_deleted_file_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("audit");
        let log = AuditLog::open(&AuditConfig::new(&dir), "test")
            .await
            .expect("open");
        log.append(intent("before")).await.expect("append");
        std::fs::remove_dir_all(&dir).expect("delete the directory");
        assert!(matches!(
            log.append(intent("lost")).await,
            Err(AuditError::Write(_))
        ));
        assert!(!*log.health().borrow());
        // The next batch goes to a new file in a new directory, led by the recovery record.
        assert_eq!(log.append(intent("after")).await.expect("append"), 3);
        log.close().await;
        let recs = lines_of(&dir);
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0]["kind"], "recovery");
        assert_eq!(recs[1]["request_id"], "after");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_share_fsyncs() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let log = AuditLog::open(&AuditConfig::new(tmp.path()), "test")
            .await
            .expect("open");
        let tasks: Vec<_> = (0..2000)
            .map(|i| {
                let log = log.clone();
                tokio::spawn(async move { log.append(intent(&format!("r{i}"))).await })
            })
            .collect();
        let mut seqs = Vec::new();
        for t in tasks {
            seqs.push(t.await.expect("join").expect("append"));
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=2000).collect::<Vec<_>>());
        let stats = log.stats();
        assert_eq!(stats.records_written, 2000);
        assert!(stats.fsyncs < 2000, "{stats:?}");
        assert_eq!(stats.fsyncs, stats.batches);
        log.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tiny_queue_makes_callers_wait_and_drops_nothing() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut config = AuditConfig::new(tmp.path());
        config.queue_capacity = 1;
        config.max_batch = 1;
        let log = AuditLog::open(&config, "test").await.expect("open");
        let tasks: Vec<_> = (0..300)
            .map(|i| {
                let log = log.clone();
                tokio::spawn(async move { log.append(intent(&format!("r{i}"))).await })
            })
            .collect();
        for t in tasks {
            t.await.expect("join").expect("append");
        }
        log.close().await;
        let recs = lines_of(tmp.path());
        assert_eq!(recs.len(), 300);
        let mut ids: Vec<_> = recs
            .iter()
            .map(|r| r["request_id"].as_str().expect("id").to_owned())
            .collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 300);
    }

    #[tokio::test]
    async fn close_flushes_what_was_queued_then_refuses() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let log = AuditLog::open(&AuditConfig::new(tmp.path()), "test")
            .await
            .expect("open");
        let other = log.clone();
        let queued = tokio::spawn({
            let log = log.clone();
            async move { log.append(intent("queued")).await }
        });
        assert_eq!(queued.await.expect("join").expect("append"), 1);
        log.close().await;
        assert!(matches!(
            other.append(intent("late")).await,
            Err(AuditError::Closed)
        ));
    }
}
