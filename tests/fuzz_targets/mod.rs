//! The fuzz targets' logic, shared by the cargo-fuzz binaries in `fuzz/` and by
//! `tests/fuzz_replay.rs`, which replays their committed corpus and regression inputs under
//! `cargo test`. Each function takes arbitrary bytes and panics only when an invariant breaks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use datashare_emulator::fuzzing::{self as emulator, AuthHeader, KnownKey, QueryRequest};
use datashare_gateway::arn::{
    AccountId, DataShareArn, NamespaceArn, NamespaceId, Partition, Region,
};
use datashare_gateway::audit::{VerifySummary, verify_paths};
use datashare_gateway::call::{Principal, ValidationEnv};
use datashare_gateway::identity::PrincipalDirectory;
use datashare_gateway::operations::{EachRedshiftOperation, for_each_redshift};
use datashare_gateway::ops::associate::AssociateRequest;
use datashare_gateway::ops::disassociate::DisassociateRequest;
use datashare_gateway::ops::list::ListRequest;
use datashare_gateway::ops::{ConsumerTarget, Rpc};
use datashare_gateway::policy::{Policies, PolicyConfig};
use datashare_gateway::upstream::Forward;
use http::{HeaderMap, HeaderName, HeaderValue};
use sha2::{Digest, Sha256};

/// A fuzz target: its name, as `fuzz/corpus/<name>/` and `fuzz/regressions/<name>/` spell it,
/// and its function.
pub(crate) struct Target {
    pub(crate) name: &'static str,
    pub(crate) run: fn(&[u8]),
}

pub(crate) const TARGETS: &[Target] = &[
    Target {
        name: "decode_to_decision",
        run: decode_to_decision,
    },
    Target {
        name: "audit_verify",
        run: audit_verify,
    },
    Target {
        name: "emulator_request",
        run: emulator_request,
    },
    Target {
        name: "arn_parse",
        run: arn_parse,
    },
];

/// The repository root: the fuzz crate is `fuzz/`, the tests are the root package's.
pub(crate) fn repo_root() -> &'static Path {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    if manifest.ends_with("fuzz") {
        manifest.parent().expect("fuzz/ is inside the repository")
    } else {
        manifest
    }
}

// ---------------------------------------------------------------------------------------------
// (a) protobuf bytes → validation → Cedar decision, for every RPC

/// The gateway's policy set and callers, loaded once per process.
struct PolicyFixture {
    policies: Policies,
    /// Every principal of `examples/policies/principals.toml`, and one it does not list.
    principals: Vec<Principal>,
    env: ValidationEnv,
}

fn policy_fixture() -> &'static PolicyFixture {
    static FIXTURE: OnceLock<PolicyFixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = repo_root().join("examples/policies");
        let mut config = PolicyConfig::new(&dir);
        config.watch = false;
        let policies = Policies::load(config, datashare_gateway::operations::policy_probes())
            .expect("the example policies load");
        #[derive(serde::Deserialize)]
        struct File {
            principals: PrincipalDirectory,
        }
        let text = std::fs::read_to_string(dir.join("principals.toml")).expect("principals.toml");
        let file: File = toml::from_str(&text).expect("principals.toml parses");
        let mut principals: Vec<Principal> = file
            .principals
            .into_iter()
            .map(|(id, entry)| Principal {
                id,
                groups: entry.groups,
            })
            .collect();
        principals.push(Principal {
            id: "spiffe://example.internal/ns/other/sa/stranger".into(),
            groups: Vec::new(),
        });
        PolicyFixture {
            policies,
            principals,
            env: ValidationEnv {
                default_account: Some(AccountId::parse("444455556666").expect("12 digits")),
                partition: datashare_gateway::arn::Partition::Aws,
            },
        }
    })
}

/// Decodes `data` as each RPC's request, validates it as the gateway does, and evaluates every
/// valid request for every caller. Invariants: no panic; the message re-encodes to itself; every
/// ARN and region validation accepted prints back to what was sent and parses back to itself;
/// evaluating a valid request yields no errors.
pub(crate) fn decode_to_decision(data: &[u8]) {
    /// Every operation the registry lists that Redshift carries out, so a new one is fuzzed
    /// without a line here; the ARN round trips of the requests that hold ARNs.
    struct Decide<'a> {
        data: &'a [u8],
        fixture: &'a PolicyFixture,
    }
    impl EachRedshiftOperation for Decide<'_> {
        fn operation<Op>(&mut self)
        where
            Op: Rpc + Forward,
            Op::Params: serde::de::DeserializeOwned,
        {
            let Some(request) = decide::<Op>(self.data, self.fixture) else {
                return;
            };
            let request: &dyn std::any::Any = &request;
            if let Some(request) = request.downcast_ref::<AssociateRequest>() {
                share_target_round_trips(&request.data_share, &request.consumer);
            } else if let Some(request) = request.downcast_ref::<DisassociateRequest>() {
                share_target_round_trips(&request.data_share, &request.consumer);
            } else if let Some(request) = request.downcast_ref::<ListRequest>()
                && let Some(consumer) = &request.consumer
            {
                namespace_round_trips(consumer);
            }
        }
    }
    for_each_redshift(&mut Decide {
        data,
        fixture: policy_fixture(),
    });
}

/// The validated request of `Op` in `data`, after checking its decisions; `None` when `data` is
/// not such a message or validation refuses it.
fn decide<Op: Rpc>(data: &[u8], fixture: &PolicyFixture) -> Option<Op::Request> {
    let message = <Op::Message as prost::Message>::decode(data).ok()?;
    let again =
        <Op::Message as prost::Message>::decode(prost::Message::encode_to_vec(&message).as_slice())
            .expect("a decoded message re-encodes to a decodable one");
    assert!(again == message, "{}: decode(encode(m)) != m", Op::METHOD);

    let request = Op::validate(&Op::params(message), &fixture.env).ok()?;
    if let Some(account) = Op::consumer_account(&request) {
        account_round_trips(account);
    }
    for principal in &fixture.principals {
        let evaluation = fixture.policies.explain::<Op>(principal, &request);
        assert!(
            evaluation.errors.is_empty(),
            "{}: evaluating a valid request for {} failed: {:?}\nrequest: {request:?}",
            Op::METHOD,
            principal.id,
            evaluation.errors
        );
    }
    Some(request)
}

fn share_target_round_trips(share: &DataShareArn, consumer: &ConsumerTarget) {
    data_share_round_trips(share);
    match consumer {
        ConsumerTarget::EntireAccount => {}
        ConsumerTarget::Namespace(arn) => namespace_round_trips(arn),
        ConsumerTarget::Region(region) => region_round_trips(region),
    }
}

fn data_share_round_trips(arn: &DataShareArn) {
    let printed = arn.to_string();
    assert_eq!(DataShareArn::parse(&printed).as_ref(), Ok(arn), "{printed}");
    assert_eq!(
        Partition::of_region(&arn.region),
        arn.partition,
        "{printed}"
    );
    namespace_round_trips(&arn.producer_namespace_arn());
}

fn namespace_round_trips(arn: &NamespaceArn) {
    let printed = arn.to_string();
    assert_eq!(NamespaceArn::parse(&printed).as_ref(), Ok(arn), "{printed}");
    assert_eq!(
        Partition::of_region(&arn.region),
        arn.partition,
        "{printed}"
    );
}

fn region_round_trips(region: &Region) {
    assert_eq!(Region::parse(region.as_str()).as_ref(), Ok(region));
}

fn account_round_trips(account: &AccountId) {
    assert_eq!(AccountId::parse(&account.to_string()).as_ref(), Ok(account));
}

// ---------------------------------------------------------------------------------------------
// (b) `audit verify` on arbitrary files

/// The name of the one audit file the target writes (`segment::segment_name(1)`).
const AUDIT_FILE: &str = "audit-00000000000000000001.jsonl";
/// The `prev` of the first record.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// `,"hash":"` + 64 hex digits + `"}`: the end of every record line.
const HASH_SUFFIX_LEN: usize = 9 + 64 + 2;
/// In [`seal`]: replaced by the previous line's hash, so mutated records still chain.
const PREV_PLACEHOLDER: &[u8] = b"@prev@";

/// Verifies `data` as an audit file, twice: as it is, and [sealed](seal) (each line's hash
/// recomputed, so the fuzzer reaches the checks after the hash). Invariants: no panic; the
/// summary's counts agree; every line verify accepts is a JSON object with the next seq, the
/// previous line's hash as `prev`, and a `hash` that is the SHA-256 of the line without it,
/// placed so that re-serialising the line from those parts gives back its exact bytes.
pub(crate) fn audit_verify(data: &[u8]) {
    for file in [data.to_vec(), seal(data)] {
        let summary = verify_file(&file);
        check_accepted(&file, &summary);
    }
}

pub(crate) fn verify_file(data: &[u8]) -> VerifySummary {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(dir.path().join(AUDIT_FILE), data).expect("write the audit file");
    verify_paths(&[dir.path().to_path_buf()], None)
}

fn check_accepted(data: &[u8], summary: &VerifySummary) {
    assert_eq!(summary.files, 1, "{summary:?}");
    assert_eq!(summary.last_seq, summary.records, "{summary:?}");
    let lines: Vec<&[u8]> = complete_lines(data);
    let records = usize::try_from(summary.records).expect("fits");
    assert!(records <= lines.len(), "{summary:?}");
    let recovery = data
        .windows(br#""kind":"recovery""#.len())
        .any(|w| w == br#""kind":"recovery""#);
    if summary.failure.is_none() && !recovery {
        // Nothing acknowledges torn bytes, so a clean verify covered every byte.
        assert_eq!(records, lines.len(), "{summary:?}");
        assert!(data.is_empty() || data.ends_with(b"\n"), "{summary:?}");
    }
    let mut prev = GENESIS.to_owned();
    for (index, line) in lines.iter().take(records).enumerate() {
        let seq = u64::try_from(index + 1).expect("fits");
        let body = &line[..line.len() - HASH_SUFFIX_LEN];
        let hash = sha256_of_object(body);
        assert_eq!(*line, record_line(body, &hash).as_slice(), "seq {seq}");
        match serde_json::from_slice::<serde_json::Value>(line) {
            Ok(value) => {
                assert_eq!(value["seq"].as_u64(), Some(seq), "line {}", index + 1);
                assert_eq!(value["prev"].as_str(), Some(prev.as_str()), "seq {seq}");
                assert_eq!(value["alg"].as_str(), Some("sha256"), "seq {seq}");
                assert_eq!(value["hash"].as_str(), Some(hash.as_str()), "seq {seq}");
            }
            Err(err) => panic!("seq {seq}: an accepted line is not JSON: {err}"),
        }
        prev = hash;
    }
}

/// The newline-terminated lines of `data`, without their newlines.
fn complete_lines(data: &[u8]) -> Vec<&[u8]> {
    let mut lines: Vec<&[u8]> = data.split(|b| *b == b'\n').collect();
    // The part after the last newline is not a complete line (empty when `data` ends with one).
    lines.pop();
    lines
}

/// The SHA-256 of the JSON object whose members are `body` (a line without its `hash` member
/// and closing brace), as the writer hashes it.
fn sha256_of_object(body: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(body);
    hasher.update(b"}");
    hex::encode(hasher.finalize())
}

fn record_line(body: &[u8], hash: &str) -> Vec<u8> {
    let mut line = body.to_vec();
    line.extend_from_slice(b",\"hash\":\"");
    line.extend_from_slice(hash.as_bytes());
    line.extend_from_slice(b"\"}");
    line
}

/// `data` with every complete line that is a JSON-object-shaped record re-hashed as the writer
/// would: an existing `hash` member is dropped, `@prev@` becomes the previous line's hash and a
/// fresh hash is appended. Other lines and a torn tail are left as they are.
pub(crate) fn seal(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 128);
    let mut prev = GENESIS.to_owned();
    let mut rest = data;
    while let Some(newline) = rest.iter().position(|b| *b == b'\n') {
        let line = &rest[..newline];
        rest = &rest[newline + 1..];
        let body = if has_hash_suffix(line) {
            &line[..line.len() - HASH_SUFFIX_LEN]
        } else if line.starts_with(b"{") && line.ends_with(b"}") && line.len() > 1 {
            &line[..line.len() - 1]
        } else {
            out.extend_from_slice(line);
            out.push(b'\n');
            continue;
        };
        let body = replace(body, PREV_PLACEHOLDER, prev.as_bytes());
        let hash = sha256_of_object(&body);
        out.extend_from_slice(&record_line(&body, &hash));
        out.push(b'\n');
        prev = hash;
    }
    out.extend_from_slice(rest);
    out
}

fn has_hash_suffix(line: &[u8]) -> bool {
    line.len() >= HASH_SUFFIX_LEN + 2
        && line.starts_with(b"{")
        && line[line.len() - HASH_SUFFIX_LEN..].starts_with(b",\"hash\":\"")
        && line.ends_with(b"\"}")
}

fn replace(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut rest = haystack;
    while let Some(at) = rest.windows(needle.len()).position(|w| w == needle) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(with);
        rest = &rest[at + needle.len()..];
    }
    out.extend_from_slice(rest);
    out
}

// ---------------------------------------------------------------------------------------------
// (c) the emulator's Query body and SigV4 `Authorization` parsing

/// The key the emulator knows in [`emulator_request`] (AWS's documentation example key).
const EMULATOR_KEY: KnownKey<'static> = KnownKey {
    access_key_id: "AKIDEXAMPLE",
    secret: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
    account: "111122223333",
};
/// The emulator's region in [`emulator_request`].
const EMULATOR_REGION: &str = "us-east-1";
/// The emulator's clock in [`emulator_request`]: 2025-11-24T16:00:00Z.
fn emulator_now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_000_000)
}

/// `data` as an HTTP request to the emulator: the first line is the `Authorization` value,
/// further lines up to a blank line are `name: value` headers, and what follows the blank line
/// is the Query body (all of `data` is the body when there is no blank line). Invariants: no
/// panic; the Query body and the `Authorization` header each parse back to the same value from
/// a canonical re-encoding; the claimed key id is the parsed one; the signature check accepts
/// only a request signed with the emulator's key.
pub(crate) fn emulator_request(data: &[u8]) {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(at) => (&data[..at], &data[at + 2..]),
        None => (data, data),
    };
    query_round_trips(body);

    let mut lines = head.split(|b| *b == b'\n');
    let authorization = lines.next().unwrap_or_default();
    let text = String::from_utf8_lossy(authorization);
    if let Ok(parsed) = emulator::parse_authorization(&text) {
        authorization_round_trips(&parsed);
    }

    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_bytes(authorization) {
        headers.insert(http::header::AUTHORIZATION, value);
    }
    for line in lines {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    let claimed = emulator::claimed_access_key_id(&headers);
    let expected = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| emulator::parse_authorization(v).ok())
        .map(|h| h.access_key_id);
    assert_eq!(claimed, expected);

    let verified = emulator::verify(
        "POST",
        "/",
        &headers,
        body,
        EMULATOR_REGION,
        emulator_now(),
        EMULATOR_KEY,
    );
    if let Ok(account) = verified {
        assert_eq!(account, EMULATOR_KEY.account);
        assert_eq!(claimed, Some(EMULATOR_KEY.access_key_id));
    }
}

fn query_round_trips(body: &[u8]) {
    let query = QueryRequest::parse(body);
    let mut encoder = form_urlencoded::Serializer::new(String::new());
    if let Some(action) = &query.action {
        encoder.append_pair("Action", action);
    }
    if let Some(version) = &query.version {
        encoder.append_pair("Version", version);
    }
    let sorted: BTreeMap<&String, &String> = query.params.iter().collect();
    for (name, value) in &sorted {
        encoder.append_pair(name, value);
    }
    let encoded = encoder.finish();
    assert_eq!(QueryRequest::parse(encoded.as_bytes()), query, "{encoded}");

    // Every list member the body holds is found once, in index order.
    for name in sorted.keys() {
        let Some((prefix, _)) = name.split_once(".member.") else {
            continue;
        };
        let head = format!("{prefix}.member.");
        let members = query.indexed(prefix);
        let expected = query
            .params
            .keys()
            .filter_map(|k| k.strip_prefix(&head))
            .filter(|rest| {
                rest.split('.')
                    .next()
                    .is_some_and(|n| n.parse::<u32>().is_ok())
            })
            .count();
        assert_eq!(
            members
                .iter()
                .map(|(_, fields)| fields.len())
                .sum::<usize>(),
            expected,
            "{prefix}"
        );
        assert!(members.windows(2).all(|w| w[0].0 < w[1].0), "{prefix}");
    }
}

fn authorization_round_trips(parsed: &AuthHeader<'_>) {
    assert!(!parsed.access_key_id.is_empty());
    assert_eq!(parsed.signature.len(), 64);
    assert!(parsed.signature.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(parsed.signed_headers.iter().all(|h| !h.is_empty()));
    let encoded = format!(
        "AWS4-HMAC-SHA256 Credential={}/{}/{}/{}/aws4_request, SignedHeaders={}, Signature={}",
        parsed.access_key_id,
        parsed.date,
        parsed.region,
        parsed.service,
        parsed.signed_headers.join(";"),
        parsed.signature
    );
    assert_eq!(
        emulator::parse_authorization(&encoded).as_ref(),
        Ok(parsed),
        "{encoded}"
    );
}

// ---------------------------------------------------------------------------------------------
// (d) ARN, region, account and namespace id parsing

/// `data` (lossily as UTF-8) through every parser of `arn`. Invariants: no panic; an accepted
/// value prints as what was parsed (namespace GUIDs in lower case) and parses back to itself.
pub(crate) fn arn_parse(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let text = text.as_ref();
    if let Ok(arn) = DataShareArn::parse(text) {
        data_share_round_trips(&arn);
        assert!(arn.to_string().eq_ignore_ascii_case(text), "{text}");
    }
    if let Ok(arn) = NamespaceArn::parse(text) {
        namespace_round_trips(&arn);
        assert!(arn.to_string().eq_ignore_ascii_case(text), "{text}");
    }
    if let Ok(region) = Region::parse(text) {
        region_round_trips(&region);
        assert_eq!(region.to_string(), text);
    }
    if let Ok(account) = AccountId::parse(text) {
        account_round_trips(&account);
        assert_eq!(account.to_string(), text);
    }
    if let Ok(id) = NamespaceId::parse(text) {
        assert_eq!(NamespaceId::parse(id.as_str()).as_ref(), Ok(&id));
        assert_eq!(id.to_string(), text.to_ascii_lowercase());
    }
}

/// The files of `fuzz/<kind>/<target>/`, sorted (none when the directory does not exist).
pub(crate) fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = repo_root().join("fuzz").join(kind).join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}
