//! `datashare-gateway policy validate|check`, run as the real binary: exit codes and output.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SALES: &str = "arn:aws:redshift:us-east-1:111122223333:datashare:9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f/sales_share";
const LEGAL_HOLD: &str = "arn:aws:redshift:us-east-1:111122223333:datashare:d1e2f3a4-b5c6-4d7e-8f90-a1b2c3d4e5f6/legal_hold_share";
const PROVISIONED: &str =
    "arn:aws:redshift:us-east-1:444455556666:namespace:5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9";
const NOTEBOOK: &str = "spiffe://example.internal/ns/analytics/sa/notebook";

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/policies")
}

fn gateway(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_datashare-gateway"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn check(principal: &str, extra: &[&str], request: &str) -> Output {
    let dir = examples();
    let principals = dir.join("principals.toml");
    let mut args = vec![
        "policy",
        "check",
        "--policies",
        dir.to_str().unwrap(),
        "--principal",
        principal,
        "--principals",
        principals.to_str().unwrap(),
        "--request",
        request,
    ];
    args.extend_from_slice(extra);
    gateway(&args)
}

#[test]
fn validate_accepts_the_example_policies() {
    let out = gateway(&["policy", "validate", examples().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let output = text(&out);
    assert!(output.contains("ok: 12 policies"), "{output}");
    assert!(output.contains("legal-hold-d1e2f3a4"), "{output}");
}

#[test]
fn validate_rejects_a_broken_copy_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(examples()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    let analytics = dir.path().join("analytics.cedar");
    let broken = std::fs::read_to_string(&analytics)
        .unwrap()
        .replace("context.consumer_kind ==", "context.consumer_type ==");
    std::fs::write(&analytics, broken).unwrap();
    let out = gateway(&["policy", "validate", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let output = text(&out);
    assert!(output.contains("analytics.cedar:13:"), "{output}");
    assert!(output.contains("consumer_type"), "{output}");
    assert!(!output.contains("ok:"), "{output}");

    // A syntax error is located too.
    std::fs::write(
        dir.path().join("analytics.cedar"),
        "permit (principal, action, resource)\nwhen { true ",
    )
    .unwrap();
    let out = gateway(&["policy", "validate", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("analytics.cedar:2:"), "{}", text(&out));
}

#[test]
fn check_allows_a_permitted_request_with_exit_0_and_the_permit_id() {
    let request = format!(r#"{{"data_share_arn": "{SALES}", "consumer_arn": "{PROVISIONED}"}}"#);
    let out = check(NOTEBOOK, &[], &request);
    let output = text(&out);
    assert_eq!(out.status.code(), Some(0), "{output}");
    assert!(output.contains("decision: ALLOW"), "{output}");
    assert!(
        output.contains("analytics-associate-namespaces-in-org"),
        "{output}"
    );
}

#[test]
fn check_denies_with_exit_1_and_the_forbid_ids() {
    let request = format!(
        r#"{{"data_share_arn": "{LEGAL_HOLD}", "consumer_arn": "{PROVISIONED}", "allow_writes": true}}"#
    );
    let out = check(NOTEBOOK, &[], &request);
    let output = text(&out);
    assert_eq!(out.status.code(), Some(1), "{output}");
    assert!(output.contains("decision: DENY"), "{output}");
    assert!(
        output.contains("legal-hold-d1e2f3a4, writes-require-data-writers"),
        "{output}"
    );
}

#[test]
fn check_shows_how_many_approvals_a_request_needs() {
    let loader = "spiffe://example.internal/ns/data/sa/loader";
    let request = format!(
        r#"{{"data_share_arn": "{SALES}", "consumer_arn": "{PROVISIONED}", "allow_writes": true}}"#
    );
    let none = check(loader, &[], &request);
    assert_eq!(none.status.code(), Some(1), "{}", text(&none));
    assert!(
        text(&none).contains("determining policies: writes-need-one-approval"),
        "{}",
        text(&none)
    );
    let one = check(loader, &["--approvals", "1"], &request);
    assert_eq!(one.status.code(), Some(0), "{}", text(&one));
    assert!(text(&one).contains("decision: ALLOW"), "{}", text(&one));
}

#[test]
fn check_denies_when_nothing_permits_and_groups_can_be_given_on_the_command_line() {
    let request = format!(r#"{{"data_share_arn": "{SALES}", "associate_entire_account": true}}"#);
    let out = check(NOTEBOOK, &[], &request);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("nothing permits this request"),
        "{}",
        text(&out)
    );

    let out = check(
        "cli-user",
        &["--groups", "data-platform,data-writers"],
        &request,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("data-platform-associate-in-org"),
        "{}",
        text(&out)
    );

    // Outside the org, the gateway's own account may not receive an entire-account association.
    let out = check(
        "cli-user",
        &[
            "--groups",
            "data-platform",
            "--consumer-account",
            "999999999999",
        ],
        &request,
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}

#[test]
fn check_cannot_decide_an_invalid_request_and_exits_2() {
    let out = check(NOTEBOOK, &[], r#"{"data_share_arn": "nope"}"#);
    let output = text(&out);
    assert_eq!(out.status.code(), Some(2), "{output}");
    assert!(output.contains("data_share_arn"), "{output}");
    let out = check(NOTEBOOK, &[], r#"{"data_share": "x"}"#);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[test]
fn check_decides_every_method() {
    let list = check(
        NOTEBOOK,
        &["--method", "ListConsumerDataShares"],
        r#"{"status": 1}"#,
    );
    assert_eq!(list.status.code(), Some(0), "{}", text(&list));
    assert!(text(&list).contains("determining policies: analytics-list-in-org"));

    let request =
        format!(r#"{{"data_share_arn": "{SALES}", "disassociate_entire_account": true}}"#);
    let undo = check(NOTEBOOK, &["--method", "DisassociateConsumer"], &request);
    assert_eq!(undo.status.code(), Some(1), "{}", text(&undo));
    let request = format!(r#"{{"data_share_arn": "{SALES}", "consumer_arn": "{PROVISIONED}"}}"#);
    let undo = check(NOTEBOOK, &["--method", "DisassociateConsumer"], &request);
    assert_eq!(undo.status.code(), Some(0), "{}", text(&undo));

    let unknown = check(NOTEBOOK, &["--method", "DeleteEverything"], "{}");
    assert_eq!(unknown.status.code(), Some(2), "{}", text(&unknown));
    assert!(text(&unknown).contains("--method"), "{}", text(&unknown));
    // A field of another method is named, not ignored.
    let wrong = check(
        NOTEBOOK,
        &["--method", "ListConsumerDataShares"],
        r#"{"allow_writes": true}"#,
    );
    assert_eq!(wrong.status.code(), Some(2), "{}", text(&wrong));
    assert!(text(&wrong).contains("allow_writes"), "{}", text(&wrong));
}

#[test]
fn validate_prints_how_many_policies_each_file_holds_and_the_sets_hash() {
    let out = gateway(&["policy", "validate", examples().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let output = text(&out);
    assert!(
        output.contains(
            "  analytics.cedar: 2 policies\n  approvals.cedar: 5 policies\n  data-platform.cedar: 2 policies\n  guardrails.cedar: 3 policies\n"
        ),
        "{output}"
    );
    let hash = output
        .lines()
        .find_map(|l| l.strip_prefix("sha256: "))
        .unwrap_or_else(|| panic!("no sha256 line: {output}"));
    assert_eq!(hash.len(), 64, "{output}");
}
