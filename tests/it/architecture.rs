//! The shape of the workspace, checked on the source text: the emulator crate imports nothing
//! from the gateway, and within the gateway only the command line names the emulator.

use std::fmt;
use std::path::{Path, PathBuf};

/// One source line that breaks a rule, named so the failure says where to look.
#[derive(Debug)]
struct Offence {
    /// Relative to the workspace root.
    path: PathBuf,
    /// 1-based.
    line: usize,
    text: String,
}

impl fmt::Display for Offence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}",
            self.path.display(),
            self.line,
            self.text.trim()
        )
    }
}

fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file under `dir` (relative to the workspace root), depth first, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    entries.sort();
    let mut files = Vec::new();
    for path in entries {
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
    files
}

/// The lines of the `.rs` files under `dir` (relative to the workspace root, e.g. `src`) for
/// which `matches(path, line)` holds, where `path` is relative to the workspace root. Lines
/// that are `//` comments (so `///` and `//!` docs too) are skipped: prose may name anything.
fn lines_matching(dir: &str, matches: impl Fn(&Path, &str) -> bool) -> Vec<Offence> {
    let root = workspace_root();
    let files = rust_files(&root.join(dir));
    // A check that reads no file would pass whatever the code does.
    assert!(!files.is_empty(), "no .rs files under {dir}");
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        let path = file.strip_prefix(root).unwrap_or(&file).to_owned();
        for (index, line) in text.lines().enumerate() {
            if !line.trim_start().starts_with("//") && matches(&path, line) {
                found.push(Offence {
                    path: path.clone(),
                    line: index + 1,
                    text: line.to_owned(),
                });
            }
        }
    }
    found
}

fn assert_none(rule: &str, offences: &[Offence]) {
    let list: Vec<String> = offences.iter().map(ToString::to_string).collect();
    assert!(list.is_empty(), "{rule}:\n{}", list.join("\n"));
}

#[test]
fn the_emulator_imports_nothing_from_the_gateway() {
    let offences = lines_matching("emulator", |_, line| line.contains("datashare_gateway"));
    assert_none("the emulator crate names the gateway crate", &offences);
}

#[test]
fn the_emulator_manifest_does_not_depend_on_the_gateway() {
    let path = workspace_root().join("emulator/Cargo.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let manifest: toml::Table = toml::from_str(&text).unwrap();
    let mut tables: Vec<(String, &toml::Value)> =
        ["dependencies", "dev-dependencies", "build-dependencies"]
            .iter()
            .filter_map(|key| manifest.get(*key).map(|t| (key.to_string(), t)))
            .collect();
    // `[target.'cfg(..)'.dependencies]` tables too.
    if let Some(targets) = manifest.get("target").and_then(toml::Value::as_table) {
        for (cfg, table) in targets {
            for key in ["dependencies", "dev-dependencies", "build-dependencies"] {
                if let Some(deps) = table.get(key) {
                    tables.push((format!("target.{cfg}.{key}"), deps));
                }
            }
        }
    }
    let mut offences = Vec::new();
    for (table, deps) in tables {
        for (name, spec) in deps.as_table().into_iter().flatten() {
            let package = spec.get("package").and_then(toml::Value::as_str);
            let dep_path = spec.get("path").and_then(toml::Value::as_str);
            let is_gateway = name == "datashare-gateway"
                || package == Some("datashare-gateway")
                || dep_path
                    .is_some_and(|p| Path::new(p).components().eq(Path::new("..").components()));
            if is_gateway {
                offences.push(format!("emulator/Cargo.toml [{table}] {name}"));
            }
        }
    }
    assert!(
        offences.is_empty(),
        "the emulator crate depends on the gateway:\n{}",
        offences.join("\n")
    );
}

#[test]
fn only_the_command_line_names_the_emulator() {
    let offences = lines_matching("src", |path, line| {
        !path.starts_with("src/cli") && line.contains("datashare_emulator")
    });
    assert_none(
        "outside src/cli/, the gateway names the emulator crate",
        &offences,
    );
}

/// The line without the contents of its string literals: a log target or a message may name
/// anything, code may not.
fn code(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in line.chars() {
        if in_string {
            match (escaped, c) {
                (false, '\\') => escaped = true,
                (false, '"') => {
                    in_string = false;
                    out.push('"');
                }
                _ => escaped = false,
            }
        } else {
            if c == '"' {
                in_string = true;
            }
            out.push(c);
        }
    }
    out
}

/// True when `line` uses a path starting with `name` as a whole identifier (not as the tail of a
/// longer one, such as `DataShareStatus::` for `Status::`).
fn names(line: &str, name: &str) -> bool {
    line.match_indices(name).any(|(at, _)| {
        !line[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

#[test]
fn only_the_upstream_module_names_aws_sdk_types() {
    const AWS_CRATES: [&str; 6] = [
        "aws_sdk_",
        "aws_smithy_",
        "aws_config",
        "aws_credential_types",
        "aws_types",
        "aws_runtime",
    ];
    let offences = lines_matching("src", |path, line| {
        let line = code(line);
        !path.starts_with("src/upstream") && AWS_CRATES.iter().any(|c| names(&line, c))
    });
    assert_none(
        "only src/upstream/ may name AWS SDK types (SdkError never leaves it)",
        &offences,
    );
}

/// True when `line` builds a `tonic::Status`: its constructors are lower-case associated
/// functions (`Status::new`, `Status::internal`, `Status::with_error_details`, ...), while
/// `ServingStatus::Serving` or `DataShareStatus::try_from` belong to other types.
fn builds_status(line: &str) -> bool {
    line.match_indices("Status::").any(|(at, _)| {
        let before = line[..at].chars().next_back();
        let after = line[at + "Status::".len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            && after.is_some_and(|c| c.is_ascii_lowercase())
    }) || names(line, "Status {")
}

#[test]
fn only_the_status_module_builds_a_tonic_status() {
    let offences = lines_matching("src", |path, line| {
        path != Path::new("src/status.rs") && builds_status(&code(line))
    });
    assert_none(
        "only src/status.rs may build a tonic::Status (the one mapping of errors to statuses)",
        &offences,
    );
}

#[test]
fn the_checks_catch_what_they_are_for() {
    // A check that cannot fail proves nothing: each predicate flags a line it must flag.
    assert!(names("use aws_sdk_redshift::Client;", "aws_sdk_"));
    assert!(!names("use my_aws_sdk_wrapper::Client;", "aws_sdk_"));
    assert!(!names(
        &code(r#"target == "aws_smithy_runtime::client" && x == "\"aws_sdk_""#),
        "aws_"
    ));
    assert!(names(
        &code(r#"let a = "x"; aws_config::load()"#),
        "aws_config"
    ));
    assert!(builds_status("    let s = tonic::Status::internal(\"x\");"));
    assert!(builds_status("Err(Status::with_error_details(code, m, d))"));
    assert!(!builds_status(
        "pb::DataShareStatus::try_from(params.status)"
    ));
    assert!(!builds_status("health.set(ServingStatus::Serving)"));
    assert!(!builds_status("-> Result<Response<T>, Status> {"));
}
