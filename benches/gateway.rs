//! End-to-end figures through real processes (the emulator, the gateway, and clients in this
//! process), each gateway figure set against the direct aws-sdk-redshift client measured in the
//! same run, so the machine's noise cancels in the ratios:
//!
//! 1. CPU and throughput at 64 callers: the direct SDK (this process's own CPU per call, nothing
//!    else runs in it) and the gateway (its process's CPU per call; durable audit, no traces),
//!    alternated twice so drift hits both alike.
//! 2. Added latency at one caller, intent durable before forwarding: direct and gateway calls
//!    interleaved; p50 and p99 of each.
//! 3. 10,000 calls in flight against a 200 ms upstream (the emulator's latency fault), over 100
//!    connections with the default 512 at AWS at once, and over 120 with all 10,000 at AWS: the
//!    gateway's peak RSS, sampled every 10 ms, its RSS and upstream sockets at the last answer
//!    and past the pool's idle timeout, and the calls that failed.
//! 4. Traces exported over OTLP (to a receiver inside this process) vs none, at 64 callers,
//!    alternated twice; the spans the gateway dropped.
//! 5. Signed checkpoints and S3 shipping (to moto's server, from `.venv`) vs neither, at 64
//!    callers, alternated twice; and the shipping delay.
//!
//! 6. Fair shares: another caller's OK share and p50 alone and while one caller keeps 1,500
//!    calls in the air, 8 slots against a 200 ms upstream.
//!
//! Run: `cargo bench --bench gateway`, or `cargo bench --bench gateway -- memory fair` for some
//! phases (cpu, latency, memory, traces, shipping, fair). Figures are printed, the last line is one JSON object;
//! nothing is asserted.

#[path = "../tests/support/mod.rs"]
mod support;

mod fair;
mod ship;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use datashare_gateway::proto::datasharing::v1::AssociateConsumerRequest;
use hdrhistogram::Histogram;
use serde_json::json;
use support::emulator::{self, Emulator};
use support::gateway::{FRONTEND, Gateway, GatewayOptions, REPORTING, SALES_SHARE, as_caller};
use support::process::{cpu_time, rss_kib, tcp_connections_to};

const LATENCY_CALLS: usize = 2000;
const WARMUP_CALLS: usize = 200;
const CALLERS: usize = 64;
const THROUGHPUT_WINDOW: Duration = Duration::from_secs(5);
const IN_FLIGHT: usize = 10_000;
const UPSTREAM_DELAY_MS: u64 = 200;

fn message() -> AssociateConsumerRequest {
    AssociateConsumerRequest {
        data_share_arn: SALES_SHARE.into(),
        associate_entire_account: true,
        ..Default::default()
    }
}

fn micros(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64
}

fn sdk_client(emulator: &Emulator) -> aws_sdk_redshift::Client {
    emulator::client(
        &emulator.endpoint_url(),
        emulator::CONSUMER_KEY.0,
        emulator::CONSUMER_KEY.1,
        1,
    )
}

/// Calls per second and CPU per call of one 64-caller window.
#[derive(Clone, Copy, Debug, Default)]
struct Window {
    calls_per_s: f64,
    cpu_us_per_call: f64,
    /// Through the gateway only: how well group commit batches under load.
    fsyncs_per_call: f64,
}

/// 64 tasks calling Redshift directly with one SDK client for `THROUGHPUT_WINDOW`; CPU is this
/// process's own, where only the SDK runs.
async fn direct_window(sdk: &aws_sdk_redshift::Client) -> Window {
    let done = Arc::new(AtomicU64::new(0));
    let cpu_before = cpu_time(std::process::id());
    let stop_at = Instant::now() + THROUGHPUT_WINDOW;
    let tasks: Vec<_> = (0..CALLERS)
        .map(|_| {
            let sdk = sdk.clone();
            let done = done.clone();
            tokio::spawn(async move {
                while Instant::now() < stop_at {
                    if sdk
                        .associate_data_share_consumer()
                        .data_share_arn(SALES_SHARE)
                        .associate_entire_account(true)
                        .send()
                        .await
                        .is_ok()
                    {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let cpu = cpu_time(std::process::id()).saturating_sub(cpu_before);
    let calls = done.load(Ordering::Relaxed).max(1) as f64;
    Window {
        calls_per_s: calls / THROUGHPUT_WINDOW.as_secs_f64(),
        cpu_us_per_call: cpu.as_micros() as f64 / calls,
        fsyncs_per_call: 0.0,
    }
}

/// 64 callers through the gateway, each on its own connection; CPU is the gateway process's.
async fn gateway_window(gateway: &Gateway) -> Window {
    caller_window(gateway, REPORTING, true).await
}

/// As [`gateway_window`], calling as `caller`, counting the calls that end as `allowed` says
/// (OK, or PERMISSION_DENIED).
async fn caller_window(gateway: &Gateway, caller: &'static str, allowed: bool) -> Window {
    let done = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for _ in 0..CALLERS {
        clients.push(gateway.client().await);
    }
    let fsyncs = || async {
        support::prometheus::scrape(gateway.admin)
            .await
            .value("datashare_gateway_audit_fsyncs_total", &[])
            .unwrap_or_default()
    };
    let fsyncs_before = fsyncs().await;
    let cpu_before = cpu_time(gateway.pid());
    let stop_at = Instant::now() + THROUGHPUT_WINDOW;
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            let done = done.clone();
            tokio::spawn(async move {
                while Instant::now() < stop_at {
                    let answer = client
                        .associate_consumer(as_caller(caller, message()))
                        .await;
                    let expected = match &answer {
                        Ok(_) => allowed,
                        Err(status) => !allowed && status.code() == tonic::Code::PermissionDenied,
                    };
                    if expected {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let cpu = cpu_time(gateway.pid()).saturating_sub(cpu_before);
    let calls = done.load(Ordering::Relaxed).max(1) as f64;
    Window {
        calls_per_s: calls / THROUGHPUT_WINDOW.as_secs_f64(),
        cpu_us_per_call: cpu.as_micros() as f64 / calls,
        fsyncs_per_call: (fsyncs().await - fsyncs_before) / calls,
    }
}

fn mean(windows: &[Window], f: impl Fn(&Window) -> f64) -> f64 {
    windows.iter().map(f).sum::<f64>() / windows.len() as f64
}

/// Added latency at one caller: (p50, p99) of gateway minus direct, in µs.
async fn latency(emulator: &Emulator, gateway: &Gateway) -> (f64, f64) {
    let sdk = sdk_client(emulator);
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
        grpc.associate_consumer(as_caller(REPORTING, message()))
            .await
            .expect("gateway call");
    }
    // The bare gRPC hop on the same server and connection settings: tonic-health's Check runs
    // none of the call's layers (only the server's HTTP guard), so its round trip is what the
    // transport alone costs.
    let mut health = tonic_health::pb::health_client::HealthClient::new(
        tonic::transport::Channel::from_shared(format!("http://{}", gateway.addr))
            .expect("uri")
            .connect()
            .await
            .expect("connect"),
    );
    let mut hop = Histogram::<u64>::new(3).expect("histogram");
    for i in 0..WARMUP_CALLS + LATENCY_CALLS {
        let t = Instant::now();
        health
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("health check");
        if i >= WARMUP_CALLS {
            hop.record(t.elapsed().as_micros() as u64).expect("record");
        }
    }
    let before = support::prometheus::scrape(gateway.admin).await;
    // Interleaved so machine noise hits both alike.
    for _ in 0..LATENCY_CALLS {
        let t = Instant::now();
        call_sdk().await.expect("direct call");
        direct
            .record(t.elapsed().as_micros() as u64)
            .expect("record");
        let t = Instant::now();
        grpc.associate_consumer(as_caller(REPORTING, message()))
            .await
            .expect("gateway call");
        through
            .record(t.elapsed().as_micros() as u64)
            .expect("record");
    }
    println!("latency, 1 caller, {LATENCY_CALLS} calls each, audit durable (microseconds):");
    println!(
        "  direct SDK -> emulator      p50 {:>8.0}  p99 {:>8.0}",
        micros(&direct, 0.5),
        micros(&direct, 0.99)
    );
    println!(
        "  gRPC health check (no work) p50 {:>8.0}  p99 {:>8.0}",
        micros(&hop, 0.5),
        micros(&hop, 0.99)
    );
    println!(
        "  client -> gateway -> emul.  p50 {:>8.0}  p99 {:>8.0}",
        micros(&through, 0.5),
        micros(&through, 0.99)
    );
    let added = (
        micros(&through, 0.5) - micros(&direct, 0.5),
        micros(&through, 0.99) - micros(&direct, 0.99),
    );
    println!(
        "  added by the gateway        p50 {:>8.0}  p99 {:>8.0}",
        added.0, added.1
    );
    // The floor under the added latency: the intent's fsync, which no call may skip.
    let after = support::prometheus::scrape(gateway.admin).await;
    let delta = |name: &str| {
        after.value(name, &[]).unwrap_or_default() - before.value(name, &[]).unwrap_or_default()
    };
    let fsyncs = delta("datashare_gateway_audit_fsyncs_total");
    let fsync_seconds = delta("datashare_gateway_audit_fsync_seconds_total");
    println!(
        "  audit fsyncs                {:.2} per call, mean {:.0} us each",
        fsyncs / LATENCY_CALLS as f64,
        fsync_seconds * 1e6 / fsyncs.max(1.0)
    );
    // Where the added time goes: the gateway's own view of each call (decoded to answered) and
    // of its Redshift leg, as means; the rest of a call's time is the gRPC hop itself.
    let summed = |name: &str| after.sum(name) - before.sum(name);
    let mean_us = |name: &str| {
        summed(&format!("{name}_sum")) * 1e6 / summed(&format!("{name}_count")).max(1.0)
    };
    println!(
        "  inside the gateway          mean {:.0} us per call, of which the Redshift leg {:.0} us",
        mean_us("datashare_gateway_call_duration_seconds"),
        mean_us("datashare_gateway_upstream_duration_seconds"),
    );
    added
}

/// What `IN_FLIGHT` calls at once cost the gateway ([`many_in_flight`]).
#[derive(Clone, Copy, Debug)]
struct InFlight {
    peak_mib: f64,
    /// Once the upstream pool has closed its idle connections (or `IDLE_LIMIT` has passed).
    after_mib: f64,
    /// The gateway's connections to the emulator at that point.
    upstream_sockets_after: usize,
    failed: u64,
}

/// How long [`many_in_flight`] waits, after the last answer, for the upstream pool's idle
/// timeout (`upstream.pool_idle_timeout_ms`, 20 s by default; hyper checks once per timeout, so
/// a connection may stay up to twice as long) to close every connection it kept.
const IDLE_LIMIT: Duration = Duration::from_secs(60);

/// `IN_FLIGHT` calls at once against a slow upstream over `connections` client connections.
/// `all_at_aws`: every call talks to Redshift at once (`upstream.max_concurrent_requests` raised
/// to `IN_FLIGHT`, one upstream connection each, the attacker's case of issue 22 N14); else the
/// default bound of 512 holds the rest in line.
async fn many_in_flight(emulator: &Emulator, connections: usize, all_at_aws: bool) -> InFlight {
    let mut options = GatewayOptions::new(emulator.endpoint_url());
    // No limit may refuse a call of the 10,000 (all from one caller, so its fair share is the
    // whole pool): what is measured is the memory they take.
    options.server_toml = format!(
        "concurrency_limit = {0}\nmax_in_flight_calls = {0}\nper_caller_concurrency = {0}",
        IN_FLIGHT * 2,
    );
    if all_at_aws {
        // The emulator answering 10,000 connections at once on two shared cores is slower than
        // the test support's 2 s attempt (5 s is the default and the shutdown grace's bound): what is measured is the gateway's memory, not its timeouts.
        options.upstream_toml = format!("max_concurrent_requests = {IN_FLIGHT}");
        options.attempt_timeout_ms = 5_000;
        options.operation_timeout_ms = 5_000;
    }
    let gateway = Gateway::start(options).await;
    let pid = gateway.pid();
    let upstream_port = emulator.api_addr().port();
    let mut clients = Vec::new();
    for _ in 0..connections {
        clients.push(gateway.client().await);
    }
    let baseline = rss_kib(pid);
    emulator.inject_fault(json!({
        "kind": "latency",
        "operation": "AssociateDataShareConsumer",
        "latency_ms": UPSTREAM_DELAY_MS,
    }));
    let sampling = Arc::new(AtomicBool::new(true));
    let peak = Arc::new(AtomicU64::new(baseline));
    let peak_sockets = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (sampling, peak, peak_sockets) = (sampling.clone(), peak.clone(), peak_sockets.clone());
        std::thread::spawn(move || {
            let mut round = 0u64;
            while sampling.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                // Counting sockets reads every fd: every tenth sample only.
                if round.is_multiple_of(10) {
                    peak_sockets.fetch_max(
                        tcp_connections_to(pid, upstream_port) as u64,
                        Ordering::Relaxed,
                    );
                }
                round += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let started = Instant::now();
    let tasks: Vec<_> = (0..IN_FLIGHT)
        .map(|i| {
            let mut client = clients[i % clients.len()].clone();
            tokio::spawn(async move {
                client
                    .associate_consumer(as_caller(REPORTING, message()))
                    .await
                    .err()
            })
        })
        .collect();
    // Failures by code and message, so a failed run says why.
    let mut failures = std::collections::BTreeMap::<String, u64>::new();
    for t in tasks {
        if let Ok(Some(status)) = t.await {
            *failures
                .entry(format!("{:?}: {}", status.code(), status.message()))
                .or_default() += 1;
        }
    }
    let elapsed = started.elapsed();
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.join();
    emulator.clear_faults();
    // What stays, with the callers' connections still open as a busy gateway's would be: at
    // once (the pool keeps at most its idle bound, 64 by default, of the connections the burst
    // opened), and once the pool's idle timeout has closed those too.
    let sockets = tcp_connections_to(pid, upstream_port);
    let settled = rss_kib(pid);
    let idle_started = Instant::now();
    let mut idle_sockets = sockets;
    while idle_sockets > 0 && idle_started.elapsed() < IDLE_LIMIT {
        tokio::time::sleep(Duration::from_millis(500)).await;
        idle_sockets = tcp_connections_to(pid, upstream_port);
    }
    let idle_after = idle_started.elapsed();
    let after = rss_kib(pid);
    let peak_mib = peak.load(Ordering::Relaxed) as f64 / 1024.0;
    let failed = failures.values().sum();
    for (failure, count) in &failures {
        println!("  {count} failed with {failure}");
    }
    println!(
        "{IN_FLIGHT} calls in flight over {connections} connections, {} at AWS at once, against a \
         {UPSTREAM_DELAY_MS} ms upstream: done in {elapsed:.2?}, gateway RSS {:.1} MiB before, peak \
         {peak_mib:.1} MiB ({:.1} KiB per call), {:.1} MiB after the last answer, {:.1} MiB \
         {:.0?} later; upstream sockets: peak {}, then {sockets}, then {idle_sockets}; \
         {failed} failed",
        if all_at_aws { "all" } else { "512" },
        baseline as f64 / 1024.0,
        (peak.load(Ordering::Relaxed).saturating_sub(baseline)) as f64 / IN_FLIGHT as f64,
        settled as f64 / 1024.0,
        after as f64 / 1024.0,
        idle_after,
        peak_sockets.load(Ordering::Relaxed),
    );
    InFlight {
        peak_mib,
        after_mib: after as f64 / 1024.0,
        upstream_sockets_after: idle_sockets,
        failed,
    }
}

/// The phases named on the command line (`cargo bench --bench gateway -- memory fair`), or all.
const PHASES: [&str; 6] = ["cpu", "latency", "memory", "traces", "shipping", "fair"];

fn round(x: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (x * f).round() / f
}

fn main() {
    let named: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if let Some(unknown) = named.iter().find(|n| !PHASES.contains(&n.as_str())) {
        eprintln!("unknown phase {unknown:?}: the phases are {PHASES:?}");
        std::process::exit(2);
    }
    let wanted = |phase: &str| named.is_empty() || named.iter().any(|n| n == phase);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let emulator = Emulator::start();
        let sdk = sdk_client(&emulator);
        // The JSON summary: the keys of the phases that ran.
        let mut summary = serde_json::Map::new();

        if wanted("cpu") || wanted("latency") {
            let gateway = Gateway::start(GatewayOptions::new(emulator.endpoint_url())).await;
            let _ = latency(&emulator, &gateway).await; // warms up both paths
            if wanted("cpu") {
                // 1. CPU and throughput at 64 callers, direct and through the gateway, alternated.
                let mut direct = Vec::new();
                let mut through = Vec::new();
                for _ in 0..2 {
                    direct.push(direct_window(&sdk).await);
                    through.push(gateway_window(&gateway).await);
                }
                let sdk_cpu = mean(&direct, |w| w.cpu_us_per_call);
                let gateway_cpu = mean(&through, |w| w.cpu_us_per_call);
                let direct_rate = mean(&direct, |w| w.calls_per_s);
                let gateway_rate = mean(&through, |w| w.calls_per_s);
                println!(
                    "{CALLERS} callers, {}s windows, two each, audit durable, no traces:",
                    THROUGHPUT_WINDOW.as_secs()
                );
                for (d, g) in direct.iter().zip(&through) {
                    println!(
                        "  direct SDK {:>7.0} calls/s {:>6.0} us CPU/call | gateway {:>7.0} calls/s {:>6.0} us CPU/call, {:.2} fsyncs/call",
                        d.calls_per_s, d.cpu_us_per_call, g.calls_per_s, g.cpu_us_per_call, g.fsyncs_per_call
                    );
                }
                println!(
                    "  gateway / direct: CPU per call {:.2}x, throughput {:.2}x",
                    gateway_cpu / sdk_cpu,
                    gateway_rate / direct_rate
                );

                // A call policy denies whatever its approvals (FRONTEND is in no group): two
                // Cedar evaluations, no store read, no Redshift, one durable `call` record.
                let denied = [
                    caller_window(&gateway, FRONTEND, false).await,
                    caller_window(&gateway, FRONTEND, false).await,
                ];
                let denied_cpu = mean(&denied, |w| w.cpu_us_per_call);
                println!(
                    "  denied call: {:.0} us CPU/call, {:.0} calls/s; denied / allowed CPU per call {:.2}x",
                    denied_cpu,
                    mean(&denied, |w| w.calls_per_s),
                    denied_cpu / gateway_cpu
                );
                summary.extend(object(json!({
                    "sdk_cpu_us_per_call": round(sdk_cpu, 1),
                    "gateway_cpu_us_per_call": round(gateway_cpu, 1),
                    "cpu_ratio": round(gateway_cpu / sdk_cpu, 3),
                    "denied_cpu_us_per_call": round(denied_cpu, 1),
                    "denied_allowed_cpu_ratio": round(denied_cpu / gateway_cpu, 3),
                    "direct_calls_per_s": round(direct_rate, 0),
                    "gateway_calls_per_s": round(gateway_rate, 0),
                    "throughput_ratio": round(gateway_rate / direct_rate, 3),
                })));
            }
            if wanted("latency") {
                // 2. Added latency at one caller.
                let (added_p50, added_p99) = latency(&emulator, &gateway).await;
                summary.extend(object(json!({
                    "added_p50_us": round(added_p50, 0),
                    "added_p99_us": round(added_p99, 0),
                })));
            }
        }

        if wanted("memory") {
            // 3. Memory with many calls in flight: over 100 connections with the default bound
            // on calls at AWS, and over 120 with every call at AWS at once.
            let few = many_in_flight(&emulator, IN_FLIGHT / 100, false).await;
            let many = many_in_flight(&emulator, 120, true).await;
            println!(
                "  120 connections, all at AWS / 100 connections, 512 at AWS: peak RSS {:.2}x, after {:.2}x",
                many.peak_mib / few.peak_mib,
                many.after_mib / few.after_mib,
            );
            summary.extend(object(json!({
                "rss_mb_10k_in_flight": round(few.peak_mib, 1),
                "rss_mb_10k_in_flight_after": round(few.after_mib, 1),
                "errors_10k_in_flight": few.failed,
                "rss_mb_10k_in_flight_120_connections": round(many.peak_mib, 1),
                "rss_mb_10k_in_flight_120_connections_after": round(many.after_mib, 1),
                "rss_ratio_120_connections": round(many.peak_mib / few.peak_mib, 3),
                "rss_after_ratio_120_connections": round(many.after_mib / few.after_mib, 3),
                "upstream_sockets_after_120_connections": many.upstream_sockets_after,
                "errors_10k_in_flight_120_connections": many.failed,
            })));
        }

        if wanted("traces") {
            // 4. Traces on vs off.
            // Decodes every export but keeps nothing: a collector runs elsewhere, and keeping
            // every span as strings would charge its work to the gateway's two cores.
            let receiver = support::otlp::Receiver::counting().await;
            let mut off = Vec::new();
            let mut on = Vec::new();
            let mut dropped = 0.0;
            for _ in 0..2 {
                let gateway = Gateway::start(GatewayOptions::new(emulator.endpoint_url())).await;
                off.push(gateway_window(&gateway).await);
                drop(gateway);
                let mut options = GatewayOptions::new(emulator.endpoint_url());
                options.telemetry_toml = format!("otlp_endpoint = {:?}", receiver.endpoint());
                let gateway = Gateway::start(options).await;
                on.push(gateway_window(&gateway).await);
                dropped += support::prometheus::scrape(gateway.admin)
                    .await
                    .value("datashare_gateway_trace_spans_dropped_total", &[])
                    .unwrap_or_default();
                drop(gateway);
            }
            let otlp_ratio = mean(&on, |w| w.calls_per_s) / mean(&off, |w| w.calls_per_s);
            println!(
                "{CALLERS} callers, traces off: {} calls/s; OTLP export on: {} calls/s; on/off {otlp_ratio:.3}; \
                 gateway CPU per call on/off {:.3}x; {dropped} spans dropped, {} received",
                off.iter().map(|w| format!("{:.0}", w.calls_per_s)).collect::<Vec<_>>().join(", "),
                on.iter().map(|w| format!("{:.0}", w.calls_per_s)).collect::<Vec<_>>().join(", "),
                mean(&on, |w| w.cpu_us_per_call) / mean(&off, |w| w.cpu_us_per_call),
                receiver.count()
            );
            summary.extend(object(json!({
                "otlp_on_off_ratio": round(otlp_ratio, 3),
                "spans_dropped": dropped,
            })));
        }

        if wanted("shipping") {
            // 5. Checkpoints and shipping on vs off (figures printed; not in the summary).
            let _ = ship::checkpoints_and_shipping(&emulator).await;
        }

        if wanted("fair") {
            // 6. Fair shares: one caller's flood and another's calls.
            let fair = fair::fair_shares(&emulator).await;
            summary.extend(object(json!({
                "fair_share_other_ok_alone": round(fair.alone.ok, 3),
                "fair_share_other_ok_during_flood": round(fair.during.ok, 3),
                "fair_share_other_p50_ratio": round(fair.during.p50_ms / fair.alone.p50_ms, 3),
            })));
        }

        println!("{}", serde_json::Value::Object(summary));
    });
}

fn object(value: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    match value {
        serde_json::Value::Object(map) => map,
        _ => unreachable!("json!({{...}}) is an object"),
    }
}
