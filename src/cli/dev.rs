//! `datashare-gateway dev`: the emulator with the dev fixtures and a gateway wired to it.

use std::path::PathBuf;
use std::process::ExitCode;

use tokio::net::TcpListener;

use super::{CliError, announce};
use crate::config::Config;
use crate::server::{App, BuildOptions};
use crate::telemetry;

/// `datashare-gateway dev`: the emulator with the dev fixtures, and the gateway in insecure mode
/// serving the consumer accounts 444455556666 and 777788889999 through their roles, with the
/// example policies.
#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// The gateway's gRPC address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub listen: std::net::SocketAddr,
    /// The emulator's Redshift API address.
    #[arg(long, default_value = "127.0.0.1:4566")]
    pub emulator_listen: std::net::SocketAddr,
    /// The emulator's admin API address.
    #[arg(long, default_value = "127.0.0.1:4567")]
    pub emulator_admin: std::net::SocketAddr,
    /// Where the audit trail goes (made if missing).
    #[arg(long, default_value = "dev-audit")]
    pub audit_dir: PathBuf,
    /// The emulator's fixtures.
    #[arg(long, default_value = "examples/emulator-fixtures.toml")]
    pub fixtures: PathBuf,
    /// The Cedar policies (and their principals.toml).
    #[arg(long, default_value = "examples/policies")]
    pub policies: PathBuf,
    /// The admin listener (`/metrics`, `/livez`, `/readyz`).
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub admin_listen: std::net::SocketAddr,
    /// Export traces to this OTLP/gRPC collector (or set OTEL_EXPORTER_OTLP_ENDPOINT).
    #[arg(long)]
    pub otlp_endpoint: Option<String>,
}

/// `dev` acts as the emulator's platform account and reaches each consumer account through its
/// role (the emulator's dev fixtures).
const DEV_PLATFORM_ACCESS_KEY: &str = "AKIA2PLATFORMEXAMPLE";
const DEV_PLATFORM_SECRET_KEY: &str = "pLatf0rmS3cretKey/EXAMPLEKEY/PLATFORMxyz";
/// The consumer accounts `dev` serves: account, role, external id.
const DEV_ACCOUNTS: [(&str, &str, &str); 2] = [
    (
        "444455556666",
        "arn:aws:iam::444455556666:role/datashare-gateway",
        "dsgw-444455556666-example",
    ),
    (
        "777788889999",
        "arn:aws:iam::777788889999:role/datashare-gateway",
        "dsgw-777788889999-example",
    ),
];
/// The account `dev` acts in when a request names none.
const DEV_DEFAULT_ACCOUNT: &str = "444455556666";

/// A private directory holding `dev`'s external ids (secrets go in files, as in production),
/// removed when `dev` ends.
#[derive(Debug)]
struct DevSecrets {
    dir: PathBuf,
}

impl DevSecrets {
    fn create() -> std::io::Result<Self> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let dir = std::env::temp_dir().join(format!(
            "datashare-gateway-dev-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4()
        ));
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        for (account, _, external_id) in DEV_ACCOUNTS {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(dir.join(account))?;
            std::io::Write::write_all(&mut file, external_id.as_bytes())?;
        }
        Ok(DevSecrets { dir })
    }

    /// The `[accounts]` table of the dev configuration.
    fn accounts_toml(&self) -> String {
        DEV_ACCOUNTS
            .iter()
            .map(|(account, role, _)| {
                format!(
                    "[accounts.\"{account}\"]\nrole_arn = \"{role}\"\nexternal_id_file = {:?}\n\n",
                    self.dir.join(account).display().to_string()
                )
            })
            .collect()
    }
}

impl Drop for DevSecrets {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(super) async fn run(args: DevArgs) -> Result<ExitCode, CliError> {
    let region = "us-east-1";
    // The dev fixtures are built in, so `dev` works from any directory; a file given explicitly
    // (or present at the default path) is used instead.
    let fixtures = if args.fixtures.is_file() {
        datashare_emulator::Fixtures::load(&args.fixtures)?
    } else {
        datashare_emulator::Fixtures::dev()?
    };
    let principals =
        std::fs::read_to_string(args.policies.join("principals.toml")).map_err(|e| {
            format!(
                "cannot read {}: {e}",
                args.policies.join("principals.toml").display()
            )
        })?;
    let bind = |addr: std::net::SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))
    };
    let api = bind(args.emulator_listen).await?;
    let admin = bind(args.emulator_admin).await?;
    let grpc = bind(args.listen).await?;
    let (api_addr, admin_addr, grpc_addr) =
        (api.local_addr()?, admin.local_addr()?, grpc.local_addr()?);

    let secrets =
        DevSecrets::create().map_err(|e| format!("cannot write dev's external ids: {e}"))?;
    // The same path as `serve`: a config file's text, parsed and validated.
    let text = format!(
        r#"[server]
listen = "{grpc_addr}"
admin_listen = "{admin_listen}"
shutdown_grace_secs = 15

[auth]
mode = "insecure"

[policy]
dir = {policies:?}

[audit]
dir = {audit:?}

[approvals]
store = {approvals_store:?}

[upstream]
default_account = "{DEV_DEFAULT_ACCOUNT}"
region = "{region}"
endpoint_url = "http://{api_addr}"
initial_backoff_ms = 100

{accounts}
[telemetry]
log_format = "text"
{otlp}

{principals}
"#,
        admin_listen = args.admin_listen,
        policies = args.policies.display().to_string(),
        audit = args.audit_dir.display().to_string(),
        // dev's approvals live beside its audit trail, and survive a restart of dev.
        approvals_store = format!(
            "sqlite:{}",
            args.audit_dir
                .join(crate::approvals::DEFAULT_SQLITE_FILE)
                .display()
        ),
        // Unset unless given: OTEL_EXPORTER_OTLP_ENDPOINT then applies, as `--help` says.
        otlp = args
            .otlp_endpoint
            .as_ref()
            .map(|endpoint| format!("otlp_endpoint = {endpoint:?}"))
            .unwrap_or_default(),
        accounts = secrets.accounts_toml(),
    );
    let config = Config::parse(&text)?;
    config.validate()?;
    let telemetry = telemetry::init(&config.telemetry);

    let (stop_emulator, stopped) = tokio::sync::oneshot::channel::<()>();
    let emulator_config = datashare_emulator::EmulatorConfig::new(region, fixtures);
    let emulator = tokio::spawn(datashare_emulator::serve(
        api,
        admin,
        emulator_config,
        async move {
            let _ = stopped.await;
        },
    ));

    let credentials = crate::upstream::StaticCredentials {
        access_key_id: DEV_PLATFORM_ACCESS_KEY.into(),
        secret_access_key: DEV_PLATFORM_SECRET_KEY.into(),
    };
    let app = App::build(
        config,
        BuildOptions {
            credentials: Some(credentials),
            telemetry,
        },
    )
    .await?;
    let audit_dir = std::fs::canonicalize(&args.audit_dir).unwrap_or(args.audit_dir.clone());
    eprintln!(
        "\ndatashare-gateway dev\n  gRPC (insecure, x-caller-id): {grpc_addr}\n  Redshift emulator:            http://{api_addr} (admin http://{admin_addr})\n  consumer accounts:            {} (default {DEV_DEFAULT_ACCOUNT}), each through role datashare-gateway\n  audit trail:                  {}\n  approvals store:              sqlite in the audit trail's directory\n  policies:                     {}\n\nTry:\n  grpcurl -plaintext -H 'x-caller-id: spiffe://example.internal/ns/data/sa/reporting' -d '{{\"data_share_arn\": \"arn:aws:redshift:us-east-1:111122223333:datashare:9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f/sales_share\", \"consumer_arn\": \"arn:aws:redshift:us-east-1:444455556666:namespace:5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9\"}}' {grpc_addr} datasharing.v1.DataSharing/AssociateConsumer\n",
        DEV_ACCOUNTS.map(|(account, _, _)| account).join(", "),
        audit_dir.display(),
        args.policies.display(),
    );
    announce(
        &serde_json::json!({
            "event": "gateway_listening",
            "grpc": grpc_addr.to_string(),
            "emulator_api": api_addr.to_string(),
            "emulator_admin": admin_addr.to_string(),
            "admin": app.admin_addr().map(|a| a.to_string()),
        })
        .to_string(),
    );
    let served = app.serve(grpc, telemetry::shutdown_signal()).await;
    let _ = stop_emulator.send(());
    let _ = emulator.await;
    drop(secrets);
    served?;
    Ok(ExitCode::SUCCESS)
}
