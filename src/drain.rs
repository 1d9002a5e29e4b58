//! The calls in flight, so that a shutdown can wait for them and, when the grace period runs
//! out, record those it must abort instead of leaving intents without outcomes.
//!
//! Each call's stack runs in its own task (so a caller that goes away does not cut it short);
//! the tasks are tracked here with what their audit record needs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::{AbortHandle, JoinHandle};
use tokio_util::task::TaskTracker;

use crate::audit::{AuditLog, CallFacts, OutcomeFacts, RecordBody};
use crate::call::{CallContext, CallNotes, CallNotesState};
use crate::errors::GatewayError;

/// How long aborted calls get to unwind before their records are written.
const UNWIND: Duration = Duration::from_millis(500);

/// Makes the facts of an aborted call's record from its context and notes (the parameters are
/// captured as they are, and serialised only if the record is ever needed).
type Facts = Box<dyn Fn(&CallContext, &CallNotesState) -> CallFacts + Send>;

/// What the record of an aborted call is made of.
struct Entry {
    ctx: CallContext,
    facts: Facts,
    notes: Arc<CallNotes>,
    abort: Option<AbortHandle>,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("request_id", &self.ctx.request_id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct Inner {
    tracker: TaskTracker,
    calls: Mutex<HashMap<u64, Entry>>,
    next_id: AtomicU64,
}

/// The tracked calls; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct InFlight {
    inner: Arc<Inner>,
}

impl InFlight {
    fn calls(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
        self.inner
            .calls
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs one call's stack as a tracked task. `ctx`, `params` and `notes` make its record if
    /// it has to be aborted at shutdown.
    pub fn spawn<T: Send + 'static, P: serde::Serialize + Send + 'static>(
        &self,
        ctx: CallContext,
        params: P,
        notes: Arc<CallNotes>,
        call: impl std::future::Future<Output = T> + Send + 'static,
    ) -> JoinHandle<T> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        // Registered before it can finish, so its own removal cannot come first.
        self.calls().insert(
            id,
            Entry {
                ctx,
                facts: Box::new(move |ctx, state| CallFacts::of_call(ctx, &params, state)),
                notes,
                abort: None,
            },
        );
        let this = self.clone();
        let handle = self.inner.tracker.spawn(async move {
            let out = call.await;
            this.calls().remove(&id);
            out
        });
        if let Some(entry) = self.calls().get_mut(&id) {
            entry.abort = Some(handle.abort_handle());
        }
        handle
    }

    /// Waits up to `within` for every call to end. Calls still running then are aborted and
    /// recorded as aborted at shutdown (an `outcome` for those with an intent, a `call` record
    /// for the others). Returns how many were aborted.
    pub async fn drain(&self, within: Duration, audit: &AuditLog) -> usize {
        self.inner.tracker.close();
        if tokio::time::timeout(within, self.inner.tracker.wait())
            .await
            .is_ok()
        {
            return 0;
        }
        let aborted: Vec<Entry> = self.calls().drain().map(|(_, entry)| entry).collect();
        for entry in &aborted {
            if let Some(abort) = &entry.abort {
                abort.abort();
            }
        }
        let _ = tokio::time::timeout(UNWIND, self.inner.tracker.wait()).await;
        for entry in &aborted {
            let state = entry.notes.snapshot();
            if state.recorded {
                continue;
            }
            let mut facts = (entry.facts)(&entry.ctx, &state);
            let outcome = OutcomeFacts::of_result::<()>(
                &Err(GatewayError::AbortedAtShutdown),
                &state,
                entry.ctx.started.elapsed(),
                &mut facts.truncated,
            );
            let body = match state.intent_seq {
                Some(intent_seq) => RecordBody::Outcome {
                    intent_seq,
                    call: facts,
                    outcome,
                },
                None => RecordBody::Call {
                    call: facts,
                    outcome,
                },
            };
            if let Err(err) = audit.append(body).await {
                tracing::error!(
                    error = %err,
                    request_id = %entry.ctx.request_id,
                    "audit: an aborted call could not be recorded"
                );
            }
        }
        if !aborted.is_empty() {
            tracing::warn!(
                aborted = aborted.len(),
                "grace period over: calls still running were aborted and recorded as such"
            );
        }
        aborted.len()
    }
}
