//! Starts the real `datashare-gateway serve` binary on an ephemeral port, with a config written to
//! a temporary directory, and connects tonic clients to it. Dropping a [`Gateway`] kills the
//! process and removes its directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use datashare_gateway::proto::datasharing::v1::AssociateConsumerRequest;
use datashare_gateway::proto::datasharing::v1::approvals_client::ApprovalsClient;
use datashare_gateway::proto::datasharing::v1::data_sharing_client::DataSharingClient;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tonic::transport::Channel;

// The fixture values are the emulator's; the gateway acts as its consumer account.
/// The consumer account's provisioned namespace.
pub use super::emulator::CONSUMER_NAMESPACE as PROVISIONED_NS;
/// The consumer account's serverless namespace.
pub use super::emulator::CONSUMER_SERVERLESS_NAMESPACE as SERVERLESS_NS;
pub use super::emulator::{CONSUMER_ACCOUNT, FINANCE_SHARE, SALES_SHARE, repo_root};

/// The consumer account's access key in the emulator's fixtures.
pub const CONSUMER_ACCESS_KEY: &str = super::emulator::CONSUMER_KEY.0;
/// Its secret.
pub const CONSUMER_SECRET_KEY: &str = super::emulator::CONSUMER_KEY.1;

/// Dev principals from `examples/policies/principals.toml`: group `data-platform`.
pub const REPORTING: &str = "spiffe://example.internal/ns/data/sa/reporting";
/// Group `analytics`.
pub const NOTEBOOK: &str = "spiffe://example.internal/ns/analytics/sa/notebook";
/// No group.
pub const FRONTEND: &str = "spiffe://example.internal/ns/web/sa/frontend";
/// Groups `data-platform` and `data-writers`.
pub const LOADER: &str = "spiffe://example.internal/ns/data/sa/loader";
/// Group `data-approvers`.
pub const APPROVER: &str = "spiffe://example.internal/ns/security/sa/approver";

/// How callers authenticate to the gateway under test.
#[derive(Clone, Debug)]
pub enum Auth {
    /// `x-caller-id`.
    Insecure,
    /// Client certificates: PEM files for the server and the client CA.
    Mtls {
        cert: PathBuf,
        key: PathBuf,
        client_ca: PathBuf,
    },
}

/// What the gateway under test is configured with.
#[derive(Clone, Debug)]
pub struct GatewayOptions {
    /// The emulator's (or any) Redshift endpoint.
    pub endpoint_url: String,
    /// Caller authentication.
    pub auth: Auth,
    /// `upstream.max_attempts`.
    pub max_attempts: u32,
    /// `upstream.attempt_timeout_ms`.
    pub attempt_timeout_ms: u64,
    /// `upstream.operation_timeout_ms`.
    pub operation_timeout_ms: u64,
    /// The Cedar policy directory.
    pub policy_dir: PathBuf,
    /// The audit directory; `None` makes one inside the gateway's temporary directory.
    pub audit_dir: Option<PathBuf>,
    /// Appended to the config file verbatim (extra keys for one test).
    pub extra_toml: String,
    /// `audit.sync`: fsync each batch (the default) or not (benchmarks only).
    pub audit_sync: bool,
    /// `audit.max_file_bytes`; `None` keeps the gateway's default.
    pub audit_max_file_bytes: Option<u64>,
    /// AWS credentials the gateway signs with.
    pub access_key: String,
    /// Its secret.
    pub secret_key: String,
    /// More keys of the `[audit]` table (`max_file_bytes = 1`, ...).
    pub audit_toml: String,
    /// Keys of the `[telemetry]` table (`otlp_endpoint = "..."`, ...); empty writes no table.
    pub telemetry_toml: String,
    /// Extra environment variables for the gateway process (they win over the defaults, so
    /// `RUST_LOG` can be overridden). `OTEL_*` variables of the test's own environment are not
    /// passed on.
    pub env: Vec<(String, String)>,
    /// `[accounts]` (account, role ARN, external id): non-empty serves these accounts through
    /// their roles instead of `upstream.consumer_account` (each external id goes in a file).
    pub accounts: Vec<(String, String, String)>,
    /// `upstream.default_account` (with `accounts`).
    pub default_account: Option<String>,
    /// `server.shutdown_grace_secs`.
    pub shutdown_grace_secs: u64,
    /// More keys of the `[server]` table (`health_listen = "..."`, ...).
    pub server_toml: String,
    /// More keys of the `[upstream]` table (`min_remaining_deadline_ms = 5000`, ...).
    pub upstream_toml: String,
}

impl GatewayOptions {
    /// Insecure mode, the example policies, the consumer account's credentials, fast retries.
    pub fn new(endpoint_url: impl Into<String>) -> Self {
        GatewayOptions {
            endpoint_url: endpoint_url.into(),
            auth: Auth::Insecure,
            max_attempts: 3,
            attempt_timeout_ms: 2000,
            operation_timeout_ms: 5000,
            policy_dir: repo_root().join("examples/policies"),
            audit_dir: None,
            extra_toml: String::new(),
            audit_sync: true,
            audit_max_file_bytes: None,
            access_key: CONSUMER_ACCESS_KEY.into(),
            secret_key: CONSUMER_SECRET_KEY.into(),
            audit_toml: String::new(),
            telemetry_toml: String::new(),
            env: Vec::new(),
            accounts: Vec::new(),
            default_account: None,
            shutdown_grace_secs: 5,
            server_toml: String::new(),
            upstream_toml: String::new(),
        }
    }

    /// As `dev` runs: the platform account's credentials, both dev consumer accounts through
    /// their roles, 444455556666 by default.
    pub fn with_roles(endpoint_url: impl Into<String>) -> Self {
        use super::emulator::{
            CONSUMER_ROLE, CONSUMER_ROLE_EXTERNAL_ID, OTHER_ACCOUNT, OTHER_ROLE,
            OTHER_ROLE_EXTERNAL_ID, PLATFORM_KEY,
        };
        GatewayOptions {
            access_key: PLATFORM_KEY.0.into(),
            secret_key: PLATFORM_KEY.1.into(),
            accounts: vec![
                (
                    CONSUMER_ACCOUNT.into(),
                    CONSUMER_ROLE.into(),
                    CONSUMER_ROLE_EXTERNAL_ID.into(),
                ),
                (
                    OTHER_ACCOUNT.into(),
                    OTHER_ROLE.into(),
                    OTHER_ROLE_EXTERNAL_ID.into(),
                ),
            ],
            default_account: Some(CONSUMER_ACCOUNT.into()),
            ..GatewayOptions::new(endpoint_url)
        }
    }
}

/// A running gateway process.
#[derive(Debug)]
pub struct Gateway {
    child: Child,
    /// The gRPC address.
    pub addr: SocketAddr,
    /// The admin HTTP address (`/metrics`, `/livez`, `/readyz`).
    pub admin: SocketAddr,
    /// The audit directory.
    pub audit_dir: PathBuf,
    /// The file the gateway's stderr (its logs) goes to.
    pub log_file: PathBuf,
    /// The config file.
    pub config_file: PathBuf,
    credentials: (String, String),
    env: Vec<(String, String)>,
    /// Removed on drop.
    pub dir: TempDir,
}

impl Gateway {
    /// Writes the config and starts the gateway; waits for its ready line.
    pub async fn start(options: GatewayOptions) -> Gateway {
        let dir = tempfile::tempdir().expect("temp dir");
        let audit_dir = options
            .audit_dir
            .clone()
            .unwrap_or_else(|| dir.path().join("audit"));
        let config_file = dir.path().join("gateway.toml");
        for (account, _, external_id) in &options.accounts {
            std::fs::write(
                dir.path().join(format!("external-id-{account}")),
                external_id,
            )
            .expect("write an external id");
        }
        std::fs::write(&config_file, config_text(&options, &audit_dir)).expect("write config");
        Self::spawn(
            dir,
            config_file,
            audit_dir,
            (options.access_key, options.secret_key),
            options.env,
        )
        .await
    }

    /// Starts the gateway again with the same directory and config (after a kill).
    pub async fn restart(self) -> Gateway {
        let Gateway {
            mut child,
            dir,
            config_file,
            audit_dir,
            credentials,
            env,
            ..
        } = self;
        let _ = child.kill().await;
        Self::spawn(dir, config_file, audit_dir, credentials, env).await
    }

    async fn spawn(
        dir: TempDir,
        config_file: PathBuf,
        audit_dir: PathBuf,
        credentials: (String, String),
        env: Vec<(String, String)>,
    ) -> Gateway {
        let log_file = dir.path().join(format!("gateway-{}.log", uuid_like()));
        let log = std::fs::File::create(&log_file).expect("log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_datashare-gateway"))
            .arg("serve")
            .arg("--config")
            .arg(&config_file)
            .env("AWS_ACCESS_KEY_ID", &credentials.0)
            .env("AWS_SECRET_ACCESS_KEY", &credentials.1)
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", dir.path().join("no-aws-config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                dir.path().join("no-aws-credentials"),
            )
            .env("RUST_LOG", "info")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .env_remove("OTEL_SERVICE_NAME")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .expect("spawn datashare-gateway serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                    && v["event"] == "gateway_listening"
                {
                    return Some((
                        v["grpc"].as_str()?.to_owned(),
                        v["admin"].as_str()?.to_owned(),
                    ));
                }
            }
            None
        })
        .await;
        let (addr, admin) = match ready {
            Ok(Some((grpc, admin))) => (
                grpc.parse().expect("ready line grpc address"),
                admin.parse().expect("ready line admin address"),
            ),
            _ => {
                let _ = child.kill().await;
                panic!(
                    "gateway did not start; its log:\n{}",
                    std::fs::read_to_string(&log_file).unwrap_or_default()
                );
            }
        };
        // Keep reading stdout so the gateway never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Gateway {
            child,
            addr,
            admin,
            audit_dir,
            log_file,
            config_file,
            credentials,
            env,
            dir,
        }
    }

    /// A plaintext client (insecure mode).
    pub async fn client(&self) -> DataSharingClient<Channel> {
        DataSharingClient::connect(format!("http://{}", self.addr))
            .await
            .expect("connect to gateway")
    }

    /// A plaintext client of the Approvals service (insecure mode).
    pub async fn approvals(&self) -> ApprovalsClient<Channel> {
        ApprovalsClient::connect(format!("http://{}", self.addr))
            .await
            .expect("connect to gateway")
    }

    /// Kills the process with SIGKILL, as a crash would.
    pub async fn kill9(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Sends SIGTERM and waits for the process to exit; returns whether it exited cleanly.
    pub async fn terminate(&mut self) -> bool {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
        matches!(tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await, Ok(Ok(s)) if s.success())
    }

    /// Sends SIGTERM without waiting for the exit.
    pub fn sigterm(&self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// The gateway's log so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_file).unwrap_or_default()
    }

    /// The gateway's log once `done` holds for it (up to 10 s, then as it is, for the test's
    /// own assertions to report). Lines go out through a non-blocking writer, so a line logged
    /// before a reply can reach the file just after it.
    pub async fn logs_when(&self, done: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let logs = self.logs();
            if done(&logs) || tokio::time::Instant::now() >= deadline {
                return logs;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Whether `needle` reaches the gateway's log (within `logs_when`'s bound).
    pub async fn logged(&self, needle: &str) -> bool {
        self.logs_when(|logs| logs.contains(needle))
            .await
            .contains(needle)
    }

    /// The gateway's log once the access line of a call of `method` is in it.
    pub async fn logs_after_a_call_of(&self, method: &str) -> String {
        let line = format!("\"message\":\"{method}");
        self.logs_when(|logs| logs.contains(&line)).await
    }
}

fn uuid_like() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos().to_string())
        .unwrap_or_default()
}

/// The config file [`Gateway::start`] writes for `o`, with its audit trail in `audit_dir`.
pub fn config_text(o: &GatewayOptions, audit_dir: &Path) -> String {
    let auth = match &o.auth {
        Auth::Insecure => "mode = \"insecure\"\n".to_owned(),
        Auth::Mtls {
            cert,
            key,
            client_ca,
        } => format!(
            "mode = \"mtls\"\ncert = {:?}\nkey = {:?}\nclient_ca = {:?}\n",
            cert.display().to_string(),
            key.display().to_string(),
            client_ca.display().to_string()
        ),
    };
    let principals = std::fs::read_to_string(repo_root().join("examples/policies/principals.toml"))
        .unwrap_or_default();
    format!(
        r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
shutdown_grace_secs = {grace}
{server_extra}

[auth]
{auth}
[policy]
dir = {policy_dir:?}

[audit]
dir = {audit_dir:?}
sync = {audit_sync}
{audit_max_file_bytes}
{audit_extra}

[upstream]
{served}
region = "us-east-1"
endpoint_url = {endpoint:?}
max_attempts = {max_attempts}
initial_backoff_ms = 10
connect_timeout_ms = 1000
attempt_timeout_ms = {attempt}
operation_timeout_ms = {operation}
throttle_retry_after_ms = 1500
{upstream_extra}

{accounts}
{principals}
{telemetry}
{extra}
"#,
        served = if o.accounts.is_empty() {
            format!("consumer_account = \"{CONSUMER_ACCOUNT}\"")
        } else {
            o.default_account
                .as_ref()
                .map(|a| format!("default_account = \"{a}\""))
                .unwrap_or_default()
        },
        accounts = o
            .accounts
            .iter()
            .map(|(account, role, _)| {
                format!(
                    "[accounts.\"{account}\"]\nrole_arn = \"{role}\"\nexternal_id_file = \"external-id-{account}\"\n"
                )
            })
            .collect::<String>(),
        grace = o.shutdown_grace_secs,
        server_extra = o.server_toml,
        upstream_extra = o.upstream_toml,
        policy_dir = o.policy_dir.display().to_string(),
        audit_dir = audit_dir.display().to_string(),
        endpoint = o.endpoint_url,
        max_attempts = o.max_attempts,
        attempt = o.attempt_timeout_ms,
        operation = o.operation_timeout_ms,
        telemetry = if o.telemetry_toml.is_empty() {
            String::new()
        } else {
            format!("[telemetry]\n{}\n", o.telemetry_toml)
        },
        extra = o.extra_toml,
        audit_sync = o.audit_sync,
        audit_max_file_bytes = o
            .audit_max_file_bytes
            .map(|n| format!("max_file_bytes = {n}\n"))
            .unwrap_or_default(),
        audit_extra = o.audit_toml,
    )
}

/// A request from `caller` (insecure mode's `x-caller-id`).
pub fn as_caller<M>(caller: &str, message: M) -> tonic::Request<M> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("x-caller-id", caller.parse().expect("ascii caller id"));
    request
}

/// The `google.rpc.ErrorInfo` reason and metadata of an error status.
pub fn error_info(status: &tonic::Status) -> (String, std::collections::HashMap<String, String>) {
    use tonic_types::StatusExt;
    let info = status
        .get_error_details()
        .error_info()
        .cloned()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    (info.reason, info.metadata)
}

/// The pending approval an `APPROVAL_REQUIRED` status names; panics on any other status.
pub fn required_approval(status: &tonic::Status) -> String {
    let (reason, metadata) = error_info(status);
    assert_eq!(
        (status.code(), reason.as_str()),
        (tonic::Code::FailedPrecondition, "APPROVAL_REQUIRED"),
        "{status:?}"
    );
    metadata
        .get("approval_id")
        .cloned()
        .unwrap_or_else(|| panic!("no approval_id in {status:?}"))
}

/// A request for `share` with `consumer_arn`.
pub fn namespace_request(share: &str, consumer_arn: &str) -> AssociateConsumerRequest {
    AssociateConsumerRequest {
        data_share_arn: share.into(),
        consumer_arn: consumer_arn.into(),
        ..Default::default()
    }
}

/// Every record of the audit trail in `dir`, as [`audit_records_now`], once every intent has its
/// outcome: a state change's outcome is written with the batch after its reply, so a test that
/// reads the trail just after a reply waits for it here (up to 10 s, then returns what there
/// is, for the test's own assertions to report).
pub fn audit_records(dir: &Path) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let records = audit_records_now(dir);
        let outcomes: std::collections::HashSet<u64> = records
            .iter()
            .filter_map(|r| r["intent_seq"].as_u64())
            .collect();
        let settled = records
            .iter()
            .filter(|r| r["kind"] == "intent")
            .all(|r| r["seq"].as_u64().is_some_and(|seq| outcomes.contains(&seq)));
        if settled || std::time::Instant::now() >= deadline {
            return records;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The outcome record of `request_id`, once it is in the trail in `dir`. A call's outcome is
/// queued for the next group commit after its reply, so a test that changes the trail's
/// directory after a call waits for this first.
pub async fn outcome_of(dir: &Path, request_id: &str) -> serde_json::Value {
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Some(outcome) = audit_records_now(dir)
                .into_iter()
                .find(|r| r["kind"] == "outcome" && r["request_id"] == request_id)
            {
                return outcome;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("no outcome record for {request_id}"))
}

/// Every record of the audit trail in `dir`, file by file, in order, as it is now. A line still
/// being written by a running gateway (no newline yet) is not a record yet, and is left out.
pub fn audit_records_now(dir: &Path) -> Vec<serde_json::Value> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("audit dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            let text = std::fs::read_to_string(f).expect("read an audit file");
            let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
            complete
                .lines()
                .map(|l| serde_json::from_str(l).expect("a JSON record"))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// What a raw HTTP/2 request to the gateway got back.
#[derive(Debug)]
pub struct RawAnswer {
    /// The HTTP status.
    pub http_status: u16,
    /// `grpc-status` (from the trailers, or the headers of a trailers-only answer); empty if none.
    pub grpc_status: String,
    /// `grpc-message`.
    pub grpc_message: String,
    /// The `x-request-id` the gateway answered with; empty if none.
    pub request_id: String,
}

/// Sends one raw HTTP/2 POST to `path` with `content_type` (none when `None`), the
/// `x-caller-id` and `x-request-id` headers, and `payload` framed as one gRPC message.
pub async fn raw_grpc(
    gw: &Gateway,
    path: &str,
    content_type: Option<&str>,
    request_id: &str,
    payload: &[u8],
) -> RawAnswer {
    use http_body_util::{BodyExt, Full};
    let stream = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("HTTP/2 handshake");
    tokio::spawn(connection);
    let mut frame = vec![0u8];
    frame.extend_from_slice(&u32::try_from(payload.len()).expect("small").to_be_bytes());
    frame.extend_from_slice(payload);
    let mut request = http::Request::post(format!("http://{}{path}", gw.addr))
        .header("te", "trailers")
        .header("x-caller-id", REPORTING)
        .header("x-request-id", request_id);
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    let request = request
        .body(Full::new(bytes::Bytes::from(frame)))
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    let (parts, body) = response.into_parts();
    let collected = body.collect().await.expect("body");
    // A status without a body comes in the headers ("trailers-only"); otherwise in the trailers.
    let trailers = collected
        .trailers()
        .cloned()
        .unwrap_or_else(|| parts.headers.clone());
    let get = |k: &str| {
        trailers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    RawAnswer {
        http_status: parts.status.as_u16(),
        grpc_status: get("grpc-status"),
        grpc_message: get("grpc-message"),
        request_id: parts
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned(),
    }
}
