//! emulator (stub).

#[derive(Debug, clap::Args)]
pub struct EmulatorArgs {}

/// Runs the emulator until SIGTERM or SIGINT.
pub async fn run(_args: EmulatorArgs) -> Result<std::process::ExitCode, crate::cli::CliError> {
    Err("not implemented yet".into())
}
