//! The emulator's STS AssumeRole through the real aws-sdk-sts client, the session credentials
//! it hands out through aws-sdk-redshift, and the CloudTrail-like event log.

use crate::support;

use std::time::{Duration, SystemTime};

use aws_sdk_redshift::types::DataShareStatus;
use aws_sdk_sts::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sts::operation::assume_role::builders::AssumeRoleFluentBuilder;
use aws_sdk_sts::types::{Credentials, Tag};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use serde_json::{Value, json};
use support::emulator::*;

/// The error code and HTTP status a failed call saw.
fn failure<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> (String, u16) {
    (
        e.code().unwrap_or("<none>").to_owned(),
        e.raw_response().map_or(0, |r| r.status().as_u16()),
    )
}

/// AssumeRole of OTHER_ROLE as the platform, with everything its trust asks for.
fn assume_other_role(emu: &Emulator) -> AssumeRoleFluentBuilder {
    emu.sts_client(PLATFORM_KEY)
        .assume_role()
        .role_arn(OTHER_ROLE)
        .role_session_name("dsgw-request-1")
        .external_id(OTHER_ROLE_EXTERNAL_ID)
        .source_identity("alice@example.com")
}

async fn session(emu: &Emulator, duration: Option<i32>) -> Credentials {
    let out = assume_other_role(emu)
        .set_duration_seconds(duration)
        .send()
        .await
        .expect("AssumeRole");
    out.credentials().expect("credentials").clone()
}

#[tokio::test]
async fn assume_role_hands_out_a_session_that_acts_as_the_roles_account() {
    let emu = Emulator::start();
    let tag = Tag::builder()
        .key("team")
        .value("data platform")
        .build()
        .unwrap();
    let before = SystemTime::now();
    let out = assume_other_role(&emu)
        .tags(tag)
        .transitive_tag_keys("team")
        .send()
        .await
        .unwrap();
    let creds = out.credentials().expect("credentials");
    assert!(creds.access_key_id().starts_with("ASIA"));
    assert_eq!(creds.access_key_id().len(), 20);
    assert!(!creds.secret_access_key().is_empty() && !creds.session_token().is_empty());
    // The default duration is 3600 s.
    let expires = SystemTime::try_from(*creds.expiration()).unwrap();
    let lifetime = expires.duration_since(before).unwrap();
    assert!(
        (Duration::from_secs(3590)..=Duration::from_secs(3610)).contains(&lifetime),
        "{lifetime:?}"
    );
    let user = out.assumed_role_user().expect("assumed role user");
    assert_eq!(
        user.arn(),
        "arn:aws:sts::777788889999:assumed-role/datashare-gateway/dsgw-request-1"
    );
    assert!(user.assumed_role_id().starts_with("AROA"));
    assert!(user.assumed_role_id().ends_with(":dsgw-request-1"));
    assert_eq!(out.source_identity(), Some("alice@example.com"));
    // With session tags AWS reports how much of the packed limit they use.
    assert!(
        out.session_token_utilization()
            .is_some_and(|p| (0..=100).contains(&p))
    );
    assert_eq!(
        out.session_token_size(),
        i32::try_from(creds.session_token().len()).ok()
    );

    // The session's key signs Redshift calls as 777788889999, which sees sales_share.
    let shares = emu
        .session_client(creds)
        .describe_data_shares_for_consumer()
        .send()
        .await
        .unwrap();
    let sales = shares
        .data_shares()
        .iter()
        .find(|s| s.data_share_arn() == Some(SALES_SHARE))
        .expect("sales_share listed for 777788889999");
    let assoc = &sales.data_share_associations()[0];
    assert_eq!(assoc.consumer_identifier(), Some(OTHER_ACCOUNT));
    assert_eq!(assoc.status(), Some(&DataShareStatus::Available));
    assert_eq!(emu.counter("AssumeRole", "forwarded"), 1);
}

#[tokio::test]
async fn trust_failures_are_access_denied() {
    let emu = Emulator::start();
    let platform = emu.sts_client(PLATFORM_KEY);
    let denied = [
        (
            "wrong external id",
            assume_other_role(&emu).external_id("dsgw-444455556666-example"),
        ),
        (
            "no external id",
            assume_other_role(&emu).set_external_id(None),
        ),
        (
            "no source identity",
            assume_other_role(&emu).set_source_identity(None),
        ),
        (
            "untrusted account",
            emu.sts_client(CONSUMER_KEY)
                .assume_role()
                .role_arn(CONSUMER_ROLE)
                .role_session_name("s1")
                .external_id(CONSUMER_ROLE_EXTERNAL_ID)
                .source_identity("alice"),
        ),
        (
            "unknown role",
            platform
                .assume_role()
                .role_arn("arn:aws:iam::777788889999:role/no-such-role")
                .role_session_name("s1")
                .external_id(OTHER_ROLE_EXTERNAL_ID)
                .source_identity("alice"),
        ),
    ];
    for (case, call) in denied {
        let e = call.send().await.expect_err(case);
        assert_eq!(failure(&e), ("AccessDenied".into(), 403), "{case}");
    }
    let e = assume_other_role(&emu)
        .external_id("not-the-external-id")
        .send()
        .await
        .unwrap_err();
    assert!(
        e.message()
            .unwrap_or_default()
            .starts_with("User: arn:aws:iam::210987654321:user/datashare-gateway is not authorized to perform: sts:AssumeRole on resource: arn:aws:iam::777788889999:role/datashare-gateway"),
        "{:?}",
        e.message()
    );
}

#[tokio::test]
async fn members_that_break_the_model_are_validation_errors() {
    let emu = Emulator::start();
    let invalid = [
        (
            "session name with a space",
            assume_other_role(&emu).role_session_name("a b"),
        ),
        (
            "session name of one character",
            assume_other_role(&emu).role_session_name("a"),
        ),
        (
            "session name of 65 characters",
            assume_other_role(&emu).role_session_name("a".repeat(65)),
        ),
        (
            "source identity with a slash",
            assume_other_role(&emu).source_identity("alice/bob"),
        ),
        (
            "source identity with the reserved prefix",
            assume_other_role(&emu).source_identity("aws:alice"),
        ),
        (
            "duration below 900",
            assume_other_role(&emu).duration_seconds(899),
        ),
        (
            "duration above 43200",
            assume_other_role(&emu).duration_seconds(43201),
        ),
        (
            "tag key with a bang",
            assume_other_role(&emu).tags(Tag::builder().key("a!").value("v").build().unwrap()),
        ),
    ];
    for (case, call) in invalid {
        let e = call.send().await.expect_err(case);
        assert_eq!(failure(&e), ("ValidationError".into(), 400), "{case}");
    }
    let e = assume_other_role(&emu)
        .role_session_name("a b")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        e.message(),
        Some(
            "1 validation error detected: Value 'a b' at 'roleSessionName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]*"
        )
    );
    assert_eq!(emu.counter("AssumeRole", "forwarded"), 9);
}

#[tokio::test]
async fn an_expired_session_gets_expired_token_from_redshift() {
    let emu = Emulator::start();
    let creds = session(&emu, Some(900)).await;
    let redshift = emu.session_client(&creds);
    redshift.describe_data_shares().send().await.unwrap();

    let clock = emu.advance_clock(899);
    assert_eq!(clock["offset_secs"], 899);
    redshift.describe_data_shares().send().await.unwrap();
    emu.advance_clock(1);
    let e = redshift.describe_data_shares().send().await.unwrap_err();
    assert_eq!(failure(&e), ("ExpiredToken".into(), 400));
    assert_eq!(
        e.message(),
        Some("The security token included in the request is expired")
    );
    // A new session (the gateway's renewal) works again on the moved clock.
    let renewed = session(&emu, None).await;
    emu.session_client(&renewed)
        .describe_data_shares()
        .send()
        .await
        .unwrap();
    // POST /reset puts the clock back and forgets every session.
    emu.reset();
    assert_eq!(emu.admin("GET", "/clock", None).1["offset_secs"], 0);
    let e = emu
        .session_client(&renewed)
        .describe_data_shares()
        .send()
        .await
        .unwrap_err();
    assert_eq!(failure(&e), ("InvalidClientTokenId".into(), 403));
}

#[tokio::test]
async fn an_unknown_token_or_key_is_invalid_client_token_id() {
    let emu = Emulator::start();
    let creds = session(&emu, None).await;
    let endpoint = emu.endpoint_url();
    let wrong_token = session_client(
        &endpoint,
        creds.access_key_id(),
        creds.secret_access_key(),
        "bm90LXRoZS10b2tlbg==",
    );
    let e = wrong_token.describe_data_shares().send().await.unwrap_err();
    assert_eq!(failure(&e), ("InvalidClientTokenId".into(), 403));
    let unknown_key = session_client(
        &endpoint,
        "ASIAUNKNOWNEXAMPLE00",
        creds.secret_access_key(),
        creds.session_token(),
    );
    let e = unknown_key.describe_data_shares().send().await.unwrap_err();
    assert_eq!(failure(&e), ("InvalidClientTokenId".into(), 403));
    // Without the token the session's key is refused as well.
    let e = client(
        &endpoint,
        creds.access_key_id(),
        creds.secret_access_key(),
        1,
    )
    .describe_data_shares()
    .send()
    .await
    .unwrap_err();
    assert_eq!(failure(&e).0, "InvalidClientTokenId");
}

#[tokio::test]
async fn injected_throttling_on_assume_role_is_retried_by_the_sdk() {
    let emu = Emulator::start();
    emu.inject_fault(json!({"kind": "throttling", "operation": "AssumeRole", "count": 2}));
    assume_other_role(&emu).send().await.unwrap();
    assert_eq!(
        emu.attempts("AssumeRole").into_iter().collect::<Vec<_>>(),
        [(1, 1), (2, 1), (3, 1)]
    );
    let counters = emu.counters();
    assert_eq!(
        counters["operations"]["AssumeRole"]["faults"]["throttling"],
        2
    );
    assert_eq!(counters["operations"]["AssumeRole"]["forwarded"], 1);

    emu.inject_fault(json!({"kind": "throttling", "operation": "AssumeRole", "count": 3}));
    let e = assume_other_role(&emu).send().await.unwrap_err();
    assert_eq!(failure(&e), ("Throttling".into(), 400));
    // A rule for AssumeRole leaves Redshift alone.
    emu.inject_fault(json!({"kind": "internal_failure", "operation": "AssumeRole"}));
    emu.consumer().describe_data_shares().send().await.unwrap();
}

/// Every string in a JSON document.
fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|i| strings(i, out)),
        Value::Object(map) => map.iter().for_each(|(k, i)| {
            out.push(k.clone());
            strings(i, out);
        }),
        _ => {}
    }
}

#[tokio::test]
async fn the_event_log_records_the_session_from_assume_role_to_redshift() {
    let emu = Emulator::start();
    emu.consumer().describe_data_shares().send().await.unwrap();
    emu.reset_events();
    assert!(emu.events().is_empty());

    let out = assume_other_role(&emu)
        .duration_seconds(900)
        .tags(Tag::builder().key("team").value("data").build().unwrap())
        .send()
        .await
        .unwrap();
    let creds = out.credentials().unwrap().clone();
    emu.session_client(&creds)
        .describe_data_shares_for_consumer()
        .max_records(10)
        .send()
        .await
        .unwrap();
    let denied = assume_other_role(&emu).external_id("wrong").send().await;
    assert!(denied.is_err());

    let events = emu.events();
    assert_eq!(events.len(), 3, "{events:#?}");
    let assume = &events[0];
    assert_eq!(assume["eventSource"], "sts.amazonaws.com");
    assert_eq!(assume["eventName"], "AssumeRole");
    assert_eq!(assume["recipientAccountId"], OTHER_ACCOUNT);
    assert!(assume.get("errorCode").is_none());
    assert_eq!(assume["userIdentity"]["type"], "IAMUser");
    assert_eq!(assume["userIdentity"]["accountId"], PLATFORM_ACCOUNT);
    assert_eq!(assume["userIdentity"]["accessKeyId"], PLATFORM_KEY.0);
    assert_eq!(
        assume["userIdentity"]["arn"],
        "arn:aws:iam::210987654321:user/datashare-gateway"
    );
    assert_eq!(
        assume["requestParameters"],
        json!({
            "roleArn": OTHER_ROLE,
            "roleSessionName": "dsgw-request-1",
            "sourceIdentity": "alice@example.com",
            "durationSeconds": 900,
            "tags": [{"key": "team", "value": "data"}],
        })
    );
    assert_eq!(
        assume["responseElements"]["credentials"]["accessKeyId"],
        creds.access_key_id()
    );
    assert_eq!(
        assume["responseElements"]["assumedRoleUser"]["arn"],
        "arn:aws:sts::777788889999:assumed-role/datashare-gateway/dsgw-request-1"
    );
    assert!(
        time::OffsetDateTime::parse(
            assume["eventTime"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339
        )
        .is_ok()
    );
    assert!(assume["eventTime"].as_str().unwrap().ends_with('Z'));
    assert_eq!(assume["requestID"].as_str().map(str::len), Some(36));

    let redshift = &events[1];
    assert_eq!(redshift["eventSource"], "redshift.amazonaws.com");
    assert_eq!(redshift["eventName"], "DescribeDataSharesForConsumer");
    assert_eq!(redshift["recipientAccountId"], OTHER_ACCOUNT);
    assert_eq!(redshift["requestParameters"], json!({"maxRecords": 10}));
    let who = &redshift["userIdentity"];
    assert_eq!(who["type"], "AssumedRole");
    assert_eq!(who["accountId"], OTHER_ACCOUNT);
    assert_eq!(who["accessKeyId"], creds.access_key_id());
    assert_eq!(
        who["arn"],
        "arn:aws:sts::777788889999:assumed-role/datashare-gateway/dsgw-request-1"
    );
    assert_eq!(who["sessionContext"]["sourceIdentity"], "alice@example.com");
    assert_eq!(who["sessionContext"]["sessionIssuer"]["type"], "Role");
    assert_eq!(who["sessionContext"]["sessionIssuer"]["arn"], OTHER_ROLE);

    let failed = &events[2];
    assert_eq!(failed["eventName"], "AssumeRole");
    assert_eq!(failed["errorCode"], "AccessDenied");
    assert_eq!(failed["recipientAccountId"], PLATFORM_ACCOUNT);

    // No secret, token or external id anywhere in the log.
    let mut all = Vec::new();
    strings(&Value::Array(events.clone()), &mut all);
    for secret in [
        creds.secret_access_key(),
        creds.session_token(),
        PLATFORM_KEY.1,
        OTHER_ROLE_EXTERNAL_ID,
        "wrong",
    ] {
        assert!(
            all.iter().all(|s| !s.contains(secret)),
            "{secret} is in the events"
        );
    }
    assert!(all.iter().all(|s| s != "externalId"));

    emu.reset_events();
    assert!(emu.events().is_empty());
    emu.consumer().describe_data_shares().send().await.unwrap();
    assert_eq!(emu.events().len(), 1);
    emu.reset();
    assert!(emu.events().is_empty());
}

#[tokio::test]
async fn signature_failures_with_a_known_key_are_recorded_and_unknown_keys_are_not() {
    let emu = Emulator::start();
    let wrong_secret = client(&emu.endpoint_url(), CONSUMER_KEY.0, "not-the-secret", 1);
    let e = wrong_secret
        .describe_data_shares()
        .send()
        .await
        .unwrap_err();
    assert_eq!(failure(&e).0, "SignatureDoesNotMatch");
    let unknown = client(&emu.endpoint_url(), "AKIAUNKNOWNEXAMPLE00", "x", 1);
    unknown.describe_data_shares().send().await.unwrap_err();

    let events = emu.events();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["errorCode"], "SignatureDoesNotMatch");
    assert_eq!(events[0]["userIdentity"]["type"], "IAMUser");
    assert_eq!(
        events[0]["userIdentity"]["arn"],
        "arn:aws:iam::444455556666:user/consumer-admin"
    );
}
