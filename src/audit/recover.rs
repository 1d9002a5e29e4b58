//! Crash recovery: where the chain ends in the files a previous run left, which bytes after it
//! are torn (a crash mid-write), and whether a checkpoint covers more than the files hold.

use std::path::{Path, PathBuf};

use super::checkpoint;
use super::log::AuditError;
use super::record::{Chain, GENESIS, RawRecord, RecoveryNote, SCHEMA_VERSION, split_line};
use super::segment::complete_lines;

/// Where the chain ends in the existing files, and which bytes after it are torn.
#[derive(Debug)]
pub(super) struct Recovered {
    pub(super) last_seq: u64,
    pub(super) last_hash: String,
    /// Oldest first: the order in which the bytes were written.
    pub(super) torn: Vec<RecoveryNote>,
}

/// Finds where the chain ends in `segments` (the audit files of `dir`, oldest first). Refuses a
/// last record that does not verify with `chain`, and files that end before the seq the newest
/// checkpoint covers (`checkpoint_covers`): the trail was cut short.
pub(super) fn recover(
    dir: &Path,
    segments: &[(u64, PathBuf)],
    chain: &Chain,
    checkpoint_covers: Option<u64>,
) -> Result<Recovered, AuditError> {
    let recovered = chain_end(dir, segments, chain)?;
    if let Some(covered) = checkpoint_covers
        && covered > recovered.last_seq
    {
        return Err(AuditError::CutShort {
            checkpoint: dir
                .join(checkpoint::CHECKPOINT_DIR)
                .join(checkpoint::checkpoint_name(covered)),
            covered,
            last: recovered.last_seq,
        });
    }
    Ok(recovered)
}

fn chain_end(
    dir: &Path,
    segments: &[(u64, PathBuf)],
    chain: &Chain,
) -> Result<Recovered, AuditError> {
    let mut torn = Vec::new();
    for (_, path) in segments.iter().rev() {
        let bytes = std::fs::read(path).map_err(|source| AuditError::Read {
            path: path.clone(),
            source,
        })?;
        if bytes.is_empty() {
            continue;
        }
        let name = path.strip_prefix(dir).unwrap_or(path).display().to_string();
        let lines = complete_lines(&bytes);
        let mut last = None;
        for (index, &(start, end)) in lines.iter().enumerate().rev() {
            let Some(split) = split_line(&bytes[start..end]) else {
                continue;
            };
            let Ok(raw) = serde_json::from_slice::<RawRecord>(&split.hashed) else {
                continue;
            };
            let corrupt = |problem: String| AuditError::Corrupt {
                path: path.clone(),
                line: index + 1,
                problem,
            };
            if raw.v != SCHEMA_VERSION {
                return Err(corrupt(format!(
                    "schema version {} is not {SCHEMA_VERSION}",
                    raw.v
                )));
            }
            if raw.alg != chain.alg() {
                return Err(corrupt(format!(
                    "the record is hashed with {} but the configuration gives {}",
                    raw.alg,
                    chain.alg()
                )));
            }
            if chain.digest(&split.hashed) != split.hash {
                return Err(corrupt(
                    "the last record's hash does not verify (edited, or a different HMAC key)"
                        .into(),
                ));
            }
            last = Some((raw.seq, split.hash.to_owned(), end + 1));
            break;
        }
        let good_end = last.as_ref().map_or(0, |l| l.2);
        if good_end < bytes.len() {
            torn.push(RecoveryNote {
                file: name,
                offset: good_end as u64,
                length: (bytes.len() - good_end) as u64,
                cause: "torn tail found at start".into(),
            });
        }
        if let Some((last_seq, last_hash, _)) = last {
            // Older notes first: the order in which the bytes were written.
            torn.reverse();
            return Ok(Recovered {
                last_seq,
                last_hash,
                torn,
            });
        }
    }
    torn.reverse();
    Ok(Recovered {
        last_seq: 0,
        last_hash: GENESIS.to_owned(),
        torn,
    })
}

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;
    use std::io::Write;

    use super::*;
    use crate::audit::AuditLog;
    use crate::audit::config::AuditConfig;
    use crate::audit::segment::{list_segments, segment_name};
    use crate::audit::testing::{checkpointed, intent, lines_of};
    use crate::audit::verify::verify;

    #[tokio::test]
    async fn a_trail_cut_short_is_refused_at_start_naming_the_checkpoint() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (config, dir, _) = checkpointed(tmp.path(), 1000);
        let log = AuditLog::open(&config, "gw-a").await.expect("open");
        for i in 0..4 {
            log.append(intent(&format!("r{i}"))).await.expect("append");
        }
        log.close().await;
        // The shutdown checkpoint covers seq 4; cut records 3.. off.
        let (_, file) = list_segments(&dir).expect("list").pop().expect("a file");
        let text = std::fs::read_to_string(&file).expect("read");
        let kept: Vec<&str> = text.lines().take(2).collect();
        std::fs::write(&file, format!("{}\n", kept.join("\n"))).expect("cut");
        let err = AuditLog::open(&config, "gw-a")
            .await
            .expect_err("cut short");
        let text = err.to_string();
        assert!(
            text.contains("checkpoint-00000000000000000004.txt") && text.contains("end at seq 2"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_restart_continues_the_sequence_and_chain() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let config = AuditConfig::new(tmp.path());
        let log = AuditLog::open(&config, "test").await.expect("open");
        for i in 0..3 {
            log.append(intent(&format!("r{i}"))).await.expect("append");
        }
        log.close().await;
        let log = AuditLog::open(&config, "test").await.expect("reopen");
        assert_eq!(log.append(intent("after")).await.expect("append"), 4);
        log.close().await;
        let report = verify(&[tmp.path().to_owned()], &Chain::default());
        assert!(report.failure.is_none(), "{report:?}");
        assert_eq!(report.records, 4);
    }

    #[tokio::test]
    async fn a_torn_tail_is_kept_acknowledged_and_the_chain_continues() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let config = AuditConfig::new(tmp.path());
        let log = AuditLog::open(&config, "test").await.expect("open");
        for i in 0..3 {
            log.append(intent(&format!("r{i}"))).await.expect("append");
        }
        log.close().await;
        let (_, first) = list_segments(tmp.path()).expect("list").remove(0);
        let good_len = std::fs::metadata(&first).expect("meta").len();
        let torn = b"{\"v\":1,\"seq\":4,\"ts\":\"2026-";
        let mut f = OpenOptions::new().append(true).open(&first).expect("open");
        f.write_all(torn).expect("tear");
        drop(f);

        // Before recovery, verify refuses the unacknowledged torn tail.
        let before = verify(&[tmp.path().to_owned()], &Chain::default());
        assert!(before.failure.is_some());

        let log = AuditLog::open(&config, "test").await.expect("reopen");
        assert_eq!(log.append(intent("after")).await.expect("append"), 5);
        log.close().await;

        let recs = lines_of(tmp.path());
        let recovery = recs
            .iter()
            .find(|r| r["kind"] == "recovery")
            .expect("recovery record");
        assert_eq!(recovery["seq"], 4);
        assert_eq!(recovery["file"], segment_name(1));
        assert_eq!(recovery["offset"], good_len);
        assert_eq!(recovery["length"], torn.len());
        // The evidence is still there.
        assert_eq!(
            std::fs::metadata(&first).expect("meta").len(),
            good_len + torn.len() as u64
        );
        let report = verify(&[tmp.path().to_owned()], &Chain::default());
        assert!(report.failure.is_none(), "{report:?}");
        assert_eq!(report.acknowledged.len(), 1);
        assert_eq!(report.records, 5);
    }
}
