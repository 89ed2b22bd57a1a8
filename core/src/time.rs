//! Time as the core sees it: a value the driver passes in, never a clock the core reads.

use core::fmt;
use core::ops::{Add, Sub};
use core::time::Duration;

/// A point in time, in nanoseconds since the Unix epoch, supplied by the driver.
///
/// The core never reads a clock: every input that depends on time carries an `Instant`.
/// It is wall-clock based (not an opaque monotonic value) because certificate expiry is
/// wall-clock time, and one scale for both keeps identity expiry and protocol timers on the
/// same timeline. A real driver derives it from a monotonic clock anchored at start-up; the
/// simulator makes it up. Arithmetic saturates instead of overflowing, so no input can panic.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(u64);

impl Instant {
    /// The Unix epoch; useful as the origin of virtual time in tests.
    pub const EPOCH: Instant = Instant(0);

    /// The latest instant an `Instant` holds (2554-07-21). Later times saturate to it, so it
    /// also stands for "never": a certificate valid until RFC 5280's 99991231235959Z ("no
    /// well-defined expiration date") ends here, and providers report such an identity as
    /// never expiring.
    pub const MAX: Instant = Instant(u64::MAX);

    /// Wraps a nanosecond count since the Unix epoch.
    pub const fn from_unix_nanos(nanos: u64) -> Self {
        Instant(nanos)
    }

    /// Whole seconds since the Unix epoch, for certificate validity periods.
    pub const fn from_unix_secs(secs: u64) -> Self {
        Instant(secs.saturating_mul(1_000_000_000))
    }

    /// Nanoseconds since the Unix epoch.
    pub const fn as_unix_nanos(self) -> u64 {
        self.0
    }

    /// Converts a `SystemTime` (for drivers that use the real clock); times before the
    /// epoch clamp to the epoch.
    pub fn from_system_time(t: std::time::SystemTime) -> Self {
        match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => Instant(nanos(d)),
            Err(_) => Instant(0),
        }
    }

    /// Time elapsed since `earlier`, zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// Nanoseconds from `other` to `self`, negative when `self` is earlier: how far apart
    /// two clocks' readings are (the wall clock from a node's time after a clock step).
    pub fn nanos_since(self, other: Instant) -> i128 {
        i128::from(self.0) - i128::from(other.0)
    }

    /// This instant moved by `nanos` (back when negative), saturating at the epoch and at
    /// [`Instant::MAX`]: a time on one clock read on another, [`Instant::nanos_since`]
    /// apart.
    pub fn shifted(self, nanos: i128) -> Instant {
        let by = Duration::from_nanos(u64::try_from(nanos.unsigned_abs()).unwrap_or(u64::MAX));
        if nanos >= 0 { self + by } else { self - by }
    }
}

/// A duration in nanoseconds, saturated to what an `Instant` can hold.
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, rhs: Duration) -> Instant {
        Instant(self.0.saturating_add(nanos(rhs)))
    }
}

impl Sub<Duration> for Instant {
    type Output = Instant;
    fn sub(self, rhs: Duration) -> Instant {
        Instant(self.0.saturating_sub(nanos(rhs)))
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    fn sub(self, rhs: Instant) -> Duration {
        self.saturating_duration_since(rhs)
    }
}

impl fmt::Debug for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0 / 1_000_000_000;
        let nanos = self.0 % 1_000_000_000;
        write!(f, "{secs}.{nanos:09}s")
    }
}

impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Anchors the core's [`Instant`] to `std::time::Instant`, for drivers on a real clock.
///
/// The wall clock is read once, by [`StdClock::start`]; from then on time advances with std's
/// monotonic clock, so a wall-clock step (NTP, a changed date) neither fires nor delays the
/// core's timers, while certificate expiry still sees wall-clock time as of start-up plus
/// elapsed time. It is `Copy`: hand the same anchor to every thread so that they agree on
/// now. It is the one place a driver needs std's clock, which also avoids the confusion of
/// two types named `Instant` in one scope.
#[derive(Clone, Copy, Debug)]
pub struct StdClock {
    std: std::time::Instant,
    core: Instant,
}

impl StdClock {
    /// Anchors the current wall-clock time to `std::time::Instant::now()`.
    pub fn start() -> Self {
        let std = std::time::Instant::now();
        Self::anchored(std, Instant::from_system_time(std::time::SystemTime::now()))
    }

    /// Anchors `std` to `core`: for tests, and for drivers that keep their own origin.
    pub const fn anchored(std: std::time::Instant, core: Instant) -> Self {
        StdClock { std, core }
    }

    /// The core's now: what every input takes.
    pub fn now(&self) -> Instant {
        self.to_core(std::time::Instant::now())
    }

    /// The core's instant for a std one; instants before the anchor clamp to it.
    pub fn to_core(&self, t: std::time::Instant) -> Instant {
        self.core + t.saturating_duration_since(self.std)
    }

    /// The std instant for a core one (a deadline from `poll_output`'s time-out to sleep
    /// until); instants before the anchor clamp to it. A deadline beyond what
    /// `std::time::Instant` can hold becomes 2^32 seconds (136 years) after the anchor
    /// instead of a panic.
    pub fn to_std(&self, t: Instant) -> std::time::Instant {
        let d = t.saturating_duration_since(self.core);
        self.std
            .checked_add(d)
            .unwrap_or_else(|| self.std + Duration::from_secs(1 << 32))
    }

    /// How long from now until `deadline`; zero once it has passed. What a driver sleeps.
    pub fn until(&self, deadline: Instant) -> Duration {
        deadline.saturating_duration_since(self.now())
    }
}

#[cfg(test)]
mod std_clock_tests {
    use super::{Instant, StdClock};
    use core::time::Duration;

    fn clock() -> StdClock {
        StdClock::anchored(
            std::time::Instant::now(),
            Instant::from_unix_nanos(1_000_000_000),
        )
    }

    #[test]
    fn round_trips_at_and_after_the_anchor() {
        let c = clock();
        for d in [0u64, 1, 999, 1_000_000, 3_600_000_000_000] {
            let x = Instant::from_unix_nanos(1_000_000_000 + d);
            assert_eq!(c.to_core(c.to_std(x)), x, "offset {d} ns");
        }
    }

    #[test]
    fn clamps_before_the_anchor() {
        let c = clock();
        let before = Instant::from_unix_nanos(5);
        assert_eq!(
            c.to_core(c.to_std(before)),
            Instant::from_unix_nanos(1_000_000_000)
        );
    }

    #[test]
    fn far_deadline_does_not_panic() {
        let c = clock();
        let far = c.to_std(Instant::from_unix_nanos(u64::MAX));
        assert!(far > std::time::Instant::now());
    }

    #[test]
    fn now_never_goes_backwards_and_past_deadlines_are_due() {
        let c = StdClock::start();
        let mut last = c.now();
        for _ in 0..5_000 {
            let t = c.now();
            assert!(t >= last);
            last = t;
        }
        assert_eq!(c.until(Instant::from_unix_nanos(0)), Duration::ZERO);
        assert!(c.until(c.now() + Duration::from_secs(60)) > Duration::from_secs(59));
        assert!(
            clock().now() >= Instant::from_unix_nanos(1_000_000_000),
            "from its anchor"
        );
    }
}

/// A rate limit for log lines that hostile input can cause (a failed handshake, an evicted
/// connection): 20 lines a second of one kind; the rest are counted, and the next line
/// logged says how many were not. Hostile input can fail handshakes as fast as it opens
/// streams, and one `info` line each wrote megabytes a second to a node's log (a loopback
/// attack: 46 MiB in 6 s); counters count every one all the same. In core time, so a
/// simulation logs the same lines on every run; the core uses it for its handshake
/// failures, drivers for their own such lines; [`LogBudget::per_second`] for a kind of
/// line that needs fewer.
#[derive(Clone, Debug)]
pub struct LogBudget {
    /// Start of the current second.
    since: Option<Instant>,
    /// Lines logged since `since`.
    used: u32,
    /// Lines not logged since the last one that was.
    suppressed: u64,
    /// Lines allowed per second.
    per_second: u32,
}

impl Default for LogBudget {
    fn default() -> Self {
        LogBudget::per_second(LogBudget::PER_SECOND)
    }
}

impl LogBudget {
    /// Lines allowed per second by default.
    pub const PER_SECOND: u32 = 20;

    /// A budget of `lines` a second (a repeated configuration error needs one).
    pub fn per_second(lines: u32) -> Self {
        LogBudget {
            since: None,
            used: 0,
            suppressed: 0,
            per_second: lines,
        }
    }

    /// `Some(n)`: log this line, saying that `n` were not logged before it; `None`: skip it.
    /// A clock set back starts a new second, rather than silencing every line until it
    /// has caught up.
    pub fn admit(&mut self, now: Instant) -> Option<u64> {
        let fresh = self
            .since
            .is_none_or(|s| now < s || now.saturating_duration_since(s) >= Duration::from_secs(1));
        if fresh {
            self.since = Some(now);
            self.used = 0;
        }
        if self.used < self.per_second {
            self.used += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod log_budget_tests {
    use super::{Instant, LogBudget};
    use core::time::Duration;

    /// 20 lines a second; the rest counted and reported by the next line logged.
    #[test]
    fn a_log_budget_allows_twenty_lines_a_second_and_counts_the_rest() {
        let t0 = Instant::from_unix_secs(1_700_000_000);
        let mut b = LogBudget::default();
        let first: Vec<Option<u64>> = (0..25).map(|_| b.admit(t0)).collect();
        assert_eq!(first[..20], [Some(0); 20]);
        assert_eq!(first[20..], [None; 5]);
        // Still the same second.
        assert_eq!(b.admit(t0 + Duration::from_millis(999)), None);
        // The next second: the first line says how many were not logged.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(b.admit(t1), Some(6));
        assert_eq!(b.admit(t1), Some(0));
        // A clock set back starts a new second at once.
        for _ in 0..18 {
            b.admit(t1);
        }
        assert_eq!(b.admit(t1), None);
        assert_eq!(b.admit(t0), Some(1));
    }
}

#[cfg(test)]
mod system_time_tests {
    use super::*;
    use std::time::{Duration as StdDuration, UNIX_EPOCH};

    /// Drivers on the real clock hand the core `SystemTime`s: their nanoseconds since the
    /// epoch, and the epoch for anything before it.
    #[test]
    fn a_system_time_is_its_nanoseconds_since_the_epoch() {
        let nanos = 1_700_000_000_123_456_789;
        let t = UNIX_EPOCH + StdDuration::from_nanos(nanos);
        assert_eq!(Instant::from_system_time(t).as_unix_nanos(), nanos);
        let before = UNIX_EPOCH - StdDuration::from_secs(1);
        assert_eq!(
            Instant::from_system_time(before),
            Instant::from_unix_secs(0)
        );
    }

    /// Two readings' distance is signed, and shifting by it reads one on the other's
    /// scale; a shift saturates at the epoch and at `MAX`.
    #[test]
    fn instants_are_apart_by_signed_nanoseconds_and_shift_by_them() {
        let (a, b) = (Instant::from_unix_secs(100), Instant::from_unix_secs(40));
        assert_eq!(a.nanos_since(b), 60_000_000_000);
        assert_eq!(b.nanos_since(a), -60_000_000_000);
        assert_eq!(b.shifted(a.nanos_since(b)), a);
        assert_eq!(a.shifted(b.nanos_since(a)), b);
        assert_eq!(a.shifted(0), a);
        assert_eq!(b.shifted(-100_000_000_000), Instant::EPOCH);
        assert_eq!(a.shifted(i128::MAX), Instant::MAX);
        assert_eq!(
            Instant::MAX.nanos_since(Instant::EPOCH),
            i128::from(u64::MAX)
        );
    }

    /// Traces and logs show an instant as seconds since the epoch, to the nanosecond.
    #[test]
    fn an_instant_reads_as_seconds_and_nanoseconds() {
        let t = Instant::from_unix_nanos(1_700_000_000_000_000_042);
        assert_eq!(format!("{t:?}"), "1700000000.000000042s");
        assert_eq!(t.to_string(), "1700000000.000000042s");
    }
}
