//! The emulator's notion of "now": the real clock plus an offset that `POST /clock` moves, so a
//! test can expire a session without waiting for it (forward), or have sessions issued that are
//! already near their end by the client's clock (back).

use std::sync::atomic::{AtomicI64, Ordering};

use time::OffsetDateTime;

/// The furthest the clock may be moved either way: ten years, far beyond any session, and small
/// enough that no date arithmetic overflows.
pub(crate) const MAX_OFFSET_SECS: i64 = 10 * 366 * 24 * 60 * 60;

/// Why the clock was not moved.
#[derive(Debug, thiserror::Error)]
#[error(
    "advance_secs would put the clock {total} s from the real one; at most {MAX_OFFSET_SECS} s either way"
)]
pub(crate) struct TooFar {
    total: i128,
}

/// The real clock plus an offset, in whole seconds, that tests move.
#[derive(Debug, Default)]
pub(crate) struct Clock {
    offset_secs: AtomicI64,
}

impl Clock {
    pub(crate) fn now(&self) -> OffsetDateTime {
        // The offset is bounded by MAX_OFFSET_SECS, which keeps the date in range.
        OffsetDateTime::now_utc() + time::Duration::seconds(self.offset_secs())
    }

    pub(crate) fn offset_secs(&self) -> i64 {
        self.offset_secs.load(Ordering::Relaxed)
    }

    /// Moves the clock by `secs` (back when negative); returns the new total offset.
    pub(crate) fn advance(&self, secs: i64) -> Result<i64, TooFar> {
        self.offset_secs
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |current| {
                current
                    .checked_add(secs)
                    .filter(|total| total.abs() <= MAX_OFFSET_SECS)
            })
            .map(|previous| previous + secs)
            .map_err(|current| TooFar {
                total: i128::from(current) + i128::from(secs),
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
        assert_eq!(clock.advance(-4000).unwrap(), -340);
        assert!(clock.now() < OffsetDateTime::now_utc());
        assert!(clock.advance(-MAX_OFFSET_SECS).is_err());
        clock.reset();
        assert_eq!(clock.offset_secs(), 0);
    }
}
