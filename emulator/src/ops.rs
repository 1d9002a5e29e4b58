//! The eight datashare operations: decode members, call the state, write the result XML
//! exactly as the service model shapes it.

use super::protocol::{AwsError, QueryRequest, Xml};
use super::state::{DataShareView, Side, Store, TargetParams};

/// The operations the emulator implements, by `Action` name.
pub(crate) const OPERATIONS: [&str; 8] = [
    "AssociateDataShareConsumer",
    "AuthorizeDataShare",
    "DeauthorizeDataShare",
    "DescribeDataShares",
    "DescribeDataSharesForConsumer",
    "DescribeDataSharesForProducer",
    "DisassociateDataShareConsumer",
    "RejectDataShare",
];

/// The page size when `MaxRecords` is absent, and the largest accepted (assumption: the
/// model gives no bounds; 100 is what other Redshift Describe calls allow).
const MAX_RECORDS: i64 = 100;

/// The `OperationName` from `Action`, if the emulator implements it.
pub(crate) fn known(action: &str) -> Option<&'static str> {
    OPERATIONS.iter().copied().find(|op| *op == action)
}

/// Runs `action` for `caller` (an account id) and returns the inner XML of `<ActionResult>`.
pub(crate) fn call(
    store: &Store,
    caller: &str,
    action: &str,
    q: &QueryRequest,
) -> Result<String, AwsError> {
    let mut x = Xml::new();
    match action {
        "AuthorizeDataShare" => {
            let arn = q.required("DataShareArn")?;
            let consumer = q.required("ConsumerIdentifier")?;
            let allow = q.boolean("AllowWrites")?;
            write_share(&mut x, &store.authorize(caller, arn, consumer, allow)?);
        }
        "DeauthorizeDataShare" => {
            let arn = q.required("DataShareArn")?;
            let consumer = q.required("ConsumerIdentifier")?;
            write_share(&mut x, &store.deauthorize(caller, arn, consumer)?);
        }
        "AssociateDataShareConsumer" => {
            let arn = q.required("DataShareArn")?;
            let target = TargetParams {
                entire_account: q.boolean("AssociateEntireAccount")?,
                consumer_arn: q.string("ConsumerArn"),
                consumer_region: q.string("ConsumerRegion"),
            };
            let allow = q.boolean("AllowWrites")?;
            write_share(&mut x, &store.associate(caller, arn, &target, allow)?);
        }
        "DisassociateDataShareConsumer" => {
            let arn = q.required("DataShareArn")?;
            let target = TargetParams {
                entire_account: q.boolean("DisassociateEntireAccount")?,
                consumer_arn: q.string("ConsumerArn"),
                consumer_region: q.string("ConsumerRegion"),
            };
            write_share(&mut x, &store.disassociate(caller, arn, &target)?);
        }
        "RejectDataShare" => {
            let arn = q.required("DataShareArn")?;
            write_share(&mut x, &store.reject(caller, arn)?);
        }
        "DescribeDataShares" => {
            let (max, marker) = paging(q)?;
            let shares = store.describe(caller, q.string("DataShareArn"))?;
            write_page(&mut x, shares, max, marker);
        }
        "DescribeDataSharesForProducer" => {
            let (max, marker) = paging(q)?;
            // Status must be a DataShareStatusForProducer value (model enum); anything else →
            // InvalidParameterValue (assumption: the code is a guess).
            let status = enum_member(
                q,
                "Status",
                &[
                    "ACTIVE",
                    "AUTHORIZED",
                    "PENDING_AUTHORIZATION",
                    "DEAUTHORIZED",
                    "REJECTED",
                ],
            )?;
            let shares =
                store.describe_for(Side::Producer, caller, q.string("ProducerArn"), status)?;
            write_page(&mut x, shares, max, marker);
        }
        "DescribeDataSharesForConsumer" => {
            let (max, marker) = paging(q)?;
            // DataShareStatusForConsumer (model enum); InvalidParameterValue is an assumption.
            let status = enum_member(q, "Status", &["ACTIVE", "AVAILABLE"])?;
            let shares =
                store.describe_for(Side::Consumer, caller, q.string("ConsumerArn"), status)?;
            write_page(&mut x, shares, max, marker);
        }
        other => return Err(invalid_action(other)),
    }
    Ok(x.finish())
}

/// 400 `InvalidAction` (AWS Common Errors).
pub(crate) fn invalid_action(action: &str) -> AwsError {
    AwsError::new(
        http::StatusCode::BAD_REQUEST,
        "InvalidAction",
        format!("Could not find operation {action} for version 2012-12-01"),
    )
}

fn enum_member<'a>(
    q: &'a QueryRequest,
    name: &str,
    allowed: &[&str],
) -> Result<Option<&'a str>, AwsError> {
    match q.string(name) {
        Some(v) if !allowed.contains(&v) => Err(AwsError::invalid_value(name, v)),
        v => Ok(v),
    }
}

fn paging(q: &QueryRequest) -> Result<(usize, Option<&str>), AwsError> {
    let max = match q.integer("MaxRecords")? {
        None => MAX_RECORDS,
        // Assumption: the model gives no bounds; outside 1..=100 → InvalidParameterValue.
        Some(n) if (1..=MAX_RECORDS).contains(&n) => n,
        Some(n) => return Err(AwsError::invalid_value("MaxRecords", &n.to_string())),
    };
    Ok((usize::try_from(max).unwrap_or(100), q.string("Marker")))
}

/// Shares come sorted by ARN; the marker is the ARN of the first share of the next page, so a
/// page boundary survives shares being added or removed between calls. "Marker" is opaque in
/// the model; this encoding is the emulator's own.
fn write_page(x: &mut Xml, shares: Vec<DataShareView>, max: usize, marker: Option<&str>) {
    let start = marker.map_or(0, |m| shares.partition_point(|s| s.arn.as_str() < m));
    let rest = &shares[start..];
    x.open("DataShares");
    for share in rest.iter().take(max) {
        x.open("member");
        write_share(x, share);
        x.close("member");
    }
    x.close("DataShares");
    if let Some(next) = rest.get(max) {
        x.text("Marker", &next.arn);
    }
}

/// The `DataShare` structure, members in model order; optional members left out when unset.
fn write_share(x: &mut Xml, s: &DataShareView) {
    x.text("DataShareArn", &s.arn)
        .text("ProducerArn", &s.producer_arn)
        .boolean(
            "AllowPubliclyAccessibleConsumers",
            s.allow_publicly_accessible_consumers,
        )
        .open("DataShareAssociations");
    for a in &s.associations {
        x.open("member")
            .text("ConsumerIdentifier", &a.consumer_identifier)
            .text("Status", a.status);
        if let Some(r) = &a.consumer_region {
            x.text("ConsumerRegion", r);
        }
        x.timestamp("CreatedDate", a.created)
            .timestamp("StatusChangeDate", a.status_changed);
        if let Some(w) = a.producer_allowed_writes {
            x.boolean("ProducerAllowedWrites", w);
        }
        if let Some(w) = a.consumer_accepted_writes {
            x.boolean("ConsumerAcceptedWrites", w);
        }
        x.close("member");
    }
    x.close("DataShareAssociations");
    if let Some(m) = &s.managed_by {
        x.text("ManagedBy", m);
    }
    if let Some(t) = &s.data_share_type {
        x.text("DataShareType", t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arn::Region;
    use crate::fixtures::Fixtures;

    fn store() -> Store {
        Store::new(
            Region::parse("us-east-1").unwrap(),
            &Fixtures::dev().unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn pages_follow_the_marker_to_the_end() {
        let s = store();
        let mut marker: Option<String> = None;
        let mut seen = 0;
        loop {
            let mut body = "MaxRecords=1".to_owned();
            if let Some(m) = &marker {
                body.push_str("&Marker=");
                body.push_str(&form_urlencoded::byte_serialize(m.as_bytes()).collect::<String>());
            }
            let xml = call(
                &s,
                "111122223333",
                "DescribeDataSharesForProducer",
                &QueryRequest::parse(body.as_bytes()),
            )
            .unwrap();
            seen += xml.matches("<member><DataShareArn>").count();
            marker = xml
                .split("<Marker>")
                .nth(1)
                .map(|r| r.split("</Marker>").next().unwrap_or("").to_owned());
            if marker.is_none() {
                break;
            }
        }
        assert_eq!(seen, 3);
    }

    #[test]
    fn required_members_and_enums_are_checked() {
        let s = store();
        let e = call(
            &s,
            "444455556666",
            "RejectDataShare",
            &QueryRequest::parse(b""),
        )
        .unwrap_err();
        assert_eq!(e.code, "MissingParameter");
        let e = call(
            &s,
            "444455556666",
            "DescribeDataSharesForConsumer",
            &QueryRequest::parse(b"Status=REJECTED"),
        )
        .unwrap_err();
        assert_eq!(e.code, "InvalidParameterValue");
        let e = call(
            &s,
            "444455556666",
            "CreateCluster",
            &QueryRequest::parse(b""),
        )
        .unwrap_err();
        assert_eq!(e.code, "InvalidAction");
    }
}
