//! The durable, tamper-evident audit trail.
//!
//! - [`AuditLog`]: the cloneable handle on one writer thread that numbers, hash-chains and
//!   group-commits records (one write and one fsync per batch), rotates files and recovers the
//!   chain after a crash. Its health ([`AuditLog::health`]) is false while writes fail.
//! - [`AuditLayer`] (outermost) and [`IntentLayer`] (just outside Redshift): every call gets
//!   either one `call` record, or an `intent` made durable before forwarding and an `outcome`.
//! - [`AuditCommand`]: `datashare-gateway audit verify`.
//!
//! The schema is documented in `docs/audit.md`.

mod config;
mod layer;
mod record;
mod verify;
mod writer;

use std::path::PathBuf;
use std::process::ExitCode;

pub use config::AuditConfig;
pub use layer::{Audit, AuditLayer, Intent, IntentLayer};
pub use record::{
    CallFacts, DecisionRecord, HmacKey, KeyError, MAX_STRING_BYTES, OutcomeFacts, ParamsRecord,
    RecordBody, SCHEMA_VERSION,
};
pub use writer::{AuditError, AuditLog, AuditStats};

/// `audit` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Verify the hash chain and the sequence of audit files; report the first bad record and
    /// the intents without an outcome. Exit status 0 only when everything verifies.
    Verify {
        /// Audit files, or directories of audit files (`audit-<number>.jsonl`).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// File holding the HMAC key the log was written with.
        #[arg(long, conflicts_with = "hmac_key_env")]
        hmac_key_file: Option<PathBuf>,
        /// Environment variable holding the HMAC key the log was written with.
        #[arg(long)]
        hmac_key_env: Option<String>,
    },
}

/// Runs an `audit` subcommand.
pub async fn run_command(cmd: AuditCommand) -> Result<ExitCode, crate::cli::CliError> {
    match cmd {
        AuditCommand::Verify {
            paths,
            hmac_key_file,
            hmac_key_env,
        } => {
            let key = HmacKey::load(hmac_key_file.as_deref(), hmac_key_env.as_deref())?;
            let chain = record::Chain::new(key);
            // Reading and hashing whole files blocks; keep it off the async workers.
            let report = tokio::task::spawn_blocking(move || {
                let report = verify::verify(&paths, &chain);
                verify::print_report(&report, &chain);
                report
            })
            .await?;
            Ok(if report.failure.is_none() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
