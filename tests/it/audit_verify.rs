//! `datashare-gateway audit verify` on real logs: untouched logs verify; every kind of tampering
//! is reported at the right record; keyed chains cannot be rewritten without the key.

use std::path::{Path, PathBuf};
use std::process::Command;

use datashare_gateway::audit::{AuditConfig, AuditLog, CallFacts, OutcomeFacts, RecordBody};
use sha2::{Digest, Sha256};

const KEY: &str = "test-audit-key-0123456789\n";

fn facts(request_id: &str) -> CallFacts {
    CallFacts {
        request_id: request_id.to_owned(),
        method: "AssociateConsumer".into(),
        principal: Some("spiffe://corp/team-a".into()),
        ..CallFacts::default()
    }
}

/// Writes `calls` forwarded calls (intent + outcome) over several files, and returns the files.
async fn write_log(dir: &Path, key_file: Option<&Path>, calls: usize) -> Vec<PathBuf> {
    let mut config = AuditConfig::new(dir);
    config.max_file_bytes = 3000;
    config.hmac_key_file = key_file.map(Path::to_owned);
    let log = AuditLog::open(&config, "test").await.expect("open");
    for i in 0..calls {
        let id = format!("req-{i:04}");
        let intent_seq = log
            .append(RecordBody::Intent(facts(&id)))
            .await
            .expect("intent");
        log.append(RecordBody::Outcome {
            intent_seq,
            call: facts(&id),
            outcome: OutcomeFacts {
                code: "OK".into(),
                forwarded: true,
                ..OutcomeFacts::default()
            },
        })
        .await
        .expect("outcome");
    }
    log.close().await;
    files(dir)
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| std::fs::metadata(p).map(|m| m.len() > 0).unwrap_or(false))
        // The audit files, not the trail id beside them.
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    files
}

fn verify(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_datashare-gateway"))
        .arg("audit")
        .arg("verify")
        .args(args)
        .output()
        .expect("run the binary");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.success(), format!("{stdout}{stderr}"))
}

fn verify_dir(dir: &Path) -> (bool, String) {
    verify(&[dir.to_str().expect("utf-8 path")])
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .expect("read")
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).expect("write");
}

fn seq_of(line: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(line).expect("json");
    v["seq"].as_u64().expect("seq")
}

#[tokio::test]
async fn an_untouched_log_over_several_files_verifies() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let files = write_log(tmp.path(), None, 20).await;
    assert!(files.len() >= 2, "{files:?}");
    let (ok, out) = verify_dir(tmp.path());
    assert!(ok, "{out}");
    assert!(out.contains("40 record(s) verified (seq 1..40)"), "{out}");
    assert!(out.contains("OK: chain and sequence verify"), "{out}");
    assert!(!out.contains("intents without an outcome"), "{out}");
    // Files given one by one verify too.
    let args: Vec<&str> = files.iter().map(|p| p.to_str().expect("utf-8")).collect();
    let (ok, out) = verify(&args);
    assert!(ok, "{out}");
}

#[tokio::test]
async fn an_edited_byte_is_reported_at_its_record() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let files = write_log(tmp.path(), None, 20).await;
    let mut lines = read_lines(&files[0]);
    let seq = seq_of(&lines[2]);
    lines[2] = lines[2].replacen("req-", "reQ-", 1);
    write_lines(&files[0], &lines);
    let (ok, out) = verify_dir(tmp.path());
    assert!(!ok, "{out}");
    assert!(out.contains("line 3 (byte"), "{out}");
    assert!(
        out.contains(&format!("seq {seq}: the hash does not match")),
        "{out}"
    );
}

#[tokio::test]
async fn a_deleted_line_is_reported_as_missing_records() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let files = write_log(tmp.path(), None, 20).await;
    let mut lines = read_lines(&files[0]);
    lines.remove(2);
    write_lines(&files[0], &lines);
    let (ok, out) = verify_dir(tmp.path());
    assert!(!ok, "{out}");
    assert!(
        out.contains("line 3 (byte")
            && out.contains("seq 4: expected seq 3: records 3..3 are missing"),
        "{out}"
    );
}

#[tokio::test]
async fn swapped_lines_are_reported_as_out_of_order() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let files = write_log(tmp.path(), None, 20).await;
    let mut lines = read_lines(&files[0]);
    lines.swap(1, 2);
    write_lines(&files[0], &lines);
    let (ok, out) = verify_dir(tmp.path());
    assert!(!ok, "{out}");
    assert!(out.contains("line 2 (byte"), "{out}");
    assert!(out.contains("seq 3: expected seq 2"), "{out}");
}

#[tokio::test]
async fn a_file_truncated_mid_record_before_the_last_file_fails() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let files = write_log(tmp.path(), None, 20).await;
    assert!(files.len() >= 2);
    let lines = read_lines(&files[0]).len();
    let len = std::fs::metadata(&files[0]).expect("meta").len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&files[0])
        .expect("open");
    f.set_len(len - 10).expect("truncate");
    let (ok, out) = verify_dir(tmp.path());
    assert!(!ok, "{out}");
    let name = files[0].file_name().expect("name").to_string_lossy();
    assert!(out.contains(&format!("{name} line {lines} ")), "{out}");
    assert!(out.contains("no recovery record acknowledges it"), "{out}");
}

#[tokio::test]
async fn a_deleted_file_is_reported_as_missing_records() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let files = write_log(tmp.path(), None, 20).await;
    assert!(files.len() >= 3, "{files:?}");
    let first_of_third = seq_of(&read_lines(&files[2])[0]);
    let first_of_second = seq_of(&read_lines(&files[1])[0]);
    std::fs::remove_file(&files[1]).expect("remove");
    let (ok, out) = verify_dir(tmp.path());
    assert!(!ok, "{out}");
    let name = files[2].file_name().expect("name").to_string_lossy();
    assert!(
        out.contains(&format!(
            "{name} line 1 (byte 0) seq {first_of_third}: expected seq {first_of_second}"
        )),
        "{out}"
    );
}

#[tokio::test]
async fn a_torn_tail_fails_until_a_restart_acknowledges_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let files = write_log(tmp.path(), None, 5).await;
    let last = files.last().expect("a file");
    let lines = read_lines(last).len();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(last)
        .expect("open");
    std::io::Write::write_all(&mut f, b"{\"v\":1,\"seq\":11,\"ts\":\"20").expect("tear");
    drop(f);

    let (ok, out) = verify_dir(tmp.path());
    assert!(!ok, "{out}");
    let name = last.file_name().expect("name").to_string_lossy();
    assert!(
        out.contains(&format!("{name} line {} ", lines + 1)),
        "{out}"
    );

    // A restart (as after kill -9) writes a recovery record and continues the chain.
    write_log(tmp.path(), None, 1).await;
    let (ok, out) = verify_dir(tmp.path());
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("acknowledged torn bytes: {name} offset")),
        "{out}"
    );
    assert!(out.contains("(recovery record seq 11)"), "{out}");
    assert!(out.contains("13 record(s) verified"), "{out}");

    // Deleting a record from the torn file is reported at that record's place.
    let text = std::fs::read(last).expect("read");
    let first_nl = text.iter().position(|b| *b == b'\n').expect("a line");
    std::fs::write(last, &text[first_nl + 1..]).expect("write");
    let (ok, out) = verify_dir(tmp.path());
    assert!(!ok, "{out}");
    assert!(out.contains(&format!("{name} line 1 (byte 0)")), "{out}");
}

#[tokio::test]
async fn intents_without_an_outcome_are_listed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    write_log(tmp.path(), None, 2).await;
    let log = AuditLog::open(&AuditConfig::new(tmp.path()), "test")
        .await
        .expect("open");
    let seq = log
        .append(RecordBody::Intent(facts("orphan-call")))
        .await
        .expect("intent");
    log.close().await;
    let (ok, out) = verify_dir(tmp.path());
    assert!(ok, "{out}");
    assert!(out.contains("intents without an outcome (1)"), "{out}");
    assert!(
        out.contains(&format!("seq {seq} request_id orphan-call")),
        "{out}"
    );
}

/// Edits line `edit_line` of the first file and rewrites the whole log as someone without the
/// key could: plain SHA-256 over each record, chained from the start, with `alg` set to `alg`.
fn rechain_without_key(files: &[PathBuf], edit_line: usize, alg: &str) {
    let mut prev = Some("0".repeat(64));
    for (file_index, path) in files.iter().enumerate() {
        let mut lines = read_lines(path);
        for (i, line) in lines.iter_mut().enumerate() {
            let cut = line.len() - (9 + 64 + 2);
            let mut body = format!("{}}}", &line[..cut]);
            if file_index == 0 && i == edit_line {
                body = body.replacen("spiffe://corp/team-a", "spiffe://corp/team-b", 1);
            }
            let v: serde_json::Value = serde_json::from_str(&body).expect("json");
            let old_prev = v["prev"].as_str().expect("prev").to_owned();
            let old_alg = v["alg"].as_str().expect("alg").to_owned();
            body = body
                .replace(
                    &format!("\"prev\":\"{old_prev}\""),
                    &format!("\"prev\":\"{}\"", prev.clone().expect("prev")),
                )
                .replace(
                    &format!("\"alg\":\"{old_alg}\""),
                    &format!("\"alg\":\"{alg}\""),
                );
            let hash = hex::encode(Sha256::digest(body.as_bytes()));
            *line = format!("{},\"hash\":\"{hash}\"}}", &body[..body.len() - 1]);
            prev = Some(hash);
        }
        write_lines(path, &lines);
    }
}

#[tokio::test]
async fn a_keyed_log_needs_its_key() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let key = tmp.path().join("key");
    let wrong = tmp.path().join("wrong");
    std::fs::write(&key, KEY).expect("key");
    std::fs::write(&wrong, "another-key-0123456789").expect("key");
    let dir = tmp.path().join("log");
    write_log(&dir, Some(&key), 10).await;
    let dir_s = dir.to_str().expect("utf-8");

    let (ok, out) = verify(&[dir_s, "--hmac-key-file", key.to_str().expect("utf-8")]);
    assert!(ok, "{out}");
    let (ok, out) = verify(&[dir_s, "--hmac-key-file", wrong.to_str().expect("utf-8")]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("line 1 (byte 0) seq 1: the hash does not match"),
        "{out}"
    );
    let (ok, out) = verify(&[dir_s]);
    assert!(!ok, "{out}");
    assert!(out.contains("seq 1: the record is keyed"), "{out}");

    // The key can come from the environment too.
    let out = Command::new(env!("CARGO_BIN_EXE_datashare-gateway"))
        .args(["audit", "verify", dir_s, "--hmac-key-env", "TEST_AUDIT_KEY"])
        .env("TEST_AUDIT_KEY", KEY.trim_end())
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test]
async fn a_keyed_log_rewritten_with_plain_sha256_fails() {
    for alg in ["sha256", "hmac-sha256"] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let key = tmp.path().join("key");
        std::fs::write(&key, KEY).expect("key");
        let dir = tmp.path().join("log");
        let files = write_log(&dir, Some(&key), 10).await;
        rechain_without_key(&files, 2, alg);
        if alg == "sha256" {
            // The forgery is a consistent plain chain: only the key tells it apart.
            let (ok, out) = verify(&[dir.to_str().expect("utf-8")]);
            assert!(ok, "{out}");
        }

        // With the key the forgery is caught at the first rewritten record.
        let (ok, out) = verify(&[
            dir.to_str().expect("utf-8"),
            "--hmac-key-file",
            key.to_str().expect("utf-8"),
        ]);
        assert!(!ok, "{alg}: {out}");
        assert!(out.contains("line 1 (byte 0) seq 1: "), "{alg}: {out}");
    }
}

/// The exit status of `audit verify ARGS`.
fn verify_status(args: &[&str]) -> Option<i32> {
    Command::new(env!("CARGO_BIN_EXE_datashare-gateway"))
        .arg("audit")
        .arg("verify")
        .args(args)
        .output()
        .expect("run the binary")
        .status
        .code()
}

#[tokio::test]
async fn exit_codes_tell_verified_tampered_and_unreadable_apart() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("audit");
    let files = write_log(&dir, None, 20).await;
    let dir_arg = dir.to_str().expect("utf-8");
    assert_eq!(verify_status(&[dir_arg]), Some(0));

    let missing = tmp.path().join("nowhere");
    assert_eq!(
        verify_status(&[missing.to_str().expect("utf-8")]),
        Some(2),
        "nothing to read is an I/O error, not tampering"
    );
    assert_eq!(
        verify_status(&[dir_arg, "--hmac-key-env", "DSGW_TEST_UNSET_VARIABLE"]),
        Some(2),
        "an unusable key is a usage error"
    );
    assert_eq!(verify_status(&[]), Some(2), "clap's usage error");

    let text = std::fs::read_to_string(&files[0]).expect("read");
    std::fs::write(&files[0], text.replacen("req-0000", "req-9999", 1)).expect("tamper");
    assert_eq!(verify_status(&[dir_arg]), Some(1), "tampering found");
}

#[tokio::test]
async fn a_reader_that_closes_the_pipe_early_gets_no_panic() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("audit");
    // Many intents without an outcome: a long report, so the pipe closes while it is written.
    let mut config = AuditConfig::new(&dir);
    config.max_file_bytes = 1024 * 1024;
    let log = AuditLog::open(&config, "test").await.expect("open");
    for i in 0..5000 {
        log.append(RecordBody::Intent(facts(&format!("open-{i:05}"))))
            .await
            .expect("intent");
    }
    log.close().await;
    let script = format!(
        "{} audit verify {} | head -1; echo \"status=${{PIPESTATUS[0]}}\"",
        env!("CARGO_BIN_EXE_datashare-gateway"),
        dir.display()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .output()
        .expect("run bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.starts_with("audit verify: "), "{stdout}");
    assert!(stdout.contains("status=0"), "{stdout}{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
