//! Starts the real `datashare-gateway emulator` binary on free ports, talks to its admin API,
//! and builds `aws-sdk-redshift`, `aws-sdk-sts` and `aws-sdk-cloudtrail` clients pointed at it. The child is killed (and reaped) and
//! its log file removed when the [`Emulator`] is dropped.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use aws_sdk_redshift::config::retry::RetryConfig;
use aws_sdk_redshift::config::timeout::TimeoutConfig;
use aws_sdk_redshift::config::{BehaviorVersion, Credentials, Region};
use serde_json::Value;

pub const REGION: &str = "us-east-1";
pub const PRODUCER_ACCOUNT: &str = "111122223333";
pub const PRODUCER_KEY: (&str, &str) = (
    "AKIAI44QH8DHBEXAMPLE",
    "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY",
);
pub const CONSUMER_ACCOUNT: &str = "444455556666";
pub const CONSUMER_KEY: (&str, &str) = (
    "AKIAIOSFODNN7EXAMPLE",
    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
);
pub const PRODUCER_NAMESPACE: &str =
    "arn:aws:redshift:us-east-1:111122223333:namespace:9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f";
pub const SALES_SHARE: &str = "arn:aws:redshift:us-east-1:111122223333:datashare:9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f/sales_share";
pub const FINANCE_SHARE: &str = "arn:aws:redshift:us-east-1:111122223333:datashare:9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f/finance_share";
pub const LEGAL_HOLD_SHARE: &str = "arn:aws:redshift:us-east-1:111122223333:datashare:d1e2f3a4-b5c6-4d7e-8f90-a1b2c3d4e5f6/legal_hold_share";
pub const CONSUMER_NAMESPACE: &str =
    "arn:aws:redshift:us-east-1:444455556666:namespace:5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9";
pub const CONSUMER_SERVERLESS_NAMESPACE: &str = "arn:aws:redshift-serverless:us-east-1:444455556666:namespace/0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9";
pub const OTHER_ACCOUNT: &str = "777788889999";
pub const OTHER_NAMESPACE: &str =
    "arn:aws:redshift:us-east-1:777788889999:namespace:7a7b7c7d-7e7f-4a0b-8c1d-2e3f4a5b6c7d";
/// The gateway's own account: it assumes the roles below.
pub const PLATFORM_ACCOUNT: &str = "210987654321";
pub const PLATFORM_KEY: (&str, &str) = (
    "AKIA2PLATFORMEXAMPLE",
    "pLatf0rmS3cretKey/EXAMPLEKEY/PLATFORMxyz",
);
/// Trusts PLATFORM_ACCOUNT, needs CONSUMER_ROLE_EXTERNAL_ID and a source identity.
pub const CONSUMER_ROLE: &str = "arn:aws:iam::444455556666:role/datashare-gateway";
pub const CONSUMER_ROLE_EXTERNAL_ID: &str = "dsgw-444455556666-example";
/// Trusts PLATFORM_ACCOUNT, needs OTHER_ROLE_EXTERNAL_ID and a source identity.
pub const OTHER_ROLE: &str = "arn:aws:iam::777788889999:role/datashare-gateway";
pub const OTHER_ROLE_EXTERNAL_ID: &str = "dsgw-777788889999-example";

/// The repository root (where `Cargo.toml` is).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The dev fixtures file.
pub fn dev_fixtures() -> PathBuf {
    repo_root().join("examples/emulator-fixtures.toml")
}

/// A running emulator process.
#[derive(Debug)]
pub struct Emulator {
    child: Child,
    // Held so the child's stdout stays open for its lifetime.
    _stdout: BufReader<ChildStdout>,
    api: SocketAddr,
    admin: SocketAddr,
    log: tempfile::NamedTempFile,
}

impl Emulator {
    /// Starts the emulator with the dev fixtures.
    pub fn start() -> Emulator {
        Emulator::start_with_args(&[])
    }

    /// Starts the emulator with the dev fixtures and extra CLI arguments (e.g. `--fault ...`).
    pub fn start_with_args(extra: &[&str]) -> Emulator {
        let log = tempfile::NamedTempFile::new().expect("create emulator log file");
        let fixtures = dev_fixtures();
        let mut child = Command::new(env!("CARGO_BIN_EXE_datashare-gateway"))
            .args([
                "emulator",
                "--listen",
                "127.0.0.1:0",
                "--admin",
                "127.0.0.1:0",
                "--fixtures",
            ])
            .arg(&fixtures)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log.reopen().expect("reopen emulator log file"))
            .spawn()
            .expect("spawn datashare-gateway emulator");
        let mut stdout = BufReader::new(child.stdout.take().expect("child stdout is piped"));
        let mut line = String::new();
        let read = stdout.read_line(&mut line);
        let ready: Value = match read {
            Ok(n) if n > 0 => serde_json::from_str(&line).unwrap_or_else(|e| {
                let _ = child.kill();
                let _ = child.wait();
                panic!("ready line is not JSON ({e}): {line:?}")
            }),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                let logs = std::fs::read_to_string(log.path()).unwrap_or_default();
                panic!("emulator exited before it was ready; stderr:\n{logs}");
            }
        };
        assert_eq!(ready["event"], "emulator_listening", "{line}");
        let addr = |key: &str| -> SocketAddr {
            ready[key]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("ready line has no {key} address: {line}"))
        };
        Emulator {
            api: addr("api"),
            admin: addr("admin"),
            child,
            _stdout: stdout,
            log,
        }
    }

    /// `http://127.0.0.1:PORT` of the Redshift API.
    pub fn endpoint_url(&self) -> String {
        format!("http://{}", self.api)
    }

    pub fn api_addr(&self) -> SocketAddr {
        self.api
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// The process id, e.g. to send it a signal.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (bounded) for the process to exit and returns its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The emulator's stderr so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// One admin API call; returns the status and the JSON body.
    pub fn admin(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let (status, body) = raw_http(
            self.admin,
            method,
            path,
            &[("content-type", "application/json")],
            body.map(|b| b.to_string()).unwrap_or_default().as_bytes(),
        );
        let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
        (status, json)
    }

    fn admin_ok(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let (status, json) = self.admin(method, path, body);
        assert_eq!(status, 200, "{method} {path}: {json}");
        json
    }

    /// All counters: `{"operations": {"<Action>": {received, forwarded, answered, faults, attempts}}}`.
    pub fn counters(&self) -> Value {
        self.admin_ok("GET", "/counters", None)
    }

    /// One counter (`received`, `forwarded` or `answered`) of one operation; 0 when unseen.
    pub fn counter(&self, operation: &str, field: &str) -> u64 {
        self.counters()["operations"][operation][field]
            .as_u64()
            .unwrap_or(0)
    }

    /// Requests per `amz-sdk-request` attempt number for one operation.
    pub fn attempts(&self, operation: &str) -> BTreeMap<u32, u64> {
        let c = self.counters();
        c["operations"][operation]["attempts"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.parse().ok()?, v.as_u64()?)))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn reset_counters(&self) {
        self.admin_ok("POST", "/counters/reset", None);
    }

    /// Adds a fault rule, e.g. `json!({"kind": "throttling", "operation": "DescribeDataShares", "count": 2})`.
    pub fn inject_fault(&self, spec: Value) {
        self.admin_ok("POST", "/faults", Some(&spec));
    }

    pub fn clear_faults(&self) {
        self.admin_ok("DELETE", "/faults", None);
    }

    /// How many calls `hold` rules are holding now (`GET /faults`).
    pub fn held(&self) -> u64 {
        self.admin_ok("GET", "/faults", None)["held"]
            .as_u64()
            .unwrap_or(0)
    }

    /// Waits (up to 10 s) until `n` calls are held, e.g. after
    /// `inject_fault(json!({"kind": "hold", "operation": OP, "count": 1}))`: the call has reached
    /// the emulator and stays in flight until [`Emulator::release`].
    pub async fn wait_held(&self, n: u64) {
        super::wait::until(
            Duration::from_secs(10),
            &format!("{n} call(s) held by the emulator"),
            async || match self.held() {
                held if held >= n => Ok(()),
                held => Err(format!("{held} held; counters {}", self.counters())),
            },
        )
        .await;
    }

    /// Lets every held call go on (`POST /faults/release`); returns how many were held.
    pub fn release(&self) -> u64 {
        self.admin_ok("POST", "/faults/release", None)["released"]
            .as_u64()
            .unwrap_or(0)
    }

    /// Seeds keys, namespaces and datashares (the fixtures shape, as JSON).
    pub fn seed(&self, fixtures: Value) -> Value {
        self.admin_ok("POST", "/seed", Some(&fixtures))
    }

    /// Adds or replaces one grant on an existing datashare, e.g.
    /// `json!({"datashare_arn": FINANCE_SHARE, "consumer": CONSUMER_ACCOUNT, "status": "AUTHORIZED"})`.
    pub fn seed_grant(&self, grant: Value) -> Value {
        self.admin_ok("POST", "/grants", Some(&grant))
    }

    /// Back to the fixtures; faults and counters cleared.
    pub fn reset(&self) {
        self.admin_ok("POST", "/reset", None);
    }

    pub fn state(&self) -> Value {
        self.admin_ok("GET", "/state", None)
    }

    /// The event log, oldest first (`GET /events`).
    pub fn events(&self) -> Vec<Value> {
        self.admin_ok("GET", "/events", None)["events"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub fn reset_events(&self) {
        self.admin_ok("POST", "/events/reset", None);
    }

    /// Moves the emulator's clock `secs` further ahead; returns `{"now", "offset_secs"}`.
    pub fn advance_clock(&self, secs: i64) -> Value {
        self.admin_ok(
            "POST",
            "/clock",
            Some(&serde_json::json!({ "advance_secs": secs })),
        )
    }

    /// The trail's state (`GET /trail`).
    pub fn trail(&self) -> Value {
        self.admin_ok("GET", "/trail", None)
    }

    /// Delivers every pending trail file now (`POST /trail/flush`); returns the keys written.
    pub fn flush_trail(&self) -> Vec<String> {
        keys_of(&self.admin_ok("POST", "/trail/flush", None))
    }

    /// Holds trail deliveries until [`Emulator::release_trail`], or for `secs`.
    pub fn hold_trail(&self, secs: Option<f64>) -> Value {
        let body = secs.map(|s| serde_json::json!({ "secs": s }));
        self.admin_ok("POST", "/trail/hold", body.as_ref())
    }

    /// Lifts the hold and delivers at once; returns the keys written.
    pub fn release_trail(&self) -> Vec<String> {
        keys_of(&self.admin_ok("POST", "/trail/release", None))
    }

    /// `POST /trail/drop` with `{"event_id": ..}` or `{"request_id": ..}`: status and answer.
    pub fn drop_event(&self, which: Value) -> (u16, Value) {
        self.admin("POST", "/trail/drop", Some(&which))
    }

    /// The digest signing key's public half (`GET /trail/public-key`).
    pub fn digest_public_key(&self) -> Value {
        self.admin_ok("GET", "/trail/public-key", None)
    }

    /// An aws-sdk-cloudtrail client signing with `key`, with `max_attempts` attempts.
    pub fn cloudtrail(&self, key: (&str, &str), max_attempts: u32) -> aws_sdk_cloudtrail::Client {
        cloudtrail_client(&self.endpoint_url(), key, max_attempts)
    }

    /// An aws-sdk-sts client signing with `key`, with up to 3 attempts.
    pub fn sts_client(&self, key: (&str, &str)) -> aws_sdk_sts::Client {
        sts_client(&self.endpoint_url(), key, 3)
    }

    /// An aws-sdk-redshift client signing with AssumeRole's temporary credentials.
    pub fn session_client(
        &self,
        creds: &aws_sdk_sts::types::Credentials,
    ) -> aws_sdk_redshift::Client {
        session_client(
            &self.endpoint_url(),
            creds.access_key_id(),
            creds.secret_access_key(),
            creds.session_token(),
        )
    }

    /// A client for the consumer account 444455556666.
    pub fn consumer(&self) -> aws_sdk_redshift::Client {
        client(&self.endpoint_url(), CONSUMER_KEY.0, CONSUMER_KEY.1, 3)
    }

    /// A client for the producer account 111122223333.
    pub fn producer(&self) -> aws_sdk_redshift::Client {
        client(&self.endpoint_url(), PRODUCER_KEY.0, PRODUCER_KEY.1, 3)
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An aws-sdk-redshift client for `endpoint` with static keys, `max_attempts` attempts and a
/// short backoff so retries are quick.
pub fn client(
    endpoint: &str,
    akid: &str,
    secret: &str,
    max_attempts: u32,
) -> aws_sdk_redshift::Client {
    redshift_client(
        endpoint,
        Credentials::new(akid, secret, None, None, "emulator-test"),
        max_attempts,
    )
}

/// An aws-sdk-redshift client signing with temporary credentials (`x-amz-security-token`),
/// with no retries so a test sees the first answer.
pub fn session_client(
    endpoint: &str,
    akid: &str,
    secret: &str,
    token: &str,
) -> aws_sdk_redshift::Client {
    redshift_client(
        endpoint,
        Credentials::new(
            akid,
            secret,
            Some(token.to_owned()),
            None,
            "emulator-session",
        ),
        1,
    )
}

fn retry_config(max_attempts: u32) -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(max_attempts)
        .with_initial_backoff(Duration::from_millis(5))
        .with_max_backoff(Duration::from_millis(20))
}

fn timeout_config() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(2))
        .operation_attempt_timeout(Duration::from_secs(10))
        .operation_timeout(Duration::from_secs(30))
        .build()
}

fn redshift_client(
    endpoint: &str,
    creds: Credentials,
    max_attempts: u32,
) -> aws_sdk_redshift::Client {
    let conf = aws_sdk_redshift::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(creds)
        .retry_config(retry_config(max_attempts))
        .timeout_config(timeout_config())
        .build();
    aws_sdk_redshift::Client::from_conf(conf)
}

fn keys_of(delivered: &Value) -> Vec<String> {
    delivered["delivered"]
        .as_array()
        .map(|keys| {
            keys.iter()
                .filter_map(|k| k.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// An aws-sdk-cloudtrail client for `endpoint` with static keys and `max_attempts` attempts
/// (1: a test sees a ThrottlingException rather than the SDK's retry of it).
pub fn cloudtrail_client(
    endpoint: &str,
    (akid, secret): (&str, &str),
    max_attempts: u32,
) -> aws_sdk_cloudtrail::Client {
    let conf = aws_sdk_cloudtrail::Config::builder()
        .behavior_version(aws_sdk_cloudtrail::config::BehaviorVersion::latest())
        .region(aws_sdk_cloudtrail::config::Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(akid, secret, None, None, "emulator-test"))
        .retry_config(retry_config(max_attempts))
        .timeout_config(timeout_config())
        .build();
    aws_sdk_cloudtrail::Client::from_conf(conf)
}

/// An aws-sdk-sts client for `endpoint` with static keys and `max_attempts` attempts.
pub fn sts_client(
    endpoint: &str,
    (akid, secret): (&str, &str),
    max_attempts: u32,
) -> aws_sdk_sts::Client {
    let conf = aws_sdk_sts::Config::builder()
        .behavior_version(aws_sdk_sts::config::BehaviorVersion::latest())
        .region(aws_sdk_sts::config::Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(akid, secret, None, None, "emulator-test"))
        .retry_config(retry_config(max_attempts))
        .timeout_config(timeout_config())
        .build();
    aws_sdk_sts::Client::from_conf(conf)
}

/// A minimal HTTP/1.1 request with `Connection: close`; returns the status and the body.
pub fn raw_http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<u8>) {
    let (status, _, body) = raw_http_full(addr, method, path, headers, body);
    (status, body)
}

/// Like [`raw_http`], also returning the response headers (names lower-cased).
pub fn raw_http_full(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("set read timeout");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).expect("write request");
    stream.write_all(body).expect("write body");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read response");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response has a header block");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    (status, headers, body)
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(pos) = data.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&data[..pos]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = pos + 2;
        out.extend_from_slice(&data[start..start + size]);
        data = &data[start + size + 2..];
    }
    out
}

/// POSTs `body` to the API signed with SigV4 (aws-sigv4, as the Rust SDK signs), so a test can
/// send requests the SDK never would (no Action, a wrong Version, ...).
pub fn signed_post(
    addr: SocketAddr,
    body: &str,
    key: (&str, &str),
) -> (u16, Vec<(String, String)>, String) {
    signed_post_for(addr, "redshift", body, key)
}

/// Like [`signed_post`], signed for `service` (e.g. `sts`).
pub fn signed_post_for(
    addr: SocketAddr,
    service: &str,
    body: &str,
    key: (&str, &str),
) -> (u16, Vec<(String, String)>, String) {
    signed_request(
        addr,
        service,
        &[("content-type", "application/x-www-form-urlencoded")],
        body,
        key,
    )
}

/// A JSON 1.1 request for `X-Amz-Target: target`, signed for `service` (CloudTrail's is
/// `cloudtrail`).
pub fn signed_json_post(
    addr: SocketAddr,
    service: &str,
    target: &str,
    body: &str,
    key: (&str, &str),
) -> (u16, Vec<(String, String)>, String) {
    signed_request(
        addr,
        service,
        &[
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", target),
        ],
        body,
        key,
    )
}

/// POSTs `body` with `extra` headers, all signed for `service`.
fn signed_request(
    addr: SocketAddr,
    service: &str,
    extra: &[(&str, &str)],
    body: &str,
    (akid, secret): (&str, &str),
) -> (u16, Vec<(String, String)>, String) {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    use aws_sigv4::sign::v4;

    let identity = Credentials::new(akid, secret, None, None, "emulator-test").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(REGION)
        .name(service)
        .time(std::time::SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .expect("signing params")
        .into();
    let host = addr.to_string();
    let content_length = body.len().to_string();
    let mut base = vec![
        ("host", host.as_str()),
        ("content-length", content_length.as_str()),
    ];
    base.extend_from_slice(extra);
    let req = SignableRequest::new(
        "POST",
        format!("http://{host}/"),
        base.iter().copied(),
        SignableBody::Bytes(body.as_bytes()),
    )
    .expect("signable request");
    let out = sign(req, &params).expect("sign");
    let signed: Vec<(String, String)> = out
        .output()
        .headers()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let mut headers: Vec<(&str, &str)> = extra.to_vec();
    headers.extend(signed.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let (status, headers, body) = raw_http_full(addr, "POST", "/", &headers, body.as_bytes());
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}
