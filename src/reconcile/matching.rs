//! Matching the gateway's calls with CloudTrail's events, and the findings it leaves: what went
//! around the gateway (`bypass`), what used its roles with no record (`unrecorded`), pairs that
//! disagree (`mismatch`), forwarded calls AWS has no event of (`missing_in_aws`), and calls whose
//! result the gateway could not know, settled from AWS's side (`resolved`).
//!
//! Pure: the inputs are already read and normalised ([`GatewayCall`], [`AwsEvent`]); reading
//! them from trails, archives, trail files and LookupEvents is elsewhere.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;

/// The Redshift operations that change who can use a datashare: an event of one of these made
/// by anyone but the gateway is a bypass.
pub const CHANGING_OPERATIONS: [&str; 5] = [
    "AssociateDataShareConsumer",
    "DisassociateDataShareConsumer",
    "AuthorizeDataShare",
    "DeauthorizeDataShare",
    "RejectDataShare",
];

/// A gateway call with its place in AWS, as its audit records tell it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GatewayCall {
    /// The gateway's request id.
    pub request_id: String,
    /// The Redshift operation it was forwarded as (CloudTrail's `eventName`).
    pub operation: String,
    /// The account it acted in.
    pub account: String,
    /// When the gateway received it.
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    /// Redshift's request id, when Redshift answered.
    pub aws_request_id: Option<String>,
    /// The role session it used (CloudTrail's `userIdentity.arn`), absent for the gateway's own
    /// credentials.
    pub assumed_role_arn: Option<String>,
    /// The caller as `SourceIdentity`.
    pub source_identity: Option<String>,
    /// What it asked for, as CloudTrail's `requestParameters` name it.
    pub parameters: Parameters,
    /// How it ended.
    pub result: CallResult,
}

/// The parameters the two sides are compared on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Parameters {
    /// `dataShareArn`.
    pub data_share_arn: Option<String>,
    /// `consumerArn` (or `consumerIdentifier` on the producer side).
    pub consumer: Option<String>,
    /// `associateEntireAccount`.
    pub entire_account: Option<bool>,
    /// `consumerRegion`.
    pub consumer_region: Option<String>,
}

/// How a forwarded call ended, as far as the gateway knows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CallResult {
    /// Redshift answered and the call succeeded.
    Ok,
    /// Redshift answered with an error.
    Failed {
        /// Redshift's error code.
        aws_error_code: String,
    },
    /// The request may have reached Redshift but no answer came (a timeout, a cut connection,
    /// an abort at shutdown): AWS's side says whether it happened.
    Unknown,
    /// An intent with no outcome: the gateway stopped (a crash) after the intent was durable.
    IntentOnly,
}

/// One CloudTrail event, normalised.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AwsEvent {
    /// `eventID`.
    pub event_id: String,
    /// `requestID`.
    pub request_id: Option<String>,
    /// `eventName`.
    pub operation: String,
    /// `eventTime`.
    #[serde(with = "time::serde::rfc3339")]
    pub event_time: OffsetDateTime,
    /// `recipientAccountId`.
    pub account: String,
    /// `userIdentity.arn`.
    pub actor_arn: String,
    /// `userIdentity.sessionContext.sessionIssuer.arn`: the role, for a role session.
    pub issuer_arn: Option<String>,
    /// `userIdentity.sessionContext.sourceIdentity`.
    pub source_identity: Option<String>,
    /// `errorCode`.
    pub error_code: Option<String>,
    /// From `requestParameters`.
    pub parameters: Parameters,
}

/// What the reconciliation knows beyond the two sides.
#[derive(Clone, Debug)]
pub struct Scope {
    /// The roles the gateway acts through (`[accounts."<id>"].role_arn`).
    pub gateway_roles: HashSet<String>,
    /// The gateway's own identities (IAM users or roles) in the single-account form.
    pub gateway_identities: HashSet<String>,
    /// The accounts the gateway serves: events elsewhere are not its business.
    pub served_accounts: HashSet<String>,
    /// When the reconciliation runs.
    pub now: OffsetDateTime,
    /// Inside this long after a call, its event may not have been delivered yet: not a finding.
    pub grace: Duration,
    /// How far from a call's receipt its event may be (the SDK's retries, clock skew).
    pub match_window: Duration,
}

/// One finding, with the evidence from each side.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Finding {
    /// A datashare-changing event made by a principal other than the gateway's.
    Bypass {
        /// The event.
        event: AwsEvent,
    },
    /// An event made through the gateway's role or identity that no record accounts for.
    Unrecorded {
        /// The event.
        event: AwsEvent,
    },
    /// A matched pair that disagrees.
    Mismatch {
        /// The call.
        call: GatewayCall,
        /// Its event.
        event: AwsEvent,
        /// What differs, one phrase each.
        differences: Vec<String>,
    },
    /// A forwarded call with no event after the grace.
    MissingInAws {
        /// The call.
        call: GatewayCall,
    },
    /// A call whose result the gateway did not know, settled from AWS's side.
    Resolved {
        /// The call.
        call: GatewayCall,
        /// Whether AWS carried it out.
        happened: bool,
        /// The event that shows it (none: no event after the grace, so it did not happen).
        event: Option<AwsEvent>,
    },
}

impl Finding {
    /// The finding's kind, as its JSON and the metric name it.
    pub fn kind(&self) -> &'static str {
        match self {
            Finding::Bypass { .. } => "bypass",
            Finding::Unrecorded { .. } => "unrecorded",
            Finding::Mismatch { .. } => "mismatch",
            Finding::MissingInAws { .. } => "missing_in_aws",
            Finding::Resolved { .. } => "resolved",
        }
    }
}

/// The result of matching the two sides.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Reconciliation {
    /// What did not add up, in the order found: calls first, then events.
    pub findings: Vec<Finding>,
    /// Calls matched with their event and agreeing.
    pub matched: usize,
    /// Calls without their event yet, still inside the grace.
    pub pending: usize,
}

/// Matches `calls` with `events` (both of one window) and reports what does not add up.
pub fn reconcile(calls: &[GatewayCall], events: &[AwsEvent], scope: &Scope) -> Reconciliation {
    let mut by_request_id: HashMap<&str, usize> = HashMap::new();
    for (index, event) in events.iter().enumerate() {
        if let Some(id) = &event.request_id {
            by_request_id.insert(id.as_str(), index);
        }
    }
    let mut used = vec![false; events.len()];
    let mut out = Reconciliation::default();
    let past_grace = |call: &GatewayCall| scope.now - call.received_at > scope.grace;

    // Calls Redshift answered: by its request id.
    for call in calls {
        let Some(id) = &call.aws_request_id else {
            continue;
        };
        match by_request_id.get(id.as_str()) {
            Some(&index) => {
                used[index] = true;
                let differences = differences(call, &events[index]);
                if differences.is_empty() {
                    out.matched += 1;
                } else {
                    out.findings.push(Finding::Mismatch {
                        call: call.clone(),
                        event: events[index].clone(),
                        differences,
                    });
                }
            }
            None if past_grace(call) => out
                .findings
                .push(Finding::MissingInAws { call: call.clone() }),
            None => out.pending += 1,
        }
    }
    // Calls whose answer never came: by session, operation, time and parameters.
    for call in calls.iter().filter(|c| c.aws_request_id.is_none()) {
        let found = events
            .iter()
            .enumerate()
            .filter(|(index, event)| !used[*index] && is_event_of(call, event, scope))
            .min_by_key(|(_, event)| event.event_time)
            .map(|(index, _)| index);
        match found {
            Some(index) => {
                used[index] = true;
                let event = events[index].clone();
                out.findings.push(Finding::Resolved {
                    call: call.clone(),
                    happened: event.error_code.is_none(),
                    event: Some(event),
                });
            }
            None if past_grace(call) => out.findings.push(Finding::Resolved {
                call: call.clone(),
                happened: false,
                event: None,
            }),
            None => out.pending += 1,
        }
    }
    // Events no call accounts for.
    for (index, event) in events.iter().enumerate() {
        if used[index] || !scope.served_accounts.contains(&event.account) {
            continue;
        }
        if is_gateway(event, scope) {
            out.findings.push(Finding::Unrecorded {
                event: event.clone(),
            });
        } else if CHANGING_OPERATIONS.contains(&event.operation.as_str()) {
            out.findings.push(Finding::Bypass {
                event: event.clone(),
            });
        }
    }
    out
}

/// Whether the event was made through the gateway's roles or identity.
fn is_gateway(event: &AwsEvent, scope: &Scope) -> bool {
    event
        .issuer_arn
        .as_ref()
        .is_some_and(|role| scope.gateway_roles.contains(role))
        || scope.gateway_identities.contains(&event.actor_arn)
}

/// Whether `event` could be the unanswered `call`: the same operation in the same account, by
/// the same session (or the same source identity through a gateway role), near its receipt,
/// with the same parameters.
fn is_event_of(call: &GatewayCall, event: &AwsEvent, scope: &Scope) -> bool {
    let same_identity = call.source_identity.is_some()
        && event.source_identity == call.source_identity
        && is_gateway(event, scope);
    let same_session = same_identity
        || match &call.assumed_role_arn {
            Some(session) => *session == event.actor_arn,
            // No session known (the single-account form, or an intent left open): the
            // gateway's own identity.
            None => scope.gateway_identities.contains(&event.actor_arn),
        };
    let offset = event.event_time - call.received_at;
    let window = time::Duration::try_from(scope.match_window).unwrap_or(time::Duration::MAX);
    call.operation == event.operation
        && call.account == event.account
        && same_session
        && offset >= -time::Duration::seconds(5)
        && offset <= window
        && call.parameters == event.parameters
}

/// What a call and its event disagree on.
fn differences(call: &GatewayCall, event: &AwsEvent) -> Vec<String> {
    let mut out = Vec::new();
    if call.operation != event.operation {
        out.push(format!(
            "operation: the gateway forwarded {}, CloudTrail has {}",
            call.operation, event.operation
        ));
    }
    if call.account != event.account {
        out.push(format!(
            "account: the gateway acted in {}, CloudTrail has {}",
            call.account, event.account
        ));
    }
    match (&call.result, &event.error_code) {
        (CallResult::Ok, Some(code)) => out.push(format!(
            "outcome: the gateway recorded OK, CloudTrail has error {code}"
        )),
        (CallResult::Failed { aws_error_code }, None) => out.push(format!(
            "outcome: the gateway recorded error {aws_error_code}, CloudTrail has none"
        )),
        (CallResult::Failed { aws_error_code }, Some(code)) if aws_error_code != code => out.push(
            format!("outcome: the gateway recorded error {aws_error_code}, CloudTrail has {code}"),
        ),
        _ => {}
    }
    if let Some(session) = &call.assumed_role_arn
        && *session != event.actor_arn
    {
        out.push(format!(
            "session: the gateway used {session}, CloudTrail has {}",
            event.actor_arn
        ));
    }
    let (ours, theirs) = (&call.parameters, &event.parameters);
    for (name, a, b) in [
        ("dataShareArn", &ours.data_share_arn, &theirs.data_share_arn),
        ("consumer", &ours.consumer, &theirs.consumer),
        (
            "consumerRegion",
            &ours.consumer_region,
            &theirs.consumer_region,
        ),
    ] {
        if a != b {
            out.push(format!(
                "{name}: the gateway sent {}, CloudTrail has {}",
                a.as_deref().unwrap_or("none"),
                b.as_deref().unwrap_or("none")
            ));
        }
    }
    if ours.entire_account.unwrap_or(false) != theirs.entire_account.unwrap_or(false) {
        out.push(format!(
            "associateEntireAccount: the gateway sent {}, CloudTrail has {}",
            ours.entire_account.unwrap_or(false),
            theirs.entire_account.unwrap_or(false)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const ACCOUNT: &str = "444455556666";
    const ROLE: &str = "arn:aws:iam::444455556666:role/datashare-gateway";
    const SESSION: &str = "arn:aws:sts::444455556666:assumed-role/datashare-gateway/dsgw-reporting";
    const SHARE: &str = "arn:aws:redshift:us-east-1:111122223333:datashare:9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f/sales_share";

    fn scope() -> Scope {
        Scope {
            gateway_roles: HashSet::from([ROLE.to_owned()]),
            gateway_identities: HashSet::new(),
            served_accounts: HashSet::from([ACCOUNT.to_owned()]),
            now: datetime!(2026-12-07 12:00 UTC),
            grace: Duration::from_secs(15 * 60),
            match_window: Duration::from_secs(60),
        }
    }

    fn params() -> Parameters {
        Parameters {
            data_share_arn: Some(SHARE.into()),
            entire_account: Some(true),
            ..Parameters::default()
        }
    }

    fn call(request_id: &str, at: OffsetDateTime) -> GatewayCall {
        GatewayCall {
            request_id: "gw-1".into(),
            operation: "AssociateDataShareConsumer".into(),
            account: ACCOUNT.into(),
            received_at: at,
            aws_request_id: Some(request_id.into()),
            assumed_role_arn: Some(SESSION.into()),
            source_identity: Some("reporting.data@example.internal".into()),
            parameters: params(),
            result: CallResult::Ok,
        }
    }

    fn event(request_id: &str, at: OffsetDateTime) -> AwsEvent {
        AwsEvent {
            event_id: format!("ev-{request_id}"),
            request_id: Some(request_id.into()),
            operation: "AssociateDataShareConsumer".into(),
            event_time: at,
            account: ACCOUNT.into(),
            actor_arn: SESSION.into(),
            issuer_arn: Some(ROLE.into()),
            source_identity: Some("reporting.data@example.internal".into()),
            error_code: None,
            parameters: params(),
        }
    }

    const AN_HOUR_AGO: OffsetDateTime = datetime!(2026-12-07 11:00 UTC);
    const A_MINUTE_AGO: OffsetDateTime = datetime!(2026-12-07 11:59 UTC);

    #[test]
    fn calls_matched_by_request_id_and_agreeing_are_no_finding() {
        let out = reconcile(
            &[call("r1", AN_HOUR_AGO)],
            &[event("r1", AN_HOUR_AGO)],
            &scope(),
        );
        assert_eq!(out.findings, []);
        assert_eq!(out.matched, 1);
    }

    #[test]
    fn a_change_by_someone_else_is_a_bypass_and_one_by_the_gateway_role_unrecorded() {
        let mut admin = event("r2", AN_HOUR_AGO);
        admin.actor_arn = "arn:aws:iam::444455556666:user/admin".into();
        admin.issuer_arn = None;
        let stolen = event("r3", AN_HOUR_AGO);
        let mut elsewhere = admin.clone();
        elsewhere.account = "999988887777".into();
        let mut read = admin.clone();
        read.operation = "DescribeDataSharesForConsumer".into();
        let out = reconcile(
            &[],
            &[admin.clone(), stolen.clone(), elsewhere, read],
            &scope(),
        );
        assert_eq!(
            out.findings,
            [
                Finding::Bypass { event: admin },
                Finding::Unrecorded { event: stolen }
            ]
        );
    }

    #[test]
    fn a_forwarded_call_without_its_event_is_missing_only_after_the_grace() {
        let out = reconcile(
            &[call("r4", AN_HOUR_AGO), call("r5", A_MINUTE_AGO)],
            &[],
            &scope(),
        );
        assert_eq!(out.pending, 1);
        assert!(matches!(
            &out.findings[..],
            [Finding::MissingInAws { call }] if call.aws_request_id.as_deref() == Some("r4")
        ));
    }

    #[test]
    fn pairs_that_disagree_say_how() {
        let mut failed = event("r6", AN_HOUR_AGO);
        failed.error_code = Some("InvalidDataShareFault".into());
        failed.parameters.consumer =
            Some("arn:aws:redshift:us-east-1:444455556666:namespace:x".into());
        let out = reconcile(&[call("r6", AN_HOUR_AGO)], &[failed], &scope());
        let [Finding::Mismatch { differences, .. }] = &out.findings[..] else {
            panic!("{:?}", out.findings)
        };
        assert_eq!(
            differences.len(),
            2,
            "outcome and consumer: {differences:?}"
        );
        assert!(
            differences[0].contains("InvalidDataShareFault"),
            "{differences:?}"
        );
    }

    #[test]
    fn an_unanswered_call_is_resolved_from_the_event_of_its_session_or_as_not_done() {
        let mut crashed = call("unused", AN_HOUR_AGO);
        crashed.aws_request_id = None;
        crashed.result = CallResult::IntentOnly;
        let mut timed_out = crashed.clone();
        timed_out.result = CallResult::Unknown;
        timed_out.parameters.data_share_arn = Some(format!("{SHARE}-other"));
        let later = AN_HOUR_AGO + time::Duration::seconds(2);
        let out = reconcile(
            &[crashed.clone(), timed_out.clone()],
            &[event("r7", later)],
            &scope(),
        );
        assert_eq!(
            out.findings,
            [
                Finding::Resolved {
                    call: crashed,
                    happened: true,
                    event: Some(event("r7", later))
                },
                Finding::Resolved {
                    call: timed_out,
                    happened: false,
                    event: None
                }
            ]
        );
    }

    #[test]
    fn an_event_far_from_the_unanswered_call_is_not_its_event() {
        let mut crashed = call("unused", AN_HOUR_AGO);
        crashed.aws_request_id = None;
        crashed.result = CallResult::IntentOnly;
        let out = reconcile(
            &[crashed],
            &[event("r8", AN_HOUR_AGO + time::Duration::minutes(10))],
            &scope(),
        );
        let kinds: Vec<_> = out.findings.iter().map(Finding::kind).collect();
        assert_eq!(kinds, ["resolved", "unrecorded"], "{:?}", out.findings);
    }
}
