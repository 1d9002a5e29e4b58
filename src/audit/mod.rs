//! The durable, tamper-evident audit trail.
//!
//! - [`AuditLog`]: the cloneable handle on one writer thread that numbers, hash-chains and
//!   group-commits records (one write and one fsync per batch), rotates files and recovers the
//!   chain after a crash. Its health ([`AuditLog::health`]) is false while writes fail.
//! - [`Audit`] (outermost) and [`Intent`] (just outside Redshift): every call gets either one
//!   `call` record, or (a call that changes state) an `intent` made durable before forwarding and
//!   an `outcome`.
//! - [`verify_and_report`]: what `datashare-gateway audit verify` runs (exit 0 verified, 1
//!   tampering found, 2 usage or I/O error); [`verify_paths`], the same check without the
//!   printing (for the fuzz targets).
//! - [`Shipper`]: ships sealed files and signed checkpoints to an [`ObjectStore`], create-only
//!   and retention-locked. The trait is this module's; the wiring hands in S3's implementation.
//!
//! Inside: `log` (the handle and its tasks), `writer` (the writer thread), `segment` (audit file
//! names, listing and lines), `recover` (crash recovery at start), `trail` (the trail id in
//! `trail-id`), `checkpoint`, `verify`, `store` and `ship`.
//!
//! The schema is documented in `docs/audit.md`.

mod checkpoint;
mod config;
mod layer;
mod log;
mod record;
mod recover;
mod segment;
mod ship;
mod store;
#[cfg(test)]
mod testing;
mod trail;
mod verify;
mod writer;

use std::path::PathBuf;

pub use checkpoint::{
    CHECKPOINT_DIR, CheckpointKeyError, checkpoint_seq, generate_key_pair, load_verifying_key,
};
pub use config::{AuditConfig, CheckpointConfig, ObjectLockMode, ShipConfig};
pub use layer::{Audit, Intended, Intent};
pub use log::{AuditError, AuditLog, AuditStats};
pub use record::{
    ApprovalEvent, CallFacts, DecisionRecord, HmacKey, KeyError, MAX_STRING_BYTES, OutcomeFacts,
    RecordBody, SCHEMA_VERSION, rfc3339,
};
pub(crate) use segment::segment_number;
pub use ship::{
    Archive, ArchivedTrail, BucketCheck, Shipper, UnprotectedBucket, check_bucket, read_archive,
};
pub use store::{
    BucketState, Failure, ObjectStore, ObjectVersion, StoreError, StoreFuture, Stored, Upload,
    Versioning,
};
pub use trail::{TRAIL_ID_FILE, is_trail_id, read_trail_id};
/// The audit files named by paths (files, or directories of them), oldest first.
pub(crate) use verify::collect_files as audit_files;

/// What `audit verify` found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every record verifies.
    Verified,
    /// A record was edited, removed, reordered or cut off: tampering (or a damaged disk).
    Tampered,
    /// The trail could not be read (no files, unreadable files or directories).
    Unreadable,
}

/// Checkpoints to verify a trail against: the public key and the signed notes, as read.
#[derive(Debug)]
pub struct Checkpoints {
    /// The Ed25519 public keys: each checkpoint must be signed by one of them (more than one
    /// after a key rotation).
    pub public_keys: Vec<ed25519_dalek::VerifyingKey>,
    /// Where they were read from, for the report (a directory, `s3://...`).
    pub source: String,
    /// Each checkpoint: where it was read (a path or `s3://bucket/key`) and its bytes.
    pub notes: Vec<(String, Vec<u8>)>,
    /// Checkpoints and audit files hidden behind a delete marker (`s3://bucket/key`): tampering.
    pub delete_markers: Vec<String>,
}

/// Verifies audit files or directories with the key the log was written with (`None`: a plain
/// SHA-256 chain) and, given `checkpoints`, that every checkpoint is signed with their public key
/// and finds its record with the same hash (so a trail cut short shows). Writes the report to
/// `out`. A reader that goes away (a closed pipe, as in `audit verify DIR | head -1`) stops the
/// report quietly; the verdict stands. Reads and hashes whole files, so it blocks: call it off
/// the async workers.
pub fn verify_and_report(
    paths: &[PathBuf],
    key: Option<HmacKey>,
    checkpoints: Option<&Checkpoints>,
    out: &mut impl std::io::Write,
) -> Verdict {
    let chain = record::Chain::new(key);
    let report = match checkpoints {
        None => verify::verify(paths, &chain),
        Some(checkpoints) => verify_against(paths, &chain, checkpoints),
    };
    // A report that cannot be written (the reader left) changes nothing about the trail.
    let _ = verify::write_report(out, &report, &chain).and_then(|()| out.flush());
    match &report.failure {
        None => Verdict::Verified,
        Some(failure) if failure.unreadable => Verdict::Unreadable,
        Some(_) => Verdict::Tampered,
    }
}

fn verify_against(
    paths: &[PathBuf],
    chain: &record::Chain,
    checkpoints: &Checkpoints,
) -> verify::Report {
    let failed = |file: &str, problem: String, unreadable: bool| verify::Report {
        failure: Some(verify::Failure {
            file: PathBuf::from(file),
            line: 0,
            offset: 0,
            seq: None,
            problem,
            unreadable,
        }),
        ..verify::Report::default()
    };
    if let Some(first) = checkpoints.delete_markers.first() {
        return failed(
            first,
            format!(
                "a delete marker hides this object (and {} more): an audit file or checkpoint \
                 was deleted from the archive: {}",
                checkpoints.delete_markers.len() - 1,
                checkpoints.delete_markers.join(", ")
            ),
            false,
        );
    }
    if checkpoints.notes.is_empty() {
        return failed(
            &checkpoints.source,
            "no checkpoints (checkpoint-<seq>.txt) found: nothing shows whether the trail was cut \
             short"
                .into(),
            true,
        );
    }
    let mut signed = Vec::with_capacity(checkpoints.notes.len());
    for (source, bytes) in &checkpoints.notes {
        let mut opened = checkpoints
            .public_keys
            .iter()
            .map(|key| checkpoint::open(bytes, key));
        let first = opened
            .next()
            .unwrap_or_else(|| Err(checkpoint::BadCheckpoint("no public key given".into())));
        // The first key's reason, unless a later key signed it.
        match opened.fold(first, |found, next| found.or(next)) {
            Ok(body) => signed.push(verify::SignedCheckpoint {
                source: source.clone(),
                seq: body.seq,
                head: body.head,
                origin: body.origin,
                time: body.time,
            }),
            Err(bad) => return failed(source, format!("checkpoint rejected: {bad}"), false),
        }
    }
    let wanted = signed.iter().map(|c| c.seq).collect();
    let mut report = verify::verify_keeping(paths, chain, &wanted);
    if report.failure.as_ref().is_some_and(|f| f.unreadable) {
        return report;
    }
    verify::check_checkpoints(&mut report, signed);
    report
}

/// What [`verify_paths`] found: the counts `audit verify` prints, and its first failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifySummary {
    /// Audit files read.
    pub files: usize,
    /// Records that verified: the first `records` lines, in file order.
    pub records: u64,
    /// The seq of the last record that verified (0: none).
    pub last_seq: u64,
    /// Intents without an outcome.
    pub open_intents: usize,
    /// The first thing that did not verify, as `audit verify` prints it.
    pub failure: Option<String>,
}

/// [`verify_and_report`] without the report: the same check, its findings returned.
pub fn verify_paths(paths: &[PathBuf], key: Option<HmacKey>) -> VerifySummary {
    let report = verify::verify(paths, &record::Chain::new(key));
    VerifySummary {
        files: report.files,
        records: report.records,
        last_seq: report.last_seq,
        open_intents: report.open_intents.len(),
        failure: report.failure.map(|failure| failure.to_string()),
    }
}
