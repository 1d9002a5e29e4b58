//! Hot reload: on SIGHUP; with `watch`, on file events in the policy directory, the schema's
//! directory and the directories symlinked policy files resolve into, and on a periodic hash of
//! the files as a fallback. A file event or a tick reloads only when the set on disk hashes
//! differently from the one last loaded or refused, so noise (an editor's swap file, a ConfigMap's
//! bookkeeping, another file in a watched directory) costs a hash, not a reload.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::metrics::{Metrics, PolicyReload, ScrapeSource};
use crate::policy::{Policies, PolicyConfig, PolicyError, load};

/// How long the watched directories must be quiet before a change is looked at.
pub(super) const DEBOUNCE: Duration = Duration::from_millis(200);

/// The longest a burst of events may delay a look: a directory that is never quiet (a log file
/// written beside the schema) must not hold reloads back for ever.
const DEBOUNCE_AT_MOST: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trigger {
    Signal,
    FileEvent,
    Poll,
}

impl Trigger {
    fn name(self) -> &'static str {
        match self {
            Trigger::Signal => "SIGHUP",
            Trigger::FileEvent => "file change",
            Trigger::Poll => "periodic check",
        }
    }
}

impl ScrapeSource for Policies {
    fn refresh(&self, metrics: &Metrics) {
        metrics.policy_set(&self.summary().sha256);
        metrics
            .policy_evaluations
            .inc_by(self.evaluations_to_export());
    }

    fn readiness_note(&self) -> Option<String> {
        self.last_reload_error()
            .map(|error| format!("policy reload refused, the previous set still serves: {error}"))
    }
}

impl Policies {
    /// Starts the reloader task: reloads on SIGHUP and, when `watch` is configured, on file
    /// changes (events, and every `poll_interval_secs` a hash of the files). Reports to `metrics`:
    /// each reload's result (`policy_reload_total`), the serving set's hash (`policy_set_info`)
    /// and a refused reload (in `/readyz`'s body). Must be called inside a tokio runtime; the
    /// task runs until aborted.
    pub fn spawn_reloader(&self, metrics: Arc<Metrics>) -> Result<JoinHandle<()>, PolicyError> {
        metrics.add_source(Arc::new(self.clone()));
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(PolicyError::Signal)?;
        let config = self.config();
        let (tx, mut changes) = mpsc::channel::<()>(1);
        let mut watcher = if config.watch {
            Some(DirWatcher::start(config, tx)?)
        } else {
            drop(tx);
            None
        };
        let mut poll = (config.watch && config.poll_interval_secs > 0).then(|| {
            let period = Duration::from_secs(config.poll_interval_secs);
            let mut poll = tokio::time::interval_at(Instant::now() + period, period);
            poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
            poll
        });
        let policies = self.clone();
        Ok(tokio::spawn(async move {
            // The hash of the set on disk when it was last loaded or refused.
            let mut last = policies.summary().sha256;
            loop {
                let trigger = tokio::select! {
                    Some(()) = hangup.recv() => Trigger::Signal,
                    Some(()) = changes.recv() => {
                        // Wait for quiet: every further change restarts the wait, up to a bound.
                        let until = Instant::now() + DEBOUNCE_AT_MOST;
                        while let Ok(Ok(Some(()))) = tokio::time::timeout_at(
                            until,
                            tokio::time::timeout(DEBOUNCE, changes.recv()),
                        )
                        .await
                        {}
                        Trigger::FileEvent
                    }
                    () = tick(&mut poll) => Trigger::Poll,
                    else => break,
                };
                let checking = policies.clone();
                let seen = last.clone();
                // Hashing and loading read files and validate: keep them off the async workers.
                let checked =
                    tokio::task::spawn_blocking(move || check(&checking, trigger, &seen)).await;
                let checked = match checked {
                    Ok(checked) => checked,
                    Err(err) => {
                        tracing::error!(error = %err, "policy reload task failed");
                        continue;
                    }
                };
                last = checked.fingerprint;
                match checked.reloaded {
                    Some(true) => metrics.policy_reload(PolicyReload::Ok),
                    Some(false) => metrics.policy_reload(PolicyReload::Refused),
                    None => {}
                }
                if let Some(watcher) = &mut watcher {
                    watcher.follow(checked.watch);
                }
            }
        }))
    }
}

async fn tick(poll: &mut Option<Interval>) {
    match poll {
        Some(poll) => {
            poll.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// What one look at the disk found.
struct Checked {
    /// The set's hash, taken before any reload.
    fingerprint: String,
    /// Whether a reload succeeded, if one was made.
    reloaded: Option<bool>,
    /// The directories to watch now.
    watch: BTreeSet<PathBuf>,
}

/// Reloads on SIGHUP, or when the set on disk no longer hashes to `last`.
fn check(policies: &Policies, trigger: Trigger, last: &str) -> Checked {
    let config = policies.config();
    // Hashed before loading: a change made during the load shows as a new hash next time.
    let fingerprint = load::fingerprint(config);
    let reloaded = (trigger == Trigger::Signal || fingerprint != last).then(|| {
        tracing::info!(trigger = trigger.name(), "reloading policies");
        policies.reload().is_ok()
    });
    Checked {
        fingerprint,
        reloaded,
        watch: if config.watch {
            watched_dirs(config)
        } else {
            BTreeSet::new()
        },
    }
}

/// The directories whose events may mean a change: the policy directory, the schema's, and
/// those symlinked `*.cedar` entries resolve into (a ConfigMap's `..<timestamp>` directory, or
/// wherever a link points). Canonical, so no directory is watched twice under two names.
fn watched_dirs(config: &PolicyConfig) -> BTreeSet<PathBuf> {
    let canonical = |path: &Path| std::fs::canonicalize(path).ok();
    let mut dirs = BTreeSet::new();
    dirs.extend(canonical(&config.dir));
    if let Some(schema) = &config.schema {
        // Editors replace files by renaming, so the schema's directory is watched, not the file.
        dirs.extend(canonical(&parent(schema)));
        // And, when the schema is a symlink, the directory it resolves into.
        dirs.extend(canonical(schema).map(|s| parent(&s)));
    }
    for entry in load::cedar_entries(&config.dir).unwrap_or_default() {
        let is_link = std::fs::symlink_metadata(&entry).is_ok_and(|m| m.file_type().is_symlink());
        if is_link && let Some(target) = canonical(&entry) {
            dirs.insert(parent(&target));
        }
    }
    dirs
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// The notify watcher and the directories it watches, which move as symlinks are repointed.
struct DirWatcher {
    watcher: notify::RecommendedWatcher,
    watched: BTreeSet<PathBuf>,
}

impl DirWatcher {
    /// Watches the policy directory (an error if it cannot), then what [`watched_dirs`] adds.
    fn start(config: &PolicyConfig, tx: mpsc::Sender<()>) -> Result<Self, PolicyError> {
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let Ok(event) = event else { return };
                // Hashing and loading read the files, which makes access (and possibly metadata)
                // events; only changes to content or names count, or each look would cause the next.
                let changed = match event.kind {
                    EventKind::Create(_) | EventKind::Remove(_) => true,
                    EventKind::Modify(kind) => !matches!(kind, ModifyKind::Metadata(_)),
                    EventKind::Access(kind) => kind == AccessKind::Close(AccessMode::Write),
                    _ => false,
                };
                // Any entry counts, not only `*.cedar`: a ConfigMap update renames `..data`.
                if changed {
                    // A full channel already holds a pending look; dropping this one loses nothing.
                    let _ = tx.try_send(());
                }
            })
            .map_err(PolicyError::Watch)?;
        let dir = std::fs::canonicalize(&config.dir).unwrap_or_else(|_| config.dir.clone());
        watcher
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(PolicyError::Watch)?;
        let mut dirs = DirWatcher {
            watcher,
            watched: BTreeSet::from([dir]),
        };
        dirs.follow(watched_dirs(config));
        Ok(dirs)
    }

    /// Watches `wanted` and stops watching what is no longer in it. Best effort: a directory may
    /// vanish in between (a ConfigMap's old data directory), and the periodic hash covers a miss.
    fn follow(&mut self, wanted: BTreeSet<PathBuf>) {
        for gone in self.watched.difference(&wanted) {
            // Already unwatched when the directory was deleted; nothing to do then.
            let _ = self.watcher.unwatch(gone);
        }
        for new in wanted.difference(&self.watched) {
            if let Err(err) = self.watcher.watch(new, RecursiveMode::NonRecursive) {
                tracing::debug!(dir = %new.display(), error = %err, "cannot watch a policy directory");
            }
        }
        self.watched = wanted;
    }
}
