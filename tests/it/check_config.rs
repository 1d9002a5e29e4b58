//! `check-config --no-files`: every rule of a configuration is checked except that the files it
//! names exist, so a configuration meant for a pod (certificates and policies mounted there) can
//! be checked in CI.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/gateway.toml")
}

fn check_config(args: &[&str], config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_datashare-gateway"))
        .arg("check-config")
        .args(args)
        .arg(config)
        .output()
        .expect("run check-config")
}

#[test]
fn without_the_flag_a_missing_certificate_is_refused_by_name() {
    let out = check_config(&[], &example());
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("auth.cert = /etc/datashare-gateway/tls/tls.crt: no such file"),
        "{stderr}"
    );
}

#[test]
fn no_files_accepts_a_pod_config_whose_files_are_not_here() {
    let out = check_config(&["--no-files"], &example());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).ends_with(": ok\n"));
}

#[test]
fn no_files_still_refuses_a_rule_violation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.toml");
    let text = std::fs::read_to_string(example()).expect("read the example");
    let broken = text.replace("shutdown_grace_secs = 20", "shutdown_grace_secs = 5");
    assert_ne!(broken, text, "the example sets shutdown_grace_secs = 20");
    std::fs::write(&path, broken).expect("write");
    let out = check_config(&["--no-files"], &path);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "server.shutdown_grace_secs = 5: must be at least upstream.operation_timeout_ms"
        ),
        "{stderr}"
    );
}
