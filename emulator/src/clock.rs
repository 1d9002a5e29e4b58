//! The emulator's notion of "now": the real clock plus an offset that `POST /clock` moves
//! forward, so a test can expire a session without waiting for it.

use std::sync::atomic::{AtomicU64, Ordering};

use time::OffsetDateTime;

/// The furthest the clock may be moved ahead: ten years, far beyond any session, and small
/// enough that no date arithmetic overflows.
pub(crate) const MAX_OFFSET_SECS: u64 = 10 * 366 * 24 * 60 * 60;

/// Why the clock was not moved.
#[derive(Debug, thiserror::Error)]
#[error("advance_secs would move the clock {total} s ahead; at most {MAX_OFFSET_SECS} s in all")]
pub(crate) struct TooFar {
    total: u128,
}

/// Moves only forward, so a session that expired stays expired until `reset`.
#[derive(Debug, Default)]
pub(crate) struct Clock {
    offset_secs: AtomicU64,
}

impl Clock {
    pub(crate) fn now(&self) -> OffsetDateTime {
        // The offset is bounded by MAX_OFFSET_SECS, which fits an i64 and a date.
        let offset = i64::try_from(self.offset_secs()).unwrap_or(0);
        OffsetDateTime::now_utc() + time::Duration::seconds(offset)
    }

    pub(crate) fn offset_secs(&self) -> u64 {
        self.offset_secs.load(Ordering::Relaxed)
    }

    /// Moves the clock `secs` further ahead; returns the new total offset.
    pub(crate) fn advance(&self, secs: u64) -> Result<u64, TooFar> {
        self.offset_secs
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |current| {
                current
                    .checked_add(secs)
                    .filter(|total| *total <= MAX_OFFSET_SECS)
            })
            .map(|previous| previous + secs)
            .map_err(|current| TooFar {
                total: u128::from(current) + u128::from(secs),
            })
    }

    pub(crate) fn reset(&self) {
        self.offset_secs.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advancing_adds_up_and_is_bounded() {
        let clock = Clock::default();
        let before = clock.now();
        assert_eq!(clock.advance(3600).unwrap(), 3600);
        assert_eq!(clock.advance(60).unwrap(), 3660);
        assert!(clock.now() - before >= time::Duration::seconds(3660));
        assert!(clock.advance(MAX_OFFSET_SECS).is_err());
        assert_eq!(clock.offset_secs(), 3660);
        clock.reset();
        assert_eq!(clock.offset_secs(), 0);
    }
}
