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
//!
//! The schema is documented in `docs/audit.md`.

mod config;
mod layer;
mod record;
mod verify;
mod writer;

use std::path::PathBuf;

pub use config::AuditConfig;
pub use layer::{Audit, Intent};
pub use record::{
    ApprovalEvent, CallFacts, DecisionRecord, HmacKey, KeyError, MAX_STRING_BYTES, OutcomeFacts,
    RecordBody, SCHEMA_VERSION, rfc3339,
};
pub use writer::{AuditError, AuditLog, AuditStats};

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

/// Verifies audit files or directories with the key the log was written with (`None`: a plain
/// SHA-256 chain) and writes the report to `out`. A reader that goes away (a closed pipe, as in
/// `audit verify DIR | head -1`) stops the report quietly; the verdict stands. Reads and hashes
/// whole files, so it blocks: call it off the async workers.
pub fn verify_and_report(
    paths: &[PathBuf],
    key: Option<HmacKey>,
    out: &mut impl std::io::Write,
) -> Verdict {
    let chain = record::Chain::new(key);
    let report = verify::verify(paths, &chain);
    // A report that cannot be written (the reader left) changes nothing about the trail.
    let _ = verify::write_report(out, &report, &chain).and_then(|()| out.flush());
    match &report.failure {
        None => Verdict::Verified,
        Some(failure) if failure.unreadable => Verdict::Unreadable,
        Some(_) => Verdict::Tampered,
    }
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
