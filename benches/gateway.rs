//! End-to-end figures through real processes: the emulator, the gateway, and clients.
//!
//! 1. Latency with one caller: the same AssociateDataShareConsumer call made directly with
//!    aws-sdk-redshift and through the gateway, in the same run; p50/p99 of each, the gateway's
//!    added latency, and the gateway process's CPU time per call (from /proc); with the audit
//!    trail durable (two fsyncs per call) and not, to tell the gateway's work from the disk's.
//! 2. Throughput with 64 concurrent callers: durable audit (fsync) on vs off, as a ratio.
//! 3. Throughput with 64 concurrent callers: traces exported over OTLP (to a receiver inside
//!    this process) vs no trace exporter, as a ratio. Metrics are on in both (they cannot be
//!    turned off). The runs alternate, off/on twice, so drift hits both alike.
//!
//! Run: `cargo bench --bench gateway`. Figures are printed; nothing is asserted.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use datashare_gateway::proto::datasharing::v1::AssociateConsumerRequest;
use hdrhistogram::Histogram;
use support::emulator::{self, Emulator};
use support::gateway::{Gateway, GatewayOptions, REPORTING, SALES_SHARE};

const LATENCY_CALLS: usize = 2000;
const WARMUP_CALLS: usize = 200;
const CALLERS: usize = 64;
const THROUGHPUT_WINDOW: Duration = Duration::from_secs(5);

fn message() -> AssociateConsumerRequest {
    AssociateConsumerRequest {
        data_share_arn: SALES_SHARE.into(),
        associate_entire_account: true,
        ..Default::default()
    }
}

/// User + system CPU time of a process, from /proc/PID/stat (clock ticks are 100 Hz on Linux).
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the ')'.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

fn micros(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64
}

async fn latency(emulator: &Emulator, gateway: &Gateway, label: &str) {
    let sdk = emulator::client(
        &emulator.endpoint_url(),
        emulator::CONSUMER_KEY.0,
        emulator::CONSUMER_KEY.1,
        1,
    );
    let mut grpc = gateway.client().await;
    let mut direct = Histogram::<u64>::new(3).expect("histogram");
    let mut through = Histogram::<u64>::new(3).expect("histogram");

    let call_sdk = || async {
        sdk.associate_data_share_consumer()
            .data_share_arn(SALES_SHARE)
            .associate_entire_account(true)
            .send()
            .await
    };
    for _ in 0..WARMUP_CALLS {
        call_sdk().await.expect("direct call");
        grpc.associate_consumer(support::gateway::as_caller(REPORTING, message()))
            .await
            .expect("gateway call");
    }
    let cpu_before = cpu_time(gateway.pid());
    // Interleave the two so machine noise hits both alike.
    for _ in 0..LATENCY_CALLS {
        let t = Instant::now();
        call_sdk().await.expect("direct call");
        direct
            .record(t.elapsed().as_micros() as u64)
            .expect("record");
        let t = Instant::now();
        grpc.associate_consumer(support::gateway::as_caller(REPORTING, message()))
            .await
            .expect("gateway call");
        through
            .record(t.elapsed().as_micros() as u64)
            .expect("record");
    }
    let cpu = cpu_time(gateway.pid()).saturating_sub(cpu_before);
    println!("latency, 1 caller, {LATENCY_CALLS} calls each, {label} (microseconds):");
    println!(
        "  direct SDK -> emulator      p50 {:>8.0}  p99 {:>8.0}",
        micros(&direct, 0.5),
        micros(&direct, 0.99)
    );
    println!(
        "  client -> gateway -> emul.  p50 {:>8.0}  p99 {:>8.0}",
        micros(&through, 0.5),
        micros(&through, 0.99)
    );
    println!(
        "  added by the gateway        p50 {:>8.0}  p99 {:>8.0}",
        micros(&through, 0.5) - micros(&direct, 0.5),
        micros(&through, 0.99) - micros(&direct, 0.99)
    );
    println!(
        "  gateway CPU per call        {:>8.0} us",
        cpu.as_micros() as f64 / LATENCY_CALLS as f64
    );
}

async fn throughput(gateway: &Gateway) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let stop_at = Instant::now() + THROUGHPUT_WINDOW;
    let mut tasks = Vec::new();
    for _ in 0..CALLERS {
        let mut client = gateway.client().await;
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            while Instant::now() < stop_at {
                if client
                    .associate_consumer(support::gateway::as_caller(REPORTING, message()))
                    .await
                    .is_ok()
                {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    done.load(Ordering::Relaxed) as f64 / THROUGHPUT_WINDOW.as_secs_f64()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let emulator = Emulator::start();
        let gateway = Gateway::start(GatewayOptions::new(emulator.endpoint_url())).await;
        latency(&emulator, &gateway, "audit durable (fsync)").await;

        let durable = throughput(&gateway).await;
        drop(gateway);
        let mut options = GatewayOptions::new(emulator.endpoint_url());
        options.audit_sync = false;
        let not_durable_gateway = Gateway::start(options).await;
        latency(
            &emulator,
            &not_durable_gateway,
            "audit not durable (no fsync)",
        )
        .await;
        let not_durable = throughput(&not_durable_gateway).await;
        println!(
            "throughput, {CALLERS} callers, {}s each (calls/s):",
            THROUGHPUT_WINDOW.as_secs()
        );
        println!("  audit durable (fsync)       {durable:>10.0}");
        println!("  audit not durable (no fsync){not_durable:>10.0}");
        println!(
            "  durable / not durable       {:>10.3}",
            durable / not_durable
        );
        drop(not_durable_gateway);

        let receiver = support::otlp::Receiver::start().await;
        let mut off = Vec::new();
        let mut on = Vec::new();
        for _ in 0..2 {
            let gateway = Gateway::start(GatewayOptions::new(emulator.endpoint_url())).await;
            off.push(throughput(&gateway).await);
            drop(gateway);
            let mut options = GatewayOptions::new(emulator.endpoint_url());
            options.telemetry_toml = format!("otlp_endpoint = {:?}", receiver.endpoint());
            let gateway = Gateway::start(options).await;
            on.push(throughput(&gateway).await);
            let dropped = support::prometheus::scrape(gateway.admin)
                .await
                .value("datashare_gateway_trace_spans_dropped_total", &[])
                .unwrap_or_default();
            println!("  (tracing run: {dropped} spans dropped)");
            drop(gateway);
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let runs = |v: &[f64]| {
            v.iter()
                .map(|x| format!("{x:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "throughput, {CALLERS} callers, {}s each, two runs each (calls/s):",
            THROUGHPUT_WINDOW.as_secs()
        );
        println!("  traces off (metrics on)     {}", runs(&off));
        println!("  traces on  (OTLP export)    {}", runs(&on));
        println!(
            "  on / off (means)            {:>10.3}",
            mean(&on) / mean(&off)
        );
        println!(
            "  spans received              {:>10}",
            receiver.spans().len()
        );
    });
}
