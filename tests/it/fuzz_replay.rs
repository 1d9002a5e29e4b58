//! Every committed fuzz input still passes its target: the minimized corpus of each target
//! (`fuzz/corpus/<target>/`) and every input that once crashed it (`fuzz/regressions/<target>/`),
//! through the same functions the cargo-fuzz binaries run. The fuzzer itself never runs here:
//! `scripts/fuzz.sh` runs it.

use crate::fuzz_targets;

use fuzz_targets::{TARGETS, inputs};

fn replay(kind: &str, at_least: usize) {
    for target in TARGETS {
        let files = inputs(kind, target.name);
        assert!(
            files.len() >= at_least,
            "fuzz/{kind}/{}/ holds {} inputs, expected at least {at_least}",
            target.name,
            files.len()
        );
        for file in files {
            let data = std::fs::read(&file).expect("read a fuzz input");
            // Name the input whose invariant broke: the panic message alone does not.
            let outcome = std::panic::catch_unwind(|| (target.run)(&data));
            assert!(
                outcome.is_ok(),
                "{} fails on {}",
                target.name,
                file.display()
            );
        }
    }
}

#[test]
fn every_target_passes_its_committed_corpus() {
    replay("corpus", 1);
}

#[test]
fn every_input_that_once_crashed_a_target_now_passes() {
    replay("regressions", 0);
}

#[test]
fn audit_verify_refuses_a_record_that_is_not_json() {
    // An unknown member with a byte that is not UTF-8, hashed as the writer would.
    let file = fuzz_targets::seal(
        b"{\"v\":1,\"seq\":1,\"ts\":\"t\",\"kind\":\"call\",\"note\":\"\xf7\",\"alg\":\"sha256\",\
          \"prev\":\"@prev@\"}\n",
    );
    let summary = fuzz_targets::verify_file(&file);
    assert_eq!(summary.records, 0, "{summary:?}");
    assert!(summary.failure.is_some(), "{summary:?}");
}
