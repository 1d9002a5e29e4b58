//! A hostile HTTP/2 client and the gateway's memory: one client opens 100,000 header-only
//! streams as fast as the gateway lets it, resetting each at once (the "rapid reset" pattern,
//! CVE-2023-44487) except one in a thousand, which it leaves open with no body. When the gateway
//! closes the connection (GOAWAY for too many resets) the client reconnects and goes on. The
//! gateway's resident memory is sampled throughout; the figures are the peak and the level once
//! the client has left, each as a ratio to the baseline measured just before, in the same run.
//!
//! Run: `cargo bench --bench streams`. Figures are printed (the last line is JSON); nothing is
//! asserted.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use datashare_gateway::proto::datasharing::v1::AssociateConsumerRequest;
use support::emulator::Emulator;
use support::gateway::{Gateway, GatewayOptions, REPORTING, SALES_SHARE, as_caller};
use support::process::rss_kib;

const STREAMS: u64 = 100_000;
/// One stream in this many is left open (headers, no body) rather than reset.
const LEFT_OPEN_EVERY: u64 = 1_000;
const METHOD: &str = "/datasharing.v1.DataSharing/AssociateConsumer";

/// A call the gateway authorizes and audits but does not forward.
fn validate_only_call() -> AssociateConsumerRequest {
    AssociateConsumerRequest {
        data_share_arn: SALES_SHARE.into(),
        associate_entire_account: true,
        validate_only: true,
        ..Default::default()
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Samples the RSS of `pid` every 10 ms while `running`, keeping the peak.
fn sample_peak(pid: u32, running: Arc<AtomicBool>, peak: Arc<AtomicU64>) {
    std::thread::spawn(move || {
        while running.load(Ordering::Relaxed) {
            peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(10));
        }
    });
}

/// Waits until the RSS has not moved by more than 1% over one second (at most `limit`).
async fn settled_rss(pid: u32, limit: Duration) -> u64 {
    let started = Instant::now();
    let mut last = rss_kib(pid);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = rss_kib(pid);
        if now.abs_diff(last) * 100 <= last || started.elapsed() > limit {
            return now;
        }
        last = now;
    }
}

/// Opens streams on fresh connections until `STREAMS` have been opened; returns how many
/// connections it took and how many streams the gateway refused or reset.
async fn hostile_client(addr: std::net::SocketAddr) -> (u64, u64) {
    let mut opened = 0u64;
    let mut connections = 0u64;
    let mut refused = 0u64;
    // Streams left open; they hold their slot until the gateway's request timeout or the end.
    let mut held = Vec::new();
    while opened < STREAMS {
        let Ok(tcp) = tokio::net::TcpStream::connect(addr).await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let Ok((client, connection)) = h2::client::handshake(tcp).await else {
            continue;
        };
        connections += 1;
        let driver = tokio::spawn(connection);
        let mut client = client;
        // `ready` takes the handle; on an error the connection is gone and so is the handle.
        while opened < STREAMS {
            client = match client.ready().await {
                Ok(ready) => ready,
                Err(_) => break,
            };
            let request = http::Request::post(format!("http://{addr}{METHOD}"))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(())
                .expect("request");
            let Ok((response, mut body)) = client.send_request(request, false) else {
                break;
            };
            opened += 1;
            if opened.is_multiple_of(LEFT_OPEN_EVERY) {
                held.push((response, body));
            } else {
                body.send_reset(h2::Reason::CANCEL);
                drop(response);
            }
        }
        // The gateway closed this connection (GOAWAY) or the client is done with it.
        for (response, _) in held.drain(..) {
            if tokio::time::timeout(Duration::from_millis(1), response)
                .await
                .is_ok_and(|r| r.is_err())
            {
                refused += 1;
            }
        }
        driver.abort();
    }
    (connections, refused)
}

#[tokio::main]
async fn main() {
    let emulator = Emulator::start();
    let mut options = GatewayOptions::new(emulator.endpoint_url());
    options.audit_sync = false;
    let gateway = Gateway::start(options).await;
    let pid = gateway.pid();

    // Warm up with ordinary calls, so the baseline includes what serving calls costs.
    let mut client = gateway.client().await;
    for _ in 0..200 {
        client
            .associate_consumer(as_caller(REPORTING, validate_only_call()))
            .await
            .expect("warm-up call");
    }
    drop(client);
    let baseline = settled_rss(pid, Duration::from_secs(10)).await;

    let running = Arc::new(AtomicBool::new(true));
    let peak = Arc::new(AtomicU64::new(baseline));
    sample_peak(pid, running.clone(), peak.clone());
    let started = Instant::now();
    let (connections, refused) = hostile_client(gateway.addr).await;
    let elapsed = started.elapsed();
    let after = settled_rss(pid, Duration::from_secs(30)).await;
    running.store(false, Ordering::Relaxed);
    let peak = peak.load(Ordering::Relaxed).max(after);

    // The gateway still serves.
    let mut client = gateway.client().await;
    let served = client
        .associate_consumer(as_caller(REPORTING, validate_only_call()))
        .await
        .is_ok();

    println!(
        "hostile client: {STREAMS} streams ({} left open) in {elapsed:.2?} over {connections} connection(s), {refused} refused",
        STREAMS / LEFT_OPEN_EVERY
    );
    println!(
        "gateway RSS: baseline {:.1} MiB, peak {:.1} MiB ({:.2}x), after the client left {:.1} MiB ({:.2}x); serves afterwards: {served}",
        mib(baseline),
        mib(peak),
        peak as f64 / baseline as f64,
        mib(after),
        after as f64 / baseline as f64,
    );
    println!(
        "{{\"streams\":{STREAMS},\"seconds\":{:.2},\"connections\":{connections},\"rss_baseline_mb\":{:.1},\"rss_peak_mb\":{:.1},\"rss_after_mb\":{:.1},\"peak_over_baseline\":{:.2},\"after_over_baseline\":{:.2},\"serves_afterwards\":{served}}}",
        elapsed.as_secs_f64(),
        mib(baseline),
        mib(peak),
        mib(after),
        peak as f64 / baseline as f64,
        after as f64 / baseline as f64,
    );
}
