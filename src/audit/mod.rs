//! The durable, tamper-evident audit trail.
//!
//! - [`AuditLog`]: the cloneable handle on one writer thread that numbers, hash-chains and
//!   group-commits records (one write and one fsync per batch), rotates files and recovers the
//!   chain after a crash. Its health ([`AuditLog::health`]) is false while writes fail.
//! - [`Audit`] (outermost) and [`Intent`] (just outside Redshift): every call gets either one
//!   `call` record, or (a call that changes state) an `intent` made durable before forwarding and
//!   an `outcome`.
//! - [`verify_and_report`]: what `datashare-gateway audit verify` runs.
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
    CallFacts, DecisionRecord, HmacKey, KeyError, MAX_STRING_BYTES, OutcomeFacts, RecordBody,
    SCHEMA_VERSION,
};
pub use writer::{AuditError, AuditLog, AuditStats};

/// Verifies audit files or directories with the key the log was written with (`None`: a plain
/// SHA-256 chain), prints the report, and says whether everything verified. Reads and hashes
/// whole files, so it blocks: call it off the async workers.
pub fn verify_and_report(paths: &[PathBuf], key: Option<HmacKey>) -> bool {
    let chain = record::Chain::new(key);
    let report = verify::verify(paths, &chain);
    verify::print_report(&report, &chain);
    report.failure.is_none()
}
