//! A Redshift emulator for the datashare operations, with STS AssumeRole beside it: the AWS
//! Query protocol over HTTP/1.1, SigV4 checked against configured keys and issued sessions,
//! state kept as Redshift keeps it, a CloudTrail-like event log delivered as CloudTrail trail
//! files to S3 and looked up through CloudTrail's `LookupEvents`, and an admin API for fault
//! injection, counters, events, the trail, the clock and seeding. See `docs/emulator.md`.
//!
//! - `arn`: account ids, region names, namespace GUIDs, role and datashare ARNs (not the
//!   gateway's parser).
//! - `protocol`: the two services, form decoding, XML writing, the Query error envelope.
//! - `keys`: the access keys the emulator accepts, the fixtures' and the sessions'; whose
//!   each is.
//! - `sigv4`: signature verification (aws-sigv4 does the math) against those keys.
//! - `state`: namespaces, datashares, grants, associations and their transitions.
//! - `ops`: the eight Redshift operations, member decoding and result XML.
//! - `sts`: roles and AssumeRole, which issues sessions into `keys`.
//! - `iam`: the limits on a role's settings that the fixtures and AssumeRole both check.
//! - `events`: the event log, with CloudTrail's field names.
//! - `trail`: the event log as CloudTrail trail files and signed digests in S3.
//! - `signing`: the RSA key digests are signed with, and its published public half.
//! - `cloudtrail`: CloudTrail's JSON 1.1 API: `LookupEvents` and `ListPublicKeys`.
//! - `clock`: the emulator's "now", which the admin API can move forward.
//! - `faults`: fault rules, held calls and per-operation counters.
//! - `fixtures`: the fixtures file and the seed body.
//! - `api` / `admin`: the two HTTP listeners.
//! - [`fuzzing`]: the request parsers and signature check, exposed for the fuzz targets.

mod admin;
mod api;
mod arn;
mod clock;
mod cloudtrail;
mod events;
mod faults;
mod fixtures;
pub mod fuzzing;
mod iam;
mod keys;
mod ops;
mod protocol;
mod signing;
mod sigv4;
mod state;
mod sts;
mod trail;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use faults::{FaultKind, FaultSpec, FaultSpecError};
pub use fixtures::{
    AssociationFixture, DataShareFixture, Fixtures, GrantFixture, GrantStatus, KeyFixture,
    NamespaceFixture, NamespaceKindFixture, RoleFixture,
};

pub use signing::SigningKeyError;
pub use trail::{Secret, TrailConfig};

use arn::Region;

/// How long an open connection may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long in-flight requests get to finish once shutdown starts.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the emulator could not start or a fixture was refused.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    /// The fixtures file could not be read.
    #[error("cannot read fixtures file {path}")]
    ReadFixtures {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The fixtures file is not valid TOML for [`Fixtures`].
    #[error("cannot parse fixtures file {path}")]
    ParseFixtures {
        /// The file.
        path: PathBuf,
        /// The TOML error.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A fixture value breaks a rule.
    #[error("invalid fixture {key} = {value:?}: {rule}")]
    InvalidFixture {
        /// The key, e.g. `namespaces.guid`.
        key: String,
        /// The value given.
        value: String,
        /// The rule it breaks.
        rule: String,
    },
    /// The configured region is not a region name.
    #[error("invalid region {0:?}")]
    InvalidRegion(String),
    /// A setting of [`EmulatorConfig`] (the trail's) breaks a rule.
    #[error("invalid setting {key} = {value:?}: {rule}")]
    InvalidConfig {
        /// The key, e.g. `trail.bucket`.
        key: String,
        /// The value given.
        value: String,
        /// The rule it breaks.
        rule: String,
    },
    /// The digest signing key could not be loaded.
    #[error("digest signing key")]
    SigningKey(#[from] SigningKeyError),
    /// A fault rule in [`EmulatorConfig::faults`] breaks a rule.
    #[error("invalid fault rule")]
    InvalidFault(#[from] FaultSpecError),
    /// A listener could not be bound or read.
    #[error("listener error")]
    Io(#[from] std::io::Error),
}

/// What the emulator serves.
#[derive(Clone, Debug)]
pub struct EmulatorConfig {
    /// The region requests must be signed for; every ARN is in it.
    pub region: String,
    /// The initial state, also what `POST /reset` returns to.
    pub fixtures: Fixtures,
    /// Fault rules active from the start.
    pub faults: Vec<FaultSpec>,
    /// Deliver the event log to S3 as a CloudTrail trail; none when absent.
    pub trail: Option<TrailConfig>,
    /// The RSA private key digests are signed with (PEM or DER, PKCS#8 or PKCS#1); a fresh
    /// 2048-bit key, made on first use, when absent.
    pub digest_signing_key: Option<PathBuf>,
}

impl EmulatorConfig {
    /// Checks everything [`serve`] would refuse (the region, the fault rules, the trail's
    /// settings, the signing key file), so a caller can stop before it binds a listener.
    pub fn validate(&self) -> Result<(), EmulatorError> {
        Region::parse(&self.region)
            .map_err(|_| EmulatorError::InvalidRegion(self.region.clone()))?;
        for f in &self.faults {
            f.validate()?;
        }
        if let Some(trail) = &self.trail {
            trail.validate()?;
        }
        if let Some(path) = &self.digest_signing_key {
            signing::Signer::load(path, time::OffsetDateTime::now_utc())?;
        }
        Ok(())
    }

    /// A config with no initial faults and no trail.
    pub fn new(region: impl Into<String>, fixtures: Fixtures) -> Self {
        EmulatorConfig {
            region: region.into(),
            fixtures,
            faults: Vec::new(),
            trail: None,
            digest_signing_key: None,
        }
    }
}

/// State shared by every connection of both listeners.
#[derive(Debug)]
struct Shared {
    store: state::Store,
    keys: keys::Keys,
    sts: sts::Sts,
    fixtures: Fixtures,
    faults: faults::Faults,
    holds: faults::Holds,
    counters: faults::Counters,
    events: events::EventLog,
    clock: clock::Clock,
    trail: Option<trail::Trail>,
    signing_key: signing::SigningKey,
    lookup_rate: cloudtrail::LookupRate,
}

impl Shared {
    /// Adds fixtures at runtime (`POST /seed`); checked whole before anything changes.
    fn seed(&self, fixtures: &Fixtures) -> Result<(), EmulatorError> {
        fixtures.validate()?;
        self.keys.seed(&fixtures.keys);
        self.store.seed(fixtures)?;
        self.sts.seed(&fixtures.roles)
    }

    /// Back to the fixtures: no sessions, faults, counters or events, no call and no trail
    /// delivery held, the clock at real time. Trail files already built are still sent, and
    /// each account's digest chain goes on.
    fn reset(&self) -> Result<(), EmulatorError> {
        self.keys.reset(&self.fixtures.keys);
        self.store.reset(&self.fixtures)?;
        self.sts.reset(&self.fixtures.roles)?;
        self.faults.clear();
        self.holds.release();
        self.counters.reset();
        self.events.clear();
        self.clock.reset();
        if let Some(trail) = &self.trail {
            trail.release();
        }
        Ok(())
    }

    /// The admin API's `GET /state`.
    fn snapshot(&self) -> serde_json::Value {
        let store = self.store.snapshot();
        serde_json::json!({
            "region": self.store.region(),
            "access_keys": self.keys.accounts(),
            "namespaces": store.namespaces,
            "datashares": store.datashares,
            "roles": self.sts.snapshot(),
            "sessions": self.keys.session_count(),
        })
    }
}

/// Serves the API on `api` and the admin API on `admin` until `shutdown` resolves, then lets
/// in-flight requests finish (up to a few seconds).
pub async fn serve(
    api: TcpListener,
    admin: TcpListener,
    config: EmulatorConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), EmulatorError> {
    let region = Region::parse(&config.region)
        .map_err(|_| EmulatorError::InvalidRegion(config.region.clone()))?;
    for f in &config.faults {
        f.validate()?;
    }
    let clock = clock::Clock::default();
    let trail = config
        .trail
        .map(|t| trail::Trail::new(t, region.as_str(), clock.now()))
        .transpose()?;
    let signing_key = signing::SigningKey::new(config.digest_signing_key.as_deref(), clock.now())?;
    let shared = Arc::new(Shared {
        sts: sts::Sts::new(&region, &config.fixtures.roles)?,
        store: state::Store::new(region, &config.fixtures)?,
        keys: keys::Keys::new(&config.fixtures.keys),
        fixtures: config.fixtures,
        faults: faults::Faults::new(config.faults),
        holds: faults::Holds::default(),
        counters: faults::Counters::default(),
        events: events::EventLog::default(),
        clock,
        trail,
        signing_key,
        lookup_rate: cloudtrail::LookupRate::default(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    if shared.trail.is_some() {
        tokio::spawn(deliver_trail(shared.clone(), stop_rx.clone()));
    }
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = api.accept() => match accepted {
                Ok((stream, peer)) => spawn_api(stream, peer, shared.clone(), stop_rx.clone()),
                Err(e) => accept_failed(e).await,
            },
            accepted = admin.accept() => match accepted {
                Ok((stream, peer)) => spawn_admin(stream, peer, shared.clone(), stop_rx.clone()),
                Err(e) => accept_failed(e).await,
            },
        }
    }
    tracing::info!("emulator shutting down");
    // Held calls would otherwise keep their connections open until the drain times out.
    shared.holds.release();
    let _ = stop_tx.send(true);
    drop(stop_rx);
    // Connection tasks hold receivers; wait (bounded) until they have all finished.
    let _ = tokio::time::timeout(DRAIN_TIMEOUT + Duration::from_secs(1), stop_tx.closed()).await;
    Ok(())
}

/// Delivers the trail every period (sooner when woken), and once more at shutdown so that
/// nothing recorded before it is lost.
async fn deliver_trail(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let Some(trail) = &shared.trail else {
        return;
    };
    loop {
        let stopping = tokio::select! {
            () = tokio::time::sleep(trail.next_wait()) => false,
            () = trail.wake.notified() => false,
            _ = stop.changed() => true,
        };
        let delivery = trail.deliver(&shared.events, &shared.clock, &shared.signing_key);
        if stopping {
            let _ = tokio::time::timeout(DRAIN_TIMEOUT, delivery).await;
            return;
        }
        delivery.await;
    }
}

async fn accept_failed(e: std::io::Error) {
    // Typically EMFILE under load: back off briefly rather than spin, and keep serving.
    tracing::warn!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

fn http1() -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    b
}

fn spawn_api(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        // Each request runs in a task of its own: AWS carries out a request it has received even
        // when the client hangs up before the answer (a crash, a timeout), and hyper would drop
        // the handler with the connection.
        let svc = service_fn(move |req| {
            let handling = tokio::spawn(api::handle(shared.clone(), peer, req));
            async move {
                handling.await.unwrap_or_else(|panicked| {
                    tracing::error!(%peer, error = %panicked, "request handler panicked");
                    Err(api::CloseConnection)
                })
            }
        });
        let mut conn = std::pin::pin!(http1().serve_connection(TokioIo::new(stream), svc));
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(%peer, error = %e, "api connection ended");
                }
            }
            _ = stop.changed() => {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(DRAIN_TIMEOUT, conn).await;
            }
        }
    });
}

fn spawn_admin(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let svc = service_fn(move |req| admin::handle(shared.clone(), req));
        let mut conn = std::pin::pin!(http1().serve_connection(TokioIo::new(stream), svc));
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(%peer, error = %e, "admin connection ended");
                }
            }
            _ = stop.changed() => {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(DRAIN_TIMEOUT, conn).await;
            }
        }
    });
}
