//! `datashare-gateway dev` as a newcomer runs it: its own emulator whatever the environment says
//! about endpoints, the standard OpenTelemetry variable honoured, and its secrets cleaned up.

use crate::support;

use std::process::Stdio;
use std::time::Duration;

use datashare_gateway::proto::datasharing::v1::ListConsumerDataSharesRequest;
use datashare_gateway::proto::datasharing::v1::data_sharing_client::DataSharingClient;
use support::gateway::{self, REPORTING};
use support::otlp::Receiver;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A running `dev` and the gRPC address from its ready line; killed on drop.
struct Dev {
    child: Child,
    grpc: String,
    _dir: tempfile::TempDir,
}

impl Dev {
    async fn start(env: &[(&str, &str)]) -> Dev {
        let dir = tempfile::tempdir().expect("tempdir");
        let any_port = "127.0.0.1:0";
        let mut command = Command::new(env!("CARGO_BIN_EXE_datashare-gateway"));
        command
            .args(["dev", "--listen", any_port, "--emulator-listen", any_port])
            .args(["--emulator-admin", any_port, "--admin-listen", any_port])
            .arg("--audit-dir")
            .arg(dir.path().join("audit"))
            .arg("--policies")
            .arg(gateway::repo_root().join("examples/policies"))
            .arg("--fixtures")
            .arg(gateway::repo_root().join("examples/emulator-fixtures.toml"))
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("DATASHARE_GATEWAY_ENDPOINT_URL")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("start dev");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.expect("read stdout") {
                if let Ok(value) = serde_json::from_str::<serde_json::Value>(&line)
                    && value["event"] == "gateway_listening"
                {
                    return value;
                }
            }
            panic!("dev exited before its ready line");
        })
        .await
        .expect("dev is ready within 30 s");
        Dev {
            child,
            grpc: ready["grpc"].as_str().expect("grpc address").to_owned(),
            _dir: dir,
        }
    }

    async fn list(&self) -> Result<usize, tonic::Status> {
        let mut client = DataSharingClient::connect(format!("http://{}", self.grpc))
            .await
            .expect("connect");
        client
            .list_consumer_data_shares(gateway::as_caller(
                REPORTING,
                ListConsumerDataSharesRequest::default(),
            ))
            .await
            .map(|r| r.into_inner().data_shares.len())
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

#[tokio::test]
async fn dev_keeps_its_own_emulator_whatever_the_endpoint_variable_says() {
    // A closed port: were dev to follow the variable, every call would be UNAVAILABLE.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let url = format!("http://{closed}");
    let dev = Dev::start(&[("DATASHARE_GATEWAY_ENDPOINT_URL", url.as_str())]).await;
    let shares = dev.list().await.expect("dev answers from its emulator");
    assert!(shares > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_exports_traces_to_the_standard_otel_endpoint_variable() {
    let receiver = Receiver::start().await;
    let endpoint = receiver.endpoint();
    let dev = Dev::start(&[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())]).await;
    dev.list().await.expect("list");
    let spans = receiver
        .wait_for(Duration::from_secs(20), |spans| {
            spans
                .iter()
                .any(|s| s.name == "datasharing.v1.DataSharing/ListConsumerDataShares")
        })
        .await;
    assert!(
        spans
            .iter()
            .any(|s| s.name == "datasharing.v1.DataSharing/ListConsumerDataShares"),
        "{spans:#?}"
    );
}
