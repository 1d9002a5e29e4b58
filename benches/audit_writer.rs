//! Audit writer throughput and latency, on the real disk (`target/tmp`).
//!
//! - baseline: one caller, so every record gets its own fsync;
//! - group commit: many concurrent callers sharing fsyncs;
//! - the same without fsync (`sync = false`): the CPU ceiling;
//! - paced: 5,000 records/s, the wait of each record from `append` to durable (p50/p99).
//!
//! Run with `cargo bench --bench audit_writer`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use datashare_gateway::audit::{
    AuditConfig, AuditLog, AuditStats, CallFacts, DecisionRecord, OutcomeFacts, RecordBody,
};
use hdrhistogram::Histogram;

const BASELINE_RECORDS: usize = 3_000;
const GROUP_RECORDS: usize = 400_000;
const GROUP_CALLERS: usize = 4_096;
const PACED_RATE: u64 = 5_000;
const PACED_SECONDS: u64 = 6;

type BenchError = Box<dyn std::error::Error + Send + Sync>;

fn body(i: usize) -> RecordBody {
    let call = CallFacts {
        request_id: format!("7d9f6c1e-0b7a-4c55-9d1e-{i:012}"),
        trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
        method: "AssociateConsumer".into(),
        peer: Some("10.1.2.3:51234".into()),
        received_at: "2026-11-25T18:00:00.123456789Z".into(),
        principal: Some("spiffe://corp.example/ns/analytics/sa/loader".into()),
        groups: vec!["producers".into(), "analytics".into()],
        params: serde_json::json!({
            "data_share_arn": "arn:aws:redshift:us-east-1:123456789012:datashare:a1b2c3d4-5678-90ab-cdef-EXAMPLE11111/sales_share",
            "associate_entire_account": false,
            "consumer_arn": "arn:aws:redshift-serverless:us-east-1:210987654321:namespace/b1c2d3e4-5678-90ab-cdef-EXAMPLE22222",
            "consumer_region": "",
            "allow_writes": false,
            "validate_only": false,
        }),
        decision: Some(DecisionRecord {
            allowed: true,
            determining_policies: vec!["permit-analytics-sales".into()],
        }),
        approval: None,
        truncated: Vec::new(),
    };
    if i.is_multiple_of(2) {
        RecordBody::Intent(call)
    } else {
        RecordBody::Call {
            call,
            outcome: OutcomeFacts {
                code: "PERMISSION_DENIED".into(),
                reason: Some("POLICY_DENIED".into()),
                latency_us: 412,
                ..OutcomeFacts::default()
            },
        }
    }
}

async fn open(dir: &std::path::Path) -> Result<AuditLog, BenchError> {
    Ok(AuditLog::open(&AuditConfig::new(dir), "test").await?)
}

async fn open_unsynced(dir: &std::path::Path) -> Result<AuditLog, BenchError> {
    let mut config = AuditConfig::new(dir);
    config.sync = false;
    Ok(AuditLog::open(&config, "test").await?)
}

fn print_stats(name: &str, records: usize, elapsed: Duration, stats: &AuditStats) -> f64 {
    let rate = records as f64 / elapsed.as_secs_f64();
    let per_batch = stats.records_written as f64 / stats.batches.max(1) as f64;
    let fsync_avg = stats.fsync_micros_total as f64 / stats.fsyncs.max(1) as f64;
    println!(
        "{name:<14} {records:>8} records in {:>7.3} s = {rate:>10.0} durable records/s; \
         {} fsyncs, {per_batch:.1} records/batch, fsync avg {fsync_avg:.0} us max {} us",
        elapsed.as_secs_f64(),
        stats.fsyncs,
        stats.fsync_micros_max
    );
    rate
}

async fn baseline(dir: &std::path::Path) -> Result<f64, BenchError> {
    let log = open(dir).await?;
    let started = Instant::now();
    for i in 0..BASELINE_RECORDS {
        log.append(body(i)).await?;
    }
    let elapsed = started.elapsed();
    let rate = print_stats("baseline", BASELINE_RECORDS, elapsed, &log.stats());
    log.close().await;
    Ok(rate)
}

async fn group_commit(dir: &std::path::Path, sync: bool) -> Result<f64, BenchError> {
    let log = if sync {
        open(dir).await?
    } else {
        open_unsynced(dir).await?
    };
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let callers: Vec<_> = (0..GROUP_CALLERS)
        .map(|_| {
            let log = log.clone();
            let next = Arc::clone(&next);
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= GROUP_RECORDS {
                        return Ok::<_, BenchError>(());
                    }
                    log.append(body(i)).await?;
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await??;
    }
    let elapsed = started.elapsed();
    let name = if sync {
        "group commit"
    } else {
        "no fsync (cpu)"
    };
    let rate = print_stats(name, GROUP_RECORDS, elapsed, &log.stats());
    log.close().await;
    Ok(rate)
}

async fn paced(dir: &std::path::Path) -> Result<(), BenchError> {
    let log = open(dir).await?;
    let total = (PACED_RATE * PACED_SECONDS) as usize;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let started = Instant::now();
    // One tick per millisecond, each starting rate/1000 appends at once: the timer's resolution.
    let per_tick = (PACED_RATE / 1000) as usize;
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sent = 0;
    while sent < total {
        ticker.tick().await;
        for _ in 0..per_tick {
            let log = log.clone();
            let tx = tx.clone();
            let i = sent;
            tokio::spawn(async move {
                let t = Instant::now();
                let result = log.append(body(i)).await;
                let _ = tx.send((t.elapsed(), result.is_ok()));
            });
            sent += 1;
        }
    }
    drop(tx);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut failed = 0;
    while let Some((wait, ok)) = rx.recv().await {
        hist.record(u64::try_from(wait.as_micros()).unwrap_or(u64::MAX).max(1))?;
        if !ok {
            failed += 1;
        }
    }
    let elapsed = started.elapsed();
    let stats = log.stats();
    println!(
        "paced {PACED_RATE}/s  {total:>8} records in {:>7.3} s; wait per record: p50 {} us, \
         p99 {} us, p99.9 {} us, max {} us; {} fsyncs, {:.1} records/batch; {failed} failed",
        elapsed.as_secs_f64(),
        hist.value_at_quantile(0.50),
        hist.value_at_quantile(0.99),
        hist.value_at_quantile(0.999),
        hist.max(),
        stats.fsyncs,
        stats.records_written as f64 / stats.batches.max(1) as f64,
    );
    log.close().await;
    Ok(())
}

fn main() -> Result<(), BenchError> {
    // `cargo bench` passes `--bench`; this harness has no options.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
    println!("audit_writer: files in {}", tmp.path().display());
    runtime.block_on(async {
        let base = baseline(&tmp.path().join("baseline")).await?;
        let group = group_commit(&tmp.path().join("group"), true).await?;
        println!("group commit / baseline = {:.1}x", group / base);
        // The same load without fsync: the writer's CPU ceiling on this machine.
        group_commit(&tmp.path().join("nosync"), false).await?;
        paced(&tmp.path().join("paced")).await
    })
}
