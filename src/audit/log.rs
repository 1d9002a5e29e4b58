//! The cloneable [`AuditLog`] handle, and the tasks beside the writer thread: a probe while
//! writes fail, a tick for work due by time, and a watchdog for a write that hangs.
//!
//! Callers queue a record with a oneshot and wait; the writer thread (`writer`) numbers, chains
//! and group-commits it and answers. No file I/O here: it blocks that thread only, never a tokio
//! worker.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use super::checkpoint::CheckpointKeyError;
use super::config::AuditConfig;
use super::record::{HmacKey, KeyError, RecordBody, encode_body};
use super::writer::{Checkpointer, Counters, Msg, Writer};

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
        checkpoint: PathBuf,
        /// The seq it covers.
        covered: u64,
        /// The seq the files end at.
        last: u64,
    },
    /// The audit directory could not be made.
    #[error("cannot create the audit directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A new audit file could not be created at start.
    #[error("cannot create an audit file in {path}")]
    CreateFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// An existing audit file could not be read at start.
    #[error("cannot read the audit file or directory {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The last record on disk does not verify, so the chain cannot be continued.
    #[error("{path} line {line}: {problem}; refusing to continue this chain")]
    Corrupt {
        path: PathBuf,
        /// The 1-based line.
        line: usize,
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

/// How often an unhealthy writer retries on its own, so that health can come back while no
/// calls arrive (callers stop sending to a NOT_SERVING gateway).
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// A cloneable handle on the audit log. [`AuditLog::open`] makes the directory, recovers the
/// chain and starts the writer thread.
#[derive(Clone, Debug)]
pub struct AuditLog {
    tx: mpsc::Sender<Msg>,
    health: watch::Receiver<bool>,
    sealed_below: watch::Receiver<u64>,
    counters: Arc<Counters>,
    write_timeout: Duration,
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
        let checkpointer = Checkpointer::load(config, instance)?;
        let (sealed_tx, sealed_below) = watch::channel(0);
        let timed_work = config.checkpoint.is_some() || config.ship.is_some();
        let (tx, rx) = mpsc::channel(config.queue_capacity);
        let (health_tx, health) = watch::channel(true);
        let health_tx = Arc::new(health_tx);
        let watchdog_health = Arc::clone(&health_tx);
        let counters = Arc::new(Counters::default());
        let write_timeout = Duration::from_millis(config.write_timeout_ms);
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
    let mut every = tokio::time::interval(Duration::from_secs(1));
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
    write_timeout: Duration,
) {
    let period = (write_timeout / 4).max(Duration::from_millis(20));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::Chain;
    use crate::audit::testing::{intent, lines_of, until_records};
    use crate::audit::verify::verify;
    use crate::audit::writer::test_faults;

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
        tokio::time::sleep(Duration::from_millis(50)).await;
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
        tokio::time::sleep(Duration::from_millis(50)).await;
        let second = log.append(intent("queued-while-stuck")).await;
        assert!(
            matches!(second, Err(AuditError::Timeout(200))),
            "{second:?}"
        );
        let first = first.await.expect("join");
        assert!(matches!(first, Err(AuditError::Timeout(200))), "{first:?}");
        tokio::time::timeout(Duration::from_secs(5), health.wait_for(|healthy| !*healthy))
            .await
            .expect("the watchdog turns health off")
            .expect("health");
        faults.stall(false);
        tokio::time::timeout(Duration::from_secs(5), health.wait_for(|healthy| *healthy))
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
