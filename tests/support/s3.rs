//! A real S3-protocol server for the shipping tests: moto's server (PyPI `moto[server]`,
//! installed into `.venv` by `scripts/test.sh`) on a free port, behind a TCP proxy the test can
//! take down (every connection refused) or make hold S3's answers (to kill the gateway between
//! an upload and its answer). Both stop when dropped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::watch;

/// A tool from the checkout's `.venv` (or the variable `env`, as `scripts/test.sh` sets it).
/// Panics, never skips, when it is missing: the suite needs it.
pub fn venv_tool(env: &str, name: &str) -> PathBuf {
    let path = std::env::var_os(env).map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join(".venv/bin")
            .join(name)
    });
    assert!(
        path.is_file(),
        "{} is missing: run `bash scripts/test.sh` (it installs tests/python/requirements.txt \
         into .venv), or set {env}",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// moto's server on a free port.
pub struct Moto {
    child: Child,
    pub endpoint: String,
    _dir: tempfile::TempDir,
}

impl Moto {
    pub async fn start() -> Moto {
        let server = venv_tool("DATASHARE_GATEWAY_TEST_MOTO", "moto_server");
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("moto.log")).expect("moto log");
        let child = Command::new(server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .expect("start moto_server");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(addr).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "moto_server did not listen; its log:\n{}",
                std::fs::read_to_string(dir.path().join("moto.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Moto {
            child,
            endpoint: format!("http://{addr}"),
            _dir: dir,
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// What the proxy does with connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward both ways.
    Up,
    /// Refuse: every connection is closed at once, open ones are cut.
    Down,
    /// Forward requests, hold S3's answers until the mode changes.
    HoldAnswers,
}

/// A TCP proxy in front of an upstream address.
pub struct Proxy {
    pub endpoint: String,
    mode: watch::Sender<Mode>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: &str) -> Proxy {
        let upstream: SocketAddr = upstream
            .trim_start_matches("http://")
            .parse()
            .expect("upstream address");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let (mode, modes) = watch::channel(Mode::Up);
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let modes = modes.clone();
                tokio::spawn(relay(client, upstream, modes));
            }
        });
        Proxy {
            endpoint,
            mode,
            task,
        }
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(mut client: TcpStream, upstream: SocketAddr, mut modes: watch::Receiver<Mode>) {
    if *modes.borrow() == Mode::Down {
        return;
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.split();
    let (mut server_read, mut server_write) = server.split();
    let mut down = modes.clone();
    let requests = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = client_read.read(&mut buf).await.unwrap_or(0);
            if n == 0 || server_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let answers = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = server_read.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                return;
            }
            // Held answers wait here; S3 has already acted on the request.
            if modes
                .wait_for(|mode| *mode != Mode::HoldAnswers)
                .await
                .is_err()
            {
                return;
            }
            if client_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        () = requests => {}
        () = answers => {}
        _ = down.wait_for(|mode| *mode == Mode::Down) => {}
    }
}

/// Creates a bucket with Object Lock enabled (and so versioning), as the docs tell operators to.
pub async fn create_locked_bucket(endpoint: &str, bucket: &str) {
    let client = s3_client(endpoint).await;
    client
        .create_bucket()
        .bucket(bucket)
        .object_lock_enabled_for_bucket(true)
        .send()
        .await
        .expect("create the bucket");
}

/// Creates a plain bucket (no versioning), as a trail's bucket.
pub async fn create_bucket(endpoint: &str, bucket: &str) {
    s3_client(endpoint)
        .await
        .create_bucket()
        .bucket(bucket)
        .send()
        .await
        .expect("create the bucket");
}

/// Every key under `prefix`, sorted.
pub async fn keys(client: &aws_sdk_s3::Client, bucket: &str, prefix: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut pages = client
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.expect("list objects");
        found.extend(
            page.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_owned)),
        );
    }
    found.sort();
    found
}

/// An aws-sdk-s3 client for `endpoint` (path style, test credentials).
pub async fn s3_client(endpoint: &str) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::config::Builder::new()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "AKIDTESTSHIP",
            "test-ship-secret",
            None,
            None,
            "test",
        ))
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// The bytes of `bucket/key`.
pub async fn object(client: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Vec<u8> {
    client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|err| panic!("get {bucket}/{key}: {err:?}"))
        .body
        .collect()
        .await
        .expect("object body")
        .into_bytes()
        .to_vec()
}

/// Every object version under `prefix`: (key, version id).
pub async fn versions(endpoint: &str, bucket: &str, prefix: &str) -> Vec<(String, String)> {
    let client = s3_client(endpoint).await;
    let listed = client
        .list_object_versions()
        .bucket(bucket)
        .prefix(prefix)
        .send()
        .await
        .expect("list object versions");
    let mut found: Vec<(String, String)> = listed
        .versions()
        .iter()
        .map(|v| {
            (
                v.key().unwrap_or_default().to_owned(),
                v.version_id().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    found.sort();
    found
}
