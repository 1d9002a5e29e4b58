//! policy (stub).

#[derive(Debug, clap::Subcommand)]
pub enum PolicyCommand {}

/// Runs an `policy` subcommand.
pub async fn run_command(cmd: PolicyCommand) -> Result<std::process::ExitCode, crate::cli::CliError> {
    match cmd {}
}
