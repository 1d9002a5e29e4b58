//! `datashare-gateway emulator`: the Redshift emulator as a process, for the Python tests, the
//! Rust integration tests and trying the gateway by hand.

use std::future::Future;
use std::io::{IsTerminal as _, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use datashare_emulator::{EmulatorConfig, FaultSpec, Fixtures, Secret, TrailConfig, serve};
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
    /// Deliver the event log as CloudTrail trail files to the S3 server at this URL (with
    /// --trail-bucket). S3 requests are signed with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY
    /// when set.
    #[arg(long, value_name = "URL", requires = "trail_bucket")]
    pub trail_s3_endpoint: Option<String>,
    /// The bucket trail files go to (it must exist).
    #[arg(long, value_name = "NAME", requires = "trail_s3_endpoint")]
    pub trail_bucket: Option<String>,
    /// CloudTrail's S3 key prefix: keys start PREFIX/AWSLogs/.
    #[arg(long, value_name = "PREFIX", requires = "trail_bucket")]
    pub trail_prefix: Option<String>,
    /// An organization trail: keys become AWSLogs/ORG-ID/ACCOUNT/...
    #[arg(long, value_name = "ORG-ID", requires = "trail_bucket")]
    pub trail_organization_id: Option<String>,
    /// The trail's name, in digest file names.
    #[arg(long, value_name = "NAME", requires = "trail_bucket")]
    pub trail_name: Option<String>,
    /// Milliseconds between deliveries (default 5000).
    #[arg(long, value_name = "MS", requires = "trail_bucket")]
    pub trail_interval_ms: Option<u64>,
    /// The region S3 requests are signed for (default us-east-1).
    #[arg(long, value_name = "REGION", requires = "trail_bucket")]
    pub trail_s3_region: Option<String>,
    /// The RSA private key digests are signed with (PEM or DER, PKCS#8 or PKCS#1); without it
    /// a fresh key is made on first use.
    #[arg(long, value_name = "FILE")]
    pub digest_signing_key: Option<PathBuf>,
}

impl EmulatorArgs {
    /// The trail the flags describe, if any.
    fn trail(&self) -> Option<TrailConfig> {
        let (Some(endpoint), Some(bucket)) = (&self.trail_s3_endpoint, &self.trail_bucket) else {
            return None;
        };
        let mut trail = TrailConfig::new(endpoint, bucket);
        trail.key_prefix.clone_from(&self.trail_prefix);
        trail
            .organization_id
            .clone_from(&self.trail_organization_id);
        if let Some(name) = &self.trail_name {
            trail.name.clone_from(name);
        }
        if let Some(ms) = self.trail_interval_ms {
            trail.delivery_interval_ms = ms;
        }
        if let Some(region) = &self.trail_s3_region {
            trail.s3_region.clone_from(region);
        }
        if let (Ok(id), Ok(secret)) = (
            std::env::var("AWS_ACCESS_KEY_ID"),
            std::env::var("AWS_SECRET_ACCESS_KEY"),
        ) {
            trail.s3_access_key_id = id;
            trail.s3_secret_access_key = Secret(secret);
        }
        Some(trail)
    }
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
        trail: args.trail(),
        region: args.region,
        fixtures,
        faults: args.faults,
        digest_signing_key: args.digest_signing_key,
    };
    // A bad setting stops the start, naming its key, before anything listens.
    config.validate()?;
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
