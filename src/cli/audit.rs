//! `datashare-gateway audit verify`.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::audit::{HmacKey, Verdict};
use crate::cli::CliError;

/// The exit status of `audit verify` when it could not verify at all (bad arguments, an
/// unreadable key or trail); 1 means tampering was found. clap's own usage errors exit 2 too.
const USAGE_OR_IO: u8 = 2;

/// `audit` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Verify the hash chain and the sequence of audit files; report the first bad record and
    /// the intents without an outcome. Exit status: 0 everything verifies, 1 tampering found
    /// (the report names the record), 2 usage or I/O error (nothing could be verified).
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
            let key = match HmacKey::load(hmac_key_file.as_deref(), hmac_key_env.as_deref()) {
                Ok(key) => key,
                Err(err) => {
                    eprintln!("error: {err}");
                    return Ok(ExitCode::from(USAGE_OR_IO));
                }
            };
            // Reading and hashing whole files blocks; keep it off the async workers.
            let verdict = tokio::task::spawn_blocking(move || {
                crate::audit::verify_and_report(&paths, key, &mut std::io::stdout().lock())
            })
            .await?;
            Ok(match verdict {
                Verdict::Verified => ExitCode::SUCCESS,
                Verdict::Tampered => ExitCode::FAILURE,
                Verdict::Unreadable => ExitCode::from(USAGE_OR_IO),
            })
        }
    }
}
