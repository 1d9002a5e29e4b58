#![no_main]

// The target's logic is shared with `tests/fuzz_replay.rs`, which replays the corpus in CI.
// Each binary uses one of the functions there.
#[allow(dead_code)]
#[path = "../../tests/fuzz_targets/mod.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::decode_to_decision(data));
