//! Two-person approval bound to the exact request.
//!
//! Policy decides which calls need approvals (`context.approvals` in Cedar, see the policy
//! layer); this module keeps the approvals and spends them:
//!
//! - [`Approvals`]: the handle on the store ([`StoreLocation`]: SQLite by default, a file beside
//!   the audit trail; PostgreSQL when replicas share it). Every transition (created, approved,
//!   denied, consumed, expired) is one conditional statement or transaction in the store, then
//!   one `approval` audit record and a metric; a new pending approval is also logged at info
//!   (the hook for a notifier). A probe ([`Approvals::spawn_probe`]) keeps whether the store
//!   answers, for `/readyz`'s body; health does not depend on it, since ungated calls never
//!   touch the store.
//! - [`FindApprovals`] (before policy) looks up the approval a call is about; on the way back
//!   it creates the pending approval a call was refused for. The live approval of a gated call's
//!   exact request is read by the policy layer, only when policy does not permit the call
//!   without approvals. [`SpendApproval`] (just before the write-ahead
//!   intent) consumes the approval of a call policy permitted only thanks to it, by
//!   compare-and-set, so that exactly one call spends it across replicas.
//! - [`ops`]: the `datasharing.v1.Approvals` operations (GetApproval, ListApprovals, Approve,
//!   Deny), served by [`ApprovalsService`] through the same stack as every call.
//!
//! An approval is bound to its requester, method and the digest of the request's semantic
//! fields ([`crate::call::SemanticRequest`]), expires after `approvals.ttl_secs`, and is spent
//! once: the same request again needs a new approval.

mod layer;
pub mod ops;
mod service;
mod store;

use crate::bounds::in_range;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use layer::{Cleared, ClearedCall, FindApprovals, SpendApproval};
pub use service::{ApprovalsService, CarryOut, ReadPolicy};
pub use store::{StoreError, StoreLocation};

use crate::audit::{ApprovalEvent, AuditLog, RecordBody};
use crate::call::{ApprovalResource, ApprovalState, FieldValue, LiveApproval, SemanticRequest};
use crate::errors::GatewayError;
use crate::metrics::Metrics;
use store::{Cursor, Inserted, NewApproval, ReviewOutcome, Store};

/// `approvals.ttl_secs` when unset: an hour.
pub const DEFAULT_TTL_SECS: u64 = 3_600;
/// The longest `approvals.ttl_secs`: thirty days.
pub const MAX_TTL_SECS: u64 = 30 * 24 * 3_600;
/// The name of the default SQLite file, in the audit directory.
pub const DEFAULT_SQLITE_FILE: &str = "approvals.db";

/// `[approvals]`: where approvals are kept and how long they last.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsConfig {
    /// `sqlite:PATH` (one replica; a relative path is taken from the config file's directory)
    /// or `postgres://user@host:port/database` (every replica shares it; give the password in
    /// `PGPASSWORD` or a pgpass file, not here). Unset: `sqlite:<audit.dir>/approvals.db`.
    #[serde(default)]
    pub store: Option<String>,
    /// How long an approval lives, from its creation, in seconds: 1 to 2592000.
    #[serde(default = "default_ttl_secs")]
    pub ttl_secs: u64,
    /// How often expired approvals are marked (and recorded) EXPIRED, in seconds: 1 to 3600. An
    /// approval past its time is never spendable, marked or not.
    #[serde(default = "default_sweep_interval_secs")]
    pub sweep_interval_secs: u64,
    /// Connections to the store at most: 1 to 100.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// Pending approvals one requester may have at once: 1 to 10000. Beyond it a request
    /// needing a new approval is RESOURCE_EXHAUSTED.
    #[serde(default = "default_max_pending_per_requester")]
    pub max_pending_per_requester: u32,
    /// Pending approvals in all: 1 to 1000000.
    #[serde(default = "default_max_pending")]
    pub max_pending: u32,
}

fn default_max_pending_per_requester() -> u32 {
    20
}

fn default_max_pending() -> u32 {
    10_000
}

fn default_ttl_secs() -> u64 {
    DEFAULT_TTL_SECS
}

fn default_sweep_interval_secs() -> u64 {
    30
}

fn default_max_connections() -> u32 {
    8
}

impl Default for ApprovalsConfig {
    fn default() -> Self {
        ApprovalsConfig {
            store: None,
            ttl_secs: default_ttl_secs(),
            sweep_interval_secs: default_sweep_interval_secs(),
            max_connections: default_max_connections(),
            max_pending_per_requester: default_max_pending_per_requester(),
            max_pending: default_max_pending(),
        }
    }
}

impl ApprovalsConfig {
    /// Checks every value; the message names the key, the value and the rule.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(store) = &self.store {
            let location = StoreLocation::parse(store).map_err(|rule| {
                // The value may hold a password: shown redacted, or not at all.
                let shown = StoreLocation::Postgres(store.clone()).redacted();
                format!("approvals.store = {shown:?}: {rule}")
            })?;
            drop(location);
        }
        in_range("approvals.ttl_secs", self.ttl_secs, &(1..=MAX_TTL_SECS))?;
        in_range(
            "approvals.sweep_interval_secs",
            self.sweep_interval_secs,
            &(1..=3_600),
        )?;
        in_range(
            "approvals.max_connections",
            self.max_connections,
            &(1..=100),
        )?;
        in_range(
            "approvals.max_pending_per_requester",
            self.max_pending_per_requester,
            &(1..=10_000),
        )?;
        in_range("approvals.max_pending", self.max_pending, &(1..=1_000_000))?;
        Ok(())
    }

    /// Where the store is: `store`, else an SQLite file in `audit_dir`. Call after
    /// [`ApprovalsConfig::validate`].
    pub fn location(&self, audit_dir: &Path) -> Result<StoreLocation, String> {
        match &self.store {
            Some(store) => {
                StoreLocation::parse(store).map_err(|rule| format!("approvals.store: {rule}"))
            }
            None => Ok(StoreLocation::Sqlite(audit_dir.join(DEFAULT_SQLITE_FILE))),
        }
    }
}

/// A reviewer's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReviewVerdict {
    /// Approve.
    Approve,
    /// Deny.
    Deny,
}

/// One approval or denial.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Review {
    /// Who.
    pub principal: String,
    /// Approve or deny.
    pub verdict: ReviewVerdict,
    /// Their comment.
    pub comment: String,
    /// When.
    pub at: SystemTime,
}

/// An approval as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApprovalRecord {
    /// Its id (a UUID).
    pub id: String,
    /// Who made the request.
    pub requester: String,
    /// The request's semantic fields.
    pub request: SemanticRequest,
    /// Their digest.
    pub digest: String,
    /// Approvals policy required when it was created.
    pub required_approvals: u32,
    /// The state as stored; see [`ApprovalRecord::state_at`].
    pub stored_state: ApprovalState,
    /// When it was created.
    pub created_at: SystemTime,
    /// When it expires, unless spent first.
    pub expires_at: SystemTime,
    /// The request id of the call that created it.
    pub created_by_request_id: String,
    /// When it was consumed.
    pub consumed_at: Option<SystemTime>,
    /// The request id of the call that consumed it.
    pub consumed_by_request_id: Option<String>,
    /// Its approvals and denials, oldest first.
    pub reviews: Vec<Review>,
}

impl ApprovalRecord {
    /// The state at `now`: a PENDING or APPROVED approval whose time is up is EXPIRED, whether
    /// or not the store says so yet.
    pub fn state_at(&self, now: SystemTime) -> ApprovalState {
        match self.stored_state {
            ApprovalState::Pending | ApprovalState::Approved if self.expires_at <= now => {
                ApprovalState::Expired
            }
            state => state,
        }
    }

    /// Who approved it, oldest first.
    pub fn approvers(&self) -> Vec<String> {
        self.reviews
            .iter()
            .filter(|r| r.verdict == ReviewVerdict::Approve)
            .map(|r| r.principal.clone())
            .collect()
    }

    /// As policy sees it.
    pub fn resource(&self, now: SystemTime) -> ApprovalResource {
        ApprovalResource {
            id: self.id.clone(),
            requester: self.requester.clone(),
            request: self.request.clone(),
            required_approvals: self.required_approvals,
            state: self.state_at(now),
        }
    }

    fn live(&self, now: SystemTime) -> LiveApproval {
        LiveApproval {
            id: self.id.clone(),
            state: self.state_at(now),
            approvers: self.approvers(),
            required_approvals: self.required_approvals,
        }
    }
}

/// Why the approvals store could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the approvals store {location}")]
pub struct OpenError {
    /// Where (a PostgreSQL URL without its password).
    pub location: String,
    /// Why.
    #[source]
    pub source: StoreError,
}

/// What a transition record says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transition {
    Created,
    Approved,
    Denied,
    Consumed,
    Expired,
}

impl Transition {
    fn as_str(self) -> &'static str {
        match self {
            Transition::Created => "created",
            Transition::Approved => "approved",
            Transition::Denied => "denied",
            Transition::Consumed => "consumed",
            Transition::Expired => "expired",
        }
    }
}

/// The limits on pending approvals (`approvals.max_pending_per_requester`, `max_pending`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PendingCaps {
    pub(crate) per_requester: u32,
    pub(crate) total: u32,
}

/// Which limit on pending approvals a new one would pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PendingLimit {
    PerRequester,
    Total,
}

impl PendingLimit {
    /// Its configuration key.
    fn key(self) -> &'static str {
        match self {
            PendingLimit::PerRequester => "approvals.max_pending_per_requester",
            PendingLimit::Total => "approvals.max_pending",
        }
    }

    fn of(self, caps: PendingCaps) -> u32 {
        match self {
            PendingLimit::PerRequester => caps.per_requester,
            PendingLimit::Total => caps.total,
        }
    }
}

/// How often the store is probed while the gateway serves: an outage shows in `/readyz`'s body
/// within about this (plus [`PROBE_TIMEOUT`]), whether or not a call needed the store.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(5);
/// A probe unanswered for this long counts as unreachable (a database that accepts
/// connections and never answers); then one more connection, as long, asks why.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// "approval pending" lines per minute at most; the next line says how many were left out.
const PENDING_LINES_PER_MINUTE: u32 = 30;

/// A budget of log lines per minute: `take` says whether a line may be written now, and how
/// many were refused since the last that was.
#[derive(Debug)]
struct LineBudget {
    per_minute: u32,
    state: std::sync::Mutex<LineWindow>,
}

#[derive(Debug)]
struct LineWindow {
    started: std::time::Instant,
    written: u32,
    suppressed: u64,
}

impl LineBudget {
    fn new(per_minute: u32) -> Self {
        LineBudget {
            per_minute,
            state: std::sync::Mutex::new(LineWindow {
                started: std::time::Instant::now(),
                written: 0,
                suppressed: 0,
            }),
        }
    }

    /// `Some(suppressed)` when a line may be written (the count of lines left out before it),
    /// `None` when this one is left out.
    fn take(&self) -> Option<u64> {
        self.take_at(std::time::Instant::now())
    }

    fn take_at(&self, now: std::time::Instant) -> Option<u64> {
        let mut window = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if now.duration_since(window.started) >= Duration::from_secs(60) {
            window.started = now;
            window.written = 0;
        }
        if window.written < self.per_minute {
            window.written += 1;
            Some(std::mem::take(&mut window.suppressed))
        } else {
            window.suppressed += 1;
            None
        }
    }
}

#[derive(Debug)]
struct Inner {
    store: Store,
    audit: AuditLog,
    metrics: Arc<Metrics>,
    ttl: Duration,
    caps: PendingCaps,
    location: String,
    /// Keeps a flood of new approvals from flooding the log.
    pending_lines: LineBudget,
    /// Why the last probe of the store failed; `None` while it answers.
    unreachable: std::sync::Mutex<Option<String>>,
}

/// The approvals store with its audit trail and metrics; cheap to clone.
#[derive(Clone, Debug)]
pub struct Approvals {
    inner: Arc<Inner>,
}

fn unavailable(err: StoreError) -> GatewayError {
    tracing::error!(error = %err, cause = ?std::error::Error::source(&err), "approvals store failed; refusing the call");
    GatewayError::ApprovalsUnavailable(Box::new(err))
}

impl Approvals {
    /// Opens (and migrates) the store at `location`, for approvals of `methods`
    /// (`operations::approvable_methods`).
    pub async fn open(
        location: &StoreLocation,
        config: &ApprovalsConfig,
        audit: AuditLog,
        metrics: Arc<Metrics>,
        methods: Vec<&'static str>,
    ) -> Result<Self, OpenError> {
        let store = Store::open(location, config.max_connections, methods.into())
            .await
            .map_err(|source| OpenError {
                location: location.redacted(),
                source,
            })?;
        tracing::info!(store = %location.redacted(), ttl_secs = config.ttl_secs, "approvals store open");
        let approvals = Approvals {
            inner: Arc::new(Inner {
                store,
                audit,
                metrics,
                ttl: Duration::from_secs(config.ttl_secs),
                caps: PendingCaps {
                    per_requester: config.max_pending_per_requester,
                    total: config.max_pending,
                },
                location: location.redacted(),
                pending_lines: LineBudget::new(PENDING_LINES_PER_MINUTE),
                unreachable: std::sync::Mutex::new(None),
            }),
        };
        approvals.refresh_gauge().await;
        Ok(approvals)
    }

    /// Where the store is (without a password).
    pub fn location(&self) -> &str {
        &self.inner.location
    }

    /// The approval with this id.
    pub async fn get(&self, id: &str) -> Result<Option<ApprovalRecord>, GatewayError> {
        self.inner.store.get(id).await.map_err(unavailable)
    }

    /// The live approval of `request` by `requester`, as the policy layer sees it.
    pub(crate) async fn live_for(
        &self,
        requester: &str,
        request: &SemanticRequest,
    ) -> Result<Option<LiveApproval>, GatewayError> {
        let now = SystemTime::now();
        self.inner.metrics.approval_lookups.inc();
        let record = self
            .inner
            .store
            .live(requester, request.method, &request.digest(), now)
            .await
            .map_err(unavailable)?;
        Ok(record.map(|r| r.live(now)))
    }

    /// The live approval of `request` by `requester`, created PENDING if there is none.
    pub(crate) async fn require(
        &self,
        requester: &str,
        request: &SemanticRequest,
        required_approvals: u32,
        request_id: &str,
    ) -> Result<ApprovalRecord, GatewayError> {
        let digest = request.digest();
        // Twice at most: an approval whose time ran out between the sweep and the insert still
        // holds the request's place; the second sweep frees it.
        for _ in 0..2 {
            let now = SystemTime::now();
            self.expire_due_at(now).await?;
            let new = NewApproval {
                id: uuid::Uuid::new_v4().to_string(),
                requester,
                request,
                digest: &digest,
                required_approvals,
                created_at: now,
                expires_at: now + self.inner.ttl,
                request_id,
            };
            let (record, created) = match self
                .inner
                .store
                .insert_pending(&new, self.inner.caps)
                .await
                .map_err(unavailable)?
            {
                Inserted::Live(record, created) => (*record, created),
                Inserted::HeldByExpired => continue,
                Inserted::OverCap(limit) => {
                    return Err(GatewayError::TooManyPendingApprovals {
                        limit: limit.key(),
                        max: limit.of(self.inner.caps),
                    });
                }
            };
            if created {
                // Every approval has its audit record; the log line is the hook for people,
                // and a flood of new approvals gets a line now and then saying how many.
                if let Some(suppressed) = self.inner.pending_lines.take() {
                    tracing::info!(
                        lines_suppressed_before = suppressed,
                        approval_id = %record.id,
                        requester = %record.requester,
                        method = record.request.method,
                        request = %record.request,
                        required_approvals = record.required_approvals,
                        expires_at = %crate::audit::rfc3339(record.expires_at),
                        "approval pending: a request needs approval by another principal"
                    );
                }
                self.transition(
                    &record,
                    Transition::Created,
                    Some(requester),
                    request_id,
                    None,
                )
                .await?;
            }
            return Ok(record);
        }
        Err(GatewayError::ApprovalsUnavailable(
            "an expired approval kept its request's place".into(),
        ))
    }

    /// Consumes `live` for `request_id` by compare-and-set; the consumed approval, or `None`
    /// when another call spent it first (or its time ran out).
    pub(crate) async fn consume(
        &self,
        live: &LiveApproval,
        requester: &str,
        request_id: &str,
    ) -> Result<Option<ApprovalRecord>, GatewayError> {
        let now = SystemTime::now();
        if !self
            .inner
            .store
            .consume(&live.id, request_id, now)
            .await
            .map_err(unavailable)?
        {
            return Ok(None);
        }
        let record = self
            .get(&live.id)
            .await?
            .ok_or_else(|| GatewayError::Internal("a consumed approval vanished".into()))?;
        self.transition(
            &record,
            Transition::Consumed,
            Some(requester),
            request_id,
            None,
        )
        .await?;
        Ok(Some(record))
    }

    /// Records `reviewer`'s approval or denial of approval `id`.
    pub(crate) async fn review(
        &self,
        id: &str,
        reviewer: &str,
        verdict: ReviewVerdict,
        comment: &str,
        request_id: &str,
    ) -> Result<ApprovalRecord, GatewayError> {
        let existing = self
            .get(id)
            .await?
            .ok_or_else(|| GatewayError::ApprovalNotFound {
                approval_id: id.to_owned(),
            })?;
        // Whatever policy says: an approval is a second person's word.
        if verdict == ReviewVerdict::Approve && existing.requester == reviewer {
            return Err(GatewayError::SelfApproval);
        }
        let outcome = self
            .inner
            .store
            .review(id, reviewer, verdict, comment, SystemTime::now())
            .await
            .map_err(unavailable)?;
        match outcome {
            ReviewOutcome::Recorded(record) => {
                let transition = match verdict {
                    ReviewVerdict::Approve => Transition::Approved,
                    ReviewVerdict::Deny => Transition::Denied,
                };
                self.transition(
                    &record,
                    transition,
                    Some(reviewer),
                    request_id,
                    Some(comment),
                )
                .await?;
                Ok(*record)
            }
            ReviewOutcome::NotFound => Err(GatewayError::ApprovalNotFound {
                approval_id: id.to_owned(),
            }),
            ReviewOutcome::Closed(state) => Err(GatewayError::ApprovalClosed {
                approval_id: id.to_owned(),
                verb: match verdict {
                    ReviewVerdict::Approve => "approved",
                    ReviewVerdict::Deny => "denied",
                },
                state: state.as_str(),
            }),
            ReviewOutcome::AlreadyReviewed => Err(GatewayError::AlreadyReviewed {
                approval_id: id.to_owned(),
                principal: reviewer.to_owned(),
            }),
        }
    }

    /// Up to `limit` approvals after `after`, newest first, in `state` (any when `None`).
    pub(crate) async fn list(
        &self,
        state: Option<ApprovalState>,
        after: Option<&Cursor>,
        limit: u32,
    ) -> Result<Vec<ApprovalRecord>, GatewayError> {
        self.inner
            .store
            .list(state, after, limit, SystemTime::now())
            .await
            .map_err(unavailable)
    }

    /// Marks every approval whose time is up EXPIRED, recording each; returns how many.
    pub async fn expire_due(&self) -> Result<usize, GatewayError> {
        self.expire_due_at(SystemTime::now()).await
    }

    async fn expire_due_at(&self, now: SystemTime) -> Result<usize, GatewayError> {
        let expired = self
            .inner
            .store
            .expire_due(now)
            .await
            .map_err(unavailable)?;
        for record in &expired {
            tracing::info!(approval_id = %record.id, requester = %record.requester, "approval expired");
            self.transition(record, Transition::Expired, None, "", None)
                .await?;
        }
        Ok(expired.len())
    }

    /// Expires approvals every `interval`, and keeps the gauge of live approvals current (it
    /// counts every replica's, from the store).
    pub fn spawn_sweeper(&self, interval: Duration) -> tokio::task::JoinHandle<()> {
        let approvals = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(err) = approvals.expire_due().await {
                    tracing::warn!(error = %err, "approvals sweep failed; retrying at the next tick");
                }
                approvals.refresh_gauge().await;
            }
        })
    }

    /// Probes the store every `interval` (`SELECT 1`, within [`PROBE_TIMEOUT`]) and keeps its
    /// reachability for `/readyz`'s body. Health is not changed: calls that need no approval do
    /// not touch the store and are still served.
    pub fn spawn_probe(&self, interval: Duration) -> tokio::task::JoinHandle<()> {
        let approvals = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                approvals.probe().await;
            }
        })
    }

    /// One probe; logs when the store stops or starts answering.
    async fn probe(&self) {
        let failed = self.inner.store.ping(PROBE_TIMEOUT).await.err();
        let was = {
            let mut unreachable = self
                .inner
                .unreachable
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            std::mem::replace(&mut *unreachable, failed.clone())
        };
        match (was, failed) {
            (None, Some(reason)) => tracing::warn!(
                store = %self.inner.location,
                error = %reason,
                "approvals store unreachable: calls that need an approval, and Approvals calls, \
                 fail (UNAVAILABLE) until it answers; the rest are served"
            ),
            (Some(_), None) => {
                tracing::info!(store = %self.inner.location, "approvals store answers again");
            }
            _ => {}
        }
    }

    async fn refresh_gauge(&self) {
        match self.inner.store.count_live(SystemTime::now()).await {
            Ok((pending, approved)) => self.inner.metrics.set_live_approvals(pending, approved),
            Err(err) => tracing::warn!(error = %err, "cannot count live approvals"),
        }
    }

    /// One transition: counted, recorded in the audit trail (the caller's answer waits for
    /// it: a transition that cannot be recorded fails the call), and the gauge refreshed.
    async fn transition(
        &self,
        record: &ApprovalRecord,
        transition: Transition,
        by: Option<&str>,
        request_id: &str,
        comment: Option<&str>,
    ) -> Result<(), GatewayError> {
        self.inner.metrics.approval_transition(transition.as_str());
        let event = ApprovalEvent {
            approval_id: record.id.clone(),
            transition: transition.as_str(),
            state: record.state_at(SystemTime::now()).as_str(),
            by: by.map(str::to_owned),
            request_id: (!request_id.is_empty()).then(|| request_id.to_owned()),
            requester: record.requester.clone(),
            method: record.request.method,
            request: request_json(&record.request),
            digest: record.digest.clone(),
            required_approvals: record.required_approvals,
            approvers: record.approvers(),
            comment: comment.map(str::to_owned),
            expires_at: crate::audit::rfc3339(record.expires_at),
        };
        let appended = self.inner.audit.append(RecordBody::Approval(event)).await;
        let approvals = self.clone();
        tokio::spawn(async move { approvals.refresh_gauge().await });
        appended.map(|_| ()).map_err(|err| {
            tracing::error!(
                error = %err,
                approval_id = %record.id,
                transition = transition.as_str(),
                "audit: an approval transition could not be recorded"
            );
            GatewayError::AuditUnavailable(Box::new(err))
        })
    }
}

/// The request's fields as the audit record names them: one member per field (an
/// association's are the five the record has always had).
fn request_json(request: &SemanticRequest) -> serde_json::Value {
    request
        .fields
        .iter()
        .map(|field| {
            let value = match &field.value {
                FieldValue::Text(text) => serde_json::Value::from(text.as_str()),
                FieldValue::Flag(flag) => serde_json::Value::from(*flag),
            };
            (field.name.clone(), value)
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

impl crate::metrics::ScrapeSource for Approvals {
    fn refresh(&self, _: &Metrics) {}

    fn readiness_note(&self) -> Option<String> {
        let reason = self
            .inner
            .unreachable
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()?;
        Some(format!(
            "approvals store {}: unreachable ({reason}); calls that need an approval, and \
             Approvals calls, fail with UNAVAILABLE; the rest are served",
            self.inner.location
        ))
    }
}

impl crate::policy::ApprovalLookup for Approvals {
    fn live_for<'a>(
        &'a self,
        requester: &'a str,
        request: &'a SemanticRequest,
    ) -> crate::policy::LookupFuture<'a> {
        Box::pin(Approvals::live_for(self, requester, request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_is_sqlite_beside_the_audit_trail_unless_named() {
        let config = ApprovalsConfig::default();
        assert_eq!(config.ttl_secs, 3_600);
        assert_eq!(
            config.location(Path::new("/var/audit")).unwrap(),
            StoreLocation::Sqlite("/var/audit/approvals.db".into())
        );
        let named = ApprovalsConfig {
            store: Some("postgres://gw@db:5432/approvals".into()),
            ..ApprovalsConfig::default()
        };
        assert!(named.validate().is_ok());
        assert!(matches!(
            named.location(Path::new("/x")).unwrap(),
            StoreLocation::Postgres(_)
        ));
    }

    #[test]
    fn bad_values_name_the_key_and_never_show_a_password() {
        let bad = |config: ApprovalsConfig| config.validate().unwrap_err();
        let err = bad(ApprovalsConfig {
            store: Some("mysql://root:hunter2@db/x".into()),
            ..ApprovalsConfig::default()
        });
        assert!(err.starts_with("approvals.store"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let err = bad(ApprovalsConfig {
            ttl_secs: 0,
            ..ApprovalsConfig::default()
        });
        assert!(err.starts_with("approvals.ttl_secs = 0"), "{err}");
        let err = bad(ApprovalsConfig {
            sweep_interval_secs: 0,
            ..ApprovalsConfig::default()
        });
        assert!(err.starts_with("approvals.sweep_interval_secs"), "{err}");
        let location = StoreLocation::parse("postgres://gw:s3cret@db:5432/a").unwrap();
        assert_eq!(location.redacted(), "postgres://gw@db:5432/a");
        assert!(!format!("{location:?}").contains("s3cret"));
        let err = bad(ApprovalsConfig {
            max_pending_per_requester: 0,
            ..ApprovalsConfig::default()
        });
        assert!(
            err.starts_with("approvals.max_pending_per_requester = 0"),
            "{err}"
        );
        let err = bad(ApprovalsConfig {
            max_pending: 1_000_001,
            ..ApprovalsConfig::default()
        });
        assert!(err.starts_with("approvals.max_pending = 1000001"), "{err}");
        let unknown = toml::from_str::<ApprovalsConfig>("stor = \"sqlite:x\"").unwrap_err();
        assert!(unknown.to_string().contains("stor"), "{unknown}");
    }

    #[test]
    fn pending_lines_are_budgeted_per_minute_and_the_next_says_how_many_were_left_out() {
        let budget = LineBudget::new(2);
        let start = std::time::Instant::now();
        assert_eq!(budget.take_at(start), Some(0));
        assert_eq!(budget.take_at(start), Some(0));
        assert_eq!(budget.take_at(start), None);
        assert_eq!(budget.take_at(start + Duration::from_secs(59)), None);
        assert_eq!(budget.take_at(start + Duration::from_secs(60)), Some(2));
        assert_eq!(budget.take_at(start + Duration::from_secs(61)), Some(0));
    }

    #[test]
    fn a_record_past_its_time_reads_expired() {
        let now = SystemTime::now();
        let record = ApprovalRecord {
            id: "a".into(),
            requester: "r".into(),
            request: SemanticRequest {
                method: "AssociateConsumer",
                fields: Vec::new(),
            },
            digest: String::new(),
            required_approvals: 1,
            stored_state: ApprovalState::Approved,
            created_at: now - Duration::from_secs(10),
            expires_at: now - Duration::from_secs(1),
            created_by_request_id: String::new(),
            consumed_at: None,
            consumed_by_request_id: None,
            reviews: Vec::new(),
        };
        assert_eq!(record.state_at(now), ApprovalState::Expired);
        assert_eq!(
            record.state_at(now - Duration::from_secs(5)),
            ApprovalState::Approved
        );
        let consumed = ApprovalRecord {
            stored_state: ApprovalState::Consumed,
            ..record
        };
        assert_eq!(consumed.state_at(now), ApprovalState::Consumed);
    }
}
