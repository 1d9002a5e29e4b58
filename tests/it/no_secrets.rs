//! Nothing secret leaves the gateway through its observability: not in a log line, not in a
//! span's name, attribute or event, not in a metric. Checked with everything on (JSON logs at
//! trace level for every crate, traces to a receiver in the test, metrics), after calls
//! that succeed, fail upstream, are retried, are denied and are refused for bad credentials.

use crate::support;

use datashare_gateway::proto::datasharing::v1::AssociateConsumerRequest;
use serde_json::json;
use support::emulator::{
    CONSUMER_KEY, CONSUMER_ROLE_EXTERNAL_ID, Emulator, OTHER_ROLE_EXTERNAL_ID, PLATFORM_KEY,
    PRODUCER_KEY,
};
use support::gateway::{
    self, FINANCE_SHARE, FRONTEND, Gateway, GatewayOptions, REPORTING, SALES_SHARE,
};
use support::otlp::Receiver;
use support::prometheus::scrape;

const OP: &str = "AssociateDataShareConsumer";

fn message(share: &str) -> AssociateConsumerRequest {
    AssociateConsumerRequest {
        data_share_arn: share.into(),
        associate_entire_account: true,
        ..Default::default()
    }
}

/// What must never appear: the emulator's secret keys, the roles' external ids, any SigV4
/// signature material and any session token.
fn secrets() -> Vec<&'static str> {
    vec![
        CONSUMER_KEY.1,
        PRODUCER_KEY.1,
        PLATFORM_KEY.1,
        CONSUMER_ROLE_EXTERNAL_ID,
        OTHER_ROLE_EXTERNAL_ID,
        "Signature=",
        "AWS4-HMAC-SHA256",
        "SessionToken",
        "SecretAccessKey",
    ]
}

fn assert_clean(what: &str, text: &str) {
    for secret in secrets() {
        assert!(
            !text.contains(secret),
            "{what} contains {secret:?}:\n{text}"
        );
    }
    // The SDK logs the canonical request it signs at trace level; a session token in it must be
    // redacted (a token is never known to this test, so its header is what is checked).
    for (at, _) in text.match_indices("x-amz-security-token:") {
        let value = &text[at + "x-amz-security-token:".len()..];
        assert!(
            value.starts_with("** redacted"),
            "{what} carries a session token: {}",
            &value[..value.len().min(80)]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_logs_spans_or_metrics() {
    let emulator = Emulator::start();
    let receiver = Receiver::start().await;
    // As `dev` runs: role sessions per caller, so STS and session credentials are exercised.
    let mut options = GatewayOptions::with_roles(emulator.endpoint_url());
    options.telemetry_toml = format!(
        "otlp_endpoint = {:?}\nlog_format = \"json\"",
        receiver.endpoint()
    );
    // Every crate at trace: the SDK's signing code logs what it signs, never the signature.
    options.env = vec![("RUST_LOG".into(), "trace".into())];
    let mut gw = Gateway::start(options).await;
    let mut client = gw.client().await;

    // Retried and successful.
    emulator.inject_fault(json!({"kind": "throttling", "operation": OP, "count": 1}));
    client
        .associate_consumer(gateway::as_caller(REPORTING, message(SALES_SHARE)))
        .await
        .expect("allowed");
    // Failed upstream, denied, invalid.
    let _ = client
        .associate_consumer(gateway::as_caller(REPORTING, message(FINANCE_SHARE)))
        .await
        .expect_err("failed upstream");
    let _ = client
        .associate_consumer(gateway::as_caller(FRONTEND, message(SALES_SHARE)))
        .await
        .expect_err("denied");
    let _ = client
        .associate_consumer(gateway::as_caller(REPORTING, message("not-an-arn")))
        .await
        .expect_err("invalid");
    // The emulator rejects the gateway's signature: the credential error path logs too.
    emulator.inject_fault(json!({
        "kind": "error",
        "operation": OP,
        "count": 1,
        "code": "SignatureDoesNotMatch",
        "status": 403,
    }));
    let _ = client
        .associate_consumer(gateway::as_caller(REPORTING, message(SALES_SHARE)))
        .await
        .expect_err("credentials rejected");

    let metrics = scrape(gw.admin).await;
    drop(client);
    // SIGTERM flushes the span queue, so every span is at the receiver once the process exits.
    assert!(gw.terminate().await, "clean exit");

    let logs = gw.logs();
    assert!(
        logs.contains("\"message\":\"AssociateConsumer\""),
        "the calls were logged: {logs}"
    );
    assert_clean("the gateway's logs", &logs);

    let spans = receiver.spans();
    assert!(
        spans.iter().any(|s| s.name == "try_attempt"),
        "the SDK's attempts were traced"
    );
    for span in &spans {
        let mut text = format!("{} {:?}", span.name, span.attributes);
        for (name, attributes) in &span.events {
            text.push_str(&format!(" {name} {attributes:?}"));
        }
        assert_clean("a span", &text);
    }

    assert_clean("/metrics", &metrics.text);
    for entry in std::fs::read_dir(&gw.audit_dir).expect("audit dir") {
        let path = entry.expect("entry").path();
        if path.is_file() {
            // The approvals database lives here too: binary, and checked all the same.
            let bytes = std::fs::read(&path).expect("read an audit file");
            assert_clean("the audit directory", &String::from_utf8_lossy(&bytes));
        }
    }
    for sample in &metrics.samples {
        for value in sample.labels.values() {
            assert!(
                !value.contains("arn:"),
                "{} carries an ARN in a label",
                sample.name
            );
        }
    }
}
