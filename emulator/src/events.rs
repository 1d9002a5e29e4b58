//! A CloudTrail-like log of the STS and Redshift requests the emulator answered, with
//! CloudTrail's field names, newest 100,000 kept. Never holds a secret key, a session token
//! or an external id.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use serde::Serialize;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use super::keys::{KeyHolder, Session};
use super::protocol::{QueryRequest, Service, format_timestamp};

/// The most events kept; the oldest go first.
pub(crate) const MAX_EVENTS: usize = 100_000;

/// One request, as CloudTrail would record it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Event {
    pub(crate) event_version: &'static str,
    pub(crate) user_identity: UserIdentity,
    /// RFC 3339 UTC, on the emulator's clock.
    pub(crate) event_time: String,
    pub(crate) event_source: &'static str,
    pub(crate) event_name: String,
    pub(crate) aws_region: String,
    #[serde(rename = "sourceIPAddress")]
    pub(crate) source_ip_address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) user_agent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error_message: Option<String>,
    /// `null` when the request had no members, as CloudTrail writes it.
    pub(crate) request_parameters: Value,
    pub(crate) response_elements: Value,
    #[serde(rename = "requestID")]
    pub(crate) request_id: String,
    #[serde(rename = "eventID")]
    pub(crate) event_id: String,
    pub(crate) read_only: bool,
    pub(crate) event_type: &'static str,
    pub(crate) management_event: bool,
    pub(crate) recipient_account_id: String,
    pub(crate) event_category: &'static str,
}

/// `userIdentity`: an IAM user's long-term key or a role session.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UserIdentity {
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    pub(crate) principal_id: String,
    pub(crate) arn: String,
    pub(crate) account_id: String,
    pub(crate) access_key_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) user_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) session_context: Option<SessionContext>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SessionContext {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) source_identity: Option<String>,
    pub(crate) session_issuer: SessionIssuer,
    pub(crate) attributes: SessionAttributes,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SessionIssuer {
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    pub(crate) principal_id: String,
    pub(crate) arn: String,
    pub(crate) account_id: String,
    pub(crate) user_name: String,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SessionAttributes {
    pub(crate) creation_date: String,
    /// CloudTrail writes it as a string.
    pub(crate) mfa_authenticated: &'static str,
}

impl UserIdentity {
    /// `caller_arn` is the ARN the caller is known by (`Sts::caller_arn`).
    pub(crate) fn new(
        access_key_id: &str,
        account: &str,
        holder: &KeyHolder,
        caller_arn: String,
    ) -> Self {
        match holder {
            KeyHolder::User { name } => UserIdentity {
                kind: "IAMUser",
                // IAM's user ids (AIDA...) are not modelled; the key id stands in (assumption).
                principal_id: access_key_id.to_owned(),
                arn: caller_arn,
                account_id: account.to_owned(),
                access_key_id: access_key_id.to_owned(),
                user_name: Some(name.clone()),
                session_context: None,
            },
            KeyHolder::Session(s) => UserIdentity {
                kind: "AssumedRole",
                principal_id: s.assumed_role_id(),
                arn: caller_arn,
                account_id: s.account.clone(),
                access_key_id: access_key_id.to_owned(),
                user_name: None,
                session_context: Some(SessionContext {
                    source_identity: s.source_identity.clone(),
                    session_issuer: SessionIssuer {
                        kind: "Role",
                        principal_id: s.role_id.clone(),
                        arn: s.role_arn.clone(),
                        account_id: s.account.clone(),
                        user_name: s.role_name.clone(),
                    },
                    attributes: SessionAttributes {
                        creation_date: rfc3339(s.created),
                        mfa_authenticated: "false",
                    },
                }),
            },
        }
    }
}

/// `2026-01-02T03:04:05Z`, as CloudTrail writes `eventTime`.
pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    let with_millis = format_timestamp(t);
    // `YYYY-MM-DDTHH:MM:SS.sssZ` → drop the milliseconds.
    match with_millis.split_once('.') {
        Some((seconds, _)) => format!("{seconds}Z"),
        None => with_millis,
    }
}

/// Redshift members as CloudTrail names them (camelCase), with their JSON types.
const REDSHIFT_BOOLEANS: [&str; 3] = [
    "AssociateEntireAccount",
    "DisassociateEntireAccount",
    "AllowWrites",
];
const REDSHIFT_INTEGERS: [&str; 1] = ["MaxRecords"];
const REDSHIFT_STRINGS: [&str; 7] = [
    "DataShareArn",
    "ConsumerArn",
    "ConsumerRegion",
    "ConsumerIdentifier",
    "ProducerArn",
    "Status",
    "Marker",
];

fn camel(member: &str) -> String {
    let mut chars = member.chars();
    chars
        .next()
        .map(|first| first.to_ascii_lowercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

/// A number when the text is one, else the text as sent.
fn integer_or_text(text: &str) -> Value {
    text.parse::<i64>()
        .map_or_else(|_| json!(text), Value::from)
}

/// `requestParameters`: the operation's members as sent, camelCase. `ExternalId` is left out
/// as a secret (CloudTrail does log it).
pub(crate) fn request_parameters(service: Service, q: &QueryRequest) -> Value {
    let mut out = Map::new();
    match service {
        Service::Redshift => {
            for name in REDSHIFT_BOOLEANS {
                if let Some(v) = q.string(name) {
                    let value = match v {
                        "true" => json!(true),
                        "false" => json!(false),
                        other => json!(other),
                    };
                    out.insert(camel(name), value);
                }
            }
            for name in REDSHIFT_INTEGERS {
                if let Some(v) = q.string(name) {
                    out.insert(camel(name), integer_or_text(v));
                }
            }
            for name in REDSHIFT_STRINGS {
                if let Some(v) = q.string(name) {
                    out.insert(camel(name), json!(v));
                }
            }
        }
        Service::Sts => {
            for name in ["RoleArn", "RoleSessionName", "SourceIdentity"] {
                if let Some(v) = q.string(name) {
                    out.insert(camel(name), json!(v));
                }
            }
            if let Some(v) = q.string("DurationSeconds") {
                out.insert("durationSeconds".into(), integer_or_text(v));
            }
            let tags = q.indexed("Tags");
            if !tags.is_empty() {
                let list: Vec<Value> = tags
                    .iter()
                    .map(|(_, fields)| {
                        let get = |f: &str| fields.iter().find(|(k, _)| *k == f).map(|(_, v)| *v);
                        json!({ "key": get("Key"), "value": get("Value") })
                    })
                    .collect();
                out.insert("tags".into(), Value::Array(list));
            }
            let transitive: Vec<Value> = q
                .indexed("TransitiveTagKeys")
                .iter()
                .filter_map(|(_, fields)| fields.iter().find(|(k, _)| k.is_empty()))
                .map(|(_, v)| json!(v))
                .collect();
            if !transitive.is_empty() {
                out.insert("transitiveTagKeys".into(), Value::Array(transitive));
            }
        }
        // CloudTrail's own operations are not logged.
        Service::CloudTrail => {}
    }
    if out.is_empty() {
        Value::Null
    } else {
        Value::Object(out)
    }
}

/// AssumeRole's `responseElements`: never the secret key or the session token (CloudTrail
/// logs the token; the emulator does not).
pub(crate) fn assume_role_response(s: &Session) -> Value {
    let mut out = json!({
        "credentials": {
            "accessKeyId": s.access_key_id,
            "expiration": rfc3339(s.expiration),
        },
        "assumedRoleUser": {
            "assumedRoleId": s.assumed_role_id(),
            "arn": s.assumed_role_arn,
        },
    });
    if let Some(si) = &s.source_identity {
        out["sourceIdentity"] = json!(si);
    }
    out
}

/// One event as the log keeps it: the record, plus what delivery and lookup need.
#[derive(Debug)]
pub(crate) struct Logged {
    /// Order of recording, from 1; never reused, not even after a clear.
    pub(crate) seq: u64,
    /// `eventTime` as Unix seconds.
    pub(crate) at: i64,
    /// Dropped through the admin API: never delivered, never looked up.
    pub(crate) dropped: bool,
    pub(crate) event: Event,
}

/// Why an event could not be dropped.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DropError {
    #[error("no event has eventID or requestID {0:?}")]
    Unknown(String),
    #[error("event {0:?} is already in a delivered trail file")]
    AlreadyDelivered(String),
}

#[derive(Debug, Default)]
struct Inner {
    events: VecDeque<Logged>,
    /// The last `seq` handed out.
    last_seq: u64,
    /// Every event up to this `seq` has been taken for a trail file.
    delivered_through: u64,
}

/// The log itself.
#[derive(Debug, Default)]
pub(crate) struct EventLog {
    inner: Mutex<Inner>,
}

impl EventLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records `event`, which happened at `at` on the emulator's clock.
    pub(crate) fn record(&self, event: Event, at: OffsetDateTime) {
        let mut inner = self.lock();
        if inner.events.len() >= MAX_EVENTS {
            inner.events.pop_front();
        }
        inner.last_seq += 1;
        let seq = inner.last_seq;
        inner.events.push_back(Logged {
            seq,
            at: at.unix_timestamp(),
            dropped: false,
            event,
        });
    }

    /// `{"events": [...]}`, oldest first, dropped ones included.
    pub(crate) fn to_json(&self) -> Value {
        let inner = self.lock();
        let events: Vec<&Event> = inner.events.iter().map(|l| &l.event).collect();
        json!({ "events": events })
    }

    /// Forgets every event; the ones not yet delivered are never delivered.
    pub(crate) fn clear(&self) {
        let mut inner = self.lock();
        inner.events.clear();
        inner.delivered_through = inner.last_seq;
    }

    /// The events recorded since the last call, oldest first, less the dropped ones: what the
    /// next trail files hold.
    pub(crate) fn take_undelivered(&self) -> Vec<Event> {
        let mut inner = self.lock();
        let from = inner.delivered_through;
        let taken = inner
            .events
            .iter()
            .filter(|l| l.seq > from && !l.dropped)
            .map(|l| l.event.clone())
            .collect();
        inner.delivered_through = inner.last_seq;
        taken
    }

    /// How many events wait for a trail file.
    pub(crate) fn undelivered(&self) -> usize {
        let inner = self.lock();
        let from = inner.delivered_through;
        inner
            .events
            .iter()
            .filter(|l| l.seq > from && !l.dropped)
            .count()
    }

    /// Drops the event whose `eventID` or `requestID` is `id`, so that it is never delivered
    /// nor returned by LookupEvents (assumption: as if CloudTrail had lost it everywhere).
    /// Returns how many matched.
    pub(crate) fn drop_event(&self, id: &str) -> Result<usize, DropError> {
        let mut inner = self.lock();
        let delivered_through = inner.delivered_through;
        let mut matched = 0;
        for logged in inner
            .events
            .iter_mut()
            .filter(|l| l.event.event_id == id || l.event.request_id == id)
        {
            if logged.seq <= delivered_through {
                return Err(DropError::AlreadyDelivered(id.to_owned()));
            }
            logged.dropped = true;
            matched += 1;
        }
        if matched == 0 {
            return Err(DropError::Unknown(id.to_owned()));
        }
        Ok(matched)
    }

    /// The events `keep` accepts, newest first (by `eventTime`, then by order of recording),
    /// starting after the position `after` (`(at, seq)` of the last event of the previous
    /// page), at most `limit`; and whether more follow. Dropped events are never seen.
    pub(crate) fn newest_first(
        &self,
        keep: impl Fn(&Logged) -> bool,
        after: Option<(i64, u64)>,
        limit: usize,
    ) -> (Vec<(i64, u64, Event)>, bool) {
        let inner = self.lock();
        let mut found: Vec<&Logged> = inner
            .events
            .iter()
            .filter(|l| !l.dropped && after.is_none_or(|pos| (l.at, l.seq) < pos) && keep(l))
            .collect();
        found.sort_unstable_by_key(|l| std::cmp::Reverse((l.at, l.seq)));
        let more = found.len() > limit;
        let page = found
            .into_iter()
            .take(limit)
            .map(|l| (l.at, l.seq, l.event.clone()))
            .collect();
        (page, more)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redshift_members_are_camel_case_with_their_json_types() {
        let q = QueryRequest::parse(
            b"Action=AssociateDataShareConsumer&DataShareArn=arn%3Ax&AssociateEntireAccount=true&MaxRecords=5&Unrelated=1",
        );
        assert_eq!(
            request_parameters(Service::Redshift, &q),
            json!({"dataShareArn": "arn:x", "associateEntireAccount": true, "maxRecords": 5})
        );
        assert_eq!(
            request_parameters(Service::Redshift, &QueryRequest::parse(b"")),
            Value::Null
        );
    }

    #[test]
    fn assume_role_parameters_leave_out_the_external_id() {
        let q = QueryRequest::parse(
            b"RoleArn=r&RoleSessionName=s&ExternalId=secret&DurationSeconds=900&Tags.member.2.Key=b&Tags.member.2.Value=2&Tags.member.1.Key=a&Tags.member.1.Value=1&TransitiveTagKeys.member.1=a",
        );
        let p = request_parameters(Service::Sts, &q);
        assert_eq!(
            p,
            json!({"roleArn": "r", "roleSessionName": "s", "durationSeconds": 900,
                   "tags": [{"key": "a", "value": "1"}, {"key": "b", "value": "2"}],
                   "transitiveTagKeys": ["a"]})
        );
        assert!(!p.to_string().contains("secret"));
    }

    #[test]
    fn event_times_are_rfc3339_without_milliseconds() {
        let t = OffsetDateTime::from_unix_timestamp(1_714_557_600).unwrap();
        assert_eq!(rfc3339(t), "2024-05-01T10:00:00Z");
    }
}
