//! Reconciliation of the audit trail with CloudTrail (issue 23): what went around the gateway,
//! what used its roles unrecorded, and what the gateway could not know.
//! - [`matching`]: the two sides matched, and the findings.
//! - [`report`]: the findings as a table or JSON lines.
//! - [`sides`]: the gateway's calls from audit records, Redshift's events from CloudTrail's.

pub mod matching;
pub mod report;
pub mod sides;
