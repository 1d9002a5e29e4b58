//! The command line: `serve`, `check-config`, `dev`, `emulator`, `audit`, `policy`, `reconcile`.

mod audit;
#[cfg(feature = "emulator")]
mod dev;
#[cfg(feature = "emulator")]
mod emulator;
mod policy;
mod reconcile;
// Compiled in every build (its refusal is unit-tested); used only without the emulator.
#[cfg_attr(feature = "emulator", allow(dead_code, unreachable_pub))]
mod without_emulator;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio::net::TcpListener;

use crate::config::{Config, Files};
use crate::server::{App, BuildOptions};
use crate::telemetry;

#[cfg(feature = "emulator")]
pub use dev::DevArgs;
#[cfg(feature = "emulator")]
pub use emulator::EmulatorArgs;
#[cfg(not(feature = "emulator"))]
pub use without_emulator::{DevArgs, EmulatorArgs};

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
    /// Check a configuration file as `serve` would at start, and exit: 0 when it is valid.
    CheckConfig {
        /// The TOML configuration file.
        config: PathBuf,
        /// Check every rule except what exists only where the configuration will run: the files
        /// it names (certificates, policies, schema, keys, external ids) are not read, and the
        /// variables it names (`audit.hmac_key_env`, `external_id_env`) need not be set. For a
        /// configuration whose files and secrets are a Kubernetes pod's mounted volumes.
        #[arg(long)]
        no_files: bool,
    },
    /// Start the emulator and a gateway wired to it: try everything with no AWS account.
    Dev(DevArgs),
    /// Run the Redshift emulator (AWS Query protocol, SigV4 checked).
    Emulator(EmulatorArgs),
    /// Audit trail tools.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Policy tools: validate a policy set, or check one request against it.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Match the audit trail with CloudTrail over a window and report what does not add up:
    /// changes that went around the gateway (bypass), use of its roles with no record
    /// (unrecorded), pairs that disagree (mismatch), forwarded calls AWS has no event of
    /// (missing_in_aws), and calls whose result the gateway could not know (resolved). Exit
    /// status: 0 nothing found, 1 findings, 2 usage or I/O error.
    Reconcile(reconcile::ReconcileArgs),
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> Result<ExitCode, CliError> {
    match cli.command {
        Command::Serve { config } => serve(&config).await,
        Command::CheckConfig { config, no_files } => check_config(&config, no_files).await,
        #[cfg(feature = "emulator")]
        Command::Dev(args) => dev::run(args).await,
        #[cfg(feature = "emulator")]
        Command::Emulator(args) => emulator::run(args).await,
        #[cfg(not(feature = "emulator"))]
        Command::Dev(_) | Command::Emulator(_) => without_emulator::refuse(),
        Command::Audit(cmd) => audit::run_command(cmd).await,
        Command::Policy(cmd) => Ok(policy::run_command(cmd)),
        Command::Reconcile(args) => reconcile::run(args).await,
    }
}

/// `check-config`: the rules `serve` applies at start, and the bucket `serve` would ask S3
/// about. S3 out of reach is a warning, not a refusal: `serve` starts then too.
async fn check_config(path: &std::path::Path, no_files: bool) -> Result<ExitCode, CliError> {
    let files = if no_files { Files::Skip } else { Files::Check };
    let config = Config::load_checking(path, files)?;
    let mut unchecked = "";
    if let Some(ship) = &config.audit.ship {
        if no_files {
            // Like the files, the bucket (and the credentials to ask about it) is where the
            // configuration will run. On stderr: stdout stays the one line scripts compare.
            eprintln!(
                "note: --no-files: audit.ship.bucket's Object Lock and versioning are not checked"
            );
        } else {
            let store = crate::upstream::S3Store::for_shipping(ship).await;
            match crate::audit::check_bucket(&store, ship).await {
                crate::audit::BucketCheck::Protected => {}
                crate::audit::BucketCheck::Refused(refusal) => return Err(refusal.into()),
                crate::audit::BucketCheck::Unchecked(why) => {
                    eprintln!(
                        "warning: audit.ship.bucket = {:?}: Object Lock and versioning could not \
                         be checked ({why}); serve checks again at start, and starts anyway if \
                         S3 cannot be asked then either",
                        ship.bucket
                    );
                    unchecked = " except audit.ship.bucket, which could not be checked (see the \
                                 warning)";
                }
            }
        }
    }
    println!("{}: ok{unchecked}", path.display());
    Ok(ExitCode::SUCCESS)
}

async fn serve(path: &std::path::Path) -> Result<ExitCode, CliError> {
    let config = Config::load(path)?;
    let telemetry = telemetry::init(&config.telemetry);
    let listen = config.server.listen;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let app = App::build(
        config,
        BuildOptions {
            credentials: None,
            telemetry,
        },
    )
    .await?;
    announce(&crate::server::ready_line(
        listener.local_addr()?,
        app.admin_addr(),
    ));
    app.serve(listener, telemetry::shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// Prints a line on stdout and flushes it, for scripts and tests that wait for it.
pub(crate) fn announce(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
