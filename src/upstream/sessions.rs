//! Role sessions per caller: STS `AssumeRole` into a consumer account with the caller named in
//! `SourceIdentity` and session tags, cached per (account, role, external id, principal).
//!
//! aws-config's `AssumeRoleProvider` cannot set `SourceIdentity`, so STS is called directly and
//! its credentials handed to the Redshift call. A cached session is used until `CLOCK_SKEW`
//! before it expires. From `RENEW_BEFORE` before its expiry the first call that sees it starts
//! one renewal in the background and goes on with the current session, as do the calls after
//! it: no call waits for a renewal. A failed or throttled renewal keeps the current session and
//! is tried again by a call after a back-off (`RETRY_FIRST`, doubling up to `RETRY_MAX`); only
//! once the session is unusable does a call wait for STS, and then its failure is the call's.
//! One STS call per key at a time: the first call of a key, or the first after its session
//! ran out, calls STS while the others of that key wait for its answer. The cache holds at most
//! `capacity` keys, least recently used out; a refusal (`AccessDenied`) of a call that has no
//! usable session is remembered for at most 30 s so a storm of callers cannot hammer STS.
//! Sessions are never shared between principals: the principal is part of the key.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::Credentials;
use aws_sdk_sts::types::Tag;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::source_identity::{role_session_name, source_identity};
use crate::errors::{AwsService, FaultKind, GatewayError, UpstreamFault};
use crate::metrics::Metrics;

/// A session is renewed in the background from this long before it expires.
const RENEW_BEFORE: Duration = Duration::from_secs(5 * 60);
/// A session is not used this close to its expiry: the gateway's clock and AWS's may disagree
/// by this much. Beyond it Redshift answers `ExpiredToken`, and the call assumes afresh once.
const CLOCK_SKEW: Duration = Duration::from_secs(30);
/// The wait before the renewal after one that failed; it doubles with each further failure.
const RETRY_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between two renewals of one session.
const RETRY_MAX: Duration = Duration::from_secs(30);
/// How long a refused AssumeRole is answered from the cache.
const DENIAL_TTL: Duration = Duration::from_secs(30);

/// A role the gateway assumes to act in one consumer account.
#[derive(Clone)]
pub struct RoleTarget {
    /// The role's ARN.
    pub role_arn: String,
    /// The external id the role's trust policy requires; a secret.
    pub external_id: Option<String>,
    /// The session's lifetime.
    pub session_duration: Duration,
    /// The external id's SHA-256, made once: the session cache keys on it, not on the secret.
    external_id_digest: [u8; 32],
}

impl RoleTarget {
    /// A role, assumed with `external_id` for sessions of `session_duration`.
    pub fn new(role_arn: String, external_id: Option<String>, session_duration: Duration) -> Self {
        let external_id_digest = Sha256::digest(external_id.as_deref().unwrap_or("")).into();
        RoleTarget {
            role_arn,
            external_id,
            session_duration,
            external_id_digest,
        }
    }
}

impl std::fmt::Debug for RoleTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoleTarget")
            .field("role_arn", &self.role_arn)
            .field(
                "external_id",
                &self.external_id.as_ref().map(|_| "<redacted>"),
            )
            .field("session_duration", &self.session_duration)
            .finish()
    }
}

/// A session of a role for one caller.
#[derive(Clone)]
pub(crate) struct Session {
    pub(crate) credentials: Credentials,
    pub(crate) expires: SystemTime,
    pub(crate) assumed_role_arn: String,
    pub(crate) source_identity: String,
    pub(crate) sts_request_id: Option<String>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("assumed_role_arn", &self.assumed_role_arn)
            .field("source_identity", &self.source_identity)
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

/// A session handed to one call, and whether it came from the cache.
#[derive(Clone, Debug)]
pub(crate) struct Lease {
    pub(crate) session: Session,
    pub(crate) cached: bool,
}

/// Why no session could be had: the fault and STS's request id.
#[derive(Clone, Debug)]
pub(crate) struct AssumeFailure {
    pub(crate) fault: UpstreamFault,
    pub(crate) sts_request_id: Option<String>,
}

impl AssumeFailure {
    pub(crate) fn into_error(self) -> GatewayError {
        GatewayError::Upstream {
            fault: self.fault,
            aws_request_id: self.sts_request_id,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    account: String,
    role_arn: String,
    /// A digest, so the cache's keys hold no secret.
    external_id: [u8; 32],
    principal: String,
}

impl Key {
    fn new(account: &str, role: &RoleTarget, principal: &str) -> Self {
        Key {
            account: account.to_owned(),
            role_arn: role.role_arn.clone(),
            external_id: role.external_id_digest,
            principal: principal.to_owned(),
        }
    }
}

/// Both clocks at one moment: expiries are STS's wall-clock times, waits are measured on the
/// monotonic clock so that a jump of the wall clock neither ends nor stretches them.
#[derive(Clone, Copy, Debug)]
struct Now {
    wall: SystemTime,
    instant: Instant,
}

impl Now {
    fn get() -> Self {
        Now {
            wall: SystemTime::now(),
            instant: Instant::now(),
        }
    }
}

/// What a call does with a cached session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plan {
    Use,
    /// Use it, and start its renewal: this call is the first to find it due.
    UseAndRenew,
    /// It is unusable: assume a new one before the call.
    MustAssume,
}

/// The decision for a session expiring at `expires`: usable until `CLOCK_SKEW` before then,
/// renewed from `RENEW_BEFORE` before then by one renewal at a time, none before `not_before`
/// (the back-off). The back-off never delays a call once the session is unusable.
fn plan(now: Now, expires: SystemTime, renewing: bool, not_before: Instant) -> Plan {
    let left = expires.duration_since(now.wall).unwrap_or(Duration::ZERO);
    if left <= CLOCK_SKEW {
        Plan::MustAssume
    } else if left > RENEW_BEFORE || renewing || now.instant < not_before {
        Plan::Use
    } else {
        Plan::UseAndRenew
    }
}

fn within_renewal_window(now: Now, expires: SystemTime) -> bool {
    expires.duration_since(now.wall).unwrap_or(Duration::ZERO) <= RENEW_BEFORE
}

/// The wait before the next renewal after `setbacks` in a row that left the session in its
/// window; none after none.
fn retry_after(setbacks: u32) -> Duration {
    match setbacks {
        0 => Duration::ZERO,
        n => RETRY_FIRST
            .saturating_mul(1 << (n - 1).min(31))
            .min(RETRY_MAX),
    }
}

#[derive(Debug)]
struct Ready {
    session: Session,
    /// A renewal task is under way. One that never reports back (the runtime shutting down)
    /// costs only the renewal: once the session is unusable a call assumes afresh.
    renewing: bool,
    /// Renewals in a row that left the session in its renewal window: failed ones, and ones
    /// that brought a session as near its end (a skewed clock): the back-off grows with them.
    setbacks: u32,
    /// No renewal starts before this.
    not_before: Instant,
}

#[derive(Debug, Default)]
enum SlotState {
    #[default]
    Empty,
    Ready(Ready),
    Denied {
        until: Instant,
        failure: AssumeFailure,
    },
}

/// What a call finds in its slot.
#[derive(Debug)]
enum Lookup {
    Hit { session: Session, renew: bool },
    Refused(AssumeFailure),
    Miss,
}

impl SlotState {
    /// The session for a call at `now`, marking its renewal as started when this call is the
    /// one to start it.
    fn lookup(&mut self, now: Now) -> Lookup {
        match self {
            SlotState::Ready(ready) => {
                match plan(now, ready.session.expires, ready.renewing, ready.not_before) {
                    Plan::Use => Lookup::Hit {
                        session: ready.session.clone(),
                        renew: false,
                    },
                    Plan::UseAndRenew => {
                        ready.renewing = true;
                        Lookup::Hit {
                            session: ready.session.clone(),
                            renew: true,
                        }
                    }
                    Plan::MustAssume => Lookup::Miss,
                }
            }
            SlotState::Denied { until, failure } if now.instant < *until => {
                Lookup::Refused(failure.clone())
            }
            SlotState::Denied { .. } | SlotState::Empty => Lookup::Miss,
        }
    }

    /// Records what a call without a usable session got from STS.
    fn assumed(&mut self, result: &Result<Session, AssumeFailure>, now: Now) {
        *self = match result {
            Ok(session) => SlotState::Ready(Ready {
                session: session.clone(),
                renewing: false,
                setbacks: 0,
                not_before: now.instant,
            }),
            Err(failure) if failure.fault.kind == FaultKind::AssumeRoleDenied => {
                SlotState::Denied {
                    until: now.instant + DENIAL_TTL,
                    failure: failure.clone(),
                }
            }
            // The old session, if any, was unusable already.
            Err(_) => SlotState::Empty,
        };
    }

    /// Whether the renewal a call started is still wanted: a call whose session ran out may
    /// have assumed a new one (or failed to) before the renewal task got its turn.
    fn renewal_wanted(&self) -> bool {
        matches!(self, SlotState::Ready(ready) if ready.renewing)
    }

    /// Records a renewal's result: a new session replaces the old; a failure keeps the old one
    /// and backs off.
    fn renewed(&mut self, result: Result<Session, AssumeFailure>, now: Now) {
        let setbacks = match self {
            SlotState::Ready(ready) => ready.setbacks,
            SlotState::Empty | SlotState::Denied { .. } => 0,
        };
        match result {
            Ok(session) => {
                let setbacks = if within_renewal_window(now, session.expires) {
                    setbacks.saturating_add(1)
                } else {
                    0
                };
                *self = SlotState::Ready(Ready {
                    session,
                    renewing: false,
                    setbacks,
                    not_before: now.instant + retry_after(setbacks),
                });
            }
            Err(_) => {
                // Emptied meanwhile (Redshift said the session expired): nothing to keep.
                if let SlotState::Ready(ready) = self {
                    ready.renewing = false;
                    ready.setbacks = setbacks.saturating_add(1);
                    ready.not_before = now.instant + retry_after(ready.setbacks);
                }
            }
        }
    }
}

#[derive(Debug, Default)]
struct Slot {
    /// Every call of the key reads it; held for a few statements, never across an await.
    state: Mutex<SlotState>,
    /// Held by whoever calls STS for the key (its renewal, or a call with no usable session),
    /// so there is one AssumeRole per key at a time; a call with no usable session waits here.
    assuming: Arc<tokio::sync::Mutex<()>>,
    last_used: AtomicU64,
}

impl Slot {
    fn state(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What calls STS; shared with the renewal tasks.
#[derive(Debug)]
struct RoleAssumer {
    client: aws_sdk_sts::Client,
    /// The gateway's instance name, tagged on every session.
    instance: String,
    /// The `RetryInfo` delay suggested when STS throttles.
    throttle_retry_after: Duration,
    metrics: Arc<Metrics>,
}

/// The session cache, shared by every call.
#[derive(Debug)]
pub(crate) struct SessionCache {
    sts: Arc<RoleAssumer>,
    slots: Mutex<HashMap<Key, Arc<Slot>>>,
    clock: AtomicU64,
    capacity: usize,
}

impl SessionCache {
    pub(crate) fn new(
        sts: aws_sdk_sts::Client,
        capacity: usize,
        instance: String,
        throttle_retry_after: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        SessionCache {
            sts: Arc::new(RoleAssumer {
                client: sts,
                instance,
                throttle_retry_after,
                metrics,
            }),
            slots: Mutex::new(HashMap::new()),
            clock: AtomicU64::new(0),
            capacity: capacity.max(1),
        }
    }

    fn slot(&self, key: &Key) -> Arc<Slot> {
        let tick = self.clock.fetch_add(1, Ordering::Relaxed);
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = slots.get(key) {
            slot.last_used.store(tick, Ordering::Relaxed);
            return slot.clone();
        }
        if slots.len() >= self.capacity {
            // A miss already costs an STS call; a scan of the keys is small beside it.
            let oldest = slots
                .iter()
                .min_by_key(|(_, slot)| slot.last_used.load(Ordering::Relaxed))
                .map(|(key, _)| key.clone());
            if let Some(oldest) = oldest {
                slots.remove(&oldest);
            }
        }
        let slot = Arc::new(Slot::default());
        slot.last_used.store(tick, Ordering::Relaxed);
        slots.insert(key.clone(), slot.clone());
        self.sts.metrics.sts_sessions_cached.set(slots.len() as i64);
        slot
    }

    /// A session of `role` for `principal` in `account`: cached, or assumed now when there is
    /// no usable one. Never waits for a renewal. `None` when the caller went away (`gone`)
    /// first: it stops waiting at once, and no STS call is started for it.
    pub(crate) async fn session(
        &self,
        account: &str,
        role: &RoleTarget,
        principal: &str,
        gone: &CancellationToken,
    ) -> Option<Result<Lease, AssumeFailure>> {
        let key = Key::new(account, role, principal);
        let span = tracing::info_span!(
            "sts",
            otel.name = "sts.AssumeRole",
            otel.kind = "client",
            rpc.system = "aws-api",
            rpc.service = "STS",
            rpc.method = "AssumeRole",
            cache.hit = tracing::field::Empty,
            aws.request_id = tracing::field::Empty,
            aws.error_code = tracing::field::Empty,
        );
        let slot = self.slot(&key);
        async {
            let found = slot.state().lookup(Now::get());
            if let Some(answer) = self.answer(found, &slot, role, principal) {
                return Some(answer);
            }
            // One STS call per key at a time: other calls of this key without a usable session
            // wait here for the one under way, then find the session it stored. A caller who
            // leaves stops waiting.
            let turn = tokio::select! {
                turn = slot.assuming.clone().lock_owned() => turn,
                () = gone.cancelled() => return None,
            };
            let found = slot.state().lookup(Now::get());
            if let Some(answer) = self.answer(found, &slot, role, principal) {
                return Some(answer);
            }
            if gone.is_cancelled() {
                return None;
            }
            tracing::Span::current().record("cache.hit", false);
            // STS is called in a task of its own, which holds the key's turn: a caller who
            // leaves stops waiting for it, and the session it brings is cached for the next.
            let assume = {
                let (sts, slot) = (self.sts.clone(), slot.clone());
                let (role, principal) = (role.clone(), principal.to_owned());
                tokio::spawn(
                    async move {
                        let _turn = turn;
                        let result = sts.assume(&role, &principal, None).await;
                        slot.state().assumed(&result, Now::get());
                        result
                    }
                    .in_current_span(),
                )
            };
            let result = tokio::select! {
                joined = assume => joined.unwrap_or_else(|err| Err(AssumeFailure {
                    fault: UpstreamFault {
                        message: Some(format!("the AssumeRole task ended: {err}")),
                        ..UpstreamFault::of_sts(FaultKind::Unknown)
                    },
                    sts_request_id: None,
                })),
                () = gone.cancelled() => return None,
            };
            Some(result.map(|session| Lease {
                session,
                cached: false,
            }))
        }
        .instrument(span)
        .await
    }

    /// The answer to a call from what it found in the slot, starting the session's renewal
    /// when the call is the one to; `None` on a miss.
    fn answer(
        &self,
        found: Lookup,
        slot: &Arc<Slot>,
        role: &RoleTarget,
        principal: &str,
    ) -> Option<Result<Lease, AssumeFailure>> {
        let answer = match found {
            Lookup::Hit { session, renew } => {
                if renew {
                    self.renew(slot.clone(), role.clone(), principal.to_owned());
                }
                Ok(Lease {
                    session,
                    cached: true,
                })
            }
            Lookup::Refused(failure) => Err(failure),
            Lookup::Miss => return None,
        };
        tracing::Span::current().record("cache.hit", true);
        Some(answer)
    }

    /// Renews the slot's session in a task of its own, which the calls never wait for.
    ///
    /// A plain `tokio::spawn`, not tracked: there is at most one per key, it ends within the
    /// STS client's operation timeout, and its result matters only to later calls, so at
    /// shutdown there is nothing to wait for; the runtime drops it.
    fn renew(&self, slot: Arc<Slot>, role: RoleTarget, principal: String) {
        let sts = self.sts.clone();
        // A root span linked to the call's: the renewal outlives the call that started it.
        let span = tracing::info_span!(
            parent: None,
            "sts",
            otel.name = "sts.AssumeRole",
            otel.kind = "client",
            rpc.system = "aws-api",
            rpc.service = "STS",
            rpc.method = "AssumeRole",
            cache.hit = false,
            renewal = true,
            aws.request_id = tracing::field::Empty,
            aws.error_code = tracing::field::Empty,
        );
        span.follows_from(tracing::Span::current());
        let task = async move {
            let _turn = slot.assuming.lock().await;
            if !slot.state().renewal_wanted() {
                return;
            }
            let result = sts.assume(&role, &principal, None).await;
            let outcome = match &result {
                Ok(_) => "ok",
                Err(failure) => match failure.fault.kind {
                    // Logged at error level by `assume`.
                    FaultKind::AssumeRoleDenied => "denied",
                    kind => {
                        tracing::warn!(
                            role_arn = %role.role_arn,
                            %principal,
                            fault = ?kind,
                            aws_error_code = ?failure.fault.aws_code,
                            "renewing a role session failed: the current session is used until it expires, and renewal is tried again after a back-off"
                        );
                        if kind == FaultKind::Throttled {
                            "throttled"
                        } else {
                            "error"
                        }
                    }
                },
            };
            slot.state().renewed(result, Now::get());
            // Counted once the slot holds the result, so a scrape that sees it sees the slot.
            sts.metrics.sts_session_renewal(outcome);
        };
        tokio::spawn(task.instrument(span));
    }

    /// A session of `role` for `principal` for one approved call: assumed now, never cached, and
    /// tagged `dsgw:approval` with the approval's id, so that AWS's record of the session (the
    /// AssumeRole event, which the Redshift call's access key leads to) names the approval.
    /// `None` when the caller went away (`gone`) first: its STS call is not started, or
    /// abandoned (nothing is cached for an approved call).
    pub(crate) async fn for_approval(
        &self,
        role: &RoleTarget,
        principal: &str,
        approval_id: &str,
        gone: &CancellationToken,
    ) -> Option<Result<Lease, AssumeFailure>> {
        if gone.is_cancelled() {
            return None;
        }
        let span = tracing::info_span!(
            "sts",
            otel.name = "sts.AssumeRole",
            otel.kind = "client",
            rpc.system = "aws-api",
            rpc.service = "STS",
            rpc.method = "AssumeRole",
            cache.hit = false,
            approval_id = %approval_id,
            aws.request_id = tracing::field::Empty,
            aws.error_code = tracing::field::Empty,
        );
        let assume = self
            .sts
            .assume(role, principal, Some(approval_id))
            .instrument(span);
        tokio::select! {
            result = assume => Some(result.map(|session| Lease {
                session,
                cached: false,
            })),
            () = gone.cancelled() => None,
        }
    }

    /// Forgets the session of `principal` in `account` (Redshift said it expired).
    pub(crate) async fn forget(&self, account: &str, role: &RoleTarget, principal: &str) {
        let key = Key::new(account, role, principal);
        let slot = {
            let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.get(&key).cloned()
        };
        if let Some(slot) = slot {
            *slot.state() = SlotState::Empty;
        }
    }
}

impl RoleAssumer {
    async fn assume(
        &self,
        role: &RoleTarget,
        principal: &str,
        approval_id: Option<&str>,
    ) -> Result<Session, AssumeFailure> {
        let source_identity = source_identity(principal);
        let tag = |key: &str, value: &str| {
            Tag::builder()
                .key(key)
                .value(value)
                .build()
                .map_err(|err| AssumeFailure {
                    fault: UpstreamFault {
                        message: Some(err.to_string()),
                        ..UpstreamFault::of_sts(FaultKind::Unknown)
                    },
                    sts_request_id: None,
                })
        };
        let duration = i32::try_from(role.session_duration.as_secs()).unwrap_or(i32::MAX);
        let mut request = self
            .client
            .assume_role()
            .role_arn(&role.role_arn)
            .role_session_name(role_session_name(principal))
            .set_external_id(role.external_id.clone())
            .source_identity(&source_identity)
            .duration_seconds(duration)
            // Not transitive: the tags name this session's caller, not a chain's.
            .tags(tag("dsgw:principal", &principal_tag_value(principal))?)
            .tags(tag("dsgw:gateway", &principal_tag_value(&self.instance))?);
        if let Some(approval_id) = approval_id {
            request = request.tags(tag("dsgw:approval", approval_id)?);
        }
        let result = request.send().await;
        let request_id = {
            use aws_sdk_sts::operation::RequestId;
            match &result {
                Ok(out) => out.request_id().map(str::to_owned),
                Err(err) => err.request_id().map(str::to_owned),
            }
        };
        if let Some(id) = &request_id {
            tracing::Span::current().record("aws.request_id", id.as_str());
        }
        let out = match result {
            Ok(out) => out,
            Err(err) => {
                let fault =
                    match super::classify(err, request_id.clone(), self.throttle_retry_after) {
                        GatewayError::Upstream { fault, .. } => fault,
                        // A dispatch failure the SDK blames on its caller: a bug in this code.
                        other => UpstreamFault {
                            message: Some(other.to_string()),
                            ..UpstreamFault::of_kind(FaultKind::Unknown)
                        },
                    };
                let region = self.client.config().region().map(|r| r.as_ref().to_owned());
                let fault = assume_role_fault(fault, region);
                if let Some(code) = &fault.aws_code {
                    tracing::Span::current().record("aws.error_code", code.as_str());
                }
                let result = match fault.kind {
                    FaultKind::AssumeRoleDenied => "denied",
                    FaultKind::Throttled => "throttled",
                    _ => "error",
                };
                self.metrics.sts_assume_role(result);
                if fault.kind == FaultKind::AssumeRoleDenied {
                    // The external id is never logged; the role and the caller are.
                    tracing::error!(
                        role_arn = %role.role_arn,
                        %principal,
                        aws_error_code = ?fault.aws_code,
                        "STS refused AssumeRole: check the role's trust policy (external id, sts:SetSourceIdentity, sts:TagSession)"
                    );
                }
                return Err(AssumeFailure {
                    fault,
                    sts_request_id: request_id,
                });
            }
        };
        self.metrics.sts_assume_role("ok");
        let unknown = || AssumeFailure {
            fault: UpstreamFault {
                message: Some("STS answered without credentials".into()),
                ..UpstreamFault::of_sts(FaultKind::Unknown)
            },
            sts_request_id: request_id.clone(),
        };
        let credentials = out.credentials().ok_or_else(unknown)?;
        let expires = SystemTime::try_from(*credentials.expiration()).map_err(|_| unknown())?;
        Ok(Session {
            credentials: Credentials::new(
                credentials.access_key_id(),
                credentials.secret_access_key(),
                Some(credentials.session_token().to_owned()),
                Some(expires),
                "datashare-gateway-assume-role",
            ),
            expires,
            assumed_role_arn: out
                .assumed_role_user()
                .map(|u| u.arn().to_owned())
                .unwrap_or_default(),
            source_identity: out.source_identity().map_or(source_identity, str::to_owned),
            sts_request_id: request_id,
        })
    }
}

/// An AssumeRole fault as STS's: its refusals are the trust policy's (or the external id's),
/// not the gateway's credentials being wrong, and a region where STS is off is named.
fn assume_role_fault(fault: UpstreamFault, region: Option<String>) -> UpstreamFault {
    let fault = UpstreamFault {
        service: AwsService::Sts,
        ..fault
    };
    match fault.aws_code.as_deref() {
        Some("AccessDenied" | "AccessDeniedException") => UpstreamFault {
            kind: FaultKind::AssumeRoleDenied,
            ..fault
        },
        Some("RegionDisabledException") => UpstreamFault {
            kind: FaultKind::RegionDisabled,
            message: region,
            ..fault
        },
        _ => fault,
    }
}

/// A session tag value: STS allows `[\p{L}\p{Z}\p{N}_.:/=+\-@]*`, at most 256 characters.
fn principal_tag_value(value: &str) -> String {
    value
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == ' ' || "_.:/=+-@".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(256)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> Now {
        // Two clocks that tick together from an arbitrary start.
        static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        let start = *START.get_or_init(Instant::now);
        Now {
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + secs),
            instant: start + Duration::from_secs(secs),
        }
    }

    fn session_until(secs: u64) -> Session {
        let expires = at(secs).wall;
        Session {
            credentials: Credentials::new("ASIATEST", "secret", None, Some(expires), "test"),
            expires,
            assumed_role_arn: String::new(),
            source_identity: String::new(),
            sts_request_id: None,
        }
    }

    fn failure(kind: FaultKind) -> AssumeFailure {
        AssumeFailure {
            fault: UpstreamFault::of_kind(kind),
            sts_request_id: None,
        }
    }

    fn ready_until(secs: u64) -> SlotState {
        let mut state = SlotState::Empty;
        state.assumed(&Ok(session_until(secs)), at(0));
        state
    }

    fn expires(found: &Lookup) -> Option<SystemTime> {
        match found {
            Lookup::Hit { session, .. } => Some(session.expires),
            Lookup::Refused(_) | Lookup::Miss => None,
        }
    }

    #[test]
    fn a_session_is_used_until_its_window_then_renewed_then_unusable_within_the_skew() {
        let fresh = at(0).instant;
        // 15 minutes left, then 5 (the window opens), then 31 s and 30 s (the skew).
        assert_eq!(plan(at(0), at(900).wall, false, fresh), Plan::Use);
        assert_eq!(plan(at(599), at(900).wall, false, fresh), Plan::Use);
        assert_eq!(plan(at(600), at(900).wall, false, fresh), Plan::UseAndRenew);
        assert_eq!(plan(at(869), at(900).wall, false, fresh), Plan::UseAndRenew);
        assert_eq!(plan(at(870), at(900).wall, false, fresh), Plan::MustAssume);
        assert_eq!(plan(at(1000), at(900).wall, false, fresh), Plan::MustAssume);
    }

    #[test]
    fn a_running_renewal_or_its_back_off_defers_the_next_but_never_past_the_skew() {
        assert_eq!(plan(at(700), at(900).wall, true, at(0).instant), Plan::Use);
        assert_eq!(
            plan(at(700), at(900).wall, false, at(701).instant),
            Plan::Use
        );
        assert_eq!(
            plan(at(701), at(900).wall, false, at(701).instant),
            Plan::UseAndRenew
        );
        assert_eq!(
            plan(at(870), at(900).wall, true, at(2000).instant),
            Plan::MustAssume
        );
    }

    #[test]
    fn the_back_off_doubles_from_one_second_to_thirty() {
        let waits: Vec<u64> = (0..=8).map(|n| retry_after(n).as_secs()).collect();
        assert_eq!(waits, [0, 1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(retry_after(u32::MAX), RETRY_MAX);
    }

    #[test]
    fn one_call_starts_the_renewal_and_every_call_keeps_the_session() {
        let mut state = ready_until(900);
        assert!(matches!(
            state.lookup(at(10)),
            Lookup::Hit { renew: false, .. }
        ));
        assert!(matches!(
            state.lookup(at(700)),
            Lookup::Hit { renew: true, .. }
        ));
        for _ in 0..3 {
            assert!(matches!(
                state.lookup(at(701)),
                Lookup::Hit { renew: false, .. }
            ));
        }
        assert!(state.renewal_wanted());
        state.renewed(Ok(session_until(2000)), at(702));
        assert!(!state.renewal_wanted());
        let found = state.lookup(at(703));
        assert!(matches!(found, Lookup::Hit { renew: false, .. }));
        assert_eq!(expires(&found), Some(at(2000).wall), "the renewed session");
    }

    #[test]
    fn a_failed_renewal_keeps_the_session_and_backs_off_until_it_runs_out() {
        let mut state = ready_until(900);
        assert!(matches!(
            state.lookup(at(700)),
            Lookup::Hit { renew: true, .. }
        ));
        state.renewed(Err(failure(FaultKind::Throttled)), at(700));
        // Kept, and not renewed again for a second.
        let found = state.lookup(at(700));
        assert_eq!(expires(&found), Some(at(900).wall));
        assert!(matches!(found, Lookup::Hit { renew: false, .. }));
        assert!(matches!(
            state.lookup(at(701)),
            Lookup::Hit { renew: true, .. }
        ));
        // Then two seconds, then four.
        state.renewed(Err(failure(FaultKind::ServiceFailure)), at(701));
        assert!(matches!(
            state.lookup(at(702)),
            Lookup::Hit { renew: false, .. }
        ));
        assert!(matches!(
            state.lookup(at(703)),
            Lookup::Hit { renew: true, .. }
        ));
        // A denied renewal keeps the session too.
        state.renewed(Err(failure(FaultKind::AssumeRoleDenied)), at(703));
        assert!(matches!(
            state.lookup(at(706)),
            Lookup::Hit { renew: false, .. }
        ));
        assert!(matches!(
            state.lookup(at(707)),
            Lookup::Hit { renew: true, .. }
        ));
        // Unusable within the skew of its expiry, though a renewal is under way.
        assert!(matches!(state.lookup(at(870)), Lookup::Miss));
    }

    #[test]
    fn a_renewal_that_brings_a_session_as_near_its_end_backs_off_too() {
        // The gateway's clock ahead of STS's: every session arrives inside its window.
        let mut state = ready_until(200);
        assert!(matches!(
            state.lookup(at(1)),
            Lookup::Hit { renew: true, .. }
        ));
        state.renewed(Ok(session_until(201)), at(1));
        assert!(matches!(
            state.lookup(at(1)),
            Lookup::Hit { renew: false, .. }
        ));
        assert!(matches!(
            state.lookup(at(2)),
            Lookup::Hit { renew: true, .. }
        ));
        state.renewed(Ok(session_until(202)), at(2));
        assert!(matches!(
            state.lookup(at(3)),
            Lookup::Hit { renew: false, .. }
        ));
        assert!(matches!(
            state.lookup(at(4)),
            Lookup::Hit { renew: true, .. }
        ));
        // A good session ends the back-off.
        state.renewed(Ok(session_until(2000)), at(4));
        let SlotState::Ready(ready) = &state else {
            panic!("{state:?}");
        };
        assert_eq!(ready.setbacks, 0);
    }

    #[test]
    fn without_a_usable_session_a_refusal_is_remembered_and_other_failures_are_not() {
        let mut state = SlotState::Empty;
        assert!(matches!(state.lookup(at(0)), Lookup::Miss));
        state.assumed(&Err(failure(FaultKind::AssumeRoleDenied)), at(0));
        assert!(matches!(state.lookup(at(29)), Lookup::Refused(_)));
        assert!(matches!(state.lookup(at(30)), Lookup::Miss));
        state.assumed(&Err(failure(FaultKind::Throttled)), at(30));
        assert!(matches!(state, SlotState::Empty));
    }

    #[test]
    fn a_forgotten_session_is_not_brought_back_by_a_failed_renewal() {
        let mut state = ready_until(900);
        assert!(matches!(
            state.lookup(at(700)),
            Lookup::Hit { renew: true, .. }
        ));
        // `forget`: Redshift said the session expired.
        state = SlotState::Empty;
        assert!(!state.renewal_wanted());
        state.renewed(Err(failure(FaultKind::Throttled)), at(701));
        assert!(matches!(state.lookup(at(701)), Lookup::Miss));
        // A renewal that succeeds afterwards is a good session all the same.
        state.renewed(Ok(session_until(2000)), at(702));
        assert!(matches!(
            state.lookup(at(702)),
            Lookup::Hit { renew: false, .. }
        ));
    }

    #[test]
    fn tag_values_keep_a_spiffe_id_whole() {
        let id = "spiffe://example.internal/ns/data/sa/reporting";
        assert_eq!(principal_tag_value(id), id);
        assert_eq!(principal_tag_value("a\"b"), "a_b");
        assert_eq!(principal_tag_value(&"x".repeat(300)).len(), 256);
    }

    #[test]
    fn access_denied_from_sts_is_a_refused_role() {
        let denied = UpstreamFault {
            aws_code: Some("AccessDenied".into()),
            ..UpstreamFault::of_kind(FaultKind::CredentialsRejected)
        };
        assert_eq!(
            assume_role_fault(denied, None).kind,
            FaultKind::AssumeRoleDenied
        );
        let bad_signature = UpstreamFault {
            aws_code: Some("SignatureDoesNotMatch".into()),
            ..UpstreamFault::of_kind(FaultKind::CredentialsRejected)
        };
        let fault = assume_role_fault(bad_signature, None);
        assert_eq!(fault.kind, FaultKind::CredentialsRejected);
        assert_eq!(fault.service, AwsService::Sts, "STS's, not Redshift's");
    }

    #[test]
    fn a_region_where_sts_is_off_is_named() {
        let disabled = UpstreamFault {
            aws_code: Some("RegionDisabledException".into()),
            http_status: Some(403),
            ..UpstreamFault::of_kind(FaultKind::CredentialsRejected)
        };
        let fault = assume_role_fault(disabled, Some("ap-east-1".into()));
        assert_eq!(fault.kind, FaultKind::RegionDisabled);
        assert_eq!(fault.message.as_deref(), Some("ap-east-1"));
    }
}
