//! The production dependency graph: one HTTP/TLS stack, no bench-only crates, and no emulator
//! without the `emulator` feature. Read with `cargo tree` (no build), so a feature that brings
//! back the SDK's legacy client or a dependency moved back to `[dependencies]` fails here.

use std::process::Command;

use crate::support::gateway::repo_root;

/// `cargo tree` of the gateway's normal (non-dev, non-build) dependencies, one crate per line.
fn normal_tree(extra: &[&str]) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(repo_root())
        .args([
            "tree",
            "--offline",
            "--locked",
            "-p",
            "datashare-gateway",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .args(extra)
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn has_crate(tree: &str, name_and_version: &str) -> bool {
    tree.lines().any(|line| line.starts_with(name_and_version))
}

#[test]
fn the_production_graph_has_one_http_and_tls_stack_and_no_bench_crates() {
    let tree = normal_tree(&[]);
    // A graph this small would mean cargo tree printed something else.
    assert!(has_crate(&tree, "aws-sdk-redshift v"), "{tree}");
    assert!(has_crate(&tree, "hyper v1."), "{tree}");
    for absent in [
        "ring v",
        "hyper v0.14",
        "h2 v0.3",
        "rustls v0.21",
        "hdrhistogram v",
    ] {
        assert!(
            !has_crate(&tree, absent),
            "{absent} is in the production graph"
        );
    }
    for sso in ["aws-sdk-sso v", "aws-sdk-ssooidc v"] {
        assert!(
            !has_crate(&tree, sso),
            "{sso}: aws-config's SSO is compiled"
        );
    }
}

#[test]
fn the_emulator_is_linked_only_with_its_feature() {
    assert!(has_crate(&normal_tree(&[]), "datashare-emulator v"));
    assert!(!has_crate(
        &normal_tree(&["--no-default-features"]),
        "datashare-emulator v"
    ));
}
