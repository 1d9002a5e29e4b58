//! A connection with no call open for `server.idle_timeout_ms` is closed with a GOAWAY and
//! counted; one whose call outlasts the timeout is not.

use crate::support;

use std::time::Duration;

use datashare_gateway::proto::datasharing::v1::AssociateConsumerRequest;
use support::emulator::Emulator;
use support::gateway::{self, Gateway, GatewayOptions, REPORTING, SALES_SHARE};

const OP: &str = "AssociateDataShareConsumer";
const IDLE_MS: u64 = 2000;

async fn idle_closes(gw: &Gateway) -> f64 {
    support::prometheus::scrape(gw.admin)
        .await
        .value(
            "datashare_gateway_connections_closed_total",
            &[("reason", "idle")],
        )
        .unwrap_or_default()
}

/// A raw HTTP/2 connection that makes one gRPC health check and then says nothing: its
/// connection task, and the handle that would open its next stream.
async fn one_call_then_silence(
    gw: &Gateway,
) -> (
    tokio::task::JoinHandle<Result<(), h2::Error>>,
    h2::client::SendRequest<bytes::Bytes>,
) {
    let tcp = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    let (client, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let connection = tokio::spawn(connection);
    let mut client = client.ready().await.expect("ready");
    let request = http::Request::post(format!("http://{}/grpc.health.v1.Health/Check", gw.addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request");
    let (response, mut body) = client.send_request(request, false).expect("send");
    // An empty HealthCheckRequest: uncompressed, zero bytes long.
    body.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), true)
        .expect("body");
    let response = response.await.expect("response");
    assert_eq!(response.status(), 200);
    let mut answer = response.into_body();
    while let Some(data) = answer.data().await {
        let data = data.expect("data");
        let _ = answer.flow_control().release_capacity(data.len());
    }
    let trailers = answer
        .trailers()
        .await
        .expect("trailers")
        .expect("trailers");
    assert_eq!(
        trailers.get("grpc-status").map(|v| v.as_bytes()),
        Some(&b"0"[..])
    );
    (connection, client)
}

#[tokio::test]
async fn a_connection_idle_after_its_call_is_closed_with_goaway_but_one_with_a_call_open_is_not() {
    let emulator = Emulator::start();
    let mut options = GatewayOptions::new(emulator.endpoint_url());
    options.server_toml = format!("idle_timeout_ms = {IDLE_MS}");
    // The held call must outlast the idle timeout many times over without timing out itself.
    options.attempt_timeout_ms = 30_000;
    options.operation_timeout_ms = 30_000;
    options.shutdown_grace_secs = 30;
    let gw = Gateway::start(options).await;

    // A call held by the emulator keeps its stream, and its connection, open.
    emulator.inject_fault(serde_json::json!({"kind": "hold", "operation": OP, "count": 1}));
    let mut client = gw.client().await;
    let held = tokio::spawn(async move {
        let request = AssociateConsumerRequest {
            data_share_arn: SALES_SHARE.into(),
            associate_entire_account: true,
            ..Default::default()
        };
        let answer = client
            .associate_consumer(gateway::as_caller(REPORTING, request))
            .await;
        // The client is kept, so its connection is the gateway's to close.
        (client, answer)
    });
    emulator.wait_held(1).await;

    // Another connection makes one call and then stays silent (answering the gateway's pings):
    // it is closed, and its idle time started after the held call's connection last opened a
    // stream.
    let (connection, mut silent) = one_call_then_silence(&gw).await;
    support::wait::until(
        Duration::from_millis(IDLE_MS * 10),
        "the idle connection is closed",
        async || {
            if connection.is_finished() {
                Ok(())
            } else {
                Err("open")
            }
        },
    )
    .await;
    assert!(
        connection.await.expect("join").is_ok(),
        "closed cleanly, not reset"
    );
    let refused = std::future::poll_fn(|cx| silent.poll_ready(cx))
        .await
        .expect_err("no new stream on a closed connection");
    assert!(refused.is_go_away(), "{refused:?}");
    assert_eq!(refused.reason(), Some(h2::Reason::NO_ERROR), "{refused:?}");
    assert_eq!(idle_closes(&gw).await, 1.0, "counted once");

    // The held call's connection was left open: its call completes once let go, and then that
    // connection goes idle and is closed too.
    assert!(!held.is_finished(), "the held call is still in flight");
    assert_eq!(emulator.release(), 1);
    let (_client, answer) = held.await.expect("join");
    assert!(answer.is_ok(), "the held call succeeds: {answer:?}");
    support::wait::until(
        Duration::from_millis(IDLE_MS * 10),
        "the held call's connection is closed once idle",
        async || match idle_closes(&gw).await {
            2.0 => Ok(()),
            seen => Err(seen),
        },
    )
    .await;
}
