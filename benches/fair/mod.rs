//! Phase 6 of `cargo bench --bench gateway` (issue 22, N3): what one caller's flood costs
//! another. Redshift takes 200 ms a listing and the gateway has 8 slots; the other caller makes
//! its calls alone, then while the first keeps 1,500 calls in the air. Its share of OK answers
//! and its p50 latency in both windows, and how the flood was refused.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use datashare_gateway::proto::datasharing::v1::ListConsumerDataSharesRequest;
use datashare_gateway::proto::datasharing::v1::data_sharing_client::DataSharingClient;
use hdrhistogram::Histogram;
use serde_json::json;
use tonic::transport::Channel;

use crate::support::emulator::Emulator;
use crate::support::gateway::{self, Gateway, GatewayOptions, NOTEBOOK, REPORTING};
use crate::support::prometheus::scrape;

const LIST: &str = "DescribeDataSharesForConsumer";
const OTHER_CALLS: usize = 60;
const OTHER_AT_ONCE: usize = 3;
const FLOOD_CONNECTIONS: usize = 15;
const FLOOD_PER_CONNECTION: usize = 100;

/// The other caller's figures in one window.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Share {
    pub ok: f64,
    pub p50_ms: f64,
}

/// The other caller alone and during the flood; prints both and the flood's refusals.
pub(crate) struct FairShares {
    pub alone: Share,
    pub during: Share,
}

async fn list(client: &mut DataSharingClient<Channel>, caller: &str) -> Result<(), tonic::Status> {
    client
        .list_consumer_data_shares(gateway::as_caller(
            caller,
            ListConsumerDataSharesRequest::default(),
        ))
        .await
        .map(|_| ())
}

/// `OTHER_CALLS` calls of the other caller, `OTHER_AT_ONCE` at a time.
async fn other_caller(gw: &Gateway) -> Share {
    let mut tasks = Vec::new();
    for _ in 0..OTHER_AT_ONCE {
        let mut client = gw.client().await;
        tasks.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            for _ in 0..OTHER_CALLS / OTHER_AT_ONCE {
                let started = Instant::now();
                let ok = list(&mut client, NOTEBOOK).await.is_ok();
                answers.push((ok, started.elapsed()));
            }
            answers
        }));
    }
    let mut ok = 0usize;
    let mut latency = Histogram::<u64>::new(3).expect("histogram");
    for task in tasks {
        for (answered, took) in task.await.expect("caller task") {
            ok += usize::from(answered);
            latency.record(took.as_micros() as u64).expect("record");
        }
    }
    Share {
        ok: ok as f64 / OTHER_CALLS as f64,
        p50_ms: latency.value_at_quantile(0.5) as f64 / 1000.0,
    }
}

pub(crate) async fn fair_shares(emulator: &Emulator) -> FairShares {
    emulator.inject_fault(json!({"kind": "latency", "latency_ms": 200, "operation": LIST}));
    let gw = Gateway::start(GatewayOptions {
        server_toml: "concurrency_limit = 8\nqueue_timeout_ms = 1000\n".into(),
        ..GatewayOptions::new(emulator.endpoint_url())
    })
    .await;
    let alone = other_caller(&gw).await;

    // Each flood call is sent again as soon as it is answered: 1,500 always in the air.
    let stop = Arc::new(AtomicBool::new(false));
    let mut flood = Vec::new();
    for _ in 0..FLOOD_CONNECTIONS {
        let client = gw.client().await;
        for _ in 0..FLOOD_PER_CONNECTION {
            let (mut client, stop) = (client.clone(), stop.clone());
            flood.push(tokio::spawn(async move {
                let mut reasons = BTreeMap::<String, u64>::new();
                while !stop.load(Ordering::Relaxed) {
                    let reason = match list(&mut client, REPORTING).await {
                        Ok(()) => "OK".to_owned(),
                        Err(status) => gateway::error_info(&status).0,
                    };
                    *reasons.entry(reason).or_default() += 1;
                }
                reasons
            }));
        }
    }
    // The flood holds its share and its queue before the other caller starts.
    crate::support::wait::until(
        Duration::from_secs(30),
        "the flood's queue is full",
        async || {
            let m = scrape(gw.admin).await;
            match m.value(
                "datashare_gateway_calls_shed_total",
                &[("pool", "redshift"), ("reason", "caller_queue_full")],
            ) {
                Some(n) if n > 0.0 => Ok(()),
                seen => Err(seen),
            }
        },
    )
    .await;
    let during = other_caller(&gw).await;
    stop.store(true, Ordering::Relaxed);
    let mut refused = BTreeMap::<String, u64>::new();
    for task in flood {
        for (reason, count) in task.await.expect("flood task") {
            *refused.entry(reason).or_default() += count;
        }
    }
    emulator.clear_faults();
    println!(
        "fair shares, 8 slots, Redshift 200 ms, the other caller {OTHER_CALLS} calls {OTHER_AT_ONCE} at a time: \
         alone {:.2} OK, p50 {:.0} ms; during a flood of {} calls in the air {:.2} OK, p50 {:.0} ms \
         ({:.2}x alone); the flood's answers: {refused:?}",
        alone.ok,
        alone.p50_ms,
        FLOOD_CONNECTIONS * FLOOD_PER_CONNECTION,
        during.ok,
        during.p50_ms,
        during.p50_ms / alone.p50_ms,
    );
    FairShares { alone, during }
}
