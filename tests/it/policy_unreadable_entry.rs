//! A `*.cedar` entry that cannot be read as a file (a dangling symlink, a directory) stops every
//! command that loads policies, naming it, instead of silently dropping its policies: `serve`,
//! `check-config`, `policy validate` and `policy check`. (A running gateway refuses such a
//! reload: `policy_reload.rs`.)

use crate::support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::gateway::{GatewayOptions, NOTEBOOK, SALES_SHARE, config_text, repo_root};
use tempfile::TempDir;

/// A copy of examples/policies whose guardrails are a link to a file that is not there.
fn dangling_guardrails() -> TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for entry in std::fs::read_dir(repo_root().join("examples/policies")).expect("examples") {
        let path = entry.expect("entry").path();
        if let Some(name) = path.file_name()
            && name != "guardrails.cedar"
        {
            std::fs::copy(&path, dir.path().join(name)).expect("copy");
        }
    }
    std::os::unix::fs::symlink(
        dir.path().join("release-2/guardrails.cedar"),
        dir.path().join("guardrails.cedar"),
    )
    .expect("symlink");
    dir
}

/// Runs the binary; kills it if it is still running after a bound (a `serve` that started).
fn run(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_datashare-gateway"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn assert_refused_naming(out: &Output, code: i32, what: &str) {
    let output = text(out);
    assert_eq!(out.status.code(), Some(code), "{output}");
    assert!(output.contains(what), "{output}");
}

fn config_file(policies: &Path, dir: &Path) -> std::path::PathBuf {
    let mut options = GatewayOptions::new("http://127.0.0.1:9");
    options.policy_dir = policies.to_owned();
    let file = dir.join("gateway.toml");
    std::fs::write(&file, config_text(&options, &dir.join("audit"))).expect("write config");
    file
}

#[test]
fn serve_and_check_config_refuse_a_dangling_policy_symlink_naming_it() {
    let policies = dangling_guardrails();
    let dir = tempfile::tempdir().expect("temp dir");
    let config = config_file(policies.path(), dir.path());
    let config = config.to_str().expect("utf-8 path");
    let named = "guardrails.cedar is a dangling symlink";
    assert_refused_naming(&run(&["check-config", config]), 1, named);
    assert_refused_naming(&run(&["serve", "--config", config]), 1, named);
}

#[test]
fn policy_validate_and_check_refuse_a_dangling_symlink_or_a_directory_naming_it() {
    let policies = dangling_guardrails();
    let dir = policies.path().to_str().expect("utf-8 path");
    let validate = run(&["policy", "validate", dir]);
    assert_refused_naming(&validate, 1, "guardrails.cedar is a dangling symlink");
    assert!(!text(&validate).contains("ok:"), "{}", text(&validate));
    let request =
        format!(r#"{{"data_share_arn": "{SALES_SHARE}", "associate_entire_account": true}}"#);
    let check = |dir: &str| {
        run(&[
            "policy",
            "check",
            "--policies",
            dir,
            "--principal",
            NOTEBOOK,
            "--request",
            &request,
        ])
    };
    assert_refused_naming(&check(dir), 2, "guardrails.cedar is a dangling symlink");

    std::fs::remove_file(policies.path().join("guardrails.cedar")).expect("remove link");
    std::fs::create_dir(policies.path().join("guardrails.cedar")).expect("make a directory");
    assert_refused_naming(
        &run(&["policy", "validate", dir]),
        1,
        "guardrails.cedar is a directory",
    );
    assert_refused_naming(&check(dir), 2, "guardrails.cedar is a directory");
}
