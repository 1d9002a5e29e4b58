//! The emulator's XML against botocore's copies of the Redshift and STS service models, and its
//! CloudTrail JSON against the CloudTrail model: every expectation (element names, result
//! wrappers, members, types, enum values, list encoding, error codes and statuses, namespaces)
//! is read from `tests/data/redshift-2012-12-01.service-2.json`,
//! `tests/data/sts-2011-06-15.service-2.json` and `tests/data/cloudtrail-2013-11-01.service-2.json`,
//! never written down here.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};
use support::emulator::*;

const OPERATIONS: [&str; 8] = [
    "AssociateDataShareConsumer",
    "AuthorizeDataShare",
    "DeauthorizeDataShare",
    "DescribeDataShares",
    "DescribeDataSharesForConsumer",
    "DescribeDataSharesForProducer",
    "DisassociateDataShareConsumer",
    "RejectDataShare",
];

fn model() -> Value {
    load_model("tests/data/redshift-2012-12-01.service-2.json")
}

fn sts_model() -> Value {
    load_model("tests/data/sts-2011-06-15.service-2.json")
}

fn load_model(path: &str) -> Value {
    let text = std::fs::read_to_string(repo_root().join(path)).expect("read the service model");
    serde_json::from_str(&text).expect("parse the service model")
}

/// A parsed XML element (enough XML for what the emulator writes).
#[derive(Debug)]
struct El {
    name: String,
    children: Vec<El>,
    text: String,
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

fn parse_xml(doc: &str) -> El {
    let mut s = doc.trim();
    if s.starts_with("<?xml") {
        s = s[s.find("?>").expect("end of declaration") + 2..].trim_start();
    }
    let (el, rest) = parse_el(s);
    assert!(rest.trim().is_empty(), "trailing content: {rest}");
    el
}

fn parse_el(s: &str) -> (El, &str) {
    assert!(s.starts_with('<'), "expected an element at {s:.40}");
    let end = s.find('>').expect("end of start tag");
    let tag = &s[1..end];
    let self_closing = tag.ends_with('/');
    let name = tag
        .trim_end_matches('/')
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned();
    let mut rest = &s[end + 1..];
    let mut el = El {
        name: name.clone(),
        children: Vec::new(),
        text: String::new(),
    };
    if self_closing {
        return (el, rest);
    }
    let close = format!("</{name}>");
    loop {
        if let Some(after) = rest.strip_prefix(close.as_str()) {
            return (el, after);
        }
        if rest.starts_with('<') {
            let (child, after) = parse_el(rest);
            el.children.push(child);
            rest = after;
        } else {
            let next = rest.find('<').expect("unterminated text");
            el.text.push_str(&unescape(&rest[..next]));
            rest = &rest[next..];
        }
    }
}

fn is_timestamp_with_z(v: &str) -> bool {
    // YYYY-MM-DDTHH:MM:SS(.fff)Z
    let b = v.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| r.clone().all(|i| b.get(i).is_some_and(u8::is_ascii_digit));
    b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && v.ends_with('Z')
        && (b.len() == 20 || (b[19] == b'.' && digits(20..b.len() - 1)))
}

/// Checks `el` against the model shape `shape_name`; records every (structure, member) seen.
fn check(model: &Value, el: &El, shape_name: &str, seen: &mut BTreeSet<(String, String)>) {
    let shape = &model["shapes"][shape_name];
    let ty = shape["type"].as_str().expect("shape type");
    let at = format!("<{}> ({shape_name})", el.name);
    match ty {
        "structure" => {
            let members = shape["members"].as_object().expect("members");
            for child in &el.children {
                let (member_name, member) = members
                    .iter()
                    .find(|(n, m)| m["locationName"].as_str().unwrap_or(n) == child.name)
                    .unwrap_or_else(|| {
                        panic!("{at}: <{}> is not a member in the model", child.name)
                    });
                seen.insert((shape_name.to_owned(), member_name.clone()));
                check(
                    model,
                    child,
                    member["shape"].as_str().expect("member shape"),
                    seen,
                );
            }
        }
        "list" => {
            let member = &shape["member"];
            assert!(
                shape["flattened"].as_bool() != Some(true),
                "model lists are wrapped"
            );
            let item = member["locationName"].as_str().unwrap_or("member");
            for child in &el.children {
                assert_eq!(child.name, item, "{at}: list items are <{item}>");
                check(
                    model,
                    child,
                    member["shape"].as_str().expect("list member shape"),
                    seen,
                );
            }
        }
        "boolean" => assert!(
            el.text == "true" || el.text == "false",
            "{at}: boolean {:?}",
            el.text
        ),
        "timestamp" => assert!(
            is_timestamp_with_z(&el.text),
            "{at}: timestamp {:?}",
            el.text
        ),
        "integer" | "long" => assert!(
            el.text.parse::<i64>().is_ok(),
            "{at}: integer {:?}",
            el.text
        ),
        "string" => {
            assert!(el.children.is_empty(), "{at}: a string has no children");
            if let Some(values) = shape["enum"].as_array() {
                assert!(
                    values.iter().any(|v| v == el.text.as_str()),
                    "{at}: {:?} not in {values:?}",
                    el.text
                );
            }
        }
        other => panic!("{at}: unexpected shape type {other}"),
    }
}

/// Checks a success envelope: `<OpResponse>` → `<resultWrapper>` first, then ResponseMetadata.
fn check_success(model: &Value, op: &str, xml: &str, seen: &mut BTreeSet<(String, String)>) {
    let operation = &model["operations"][op];
    let root = parse_xml(xml);
    assert_eq!(root.name, format!("{op}Response"));
    let wrapper = operation["output"]["resultWrapper"]
        .as_str()
        .expect("resultWrapper");
    assert_eq!(root.children.len(), 2, "{op}: result and metadata only");
    assert_eq!(root.children[0].name, wrapper, "{op}: result first");
    assert_eq!(root.children[1].name, "ResponseMetadata");
    assert_eq!(root.children[1].children[0].name, "RequestId");
    assert!(xml.contains(&format!(
        "xmlns=\"{}\"",
        model["metadata"]["xmlNamespace"].as_str().unwrap()
    )));
    let shape = operation["output"]["shape"].as_str().expect("output shape");
    check(model, &root.children[0], shape, seen);
}

/// Checks an error envelope; a modeled code must have the model's HTTP status.
fn check_error(model: &Value, op: &str, status: u16, xml: &str, want: &str) {
    let root = parse_xml(xml);
    assert_eq!(root.name, "ErrorResponse", "{op}: {xml}");
    let error = root
        .children
        .iter()
        .find(|c| c.name == "Error")
        .expect("<Error>");
    let field = |n: &str| {
        error
            .children
            .iter()
            .find(|c| c.name == n)
            .map(|c| c.text.clone())
    };
    let code = field("Code").expect("<Code>");
    assert_eq!(code, want, "{op}: {xml}");
    assert!(root.children.iter().any(|c| c.name == "RequestId"));
    let modeled = operation_errors(model, op);
    let shape = modeled
        .get(&code)
        .unwrap_or_else(|| panic!("{op}: {code} is not among the operation's modeled errors"));
    let error_trait = &model["shapes"][shape.as_str()]["error"];
    assert_eq!(
        Some(u64::from(status)),
        error_trait["httpStatusCode"].as_u64(),
        "{op}: {code}"
    );
    let sender = error_trait["senderFault"].as_bool().unwrap_or(false);
    assert_eq!(
        field("Type").as_deref(),
        Some(if sender { "Sender" } else { "Receiver" })
    );
}

/// The operation's modeled errors: code → shape name.
fn operation_errors(model: &Value, op: &str) -> BTreeMap<String, String> {
    model["operations"][op]["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["shape"].as_str())
        .map(|shape| {
            let code = model["shapes"][shape]["error"]["code"]
                .as_str()
                .unwrap_or(shape);
            (code.to_owned(), shape.to_owned())
        })
        .collect()
}

fn form(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

/// An access key id and secret.
type Key = (&'static str, &'static str);
/// Form members besides Action and Version.
type Params = Vec<(&'static str, &'static str)>;

const FULL_SHARE: &str = "arn:aws:redshift:us-east-1:111122223333:datashare:9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f/full_share";
const NO_SHARE: &str = "arn:aws:redshift:us-east-1:111122223333:datashare:9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f/no_such_share";

#[test]
fn every_output_member_has_the_models_name_type_and_wrapper() {
    let model = model();
    let emu = Emulator::start();
    // A fully populated datashare: every optional member set.
    emu.seed(json!({"datashares": [{
        "producer_namespace": "9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f",
        "name": "full_share",
        "allow_publicly_accessible_consumers": true,
        "managed_by": "ADX",
        "data_share_type": "INTERNAL",
        "grants": [
            {"consumer": CONSUMER_ACCOUNT, "status": "AUTHORIZED", "allow_writes": true,
             "associations": [{"consumer_region": "us-east-1", "allow_writes": true}]},
            {"consumer": OTHER_ACCOUNT, "status": "PENDING_AUTHORIZATION"}
        ]
    }]}));
    let api = emu.api_addr();
    let v = "2012-12-01";
    let calls: Vec<(&str, Key, Params)> = vec![
        (
            "DescribeDataSharesForConsumer",
            CONSUMER_KEY,
            vec![("MaxRecords", "1")],
        ),
        (
            "DescribeDataSharesForProducer",
            PRODUCER_KEY,
            vec![("MaxRecords", "1")],
        ),
        (
            "DescribeDataShares",
            PRODUCER_KEY,
            vec![("MaxRecords", "1")],
        ),
        (
            "DescribeDataShares",
            CONSUMER_KEY,
            vec![("DataShareArn", FULL_SHARE)],
        ),
        (
            "AssociateDataShareConsumer",
            CONSUMER_KEY,
            vec![
                ("DataShareArn", FULL_SHARE),
                ("ConsumerArn", CONSUMER_NAMESPACE),
                ("AllowWrites", "true"),
            ],
        ),
        (
            "DisassociateDataShareConsumer",
            CONSUMER_KEY,
            vec![
                ("DataShareArn", FULL_SHARE),
                ("ConsumerArn", CONSUMER_NAMESPACE),
            ],
        ),
        (
            "AuthorizeDataShare",
            PRODUCER_KEY,
            vec![
                ("DataShareArn", FULL_SHARE),
                ("ConsumerIdentifier", OTHER_ACCOUNT),
                ("AllowWrites", "true"),
            ],
        ),
        (
            "DeauthorizeDataShare",
            PRODUCER_KEY,
            vec![
                ("DataShareArn", FULL_SHARE),
                ("ConsumerIdentifier", OTHER_ACCOUNT),
            ],
        ),
        (
            "RejectDataShare",
            CONSUMER_KEY,
            vec![("DataShareArn", FULL_SHARE)],
        ),
    ];
    let mut seen = BTreeSet::new();
    let mut ops_seen = BTreeSet::new();
    for (op, key, params) in calls {
        let mut pairs = vec![("Action", op), ("Version", v)];
        pairs.extend(params);
        let (status, headers, xml) = signed_post(api, &form(&pairs), key);
        assert_eq!(status, 200, "{op}: {xml}");
        assert!(
            headers
                .iter()
                .any(|(k, v)| k == "content-type" && v == "text/xml")
        );
        check_success(&model, op, &xml, &mut seen);
        ops_seen.insert(op);
    }
    assert_eq!(ops_seen, OPERATIONS.into_iter().collect());

    // Every member of every output shape was emitted at least once.
    let mut shapes: BTreeSet<String> = OPERATIONS
        .iter()
        .map(|op| {
            model["operations"][op]["output"]["shape"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    shapes.insert("DataShare".into());
    shapes.insert("DataShareAssociation".into());
    for shape in shapes {
        for member in model["shapes"][shape.as_str()]["members"]
            .as_object()
            .unwrap()
            .keys()
        {
            assert!(
                seen.contains(&(shape.clone(), member.clone())),
                "{shape}.{member} never emitted"
            );
        }
    }
}

#[test]
fn every_modeled_error_has_the_models_status_and_type() {
    let model = model();
    let emu = Emulator::start();
    let api = emu.api_addr();
    let v = "2012-12-01";
    let cases: Vec<(&str, Key, Params, &str)> = vec![
        (
            "AssociateDataShareConsumer",
            CONSUMER_KEY,
            vec![
                ("DataShareArn", FINANCE_SHARE),
                ("AssociateEntireAccount", "true"),
            ],
            "InvalidDataShareFault",
        ),
        (
            "AssociateDataShareConsumer",
            CONSUMER_KEY,
            vec![
                ("DataShareArn", SALES_SHARE),
                ("ConsumerArn", OTHER_NAMESPACE),
            ],
            "InvalidNamespaceFault",
        ),
        (
            "DisassociateDataShareConsumer",
            CONSUMER_KEY,
            vec![
                ("DataShareArn", SALES_SHARE),
                ("DisassociateEntireAccount", "true"),
            ],
            "InvalidDataShareFault",
        ),
        (
            "DisassociateDataShareConsumer",
            CONSUMER_KEY,
            vec![
                ("DataShareArn", SALES_SHARE),
                ("ConsumerArn", OTHER_NAMESPACE),
            ],
            "InvalidNamespaceFault",
        ),
        (
            "DescribeDataShares",
            CONSUMER_KEY,
            vec![("DataShareArn", NO_SHARE)],
            "InvalidDataShareFault",
        ),
        (
            "DescribeDataSharesForConsumer",
            CONSUMER_KEY,
            vec![("ConsumerArn", OTHER_NAMESPACE)],
            "InvalidNamespaceFault",
        ),
        (
            "DescribeDataSharesForProducer",
            PRODUCER_KEY,
            vec![("ProducerArn", CONSUMER_NAMESPACE)],
            "InvalidNamespaceFault",
        ),
        (
            "AuthorizeDataShare",
            PRODUCER_KEY,
            vec![
                ("DataShareArn", NO_SHARE),
                ("ConsumerIdentifier", CONSUMER_ACCOUNT),
            ],
            "InvalidDataShareFault",
        ),
        (
            "DeauthorizeDataShare",
            PRODUCER_KEY,
            vec![
                ("DataShareArn", NO_SHARE),
                ("ConsumerIdentifier", CONSUMER_ACCOUNT),
            ],
            "InvalidDataShareFault",
        ),
        (
            "RejectDataShare",
            CONSUMER_KEY,
            vec![("DataShareArn", FINANCE_SHARE)],
            "InvalidDataShareFault",
        ),
    ];
    let mut covered: BTreeSet<(String, String)> = BTreeSet::new();
    for (op, key, params, want) in cases {
        let mut pairs = vec![("Action", op), ("Version", v)];
        pairs.extend(params);
        let (status, _, xml) = signed_post(api, &form(&pairs), key);
        check_error(&model, op, status, &xml, want);
        covered.insert((op.to_owned(), want.to_owned()));
    }
    // Each operation's every modeled error was provoked.
    for op in OPERATIONS {
        for code in operation_errors(&model, op).keys() {
            assert!(
                covered.contains(&(op.to_owned(), code.clone())),
                "{op} never returned {code}"
            );
        }
    }
}

/// AssumeRole members the emulator reads (form names).
const ASSUME_ROLE_INPUT: [&str; 7] = [
    "RoleArn",
    "RoleSessionName",
    "DurationSeconds",
    "ExternalId",
    "SourceIdentity",
    "Tags",
    "TransitiveTagKeys",
];

#[test]
fn assume_role_output_has_the_sts_models_names_types_and_wrapper() {
    let model = sts_model();
    let emu = Emulator::start();
    let version = model["metadata"]["apiVersion"].as_str().unwrap();
    let body = form(&[
        ("Action", "AssumeRole"),
        ("Version", version),
        ("RoleArn", OTHER_ROLE),
        ("RoleSessionName", "conformance"),
        ("DurationSeconds", "900"),
        ("ExternalId", OTHER_ROLE_EXTERNAL_ID),
        ("SourceIdentity", "alice"),
        ("Tags.member.1.Key", "team"),
        ("Tags.member.1.Value", "data"),
        ("TransitiveTagKeys.member.1", "team"),
    ]);
    let (status, headers, xml) = signed_post_for(emu.api_addr(), "sts", &body, PLATFORM_KEY);
    assert_eq!(status, 200, "{xml}");
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "content-type" && v == "text/xml")
    );
    let mut seen = BTreeSet::new();
    check_success(&model, "AssumeRole", &xml, &mut seen);
    // Every member of the output, credentials and user shapes was emitted (required or not).
    for shape in ["AssumeRoleResponse", "Credentials", "AssumedRoleUser"] {
        for member in model["shapes"][shape]["members"]
            .as_object()
            .unwrap()
            .keys()
        {
            assert!(
                seen.contains(&(shape.to_owned(), member.clone())),
                "{shape}.{member} never emitted"
            );
        }
    }
    // Every member the emulator reads is an input member, in the model's spelling.
    let input = model["operations"]["AssumeRole"]["input"]["shape"]
        .as_str()
        .unwrap();
    for member in ASSUME_ROLE_INPUT {
        assert!(
            model["shapes"][input]["members"].get(member).is_some(),
            "{member} is not an AssumeRole input member"
        );
    }
    // Tags are a list of the model's Tag structure: Key and Value.
    let tag = model["shapes"]["tagListType"]["member"]["shape"]
        .as_str()
        .unwrap();
    for member in ["Key", "Value"] {
        assert!(model["shapes"][tag]["members"].get(member).is_some());
    }
}

#[test]
fn sts_errors_have_the_query_error_shape_in_the_sts_namespace() {
    let model = sts_model();
    let emu = Emulator::start();
    let xmlns = model["metadata"]["xmlNamespace"].as_str().unwrap();
    let version = model["metadata"]["apiVersion"].as_str().unwrap();
    let assume = |extra: &[(&'static str, &'static str)]| {
        let mut pairs = vec![
            ("Action", "AssumeRole"),
            ("Version", version),
            ("RoleArn", OTHER_ROLE),
            ("RoleSessionName", "conformance"),
            ("SourceIdentity", "alice"),
        ];
        pairs.extend_from_slice(extra);
        form(&pairs)
    };
    let cases: Vec<(String, Key, u16, &str)> = vec![
        (
            assume(&[("ExternalId", "wrong-external-id")]),
            PLATFORM_KEY,
            403,
            "AccessDenied",
        ),
        (
            assume(&[
                ("ExternalId", OTHER_ROLE_EXTERNAL_ID),
                ("DurationSeconds", "60"),
            ]),
            PLATFORM_KEY,
            400,
            "ValidationError",
        ),
        (
            form(&[("Action", "GetCallerIdentity"), ("Version", version)]),
            PLATFORM_KEY,
            400,
            "InvalidAction",
        ),
        (
            assume(&[("ExternalId", OTHER_ROLE_EXTERNAL_ID)]),
            ("AKIAUNKNOWNEXAMPLE00", "x"),
            403,
            "InvalidClientTokenId",
        ),
    ];
    let modeled = operation_errors(&model, "AssumeRole");
    for (body, key, want_status, want_code) in cases {
        let (status, _, xml) = signed_post_for(emu.api_addr(), "sts", &body, key);
        assert_eq!(status, want_status, "{xml}");
        assert!(
            xml.contains(&format!("<ErrorResponse xmlns=\"{xmlns}\">")),
            "{xml}"
        );
        let root = parse_xml(&xml);
        assert_eq!(root.name, "ErrorResponse");
        let names: Vec<&str> = root.children.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["Error", "RequestId"], "no <Errors> wrapper: {xml}");
        let error = &root.children[0];
        let field = |n: &str| {
            error
                .children
                .iter()
                .find(|c| c.name == n)
                .map(|c| c.text.as_str())
        };
        assert_eq!(field("Type"), Some("Sender"));
        assert_eq!(field("Code"), Some(want_code));
        assert!(field("Message").is_some_and(|m| !m.is_empty()));
        // A code the model lists for AssumeRole must come with the model's status.
        if let Some(shape) = modeled.get(want_code) {
            assert_eq!(
                model["shapes"][shape.as_str()]["error"]["httpStatusCode"].as_u64(),
                Some(u64::from(status))
            );
        }
    }
}

fn cloudtrail_model() -> Value {
    load_model("tests/data/cloudtrail-2013-11-01.service-2.json")
}

/// Checks a JSON 1.1 value against the model's shape `name`: every member modeled, every
/// type the protocol's (timestamps as epoch-second numbers, blobs as base64 strings).
fn conforms(model: &Value, name: &str, value: &Value, at: &str) -> Result<(), String> {
    let shape = &model["shapes"][name];
    let ok = match shape["type"].as_str().unwrap_or_default() {
        "string" => value.is_string(),
        "blob" => value.as_str().is_some_and(|b| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.decode(b).is_ok()
        }),
        "timestamp" => value.is_number(),
        "integer" | "long" => value.is_i64(),
        "boolean" => value.is_boolean(),
        "list" => {
            let member = shape["member"]["shape"].as_str().unwrap_or_default();
            let items = value.as_array().ok_or(format!("{at}: not a list"))?;
            for (i, item) in items.iter().enumerate() {
                conforms(model, member, item, &format!("{at}[{i}]"))?;
            }
            true
        }
        "structure" => {
            let fields = value.as_object().ok_or(format!("{at}: not an object"))?;
            for (field, v) in fields {
                let member = shape["members"][field]["shape"]
                    .as_str()
                    .ok_or(format!("{at}.{field}: not a member of {name}"))?;
                conforms(model, member, v, &format!("{at}.{field}"))?;
            }
            true
        }
        other => return Err(format!("{at}: shape type {other} not checked")),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{at}: {value} is not a {name}"))
    }
}

#[tokio::test]
async fn cloudtrail_answers_and_errors_are_the_cloudtrail_models() {
    let model = cloudtrail_model();
    assert_eq!(model["metadata"]["protocol"], "json");
    assert_eq!(model["metadata"]["jsonVersion"], "1.1");
    let prefix = model["metadata"]["targetPrefix"]
        .as_str()
        .expect("targetPrefix");
    let emu = Emulator::start();
    emu.consumer()
        .associate_data_share_consumer()
        .data_share_arn(SALES_SHARE)
        .associate_entire_account(true)
        .send()
        .await
        .expect("associate");
    emu.consumer()
        .describe_data_shares()
        .send()
        .await
        .expect("describe");
    // Under two lookups a second: each starts more than half a second after the previous one
    // returned.
    let mut first = true;
    let mut call = async |op: &str, body: Value| {
        if !std::mem::take(&mut first) {
            tokio::time::sleep(std::time::Duration::from_millis(550)).await;
        }
        let (status, headers, text) = signed_json_post(
            emu.api_addr(),
            "cloudtrail",
            &format!("{prefix}.{op}"),
            &body.to_string(),
            CONSUMER_KEY,
        );
        let content_type = headers
            .iter()
            .find(|(k, _)| k == "content-type")
            .map(|(_, v)| v.clone());
        assert_eq!(content_type.as_deref(), Some("application/x-amz-json-1.1"));
        (status, serde_json::from_str::<Value>(&text).expect("JSON"))
    };

    let (status, page) = call("LookupEvents", json!({ "MaxResults": 1 })).await;
    assert_eq!(status, 200, "{page}");
    assert!(page["NextToken"].is_string(), "a second page: {page}");
    let output = model["operations"]["LookupEvents"]["output"]["shape"]
        .as_str()
        .expect("output shape");
    conforms(&model, output, &page, "LookupEvents").unwrap_or_else(|e| panic!("{e}"));
    let (status, keys) = call("ListPublicKeys", json!({})).await;
    assert_eq!(status, 200, "{keys}");
    let output = model["operations"]["ListPublicKeys"]["output"]["shape"]
        .as_str()
        .expect("output shape");
    conforms(&model, output, &keys, "ListPublicKeys").unwrap_or_else(|e| panic!("{e}"));

    let modeled: BTreeSet<&str> = model["operations"]["LookupEvents"]["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["shape"].as_str())
        .collect();
    for (body, code) in [
        (
            json!({ "LookupAttributes": [{ "AttributeKey": "Colour", "AttributeValue": "red" }] }),
            "InvalidLookupAttributesException",
        ),
        (json!({ "MaxResults": 0 }), "InvalidMaxResultsException"),
        (json!({ "NextToken": "x" }), "InvalidNextTokenException"),
        (
            json!({ "StartTime": 2_000_000_000, "EndTime": 1_000_000_000 }),
            "InvalidTimeRangeException",
        ),
        (
            json!({ "EventCategory": "data" }),
            "InvalidEventCategoryException",
        ),
    ] {
        let (status, err) = call("LookupEvents", body).await;
        assert_eq!((status, err["__type"].as_str()), (400, Some(code)), "{err}");
        assert!(err["message"].is_string(), "{err}");
        assert!(modeled.contains(code), "{code} is not a LookupEvents error");
        assert_eq!(model["shapes"][code]["exception"], true);
    }
    // The throttle is a modeled exception of the service, not of the operation.
    assert_eq!(model["shapes"]["ThrottlingException"]["exception"], true);
}
