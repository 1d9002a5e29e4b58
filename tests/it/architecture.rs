//! The design's walls, checked on the code as a Rust parser reads it (`reader`). Every file of
//! `src/` is parsed with `syn`, the module tree is followed from `src/lib.rs` (and the binary's
//! `src/main.rs`) through `mod` declarations and `#[path]`, and every path the code names (in
//! items, types, expressions, patterns and macro arguments) is resolved through the `use` trees
//! in scope (aliases, globs, groups, `self`, `super`, `crate`) and through `pub use` re-exports
//! to the item it means. Test code (`#[cfg(test)]`) may reach anywhere and is skipped.
//!
//! The rules, one test each: no cycle among the top-level modules; `audit` and `status` never
//! name `upstream`; only `upstream` names AWS SDK crates; only `status` builds a `tonic::Status`
//! and only the wiring returns one; the emulator crate does not depend on the gateway, and only
//! `cli` names the emulator. Each rule is a function over a parsed crate, and the `planted`
//! tests at the end run each on small crates written to break it (through an alias, a glob, a
//! re-export, a cycle), so a rule that stopped seeing anything fails here too.

mod reader;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use reader::{Crate, Kind, MAX_DEPTH, Resolved, Sources};

/// The top-level modules that may name AWS SDK crates: `SdkError` and the SDK's types never
/// leave `upstream`.
const AWS_ALLOWED: &[&str] = &["upstream"];

/// The one module that builds a `tonic::Status` (every error status is built in one place).
const STATUS_BUILDERS: &[&str] = &["status"];

/// The modules whose functions may return a `tonic::Status`: `status` builds them, `server`
/// answers gRPC calls with them, and tonic's `Decoder` trait fixes `codec`'s error type (it
/// builds none: `status::undecodable` does).
const STATUS_SIGNATURES: &[&str] = &["status", "server", "codec"];

/// The walls: `audit` defines what it needs of an object store and `upstream` implements it;
/// `status` maps the neutral fault kinds without knowing how they were classified.
const WALLS: &[(&str, &str)] = &[("audit", "upstream"), ("status", "upstream")];

/// The module that joins the gateway and the emulator (the `dev` and `emulator` commands).
const EMULATOR_ALLOWED: &[&str] = &["cli"];

fn is_aws_crate(name: &str) -> bool {
    name.starts_with("aws_sdk_")
        || name.starts_with("aws_smithy_")
        || [
            "aws_config",
            "aws_credential_types",
            "aws_runtime",
            "aws_sigv4",
            "aws_types",
        ]
        .contains(&name)
}

fn is_emulator_crate(name: &str) -> bool {
    name == "datashare_emulator"
}

// ---------------------------------------------------------------------------------------------
// The rules, each a function over a parsed crate.

/// One place in the code: where it breaks a rule, or what makes an edge of the module graph.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Offence {
    file: PathBuf,
    /// `crate::audit::ship`.
    module: String,
    context: String,
    /// The path as written.
    written: String,
    /// What it resolves to, and why that breaks the rule.
    means: String,
}

impl Offence {
    fn top_module(&self) -> &str {
        self.module.split("::").nth(1).unwrap_or("")
    }
}

impl fmt::Display for Offence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}", self.file.display(), self.module)?;
        if !self.context.is_empty() {
            write!(f, ", {}", self.context)?;
        }
        write!(f, "): `{}` is {}", self.written, self.means)
    }
}

/// Module-to-module edges: A -> B when A's non-test code names an item of `crate::B`, directly
/// or through a re-export in another module. With the first place that does, for the message.
fn edges(krate: &Crate) -> BTreeMap<(String, String), Offence> {
    let mut edges = BTreeMap::new();
    for (index, resolved) in krate.resolutions() {
        let from = krate.top_module_of(&krate.references[index]);
        if from.is_empty() {
            continue;
        }
        for to in &resolved.via {
            if to != from {
                edges
                    .entry((from.to_owned(), to.clone()))
                    .or_insert_with(|| krate.offence(index, resolved.to_string()));
            }
        }
    }
    edges
}

/// Every cycle among the top-level modules: for each set of modules that all reach each other,
/// one shortest cycle with the code behind each of its edges, then every edge inside the set
/// (any of which may be the one to remove).
fn cycles(krate: &Crate) -> Vec<String> {
    let edges = edges(krate);
    let mut graph: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (from, to) in edges.keys() {
        graph.entry(from).or_default().insert(to);
        graph.entry(to).or_default();
    }
    let reach = |start: &str| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![start.to_owned()];
        while let Some(node) = todo.pop() {
            for next in graph.get(node.as_str()).into_iter().flatten() {
                if seen.insert((*next).to_owned()) {
                    todo.push((*next).to_owned());
                }
            }
        }
        seen
    };
    let reachable: BTreeMap<&str, BTreeSet<String>> =
        graph.keys().map(|node| (*node, reach(node))).collect();
    let mut reported = BTreeSet::new();
    let mut found = Vec::new();
    for node in graph.keys() {
        if reported.contains(*node) || !reachable[node].contains(*node) {
            continue;
        }
        let component: BTreeSet<&str> = graph
            .keys()
            .copied()
            .filter(|other| reachable[node].contains(*other) && reachable[other].contains(*node))
            .collect();
        reported.extend(component.iter().map(|c| (*c).to_owned()));
        // The shortest way back to `node` within the component, breadth first.
        let mut back: BTreeMap<&str, &str> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([*node]);
        let mut last = None;
        while let Some(at) = queue.pop_front() {
            for next in &graph[at] {
                if !component.contains(next) {
                    continue;
                }
                if next == node {
                    last = Some(at);
                    break;
                }
                if !back.contains_key(next) {
                    back.insert(next, at);
                    queue.push_back(next);
                }
            }
            if last.is_some() {
                break;
            }
        }
        let mut cycle = vec![*node];
        let mut at = last.unwrap_or(node);
        while at != *node {
            cycle.push(at);
            at = back[at];
        }
        cycle[1..].reverse();
        cycle.push(node);
        let mut text = cycle.join(" -> ");
        for pair in cycle.windows(2) {
            let edge = &edges[&(pair[0].to_owned(), pair[1].to_owned())];
            text.push_str(&format!("\n    {} -> {}: {edge}", pair[0], pair[1]));
        }
        text.push_str("\n  every edge among these modules:");
        for ((from, to), edge) in &edges {
            if component.contains(from.as_str()) && component.contains(to.as_str()) {
                text.push_str(&format!("\n    {from} -> {to}: {edge}"));
            }
        }
        found.push(text);
    }
    found
}

/// The places where a module of `walls`' left side names one on its right side (directly, or
/// through another module's re-export).
fn walls_broken(krate: &Crate, walls: &[(&str, &str)]) -> Vec<Offence> {
    let mut found = BTreeSet::new();
    for (index, resolved) in krate.resolutions() {
        let from = krate.top_module_of(&krate.references[index]);
        for (wall_from, wall_to) in walls {
            if from == *wall_from && resolved.via.contains(*wall_to) {
                found.insert(krate.offence(index, format!("{resolved} (`{wall_to}`)")));
            }
        }
    }
    found.into_iter().collect()
}

/// The places outside `allowed` whose paths lead to a crate `is_foreign` picks, however they
/// get there (an alias, a glob, a re-export of this crate's).
fn foreign_names(krate: &Crate, is_foreign: fn(&str) -> bool, allowed: &[&str]) -> Vec<Offence> {
    let mut found = BTreeSet::new();
    for (index, resolved) in krate.resolutions() {
        let from = krate.top_module_of(&krate.references[index]);
        if !allowed.contains(&from) && resolved.path.first().is_some_and(|c| is_foreign(c)) {
            found.insert(krate.offence(index, resolved.to_string()));
        }
    }
    found.into_iter().collect()
}

/// `path` with tonic's own module paths for its re-exported types (`tonic::status::Status`)
/// written as their re-exports (`tonic::Status`).
fn tonic_spelling(path: &[String]) -> Vec<&str> {
    let mut path: Vec<&str> = path.iter().map(String::as_str).collect();
    if path.len() >= 3 && path[..2] == ["tonic", "status"] && ["Status", "Code"].contains(&path[2])
    {
        path.remove(1);
    }
    path
}

fn is_lower(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase())
}

/// True when `path` is a function that makes a `tonic::Status` (or a `tonic::Code` from a
/// number): any associated function of `Status` (`new`, `internal`, `from_error`, `from`, ...),
/// `StatusExt::with_error_details*`, and `Code::from_i32` and its kin. `Code::Ok` and the other
/// variants name a code, they map nothing.
fn builds_status(path: &[String]) -> bool {
    match tonic_spelling(path).as_slice() {
        ["tonic", "Status", function, ..] | ["tonic", "Code", function, ..] => is_lower(function),
        ["tonic_types", "StatusExt", function, ..] => function.starts_with("with_"),
        _ => false,
    }
}

/// The places outside `allowed` that build a `tonic::Status`: a constructor called or passed
/// (`Status::internal`, `S::new` with `S` an alias), `<Status as From<_>>::from`, or a
/// `Status { .. }` literal.
fn status_builders(krate: &Crate, allowed: &[&str]) -> Vec<Offence> {
    let mut found = BTreeSet::new();
    for (index, resolved) in krate.resolutions() {
        let reference = &krate.references[index];
        if allowed.contains(&krate.top_module_of(reference)) {
            continue;
        }
        let builds = match reference.kind {
            Kind::StructLiteral | Kind::QualifiedSelf => {
                tonic_spelling(&resolved.path) == ["tonic", "Status"]
            }
            Kind::Plain | Kind::Signature => builds_status(&resolved.path),
        };
        if builds {
            found.insert(krate.offence(index, format!("{resolved} (builds a status)")));
        }
    }
    found.into_iter().collect()
}

/// True when the type at `resolved` is `tonic::Status` or `tonic::Result`, or a type alias of
/// this crate whose definition names one of them.
fn names_status_type(krate: &Crate, resolved: &Resolved, depth: usize) -> bool {
    let spelled = tonic_spelling(&resolved.path);
    if spelled == ["tonic", "Status"] || spelled == ["tonic", "Result"] {
        return true;
    }
    depth < MAX_DEPTH
        && krate.aliases.get(&resolved.path).is_some_and(|uses| {
            uses.iter().any(|&index| {
                krate.resolved[index]
                    .iter()
                    .any(|inner| names_status_type(krate, inner, depth + 1))
            })
        })
}

/// The places outside `allowed` whose signatures name a `tonic::Status`: a return type, a type
/// alias, an associated type (`type Error = Status`), through aliases of this crate too.
fn status_signatures(krate: &Crate, allowed: &[&str]) -> Vec<Offence> {
    let mut found = BTreeSet::new();
    for (index, resolved) in krate.resolutions() {
        let reference = &krate.references[index];
        if reference.kind == Kind::Signature
            && !allowed.contains(&krate.top_module_of(reference))
            && names_status_type(krate, resolved, 0)
        {
            found.insert(krate.offence(index, format!("{resolved} (in a signature)")));
        }
    }
    found.into_iter().collect()
}

/// The emulator package's dependencies (of every kind) on the gateway package, by name or by
/// path, in `cargo metadata` output.
fn emulator_depends_on_gateway(metadata: &serde_json::Value) -> Result<Vec<String>, String> {
    let packages = metadata["packages"]
        .as_array()
        .ok_or("cargo metadata has no packages")?;
    let named = |name: &str| {
        packages
            .iter()
            .find(|p| p["name"] == name)
            .ok_or_else(|| format!("cargo metadata has no package {name}"))
    };
    let gateway = named("datashare-gateway")?;
    let gateway_dir = gateway["manifest_path"]
        .as_str()
        .and_then(|p| Path::new(p).parent())
        .ok_or("the gateway package has no manifest_path")?;
    let emulator = named("datashare-emulator")?;
    let mut found = Vec::new();
    for dependency in emulator["dependencies"].as_array().into_iter().flatten() {
        let by_name = dependency["name"] == "datashare-gateway";
        let by_path = dependency["path"]
            .as_str()
            .is_some_and(|p| Path::new(p) == gateway_dir);
        if by_name || by_path {
            found.push(format!(
                "datashare-emulator depends on {} ({} dependency{})",
                dependency["name"],
                dependency["kind"].as_str().unwrap_or("normal"),
                dependency["rename"]
                    .as_str()
                    .map(|r| format!(", renamed {r}"))
                    .unwrap_or_default()
            ));
        }
    }
    Ok(found)
}

// ---------------------------------------------------------------------------------------------
// The rules on this crate.

fn package_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file under `dir` (relative to `root`), keyed by its path relative to `root`.
fn read_rust_files(root: &Path, dir: &Path, out: &mut Sources) {
    let entries = std::fs::read_dir(root.join(dir))
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
    for entry in entries {
        let name = entry.expect("a directory entry").file_name();
        let relative = dir.join(&name);
        if root.join(&relative).is_dir() {
            read_rust_files(root, &relative, out);
        } else if relative.extension().is_some_and(|ext| ext == "rs") {
            let text = std::fs::read_to_string(root.join(&relative))
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", relative.display()));
            out.insert(relative, text);
        }
    }
}

fn gateway_sources() -> Sources {
    let mut sources = Sources::new();
    read_rust_files(package_root(), Path::new("src"), &mut sources);
    sources
}

/// The gateway crate, parsed once for all the rules.
fn gateway() -> &'static Crate {
    static GATEWAY: OnceLock<Crate> = OnceLock::new();
    GATEWAY.get_or_init(|| Crate::parse(&gateway_sources()).unwrap_or_else(|e| panic!("{e}")))
}

fn assert_none(rule: &str, offences: &[Offence]) {
    let list: Vec<String> = offences.iter().map(ToString::to_string).collect();
    assert!(list.is_empty(), "{rule}:\n{}", list.join("\n"));
}

/// True when some offence of `offences` is in top-level module `module`.
fn any_in(offences: &[Offence], module: &str) -> bool {
    offences.iter().any(|o| o.top_module() == module)
}

#[test]
fn the_reader_reads_every_file_of_the_crate() {
    let krate = gateway();
    let unread: Vec<_> = gateway_sources()
        .into_keys()
        .filter(|file| !krate.files.contains(file) && !krate.test_files.contains(file))
        .collect();
    // A file no `mod` reaches is not compiled, or is reached in a way the reader missed.
    assert!(
        unread.is_empty(),
        "files no module declaration reaches: {unread:?}"
    );
    let tops: BTreeSet<&str> = krate
        .modules
        .iter()
        .filter_map(|m| m.path.first().map(String::as_str))
        .collect();
    for expected in ["audit", "upstream", "status", "server", "cli", "main"] {
        assert!(tops.contains(expected), "no module {expected} in {tops:?}");
    }
}

#[test]
fn no_cycle_among_the_top_level_modules() {
    let krate = gateway();
    // The graph is read at all: the wiring names the modules it joins.
    let edges = edges(krate);
    for (from, to) in [("server", "audit"), ("server", "upstream"), ("main", "cli")] {
        assert!(
            edges.contains_key(&(from.to_owned(), to.to_owned())),
            "no edge {from} -> {to} found in {:?}",
            edges.keys().collect::<Vec<_>>()
        );
    }
    let cycles = cycles(krate);
    assert!(
        cycles.is_empty(),
        "cycles among src/'s top-level modules:\n  {}",
        cycles.join("\n  ")
    );
}

#[test]
fn audit_and_status_never_name_upstream() {
    assert_none(
        "audit and status never name upstream (audit defines the object store it needs; status maps neutral fault kinds)",
        &walls_broken(gateway(), WALLS),
    );
}

#[test]
fn only_upstream_names_aws_sdk_crates() {
    let krate = gateway();
    assert!(
        any_in(&foreign_names(krate, is_aws_crate, &[]), "upstream"),
        "the reader sees no AWS SDK path in upstream: it reads nothing"
    );
    assert_none(
        "only upstream names AWS SDK crates (SdkError never leaves it)",
        &foreign_names(krate, is_aws_crate, AWS_ALLOWED),
    );
}

#[test]
fn only_status_builds_a_tonic_status() {
    let krate = gateway();
    assert!(
        any_in(&status_builders(krate, &[]), "status"),
        "the reader sees no status built in status: it reads nothing"
    );
    assert_none(
        "only status builds a tonic::Status (every error status is built in one place)",
        &status_builders(krate, STATUS_BUILDERS),
    );
}

#[test]
fn only_the_wiring_returns_a_tonic_status() {
    let krate = gateway();
    assert!(
        any_in(&status_signatures(krate, &[]), "server"),
        "the reader sees no signature naming Status in server: it reads nothing"
    );
    assert_none(
        "only status, server and codec have signatures naming tonic::Status (elsewhere a `?` could turn any error into one)",
        &status_signatures(krate, STATUS_SIGNATURES),
    );
}

#[test]
fn only_cli_names_the_emulator_crate() {
    let krate = gateway();
    assert!(
        any_in(&foreign_names(krate, is_emulator_crate, &[]), "cli"),
        "the reader sees no emulator path in cli: it reads nothing"
    );
    assert_none(
        "only cli names datashare_emulator",
        &foreign_names(krate, is_emulator_crate, EMULATOR_ALLOWED),
    );
}

#[test]
fn the_emulator_crate_does_not_depend_on_the_gateway() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .current_dir(package_root())
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("cargo metadata's JSON");
    let found = emulator_depends_on_gateway(&metadata).unwrap_or_else(|e| panic!("{e}"));
    assert!(found.is_empty(), "{}", found.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// Each rule on small crates written to break it.

mod planted {
    use super::*;

    /// A crate of the given files (paths relative to the package root).
    fn files(files: &[(&str, &str)]) -> Crate {
        let sources: Sources = files
            .iter()
            .map(|(path, text)| (PathBuf::from(path), (*text).to_owned()))
            .collect();
        Crate::parse(&sources).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A crate of top-level modules, each `src/<name>.rs`.
    fn modules(modules: &[(&str, &str)]) -> Crate {
        let lib: String = modules
            .iter()
            .map(|(name, _)| format!("pub mod {name};\n"))
            .collect();
        let mut all = vec![("src/lib.rs".to_owned(), lib)];
        all.extend(
            modules
                .iter()
                .map(|(name, text)| (format!("src/{name}.rs"), (*text).to_owned())),
        );
        let borrowed: Vec<(&str, &str)> = all
            .iter()
            .map(|(path, text)| (path.as_str(), text.as_str()))
            .collect();
        files(&borrowed)
    }

    fn offending_modules(offences: &[Offence]) -> BTreeSet<String> {
        offences.iter().map(|o| o.top_module().to_owned()).collect()
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn a_cycle_is_found_and_printed() {
        let krate = modules(&[
            ("a", "use crate::b::B;\npub struct A;\npub fn f(_: B) {}"),
            (
                "b",
                "pub struct B;\npub fn g() -> super::a::A { super::a::A }",
            ),
            ("c", "pub fn h() { crate::a::f(crate::b::B) }"),
        ]);
        let cycles = cycles(&krate);
        assert_eq!(cycles.len(), 1, "{cycles:?}");
        assert!(cycles[0].starts_with("a -> b -> a\n"), "{}", cycles[0]);
        assert!(cycles[0].contains("`crate::b::B`"), "{}", cycles[0]);
        assert!(cycles[0].contains("`super::a::A`"), "{}", cycles[0]);
    }

    #[test]
    fn a_cycle_through_a_re_export_and_a_glob_is_found() {
        // a names c's item through b's re-export; c reaches a through a glob of a.
        let krate = modules(&[
            ("a", "pub struct A;\npub fn f(_: crate::b::Reexported) {}"),
            ("b", "pub use crate::c::C as Reexported;"),
            ("c", "use crate::a::*;\npub struct C;\npub fn g(_: A) {}"),
        ]);
        let cycles = cycles(&krate);
        assert_eq!(cycles.len(), 1, "{cycles:?}");
        assert!(cycles[0].starts_with("a -> c -> a\n"), "{}", cycles[0]);
    }

    #[test]
    fn test_code_and_prose_make_no_edge() {
        let krate = modules(&[
            ("a", "pub struct A;\npub fn f(_: crate::b::B) {}"),
            (
                "b",
                r#"
                pub struct B;
                /// Unlike `crate::a::A`, ...
                pub fn g() { let _ = "crate::a::A"; }
                #[cfg(test)]
                mod tests { use crate::a::A; }
                #[cfg(all(test, unix))]
                fn helper() -> crate::a::A { crate::a::A }
                "#,
            ),
        ]);
        assert_eq!(cycles(&krate), Vec::<String>::new());
        // ... and code under `not(test)` or a feature is checked.
        let krate = modules(&[
            ("a", "pub struct A;\npub fn f(_: crate::b::B) {}"),
            (
                "b",
                "pub struct B;\n#[cfg(not(test))]\npub fn g() -> crate::a::A { crate::a::A }",
            ),
        ]);
        assert_eq!(cycles(&krate).len(), 1);
    }

    #[test]
    fn a_wall_is_broken_through_an_alias_or_another_module_s_re_export() {
        let krate = modules(&[
            ("upstream", "pub struct Archive;\npub fn fault_rules() {}"),
            ("errors", "pub use crate::upstream::Archive as Store;"),
            (
                "status",
                "pub fn table() { use super::upstream as up; up::fault_rules(); }",
            ),
            ("audit", "pub fn ship(_: &crate::errors::Store) {}"),
            ("server", "pub fn wire(_: crate::upstream::Archive) {}"),
        ]);
        let broken = walls_broken(&krate, WALLS);
        assert_eq!(
            offending_modules(&broken),
            set(&["audit", "status"]),
            "{broken:?}"
        );
        assert!(
            broken.iter().any(|o| o.written == "up::fault_rules"),
            "{broken:?}"
        );
    }

    #[test]
    fn an_aws_crate_named_outside_upstream_is_found_however_it_is_reached() {
        let krate = modules(&[
            (
                "upstream",
                "pub use aws_sdk_s3::Client as S3;\npub fn client() -> aws_sdk_redshift::Client { todo!() }",
            ),
            // Through upstream's re-export under another name.
            ("audit", "use crate::upstream::S3;\npub fn ship(_: &S3) {}"),
            // A glob of an AWS crate.
            ("server", "use aws_smithy_types::*;"),
            // A fully qualified path inside a macro's arguments.
            (
                "metrics",
                r#"pub fn f() { tracing::info!(x = ?::aws_config::BehaviorVersion::latest(), "x"); }"#,
            ),
            // An alias of the crate itself, used in a block.
            (
                "config",
                "pub fn f() { use aws_credential_types as creds; let _ = creds::Credentials::for_tests; }",
            ),
            // Not AWS: a string, a look-alike crate name.
            (
                "telemetry",
                r#"pub fn f(t: &str) -> bool { t == "aws_smithy_runtime::client" || my_aws_sdk_wrapper::on() }"#,
            ),
        ]);
        let found = foreign_names(&krate, is_aws_crate, AWS_ALLOWED);
        assert_eq!(
            offending_modules(&found),
            set(&["audit", "server", "metrics", "config"]),
            "{found:#?}"
        );
        assert!(
            found
                .iter()
                .any(|o| o.written == "S3" && o.means == "aws_sdk_s3::Client"),
            "{found:#?}"
        );
    }

    #[test]
    fn a_status_built_outside_status_is_found_however_it_is_named() {
        let krate = modules(&[
            (
                "status",
                "pub fn to_status() -> tonic::Status { tonic::Status::internal(\"x\") }",
            ),
            (
                "alias",
                "use tonic::Status as S;\npub fn f() { let _ = S::internal(\"x\"); }",
            ),
            (
                "local_alias",
                "pub fn f() { use tonic::{self as t, Status as Answer}; let _ = Answer::new(t::Code::Internal, \"\"); }",
            ),
            (
                "glob",
                "use tonic::*;\npub fn f() { let _ = Status::new(Code::Internal, \"x\"); }",
            ),
            (
                "reexport",
                "pub fn f() { let _ = crate::errors::Answer::permission_denied(\"x\"); }",
            ),
            ("errors", "pub use tonic::Status as Answer;"),
            (
                "global",
                "pub fn f() { let _ = ::tonic::Status::internal(\"x\"); }",
            ),
            (
                "qualified",
                "pub fn f(e: std::io::Error) { let _ = <tonic::Status as From<std::io::Error>>::from(e); }",
            ),
            (
                "passed",
                "pub fn f(r: Result<(), String>) { let _ = r.map_err(tonic::Status::internal); }",
            ),
            (
                "in_macro",
                "pub fn f() { println!(\"{}\", tonic::Status::internal(\"x\")); }",
            ),
            (
                "literal",
                "pub fn f() { let _ = tonic::Status { code: 0 }; }",
            ),
            ("code", "pub fn f() { let _ = tonic::Code::from_i32(13); }"),
            (
                "details",
                "use tonic_types::StatusExt;\npub fn f(d: tonic_types::ErrorDetails) { let _ = <tonic::Status as StatusExt>::with_error_details(tonic::Code::Internal, \"x\", d); }",
            ),
            (
                "tonic_path",
                "pub fn f() { let _ = tonic::status::Status::internal(\"x\"); }",
            ),
        ]);
        let found = status_builders(&krate, STATUS_BUILDERS);
        assert_eq!(
            offending_modules(&found),
            set(&[
                "alias",
                "local_alias",
                "glob",
                "reexport",
                "global",
                "qualified",
                "passed",
                "in_macro",
                "literal",
                "code",
                "details",
                "tonic_path"
            ]),
            "{found:#?}"
        );
    }

    #[test]
    fn what_only_looks_like_building_a_status_is_not_flagged() {
        let krate = modules(&[
            (
                "metrics",
                r#"
                pub fn f(s: &tonic::Status) -> bool {
                    let _ = pb::DataShareStatus::try_from(1);
                    let _ = "tonic::Status::internal";
                    s.code() == tonic::Code::Ok
                }
                "#,
            ),
            // A local `Status` shadows the one a glob brings in.
            (
                "shadow",
                "use tonic::*;\npub struct Status;\nimpl Status { pub fn new() -> Self { Status } }\npub fn f() { let _ = Status::new(); }",
            ),
            (
                "tested",
                "#[cfg(test)]\nmod tests { fn f() { let _ = tonic::Status::internal(\"x\"); } }",
            ),
        ]);
        assert_none(
            "no status is built",
            &status_builders(&krate, STATUS_BUILDERS),
        );
    }

    #[test]
    fn a_signature_naming_status_outside_the_wiring_is_found() {
        let krate = modules(&[
            (
                "status",
                "pub type Answer<T> = Result<T, tonic::Status>;\npub fn f() -> Answer<()> { Ok(()) }",
            ),
            (
                "server",
                "pub fn serve() -> Result<(), tonic::Status> { Ok(()) }",
            ),
            (
                "direct",
                "pub fn f() -> Result<(), tonic::Status> { Ok(()) }",
            ),
            ("result", "pub fn f() -> tonic::Result<()> { Ok(()) }"),
            (
                "through_alias",
                "pub fn f() -> crate::status::Answer<()> { Ok(()) }",
            ),
            (
                "associated",
                "use tonic::Status as S;\npub struct D;\nimpl Iterator for D { type Item = S; fn next(&mut self) -> Option<Self::Item> { None } }",
            ),
            (
                "closure",
                "pub fn f() { let _ = || -> Result<(), tonic::Status> { Ok(()) }; }",
            ),
            // A status as an argument is not a signature that converts into one.
            ("argument", "pub fn f(_: &tonic::Status) {}"),
        ]);
        let found = status_signatures(&krate, STATUS_SIGNATURES);
        assert_eq!(
            offending_modules(&found),
            set(&["direct", "result", "through_alias", "associated", "closure"]),
            "{found:#?}"
        );
    }

    #[test]
    fn the_emulator_named_outside_cli_is_found_through_cli_s_re_export() {
        let krate = files(&[
            ("src/lib.rs", "pub mod cli;\npub mod server;"),
            (
                "src/cli/mod.rs",
                "#[cfg(feature = \"emulator\")]\npub use datashare_emulator::Fixtures;\nmod dev;",
            ),
            (
                "src/cli/dev.rs",
                "pub fn run() { datashare_emulator::serve(); }",
            ),
            ("src/server.rs", "pub fn f(_: &crate::cli::Fixtures) {}"),
            (
                "src/main.rs",
                "use datashare_gateway::cli::Fixtures;\nfn main() { let _: Option<Fixtures> = None; }",
            ),
        ]);
        let found = foreign_names(&krate, is_emulator_crate, EMULATOR_ALLOWED);
        assert_eq!(
            offending_modules(&found),
            set(&["server", "main"]),
            "{found:#?}"
        );
        assert!(
            found
                .iter()
                .all(|o| o.means == "datashare_emulator::Fixtures"),
            "{found:#?}"
        );
    }

    #[test]
    fn modules_are_found_through_path_attributes_directories_and_inline_modules() {
        let krate = files(&[
            (
                "src/lib.rs",
                "#[path = \"elsewhere/audit_impl.rs\"]\npub mod audit;\npub mod upstream;\npub mod outer { pub mod deep; }\n#[cfg(test)]\nmod testing;",
            ),
            ("src/elsewhere/audit_impl.rs", "mod beside;"),
            (
                "src/elsewhere/beside.rs",
                "fn f() { let _ = aws_sdk_s3::Client::new; }",
            ),
            ("src/upstream.rs", "mod inner;"),
            ("src/upstream/inner.rs", "pub fn f() {}"),
            (
                "src/outer/deep.rs",
                "fn f() { let _ = aws_config::load_from_env; }",
            ),
            ("src/testing.rs", "not even Rust"),
        ]);
        let found = foreign_names(&krate, is_aws_crate, AWS_ALLOWED);
        let files: BTreeSet<&Path> = found.iter().map(|o| o.file.as_path()).collect();
        assert_eq!(
            files,
            BTreeSet::from([
                Path::new("src/elsewhere/beside.rs"),
                Path::new("src/outer/deep.rs")
            ]),
            "{found:#?}"
        );
        assert!(krate.test_files.contains(Path::new("src/testing.rs")));
        let missing = Crate::parse(&Sources::from([(
            PathBuf::from("src/lib.rs"),
            "mod gone;".to_owned(),
        )]));
        assert!(
            missing.is_err_and(|e| e.contains("mod gone;")),
            "a missing module file is an error"
        );
    }

    #[test]
    fn the_token_scanner_finds_paths_in_macro_bodies() {
        let krate = modules(&[
            (
                "ops",
                "macro_rules! reply { ($x:expr) => { $crate::status::to_status($x) }; }\npub(crate) use reply;",
            ),
            ("status", "pub fn to_status(_: u8) {}"),
        ]);
        let edges = edges(&krate);
        assert!(
            edges.contains_key(&("ops".to_owned(), "status".to_owned())),
            "{edges:?}"
        );
    }

    fn metadata(emulator_dependencies: serde_json::Value) -> serde_json::Value {
        serde_json::json!({
            "packages": [
                {"name": "datashare-gateway", "manifest_path": "/w/Cargo.toml", "dependencies": [
                    {"name": "datashare-emulator", "kind": null, "path": "/w/emulator"}
                ]},
                {"name": "datashare-emulator", "manifest_path": "/w/emulator/Cargo.toml",
                 "dependencies": emulator_dependencies},
            ]
        })
    }

    #[test]
    fn an_emulator_dependency_on_the_gateway_is_found_by_name_or_path() {
        let clean = metadata(serde_json::json!([{"name": "tokio", "kind": null}]));
        assert_eq!(emulator_depends_on_gateway(&clean), Ok(Vec::new()));
        let renamed = metadata(serde_json::json!([
            {"name": "datashare-gateway", "kind": "dev", "rename": "gw", "path": "/w"}
        ]));
        let found = emulator_depends_on_gateway(&renamed).expect("metadata");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("renamed gw"), "{found:?}");
        let by_path = metadata(serde_json::json!([
            {"name": "something-else", "kind": "build", "path": "/w"}
        ]));
        assert_eq!(
            emulator_depends_on_gateway(&by_path)
                .expect("metadata")
                .len(),
            1
        );
    }
}
