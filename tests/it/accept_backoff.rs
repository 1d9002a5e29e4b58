//! Out of file descriptors, a listener's accept fails at once and keeps failing; retried at once
//! it would spin a core and flood the log. Both listeners (gRPC and admin) back off 100 ms after
//! each failed accept, count it, and serve again once descriptors are free.

use crate::support;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use datashare_gateway::proto::datasharing::v1::AssociateConsumerRequest;
use support::emulator::Emulator;
use support::gateway::{Gateway, GatewayOptions, REPORTING, SALES_SHARE, as_caller};

/// The listeners' back-off (`ACCEPT_BACKOFF` in src/accept.rs and src/admin.rs).
const BACKOFF: Duration = Duration::from_millis(100);

fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc/PID/fd")
        .count()
}

/// Sets the soft limit on open files of process `pid` (util-linux `prlimit`).
fn set_open_files_limit(pid: u32, soft: &str) {
    let status = std::process::Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--nofile={soft}:"))
        .status()
        .expect("run prlimit");
    assert!(status.success(), "prlimit --nofile={soft}: failed");
}

fn soft_open_files_limit(pid: u32) -> String {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("read limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files line");
    line.split_whitespace()
        .nth(3)
        .expect("soft limit")
        .to_owned()
}

fn accept_failures(logs: &str, admin: bool) -> usize {
    logs.lines()
        .filter(|l| l.contains("cannot accept a connection; backing off"))
        .filter(|l| l.contains("admin: cannot accept") == admin)
        .count()
}

#[tokio::test]
async fn out_of_descriptors_both_listeners_back_off_and_recover() {
    let emulator = Emulator::start();
    let gw = Gateway::start(GatewayOptions::new(emulator.endpoint_url())).await;
    let pid = gw.pid();
    let original_limit = soft_open_files_limit(pid);

    // A few descriptors of headroom, then far more connections than that on both listeners:
    // the kernel completes them all (backlog), the gateway cannot accept most of them.
    let headroom = 4;
    set_open_files_limit(pid, &(open_descriptors(pid) + headroom).to_string());
    let flood_started = Instant::now();
    let held: Vec<TcpStream> = (0..40)
        .flat_map(|_| [gw.addr, gw.admin])
        .map(|addr| TcpStream::connect(addr).expect("connect (the kernel's backlog accepts)"))
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let logs = gw.logs();
    let elapsed = flood_started.elapsed();

    // At most one failure per back-off period per listener since the flood began; a listener
    // that retried at once would have logged thousands.
    let bound = (elapsed.as_millis() / BACKOFF.as_millis()) as usize + 1;
    for (admin, name) in [(false, "grpc"), (true, "admin")] {
        let failures = accept_failures(&logs, admin);
        assert!(
            failures >= 1,
            "{name}: the limit was never hit, the test proves nothing; log:\n{logs}"
        );
        assert!(
            failures <= bound,
            "{name}: {failures} accept failures in {elapsed:?} (back-off allows {bound})"
        );
    }

    // Descriptors back: both listeners serve again, and the failures were counted.
    drop(held);
    set_open_files_limit(pid, &original_limit);
    let mut client = gw.client().await;
    let reply = client
        .associate_consumer(as_caller(
            REPORTING,
            AssociateConsumerRequest {
                data_share_arn: SALES_SHARE.into(),
                associate_entire_account: true,
                validate_only: true,
                ..Default::default()
            },
        ))
        .await;
    assert!(reply.is_ok(), "{reply:?}");
    let metrics = support::prometheus::scrape(gw.admin).await;
    for listener in ["grpc", "admin"] {
        let counted = metrics
            .value(
                "datashare_gateway_accept_errors_total",
                &[("listener", listener)],
            )
            .unwrap_or(0.0);
        assert!(counted >= 1.0, "{listener}: {counted}\n{}", metrics.text);
    }
}
