//! audit (stub).

#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {}

/// Runs an `audit` subcommand.
pub async fn run_command(cmd: AuditCommand) -> Result<std::process::ExitCode, crate::cli::CliError> {
    match cmd {}
}
