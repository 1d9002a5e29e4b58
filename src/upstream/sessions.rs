//! Role sessions per caller: STS `AssumeRole` into a consumer account with the caller named in
//! `SourceIdentity` and session tags, cached per (account, role, external id, principal).
//!
//! aws-config's `AssumeRoleProvider` cannot set `SourceIdentity`, so STS is called directly and
//! its credentials handed to the Redshift call. A session is reused until five minutes before it
//! expires; concurrent misses for one key make one STS call (the key's slot is locked while STS
//! answers); the cache holds at most `capacity` keys, least recently used out; a refusal
//! (`AccessDenied`) is remembered for at most 30 s so a storm of callers cannot hammer STS.
//! Sessions are never shared between principals: the principal is part of the key.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::Credentials;
use aws_sdk_sts::types::Tag;
use sha2::{Digest, Sha256};
use tracing::Instrument;

use super::source_identity::{role_session_name, source_identity};
use crate::errors::{FaultKind, GatewayError, UpstreamFault};
use crate::metrics::Metrics;

/// Sessions are renewed this long before they expire.
const RENEW_BEFORE: Duration = Duration::from_secs(5 * 60);
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

#[derive(Debug, Default)]
enum SlotState {
    #[default]
    Empty,
    Ready(Session),
    Denied {
        until: Instant,
        failure: AssumeFailure,
    },
}

#[derive(Debug, Default)]
struct Slot {
    state: tokio::sync::Mutex<SlotState>,
    last_used: AtomicU64,
}

/// The session cache, shared by every call.
#[derive(Debug)]
pub(crate) struct SessionCache {
    sts: aws_sdk_sts::Client,
    slots: Mutex<HashMap<Key, Arc<Slot>>>,
    clock: AtomicU64,
    capacity: usize,
    /// The gateway's instance name, tagged on every session.
    instance: String,
    /// The `RetryInfo` delay suggested when STS throttles.
    throttle_retry_after: Duration,
    metrics: Arc<Metrics>,
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
            sts,
            slots: Mutex::new(HashMap::new()),
            clock: AtomicU64::new(0),
            capacity: capacity.max(1),
            instance,
            throttle_retry_after,
            metrics,
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
        self.metrics.sts_sessions_cached.set(slots.len() as i64);
        slot
    }

    /// A session of `role` for `principal` in `account`: cached, or assumed now.
    pub(crate) async fn session(
        &self,
        account: &str,
        role: &RoleTarget,
        principal: &str,
    ) -> Result<Lease, AssumeFailure> {
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
            // Held while STS answers: concurrent misses for this key wait here, then hit.
            let mut state = slot.state.lock().await;
            match &*state {
                SlotState::Ready(session) if session.expires > SystemTime::now() + RENEW_BEFORE => {
                    tracing::Span::current().record("cache.hit", true);
                    return Ok(Lease {
                        session: session.clone(),
                        cached: true,
                    });
                }
                SlotState::Denied { until, failure } if Instant::now() < *until => {
                    tracing::Span::current().record("cache.hit", true);
                    return Err(failure.clone());
                }
                _ => {}
            }
            tracing::Span::current().record("cache.hit", false);
            match self.assume(role, principal, None).await {
                Ok(session) => {
                    *state = SlotState::Ready(session.clone());
                    Ok(Lease {
                        session,
                        cached: false,
                    })
                }
                Err(failure) => {
                    *state = if failure.fault.kind == FaultKind::AssumeRoleDenied {
                        SlotState::Denied {
                            until: Instant::now() + DENIAL_TTL,
                            failure: failure.clone(),
                        }
                    } else {
                        SlotState::Empty
                    };
                    Err(failure)
                }
            }
        }
        .instrument(span)
        .await
    }

    /// A session of `role` for `principal` for one approved call: assumed now, never cached, and
    /// tagged `dsgw:approval` with the approval's id, so that AWS's record of the session (the
    /// AssumeRole event, which the Redshift call's access key leads to) names the approval.
    pub(crate) async fn for_approval(
        &self,
        role: &RoleTarget,
        principal: &str,
        approval_id: &str,
    ) -> Result<Lease, AssumeFailure> {
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
        self.assume(role, principal, Some(approval_id))
            .instrument(span)
            .await
            .map(|session| Lease {
                session,
                cached: false,
            })
    }

    /// Forgets the session of `principal` in `account` (Redshift said it expired).
    pub(crate) async fn forget(&self, account: &str, role: &RoleTarget, principal: &str) {
        let key = Key::new(account, role, principal);
        let slot = {
            let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.get(&key).cloned()
        };
        if let Some(slot) = slot {
            *slot.state.lock().await = SlotState::Empty;
        }
    }

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
                        ..UpstreamFault::of_kind(FaultKind::Unknown)
                    },
                    sts_request_id: None,
                })
        };
        let duration = i32::try_from(role.session_duration.as_secs()).unwrap_or(i32::MAX);
        let mut request = self
            .sts
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
                let fault = assume_role_fault(fault);
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
                ..UpstreamFault::of_kind(FaultKind::Unknown)
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

/// STS's refusals of AssumeRole are the trust policy's (or the external id's), not the
/// gateway's credentials being wrong.
fn assume_role_fault(fault: UpstreamFault) -> UpstreamFault {
    match fault.aws_code.as_deref() {
        Some("AccessDenied" | "AccessDeniedException") => UpstreamFault {
            kind: FaultKind::AssumeRoleDenied,
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
        assert_eq!(assume_role_fault(denied).kind, FaultKind::AssumeRoleDenied);
        let bad_signature = UpstreamFault {
            aws_code: Some("SignatureDoesNotMatch".into()),
            ..UpstreamFault::of_kind(FaultKind::CredentialsRejected)
        };
        assert_eq!(
            assume_role_fault(bad_signature).kind,
            FaultKind::CredentialsRejected
        );
    }
}
