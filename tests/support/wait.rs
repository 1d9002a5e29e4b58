//! Waiting for an event instead of sleeping for it: poll until it has happened, within a bound,
//! and fail saying what did not happen.

use std::fmt::Debug;
use std::time::Duration;

/// How often [`until`] looks.
const POLL: Duration = Duration::from_millis(10);

/// Polls `probe` until it returns `Ok`, and returns that value. `Err` carries what the probe
/// saw instead; when `within` has passed, panics with `what` (the event that did not happen) and
/// the last thing seen.
pub async fn until<T, E: Debug>(
    within: Duration,
    what: &str,
    mut probe: impl AsyncFnMut() -> Result<T, E>,
) -> T {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let seen = match probe().await {
            Ok(value) => return value,
            Err(seen) => seen,
        };
        if tokio::time::Instant::now() >= deadline {
            panic!("{what}: did not happen within {within:?}; last seen: {seen:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}
