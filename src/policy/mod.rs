//! policy (stub).

#[derive(Debug, clap::Subcommand)]
pub enum PolicyCommand {}

/// Runs an `policy` subcommand.
pub async fn run_command(cmd: PolicyCommand) -> Result<std::process::ExitCode, crate::cli::CliError> {
    match cmd {}
}

/// Config (stub).
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    pub dir: std::path::PathBuf,
    #[serde(default)]
    pub schema: Option<std::path::PathBuf>,
}

impl PolicyConfig {
    /// Validate (stub).
    pub fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}
