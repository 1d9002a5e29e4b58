//! Reading a policy directory: parse every `*.cedar` file, name each policy, validate the set
//! against the schema (strict), and report problems with file, line and column.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cedar_policy::ffi::DetailedError;
use cedar_policy::{PolicyId, PolicySet, Schema, ValidationMode, Validator};

use crate::policy::engine::{Checks, Snapshot};
use crate::policy::{DEFAULT_SCHEMA, PolicyConfig, PolicyError};

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

/// Reads and parses the configured schema, or the embedded one.
pub(super) fn load_schema(config: &PolicyConfig) -> Result<Schema, PolicyError> {
    let (path, text) = match &config.schema {
        Some(path) => (path.clone(), read(path)?),
        None => (
            PathBuf::from(EMBEDDED_SCHEMA_NAME),
            DEFAULT_SCHEMA.to_owned(),
        ),
    };
    match Schema::from_cedarschema_str(&text) {
        Ok((schema, warnings)) => {
            for warning in warnings {
                tracing::warn!(schema = %path.display(), %warning, "policy schema warning");
            }
            Ok(schema)
        }
        Err(err) => Err(PolicyError::Invalid(vec![SourceDiagnostic::new(
            &path,
            &text,
            None,
            DetailedError::from(&err),
        )])),
    }
}

fn read(path: &Path) -> Result<String, PolicyError> {
    std::fs::read_to_string(path).map_err(|source| PolicyError::Io {
        path: path.to_owned(),
        source,
    })
}

/// The `*.cedar` files of a directory, sorted by name.
pub(super) fn policy_files(dir: &Path) -> Result<Vec<PathBuf>, PolicyError> {
    let io = |source| PolicyError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.extension().is_some_and(|e| e == "cedar") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(PolicyError::NoPolicies {
            dir: dir.to_owned(),
        });
    }
    Ok(files)
}

/// Loads, names and validates the set in `config.dir`.
pub(super) fn load(config: &PolicyConfig) -> Result<Snapshot, PolicyError> {
    let schema = load_schema(config)?;
    let mut diagnostics = Vec::new();
    let mut set = PolicySet::new();
    // Policy id → (file, its text), to locate validation errors.
    let mut origin: HashMap<PolicyId, (PathBuf, Arc<str>)> = HashMap::new();

    for file in policy_files(&config.dir)? {
        let text: Arc<str> = read(&file)?.into();
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
        let stem = file
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let mut policies: Vec<_> = parsed.policies().collect();
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
                .map_or_else(|| format!("{stem}#{index}"), str::to_owned);
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

    let snapshot = Snapshot::new(set, schema).map_err(|err| {
        PolicyError::Invalid(vec![SourceDiagnostic::plain(
            &config.dir,
            None,
            format!("the gateway's names do not parse: {err}"),
        )])
    })?;
    probe(&snapshot, config)?;
    Ok(snapshot)
}

/// Checks that the gateway's requests fit the schema, so a custom schema that does not describe
/// them is refused at load rather than denying every call at run time.
fn probe(snapshot: &Snapshot, config: &PolicyConfig) -> Result<(), PolicyError> {
    let principal = crate::call::Principal {
        id: "probe".into(),
        groups: vec!["probe".into()],
    };
    for input in crate::ops::policy_probes() {
        snapshot
            .build(&principal, &input, Checks::AgainstSchema)
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
