//! `datashare-gateway emulator`: the Redshift emulator as a process, for the Python tests, the
//! Rust integration tests and trying the gateway by hand.

use std::future::Future;
use std::io::{IsTerminal as _, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use datashare_emulator::{EmulatorConfig, FaultSpec, Fixtures, serve};
use tokio::net::TcpListener;

use super::CliError;

/// `datashare-gateway emulator`.
#[derive(Debug, clap::Args)]
pub struct EmulatorArgs {
    /// Address of the Redshift API listener (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:4566")]
    pub listen: SocketAddr,
    /// Address of the admin API listener (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:4567")]
    pub admin: SocketAddr,
    /// The fixtures file (TOML). Without it the emulator starts empty.
    #[arg(long)]
    pub fixtures: Option<PathBuf>,
    /// The region requests must be signed for.
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
    /// A fault rule active from the start, repeatable:
    /// KIND[,op=Action][,count=N][,probability=P][,latency_ms=N][,jitter_ms=N], where KIND is
    /// throttling, internal_failure, service_unavailable, bare_429, latency, close_connection
    /// or malformed_body.
    #[arg(long = "fault", value_name = "SPEC")]
    pub faults: Vec<FaultSpec>,
}

/// Runs the emulator until SIGTERM or SIGINT. Once both listeners are bound it prints one JSON
/// line on stdout, `{"event":"emulator_listening","api":ADDR,"admin":ADDR}`, which scripts and
/// tests wait for.
pub(super) async fn run(args: EmulatorArgs) -> Result<ExitCode, CliError> {
    // The binary sets no subscriber; one may already exist when embedded, which is fine.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();
    let fixtures = match &args.fixtures {
        Some(path) => Fixtures::load(path)?,
        None => Fixtures::default(),
    };
    let config = EmulatorConfig {
        region: args.region,
        fixtures,
        faults: args.faults,
    };
    let shutdown = shutdown_signal()?;
    let api = TcpListener::bind(args.listen).await?;
    let admin = TcpListener::bind(args.admin).await?;
    let ready = serde_json::json!({
        "event": "emulator_listening",
        "api": api.local_addr()?.to_string(),
        "admin": admin.local_addr()?.to_string(),
    });
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{ready}")?;
        out.flush()?;
    }
    tracing::info!(api = %api.local_addr()?, admin = %admin.local_addr()?, "emulator listening");
    serve(api, admin, config, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

/// Installs the SIGTERM/SIGINT handlers now (so a signal that arrives right after the ready
/// line is not fatal) and returns a future that resolves on either.
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}
