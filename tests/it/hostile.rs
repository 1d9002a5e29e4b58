//! Requests a hostile or broken client sends: anything but gRPC is refused with HTTP 415 before
//! it is decoded, and a body that is not a valid message is the caller's error
//! (INVALID_ARGUMENT), logged with its request id and counted; none reaches Redshift.

use crate::support;

use datashare_gateway::proto::datasharing::v1::AssociateConsumerRequest;
use prost::Message;
use support::emulator::Emulator;
use support::gateway::{Gateway, GatewayOptions, SALES_SHARE, raw_grpc};

const ASSOCIATE: &str = "/datasharing.v1.DataSharing/AssociateConsumer";

fn valid_payload() -> Vec<u8> {
    AssociateConsumerRequest {
        data_share_arn: SALES_SHARE.into(),
        associate_entire_account: true,
        validate_only: true,
        ..Default::default()
    }
    .encode_to_vec()
}

#[tokio::test]
async fn anything_but_grpc_is_refused_with_415_before_decoding() {
    let emulator = Emulator::start();
    let gw = Gateway::start(GatewayOptions::new(emulator.endpoint_url())).await;
    let payload = valid_payload();
    for content_type in [
        Some("text/plain"),
        Some("application/json"),
        Some("application/grpc-web"),
        Some("application/grpc+json"),
        None,
    ] {
        let answer = raw_grpc(&gw, ASSOCIATE, content_type, "ct", &payload).await;
        assert_eq!(answer.http_status, 415, "{content_type:?}: {answer:?}");
    }
    for content_type in [
        "application/grpc",
        "application/grpc+proto",
        "application/grpc; charset=utf-8",
    ] {
        let answer = raw_grpc(&gw, ASSOCIATE, Some(content_type), "ct-ok", &payload).await;
        assert_eq!(answer.http_status, 200, "{content_type}: {answer:?}");
        assert_eq!(answer.grpc_status, "0", "{content_type}: {answer:?}");
    }
    assert_eq!(
        emulator.counter("AssociateDataShareConsumer", "received"),
        0
    );
    // Refused before decoding: no call was audited.
    let records = support::gateway::audit_records(&gw.audit_dir);
    assert!(
        records.iter().all(|r| r["request_id"] != "ct"),
        "{records:#?}"
    );
}

#[tokio::test]
async fn an_undecodable_body_is_invalid_argument_logged_and_counted() {
    let emulator = Emulator::start();
    let gw = Gateway::start(GatewayOptions::new(emulator.endpoint_url())).await;
    let bodies: [(&str, Vec<u8>); 3] = [
        // Field 1 (data_share_arn) holding bytes that are not UTF-8.
        ("bad-utf8", vec![0x0a, 0x02, 0xff, 0xfe]),
        // Field 1 announcing 10 bytes and carrying 3.
        ("truncated", vec![0x0a, 0x0a, b'a', b'r', b'n']),
        ("garbage", vec![0xff, 0xff, 0xff, 0xff]),
    ];
    for (request_id, body) in &bodies {
        let answer = raw_grpc(&gw, ASSOCIATE, Some("application/grpc"), request_id, body).await;
        assert_eq!(answer.grpc_status, "3", "{request_id}: {answer:?}");
        assert!(
            answer.grpc_message.contains("not%20a%20valid%20message"),
            "{request_id}: {answer:?}"
        );
    }
    assert_eq!(
        emulator.counter("AssociateDataShareConsumer", "received"),
        0
    );
    let metrics = support::prometheus::scrape(gw.admin).await;
    assert_eq!(
        metrics.value(
            "datashare_gateway_calls_total",
            &[
                ("method", "AssociateConsumer"),
                ("code", "INVALID_ARGUMENT")
            ]
        ),
        Some(3.0)
    );
    let logs = gw
        .logs_when(|logs| {
            bodies
                .iter()
                .all(|(request_id, _)| logs.contains(request_id))
        })
        .await;
    for (request_id, _) in &bodies {
        assert!(
            logs.lines()
                .any(|l| l.contains("not a valid message") && l.contains(request_id)),
            "{request_id} not logged:\n{logs}"
        );
    }
    // Without a request id of its own, the call is given one, answered and logged with it,
    // and the peer is logged as an address.
    let answer = raw_grpc(&gw, ASSOCIATE, Some("application/grpc"), "", &bodies[2].1).await;
    assert_eq!(answer.grpc_status, "3", "{answer:?}");
    assert!(
        uuid::Uuid::parse_str(&answer.request_id).is_ok(),
        "{answer:?}"
    );
    let logs = gw.logs_when(|logs| logs.contains(&answer.request_id)).await;
    let line = logs
        .lines()
        .find(|l| l.contains(&answer.request_id))
        .expect("logged");
    assert!(line.contains("not a valid message"), "{line}");
    assert!(!line.contains("Some("), "{line}");
    assert!(line.contains("127.0.0.1:"), "{line}");
}

#[tokio::test]
async fn an_admin_client_that_never_finishes_its_headers_is_cut() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let emulator = Emulator::start();
    let gw = Gateway::start(GatewayOptions::new(emulator.endpoint_url())).await;
    let mut slow = tokio::net::TcpStream::connect(gw.admin)
        .await
        .expect("connect");
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 512];
    let closed = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            match slow.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the admin listener cut a client stuck in its headers"
    );
    // Others are still served.
    let (status, _) = support::prometheus::get(gw.admin, "/livez").await;
    assert_eq!(status, 200);
}
