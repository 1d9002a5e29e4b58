//! The record schema, its one-line JSON encoding and the hash chain.
//!
//! A line is the record's JSON object with a last member `"hash"`: the hex SHA-256 (or
//! HMAC-SHA256) of the exact bytes of the line without that member, that is the object as it
//! stands with `prev` as its last member. Hashing the bytes rather than a re-serialisation means
//! `verify` needs no canonical form: it cuts the hash off the line and hashes what is left.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::call::{CallContext, CallNotesState};
use crate::errors::GatewayError;
use crate::status::{code_name, code_of};

/// The `v` of every record this code writes.
pub const SCHEMA_VERSION: u32 = 1;

/// Caller-sent and upstream strings longer than this are cut (at a character boundary) and their
/// field is named in the record's `truncated` list.
pub const MAX_STRING_BYTES: usize = 2048;

/// Lists (groups, determining policies) longer than this are cut and named in `truncated`.
const MAX_LIST_ITEMS: usize = 64;

/// The `prev` of the first record ever written.
pub(crate) const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// `,"hash":"` + 64 hex digits + `"}`.
const HASH_SUFFIX_LEN: usize = 9 + 64 + 2;

/// Shortest HMAC key accepted: shorter keys are guessable.
const MIN_KEY_BYTES: usize = 16;

/// What the layers hand to [`AuditLog::append`](super::AuditLog::append).
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RecordBody {
    /// Write-ahead: the call is about to be forwarded to Redshift.
    Intent(CallFacts),
    /// The end of a call whose intent was made durable.
    Outcome {
        /// The seq of the call's intent record.
        intent_seq: u64,
        /// Who asked for what, and what policy said.
        #[serde(flatten)]
        call: CallFacts,
        /// How the call ended.
        outcome: OutcomeFacts,
    },
    /// The one record of a call that was never forwarded (invalid, unauthenticated, denied,
    /// refused because the audit trail was unavailable, ...).
    Call {
        /// Who asked for what, and what policy said.
        #[serde(flatten)]
        call: CallFacts,
        /// How the call ended.
        outcome: OutcomeFacts,
    },
    /// One transition of a two-person approval.
    Approval(ApprovalEvent),
}

/// An approval's transition: created, approved (one approval given), denied, consumed (spent by
/// the request it approves) or expired.
#[derive(Clone, Debug, Serialize)]
pub struct ApprovalEvent {
    /// The approval.
    pub approval_id: String,
    /// `created`, `approved`, `denied`, `consumed` or `expired`.
    pub transition: &'static str,
    /// Its state after the transition.
    pub state: &'static str,
    /// Who made the transition: the reviewer, or the requester whose call created or consumed
    /// it; absent for expiry.
    pub by: Option<String>,
    /// The request id of the call that made the transition (absent for expiry).
    pub request_id: Option<String>,
    /// Who made the request it approves.
    pub requester: String,
    /// The operation it approves.
    pub method: &'static str,
    /// The request's semantic fields (datashare, consumer kind and value, account, writes).
    pub request: serde_json::Value,
    /// Their SHA-256.
    pub digest: String,
    /// Approvals policy required when it was created.
    pub required_approvals: u32,
    /// Who has approved it so far.
    pub approvers: Vec<String>,
    /// The reviewer's comment (approved, denied).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// When it expires (RFC 3339 UTC).
    pub expires_at: String,
}

/// Who asked for what, and what policy said. Holds no credentials: the caller's certificate or
/// header is reduced to the principal id by the identity layer before it gets here.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CallFacts {
    /// The request id (`x-request-id` or generated).
    pub request_id: String,
    /// The W3C trace id, when traced.
    pub trace_id: Option<String>,
    /// The gRPC method.
    pub method: String,
    /// The caller's socket address.
    pub peer: Option<String>,
    /// When the gateway received the call, RFC 3339 UTC.
    pub received_at: String,
    /// The authenticated principal id, if identity was established.
    pub principal: Option<String>,
    /// The principal's groups.
    pub groups: Vec<String>,
    /// The request parameters as the caller sent them, by their proto field names: the
    /// operation's own (`method` says which).
    pub params: serde_json::Value,
    /// The policy decision, once made.
    pub decision: Option<DecisionRecord>,
    /// The approval the call spends (intent) or spent (outcome): its id and approvers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<crate::call::ApprovalNote>,
    /// The fields that were cut to [`MAX_STRING_BYTES`] (or lists to their maximum length).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub truncated: Vec<String>,
}

/// The policy decision.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DecisionRecord {
    /// True when policy permitted the call.
    pub allowed: bool,
    /// The policies that determined the decision.
    pub determining_policies: Vec<String>,
}

/// How a call ended.
#[derive(Clone, Debug, Default, Serialize)]
pub struct OutcomeFacts {
    /// The gRPC status code name returned to the caller (`OK`, `PERMISSION_DENIED`, ...).
    pub code: String,
    /// The gateway's `ErrorInfo` reason for errors (`POLICY_DENIED`, an AWS error code, ...).
    pub reason: Option<String>,
    /// Redshift's error code, when it answered with one.
    pub aws_error_code: Option<String>,
    /// Redshift's request id, when it answered.
    pub aws_request_id: Option<String>,
    /// Microseconds from receipt to the end of the call.
    pub latency_us: u64,
    /// True when the call was handed to Redshift.
    pub forwarded: bool,
    /// True when the caller cancelled or its deadline passed before the call ended.
    pub caller_gone: bool,
    /// The role session the call used in the consumer account
    /// (`arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION`); absent for the gateway's own
    /// credentials.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assumed_role_arn: Option<String>,
    /// The caller as STS `SourceIdentity`: what CloudTrail shows as
    /// `userIdentity.sessionContext.sourceIdentity`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_identity: Option<String>,
    /// STS's request id for the AssumeRole that made (or refused) the session.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sts_request_id: Option<String>,
    /// The approval a call was refused for (`APPROVAL_REQUIRED`, `APPROVAL_DENIED`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<String>,
    /// The approval this call's intent named, which another call spent first (it lost the
    /// compare-and-set): nothing was forwarded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_already_spent: Option<String>,
}

/// A `recovery` record: bytes at the end of a file that are not whole records (a crash tore the
/// last write, or a write failed part-way). They are left in place as evidence.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename = "recovery")]
pub(crate) struct RecoveryNote {
    /// The file's name, inside the audit directory.
    pub(crate) file: String,
    /// Where the torn bytes start.
    pub(crate) offset: u64,
    /// How many torn bytes there are.
    pub(crate) length: u64,
    /// Why (`torn tail found at start`, `write failed: ...`).
    pub(crate) cause: String,
}

/// A `checkpoint` record: a signed checkpoint was written (and is shipped with the trail).
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename = "checkpoint")]
pub(crate) struct CheckpointNote {
    /// The checkpoint's file, inside the audit directory (`checkpoints/<name>`).
    pub(crate) checkpoint: String,
    /// The seq of the last record it covers.
    pub(crate) covers_seq: u64,
    /// That record's hash.
    pub(crate) head: String,
    /// The log's origin (`datashare-gateway/<instance>`), also the signing key's name.
    pub(crate) origin: String,
    /// The signing key's ID (8 hex digits), as in the signature line.
    pub(crate) key_id: String,
    /// What made it: `records`, `interval`, `rotation`, `seal` or `shutdown`.
    pub(crate) reason: &'static str,
}

/// A record the writer makes itself.
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub(crate) enum WriterRecord {
    Recovery(RecoveryNote),
    Checkpoint(CheckpointNote),
}

/// A record body serialised by the caller (so that the writer thread, which must number and
/// chain records one at a time, only splices and hashes): the members of a JSON object, without
/// its braces, starting with `"kind"`.
#[derive(Clone, Debug)]
pub(crate) struct EncodedBody(Vec<u8>);

/// Serialises a record body (a struct or internally tagged enum: a JSON object).
pub(crate) fn encode_body<B: Serialize>(body: &B) -> Result<EncodedBody, serde_json::Error> {
    let mut json = escape_invisible(serde_json::to_string(body)?).into_bytes();
    if json.len() <= 2 || json.first() != Some(&b'{') || json.last() != Some(&b'}') {
        return Err(<serde_json::Error as serde::ser::Error>::custom(
            "a record body must be a non-empty JSON object",
        ));
    }
    json.pop();
    json.remove(0);
    Ok(EncodedBody(json))
}

/// Writes every character a reader of the trail could not see, or that would change how the
/// text around it reads (controls, bidi and zero-width format characters, line and paragraph
/// separators, private-use and unassigned code points), as a JSON `\u` escape. Such characters
/// can only stand inside JSON strings, so the JSON means the same; the hash covers the escaped
/// bytes, so `verify` checks what a reader sees.
fn escape_invisible(json: String) -> String {
    use std::fmt::Write as _;
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    // What validation refuses (serde_json has escaped the ASCII controls but DEL), and code
    // points nothing can display.
    let invisible = |c: char| {
        crate::ops::misleading(c)
            || !c.is_ascii()
                && matches!(
                    c.general_category(),
                    GeneralCategory::PrivateUse | GeneralCategory::Unassigned
                )
    };
    if !json.chars().any(invisible) {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if invisible(c) {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                // Writing to a String cannot fail.
                let _ = write!(out, "\\u{unit:04x}");
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The fields `verify` and recovery read back from a line; other fields are hashed, not parsed.
#[derive(Debug, Deserialize)]
pub(crate) struct RawRecord {
    pub(crate) v: u32,
    pub(crate) seq: u64,
    pub(crate) kind: String,
    pub(crate) alg: String,
    pub(crate) prev: String,
    #[serde(default)]
    pub(crate) ts: Option<String>,
    #[serde(default)]
    pub(crate) intent_seq: Option<u64>,
    #[serde(default)]
    pub(crate) request_id: Option<String>,
    #[serde(default)]
    pub(crate) file: Option<String>,
    #[serde(default)]
    pub(crate) offset: Option<u64>,
    #[serde(default)]
    pub(crate) length: Option<u64>,
}

/// The key that turns the chain's SHA-256 into HMAC-SHA256, so rewriting the log needs it.
/// Held as a keyed MAC state, cloned per record.
#[derive(Clone)]
pub struct HmacKey(Hmac<Sha256>);

impl std::fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HmacKey(<redacted>)")
    }
}

/// Why an HMAC key could not be loaded. Never carries the key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file could not be read.
    #[error("cannot read the HMAC key file {path}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The environment variable is not set (or not UTF-8).
    #[error("the HMAC key environment variable {var} is not set")]
    EnvMissing {
        /// The variable.
        var: String,
    },
    /// The key is too short to resist guessing.
    #[error("the HMAC key from {from} is {len} bytes; at least {MIN_KEY_BYTES} are required")]
    TooShort {
        /// The file or variable it came from.
        from: String,
        /// Its length.
        len: usize,
    },
    /// Both a key file and a key variable were given.
    #[error("give either an HMAC key file or an HMAC key environment variable, not both")]
    Both,
}

impl HmacKey {
    fn checked(bytes: &[u8], from: String) -> Result<Self, KeyError> {
        // Editors and `echo` leave a trailing newline that is not meant to be key material.
        let trimmed = bytes.trim_ascii_end();
        if trimmed.len() < MIN_KEY_BYTES {
            return Err(KeyError::TooShort {
                from,
                len: trimmed.len(),
            });
        }
        Hmac::<Sha256>::new_from_slice(trimmed)
            .map(HmacKey)
            .map_err(|_| KeyError::TooShort {
                from,
                len: trimmed.len(),
            })
    }

    /// Loads the key from `--hmac-key-file`/`hmac_key_file` or `--hmac-key-env`/`hmac_key_env`;
    /// `None` when neither is given (plain SHA-256 chain).
    pub fn load(file: Option<&Path>, env: Option<&str>) -> Result<Option<HmacKey>, KeyError> {
        match (file, env) {
            (Some(_), Some(_)) => Err(KeyError::Both),
            (Some(path), None) => {
                let bytes = std::fs::read(path).map_err(|source| KeyError::ReadFile {
                    path: path.to_owned(),
                    source,
                })?;
                HmacKey::checked(&bytes, path.display().to_string()).map(Some)
            }
            (None, Some(var)) => {
                let value = std::env::var(var).map_err(|_| KeyError::EnvMissing {
                    var: var.to_owned(),
                })?;
                HmacKey::checked(value.as_bytes(), format!("${var}")).map(Some)
            }
            (None, None) => Ok(None),
        }
    }
}

/// How records are hashed: SHA-256, or HMAC-SHA256 with a key.
#[derive(Clone, Debug, Default)]
pub(crate) struct Chain {
    key: Option<HmacKey>,
}

impl Chain {
    pub(crate) fn new(key: Option<HmacKey>) -> Self {
        Chain { key }
    }

    /// The `alg` member of the records this chain writes.
    pub(crate) fn alg(&self) -> &'static str {
        if self.key.is_some() {
            "hmac-sha256"
        } else {
            "sha256"
        }
    }

    pub(crate) fn digest(&self, bytes: &[u8]) -> String {
        match &self.key {
            Some(key) => {
                let mut mac = key.0.clone();
                mac.update(bytes);
                hex::encode(mac.finalize().into_bytes())
            }
            None => hex::encode(Sha256::digest(bytes)),
        }
    }

    /// Appends one record line to `out` and returns its hash: `v`, `seq`, `ts`, the body's
    /// members, `alg`, `prev`, then `hash` over everything before it (closed with `}`).
    pub(crate) fn encode_line(
        &self,
        out: &mut Vec<u8>,
        seq: u64,
        ts: &str,
        body: &EncodedBody,
        prev: &str,
    ) -> String {
        let start = out.len();
        out.extend_from_slice(format!("{{\"v\":{SCHEMA_VERSION},\"seq\":{seq},\"ts\":").as_bytes());
        push_json_str(out, ts);
        out.push(b',');
        out.extend_from_slice(&body.0);
        out.extend_from_slice(b",\"alg\":");
        push_json_str(out, self.alg());
        out.extend_from_slice(b",\"prev\":");
        push_json_str(out, prev);
        out.push(b'}');
        let hash = self.digest(&out[start..]);
        // Replace the closing brace with the hash member.
        out.pop();
        out.extend_from_slice(b",\"hash\":\"");
        out.extend_from_slice(hash.as_bytes());
        out.extend_from_slice(b"\"}\n");
        hash
    }
}

fn push_json_str(out: &mut Vec<u8>, s: &str) {
    // Serialising a `str` into a `Vec` cannot fail; the fallback keeps the line valid anyway.
    if serde_json::to_writer(&mut *out, s).is_err() {
        out.extend_from_slice(b"\"\"");
    }
}

/// A line cut into the hashed bytes and the hash it claims.
#[derive(Debug)]
pub(crate) struct SplitLine<'a> {
    /// The line without its hash member (a JSON object).
    pub(crate) hashed: Vec<u8>,
    /// The claimed hash.
    pub(crate) hash: &'a str,
}

/// Cuts a line (without its newline) into hashed bytes and claimed hash.
pub(crate) fn split_line(line: &[u8]) -> Option<SplitLine<'_>> {
    let n = line.len();
    if n < HASH_SUFFIX_LEN + 2 || !line.starts_with(b"{") {
        return None;
    }
    let suffix = &line[n - HASH_SUFFIX_LEN..];
    if !suffix.starts_with(b",\"hash\":\"") || !suffix.ends_with(b"\"}") {
        return None;
    }
    let hex_part = &suffix[9..9 + 64];
    if !hex_part
        .iter()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
    {
        return None;
    }
    let hash = std::str::from_utf8(hex_part).ok()?;
    let mut hashed = line[..n - HASH_SUFFIX_LEN].to_vec();
    hashed.push(b'}');
    Some(SplitLine { hashed, hash })
}

/// RFC 3339 UTC with nanoseconds.
pub fn rfc3339(t: SystemTime) -> String {
    // Formatting fails only for years outside 0..=9999, which a clock cannot produce.
    OffsetDateTime::from(t)
        .format(&Rfc3339)
        .unwrap_or_else(|_| "invalid-time".to_owned())
}

fn bound(value: &str, field: &str, truncated: &mut Vec<String>) -> String {
    if value.len() <= MAX_STRING_BYTES {
        return value.to_owned();
    }
    let mut end = MAX_STRING_BYTES;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    truncated.push(field.to_owned());
    value[..end].to_owned()
}

fn bound_list(values: &[String], field: &str, truncated: &mut Vec<String>) -> Vec<String> {
    if values.len() > MAX_LIST_ITEMS {
        truncated.push(field.to_owned());
    }
    values
        .iter()
        .take(MAX_LIST_ITEMS)
        .enumerate()
        .map(|(i, v)| bound(v, &format!("{field}[{i}]"), truncated))
        .collect()
}

/// Whether some string in `value` is over [`MAX_STRING_BYTES`] or some list over
/// [`MAX_LIST_ITEMS`]: almost never, so the field paths are only built when so.
fn over_bounds(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(s) => s.len() > MAX_STRING_BYTES,
        serde_json::Value::Object(members) => members.values().any(over_bounds),
        serde_json::Value::Array(items) => {
            items.len() > MAX_LIST_ITEMS || items.iter().any(over_bounds)
        }
        _ => false,
    }
}

/// Cuts every string in `value` to [`MAX_STRING_BYTES`], naming each cut field under `path`.
fn bound_value(value: &mut serde_json::Value, path: &str, truncated: &mut Vec<String>) {
    if !over_bounds(value) {
        return;
    }
    match value {
        serde_json::Value::String(s) if s.len() > MAX_STRING_BYTES => {
            *s = bound(s, path, truncated);
        }
        serde_json::Value::Object(members) => {
            for (name, member) in members.iter_mut() {
                bound_value(member, &format!("{path}.{name}"), truncated);
            }
        }
        serde_json::Value::Array(items) => {
            if items.len() > MAX_LIST_ITEMS {
                items.truncate(MAX_LIST_ITEMS);
                truncated.push(path.to_owned());
            }
            for (i, item) in items.iter_mut().enumerate() {
                bound_value(item, &format!("{path}[{i}]"), truncated);
            }
        }
        _ => {}
    }
}

impl CallFacts {
    /// The facts of a call as known now: the context, the raw parameters and the call's notes.
    pub fn of_call<P: Serialize>(ctx: &CallContext, params: &P, notes: &CallNotesState) -> Self {
        let mut truncated = Vec::new();
        let principal = notes.principal.as_ref();
        // Parameters are plain structs of strings, numbers and booleans: serialising them cannot
        // fail, and if it ever did the record would still be written, saying so.
        let mut params = serde_json::to_value(params)
            .unwrap_or_else(|err| serde_json::json!({ "unrecordable": err.to_string() }));
        bound_value(&mut params, "params", &mut truncated);
        CallFacts {
            request_id: bound(&ctx.request_id, "request_id", &mut truncated),
            trace_id: ctx
                .trace_id
                .as_deref()
                .map(|t| bound(t, "trace_id", &mut truncated)),
            method: ctx.method.to_owned(),
            peer: ctx.peer.map(|p| p.to_string()),
            received_at: rfc3339(ctx.received_at),
            principal: principal.map(|p| bound(&p.id, "principal", &mut truncated)),
            groups: principal
                .map(|p| bound_list(&p.groups, "groups", &mut truncated))
                .unwrap_or_default(),
            params,
            decision: notes.decision.as_ref().map(|d| DecisionRecord {
                allowed: d.allowed,
                determining_policies: bound_list(
                    &d.determining_policies,
                    "decision.determining_policies",
                    &mut truncated,
                ),
            }),
            approval: notes.approval.clone(),
            truncated,
        }
    }
}

impl OutcomeFacts {
    /// How a call ended. Error messages are not recorded (they may quote internal causes); the
    /// code, the reason and Redshift's ids are.
    pub fn of_result<Reply>(
        result: &Result<Reply, GatewayError>,
        notes: &CallNotesState,
        latency: Duration,
        truncated: &mut Vec<String>,
    ) -> Self {
        let (code, reason, aws_code, aws_id) = match result {
            Ok(_) => (tonic::Code::Ok, None, None, None),
            Err(err) => {
                let aws_id = match err {
                    GatewayError::Upstream { aws_request_id, .. } => aws_request_id.clone(),
                    _ => None,
                };
                (
                    code_of(err),
                    Some(err.reason()),
                    err.aws_error_code().map(str::to_owned),
                    aws_id,
                )
            }
        };
        let aws_error_code = aws_code.or_else(|| notes.upstream.aws_error_code.clone());
        let aws_request_id = notes.upstream.aws_request_id.clone().or(aws_id);
        OutcomeFacts {
            code: code_name(code).to_owned(),
            reason: reason.map(|r| bound(&r, "outcome.reason", truncated)),
            aws_error_code: aws_error_code.map(|c| bound(&c, "outcome.aws_error_code", truncated)),
            aws_request_id: aws_request_id.map(|c| bound(&c, "outcome.aws_request_id", truncated)),
            latency_us: u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
            forwarded: notes.forwarded,
            caller_gone: notes.caller_gone,
            assumed_role_arn: notes
                .session
                .assumed_role_arn
                .as_deref()
                .map(|a| bound(a, "outcome.assumed_role_arn", truncated)),
            source_identity: notes.session.source_identity.clone(),
            sts_request_id: notes
                .session
                .sts_request_id
                .as_deref()
                .map(|a| bound(a, "outcome.sts_request_id", truncated)),
            approval_id: match result {
                Err(GatewayError::ApprovalRequired { approval_id, .. }) => approval_id.clone(),
                Err(GatewayError::ApprovalDenied { approval_id }) => Some(approval_id.clone()),
                _ => None,
            },
            approval_already_spent: notes.approval_already_spent.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invisible_characters_are_escaped_and_the_json_means_the_same() {
        #[derive(Serialize)]
        struct Body {
            name: String,
        }
        let name = "\u{7f}sales\u{202E}erahs\u{200B}\u{2028}\u{E000}\u{85}\u{E0001}é".to_owned();
        let encoded = encode_body(&Body { name: name.clone() }).unwrap();
        let text = String::from_utf8(encoded.0.clone()).unwrap();
        for hidden in [
            '\u{7f}',
            '\u{202E}',
            '\u{200B}',
            '\u{2028}',
            '\u{E000}',
            '\u{85}',
            '\u{E0001}',
        ] {
            assert!(!text.contains(hidden), "{text}");
        }
        assert!(
            text.contains("\\u202e") && text.contains("\\udb40\\udc01"),
            "{text}"
        );
        assert!(
            text.contains('é'),
            "visible characters stay as they are: {text}"
        );
        let back: serde_json::Value = serde_json::from_str(&format!("{{{text}}}")).unwrap();
        assert_eq!(back["name"], name);
    }

    fn body() -> RecordBody {
        RecordBody::Intent(CallFacts {
            request_id: "r-1".into(),
            method: "AssociateConsumer".into(),
            ..CallFacts::default()
        })
    }

    #[test]
    fn a_line_verifies_by_cutting_off_its_hash() {
        let chain = Chain::new(None);
        let mut out = Vec::new();
        let body = encode_body(&body()).expect("encode");
        let hash = chain.encode_line(&mut out, 1, "2026-01-01T00:00:00Z", &body, GENESIS);
        assert_eq!(out.last(), Some(&b'\n'));
        let line = &out[..out.len() - 1];
        let split = split_line(line).expect("split");
        assert_eq!(split.hash, hash);
        assert_eq!(chain.digest(&split.hashed), hash);
        let raw: RawRecord = serde_json::from_slice(line).expect("parse");
        assert_eq!(
            (raw.seq, raw.kind.as_str(), raw.alg.as_str()),
            (1, "intent", "sha256")
        );
        assert_eq!(raw.prev, GENESIS);
    }

    #[test]
    fn hmac_chain_differs_from_plain_and_by_key() {
        let plain = Chain::new(None);
        let key = |k: &[u8]| HmacKey::checked(k, "test".into()).expect("key");
        let k1 = Chain::new(Some(key(b"0123456789abcdef")));
        let k2 = Chain::new(Some(key(b"0123456789abcdeX")));
        let d = b"{\"a\":1}";
        assert_ne!(plain.digest(d), k1.digest(d));
        assert_ne!(k1.digest(d), k2.digest(d));
        assert_eq!(k1.alg(), "hmac-sha256");
        assert_eq!(
            format!("{:?}", k1),
            "Chain { key: Some(HmacKey(<redacted>)) }"
        );
    }

    #[test]
    fn short_keys_and_two_sources_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key");
        std::fs::write(&path, "short\n").expect("write");
        assert!(matches!(
            HmacKey::load(Some(&path), None),
            Err(KeyError::TooShort { len: 5, .. })
        ));
        assert!(matches!(
            HmacKey::load(Some(&path), Some("X")),
            Err(KeyError::Both)
        ));
        std::fs::write(&path, "0123456789abcdef\n").expect("write");
        let from_file = Chain::new(HmacKey::load(Some(&path), None).expect("load"));
        let direct = Chain::new(Some(
            HmacKey::checked(b"0123456789abcdef", "test".into()).expect("key"),
        ));
        assert_eq!(from_file.digest(b"x"), direct.digest(b"x"));
    }

    #[test]
    fn long_strings_are_cut_and_named() {
        let mut truncated = Vec::new();
        let long = "é".repeat(MAX_STRING_BYTES);
        let cut = bound(&long, "params.consumer_arn", &mut truncated);
        assert!(cut.len() <= MAX_STRING_BYTES);
        assert_eq!(truncated, ["params.consumer_arn"]);
    }
}
