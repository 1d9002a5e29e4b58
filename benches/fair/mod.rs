//! Phase 6 of `cargo bench --bench gateway` (issue 22, N3): what one caller's flood costs
//! another. Redshift takes 200 ms a listing and the gateway has 8 slots; the other caller makes
//! its calls alone, then while the first keeps 1,500 calls in the air. Its share of OK answers
//! and its p50 latency in both windows, and how the flood was refused.

use std::time::Instant;

use hdrhistogram::Histogram;
use serde_json::json;

use crate::support::emulator::Emulator;
use crate::support::flood::{Flood, LIST, list};
use crate::support::gateway::{Gateway, GatewayOptions, NOTEBOOK, REPORTING};
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

    let flood = Flood::start(&gw, REPORTING, FLOOD_CONNECTIONS, FLOOD_PER_CONNECTION).await;
    let during = other_caller(&gw).await;
    let answers = flood.stop().await;
    emulator.clear_faults();
    println!(
        "fair shares, 8 slots, Redshift 200 ms, the other caller {OTHER_CALLS} calls {OTHER_AT_ONCE} at a time: \
         alone {:.2} OK, p50 {:.0} ms; during a flood of {} calls in the air {:.2} OK, p50 {:.0} ms \
         ({:.2}x alone); the flood's answers: {answers:?}",
        alone.ok,
        alone.p50_ms,
        FLOOD_CONNECTIONS * FLOOD_PER_CONNECTION,
        during.ok,
        during.p50_ms,
        during.p50_ms / alone.p50_ms,
    );
    FairShares { alone, during }
}
