//! What the audit module's unit tests share: records to write and reading a trail back.

use std::path::{Path, PathBuf};

use super::checkpoint;
use super::config::{AuditConfig, CheckpointConfig};
use super::record::{CallFacts, RecordBody};
use super::segment::list_segments;

/// An intent of `AssociateConsumer` with request id `id`.
pub(super) fn intent(id: &str) -> RecordBody {
    RecordBody::Intent(CallFacts {
        request_id: id.into(),
        method: "AssociateConsumer".into(),
        ..CallFacts::default()
    })
}

/// Every record in `dir`'s audit files, in order.
pub(super) fn lines_of(dir: &Path) -> Vec<serde_json::Value> {
    let mut all = Vec::new();
    for (_, path) in list_segments(dir).expect("list") {
        let text = std::fs::read_to_string(&path).expect("read");
        for line in text.lines() {
            if let Ok(v) = serde_json::from_str(line) {
                all.push(v);
            }
        }
    }
    all
}

/// Polls the trail until `n` records are in it (the writer works on its own thread).
pub(super) async fn until_records(dir: &Path, n: usize) -> Vec<serde_json::Value> {
    for _ in 0..500 {
        let recs = lines_of(dir);
        if recs.len() >= n {
            return recs;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    lines_of(dir)
}

/// A log in `tmp/audit` signing a checkpoint every `interval_records` records (never by
/// time) with a new key in `tmp/checkpoint.key`: (config, audit dir, key file).
pub(super) fn checkpointed(tmp: &Path, interval_records: u64) -> (AuditConfig, PathBuf, PathBuf) {
    let key_file = tmp.join("checkpoint.key");
    checkpoint::generate_key_pair(&key_file).expect("keygen");
    let dir = tmp.join("audit");
    let mut config = AuditConfig::new(&dir);
    config.checkpoint = Some(CheckpointConfig {
        signing_key_file: key_file.clone(),
        interval_records,
        interval_secs: 3600,
    });
    (config, dir, key_file)
}
