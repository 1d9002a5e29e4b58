//! The writer thread: one thread owns the open file, the sequence number and the chain, so the
//! hot path takes no lock. It takes everything queued (up to `max_batch`), numbers and chains
//! it, writes it with one `write` and one `fsync`, answers the waiters, then mirrors the batch
//! to stdout if asked. It rotates full files, abandons a file after a failed write, and signs
//! checkpoints and seals files when they are due.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use ed25519_dalek::SigningKey;
use tokio::sync::{mpsc, oneshot, watch};

use super::checkpoint::{self, CheckpointBody};
use super::config::AuditConfig;
use super::log::AuditError;
use super::record::{
    Chain, CheckpointNote, EncodedBody, HmacKey, RecoveryNote, WriterRecord, encode_body, rfc3339,
};
use super::recover::recover;
use super::segment::{list_segments, segment_name};

/// The writer's counters: it updates them, the handle reads them for metrics and the watchdog.
#[derive(Debug, Default)]
pub(super) struct Counters {
    /// When the writer started its current write, in milliseconds after `epoch` plus one; 0
    /// while it is not writing. Read by the watchdog.
    pub(super) busy_since_ms: AtomicU64,
    epoch: OnceEpoch,
    pub(super) records_written: AtomicU64,
    pub(super) batches: AtomicU64,
    pub(super) fsyncs: AtomicU64,
    pub(super) fsync_micros_total: AtomicU64,
    pub(super) fsync_micros_max: AtomicU64,
    pub(super) write_errors: AtomicU64,
    pub(super) checkpoints: AtomicU64,
    pub(super) checkpoint_errors: AtomicU64,
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
    pub(super) fn busy_for(&self) -> Option<Duration> {
        match self.busy_since_ms.load(Ordering::Relaxed) {
            0 => None,
            since => Some(Duration::from_millis(
                self.now_ms().saturating_sub(since - 1),
            )),
        }
    }
}

type Reply = oneshot::Sender<Result<u64, AuditError>>;

/// What the handle sends the writer thread.
#[derive(Debug)]
pub(super) enum Msg {
    Append {
        /// Set by a caller that stopped waiting: the writer drops the record if it has not
        /// taken it yet.
        withdrawn: Arc<std::sync::atomic::AtomicBool>,
        body: EncodedBody,
        reply: Reply,
    },
    /// A record no caller waits for (see `AuditLog::enqueue`).
    Queued(EncodedBody),
    /// While unhealthy: try to write (a new file, pending recovery records) without a call.
    Probe,
    /// Once a second while checkpoints or sealing are configured: time-based work.
    Tick,
    Shutdown(oneshot::Sender<()>),
}

fn make_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)
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
pub(super) struct Checkpointer {
    key: SigningKey,
    origin: String,
    every_records: u64,
    every: Duration,
    /// The seq the newest checkpoint covers.
    covered: u64,
    /// The seq of the newest checkpoint's own record, which needs no checkpoint of its own.
    quiet_through: u64,
    last_at: Instant,
}

impl Checkpointer {
    /// The checkpointer `[audit.checkpoint]` asks for, its key loaded; `instance` names the log
    /// in its checkpoints (`datashare-gateway/<instance>`).
    pub(super) fn load(
        config: &AuditConfig,
        instance: &str,
    ) -> Result<Option<Checkpointer>, AuditError> {
        let Some(c) = &config.checkpoint else {
            return Ok(None);
        };
        Ok(Some(Checkpointer {
            key: checkpoint::load_signing_key(&c.signing_key_file)?,
            origin: checkpoint::origin(instance),
            every_records: c.interval_records,
            every: Duration::from_secs(c.interval_secs),
            covered: checkpoint::newest_seq(&config.dir),
            quiet_through: 0,
            last_at: Instant::now(),
        }))
    }
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

/// Where `audit.mirror_stdout` copies each batch: stdout, or in unit tests a sink the test
/// holds.
#[cfg(not(test))]
type Mirror = io::Stdout;
#[cfg(test)]
type Mirror = test_faults::Mirror;

#[derive(Debug)]
pub(super) struct Writer {
    dir: PathBuf,
    chain: Chain,
    max_file_bytes: u64,
    max_batch: usize,
    sync: bool,
    mirror: Option<Mirror>,
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
    seal_every: Option<Duration>,
    sealed_below: watch::Sender<u64>,
    health: Arc<watch::Sender<bool>>,
    counters: Arc<Counters>,
    /// Test hooks: stall or fail writes.
    #[cfg(test)]
    faults: Arc<test_faults::Faults>,
}

impl Writer {
    /// Makes the directory (0700), recovers the chain found there, opens a new file and writes
    /// the `recovery` records of torn bytes.
    pub(super) fn start(
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
        // Before the first audit file: a directory with audit files and no id is an earlier
        // release's trail.
        super::trail::establish(&dir, !segments.is_empty()).map_err(|source| {
            AuditError::CreateFile {
                path: dir.join(super::trail::TRAIL_ID_FILE),
                source,
            }
        })?;
        let chain = Chain::new(key);
        let covered = checkpointer.as_ref().map(|c| c.covered);
        let recovered = recover(&dir, &segments, &chain, covered)?;
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
            #[cfg(not(test))]
            mirror: config.mirror_stdout.then(io::stdout),
            #[cfg(test)]
            mirror: config
                .mirror_stdout
                .then(|| test_faults::Mirror(test_faults::for_dir(&config.dir))),
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
                .map(|ship| Duration::from_secs(ship.seal_interval_secs)),
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

    /// Serves the queue until it is closed or a `Shutdown` arrives, then seals the open file.
    pub(super) fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
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
                for (seq, reply) in waiters {
                    // A waiter that went away still had its record written.
                    let _ = reply.send(Ok(seq));
                }
                // After the answers: a slow reader of stdout (a log shipper) must not delay the
                // calls waiting on their intent.
                if let Some(out) = self.mirror.as_mut()
                    && let Err(err) = out.write_all(&buf).and_then(|()| out.flush())
                {
                    tracing::warn!(error = %err, "audit: cannot mirror records to stdout");
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
        /// While true, the stdout mirror blocks (a reader that does not read).
        pub(crate) mirror_stalled: Mutex<bool>,
        pub(crate) unstall: Condvar,
        /// What the writer mirrored.
        pub(crate) mirrored: Mutex<Vec<u8>>,
    }

    impl Faults {
        fn wait_while(&self, stalled: &Mutex<bool>) {
            let mut stalled = stalled.lock().unwrap_or_else(|p| p.into_inner());
            while *stalled {
                stalled = self
                    .unstall
                    .wait(stalled)
                    .unwrap_or_else(|p| p.into_inner());
            }
        }

        pub(super) fn before_write(&self) -> io::Result<()> {
            self.wait_while(&self.stalled);
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

        pub(crate) fn stall_mirror(&self, on: bool) {
            *self
                .mirror_stalled
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = on;
            self.unstall.notify_all();
        }
    }

    /// The writer's stdout in unit tests: keeps what it is given in [`Faults::mirrored`], and
    /// blocks while [`Faults::mirror_stalled`].
    #[derive(Debug)]
    pub(crate) struct Mirror(pub(crate) Arc<Faults>);

    impl io::Write for Mirror {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.wait_while(&self.0.mirror_stalled);
            self.0
                .mirrored
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
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
    use crate::audit::AuditLog;
    use crate::audit::record::GENESIS;
    use crate::audit::testing::{checkpointed, intent, lines_of};
    use crate::audit::verify::verify;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiters_are_answered_before_the_batch_is_mirrored_to_stdout() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut config = AuditConfig::new(tmp.path());
        config.mirror_stdout = true;
        // Longer than the wait below: an append held by the mirror fails that wait, not this.
        config.write_timeout_ms = 60_000;
        let log = AuditLog::open(&config, "test").await.expect("open");
        let faults = test_faults::for_dir(tmp.path());
        faults.stall_mirror(true);
        let answered = tokio::time::timeout(Duration::from_secs(5), log.append(intent("r"))).await;
        faults.stall_mirror(false);
        assert_eq!(
            answered
                .expect("answered while stdout does not take the batch")
                .expect("durable"),
            1
        );
        log.close().await;
        let file = std::fs::read(&list_segments(tmp.path()).expect("list")[0].1).expect("read");
        let mirrored = faults.mirrored.lock().expect("mirrored").clone();
        assert_eq!(
            mirrored, file,
            "the batch is still mirrored, after the answer"
        );
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
}
