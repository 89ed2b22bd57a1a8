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
            Ok(d) => Instant(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
            Err(_) => Instant(0),
        }
    }

    /// Time elapsed since `earlier`, zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, rhs: Duration) -> Instant {
        Instant(
            self.0
                .saturating_add(u64::try_from(rhs.as_nanos()).unwrap_or(u64::MAX)),
        )
    }
}

impl Sub<Duration> for Instant {
    type Output = Instant;
    fn sub(self, rhs: Duration) -> Instant {
        Instant(
            self.0
                .saturating_sub(u64::try_from(rhs.as_nanos()).unwrap_or(u64::MAX)),
        )
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
