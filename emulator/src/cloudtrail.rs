//! CloudTrail's API over JSON 1.1 (`X-Amz-Target: com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.OP`,
//! or `CloudTrail_20131101.OP` as the Rust SDK sends it):
//! `LookupEvents` over the event log, for the caller's account, and `ListPublicKeys` for the
//! key digests are signed with. The members and errors are botocore's CloudTrail model's
//! (`tests/data/cloudtrail-2013-11-01.service-2.json`); each rule not in the model or AWS's
//! documentation is marked "assumption" and listed in `docs/emulator.md`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::Shared;
use super::events::{Event, Logged};
use super::keys::Principal;
use super::protocol::AwsError;

/// The `X-Amz-Target` prefixes before `.OPERATION`: botocore sends the model's
/// `metadata.targetPrefix`, the Rust SDK the Smithy service's name alone.
const TARGET_PREFIXES: [&str; 2] = [
    "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.",
    "CloudTrail_20131101.",
];
pub(crate) const LOOKUP_EVENTS: &str = "LookupEvents";
pub(crate) const LIST_PUBLIC_KEYS: &str = "ListPublicKeys";

/// "You can look up events that occurred in a Region within the last 90 days" (model).
const LOOKUP_WINDOW_SECS: i64 = 90 * 24 * 60 * 60;
/// `MaxResults`: min 1, max 50 (model); 50 when absent (the API reference's default).
const MAX_RESULTS: i64 = 50;
/// "The rate of lookup requests is limited to two per second, per account, per Region"
/// (the LookupEvents API reference).
const LOOKUPS_PER_SECOND: usize = 2;
/// `LookupAttributeValue`: "The maximum length ... is 2000 characters" (model).
const MAX_ATTRIBUTE_LENGTH: usize = 2000;

/// The operation an `X-Amz-Target` header names, when it is CloudTrail's (any operation, known
/// or not).
pub(crate) fn operation_in_target(target: &str) -> Option<&str> {
    TARGET_PREFIXES
        .iter()
        .find_map(|prefix| target.strip_prefix(prefix))
}

/// The CloudTrail operations the emulator implements.
pub(crate) fn known(operation: &str) -> Option<&'static str> {
    [LOOKUP_EVENTS, LIST_PUBLIC_KEYS]
        .into_iter()
        .find(|op| *op == operation)
}

fn error(code: &'static str, message: impl Into<String>) -> AwsError {
    // Every CloudTrail exception is modeled without an httpStatusCode: 400 (assumption for
    // ThrottlingException, which other JSON services answer with 400 too).
    AwsError::new(StatusCode::BAD_REQUEST, code, message)
}

/// The accepted lookups of the last second, per account.
#[derive(Debug, Default)]
pub(crate) struct LookupRate {
    calls: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl LookupRate {
    /// Whether `account` may make a lookup at `now`: fewer than two accepted in the second
    /// before. A refused lookup does not count (assumption).
    fn admit(&self, account: &str, now: Instant) -> bool {
        let mut calls = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
        let recent = calls.entry(account.to_owned()).or_default();
        while recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            recent.pop_front();
        }
        if recent.len() >= LOOKUPS_PER_SECOND {
            return false;
        }
        recent.push_back(now);
        true
    }
}

/// Runs one CloudTrail operation for an authenticated caller; the JSON answer.
pub(crate) fn call(
    shared: &Shared,
    principal: &Principal,
    operation: &str,
    body: &[u8],
) -> Result<Value, AwsError> {
    // The SDKs send `{}` for an empty input; an empty body is read the same way.
    let body = if body.is_empty() {
        b"{}".as_slice()
    } else {
        body
    };
    match operation {
        LOOKUP_EVENTS => {
            if !shared.lookup_rate.admit(&principal.account, Instant::now()) {
                shared.counters.update(LOOKUP_EVENTS, |c| c.throttled += 1);
                return Err(error("ThrottlingException", "Rate exceeded"));
            }
            let input: LookupEventsInput = parse(body)?;
            lookup_events(shared, principal, &input)
        }
        LIST_PUBLIC_KEYS => {
            let input: ListPublicKeysInput = parse(body)?;
            list_public_keys(shared, &input)
        }
        other => Err(error(
            "UnknownOperationException",
            format!("Unknown operation {other}"),
        )),
    }
}

/// The body as the operation's input; not JSON, or a member of the wrong type →
/// `SerializationException` (assumption: the JSON protocols' usual code for an unreadable body).
fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, AwsError> {
    serde_json::from_slice(body).map_err(|e| error("SerializationException", e.to_string()))
}

/// `LookupEventsRequest`. Members the emulator does not know are ignored, as newer SDKs may
/// send them.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
struct LookupEventsInput {
    #[serde(default)]
    lookup_attributes: Option<Vec<LookupAttribute>>,
    /// Epoch seconds (JSON 1.1 timestamps).
    #[serde(default)]
    start_time: Option<f64>,
    #[serde(default)]
    end_time: Option<f64>,
    #[serde(default)]
    event_category: Option<String>,
    #[serde(default)]
    max_results: Option<i64>,
    #[serde(default)]
    next_token: Option<String>,
}

#[derive(Debug, Deserialize, PartialEq, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct LookupAttribute {
    #[serde(default)]
    attribute_key: Option<String>,
    #[serde(default)]
    attribute_value: Option<String>,
}

/// What a lookup attribute compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AttributeKey {
    EventId,
    EventName,
    ReadOnly,
    Username,
    ResourceType,
    ResourceName,
    EventSource,
    AccessKeyId,
}

impl AttributeKey {
    /// `LookupAttributeKey`'s enum (model).
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "EventId" => AttributeKey::EventId,
            "EventName" => AttributeKey::EventName,
            "ReadOnly" => AttributeKey::ReadOnly,
            "Username" => AttributeKey::Username,
            "ResourceType" => AttributeKey::ResourceType,
            "ResourceName" => AttributeKey::ResourceName,
            "EventSource" => AttributeKey::EventSource,
            "AccessKeyId" => AttributeKey::AccessKeyId,
            _ => return None,
        })
    }

    fn matches(self, event: &Event, value: &str) -> bool {
        match self {
            AttributeKey::EventId => event.event_id == value,
            AttributeKey::EventName => event.event_name == value,
            AttributeKey::ReadOnly => read_only(event) == value,
            AttributeKey::Username => username(event).as_deref() == Some(value),
            AttributeKey::ResourceType => resources(event).iter().any(|(t, _)| *t == value),
            AttributeKey::ResourceName => resources(event).iter().any(|(_, n)| n == value),
            AttributeKey::EventSource => event.event_source == value,
            AttributeKey::AccessKeyId => event.user_identity.access_key_id == value,
        }
    }
}

/// "The following characters ('_', ' ', ',', '\n') count as two characters towards the 2000
/// character limit" (model).
fn attribute_length(value: &str) -> usize {
    value
        .chars()
        .map(|c| {
            if matches!(c, '_' | ' ' | ',' | '\n') {
                2
            } else {
                1
            }
        })
        .sum()
}

/// The one attribute a lookup may filter on (model: "Currently the list can contain only one
/// item"). Every way to get it wrong is `InvalidLookupAttributesException` (assumption for a
/// missing key or value, an unknown key and a value too long).
fn lookup_attribute(
    attributes: Option<&[LookupAttribute]>,
) -> Result<Option<(AttributeKey, &str)>, AwsError> {
    let invalid = |message: &str| error("InvalidLookupAttributesException", message);
    let attribute = match attributes.unwrap_or_default() {
        [] => return Ok(None),
        [one] => one,
        _ => return Err(invalid("You can specify at most one lookup attribute.")),
    };
    let (Some(key), Some(value)) = (&attribute.attribute_key, &attribute.attribute_value) else {
        return Err(invalid(
            "A lookup attribute needs an AttributeKey and an AttributeValue.",
        ));
    };
    let Some(key) = AttributeKey::parse(key) else {
        return Err(invalid(&format!(
            "Unknown AttributeKey {key}: expected EventId, EventName, ReadOnly, Username, ResourceType, ResourceName, EventSource or AccessKeyId."
        )));
    };
    if value.is_empty() || attribute_length(value) > MAX_ATTRIBUTE_LENGTH {
        return Err(invalid(
            "AttributeValue must be 1 to 2000 characters long ('_', ' ', ',' and newlines count twice).",
        ));
    }
    Ok(Some((key, value.as_str())))
}

/// `ReadOnly` as LookupEvents writes it: a string.
fn read_only(event: &Event) -> &'static str {
    if event.read_only { "true" } else { "false" }
}

/// `Username`: an IAM user's name, or a role session's name (assumption: the console's
/// "User name" column shows the session name for an assumed role).
fn username(event: &Event) -> Option<String> {
    let identity = &event.user_identity;
    match &identity.user_name {
        Some(name) => Some(name.clone()),
        None => identity.arn.rsplit('/').next().map(str::to_owned),
    }
}

/// `Resources` (type, name), read from the record: a datashare ARN as
/// `AWS::Redshift::DataShare`, namespace ARNs as `AWS::Redshift::Namespace` (assumption: AWS
/// lists no resource types for datashare events); AssumeRole's role, new access key and
/// assumed role as real CloudTrail lists them.
fn resources(event: &Event) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let param = |name: &str| {
        event
            .request_parameters
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    if let Some(arn) = param("dataShareArn") {
        out.push(("AWS::Redshift::DataShare", arn));
    }
    for member in ["consumerArn", "producerArn"] {
        if let Some(arn) = param(member) {
            out.push(("AWS::Redshift::Namespace", arn));
        }
    }
    if let Some(arn) = param("roleArn") {
        out.push(("AWS::IAM::Role", arn));
    }
    let response = &event.response_elements;
    if let Some(key) = response["credentials"]["accessKeyId"].as_str() {
        out.push(("AWS::IAM::AccessKey", key.to_owned()));
    }
    if let Some(arn) = response["assumedRoleUser"]["arn"].as_str() {
        out.push(("AWS::STS::AssumedRole", arn.to_owned()));
    }
    out
}

/// A page's position, bound to the parameters it was made for: `NextToken` is "valid only
/// with the same parameters" (model). Opaque: base64 of `FINGERPRINT.TIME.SEQ`.
#[derive(Debug, PartialEq)]
struct PageToken {
    fingerprint: String,
    /// `(at, seq)` of the last event returned.
    after: (i64, u64),
}

impl PageToken {
    fn encode(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
            "{}.{}.{}",
            self.fingerprint, self.after.0, self.after.1
        ))
    }

    fn decode(token: &str) -> Option<PageToken> {
        let text = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .ok()?;
        let text = String::from_utf8(text).ok()?;
        let mut parts = text.split('.');
        let fingerprint = parts.next()?.to_owned();
        let at = parts.next()?.parse().ok()?;
        let seq = parts.next()?.parse().ok()?;
        if parts.next().is_some() {
            return None;
        }
        Some(PageToken {
            fingerprint,
            after: (at, seq),
        })
    }
}

/// What a token is bound to: the caller's account and every filtering member (not
/// `MaxResults`, which may change from page to page: assumption).
fn parameters_fingerprint(account: &str, input: &LookupEventsInput) -> String {
    let bound = json!({
        "account": account,
        "attributes": input.lookup_attributes,
        "start": input.start_time,
        "end": input.end_time,
        "category": input.event_category,
    });
    hex::encode(&Sha256::digest(bound.to_string().as_bytes())[..8])
}

fn lookup_events(
    shared: &Shared,
    principal: &Principal,
    input: &LookupEventsInput,
) -> Result<Value, AwsError> {
    let attribute = lookup_attribute(input.lookup_attributes.as_deref())?;
    let limit = input.max_results.unwrap_or(MAX_RESULTS);
    if !(1..=MAX_RESULTS).contains(&limit) {
        return Err(error(
            "InvalidMaxResultsException",
            "MaxResults must be 1 to 50.",
        ));
    }
    if let (Some(start), Some(end)) = (input.start_time, input.end_time)
        && start > end
    {
        return Err(error(
            "InvalidTimeRangeException",
            "StartTime must be before EndTime.",
        ));
    }
    // The only category is `insight` (model); the emulator records no Insights events.
    let insights_only = match input.event_category.as_deref() {
        None => false,
        Some("insight") => true,
        Some(other) => {
            return Err(error(
                "InvalidEventCategoryException",
                format!("Unknown EventCategory {other}: the only one is insight."),
            ));
        }
    };
    let fingerprint = parameters_fingerprint(&principal.account, input);
    let after = match &input.next_token {
        None => None,
        Some(token) => match PageToken::decode(token) {
            Some(t) if t.fingerprint == fingerprint => Some(t.after),
            _ => {
                return Err(error(
                    "InvalidNextTokenException",
                    "The NextToken is not valid for these parameters.",
                ));
            }
        },
    };
    // The 90 days are counted on the emulator's clock, so `POST /clock` can age events out; an
    // older StartTime is cut to them, not refused (assumption). Events are visible at once,
    // where CloudTrail's lag by minutes (assumption).
    let oldest = shared.clock.now().unix_timestamp() - LOOKUP_WINDOW_SECS;
    let limit = usize::try_from(limit).unwrap_or(50);
    let keep = |l: &Logged| {
        let at = l.at as f64;
        !insights_only
            && l.at >= oldest
            && l.event.recipient_account_id == principal.account
            && input.start_time.is_none_or(|s| at >= s)
            && input.end_time.is_none_or(|e| at <= e)
            && attribute.is_none_or(|(key, value)| key.matches(&l.event, value))
    };
    let (page, more) = shared.events.newest_first(keep, after, limit);
    let next = page.last().filter(|_| more).map(|(at, seq, _)| PageToken {
        fingerprint: fingerprint.clone(),
        after: (*at, *seq),
    });
    let events: Vec<Value> = page
        .iter()
        .map(|(at, _, event)| lookup_result(*at, event))
        .collect();
    let mut out = json!({ "Events": events });
    if let Some(token) = next {
        out["NextToken"] = json!(token.encode());
    }
    Ok(out)
}

/// One `Event` of the answer.
fn lookup_result(at: i64, event: &Event) -> Value {
    let resources: Vec<Value> = resources(event)
        .into_iter()
        .map(|(kind, name)| json!({ "ResourceType": kind, "ResourceName": name }))
        .collect();
    let mut out = json!({
        "EventId": event.event_id,
        "EventName": event.event_name,
        "ReadOnly": read_only(event),
        "AccessKeyId": event.user_identity.access_key_id,
        "EventTime": at,
        "EventSource": event.event_source,
        "Resources": resources,
        // The record exactly as the trail files hold it.
        "CloudTrailEvent": serde_json::to_string(event).unwrap_or_default(),
    });
    if let Some(name) = username(event) {
        out["Username"] = json!(name);
    }
    out
}

/// `ListPublicKeysRequest`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListPublicKeysInput {
    #[serde(default)]
    start_time: Option<f64>,
    #[serde(default)]
    end_time: Option<f64>,
}

/// The key whose validity overlaps the range (both ends default to now, which returns "the
/// current public key", model).
fn list_public_keys(shared: &Shared, input: &ListPublicKeysInput) -> Result<Value, AwsError> {
    let now = shared.clock.now();
    let now_secs = now.unix_timestamp() as f64;
    let start = input.start_time.unwrap_or(now_secs);
    let end = input.end_time.unwrap_or(now_secs);
    if start > end {
        return Err(error(
            "InvalidTimeRangeException",
            "StartTime must be before EndTime.",
        ));
    }
    let signer = shared.signing_key.get(now).map_err(|e| {
        tracing::error!(error = %e, "no digest signing key");
        AwsError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalFailure",
            "The digest signing key is not available.",
        )
    })?;
    let from = signer.valid_from.unix_timestamp();
    let to = signer.valid_to.unix_timestamp();
    let keys = if (from as f64) <= end && start <= to as f64 {
        vec![json!({
            "Value": signer.public_key_base64(),
            "ValidityStartTime": from,
            "ValidityEndTime": to,
            "Fingerprint": signer.fingerprint(),
        })]
    } else {
        Vec::new()
    };
    Ok(json!({ "PublicKeyList": keys }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(key: &str, value: &str) -> LookupAttribute {
        LookupAttribute {
            attribute_key: Some(key.into()),
            attribute_value: Some(value.into()),
        }
    }

    #[test]
    fn at_most_one_known_attribute_with_a_bounded_value() {
        let code = |attrs: &[LookupAttribute]| lookup_attribute(Some(attrs)).unwrap_err().code;
        assert_eq!(lookup_attribute(None).unwrap(), None);
        assert_eq!(
            lookup_attribute(Some(&[attr("EventName", "RejectDataShare")])).unwrap(),
            Some((AttributeKey::EventName, "RejectDataShare"))
        );
        assert_eq!(
            code(&[attr("EventName", "a"), attr("EventId", "b")]),
            "InvalidLookupAttributesException"
        );
        assert_eq!(
            code(&[attr("Colour", "red")]),
            "InvalidLookupAttributesException"
        );
        assert_eq!(
            code(&[attr("EventName", "")]),
            "InvalidLookupAttributesException"
        );
        let long = "_".repeat(1001);
        assert_eq!(
            code(&[attr("EventName", &long)]),
            "InvalidLookupAttributesException"
        );
        assert!(lookup_attribute(Some(&[attr("EventName", &"_".repeat(1000))])).is_ok());
    }

    #[test]
    fn a_page_token_round_trips_and_junk_does_not_decode() {
        let t = PageToken {
            fingerprint: "0011223344556677".into(),
            after: (1_767_000_000, 42),
        };
        assert_eq!(PageToken::decode(&t.encode()), Some(t));
        assert_eq!(PageToken::decode("not a token!"), None);
        assert_eq!(PageToken::decode("YS5i"), None);
    }

    #[test]
    fn the_token_is_bound_to_the_filters_and_account_but_not_the_page_size() {
        let base = LookupEventsInput {
            lookup_attributes: Some(vec![attr("EventName", "RejectDataShare")]),
            max_results: Some(3),
            ..Default::default()
        };
        let fp = parameters_fingerprint("444455556666", &base);
        let bigger_pages = LookupEventsInput {
            max_results: Some(10),
            next_token: Some("x".into()),
            lookup_attributes: Some(vec![attr("EventName", "RejectDataShare")]),
            ..Default::default()
        };
        assert_eq!(fp, parameters_fingerprint("444455556666", &bigger_pages));
        assert_ne!(fp, parameters_fingerprint("111122223333", &base));
        let other_filter = LookupEventsInput {
            lookup_attributes: Some(vec![attr("EventName", "AssumeRole")]),
            ..Default::default()
        };
        assert_ne!(fp, parameters_fingerprint("444455556666", &other_filter));
    }

    #[test]
    fn two_lookups_a_second_per_account() {
        let rate = LookupRate::default();
        let t0 = Instant::now();
        assert!(rate.admit("a", t0));
        assert!(rate.admit("a", t0 + Duration::from_millis(10)));
        assert!(!rate.admit("a", t0 + Duration::from_millis(20)));
        assert!(
            rate.admit("b", t0 + Duration::from_millis(20)),
            "per account"
        );
        assert!(rate.admit("a", t0 + Duration::from_millis(1000)));
        assert!(!rate.admit("a", t0 + Duration::from_millis(1005)));
        assert!(rate.admit("a", t0 + Duration::from_millis(1010)));
    }

    #[test]
    fn only_cloudtrail_targets_name_an_operation() {
        assert_eq!(
            operation_in_target(
                "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.LookupEvents"
            ),
            Some("LookupEvents")
        );
        assert_eq!(
            operation_in_target("CloudTrail_20131101.LookupEvents"),
            Some("LookupEvents")
        );
        assert_eq!(operation_in_target("DynamoDB_20120810.GetItem"), None);
        assert_eq!(known("LookupEvents"), Some(LOOKUP_EVENTS));
        assert_eq!(known("CreateTrail"), None);
    }
}
