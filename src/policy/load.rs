//! Reading a policy directory: parse every `*.cedar` file, name each policy, validate the set
//! against the schema (strict), and report problems with file, line and column; and the
//! fingerprint of what a load reads, which tells the reloader whether the set on disk changed.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cedar_policy::ffi::DetailedError;
use cedar_policy::{PolicyId, PolicySet, Schema, ValidationMode, Validator};
use sha2::{Digest, Sha256};

use crate::call::PolicyInput;
use crate::policy::engine::{Checks, Snapshot};
use crate::policy::{DEFAULT_SCHEMA, FilePolicies, PolicyConfig, PolicyError};

/// The name shown for the embedded schema in diagnostics.
const EMBEDDED_SCHEMA_NAME: &str = "<embedded policy/schema.cedarschema>";

/// One problem in a schema or policy file, located in its source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceDiagnostic {
    /// The file.
    pub file: PathBuf,
    /// 1-based line, when Cedar located the problem.
    pub line: Option<usize>,
    /// 1-based column (in characters), when Cedar located the problem.
    pub column: Option<usize>,
    /// The policy concerned, when the problem is in one policy.
    pub policy: Option<String>,
    /// What is wrong (Cedar's message, and its help when it has one).
    pub message: String,
}

impl fmt::Display for SourceDiagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let (Some(line), Some(column)) = (self.line, self.column) {
            write!(f, ":{line}:{column}")?;
        }
        if let Some(policy) = &self.policy {
            write!(f, ": policy {policy:?}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl SourceDiagnostic {
    fn new(file: &Path, text: &str, policy: Option<String>, err: DetailedError) -> Self {
        let position = err
            .source_locations
            .first()
            .map(|l| line_column(text, l.loc.start));
        let mut message = err.message;
        if let Some(help) = err.help {
            message.push_str(" (help: ");
            message.push_str(&help);
            message.push(')');
        }
        SourceDiagnostic {
            file: file.to_owned(),
            line: position.map(|p| p.0),
            column: position.map(|p| p.1),
            policy,
            message,
        }
    }

    fn plain(file: &Path, policy: Option<String>, message: String) -> Self {
        SourceDiagnostic {
            file: file.to_owned(),
            line: None,
            column: None,
            policy,
            message,
        }
    }
}

/// 1-based line and character column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// Where a loaded set came from.
#[derive(Clone, Debug)]
pub(super) struct Source {
    /// Each file's policy count, by file name.
    pub(super) files: Vec<FilePolicies>,
    /// The [`Fingerprint`] of what the load read.
    pub(super) sha256: String,
}

/// SHA-256 over what a load reads: each `*.cedar` entry's name and content (through symlinks),
/// in name order, then the schema. Equal for equal sets on disk; an unreadable entry is hashed as
/// such, so one appearing or vanishing changes it too.
struct Fingerprint(Sha256);

impl Fingerprint {
    fn new() -> Self {
        Fingerprint(Sha256::new())
    }

    fn entry(&mut self, name: &str, content: Option<&[u8]>) {
        self.bytes(name.as_bytes());
        self.content(content);
    }

    fn schema(&mut self, content: Option<&[u8]>) {
        // Entry names never hold a NUL, so this one cannot be taken for an entry.
        self.bytes(b"\0schema");
        self.content(content);
    }

    fn content(&mut self, content: Option<&[u8]>) {
        match content {
            Some(bytes) => {
                self.0.update([1]);
                self.bytes(bytes);
            }
            None => self.0.update([0]),
        }
    }

    // Length-prefixed, so no two sequences of names and contents hash the same bytes.
    fn bytes(&mut self, bytes: &[u8]) {
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
    }

    fn finish(self) -> String {
        hex::encode(self.0.finalize())
    }
}

/// The fingerprint of the set on disk now, without parsing it: what [`load`] would report as its
/// `sha256` if it loaded the same files.
pub(super) fn fingerprint(config: &PolicyConfig) -> String {
    let mut hash = Fingerprint::new();
    match cedar_entries(&config.dir) {
        Ok(entries) => {
            for path in entries {
                hash.entry(&file_name(&path), std::fs::read(&path).ok().as_deref());
            }
        }
        // No entry at all: not the hash of any readable set.
        Err(_) => hash.entry("", None),
    }
    match &config.schema {
        Some(path) => hash.schema(std::fs::read(path).ok().as_deref()),
        None => hash.schema(Some(DEFAULT_SCHEMA.as_bytes())),
    }
    hash.finish()
}

/// Parses the configured schema (its file and text), or the embedded one.
pub(super) fn parse_schema(configured: Option<(&Path, &str)>) -> Result<Schema, PolicyError> {
    let (path, text) = configured.unwrap_or((Path::new(EMBEDDED_SCHEMA_NAME), DEFAULT_SCHEMA));
    match Schema::from_cedarschema_str(text) {
        Ok((schema, warnings)) => {
            for warning in warnings {
                tracing::warn!(schema = %path.display(), %warning, "policy schema warning");
            }
            Ok(schema)
        }
        Err(err) => Err(PolicyError::Invalid(vec![SourceDiagnostic::new(
            path,
            text,
            None,
            DetailedError::from(&err),
        )])),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, PolicyError> {
    std::fs::read(path).map_err(|source| PolicyError::Io {
        path: path.to_owned(),
        source,
    })
}

fn utf8(path: &Path, bytes: Vec<u8>) -> Result<String, PolicyError> {
    String::from_utf8(bytes).map_err(|err| PolicyError::Io {
        path: path.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, err),
    })
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
}

/// Every entry of `dir` named `*.cedar`, whatever it is, sorted by name.
pub(super) fn cedar_entries(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "cedar") {
            entries.push(path);
        }
    }
    entries.sort();
    Ok(entries)
}

/// The `*.cedar` files of a directory, sorted by name. An entry that is not a readable file
/// (a directory, a dangling symlink) is an error, not skipped: skipping it would drop its
/// policies, perhaps a guardrail, from the set without a word.
pub(super) fn policy_files(dir: &Path) -> Result<Vec<PathBuf>, PolicyError> {
    let files = cedar_entries(dir).map_err(|source| PolicyError::Io {
        path: dir.to_owned(),
        source,
    })?;
    for file in &files {
        readable_file(file)?;
    }
    if files.is_empty() {
        return Err(PolicyError::NoPolicies {
            dir: dir.to_owned(),
        });
    }
    Ok(files)
}

fn readable_file(path: &Path) -> Result<(), PolicyError> {
    let not_a_file = |what| PolicyError::NotAFile {
        path: path.to_owned(),
        what,
    };
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => Ok(()),
        Ok(meta) if meta.is_dir() => Err(not_a_file("a directory")),
        Ok(_) => Err(not_a_file("a special file")),
        Err(err)
            if err.kind() == std::io::ErrorKind::NotFound
                && std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) =>
        {
            Err(not_a_file("a dangling symlink"))
        }
        Err(source) => Err(PolicyError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Loads, names and validates the set in `config.dir`.
pub(super) fn load(config: &PolicyConfig, probes: &[PolicyInput]) -> Result<Snapshot, PolicyError> {
    let schema_text = match &config.schema {
        Some(path) => Some(utf8(path, read(path)?)?),
        None => None,
    };
    let schema = parse_schema(config.schema.as_deref().zip(schema_text.as_deref()))?;
    let mut hash = Fingerprint::new();
    let mut files = Vec::new();
    let mut diagnostics = Vec::new();
    let mut set = PolicySet::new();
    // Policy id → (file, its text), to locate validation errors.
    let mut origin: HashMap<PolicyId, (PathBuf, Arc<str>)> = HashMap::new();

    for file in policy_files(&config.dir)? {
        let name = file_name(&file);
        let bytes = read(&file)?;
        hash.entry(&name, Some(&bytes));
        let text: Arc<str> = utf8(&file, bytes)?.into();
        let parsed = match text.parse::<PolicySet>() {
            Ok(parsed) => parsed,
            Err(errs) => {
                for err in errs.iter() {
                    diagnostics.push(SourceDiagnostic::new(
                        &file,
                        &text,
                        None,
                        DetailedError::from(err),
                    ));
                }
                continue;
            }
        };
        if parsed.templates().next().is_some() {
            diagnostics.push(SourceDiagnostic::plain(
                &file,
                None,
                "templates (policies with ?principal or ?resource) are not supported".into(),
            ));
        }
        let mut policies: Vec<_> = parsed.policies().collect();
        files.push(FilePolicies {
            name: name.clone(),
            policies: policies.len(),
        });
        // Cedar names the policies of a text policy0, policy1, ... in source order.
        policies.sort_by_key(|p| {
            p.id()
                .to_string()
                .trim_start_matches("policy")
                .parse::<usize>()
                .ok()
        });
        for (index, policy) in policies.into_iter().enumerate() {
            let id = policy
                .annotation("id")
                .map_or_else(|| format!("{name}#{index}"), str::to_owned);
            let policy_id = PolicyId::new(&id);
            if let Some((first, _)) = origin.get(&policy_id) {
                diagnostics.push(SourceDiagnostic::plain(
                    &file,
                    Some(id.clone()),
                    format!("duplicate policy id; first used in {}", first.display()),
                ));
                continue;
            }
            if let Err(err) = set.add(policy.new_id(policy_id.clone())) {
                diagnostics.push(SourceDiagnostic::plain(&file, Some(id), err.to_string()));
                continue;
            }
            origin.insert(policy_id, (file.clone(), text.clone()));
        }
    }
    if !diagnostics.is_empty() {
        return Err(PolicyError::Invalid(diagnostics));
    }

    let result = Validator::new(schema.clone()).validate(&set, ValidationMode::Strict);
    for err in result.validation_errors() {
        let id = err.policy_id();
        let detailed = DetailedError::from(err);
        diagnostics.push(match origin.get(id) {
            Some((file, text)) => SourceDiagnostic::new(file, text, Some(id.to_string()), detailed),
            None => SourceDiagnostic::plain(&config.dir, Some(id.to_string()), detailed.message),
        });
    }
    for warning in result.validation_warnings() {
        tracing::warn!(%warning, "policy validation warning");
    }
    if !diagnostics.is_empty() {
        return Err(PolicyError::Invalid(diagnostics));
    }

    hash.schema(Some(
        schema_text.as_deref().unwrap_or(DEFAULT_SCHEMA).as_bytes(),
    ));
    let source = Source {
        files,
        sha256: hash.finish(),
    };
    let snapshot = Snapshot::new(set, schema, source).map_err(|err| {
        PolicyError::Invalid(vec![SourceDiagnostic::plain(
            &config.dir,
            None,
            format!("the gateway's names do not parse: {err}"),
        )])
    })?;
    probe(&snapshot, config, probes)?;
    Ok(snapshot)
}

/// Checks that the gateway's requests fit the schema, so a custom schema that does not describe
/// them is refused at load rather than denying every call at run time.
fn probe(
    snapshot: &Snapshot,
    config: &PolicyConfig,
    probes: &[PolicyInput],
) -> Result<(), PolicyError> {
    let principal = crate::call::Principal {
        id: "probe".into(),
        groups: vec!["probe".into()],
    };
    for input in probes {
        snapshot
            .build(&principal, input, Checks::AgainstSchema)
            .map_err(|err| {
                let file = config
                    .schema
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(EMBEDDED_SCHEMA_NAME));
                PolicyError::Invalid(vec![SourceDiagnostic::plain(
                    &file,
                    None,
                    format!(
                        "the schema does not describe the gateway's {} requests: {err}",
                        input.action
                    ),
                )])
            })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::line_column;

    #[test]
    fn line_and_column_are_one_based() {
        let text = "ab\ncdé\nf";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 3), (2, 1));
        assert_eq!(line_column(text, 6), (2, 3));
        assert_eq!(line_column(text, 7), (2, 4));
        assert_eq!(line_column(text, 8), (3, 1));
        assert_eq!(line_column(text, 99), (3, 2));
    }
}
