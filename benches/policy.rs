//! Policy evaluation cost for one request with 10 and with 1,000 policies.
//!
//! `cargo bench --bench policy`: criterion's estimates, then p50/p99 per evaluation from an
//! hdrhistogram loop (the target is p99 < 20 µs at 1,000 policies).

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use criterion::Criterion;
use datashare_gateway::arn::{DataShareArn, NamespaceArn};
use datashare_gateway::call::Principal;
use datashare_gateway::ops::associate::AssociateRequest;
use datashare_gateway::ops::{AssociateConsumer, ConsumerTarget};
use datashare_gateway::policy::{Policies, PolicyConfig};

const ORG: [&str; 3] = ["111122223333", "444455556666", "777788889999"];
const KINDS: [&str; 4] = [
    "provisioned_namespace",
    "serverless_namespace",
    "region",
    "account",
];

/// Writes the example policies plus `teams` generated per-team permits (each names its own
/// service principal, producer account and allowed consumer kind, as a large org's set would)
/// and `retired` forbids that apply to every principal (one retired datashare each).
fn policy_dir(teams: usize, retired: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/policies");
    for file in ["data-platform.cedar", "analytics.cedar", "guardrails.cedar"] {
        std::fs::copy(examples.join(file), dir.path().join(file)).expect("copy example");
    }
    let mut text = String::new();
    for i in 0..teams {
        let producer = ORG[i % ORG.len()];
        let consumer = ORG[(i / 3) % ORG.len()];
        let kind = KINDS[i % KINDS.len()];
        text.push_str(&format!(
            "@id(\"team-{i}\")\n\
             permit (principal == Service::\"spiffe://example.internal/ns/team{i}/sa/app\", \
             action == Action::\"AssociateConsumer\", resource)\n\
             when {{ resource.producer_account == \"{producer}\" && \
             context.consumer_account == \"{consumer}\" && context.consumer_kind == \"{kind}\" && \
             !context.allow_writes }};\n"
        ));
    }
    for i in 0..retired {
        text.push_str(&format!(
            "@id(\"retired-share-{i}\")\n\
             forbid (principal, action, resource is DataShare) when {{ resource.name == \"retired_share_{i}\" }};\n"
        ));
    }
    std::fs::write(dir.path().join("teams.cedar"), text).expect("write policies");
    dir
}

fn load(teams: usize, retired: usize) -> (tempfile::TempDir, Policies) {
    let dir = policy_dir(teams, retired);
    let policies = Policies::load(
        PolicyConfig::new(dir.path()),
        datashare_gateway::operations::policy_probes(),
    )
    .expect("valid policies");
    (dir, policies)
}

fn call() -> (Principal, AssociateRequest) {
    let principal = Principal {
        id: "spiffe://example.internal/ns/data/sa/reporting".into(),
        groups: vec!["data-platform".into()],
    };
    let request = AssociateRequest {
        data_share: DataShareArn::parse(
            "arn:aws:redshift:us-east-1:111122223333:datashare:9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f/sales_share",
        )
        .expect("share"),
        consumer: ConsumerTarget::Namespace(
            NamespaceArn::parse(
                "arn:aws:redshift:us-east-1:444455556666:namespace:5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9",
            )
            .expect("namespace"),
        ),
        account: datashare_gateway::arn::AccountId::parse("444455556666").expect("account"),
        allow_writes: None,
        validate_only: false,
    };
    (principal, request)
}

fn main() {
    // 5 example policies (2 permits, 3 forbids) + generated ones.
    let sets = [
        // 5 + 5 team permits.
        ("10 policies", load(5, 0)),
        // 5 + 995 team permits, each pinned to its principal.
        ("1000 policies", load(995, 0)),
        // 5 + 905 team permits + 90 forbids for every principal (95 unpinned policies).
        ("1000 policies, 95 unpinned", load(905, 90)),
    ];
    let (principal, request) = call();
    for (name, (_, policies)) in &sets {
        println!("{name}: {} policies loaded", policies.len());
        assert!(
            policies
                .evaluate::<AssociateConsumer>(&principal, &request)
                .allowed
        );
    }

    let mut criterion = Criterion::default().configure_from_args();
    for (name, (_, policies)) in &sets {
        criterion.bench_function(&format!("evaluate/{name}"), |b| {
            b.iter(|| {
                policies.evaluate::<AssociateConsumer>(black_box(&principal), black_box(&request))
            })
        });
    }
    criterion.final_summary();

    let mut quantiles = Vec::new();
    for (name, (_, policies)) in &sets {
        let mut histogram = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)
            .expect("histogram");
        for _ in 0..1_000 {
            black_box(policies.evaluate::<AssociateConsumer>(&principal, &request));
        }
        for _ in 0..20_000 {
            let start = Instant::now();
            black_box(
                policies.evaluate::<AssociateConsumer>(black_box(&principal), black_box(&request)),
            );
            let nanos = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
            histogram.saturating_record(nanos.max(1));
        }
        let (p50, p99) = (
            histogram.value_at_quantile(0.50),
            histogram.value_at_quantile(0.99),
        );
        println!(
            "{name}: p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs ({} evaluations)",
            p50 as f64 / 1_000.0,
            p99 as f64 / 1_000.0,
            histogram.max() as f64 / 1_000.0,
            histogram.len()
        );
        quantiles.push((p50, p99));
    }
    for (i, (name, _)) in sets.iter().enumerate().skip(1) {
        println!(
            "ratio {name} / 10 policies: p50 {:.1}x, p99 {:.1}x",
            quantiles[i].0 as f64 / quantiles[0].0 as f64,
            quantiles[i].1 as f64 / quantiles[0].1 as f64
        );
    }
    // The machine-readable summary: the worse p99 of the two 1,000-policy sets.
    let p99_1000 = quantiles[1..].iter().map(|q| q.1).max().unwrap_or(0);
    println!(
        "{{\"policies_1000_p99_us\":{:.1}}}",
        p99_1000 as f64 / 1_000.0
    );
}
