//! The gateway's lifecycle: [`App::build`] turns the configuration into everything needed to
//! serve (audit trail, policies and their reloader, the Redshift client, the approvals store,
//! the handler, the admin and probe listeners), and [`App::serve`] serves it (health, reflection,
//! mTLS or plaintext connections) until its shutdown signal, then drains the calls in flight,
//! closes the audit trail, ships it and flushes the spans within the grace period.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Server;
use tonic_health::ServingStatus;

use super::handler::Gateway;
use super::http::HttpGuardLayer;
use super::stack::StackParts;
use super::{APPROVALS_SERVICE_NAME, SERVICE_NAME, ServerError};
use crate::approvals::{Approvals, ApprovalsService};
use crate::audit::{AuditLog, BucketCheck, Shipper};
use crate::call::ValidationEnv;
use crate::config::Config;
use crate::identity::AuthMode;
use crate::metrics::{Metrics, ScrapeSource};
use crate::policy::Policies;
use crate::proto::datasharing::v1::approvals_server::ApprovalsServer;
use crate::proto::datasharing::v1::data_sharing_server::DataSharingServer;
use crate::telemetry::Telemetry;
use crate::upstream::{self, Accounts, RedshiftService, StaticCredentials};

/// Everything needed to serve, built from the configuration.
#[derive(Debug)]
pub struct App {
    config: Config,
    gateway: Gateway,
    approvals: Approvals,
    audit: AuditLog,
    shipper: Option<Shipper>,
    metrics: Arc<Metrics>,
    admin: TcpListener,
    health_listener: Option<TcpListener>,
    telemetry: Telemetry,
}

/// Options for [`App::build`] that are not in the configuration file.
#[derive(Debug, Default)]
pub struct BuildOptions {
    /// Replace the default AWS credential chain (used by `dev`).
    pub credentials: Option<StaticCredentials>,
    /// The trace pipeline, flushed at shutdown.
    pub telemetry: Telemetry,
}

/// Reads the audit writer's, the span exporter's and the log writer's counters at scrape time.
#[derive(Debug)]
struct ScrapeCounters {
    audit: AuditLog,
    spans_dropped: Arc<std::sync::atomic::AtomicU64>,
    log_lines_dropped: crate::telemetry::DroppedLogLines,
    seen: std::sync::Mutex<SeenCounts>,
}

/// The counts at the last scrape: Prometheus counters only go up, by what happened since.
#[derive(Debug, Default)]
struct SeenCounts {
    audit_records: u64,
    audit_fsyncs: u64,
    audit_fsync_micros: u64,
    audit_checkpoints: u64,
    spans_dropped: u64,
    log_lines_dropped: u64,
}

impl ScrapeSource for ScrapeCounters {
    fn refresh(&self, metrics: &Metrics) {
        use std::sync::atomic::Ordering;
        let stats = self.audit.stats();
        metrics.audit_queue_depth.set(stats.queue_depth as i64);
        metrics
            .audit_writable
            .set(i64::from(*self.audit.health().borrow()));
        let now = SeenCounts {
            audit_records: stats.records_written,
            audit_fsyncs: stats.fsyncs,
            audit_fsync_micros: stats.fsync_micros_total,
            audit_checkpoints: stats.checkpoints,
            spans_dropped: self.spans_dropped.load(Ordering::Relaxed),
            log_lines_dropped: self.log_lines_dropped.get(),
        };
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        metrics
            .audit_records
            .inc_by(now.audit_records.saturating_sub(seen.audit_records));
        metrics
            .audit_fsyncs
            .inc_by(now.audit_fsyncs.saturating_sub(seen.audit_fsyncs));
        metrics.audit_fsync_seconds.inc_by(
            now.audit_fsync_micros
                .saturating_sub(seen.audit_fsync_micros) as f64
                / 1e6,
        );
        metrics
            .spans_dropped
            .inc_by(now.spans_dropped.saturating_sub(seen.spans_dropped));
        metrics
            .log_lines_dropped
            .inc_by(now.log_lines_dropped.saturating_sub(seen.log_lines_dropped));
        metrics
            .audit_checkpoints
            .inc_by(now.audit_checkpoints.saturating_sub(seen.audit_checkpoints));
        *seen = now;
    }
}

impl App {
    /// Opens the audit trail, loads the policies, builds the Redshift client and the stack, and
    /// binds the admin and health listeners. Every failure here is a clear error at start.
    pub async fn build(config: Config, options: BuildOptions) -> Result<App, ServerError> {
        let metrics = Metrics::new();
        let instance = config.server.instance_name();
        // Before the trail opens: a refused bucket leaves nothing behind.
        let ship_store = match &config.audit.ship {
            Some(ship) => Some((ship, checked_bucket(ship).await?)),
            None => None,
        };
        let audit = AuditLog::open(&config.audit, &instance).await?;
        let shipper = ship_store.map(|(ship, store)| {
            Shipper::start(
                store,
                ship,
                &config.audit.dir,
                &instance,
                audit.sealed_below(),
                metrics.clone(),
            )
        });
        let accounts = Arc::new(
            Accounts::load(&config.accounts, config.upstream.own_account().as_ref())
                .map_err(|e| ServerError::Config(e.to_string()))?,
        );
        tracing::info!(accounts = ?accounts.served(), "consumer accounts served");
        let policies = Policies::load(config.policy.clone(), crate::operations::policy_probes())?;
        // Before the gateway announces itself: a SIGHUP after the ready line must reload, not kill
        // the process (SIGHUP's default action), and a file changed then must not go unseen.
        match policies.spawn_reloader(metrics.clone()) {
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "policy hot reload is off"),
        }
        let client = upstream::build_client(
            &config.upstream,
            options.credentials,
            metrics.clone(),
            crate::operations::redshift_operations(),
        )
        .await;
        // The partition of the region calls go to: requests naming another are refused.
        let partition = client
            .region()
            .and_then(|region| crate::arn::Region::parse(region).ok())
            .map(|region| crate::arn::Partition::of_region(&region))
            .unwrap_or_default();
        let upstream = RedshiftService::new(
            client,
            &config.upstream,
            accounts.clone(),
            config.server.instance_name(),
            metrics.clone(),
        );
        let location = config
            .approvals
            .location(&config.audit.dir)
            .map_err(ServerError::Config)?;
        let approvals = Approvals::open(
            &location,
            &config.approvals,
            audit.clone(),
            metrics.clone(),
            crate::operations::approvable_methods(),
        )
        .await?;
        // An unreachable store is a note in /readyz's body (see `Approvals::spawn_probe`).
        metrics.add_source(Arc::new(approvals.clone()));
        let parts = StackParts {
            validation: ValidationEnv {
                default_account: config.upstream.default_account(),
                partition,
            },
            accounts,
            approvals: Some(approvals.clone()),
            min_remaining: Duration::from_millis(config.upstream.min_remaining_deadline_ms),
            ..StackParts::new(
                metrics.clone(),
                audit.clone(),
                Arc::new(config.principals.clone()),
                policies.clone(),
                config.server.concurrency_limit,
                Duration::from_millis(config.server.queue_timeout_ms),
            )
            .with_limits(&config.server)
        };
        metrics.add_source(Arc::new(ScrapeCounters {
            audit: audit.clone(),
            spans_dropped: options.telemetry.dropped_spans(),
            log_lines_dropped: options.telemetry.dropped_log_lines(),
            seen: std::sync::Mutex::default(),
        }));
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| ServerError::Bind { addr, source })
        };
        let admin = bind(config.server.admin_listen).await?;
        let health_listener = match config.server.health_listen {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let approvals_service = ApprovalsService::new(approvals.clone(), Arc::new(policies));
        let gateway = Gateway::new(&parts, upstream, approvals_service, config.auth.mode);
        Ok(App {
            config,
            gateway,
            approvals,
            audit,
            shipper,
            metrics,
            admin,
            health_listener,
            telemetry: options.telemetry,
        })
    }

    /// The admin listener's address (`/metrics`, `/livez`, `/readyz`).
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.local_addr().ok()
    }

    /// Serves on `listener` until `shutdown` resolves, then lets in-flight calls finish within
    /// the grace period, flushes the audit trail and the spans.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let App {
            config,
            gateway,
            approvals,
            audit,
            shipper,
            metrics,
            admin,
            health_listener,
            telemetry,
        } = self;
        let in_flight = gateway.in_flight.clone();
        let (health, health_service) = tonic_health::server::health_reporter();
        // One readiness verdict for grpc.health.v1 and /readyz: serving, and the audit trail can
        // write (the gateway fails closed without it).
        let (ready_tx, ready_rx) = tokio::sync::watch::channel(true);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        {
            let mut audit_ok = audit.health();
            let mut stopping = stop_rx.clone();
            let health = health.clone();
            let metrics = metrics.clone();
            tokio::spawn(async move {
                loop {
                    let serving = *audit_ok.borrow_and_update() && !*stopping.borrow_and_update();
                    let status = if serving {
                        ServingStatus::Serving
                    } else {
                        ServingStatus::NotServing
                    };
                    if !serving {
                        tracing::warn!(
                            "health: NOT_SERVING (audit notes unwritable or shutting down)"
                        );
                    }
                    health.set_service_status(SERVICE_NAME, status).await;
                    health
                        .set_service_status(APPROVALS_SERVICE_NAME, status)
                        .await;
                    health.set_service_status("", status).await;
                    metrics.serving.set(i64::from(serving));
                    let _ = ready_tx.send(serving);
                    tokio::select! {
                        changed = audit_ok.changed() => if changed.is_err() { break },
                        changed = stopping.changed() => if changed.is_err() { break },
                    }
                }
            });
        }
        // The admin listener outlives the drain, so the last scrape sees the final counts.
        let (admin_stop, admin_stopped) = tokio::sync::oneshot::channel::<()>();
        let admin_task = tokio::spawn(crate::admin::serve(
            admin,
            metrics.clone(),
            ready_rx,
            async move {
                let _ = admin_stopped.await;
            },
        ));

        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                // google.rpc error details, so grpcurl can print ErrorInfo and BadRequest.
                .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 = reflection().build_v1()?;
        let reflection_v1alpha = reflection().build_v1alpha()?;

        let max = config.server.max_message_bytes;
        let approvals_api = ApprovalsServer::new(gateway.clone())
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);
        let data_sharing = DataSharingServer::new(gateway)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);
        let sweeper =
            approvals.spawn_sweeper(Duration::from_secs(config.approvals.sweep_interval_secs));
        let probe = approvals.spawn_probe(crate::approvals::PROBE_INTERVAL);

        let mut builder = Server::builder()
            .layer(HttpGuardLayer::new(metrics.clone()))
            .http2_keepalive_interval(Some(Duration::from_secs(
                config.server.keepalive_interval_secs,
            )))
            .http2_keepalive_timeout(Some(Duration::from_secs(
                config.server.keepalive_timeout_secs,
            )))
            .tcp_nodelay(true)
            // One client may not hold more than this many calls open on a connection, nor
            // reset streams faster than they are accepted (rapid reset).
            .max_concurrent_streams(Some(config.server.max_concurrent_streams))
            .http2_max_pending_accept_reset_streams(Some(
                config.server.max_pending_accept_reset_streams,
            ))
            // Bounds a stream whose headers or body never finish arriving.
            .timeout(Duration::from_millis(config.server.request_timeout_ms));
        let tls = match config.auth.mode {
            AuthMode::Mtls => Some(mtls_acceptor(&config)?),
            AuthMode::Insecure => {
                tracing::warn!(
                    "auth.mode = \"insecure\": plaintext, callers name themselves in x-caller-id; never use this in production"
                );
                None
            }
        };
        let limits = crate::accept::Limits {
            max_connections: config.server.max_connections,
            handshake_timeout: Duration::from_millis(config.server.handshake_timeout_ms),
            idle_timeout: Duration::from_millis(config.server.idle_timeout_ms),
        };

        // The probes listener answers NOT_SERVING through the drain, and stops only after it.
        let (probes_stop, probes_stopped) = tokio::sync::watch::channel(false);
        if let Some(listener) = health_listener {
            let mut stop = probes_stopped;
            let probes = Server::builder().add_service(health_service.clone());
            tokio::spawn(probes.serve_with_incoming_shutdown(
                TcpListenerStream::new(listener),
                async move {
                    let _ = stop.wait_for(|s| *s).await;
                },
            ));
        }
        let grace = Duration::from_secs(config.server.shutdown_grace_secs);
        let router = builder
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(data_sharing)
            .add_service(approvals_api);
        let mut stop = stop_rx;
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        let serving = match tls {
            Some(acceptor) => {
                let handshake_metrics = metrics.clone();
                let connections = crate::accept::incoming(
                    listener,
                    limits,
                    move |connection| {
                        crate::accept::tls_handshake(
                            acceptor.clone(),
                            connection,
                            limits,
                            handshake_metrics.clone(),
                        )
                    },
                    metrics.clone(),
                );
                tokio::spawn(router.serve_with_incoming_shutdown(
                    tokio_stream::wrappers::ReceiverStream::new(connections),
                    stopped,
                ))
            }
            None => {
                let opening_metrics = metrics.clone();
                let connections = crate::accept::incoming(
                    listener,
                    limits,
                    move |connection| {
                        let metrics = opening_metrics.clone();
                        async move {
                            let peer = connection.peer_addr();
                            crate::accept::await_opening(connection, peer, &limits, &metrics).await
                        }
                    },
                    metrics.clone(),
                );
                tokio::spawn(router.serve_with_incoming_shutdown(
                    tokio_stream::wrappers::ReceiverStream::new(connections),
                    stopped,
                ))
            }
        };
        let mut serving = std::pin::pin!(serving);
        tokio::select! {
            done = &mut serving => {
                sweeper.abort();
                probe.abort();
                in_flight.drain(Duration::ZERO, &audit).await;
                let _ = probes_stop.send(true);
                audit.close().await;
                if let Some(shipper) = shipper {
                    shipper.finish(grace).await;
                }
                let _ = admin_stop.send(());
                let _ = admin_task.await;
                return flatten(done);
            }
            () = shutdown => {}
        }
        tracing::info!(
            grace_secs = grace.as_secs(),
            "shutting down: no new calls; finishing in-flight calls"
        );
        let _ = stop_tx.send(true);
        // No expiry is recorded after the trail closes; the next start (or another replica)
        // records what falls due meanwhile.
        sweeper.abort();
        probe.abort();
        let drain_started = Instant::now();
        let served = match tokio::time::timeout(grace, &mut serving).await {
            Ok(done) => flatten(done),
            Err(_) => {
                // The calls still running are aborted (and recorded) first, so that their
                // callers are answered ABORTED_AT_SHUTDOWN over connections still open; then
                // the connections get a moment to carry those answers before they are dropped.
                in_flight.drain(Duration::ZERO, &audit).await;
                match tokio::time::timeout(Duration::from_secs(1), &mut serving).await {
                    Ok(done) => flatten(done),
                    Err(_) => {
                        tracing::warn!("grace period over; dropping the connections still open");
                        serving.abort();
                        Ok(())
                    }
                }
            }
        };
        // Calls that outlived their callers (or their connections) get the rest of the grace
        // period; any still running then are aborted and recorded as such, before the log closes.
        in_flight
            .drain(grace.saturating_sub(drain_started.elapsed()), &audit)
            .await;
        let _ = probes_stop.send(true);
        audit.close().await;
        // The writer sealed the open file with a final checkpoint; ship them within what is
        // left of the grace period (at least a second), else at the next start.
        if let Some(shipper) = shipper {
            let left = grace.saturating_sub(drain_started.elapsed());
            shipper.finish(left.max(Duration::from_secs(1))).await;
        }
        telemetry.shutdown(Duration::from_secs(2)).await;
        let _ = admin_stop.send(());
        let _ = admin_task.await;
        served
    }
}

/// The store `[audit.ship]` names, once S3 has not said its bucket is missing or unprotected.
/// When S3 cannot be asked the gateway serves all the same (the trail is kept locally and
/// shipping is retried), with a warning.
async fn checked_bucket(
    ship: &crate::audit::ShipConfig,
) -> Result<Arc<upstream::S3Store>, ServerError> {
    let store = Arc::new(upstream::S3Store::for_shipping(ship).await);
    match crate::audit::check_bucket(store.as_ref(), ship).await {
        BucketCheck::Protected => {
            tracing::info!(bucket = %ship.bucket, "audit: the bucket has Object Lock and versioning enabled");
        }
        BucketCheck::Refused(refusal) => return Err(refusal.into()),
        BucketCheck::Unchecked(why) => tracing::warn!(
            bucket = %ship.bucket,
            error = %why,
            "audit: the check of audit.ship.bucket's Object Lock and versioning could not be made; \
             serving, and shipping is retried as usual"
        ),
    }
    Ok(store)
}

fn flatten(
    done: Result<Result<(), tonic::transport::Error>, tokio::task::JoinError>,
) -> Result<(), ServerError> {
    match done {
        Ok(result) => Ok(result?),
        Err(join) if join.is_cancelled() => Ok(()),
        Err(join) => std::panic::resume_unwind(join.into_panic()),
    }
}

fn mtls_acceptor(config: &Config) -> Result<tokio_rustls::TlsAcceptor, ServerError> {
    let read = |key: &'static str, path: &Option<std::path::PathBuf>| {
        let path = path.clone().unwrap_or_default();
        std::fs::read(&path).map_err(|source| ServerError::TlsFile { key, path, source })
    };
    let cert = read("auth.cert", &config.auth.cert)?;
    let key = read("auth.key", &config.auth.key)?;
    let ca = read("auth.client_ca", &config.auth.client_ca)?;
    crate::accept::mtls_acceptor(&cert, &key, &ca).map_err(ServerError::Tls)
}

/// The line printed on stdout once the gateway listens, for scripts and tests using port 0.
pub fn ready_line(grpc: SocketAddr, admin: Option<SocketAddr>) -> String {
    serde_json::json!({
        "event": "gateway_listening",
        "grpc": grpc.to_string(),
        "admin": admin.map(|a| a.to_string()),
    })
    .to_string()
}
