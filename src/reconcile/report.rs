//! A reconciliation as people and programs read it: a table with a summary of counts, or one
//! JSON object a line with stable field names.

use std::collections::BTreeMap;
use std::io::Write;

use super::matching::{AwsEvent, Finding, GatewayCall, Reconciliation};

/// How findings are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A readable table and a summary.
    Table,
    /// One finding a line (`{"kind": ..., ...}`); the summary goes to stderr.
    Json,
}

/// Counts by kind, every kind present (0 when none).
pub fn counts(reconciliation: &Reconciliation) -> BTreeMap<&'static str, usize> {
    let mut counts: BTreeMap<&'static str, usize> = [
        "bypass",
        "unrecorded",
        "mismatch",
        "missing_in_aws",
        "resolved",
    ]
    .into_iter()
    .map(|kind| (kind, 0))
    .collect();
    for finding in &reconciliation.findings {
        *counts.entry(finding.kind()).or_default() += 1;
    }
    counts
}

/// The summary line.
pub fn summary(reconciliation: &Reconciliation) -> String {
    let counts = counts(reconciliation);
    let kinds: Vec<String> = counts.iter().map(|(k, n)| format!("{k} {n}")).collect();
    format!(
        "{} finding(s): {}; {} call(s) matched, {} within the delivery grace",
        reconciliation.findings.len(),
        kinds.join(", "),
        reconciliation.matched,
        reconciliation.pending
    )
}

/// Writes `reconciliation` in `format` to `out` (and, for JSON, its summary to `err`).
pub fn write(
    reconciliation: &Reconciliation,
    format: Format,
    out: &mut impl Write,
    err: &mut impl Write,
) -> std::io::Result<()> {
    match format {
        Format::Json => {
            for finding in &reconciliation.findings {
                serde_json::to_writer(&mut *out, finding)?;
                writeln!(out)?;
            }
            writeln!(err, "{}", summary(reconciliation))?;
        }
        Format::Table => {
            if !reconciliation.findings.is_empty() {
                writeln!(
                    out,
                    "{:<15} {:<21} {:<13} {:<30} WHAT",
                    "KIND", "TIME", "ACCOUNT", "OPERATION"
                )?;
            }
            for finding in &reconciliation.findings {
                let (time, account, operation, what) = row(finding);
                writeln!(
                    out,
                    "{:<15} {time:<21} {account:<13} {operation:<30} {what}",
                    finding.kind()
                )?;
            }
            writeln!(out, "{}", summary(reconciliation))?;
        }
    }
    Ok(())
}

fn when(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn of_event(event: &AwsEvent) -> (String, String, String) {
    (
        when(event.event_time),
        event.account.clone(),
        event.operation.clone(),
    )
}

fn of_call(call: &GatewayCall) -> (String, String, String) {
    (
        when(call.received_at),
        call.account.clone(),
        call.operation.clone(),
    )
}

fn row(finding: &Finding) -> (String, String, String, String) {
    let share = |p: &super::matching::Parameters| p.data_share_arn.clone().unwrap_or_default();
    match finding {
        Finding::Bypass { event } => {
            let (t, a, o) = of_event(event);
            (
                t,
                a,
                o,
                format!(
                    "by {} on {} (CloudTrail requestID {})",
                    event.actor_arn,
                    share(&event.parameters),
                    event.request_id.as_deref().unwrap_or("-")
                ),
            )
        }
        Finding::Unrecorded { event } => {
            let (t, a, o) = of_event(event);
            (
                t,
                a,
                o,
                format!(
                    "through the gateway's role as {} with no audit record (requestID {})",
                    event.actor_arn,
                    event.request_id.as_deref().unwrap_or("-")
                ),
            )
        }
        Finding::Mismatch {
            call, differences, ..
        } => {
            let (t, a, o) = of_call(call);
            (
                t,
                a,
                o,
                format!("request {}: {}", call.request_id, differences.join("; ")),
            )
        }
        Finding::MissingInAws { call } => {
            let (t, a, o) = of_call(call);
            (
                t,
                a,
                o,
                format!(
                    "request {} forwarded (Redshift request id {}) but no CloudTrail event",
                    call.request_id,
                    call.aws_request_id.as_deref().unwrap_or("-")
                ),
            )
        }
        Finding::Resolved {
            call,
            happened,
            event,
        } => {
            let (t, a, o) = of_call(call);
            let what = match (happened, event) {
                (true, Some(event)) => format!(
                    "request {}: carried out in AWS (requestID {})",
                    call.request_id,
                    event.request_id.as_deref().unwrap_or("-")
                ),
                (false, Some(event)) => format!(
                    "request {}: refused by AWS with {} (requestID {})",
                    call.request_id,
                    event.error_code.as_deref().unwrap_or("-"),
                    event.request_id.as_deref().unwrap_or("-")
                ),
                (_, None) => format!(
                    "request {}: not carried out (no event after the grace)",
                    call.request_id
                ),
            };
            (t, a, o, what)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::matching::{CallResult, Parameters};

    fn missing() -> Reconciliation {
        Reconciliation {
            findings: vec![Finding::MissingInAws {
                call: GatewayCall {
                    request_id: "gw-1".into(),
                    operation: "AssociateDataShareConsumer".into(),
                    account: "444455556666".into(),
                    received_at: time::macros::datetime!(2026-12-07 11:00:00.5 UTC),
                    aws_request_id: Some("r1".into()),
                    assumed_role_arn: None,
                    source_identity: None,
                    parameters: Parameters::default(),
                    result: CallResult::Ok,
                },
            }],
            matched: 3,
            pending: 1,
        }
    }

    #[test]
    fn a_table_names_each_finding_and_ends_with_the_counts() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        write(&missing(), Format::Table, &mut out, &mut err).unwrap();
        let out = String::from_utf8(out).unwrap();
        let lines: Vec<_> = out.lines().collect();
        assert!(lines[0].starts_with("KIND"), "{out}");
        assert!(
            lines[1].starts_with("missing_in_aws  2026-12-07T11:00:00Z  444455556666"),
            "{out}"
        );
        assert!(
            lines[1].contains("request gw-1") && lines[1].contains("r1"),
            "{out}"
        );
        assert_eq!(
            lines[2],
            "1 finding(s): bypass 0, mismatch 0, missing_in_aws 1, resolved 0, unrecorded 0; 3 call(s) matched, 1 within the delivery grace"
        );
        assert!(err.is_empty());
    }

    #[test]
    fn json_is_one_finding_a_line_and_the_summary_on_stderr() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        write(&missing(), Format::Json, &mut out, &mut err).unwrap();
        let line: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(line["kind"], "missing_in_aws");
        assert_eq!(line["call"]["received_at"], "2026-12-07T11:00:00.5Z");
        assert!(String::from_utf8(err).unwrap().starts_with("1 finding(s)"));
    }
}
