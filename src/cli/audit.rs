//! `datashare-gateway audit verify`.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::audit::HmacKey;
use crate::cli::CliError;

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
pub(super) async fn run_command(cmd: AuditCommand) -> Result<ExitCode, CliError> {
    match cmd {
        AuditCommand::Verify {
            paths,
            hmac_key_file,
            hmac_key_env,
        } => {
            let key = HmacKey::load(hmac_key_file.as_deref(), hmac_key_env.as_deref())?;
            // Reading and hashing whole files blocks; keep it off the async workers.
            let verified =
                tokio::task::spawn_blocking(move || crate::audit::verify_and_report(&paths, key))
                    .await?;
            Ok(if verified {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
