//! Phase 5 of `cargo bench --bench gateway` (issue 14): the cost of signed checkpoints and S3
//! shipping, on vs off at 64 callers, alternated twice, against moto's S3 server; and the
//! shipping delay (a call's record written to its file being in the bucket).

use std::time::{Duration, Instant};

use crate::support::emulator::Emulator;
use crate::support::gateway::{Gateway, GatewayOptions, REPORTING, as_caller};
use crate::support::s3::{self, Moto};
use crate::{CALLERS, Window, gateway_window, mean, message};

const BUCKET: &str = "bench-audit";

/// Each gateway ships under its own instance name: a fresh audit directory numbers its files
/// from 1 again, and the same names under one prefix would be (rightly) refused as a conflict.
fn shipping_options(
    emulator: &Emulator,
    key: &std::path::Path,
    moto: &Moto,
    instance: &str,
) -> GatewayOptions {
    let mut options = GatewayOptions::new(emulator.endpoint_url());
    options.server_toml = format!("instance = \"{instance}\"\n");
    // The defaults but the seal interval: sealing every second is the worst case for cost and
    // the best for delay.
    options.audit_toml = format!(
        "[audit.checkpoint]\nsigning_key_file = {key:?}\n\n\
         [audit.ship]\nbucket = \"{BUCKET}\"\nregion = \"us-east-1\"\n\
         endpoint_url = \"{}\"\nforce_path_style = true\n\
         object_lock_mode = \"COMPLIANCE\"\nretention_days = 1\nseal_interval_secs = 1\n",
        moto.endpoint
    );
    options
}

/// Prints the on/off figures; returns (CPU per call ratio, throughput ratio, delay in ms).
pub(crate) async fn checkpoints_and_shipping(emulator: &Emulator) -> (f64, f64, f64) {
    let moto = Moto::start().await;
    s3::create_locked_bucket(&moto.endpoint, BUCKET).await;
    let keys = tempfile::tempdir().expect("temp dir");
    let key = keys.path().join("checkpoint.key");
    datashare_gateway::audit::generate_key_pair(&key).expect("keygen");
    let mut off: Vec<Window> = Vec::new();
    let mut on: Vec<Window> = Vec::new();
    let mut delays_ms = Vec::new();
    for round in 0..2 {
        let instance = format!("bench-{round}");
        let gateway = Gateway::start(GatewayOptions::new(emulator.endpoint_url())).await;
        off.push(gateway_window(&gateway).await);
        drop(gateway);
        let gateway = Gateway::start(shipping_options(emulator, &key, &moto, &instance)).await;
        on.push(gateway_window(&gateway).await);
        for sample in 0..5 {
            let delay = shipping_delay(&gateway, &moto, &instance, sample).await;
            delays_ms.push(delay.as_secs_f64() * 1000.0);
        }
        let scraped = crate::support::prometheus::scrape(gateway.admin).await;
        let count = |result| {
            scraped
                .value("datashare_gateway_audit_ship_total", &[("result", result)])
                .unwrap_or_default()
        };
        println!(
            "  shipping round {round}: {} objects shipped, {} conflicts, {} failed uploads",
            count("shipped"),
            count("conflict"),
            count("error")
        );
        drop(gateway);
    }
    let cpu_ratio = mean(&on, |w| w.cpu_us_per_call) / mean(&off, |w| w.cpu_us_per_call);
    let rate_ratio = mean(&on, |w| w.calls_per_s) / mean(&off, |w| w.calls_per_s);
    delays_ms.sort_by(f64::total_cmp);
    let delay_ms = delays_ms[delays_ms.len() / 2];
    let delay_max_ms = delays_ms.last().copied().unwrap_or_default();
    println!(
        "{CALLERS} callers, checkpoints (every 1000 records / 60 s) and S3 shipping (sealed every \
         1 s) off vs on: {} vs {} calls/s, {} vs {} us CPU/call; on/off CPU per call {cpu_ratio:.3}x, \
         throughput {rate_ratio:.3}x; shipping delay (a call answered to its record in an S3 \
         object), {} samples: median {delay_ms:.0} ms, max {delay_max_ms:.0} ms",
        fmt(&off, |w| w.calls_per_s),
        fmt(&on, |w| w.calls_per_s),
        fmt(&off, |w| w.cpu_us_per_call),
        fmt(&on, |w| w.cpu_us_per_call),
        delays_ms.len(),
    );
    (cpu_ratio, rate_ratio, delay_ms)
}

fn fmt(windows: &[Window], f: impl Fn(&Window) -> f64) -> String {
    windows
        .iter()
        .map(|w| format!("{:.0}", f(w)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// From one call's answer (its record durable) until an object in the bucket holds its record.
async fn shipping_delay(gateway: &Gateway, moto: &Moto, instance: &str, sample: usize) -> Duration {
    // Spread over the seal interval, so the samples are not all in the same phase of it.
    tokio::time::sleep(Duration::from_millis(230 * sample as u64)).await;
    let id = format!(
        "ship-delay-{}-{sample}-{}",
        std::process::id(),
        uuid::Uuid::new_v4()
    );
    let mut client = gateway.client().await;
    let mut request = as_caller(REPORTING, message());
    request
        .metadata_mut()
        .insert("x-request-id", id.parse().expect("ascii"));
    client.associate_consumer(request).await.expect("call");
    let started = Instant::now();
    let store = s3::s3_client(&moto.endpoint).await;
    let mut seen = std::collections::HashSet::new();
    loop {
        let listed = store
            .list_objects_v2()
            .bucket(BUCKET)
            // `<instance>/<trail id>/audit-…`: the trail id is the gateway's own.
            .prefix(format!("{instance}/"))
            .send()
            .await
            .expect("list");
        for object in listed.contents() {
            let key = object.key().unwrap_or_default().to_owned();
            if !key.contains("/audit-") || !seen.insert(key.clone()) {
                continue;
            }
            let body = s3::object(&store, BUCKET, &key).await;
            if body.windows(id.len()).any(|w| w == id.as_bytes()) {
                return started.elapsed();
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the record was not shipped within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
