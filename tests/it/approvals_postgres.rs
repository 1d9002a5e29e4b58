//! Two gateway processes sharing one real PostgreSQL approvals store: an approval given through
//! one is seen by the other, and of 50 concurrent identical retries spread across both, exactly
//! one is forwarded to Redshift.
//!
//! The server is `$DATASHARE_GATEWAY_TEST_POSTGRES` (a URL; `scripts/test.sh` starts a throwaway
//! one), else one this test starts with `scripts/throwaway-postgres.sh`. Without PostgreSQL the
//! test fails: it is never skipped.

use crate::support;

use std::path::PathBuf;
use std::process::Command;

use datashare_gateway::proto::datasharing::v1::{ApproveRequest, AssociateConsumerRequest};
use sqlx::Connection;
use support::emulator::Emulator;
use support::gateway::{
    self, APPROVER, Gateway, GatewayOptions, LOADER, PROVISIONED_NS, SALES_SHARE, as_caller,
    required_approval,
};

const OP: &str = "AssociateDataShareConsumer";
const RETRIES: usize = 50;

/// A PostgreSQL server for this test: the one the suite started, or a throwaway of its own
/// (stopped on drop).
struct Server {
    url: String,
    own: Option<PathBuf>,
}

impl Server {
    fn get() -> Server {
        if let Ok(url) = std::env::var("DATASHARE_GATEWAY_TEST_POSTGRES") {
            return Server { url, own: None };
        }
        let dir = std::env::temp_dir().join(format!("dsgw-pg-{}", std::process::id()));
        let out = Command::new("bash")
            .arg(support::emulator::repo_root().join("scripts/throwaway-postgres.sh"))
            .arg("start")
            .arg(&dir)
            .output()
            .expect("run scripts/throwaway-postgres.sh");
        assert!(
            out.status.success(),
            "no PostgreSQL for the approvals test (set DATASHARE_GATEWAY_TEST_POSTGRES or install \
             Debian's postgresql): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Server {
            url: String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            own: Some(dir),
        }
    }

    /// A new, empty database on the server; its URL.
    async fn database(&self) -> String {
        let name = format!("dsgw_approvals_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(&self.url)
            .await
            .expect("connect to PostgreSQL");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create a database");
        let (base, _) = self.url.rsplit_once('/').expect("a URL with a database");
        format!("{base}/{name}")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(dir) = &self.own {
            let _ = Command::new("bash")
                .arg(support::emulator::repo_root().join("scripts/throwaway-postgres.sh"))
                .arg("stop")
                .arg(dir)
                .status();
        }
    }
}

fn writes() -> AssociateConsumerRequest {
    AssociateConsumerRequest {
        data_share_arn: SALES_SHARE.into(),
        consumer_arn: PROVISIONED_NS.into(),
        allow_writes: Some(true),
        ..Default::default()
    }
}

fn audit_verifies(dir: &std::path::Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_datashare-gateway"))
        .args(["audit", "verify"])
        .arg(dir)
        .output()
        .expect("run audit verify");
    assert!(
        out.status.success(),
        "audit verify {} failed: {}{}",
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_gateways_on_one_postgresql_forward_an_approved_request_exactly_once() {
    let server = Server::get();
    let store = server.database().await;
    let emulator = Emulator::start();
    let options = GatewayOptions {
        extra_toml: format!("[approvals]\nstore = {store:?}\n"),
        ..GatewayOptions::new(emulator.endpoint_url())
    };
    // Started together: both run the migrations; PostgreSQL's advisory lock lets one do it.
    let (first, second) = tokio::join!(Gateway::start(options.clone()), Gateway::start(options));
    let gateways = [first, second];
    assert!(
        gateways[0].logs().contains("approvals store open"),
        "{}",
        gateways[0].logs()
    );

    // Asked through one gateway, approved through the other.
    let id = required_approval(
        &gateways[0]
            .client()
            .await
            .associate_consumer(as_caller(LOADER, writes()))
            .await
            .expect_err("needs approval"),
    );
    let again = gateways[1]
        .client()
        .await
        .associate_consumer(as_caller(LOADER, writes()))
        .await
        .expect_err("still needs approval");
    assert_eq!(
        required_approval(&again),
        id,
        "one pending approval for both"
    );
    gateways[1]
        .approvals()
        .await
        .approve(as_caller(
            APPROVER,
            ApproveRequest {
                approval_id: id.clone(),
                comment: "one write load".into(),
            },
        ))
        .await
        .expect("approved");

    let clients = [gateways[0].client().await, gateways[1].client().await];
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(RETRIES));
    let mut tasks = Vec::new();
    for i in 0..RETRIES {
        let mut client = clients[i % 2].clone();
        let start = start.clone();
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            client
                .associate_consumer(as_caller(LOADER, writes()))
                .await
                .map(|_| ())
        }));
    }
    let mut forwarded = 0;
    let mut new_ids = std::collections::BTreeSet::new();
    for task in tasks {
        match task.await.expect("task") {
            Ok(()) => forwarded += 1,
            Err(status) => {
                new_ids.insert(required_approval(&status));
            }
        }
    }
    assert_eq!(forwarded, 1, "exactly one retry spends the approval");
    assert_eq!(
        emulator.counter(OP, "received"),
        1,
        "Redshift saw exactly one"
    );
    assert_eq!(
        new_ids.len(),
        1,
        "the other {} share one new pending approval: {new_ids:?}",
        RETRIES - 1
    );
    assert!(!new_ids.contains(&id));

    // Each trail verifies; between them, the approval was consumed once.
    let mut consumed = 0;
    for gw in &gateways {
        audit_verifies(&gw.audit_dir);
        consumed += gateway::audit_records(&gw.audit_dir)
            .iter()
            .filter(|r| {
                r["kind"] == "approval"
                    && r["approval_id"] == id.as_str()
                    && r["transition"] == "consumed"
            })
            .count();
    }
    assert_eq!(consumed, 1);
}
