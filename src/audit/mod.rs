//! audit (stub).

#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {}

/// Runs an `audit` subcommand.
pub async fn run_command(cmd: AuditCommand) -> Result<std::process::ExitCode, crate::cli::CliError> {
    match cmd {}
}

/// Config (stub).
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    pub dir: std::path::PathBuf,
    #[serde(default)]
    pub hmac_key_file: Option<std::path::PathBuf>,
    #[serde(default)]
    pub sync: bool,
}

impl AuditConfig {
    /// Validate (stub).
    pub fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}
