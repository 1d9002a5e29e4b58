//! Every error path, as the Rust SDK (and, for requests it would not send, raw HTTP) sees it.

use crate::support;

use aws_sdk_redshift::error::ProvideErrorMetadata;
use aws_sdk_redshift::operation::RequestId;
use support::emulator::*;

#[tokio::test]
async fn associating_a_share_never_granted_is_invalid_datashare_fault() {
    let emu = Emulator::start();
    let err = emu
        .consumer()
        .associate_data_share_consumer()
        .data_share_arn(FINANCE_SHARE)
        .associate_entire_account(true)
        .send()
        .await
        .unwrap_err();
    let se = err.as_service_error().expect("a service error");
    assert!(se.is_invalid_data_share_fault(), "{se:?}");
    assert_eq!(se.code(), Some("InvalidDataShareFault"));
    assert!(err.request_id().is_some());
    assert_eq!(emu.counter("AssociateDataShareConsumer", "forwarded"), 1);
}

#[tokio::test]
async fn unknown_and_malformed_share_arns_are_invalid_datashare_fault() {
    let emu = Emulator::start();
    for arn in [
        "arn:aws:redshift:us-east-1:111122223333:datashare:9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f/no_such_share",
        "not an arn",
    ] {
        let err = emu
            .producer()
            .describe_data_shares()
            .data_share_arn(arn)
            .send()
            .await
            .unwrap_err();
        assert!(
            err.as_service_error()
                .unwrap()
                .is_invalid_data_share_fault(),
            "{arn}"
        );
    }
    let err = emu
        .producer()
        .deauthorize_data_share()
        .data_share_arn(FINANCE_SHARE)
        .consumer_identifier(CONSUMER_ACCOUNT)
        .send()
        .await
        .unwrap_err();
    assert!(
        err.as_service_error()
            .unwrap()
            .is_invalid_data_share_fault()
    );
}

#[tokio::test]
async fn deauthorizing_twice_says_authorization_was_already_removed() {
    let emu = Emulator::start();
    let p = emu.producer();
    p.deauthorize_data_share()
        .data_share_arn(SALES_SHARE)
        .consumer_identifier(CONSUMER_ACCOUNT)
        .send()
        .await
        .unwrap();
    let err = p
        .deauthorize_data_share()
        .data_share_arn(SALES_SHARE)
        .consumer_identifier(CONSUMER_ACCOUNT)
        .send()
        .await
        .unwrap_err();
    let se = err.as_service_error().unwrap();
    assert!(se.is_invalid_data_share_fault());
    assert!(
        se.message()
            .unwrap_or_default()
            .contains("already removed authorization")
    );
    // And the consumer lost access.
    let err = emu
        .consumer()
        .associate_data_share_consumer()
        .data_share_arn(SALES_SHARE)
        .associate_entire_account(true)
        .send()
        .await
        .unwrap_err();
    assert!(
        err.as_service_error()
            .unwrap()
            .is_invalid_data_share_fault()
    );
}

#[tokio::test]
async fn someone_elses_or_unknown_namespace_is_invalid_namespace_fault() {
    let emu = Emulator::start();
    let err = emu
        .consumer()
        .associate_data_share_consumer()
        .data_share_arn(SALES_SHARE)
        .consumer_arn(OTHER_NAMESPACE)
        .send()
        .await
        .unwrap_err();
    assert!(err.as_service_error().unwrap().is_invalid_namespace_fault());

    let err = emu
        .consumer()
        .describe_data_shares_for_consumer()
        .consumer_arn("arn:aws:redshift:us-east-1:444455556666:namespace:00000000-0000-0000-0000-000000000000")
        .send()
        .await
        .unwrap_err();
    assert!(err.as_service_error().unwrap().is_invalid_namespace_fault());

    let err = emu
        .producer()
        .describe_data_shares_for_producer()
        .producer_arn(CONSUMER_NAMESPACE)
        .send()
        .await
        .unwrap_err();
    assert!(err.as_service_error().unwrap().is_invalid_namespace_fault());
}

#[tokio::test]
async fn none_or_several_association_targets_is_invalid_parameter_combination() {
    let emu = Emulator::start();
    let c = emu.consumer();
    let none = c
        .associate_data_share_consumer()
        .data_share_arn(SALES_SHARE)
        .send()
        .await
        .unwrap_err();
    assert_eq!(none.code(), Some("InvalidParameterCombination"));
    let two = c
        .associate_data_share_consumer()
        .data_share_arn(SALES_SHARE)
        .associate_entire_account(true)
        .consumer_region("us-east-1")
        .send()
        .await
        .unwrap_err();
    assert_eq!(two.code(), Some("InvalidParameterCombination"));
    let dis = c
        .disassociate_data_share_consumer()
        .data_share_arn(SALES_SHARE)
        .disassociate_entire_account(true)
        .consumer_arn(CONSUMER_NAMESPACE)
        .send()
        .await
        .unwrap_err();
    assert_eq!(dis.code(), Some("InvalidParameterCombination"));
}

#[tokio::test]
async fn a_request_without_datashare_arn_is_missing_parameter() {
    let emu = Emulator::start();
    // The Rust client does not enforce required members, so this reaches the server.
    let err = emu
        .consumer()
        .associate_data_share_consumer()
        .associate_entire_account(true)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("MissingParameter"));
    assert!(err.message().unwrap_or_default().contains("DataShareArn"));
    let err = emu
        .producer()
        .authorize_data_share()
        .data_share_arn(FINANCE_SHARE)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("MissingParameter"));
}

#[tokio::test]
async fn bad_values_are_invalid_parameter_value() {
    let emu = Emulator::start();
    let err = emu
        .consumer()
        .associate_data_share_consumer()
        .data_share_arn(SALES_SHARE)
        .consumer_region("moon-base-1x")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("InvalidParameterValue"));
    let err = emu
        .producer()
        .describe_data_shares()
        .max_records(0)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("InvalidParameterValue"));
}

#[tokio::test]
async fn an_unknown_access_key_is_invalid_client_token_id_and_not_forwarded() {
    let emu = Emulator::start();
    let c = client(&emu.endpoint_url(), "AKIAUNKNOWNEXAMPLE00", "secret", 1);
    let err = c.describe_data_shares().send().await.unwrap_err();
    assert_eq!(err.code(), Some("InvalidClientTokenId"));
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(403));
    assert_eq!(emu.counter("DescribeDataShares", "received"), 1);
    assert_eq!(emu.counter("DescribeDataShares", "forwarded"), 0);
    assert_eq!(emu.counter("DescribeDataShares", "answered"), 1);
}

#[tokio::test]
async fn a_wrong_secret_is_signature_does_not_match() {
    let emu = Emulator::start();
    let c = client(&emu.endpoint_url(), CONSUMER_KEY.0, "not-the-secret", 1);
    let err = c.describe_data_shares().send().await.unwrap_err();
    assert_eq!(err.code(), Some("SignatureDoesNotMatch"));
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(403));
    assert_eq!(emu.counter("DescribeDataShares", "forwarded"), 0);
}

#[test]
fn an_unsigned_request_is_missing_authentication_token() {
    let emu = Emulator::start();
    let (status, headers, body) = raw_http_full(
        emu.api_addr(),
        "POST",
        "/",
        &[("content-type", "application/x-www-form-urlencoded")],
        b"Action=DescribeDataShares&Version=2012-12-01",
    );
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 403);
    assert!(
        body.contains("<Code>MissingAuthenticationToken</Code>"),
        "{body}"
    );
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "x-amzn-requestid" && !v.is_empty())
    );
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "content-type" && v == "text/xml")
    );
}

#[test]
fn a_malformed_authorization_header_is_incomplete_signature() {
    let emu = Emulator::start();
    let (status, body) = raw_http(
        emu.api_addr(),
        "POST",
        "/",
        &[
            (
                "authorization",
                "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE",
            ),
            ("x-amz-date", "20260101T000000Z"),
        ],
        b"Action=DescribeDataShares&Version=2012-12-01",
    );
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("<Code>IncompleteSignature</Code>"));
}

#[test]
fn missing_or_unknown_action_and_wrong_version_are_aws_errors() {
    let emu = Emulator::start();
    let cases = [
        ("Version=2012-12-01", "MissingAction"),
        ("Action=CreateCluster&Version=2012-12-01", "InvalidAction"),
        (
            "Action=DescribeDataShares&Version=2099-01-01",
            "InvalidAction",
        ),
        ("Action=DescribeDataShares", "MissingParameter"),
    ];
    for (body, code) in cases {
        let (status, _, xml) = signed_post(emu.api_addr(), body, CONSUMER_KEY);
        assert_eq!(status, 400, "{body}");
        assert!(
            xml.contains(&format!("<Code>{code}</Code>")),
            "{body}: {xml}"
        );
        assert!(xml.contains("<Type>Sender</Type>"));
        assert!(!xml.contains("<Errors>"));
    }
    // botocore encodes spaces as '+' and the emulator decodes them.
    let (status, _, xml) = signed_post(
        emu.api_addr(),
        "Action=DescribeDataShares&Version=2012-12-01&DataShareArn=arn%3Aaws%3Aredshift%3Aus-east-1%3A111122223333%3Adatashare%3A9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f%2Fno+such",
        CONSUMER_KEY,
    );
    assert_eq!(status, 400);
    assert!(xml.contains("/no such"), "{xml}");
}

#[test]
fn a_body_declared_over_one_mebibyte_is_refused_unread() {
    use std::io::{Read, Write};
    let emu = Emulator::start();
    // Only the headers are sent: the emulator must answer from Content-Length alone.
    let mut stream = std::net::TcpStream::connect(emu.api_addr()).unwrap();
    stream
        .write_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 1048577\r\n\r\n")
        .unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut buf = vec![0; 4096];
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains("</ErrorResponse>") {
        let n = stream.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "connection closed before a response: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("<Code>RequestEntityTooLarge</Code>"));
}

#[tokio::test]
async fn a_key_that_requires_a_session_token_rejects_requests_without_it() {
    use aws_sdk_redshift::config::{BehaviorVersion, Credentials, Region};
    let emu = Emulator::start();
    emu.seed(serde_json::json!({"keys": [{
        "access_key_id": "ASIATEMPORARYEXAMPLE",
        "secret_access_key": "temporary-secret",
        "account": CONSUMER_ACCOUNT,
        "session_token": "the-session-token"
    }]}));
    let with_token = |token: Option<&str>| {
        let conf = aws_sdk_redshift::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(emu.endpoint_url())
            .credentials_provider(Credentials::new(
                "ASIATEMPORARYEXAMPLE",
                "temporary-secret",
                token.map(str::to_owned),
                None,
                "test",
            ))
            .build();
        aws_sdk_redshift::Client::from_conf(conf)
    };
    let out = with_token(Some("the-session-token"))
        .describe_data_shares_for_consumer()
        .send()
        .await
        .unwrap();
    assert!(!out.data_shares().is_empty());
    for token in [None, Some("another-token")] {
        let err = with_token(token)
            .describe_data_shares_for_consumer()
            .send()
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some("InvalidClientTokenId"), "{token:?}");
    }
}
