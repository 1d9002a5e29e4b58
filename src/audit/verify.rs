//! `audit verify`: checks the chain and the sequence and finds the first bad record.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use super::record::{Chain, GENESIS, RawRecord, SCHEMA_VERSION, split_line};
use super::segment::{complete_lines, list_segments, segment_number};

/// Torn bytes that a `recovery` record acknowledges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Ack {
    /// The file's name.
    pub(crate) file: String,
    pub(crate) offset: u64,
    pub(crate) length: u64,
    /// The seq of the recovery record.
    pub(crate) by_seq: u64,
}

/// The first thing that does not verify.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Failure {
    pub(crate) file: PathBuf,
    /// 1-based line, 0 when the problem is not a line's.
    pub(crate) line: usize,
    /// Byte offset of the line in the file.
    pub(crate) offset: u64,
    /// The seq the line claims, when it can be read.
    pub(crate) seq: Option<u64>,
    pub(crate) problem: String,
    /// The trail could not be read at all (no files, a directory or file unreadable): nothing
    /// was verified, which is not evidence of tampering.
    pub(crate) unreadable: bool,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, " line {} (byte {})", self.line, self.offset)?;
        }
        match self.seq {
            Some(seq) => write!(f, " seq {seq}: {}", self.problem),
            None => write!(f, ": {}", self.problem),
        }
    }
}

/// An intent with no outcome: a call whose end was never recorded (a crash, or still running).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct OpenIntent {
    pub(crate) seq: u64,
    pub(crate) request_id: String,
    pub(crate) ts: String,
    pub(crate) file: PathBuf,
}

/// What `verify` found.
#[derive(Clone, Debug, Default)]
pub(crate) struct Report {
    pub(crate) files: usize,
    /// Records that verified.
    pub(crate) records: u64,
    /// The seq of the last record that verified (0: none).
    pub(crate) last_seq: u64,
    pub(crate) acknowledged: Vec<Ack>,
    pub(crate) open_intents: Vec<OpenIntent>,
    /// The hashes of the records at the seqs asked for (those checkpoints cover).
    pub(crate) heads: HashMap<u64, String>,
    /// What the checkpoints showed, one line each, printed before the verdict.
    pub(crate) checkpoint_lines: Vec<String>,
    pub(crate) failure: Option<Failure>,
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The audit files named by `paths` (files, or directories of audit files), oldest first.
pub(crate) fn collect_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Failure> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let segments = list_segments(path).map_err(|err| Failure {
                file: path.clone(),
                line: 0,
                offset: 0,
                seq: None,
                problem: format!("cannot list the directory: {err}"),
                unreadable: true,
            })?;
            files.extend(segments.into_iter().map(|(_, p)| p));
        } else {
            files.push(path.clone());
        }
    }
    files.sort_by_key(|p| segment_number(&file_name(p)).unwrap_or(u64::MAX));
    files.dedup();
    Ok(files)
}

struct State<'a> {
    chain: &'a Chain,
    expected_seq: u64,
    prev: String,
    intents: BTreeMap<u64, OpenIntent>,
    /// Seqs whose hash to keep (in `heads`).
    wanted: &'a HashSet<u64>,
    heads: HashMap<u64, String>,
}

/// Verifies the files named by `paths` as one chain starting at seq 1.
pub(crate) fn verify(paths: &[PathBuf], chain: &Chain) -> Report {
    verify_keeping(paths, chain, &HashSet::new())
}

/// [`verify`], keeping the hashes of the records at the `wanted` seqs in the report's `heads`.
pub(crate) fn verify_keeping(paths: &[PathBuf], chain: &Chain, wanted: &HashSet<u64>) -> Report {
    let mut report = Report::default();
    let files = match collect_files(paths) {
        Ok(files) => files,
        Err(failure) => {
            report.failure = Some(failure);
            return report;
        }
    };
    report.files = files.len();
    if files.is_empty() {
        report.failure = Some(Failure {
            file: paths.first().cloned().unwrap_or_default(),
            line: 0,
            offset: 0,
            seq: None,
            problem: "no audit files (audit-<number>.jsonl) found".into(),
            unreadable: true,
        });
        return report;
    }
    let read = |file: &PathBuf| {
        std::fs::read(file).map_err(|err| Failure {
            file: file.clone(),
            line: 0,
            offset: 0,
            seq: None,
            problem: format!("cannot read: {err}"),
            unreadable: true,
        })
    };

    // Recovery records come after the torn bytes they acknowledge, so find them first. They
    // are verified like any other record when the second pass reaches them.
    // Files are read twice rather than held, so memory stays bounded by one file.
    let mut acks: HashMap<String, Ack> = HashMap::new();
    for file in &files {
        let bytes = match read(file) {
            Ok(bytes) => bytes,
            Err(failure) => {
                report.failure = Some(failure);
                return report;
            }
        };
        for (start, end) in complete_lines(&bytes) {
            let line = &bytes[start..end];
            if !contains(line, b"\"kind\":\"recovery\"") {
                continue;
            }
            let Ok(raw) = serde_json::from_slice::<RawRecord>(line) else {
                continue;
            };
            if let (Some(file), Some(offset), Some(length)) = (raw.file, raw.offset, raw.length) {
                acks.insert(
                    file.clone(),
                    Ack {
                        file,
                        offset,
                        length,
                        by_seq: raw.seq,
                    },
                );
            }
        }
    }

    let mut state = State {
        chain,
        expected_seq: 1,
        prev: GENESIS.to_owned(),
        intents: BTreeMap::new(),
        wanted,
        heads: HashMap::new(),
    };
    for path in &files {
        let checked =
            read(path).and_then(|bytes| verify_file(path, &bytes, &acks, &mut state, &mut report));
        if let Err(failure) = checked {
            report.failure = Some(failure);
            break;
        }
    }
    report.open_intents = state.intents.into_values().collect();
    report.heads = state.heads;
    report
}

/// A checkpoint whose signature verified: where it came from and what it says.
#[derive(Clone, Debug)]
pub(crate) struct SignedCheckpoint {
    /// Where it was read (a path, or `s3://bucket/key`).
    pub(crate) source: String,
    pub(crate) seq: u64,
    pub(crate) head: String,
    pub(crate) origin: String,
    pub(crate) time: String,
}

/// Checks the log against checkpoints whose signatures verified: each must find its record
/// with the same hash. A log that ends before a checkpoint's seq was cut short (records cut off
/// the end, or its newest file deleted). Adds the findings to the report; the first problem
/// becomes its failure unless the chain already failed before that record.
pub(crate) fn check_checkpoints(report: &mut Report, mut checkpoints: Vec<SignedCheckpoint>) {
    checkpoints.sort_by_key(|c| c.seq);
    let failure = |c: &SignedCheckpoint, problem: String| Failure {
        file: PathBuf::from(&c.source),
        line: 0,
        offset: 0,
        seq: Some(c.seq),
        problem,
        unreadable: false,
    };
    for c in &checkpoints {
        if c.seq > report.last_seq {
            if report.failure.is_none() {
                report.failure = Some(failure(
                    c,
                    format!(
                        "the checkpoint of {} made at {} covers seq {} (head {}), but the log \
                         ends at seq {}: records {}..{} were cut off the end of the trail or \
                         their file deleted",
                        c.origin,
                        c.time,
                        c.seq,
                        c.head,
                        report.last_seq,
                        report.last_seq + 1,
                        c.seq
                    ),
                ));
            }
            return;
        }
        if report.heads.get(&c.seq) != Some(&c.head) {
            if report.failure.is_none() {
                report.failure = Some(failure(
                    c,
                    format!(
                        "the checkpoint made at {} says record {} has hash {}, but the log's \
                         record {} hashes to {}: the trail was rewritten after the checkpoint",
                        c.time,
                        c.seq,
                        c.head,
                        c.seq,
                        report.heads.get(&c.seq).map_or("(none)", String::as_str)
                    ),
                ));
            }
            return;
        }
    }
    if let Some(newest) = checkpoints.last() {
        let mut line = format!(
            "checkpoints: {} signed checkpoint(s) verify and match the log; the newest covers \
             seq 1..{} ({})",
            checkpoints.len(),
            newest.seq,
            newest.source
        );
        if report.last_seq > newest.seq {
            line.push_str(&format!(
                "; records {}..{} are newer than any checkpoint (not yet covered)",
                newest.seq + 1,
                report.last_seq
            ));
        }
        report.checkpoint_lines.push(line);
    }
}

fn verify_file(
    path: &Path,
    bytes: &[u8],
    acks: &HashMap<String, Ack>,
    state: &mut State<'_>,
    report: &mut Report,
) -> Result<(), Failure> {
    let len = bytes.len() as u64;
    let fail = |line: usize, offset: usize, seq: Option<u64>, problem: String| Failure {
        file: path.to_owned(),
        line,
        offset: offset as u64,
        seq,
        problem,
        unreadable: false,
    };
    let mut ack_problem = None;
    let limit = match acks.get(&file_name(path)) {
        Some(ack) => {
            // The acknowledged bytes must be exactly the file's tail (or less, if a crash lost
            // some of what a failed write had put there). When they are not, the records before
            // them are still checked first: an edit there is the more useful report.
            if ack.offset > len || len > ack.offset.saturating_add(ack.length) {
                ack_problem = Some(format!(
                    "recovery record seq {} acknowledges {} torn bytes at offset {}, but the \
                     file is {len} bytes long",
                    ack.by_seq, ack.length, ack.offset
                ));
            } else {
                report.acknowledged.push(ack.clone());
            }
            // At most `len`, which is a usize.
            usize::try_from(ack.offset.min(len)).unwrap_or(bytes.len())
        }
        None => bytes.len(),
    };
    let mut pos = 0;
    let mut line_no = 1;
    while pos < limit {
        let Some(nl) = bytes[pos..limit].iter().position(|b| *b == b'\n') else {
            return Err(fail(
                line_no,
                pos,
                None,
                format!(
                    "the last {} bytes are not a complete record (no newline): the file was \
                     torn or truncated here, and no recovery record acknowledges it",
                    limit - pos
                ),
            ));
        };
        let line = &bytes[pos..pos + nl];
        check_line(line, path, state).map_err(|(seq, problem)| fail(line_no, pos, seq, problem))?;
        report.records += 1;
        report.last_seq = state.expected_seq - 1;
        pos += nl + 1;
        line_no += 1;
    }
    match ack_problem {
        Some(problem) => Err(fail(line_no, pos, None, problem)),
        None => Ok(()),
    }
}

fn claimed_seq(line: &[u8]) -> Option<u64> {
    let value: serde_json::Value = serde_json::from_slice(line).ok()?;
    value.get("seq")?.as_u64()
}

fn check_line(
    line: &[u8],
    path: &Path,
    state: &mut State<'_>,
) -> Result<(), (Option<u64>, String)> {
    let Some(split) = split_line(line) else {
        return Err((
            claimed_seq(line),
            "not a record: malformed, or its hash member is missing or damaged".into(),
        ));
    };
    // The whole line is parsed, not just the members read below: serde skips unread members
    // without checking their UTF-8 or escapes, and a line that is not JSON must not verify.
    let raw: RawRecord = serde_json::from_slice::<serde_json::Value>(&split.hashed)
        .and_then(serde_json::from_value)
        .map_err(|err| (claimed_seq(line), format!("not a valid record: {err}")))?;
    let seq = Some(raw.seq);
    if raw.v != SCHEMA_VERSION {
        return Err((seq, format!("unknown schema version {}", raw.v)));
    }
    if raw.alg != state.chain.alg() {
        let problem = if raw.alg == "hmac-sha256" {
            "the record is keyed (hmac-sha256): give --hmac-key-file or --hmac-key-env".into()
        } else {
            format!(
                "the record is hashed with {} but a key was given: it was not written with \
                 this key (rewritten?)",
                raw.alg
            )
        };
        return Err((seq, problem));
    }
    if state.chain.digest(&split.hashed) != split.hash {
        return Err((
            seq,
            "the hash does not match the record's contents: the record was edited (or the \
             HMAC key is wrong)"
                .into(),
        ));
    }
    let expected = state.expected_seq;
    if raw.seq != expected {
        let problem = if raw.seq > expected {
            format!(
                "expected seq {expected}: records {expected}..{} are missing (deleted or \
                 truncated)",
                raw.seq - 1
            )
        } else {
            format!("expected seq {expected}: the records are out of order or duplicated")
        };
        return Err((seq, problem));
    }
    if raw.prev != state.prev {
        return Err((
            seq,
            "prev does not match the hash of the record before it: that record was changed, \
             removed or reordered"
                .into(),
        ));
    }
    match raw.kind.as_str() {
        "intent" => {
            state.intents.insert(
                raw.seq,
                OpenIntent {
                    seq: raw.seq,
                    request_id: raw.request_id.unwrap_or_default(),
                    ts: raw.ts.unwrap_or_default(),
                    file: path.to_owned(),
                },
            );
        }
        "outcome" => {
            let Some(intent) = raw.intent_seq else {
                return Err((seq, "an outcome record without intent_seq".into()));
            };
            if state.intents.remove(&intent).is_none() {
                return Err((
                    seq,
                    format!(
                        "the outcome refers to intent seq {intent}, which is not an open intent"
                    ),
                ));
            }
        }
        "call" | "recovery" | "approval" | "checkpoint" => {}
        other => return Err((seq, format!("unknown record kind {other:?}"))),
    }
    if state.wanted.contains(&raw.seq) {
        state.heads.insert(raw.seq, split.hash.to_owned());
    }
    state.prev = split.hash.to_owned();
    state.expected_seq += 1;
    Ok(())
}

/// Writes the human report of `audit verify`.
pub(crate) fn write_report(
    out: &mut impl std::io::Write,
    report: &Report,
    chain: &Chain,
) -> std::io::Result<()> {
    writeln!(
        out,
        "audit verify: {} file(s), {} record(s) verified (seq 1..{}), {} chain",
        report.files,
        report.records,
        report.last_seq,
        chain.alg()
    )?;
    for ack in &report.acknowledged {
        writeln!(
            out,
            "acknowledged torn bytes: {} offset {} length {} (recovery record seq {})",
            ack.file, ack.offset, ack.length, ack.by_seq
        )?;
    }
    if !report.open_intents.is_empty() {
        writeln!(
            out,
            "intents without an outcome ({}): forwarded calls whose end was not recorded \
             (a crash, or still running)",
            report.open_intents.len()
        )?;
        for intent in &report.open_intents {
            writeln!(
                out,
                "  seq {} request_id {} at {} in {}",
                intent.seq,
                intent.request_id,
                intent.ts,
                intent.file.display()
            )?;
        }
    }
    for line in &report.checkpoint_lines {
        writeln!(out, "{line}")?;
    }
    match &report.failure {
        Some(failure) => {
            writeln!(out, "FAILED: {failure}")?;
            writeln!(
                out,
                "records before it verify; nothing from this record on can be trusted"
            )?;
        }
        None => writeln!(out, "OK: chain and sequence verify")?,
    }
    Ok(())
}
