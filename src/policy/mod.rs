//! The organisation's policy, in Cedar: loading and validating policy sets against the schema,
//! evaluating calls, hot reload (SIGHUP, file events and a periodic hash of the files) and the
//! policy layer.
//!
//! A call is evaluated as principal `Service::"<id>"` (attribute `groups`), the operation's
//! action (`Action::"AssociateConsumer"`, ...), its resource (`DataShare::"<arn>"` with attributes
//! from the ARN, or `ConsumerAccount::"<account>"`) and its context (see each operation's
//! `policy_input`); `policy/schema.cedarschema` is the contract. Absent string
//! values are empty strings. A loaded set is an immutable snapshot swapped atomically, so no
//! request ever sees a half-loaded set; an invalid new set is refused and the old one keeps
//! serving.

mod engine;
mod layer;
mod load;
mod permitted;
mod reload;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use serde::Deserialize;

use crate::call::{ApprovalFacts, Decision, Operation, PolicyInput, Principal};

pub use layer::{ApprovalLookup, Authorize, LookupFuture, MAX_REQUIRED_APPROVALS};
pub use load::SourceDiagnostic;
pub use permitted::Permitted;

/// The schema the gateway ships (`policy/schema.cedarschema`), used when none is configured.
pub const DEFAULT_SCHEMA: &str = include_str!("../../policy/schema.cedarschema");

/// The `[policy]` configuration.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// The directory whose `*.cedar` files make up the policy set (other files are ignored).
    pub dir: PathBuf,
    /// A Cedar schema file (human syntax); the embedded `policy/schema.cedarschema` when unset.
    #[serde(default)]
    pub schema: Option<PathBuf>,
    /// Reload when a file in `dir` (or the schema) changes, as well as on SIGHUP.
    #[serde(default = "default_watch")]
    pub watch: bool,
    /// With `watch`, also hash the policy files (read through symlinks) and the schema this often
    /// and reload when the hash changes: the fallback for changes no file event reports. 0 turns
    /// it off; at most [`MAX_POLL_INTERVAL_SECS`].
    #[serde(default = "default_poll_interval_secs")]
    pub poll_interval_secs: u64,
}

/// The largest `policy.poll_interval_secs`: a day.
pub const MAX_POLL_INTERVAL_SECS: u64 = 86_400;

fn default_watch() -> bool {
    true
}

fn default_poll_interval_secs() -> u64 {
    5
}

impl PolicyConfig {
    /// A configuration for `dir` with the embedded schema, watching for changes.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        PolicyConfig {
            dir: dir.into(),
            schema: None,
            watch: default_watch(),
            poll_interval_secs: default_poll_interval_secs(),
        }
    }

    /// Checks what can be checked without parsing: the directory holds `*.cedar` entries that
    /// are all readable files, the schema file exists, the poll interval is in range.
    pub fn validate(&self) -> Result<(), PolicyError> {
        self.validate_values()?;
        if !self.dir.is_dir() {
            return Err(PolicyError::Config {
                key: "policy.dir",
                value: self.dir.display().to_string(),
                rule: "must be an existing directory of *.cedar files",
            });
        }
        load::policy_files(&self.dir)?;
        if let Some(schema) = &self.schema
            && !schema.is_file()
        {
            return Err(PolicyError::Config {
                key: "policy.schema",
                value: schema.display().to_string(),
                rule: "must be an existing Cedar schema file",
            });
        }
        Ok(())
    }

    /// The configured schema, read and parsed as a load would: a file that is not a Cedar schema
    /// (human syntax) is refused naming `policy.schema`, before the policies are read.
    pub fn check_schema(&self) -> Result<(), String> {
        let Some(path) = &self.schema else {
            return Ok(());
        };
        let shown = path.display();
        let bytes = std::fs::read(path).map_err(|e| {
            format!(
                "policy.schema = {:?}: cannot read it: {e}",
                shown.to_string()
            )
        })?;
        let text = String::from_utf8(bytes).map_err(|_| {
            format!(
                "policy.schema = {:?}: not a Cedar schema (not UTF-8 text)",
                shown.to_string()
            )
        })?;
        load::parse_schema(Some((path, &text)))
            .map(drop)
            .map_err(|e| {
                format!(
                    "policy.schema = {:?}: not a Cedar schema (human syntax): {e}",
                    shown.to_string()
                )
            })
    }

    /// The rules that need no file: what `check-config --no-files` checks.
    pub fn validate_values(&self) -> Result<(), PolicyError> {
        // A longer period would overflow tokio's timer arithmetic long before it were useful.
        for (key, path) in [
            ("policy.dir", Some(&self.dir)),
            ("policy.schema", self.schema.as_ref()),
        ] {
            if path.is_some_and(|p| p.as_os_str().is_empty()) {
                return Err(PolicyError::Config {
                    key,
                    value: String::new(),
                    rule: "must name a file or directory",
                });
            }
        }
        if self.poll_interval_secs > MAX_POLL_INTERVAL_SECS {
            return Err(PolicyError::Config {
                key: "policy.poll_interval_secs",
                value: self.poll_interval_secs.to_string(),
                rule: "must be 0 (off) or at most 86400 (a day)",
            });
        }
        Ok(())
    }
}

/// Why a policy set could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A configuration value breaks a rule.
    #[error("{key} = {value:?}: {rule}")]
    Config {
        /// The key.
        key: &'static str,
        /// The value given.
        value: String,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// A file or directory could not be read.
    #[error("cannot read {}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A `*.cedar` entry is not a readable file: refused, not skipped, so that no policy (a
    /// guardrail, say) drops out of the set unnoticed.
    #[error("{} is {what}, not a policy file", path.display())]
    NotAFile {
        /// The entry.
        path: PathBuf,
        /// What it is instead: "a directory", "a dangling symlink", "a special file".
        what: &'static str,
    },
    /// The directory holds no `*.cedar` file (which would deny everything: likely a mistake).
    #[error("no *.cedar files in {}", dir.display())]
    NoPolicies {
        /// The directory.
        dir: PathBuf,
    },
    /// The schema or policies do not parse, or the policies do not validate against the schema.
    #[error("invalid policy set:\n{}", render(.0))]
    Invalid(Vec<SourceDiagnostic>),
    /// The directory watcher could not be started.
    #[error("cannot watch the policy directory")]
    Watch(#[source] notify::Error),
    /// The SIGHUP handler could not be installed.
    #[error("cannot listen for SIGHUP")]
    Signal(#[source] std::io::Error),
}

fn render(diagnostics: &[SourceDiagnostic]) -> String {
    diagnostics
        .iter()
        .map(|d| format!("  {d}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// What a loaded set is made of, for `policy validate` and logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetSummary {
    /// The ids of its policies, sorted.
    pub ids: Vec<String>,
    /// Each `*.cedar` file and how many policies it holds, by file name.
    pub files: Vec<FilePolicies>,
    /// SHA-256 (hex) of the files' names and contents and of the schema: the same set on disk
    /// always has the same hash.
    pub sha256: String,
}

/// One policy file's share of a set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilePolicies {
    /// The file name, without the directory.
    pub name: String,
    /// How many policies it holds.
    pub policies: usize,
}

impl SetSummary {
    /// `a.cedar: 2, b.cedar: 1`: the per-file counts on one line, for logs.
    pub fn per_file(&self) -> String {
        self.files
            .iter()
            .map(|f| format!("{}: {}", f.name, f.policies))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A decision with the evaluation errors behind it, for `policy check` and logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evaluation {
    /// The decision.
    pub decision: Decision,
    /// Errors of policies that could not be evaluated (they count as not satisfied).
    pub errors: Vec<String>,
}

struct Shared {
    config: PolicyConfig,
    /// What every load checks the schema describes.
    probes: Vec<PolicyInput>,
    current: ArcSwap<engine::Snapshot>,
    last_reload_error: Mutex<Option<String>>,
    /// Evaluations made by the policy layer (through [`PinnedPolicies`]).
    evaluations: AtomicU64,
    /// How many of them the metrics have been told of.
    evaluations_exported: AtomicU64,
}

/// The running policy set: a cheap-to-clone handle shared by the policy layer, the reloader and
/// the admin listener (a metrics source: the serving set's hash, a refused reload).
#[derive(Clone)]
pub struct Policies {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Policies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policies")
            .field("dir", &self.shared.config.dir)
            .field("policies", &self.shared.current.load().len())
            .finish_non_exhaustive()
    }
}

impl Policies {
    /// Loads and validates the set in `config.dir`, refusing a schema that does not describe
    /// `probes` (`operations::policy_probes`: a sample request of every operation), at this load
    /// and every reload.
    pub fn load(config: PolicyConfig, probes: Vec<PolicyInput>) -> Result<Self, PolicyError> {
        config.validate()?;
        let snapshot = load::load(&config, &probes)?;
        let summary = snapshot.summary();
        tracing::info!(
            dir = %config.dir.display(),
            policies = summary.ids.len(),
            files = %summary.per_file(),
            sha256 = %summary.sha256,
            "policy set loaded"
        );
        Ok(Policies {
            shared: Arc::new(Shared {
                config,
                probes,
                current: ArcSwap::from_pointee(snapshot),
                last_reload_error: Mutex::new(None),
                evaluations: AtomicU64::new(0),
                evaluations_exported: AtomicU64::new(0),
            }),
        })
    }

    /// The decision on `request` of operation `Op` by `principal` under the current set, for a
    /// request with no approvals.
    pub fn evaluate<Op: Operation>(
        &self,
        principal: &Principal,
        request: &Op::Request,
    ) -> Decision {
        self.explain::<Op>(principal, request).decision
    }

    /// The decision on `request`, given what the approvals store says about it.
    pub fn evaluate_with<Op: Operation>(
        &self,
        principal: &Principal,
        request: &Op::Request,
        approvals: &ApprovalFacts,
    ) -> Decision {
        self.explain_input(principal, &Op::policy_input(request, approvals))
            .decision
    }

    /// The decision and any evaluation errors, for a request with no approvals. Errors never
    /// allow: a policy that fails to evaluate is not satisfied, and a request that cannot be
    /// built is denied.
    pub fn explain<Op: Operation>(
        &self,
        principal: &Principal,
        request: &Op::Request,
    ) -> Evaluation {
        let input = Op::policy_input(request, &ApprovalFacts::default());
        self.explain_input(principal, &input)
    }

    /// The decision and any evaluation errors, given what the approvals store says.
    pub fn explain_with<Op: Operation>(
        &self,
        principal: &Principal,
        request: &Op::Request,
        approvals: &ApprovalFacts,
    ) -> Evaluation {
        self.explain_input(principal, &Op::policy_input(request, approvals))
    }

    /// The decision on a policy input already made from a request.
    pub fn explain_input(&self, principal: &Principal, input: &PolicyInput) -> Evaluation {
        self.shared.current.load().evaluate(principal, input)
    }

    /// The set serving now, held still: every decision asked of it comes from the same set,
    /// whatever reloads happen meanwhile.
    pub fn pinned(&self) -> PinnedPolicies {
        PinnedPolicies {
            set: self.shared.current.load_full(),
            shared: self.shared.clone(),
        }
    }

    /// Loads and validates the set in `config.dir` without serving it (`policy validate`).
    pub fn validate_set(
        config: &PolicyConfig,
        probes: &[PolicyInput],
    ) -> Result<SetSummary, PolicyError> {
        config.validate()?;
        Ok(load::load(config, probes)?.summary())
    }

    /// Loads, validates and swaps in the set on disk; returns its policy count. On error the
    /// running set stays, and the error is logged and kept for [`Policies::last_reload_error`].
    pub fn reload(&self) -> Result<usize, PolicyError> {
        let shared = &self.shared;
        match load::load(&shared.config, &shared.probes) {
            Ok(snapshot) => {
                let summary = snapshot.summary();
                shared.current.store(Arc::new(snapshot));
                *lock(&shared.last_reload_error) = None;
                tracing::info!(
                    dir = %shared.config.dir.display(),
                    policies = summary.ids.len(),
                    files = %summary.per_file(),
                    sha256 = %summary.sha256,
                    "policy set reloaded"
                );
                Ok(summary.ids.len())
            }
            Err(err) => {
                let error = with_causes(&err);
                tracing::error!(
                    dir = %shared.config.dir.display(),
                    %error,
                    "policy reload refused; the running set stays"
                );
                *lock(&shared.last_reload_error) = Some(error);
                Err(err)
            }
        }
    }

    /// The running set's ids, files and hash.
    pub fn summary(&self) -> SetSummary {
        self.shared.current.load().summary()
    }

    /// Why the last reload was refused (the error and its causes), until a reload succeeds.
    pub fn last_reload_error(&self) -> Option<String> {
        lock(&self.shared.last_reload_error).clone()
    }

    /// How many evaluations the policy layer has made, since start.
    pub fn evaluations(&self) -> u64 {
        self.shared.evaluations.load(Ordering::Relaxed)
    }

    /// The evaluations made since the last call: what the metrics have not counted yet.
    pub(crate) fn evaluations_to_export(&self) -> u64 {
        let total = self.evaluations();
        total.saturating_sub(
            self.shared
                .evaluations_exported
                .swap(total, Ordering::Relaxed),
        )
    }

    /// The number of policies in the running set.
    pub fn len(&self) -> usize {
        self.shared.current.load().len()
    }

    /// True when the running set is empty (never, after a successful load).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The ids of the running set's policies, sorted.
    pub fn policy_ids(&self) -> Vec<String> {
        self.shared.current.load().ids().to_vec()
    }

    /// The configuration the set was loaded with.
    pub fn config(&self) -> &PolicyConfig {
        &self.shared.config
    }
}

/// The error and its causes: "cannot read x.cedar: Permission denied (os error 13)".
fn with_causes(err: &PolicyError) -> String {
    crate::errors::with_causes(err)
}

// The mutex only guards an Option<String>; a poisoned one still holds a usable value.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One policy set, held for a sequence of decisions that must agree with each other (the policy
/// layer's search for how many approvals a call needs): a reload in between cannot mix two sets.
#[derive(Clone)]
pub struct PinnedPolicies {
    set: Arc<engine::Snapshot>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for PinnedPolicies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinnedPolicies")
            .field("policies", &self.set.len())
            .finish()
    }
}

impl PinnedPolicies {
    /// The decision on `request`, given what the approvals store says about it.
    pub fn evaluate_with<Op: Operation>(
        &self,
        principal: &Principal,
        request: &Op::Request,
        approvals: &ApprovalFacts,
    ) -> Decision {
        self.shared.evaluations.fetch_add(1, Ordering::Relaxed);
        self.set
            .evaluate(principal, &Op::policy_input(request, approvals))
            .decision
    }
}

#[cfg(test)]
mod tests;
