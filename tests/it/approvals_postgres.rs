//! Two gateway processes sharing one real PostgreSQL approvals store: an approval given through
//! one is seen by the other, and of 50 concurrent identical retries spread across both, exactly
//! one is forwarded to Redshift. A store that stops answering is named in `/readyz`'s body while
//! health stays SERVING, and the note goes when it answers again.
//!
//! The server is `$DATASHARE_GATEWAY_TEST_POSTGRES` (a URL; `scripts/test.sh` starts a throwaway
//! one), else one this test starts with `scripts/throwaway-postgres.sh`; the outage test always
//! starts its own, since it stops it. Without PostgreSQL the tests fail: they are never skipped.

use crate::support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use datashare_gateway::proto::datasharing::v1::{ApproveRequest, AssociateConsumerRequest};
use sqlx::Connection;
use support::emulator::Emulator;
use support::gateway::{
    self, APPROVER, Gateway, GatewayOptions, LOADER, PROVISIONED_NS, REPORTING, SALES_SHARE,
    as_caller, required_approval,
};
use support::prometheus::get;

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
        Server::own()
    }

    /// A throwaway server of this test's own, whatever the suite started.
    fn own() -> Server {
        // One server per test: tests run in parallel, so the directory is the test's own.
        let dir = std::env::temp_dir().join(format!("dsgw-pg-{}", uuid::Uuid::new_v4().simple()));
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

    /// Runs `scripts/throwaway-postgres.sh <command>` on this test's own server.
    fn script(&self, command: &str) {
        let dir = self.own.as_ref().expect("a server of this test's own");
        let out = Command::new("bash")
            .arg(support::emulator::repo_root().join("scripts/throwaway-postgres.sh"))
            .arg(command)
            .arg(dir)
            .output()
            .expect("run scripts/throwaway-postgres.sh");
        assert!(
            out.status.success(),
            "throwaway-postgres.sh {command}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
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

/// The approval the first release stored (the same id as in the SQL below).
const FIRST_RELEASE_ID: &str = "0e6c1a52-7d3b-4f2a-9b8c-5d4e3f2a1b0c";

/// Migration 1 alone, as the first release applied it.
#[derive(Debug)]
struct FirstRelease;

impl sqlx::migrate::MigrationSource<'static> for FirstRelease {
    fn resolve(
        self,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<
                    Output = Result<Vec<sqlx::migrate::Migration>, sqlx::error::BoxDynError>,
                > + Send,
        >,
    > {
        Box::pin(async {
            Ok(vec![sqlx::migrate::Migration::new(
                1,
                "approvals".into(),
                sqlx::migrate::MigrationType::Simple,
                include_str!("../../migrations/0001_approvals.sql").into(),
                false,
            )])
        })
    }
}

/// A PostgreSQL store made by the first release, holding an APPROVED approval in the
/// association's own columns: a gateway of this release migrates it (the fields move to
/// `approval_fields`, the columns are dropped) and the request it approves spends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_stored_by_the_first_release_is_spent_after_the_upgrade() {
    use datashare_gateway::call::{RequestField, SemanticRequest};
    use datashare_gateway::proto::datasharing::v1::GetApprovalRequest;

    let server = Server::get();
    let store = server.database().await;
    let mut db = sqlx::PgConnection::connect(&store).await.expect("connect");
    sqlx::migrate::Migrator::new(FirstRelease)
        .await
        .expect("the first release's migrations")
        .run(&mut db)
        .await
        .expect("migrate to the first release");
    let account = PROVISIONED_NS
        .split(':')
        .nth(4)
        .expect("the namespace ARN's account");
    let request = SemanticRequest {
        method: "AssociateConsumer",
        fields: vec![
            RequestField::text("data_share_arn", SALES_SHARE),
            RequestField::text("consumer_kind", "provisioned_namespace"),
            RequestField::text("consumer", PROVISIONED_NS),
            RequestField::text("consumer_account", account),
            RequestField::flag("allow_writes", true),
        ],
    };
    let now_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    sqlx::query(
        "INSERT INTO approvals (id, requester, method, digest, data_share_arn, target_kind, \
         target_value, consumer_account, allow_writes, required_approvals, state, live, version, \
         created_at_ms, expires_at_ms, created_by_request_id) VALUES ('0e6c1a52-7d3b-4f2a-9b8c-5d4e3f2a1b0c', $1, \
         'AssociateConsumer', $2, $3, 'provisioned_namespace', $4, $5, TRUE, 1, 'APPROVED', TRUE, \
         1, $6, $7, 'req-0')",
    )
    .bind(LOADER)
    .bind(request.digest())
    .bind(SALES_SHARE)
    .bind(PROVISIONED_NS)
    .bind(account)
    .bind(now_ms)
    .bind(now_ms + 600_000)
    .execute(&mut db)
    .await
    .expect("a first-release approval");
    sqlx::query(
        "INSERT INTO approval_reviews (approval_id, principal, verdict, comment, reviewed_at_ms) \
         VALUES ('0e6c1a52-7d3b-4f2a-9b8c-5d4e3f2a1b0c', $1, 'APPROVE', 'before the upgrade', $2)",
    )
    .bind(APPROVER)
    .bind(now_ms)
    .execute(&mut db)
    .await
    .expect("its approval");

    let emulator = Emulator::start();
    let gateway = Gateway::start(GatewayOptions {
        extra_toml: format!("[approvals]\nstore = {store:?}\n"),
        ..GatewayOptions::new(emulator.endpoint_url())
    })
    .await;
    let shown = gateway
        .approvals()
        .await
        .get_approval(as_caller(
            APPROVER,
            GetApprovalRequest {
                approval_id: FIRST_RELEASE_ID.into(),
            },
        ))
        .await
        .expect("the approval reads back")
        .into_inner()
        .approval
        .expect("an approval");
    let approved = shown.request.expect("its request");
    assert_eq!(approved.data_share_arn, SALES_SHARE);
    assert_eq!(approved.consumer_kind, "provisioned_namespace");
    assert_eq!(approved.consumer, PROVISIONED_NS);
    assert!(approved.allow_writes);
    assert_eq!(approved.fields.len(), 5, "{:?}", approved.fields);
    assert_eq!(shown.request_digest, request.digest());

    gateway
        .client()
        .await
        .associate_consumer(as_caller(LOADER, writes()))
        .await
        .expect("the approved request is forwarded");
    assert_eq!(emulator.counter(OP, "received"), 1);
    let (state,): (String,) = sqlx::query_as(
        "SELECT state FROM approvals WHERE id = '0e6c1a52-7d3b-4f2a-9b8c-5d4e3f2a1b0c'",
    )
    .fetch_one(&mut db)
    .await
    .expect("read the state");
    assert_eq!(state, "CONSUMED");
    let columns: Vec<(String,)> = sqlx::query_as(
        "SELECT column_name::TEXT FROM information_schema.columns WHERE table_name = 'approvals' \
         AND column_name IN ('data_share_arn', 'target_kind', 'allow_writes')",
    )
    .fetch_all(&mut db)
    .await
    .expect("read the columns");
    assert!(
        columns.is_empty(),
        "the association columns are dropped: {columns:?}"
    );
}

async fn health(gw: &Gateway, service: &str) -> i32 {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", gw.addr))
        .expect("uri")
        .connect()
        .await
        .expect("connect to health");
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .expect("health check")
        .into_inner()
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_store_is_named_in_readyz_while_health_stays_serving() {
    use tonic_health::pb::health_check_response::ServingStatus;
    // Its own server: this test stops it.
    let server = Server::own();
    let store = server.database().await;
    let emulator = Emulator::start();
    let gw = Gateway::start(GatewayOptions {
        extra_toml: format!("[approvals]\nstore = {store:?}\n"),
        ..GatewayOptions::new(emulator.endpoint_url())
    })
    .await;
    let patience = Duration::from_secs(30);
    assert_eq!(get(gw.admin, "/readyz").await, (200, "ok\n".to_owned()));

    server.script("pause");
    let note = format!("approvals store {store}: unreachable (");
    let body = support::wait::until(
        patience,
        "/readyz names the unreachable store",
        async || match get(gw.admin, "/readyz").await {
            (200, body) if body.contains(&note) => Ok(body),
            other => Err(other),
        },
    )
    .await;
    assert!(body.starts_with("ok\n"), "{body}");
    // The reason is the driver's, not a pool timeout's: the server is down, so connecting is
    // refused.
    assert!(body.contains("Connection refused"), "{body}");
    assert!(
        body.contains(
            "calls that need an approval, and Approvals calls, fail with UNAVAILABLE; the rest \
             are served"
        ),
        "{body}"
    );
    assert!(
        gw.logged("approvals store unreachable").await,
        "{}",
        gw.logs()
    );
    for service in ["", "datasharing.v1.DataSharing", "datasharing.v1.Approvals"] {
        assert_eq!(
            health(&gw, service).await,
            ServingStatus::Serving as i32,
            "{service:?}"
        );
    }
    // Ungated calls do not touch the store: served. A gated one needs it: UNAVAILABLE.
    let mut client = gw.client().await;
    client
        .associate_consumer(as_caller(
            REPORTING,
            gateway::namespace_request(SALES_SHARE, PROVISIONED_NS),
        ))
        .await
        .expect("an ungated call is served");
    let gated = client
        .associate_consumer(as_caller(LOADER, writes()))
        .await
        .expect_err("a gated call needs the store");
    assert_eq!(gated.code(), tonic::Code::Unavailable, "{gated:?}");

    server.script("resume");
    support::wait::until(
        patience,
        "the note goes once the store answers",
        async || match get(gw.admin, "/readyz").await {
            (200, body) if body == "ok\n" => Ok(()),
            other => Err(other),
        },
    )
    .await;
    assert!(
        gw.logged("approvals store answers again").await,
        "{}",
        gw.logs()
    );
    let status = client
        .associate_consumer(as_caller(LOADER, writes()))
        .await
        .expect_err("needs approval");
    assert!(!required_approval(&status).is_empty(), "{status:?}");
}
