//! Hot reload: on SIGHUP, and on changes in the policy directory (or to the schema file),
//! debounced so that an editor's burst of writes makes one reload.

use std::path::PathBuf;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::policy::{Policies, PolicyError};

/// How long the directory must be quiet before a change is reloaded.
pub(super) const DEBOUNCE: Duration = Duration::from_millis(200);

impl Policies {
    /// Starts the reloader task: reloads on SIGHUP and, when `watch` is configured, on file
    /// changes. Must be called inside a tokio runtime; the task runs until aborted.
    pub fn spawn_reloader(&self) -> Result<JoinHandle<()>, PolicyError> {
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(PolicyError::Signal)?;
        let (tx, mut changes) = mpsc::channel::<()>(1);
        let watcher = if self.config().watch {
            Some(self.watch(tx)?)
        } else {
            drop(tx);
            None
        };
        let policies = self.clone();
        Ok(tokio::spawn(async move {
            // The watcher stops when dropped; it lives as long as the task.
            let _watcher = watcher;
            loop {
                let trigger = tokio::select! {
                    Some(()) = hangup.recv() => "SIGHUP",
                    Some(()) = changes.recv() => {
                        // Wait for quiet: every further change restarts the wait.
                        while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, changes.recv()).await {}
                        "file change"
                    }
                    else => break,
                };
                tracing::info!(trigger, "reloading policies");
                let reloading = policies.clone();
                // Loading reads files and validates: keep it off the async workers.
                match tokio::task::spawn_blocking(move || reloading.reload()).await {
                    Ok(_) => {}
                    Err(err) => tracing::error!(error = %err, "policy reload task failed"),
                }
            }
        }))
    }

    fn watch(&self, tx: mpsc::Sender<()>) -> Result<notify::RecommendedWatcher, PolicyError> {
        let config = self.config();
        let schema = config.schema.clone();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let Ok(event) = event else { return };
                // Reading the files on reload produces access (and possibly metadata) events; only
                // changes to content or names count, or a reload could trigger the next one.
                let changed = match event.kind {
                    EventKind::Create(_) | EventKind::Remove(_) => true,
                    EventKind::Modify(kind) => !matches!(kind, ModifyKind::Metadata(_)),
                    EventKind::Access(kind) => kind == AccessKind::Close(AccessMode::Write),
                    _ => false,
                };
                let relevant = event.paths.iter().any(|p| {
                    p.extension().is_some_and(|e| e == "cedar")
                        || schema.as_deref().is_some_and(|s| p.ends_with(s))
                });
                if changed && relevant {
                    // A full channel already holds a pending reload; dropping this one loses nothing.
                    let _ = tx.try_send(());
                }
            })
            .map_err(PolicyError::Watch)?;
        watcher
            .watch(&config.dir, RecursiveMode::NonRecursive)
            .map_err(PolicyError::Watch)?;
        // Editors replace files by renaming, so watch the schema's directory, not the file.
        if let Some(dir) = config
            .schema
            .as_ref()
            .and_then(|s| s.parent())
            .map(PathBuf::from)
        {
            let dir = if dir.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                dir
            };
            if dir != config.dir {
                watcher
                    .watch(&dir, RecursiveMode::NonRecursive)
                    .map_err(PolicyError::Watch)?;
            }
        }
        Ok(watcher)
    }
}
