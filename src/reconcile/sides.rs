//! The two sides as [`matching`](super::matching) takes them: the gateway's calls from its
//! audit records, and Redshift's events from CloudTrail records.

use std::collections::BTreeMap;

use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::matching::{AwsEvent, CallResult, GatewayCall, Parameters};

/// Reads the forwarded calls out of audit records: each outcome (or `call` record) of a
/// forwarded call, and each intent left without an outcome (the gateway stopped). Calls never
/// forwarded and approvals are not AWS's business. `default_account` is where a call that names no account
/// acted (`upstream.default_account`).
#[derive(Debug, Default)]
pub struct CallsFromRecords {
    default_account: Option<String>,
    /// Intents not yet closed by an outcome, by seq.
    open: BTreeMap<u64, Value>,
    calls: Vec<GatewayCall>,
}

impl CallsFromRecords {
    /// Reads calls acting in `default_account` when they name none.
    pub fn new(default_account: Option<String>) -> Self {
        CallsFromRecords {
            default_account,
            ..CallsFromRecords::default()
        }
    }

    /// Takes one record, in trail order.
    pub fn record(&mut self, record: Value) {
        match record["kind"].as_str() {
            Some("intent") => {
                if let Some(seq) = record["seq"].as_u64() {
                    self.open.insert(seq, record);
                }
            }
            // A call that changes nothing (a listing) has one `call` record, forwarded or not.
            Some(kind @ ("outcome" | "call")) => {
                if kind == "outcome"
                    && let Some(intent) = record["intent_seq"].as_u64()
                {
                    self.open.remove(&intent);
                }
                let outcome = &record["outcome"];
                if outcome["forwarded"] != Value::Bool(true) {
                    return;
                }
                let result = match (
                    outcome["aws_request_id"].as_str(),
                    outcome["aws_error_code"].as_str(),
                ) {
                    (Some(_), None) => CallResult::Ok,
                    (Some(_), Some(code)) => CallResult::Failed {
                        aws_error_code: code.to_owned(),
                    },
                    (None, _) => CallResult::Unknown,
                };
                if let Some(call) = self.call(&record, result) {
                    self.calls.push(call);
                }
            }
            _ => {}
        }
    }

    /// The calls, the intents left open among them.
    pub fn finish(mut self) -> Vec<GatewayCall> {
        let open = std::mem::take(&mut self.open);
        for intent in open.into_values() {
            if let Some(call) = self.call(&intent, CallResult::IntentOnly) {
                self.calls.push(call);
            }
        }
        self.calls
    }

    fn call(&self, record: &Value, result: CallResult) -> Option<GatewayCall> {
        let method = record["method"].as_str()?;
        let operation = crate::operations::redshift_operation_of(method)?;
        let outcome = &record["outcome"];
        let params = &record["params"];
        let assumed_role_arn = text(&outcome["assumed_role_arn"]);
        let account = assumed_role_arn
            .as_deref()
            .and_then(account_of_arn)
            .or_else(|| text(&params["consumer_account"]))
            .or_else(|| {
                text(&params["consumer_arn"])
                    .as_deref()
                    .and_then(account_of_arn)
            })
            .or_else(|| self.default_account.clone())?;
        Some(GatewayCall {
            request_id: text(&record["request_id"]).unwrap_or_default(),
            operation: operation.to_owned(),
            account,
            received_at: time_of(&record["received_at"])?,
            aws_request_id: text(&outcome["aws_request_id"]),
            assumed_role_arn,
            source_identity: match &result {
                // An intent left open (a crash) has no outcome to say which session it used;
                // the source identity follows from the principal, as the gateway derives it.
                CallResult::IntentOnly => text(&record["principal"])
                    .map(|principal| crate::upstream::source_identity(&principal)),
                _ => text(&outcome["source_identity"]),
            },
            parameters: Parameters {
                data_share_arn: text(&params["data_share_arn"]),
                consumer: text(&params["consumer_arn"]),
                entire_account: params["associate_entire_account"]
                    .as_bool()
                    .or_else(|| params["disassociate_entire_account"].as_bool())
                    .filter(|whole| *whole),
                consumer_region: text(&params["consumer_region"]),
            },
            result,
        })
    }
}

/// A Redshift event out of one CloudTrail record; `None` for other services' events and
/// records that lack what matching needs.
pub fn event_of(record: &Value) -> Option<AwsEvent> {
    if record["eventSource"] != "redshift.amazonaws.com" {
        return None;
    }
    let identity = &record["userIdentity"];
    let parameters = &record["requestParameters"];
    Some(AwsEvent {
        event_id: text(&record["eventID"])?,
        request_id: text(&record["requestID"]),
        operation: text(&record["eventName"])?,
        event_time: time_of(&record["eventTime"])?,
        account: text(&record["recipientAccountId"]).or_else(|| text(&identity["accountId"]))?,
        actor_arn: text(&identity["arn"]).unwrap_or_default(),
        issuer_arn: text(&identity["sessionContext"]["sessionIssuer"]["arn"]),
        source_identity: text(&identity["sessionContext"]["sourceIdentity"]),
        error_code: text(&record["errorCode"]),
        parameters: Parameters {
            data_share_arn: text(&parameters["dataShareArn"]),
            consumer: text(&parameters["consumerArn"])
                .or_else(|| text(&parameters["consumerIdentifier"])),
            entire_account: parameters["associateEntireAccount"]
                .as_bool()
                .or_else(|| parameters["disassociateEntireAccount"].as_bool())
                .filter(|whole| *whole),
            consumer_region: text(&parameters["consumerRegion"]),
        },
    })
}

/// A non-empty string value.
fn text(value: &Value) -> Option<String> {
    value.as_str().filter(|s| !s.is_empty()).map(str::to_owned)
}

fn time_of(value: &Value) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(value.as_str()?, &Rfc3339).ok()
}

/// The account of an ARN (`arn:aws:sts::444455556666:assumed-role/...`).
fn account_of_arn(arn: &str) -> Option<String> {
    let account = arn.split(':').nth(4)?;
    (account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit())).then(|| account.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SHARE: &str = "arn:aws:redshift:us-east-1:111122223333:datashare:9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f/sales_share";
    const SESSION: &str = "arn:aws:sts::444455556666:assumed-role/datashare-gateway/dsgw-reporting";

    fn intent(seq: u64) -> Value {
        json!({"v": 1, "seq": seq, "kind": "intent", "request_id": format!("gw-{seq}"),
               "method": "AssociateConsumer", "principal": "spiffe://example.internal/ns/data/sa/reporting", "received_at": "2026-12-07T11:00:00.5Z",
               "params": {"data_share_arn": SHARE, "associate_entire_account": true,
                          "consumer_arn": "", "consumer_region": "", "consumer_account": ""}})
    }

    fn outcome(intent_seq: u64, outcome: Value) -> Value {
        let mut record = intent(intent_seq);
        record["kind"] = json!("outcome");
        record["seq"] = json!(intent_seq + 1);
        record["intent_seq"] = json!(intent_seq);
        record["outcome"] = outcome;
        record
    }

    #[test]
    fn outcomes_of_forwarded_calls_and_open_intents_are_calls() {
        let mut calls = CallsFromRecords::new(Some("777788889999".into()));
        calls.record(intent(1));
        calls.record(outcome(
            1,
            json!({"code": "OK", "forwarded": true,
            "aws_request_id": "r1", "aws_error_code": null, "assumed_role_arn": SESSION,
            "source_identity": "reporting.data@example.internal"}),
        ));
        calls.record(intent(3));
        calls.record(outcome(
            3,
            json!({"code": "DEADLINE_EXCEEDED", "forwarded": true,
            "aws_request_id": null}),
        ));
        calls.record(intent(5));
        calls.record(outcome(
            5,
            json!({"code": "UNAVAILABLE", "forwarded": false}),
        ));
        calls.record(intent(7));
        calls.record(json!({"kind": "call", "method": "AssociateConsumer",
            "outcome": {"code": "PERMISSION_DENIED", "forwarded": false}}));
        let mut listing = intent(9);
        listing["kind"] = json!("call");
        listing["method"] = json!("ListConsumerDataShares");
        listing["outcome"] = json!({"code": "OK", "forwarded": true, "aws_request_id": "r9"});
        calls.record(listing);
        let calls = calls.finish();
        let results: Vec<_> = calls
            .iter()
            .map(|c| (c.request_id.as_str(), &c.result))
            .collect();
        assert_eq!(
            results,
            [
                ("gw-1", &CallResult::Ok),
                ("gw-3", &CallResult::Unknown),
                ("gw-9", &CallResult::Ok),
                ("gw-7", &CallResult::IntentOnly)
            ]
        );
        assert_eq!(calls[0].account, "444455556666", "the session's account");
        assert_eq!(calls[1].account, "777788889999", "the default account");
        assert_eq!(calls[0].operation, "AssociateDataShareConsumer");
        assert_eq!(calls[0].parameters.entire_account, Some(true));
        assert_eq!(calls[0].parameters.consumer, None);
        // An open intent's source identity is the principal's, as the gateway would have set it;
        // a call that ended has its outcome's (none here: the gateway's own credentials).
        assert_eq!(
            calls[3].source_identity,
            Some(crate::upstream::source_identity(
                "spiffe://example.internal/ns/data/sa/reporting"
            ))
        );
        assert_eq!(calls[1].source_identity, None);
    }

    #[test]
    fn a_cloudtrail_record_of_redshift_is_an_event_and_others_are_not() {
        let record = json!({
            "eventVersion": "1.08", "eventTime": "2026-12-07T11:00:01Z",
            "eventSource": "redshift.amazonaws.com", "eventName": "AssociateDataShareConsumer",
            "awsRegion": "us-east-1", "requestID": "r1", "eventID": "e1",
            "recipientAccountId": "444455556666",
            "userIdentity": {"type": "AssumedRole", "arn": SESSION, "accountId": "444455556666",
                "sessionContext": {"sourceIdentity": "reporting.data@example.internal",
                    "sessionIssuer": {"arn": "arn:aws:iam::444455556666:role/datashare-gateway"}}},
            "requestParameters": {"dataShareArn": SHARE, "associateEntireAccount": true},
            "responseElements": null
        });
        let event = event_of(&record).expect("a Redshift event");
        assert_eq!(event.actor_arn, SESSION);
        assert_eq!(
            event.issuer_arn.as_deref(),
            Some("arn:aws:iam::444455556666:role/datashare-gateway")
        );
        assert_eq!(event.parameters.data_share_arn.as_deref(), Some(SHARE));
        assert_eq!(event.parameters.entire_account, Some(true));
        let mut sts = record.clone();
        sts["eventSource"] = json!("sts.amazonaws.com");
        assert_eq!(event_of(&sts), None);
    }
}
