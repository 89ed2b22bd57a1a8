//! The timer task ([`timer_task`]): sleeps until the core's next deadline, or until woken
//! because it moved, and hands the core its time-out; and [`StopOnDrop`], which stops the
//! node when that task ends. Its own part: the one task that lives as long as the node.

use super::Inner;
use super::drain::drain;
use core::time::Duration;
use fabric_gossip_core::Instant;
use std::sync::Arc;

/// How often the wall clock is compared with the node's time (see [`WallClock`]).
const WALL_CLOCK_CHECK: Duration = Duration::from_secs(1);

/// The timer: sleeps until the core's next deadline, or until woken because it moved; and
/// every [`WALL_CLOCK_CHECK`] tells the security provider where the wall clock is.
pub(crate) async fn timer_task(inner: Arc<Inner>) {
    let _stop_with_me = StopOnDrop(inner.clone());
    let mut wall = WallClock::default();
    let mut check = tokio::time::interval(WALL_CLOCK_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let woken = inner.timer.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let (deadline, stopped) = {
            let mut st = inner.lock();
            let next = st.comm.poll_timeout();
            st.timer_target = next;
            (next, st.comm.is_stopped())
        };
        if stopped && deadline.is_none() {
            return;
        }
        let due = async {
            match deadline {
                Some(t) => tokio::time::sleep_until(inner.clock.to_tokio(t)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut woken => {}
            _ = check.tick() => {
                let at = Instant::from_system_time(std::time::SystemTime::now());
                let st = inner.lock();
                let now = inner.now();
                st.comm.security().wall_clock(now, at);
                drop(st);
                wall.moved(now, at);
            }
            _ = due => {
                // The stack's: the core's deadlines, then the layer's.
                let mut st = inner.lock();
                st.comm.handle_timeout(inner.now());
                drain(&inner, &mut st);
            }
        }
    }
}

/// Where the wall clock was last seen from the node's time, to warn when it moves.
///
/// The node's time is the wall clock read at start plus a monotonic clock (`Clock`), so
/// that timers never jump. A wall clock stepped after start (NTP correcting a VM restored
/// with a wrong clock; a host resumed from suspend, which the monotonic clock does not
/// count) leaves the two apart: the security provider is told (`Security::wall_clock`) and
/// judges certificates by the wall clock, as Fabric does, and an operator is told here,
/// since times the node reports (a member's last alive message, `last_alive_ms_ago`) are
/// on the node's scale.
#[derive(Default)]
struct WallClock {
    /// The wall clock's distance from the node's time when last warned of (or at start:
    /// none), in nanoseconds, the wall clock ahead when positive.
    warned: i128,
}

impl WallClock {
    /// How far the wall clock may drift from the node's time unseen: the coarse
    /// monotonic clock trails by a tick, and NTP slews a clock by at most 0.5 ms a second.
    const QUIET: i128 = 1_000_000_000;

    /// The wall clock read `wall` at the node's time `now`: a warning when it moved more
    /// than [`Self::QUIET`] from where it was last warned of. How far it moved, in
    /// nanoseconds (forward when positive), when it warned.
    fn moved(&mut self, now: Instant, wall: Instant) -> Option<i128> {
        let offset = wall.nanos_since(now);
        let moved = offset - self.warned;
        if moved.abs() <= Self::QUIET {
            return None;
        }
        self.warned = offset;
        let by =
            |n: i128| Duration::from_nanos(u64::try_from(n.unsigned_abs()).unwrap_or(u64::MAX));
        tracing::warn!(
            moved = ?by(moved),
            direction = if moved > 0 { "forward" } else { "back" },
            wall_clock_from_node_time = ?by(offset),
            wall_clock_ahead = offset > 0,
            "the wall clock moved from the node's time (a clock step, or a resume from \
             suspend): certificates are judged by the wall clock, timers keep the node's \
             time, and times the node reports (a member's last alive message) are on the \
             node's time"
        );
        Some(moved)
    }
}

/// Stops the node when its timer task ends. The timer runs for the node's whole life, so
/// it ends before the node stops only when its runtime shuts down (which drops every task
/// of the node) or it panics. A node left so would go on taking sends it can never carry
/// out and leave every caller waiting for an ack, a probe or a timeout forever; stopped,
/// it fails them with `Stopped`, as after [`crate::Node::stop`]. Stopping is idempotent,
/// so the normal ends (the node stopped, the task aborted by `stop`) change nothing.
struct StopOnDrop(Arc<Inner>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.with_core(|c, now| c.stop(now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wall clock drifting by a second or less from the node's time is quiet; a step
    /// beyond it warns once, and the next warning is for a move from there, either way.
    #[test]
    fn a_wall_clock_step_warns_once_and_drift_does_not() {
        let t0 = Instant::from_unix_secs(1_700_000_000);
        let sec = Duration::from_secs(1);
        let ns = |d: Duration| i128::try_from(d.as_nanos()).unwrap();
        let mut w = WallClock::default();
        assert_eq!(w.moved(t0, t0), None);
        assert_eq!(
            w.moved(t0 + 10 * sec, t0 + 11 * sec),
            None,
            "a second of drift"
        );
        assert_eq!(w.moved(t0 + 10 * sec, t0 + 9 * sec), None);
        // NTP steps the clock back two days.
        let day = 86_400 * sec;
        let back = w.moved(t0 + 20 * sec, t0 + 20 * sec - 2 * day);
        assert_eq!(back, Some(-ns(2 * day)));
        assert_eq!(
            w.moved(t0 + 21 * sec, t0 + 21 * sec - 2 * day),
            None,
            "warned of"
        );
        assert_eq!(
            w.moved(t0 + 22 * sec, t0 + 23 * sec - 2 * day),
            None,
            "a second from the step"
        );
        // Then forward again, past where it started, and back to the node's time.
        let forward = w.moved(t0 + 30 * sec, t0 + 40 * sec);
        assert_eq!(forward, Some(ns(2 * day + 10 * sec)));
        assert_eq!(w.moved(t0 + 31 * sec, t0 + 31 * sec), Some(-ns(10 * sec)));
    }
}
