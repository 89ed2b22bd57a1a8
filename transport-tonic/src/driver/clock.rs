//! Core time for the driver ([`Clock`]): the wall-clock time at start plus a coarse
//! monotonic clock, and the tokio deadline for a core deadline. Its own part: every core
//! call reads it, and its trade-offs (the coarse clock, deadlines at most a day ahead) hold
//! apart from the rest.

use fabric_gossip_core::Instant;
use std::time::Duration;

/// Core time from a monotonic clock: the wall-clock time at start plus the monotonic time
/// elapsed since. Certificate expiry needs wall-clock time; timers need monotonic time.
///
/// The monotonic clock is the coarse one (`CLOCK_MONOTONIC_COARSE` on Linux, through
/// `coarsetime`): every call into the core reads it, a send included, and the precise
/// clock's read (`rdtsc` and the paravirtual clock's arithmetic) measured 2 % of the CPU
/// of a lossless one-way run in a VM, the coarse one a copy of a value the kernel keeps.
/// It trails the precise clock by at most one kernel tick (1–4 ms): the core's deadlines
/// are hundreds of milliseconds and more, and one that fires a tick late, or a timer that
/// wakes a tick early and finds nothing due yet, only sleeps once more.
pub(crate) struct Clock {
    anchor: Instant,
    base: coarsetime::Instant,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Clock {
            anchor: Instant::from_system_time(std::time::SystemTime::now()),
            base: coarsetime::Instant::now_without_cache_update(),
        }
    }

    pub(crate) fn now(&self) -> Instant {
        // Without the cache update: `now()` also stores into a global that every thread
        // writing it would bounce between the cores.
        let elapsed = coarsetime::Instant::now_without_cache_update().duration_since(self.base);
        self.anchor + Duration::from(elapsed)
    }

    /// The tokio deadline for core time `t`, at most a day ahead: far deadlines (identity
    /// expiry) are re-armed after waking, which the core tolerates, and no addition can
    /// overflow.
    pub(super) fn to_tokio(&self, t: Instant) -> tokio::time::Instant {
        const HORIZON: Duration = Duration::from_secs(24 * 3600);
        let now = tokio::time::Instant::now();
        let ahead = t.saturating_duration_since(self.now()).min(HORIZON);
        now + ahead
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Core time is the wall-clock time at start plus the monotonic time elapsed since; a
    /// core deadline becomes a tokio deadline as far ahead, but at most a day ahead (a far
    /// one, an identity's expiry, is re-armed on waking), and one already past is now.
    #[test]
    fn core_time_runs_on_from_the_wall_clock_and_deadlines_are_at_most_a_day_ahead() {
        const SECOND: Duration = Duration::from_secs(1);
        let wall = Instant::from_system_time(std::time::SystemTime::now());
        // A clock started ten seconds ago.
        let clock = Clock {
            anchor: wall,
            base: coarsetime::Instant::now_without_cache_update()
                - coarsetime::Duration::from_secs(10),
        };
        let since = clock.now().saturating_duration_since(wall);
        assert!(
            since > 10 * SECOND - SECOND / 10 && since < 11 * SECOND,
            "{since:?}"
        );
        let ahead = |t: Instant| {
            clock
                .to_tokio(t)
                .saturating_duration_since(tokio::time::Instant::now())
        };
        let soon = ahead(clock.now() + 5 * SECOND);
        assert!(soon > 4 * SECOND && soon <= 5 * SECOND, "{soon:?}");
        let far = ahead(clock.now() + 30 * 24 * 3600 * SECOND);
        let day = 24 * 3600 * SECOND;
        assert!(far > day - SECOND && far <= day, "{far:?}");
        let past = ahead(wall);
        assert!(past < SECOND, "{past:?}");
    }
}
