//! The command line: `serve`, `check-config`, `dev`, `emulator`, `audit`, `policy`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Errors from a command, printed by `main` with their causes.
pub type CliError = Box<dyn std::error::Error + Send + Sync>;

/// The audited, policy-checked gRPC gateway for Amazon Redshift datashare associations.
#[derive(Debug, Parser)]
#[command(name = "datashare-gateway", version, about)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the gateway with a configuration file.
    Serve {
        /// The TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a configuration file and exit: 0 when it is valid.
    CheckConfig {
        /// The TOML configuration file.
        config: PathBuf,
    },
    /// Run the Redshift emulator (AWS Query protocol, SigV4 checked).
    Emulator(crate::emulator::EmulatorArgs),
    /// Audit trail tools.
    #[command(subcommand)]
    Audit(crate::audit::AuditCommand),
    /// Policy tools: validate a policy set, or check one request against it.
    #[command(subcommand)]
    Policy(crate::policy::PolicyCommand),
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> Result<ExitCode, CliError> {
    match cli.command {
        Command::Serve { config: _ } | Command::CheckConfig { config: _ } => Err("not implemented yet".into()),
        Command::Emulator(args) => crate::emulator::run(args).await,
        Command::Audit(cmd) => crate::audit::run_command(cmd).await,
        Command::Policy(cmd) => crate::policy::run_command(cmd).await,
    }
}
