//! The command line: `serve`, `check-config`, `dev`, `emulator`, `audit`, `policy`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio::net::TcpListener;

use crate::config::Config;
use crate::server::{App, BuildOptions};
use crate::telemetry;

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
        Command::Serve { config } => serve(&config).await,
        Command::CheckConfig { config } => {
            Config::load(&config)?;
            println!("{}: ok", config.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Emulator(args) => crate::emulator::run(args).await,
        Command::Audit(cmd) => crate::audit::run_command(cmd).await,
        Command::Policy(cmd) => crate::policy::run_command(cmd).await,
    }
}

async fn serve(path: &std::path::Path) -> Result<ExitCode, CliError> {
    let config = Config::load(path)?;
    telemetry::init_logging(&config.telemetry);
    let listen = config.server.listen;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let app = App::build(config, BuildOptions::default()).await?;
    announce(&crate::server::ready_line(listener.local_addr()?));
    app.serve(listener, telemetry::shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// Prints a line on stdout and flushes it, for scripts and tests that wait for it.
fn announce(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
