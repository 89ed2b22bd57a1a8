//! Timers: every deadline of the core in one heap (Fabric starts a `time.After` per
//! dial, handshake, operation and identity expiry; `gossip/comm/comm_impl.go`,
//! `gossip/identity/identity.go`).
//!
//! An entry names the object it belongs to and is acted on only if that object still has
//! exactly that deadline, so cancelling a deadline is just changing it, and stale entries
//! are harmless.

use super::Comm;
use super::dial::DialState;
use super::ops::Op;
use super::stream::{Phase, Purpose};
use crate::error::{CloseReason, HandshakeError};
use crate::ids::{DialId, OpId, PkiId, StreamId};
use crate::security::Security;
use crate::time::Instant;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// What a deadline belongs to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum TimerKey {
    /// A dial or its Ping (`dial_timeout`, `conn_timeout`).
    Dial(DialId),
    /// The end of a dial's back-off after a failed connection attempt.
    DialRetry(DialId),
    /// A handshaking stream waiting for the remote's `ConnEstablish` (`conn_timeout`).
    Stream(StreamId),
    /// A `handshake()` or `send_with_ack()` operation.
    Op(OpId),
    /// Our losing stream of a crossing dial, or a retired stream (`crossing_grace`).
    Grace(StreamId),
    /// An identity's certificate expiry.
    Identity(PkiId),
    /// The periodic sweep of the identity store for identities unused for
    /// `identity_usage_threshold` (Fabric's `periodicalPurgeUnusedIdentities`).
    UsageSweep,
}

/// The deadline heap, ordered by (instant, arming order).
#[derive(Debug, Default)]
pub(super) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, u64, TimerKey)>>,
    seq: u64,
}

impl Timers {
    pub(super) fn push(&mut self, at: Instant, key: TimerKey) {
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq, key)));
    }

    pub(super) fn len(&self) -> usize {
        self.heap.len()
    }

    /// The earliest entry, valid or not.
    pub(super) fn peek(&self) -> Option<(Instant, &TimerKey)> {
        self.heap.peek().map(|Reverse((at, _, key))| (*at, key))
    }

    pub(super) fn pop(&mut self) -> Option<(Instant, TimerKey)> {
        self.heap.pop().map(|Reverse((at, _, key))| (at, key))
    }

    /// The earliest entry due at `now`, taken out.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<(Instant, TimerKey)> {
        match self.peek() {
            Some((at, _)) if at <= now => self.pop(),
            _ => None,
        }
    }

    /// Keeps only the entries `valid` accepts.
    pub(super) fn retain(&mut self, mut valid: impl FnMut(Instant, &TimerKey) -> bool) {
        let heap = core::mem::take(&mut self.heap);
        let kept: Vec<_> = heap
            .into_vec()
            .into_iter()
            .filter(|Reverse((at, _, key))| valid(*at, key))
            .collect();
        self.heap = BinaryHeap::from(kept);
    }

    pub(super) fn clear(&mut self) {
        self.heap.clear();
    }
}

impl<S: Security> Comm<S> {
    pub(super) fn tick(&mut self, now: Instant) {
        if now > self.now {
            self.now = now;
        }
    }

    pub(super) fn arm(&mut self, at: Instant, key: TimerKey) {
        self.timers.push(at, key);
        let live = self.streams.len() + self.dials.len() + self.ops.len() + self.identities.len();
        if self.timers.len() > 4 * live + 64 {
            self.compact_timers();
        }
    }

    /// Drops timer entries whose object no longer has that deadline, so the heap stays
    /// proportional to live objects however many deadlines were cancelled.
    fn compact_timers(&mut self) {
        let mut timers = core::mem::take(&mut self.timers);
        timers.retain(|at, key| self.timer_valid(at, key));
        self.timers = timers;
    }

    /// The next valid deadline; stale entries in front of it are discarded.
    pub(super) fn next_deadline(&mut self) -> Option<Instant> {
        while let Some((at, key)) = self.timers.peek() {
            if self.timer_valid(at, key) {
                return Some(at);
            }
            self.timers.pop();
        }
        None
    }

    /// Fires every deadline at or before `now`.
    pub(super) fn fire_due(&mut self, now: Instant) {
        while let Some((at, key)) = self.timers.pop_due(now) {
            self.fire(at, key, now);
        }
    }

    fn timer_valid(&self, at: Instant, key: &TimerKey) -> bool {
        match key {
            TimerKey::Dial(d) => self.dials.get(*d).is_some_and(|x| x.deadline == Some(at)),
            TimerKey::DialRetry(d) => self.dials.get(*d).is_some_and(
                |x| matches!(x.state, DialState::Backoff { retry_at } if retry_at == at),
            ),
            TimerKey::Stream(s) => self.streams.get(*s).is_some_and(
                |x| matches!(x.phase, Phase::Handshaking { deadline, .. } if deadline == at),
            ),
            TimerKey::Grace(s) => self
                .streams
                .get(*s)
                .and_then(|x| x.conn())
                .is_some_and(|c| c.grace == Some(at)),
            TimerKey::Op(o) => self.ops.get(*o).and_then(Op::deadline) == Some(at),
            TimerKey::Identity(p) => self
                .identities
                .get(p)
                .is_some_and(|s| s.expires == Some(at)),
            TimerKey::UsageSweep => self.usage_sweep == Some(at),
        }
    }

    fn fire(&mut self, at: Instant, key: TimerKey, now: Instant) {
        if !self.timer_valid(at, &key) {
            return;
        }
        match key {
            TimerKey::Dial(d) => match self.dials.get_mut(d).map(|x| (x.state, x)) {
                Some((DialState::Dialing | DialState::Backoff { .. }, x)) => {
                    // The last failed attempt's error, if one failed: what the caller can
                    // act on ("connection refused"), where grpc-go would say only
                    // "context deadline exceeded".
                    let err = x.deadline_error();
                    self.dial_failed(d, err);
                }
                Some((DialState::Pinging, _)) => {
                    self.ping_failed(d, crate::error::PING_TIMED_OUT.into());
                }
                _ => {}
            },
            TimerKey::Stream(s) => {
                let verdict_due = matches!(
                    self.streams.get(s).map(|x| &x.phase),
                    Some(Phase::Handshaking {
                        purpose: Purpose::Verdict { .. },
                        ..
                    })
                );
                let why = if verdict_due {
                    HandshakeError::VerdictTimeout
                } else {
                    HandshakeError::Timeout
                };
                self.fail_handshake(s, why);
            }
            TimerKey::DialRetry(d) => self.retry_dial(d),
            TimerKey::Grace(s) => self.grace_over(s, now),
            TimerKey::Op(op) => self.op_deadline(op),
            TimerKey::Identity(p) => {
                if self.identities.purge_if_expired(&p, now) {
                    self.purged(p, CloseReason::IdentityExpired);
                }
            }
            TimerKey::UsageSweep => self.sweep_unused_identities(now),
        }
    }

    /// Arms the disuse sweep one interval from `now` unless it is armed, off, stopped, or
    /// there is nothing but the node's own identity to look at (so that a core that met
    /// nobody has no deadline).
    pub(super) fn arm_usage_sweep(&mut self, now: Instant) {
        if self.usage_sweep.is_some() || self.stopped || !self.identities.holds_others() {
            return;
        }
        if let Some(every) = self.config.identity_sweep_interval() {
            let at = now + every;
            self.usage_sweep = Some(at);
            self.arm(at, TimerKey::UsageSweep);
        }
    }

    /// Fabric's `periodicalPurgeUnusedIdentities`: purges every identity (the node's own
    /// excepted) unused for `identity_usage_threshold`, then looks again one interval
    /// later while any other identity is held.
    fn sweep_unused_identities(&mut self, now: Instant) {
        self.usage_sweep = None;
        let Some(threshold) = self.config.identity_usage_threshold else {
            return;
        };
        for (pki, last_used) in self.identities.purge_unused(now, threshold) {
            tracing::info!(
                target: "fabric_gossip_core::store",
                pki_id = %pki,
                unused_for_ms = u64::try_from(now.saturating_duration_since(last_used).as_millis())
                    .unwrap_or(u64::MAX),
                "identity purged: unused for the usage threshold"
            );
            self.stats.identities_purged_unused += 1;
            self.purged(pki, CloseReason::IdentityUnused);
        }
        self.arm_usage_sweep(now);
    }

    /// Fabric's `onPurge` for an identity the store let go: closes the peer's
    /// connections (`CloseConn`) and tells the layers (whose certstore forgets it, as
    /// Fabric's `certPuller.Remove`).
    fn purged(&mut self, pki_id: PkiId, reason: CloseReason) {
        self.close_peer(&pki_id, reason.clone());
        self.info_event(super::output::Event::IdentityPurged { pki_id, reason });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: u64) -> Instant {
        Instant::from_unix_secs(s)
    }

    /// Deadlines due at one instant come out in the order they were armed, not in the
    /// order of their keys (so `b`, armed first, before `a`): what fires first does not
    /// depend on which slab slot an object happened to get.
    #[test]
    fn deadlines_come_out_in_time_then_arming_order() {
        let mut timers = Timers::default();
        let a = OpId::from_parts(0, 0);
        let b = OpId::from_parts(1, 0);
        timers.push(t(5), TimerKey::Op(b));
        timers.push(t(3), TimerKey::Op(b));
        timers.push(t(3), TimerKey::Op(a));
        assert_eq!(timers.pop_due(t(2)), None);
        assert_eq!(timers.pop_due(t(4)), Some((t(3), TimerKey::Op(b))));
        assert_eq!(timers.pop_due(t(4)), Some((t(3), TimerKey::Op(a))));
        assert_eq!(timers.pop_due(t(4)), None);
        assert_eq!(timers.pop_due(t(5)), Some((t(5), TimerKey::Op(b))));
    }

    #[test]
    fn retain_drops_what_is_no_longer_valid() {
        let mut timers = Timers::default();
        for i in 0..10 {
            timers.push(t(i), TimerKey::Op(OpId::from_parts(i as u32, 0)));
        }
        timers.retain(|at, _| at >= t(7));
        assert_eq!(timers.len(), 3);
        assert_eq!(timers.peek().map(|(at, _)| at), Some(t(7)));
    }

    /// Arming compacts the heap once it holds more than four entries per live object plus
    /// 64, and not before: every cancelled deadline (a handshake done, an ack come) leaves
    /// a stale entry behind, so without compaction a long-running node's heap grows with
    /// every deadline it ever cancelled, and compacting sooner rescans the heap too often.
    #[test]
    fn the_heap_is_compacted_past_four_entries_per_live_object_plus_64() {
        let now = t(1_700_000_000);
        let security = crate::TestOnlyHmacSecurity::new("127.0.0.1:7050");
        let mut c = Comm::new(crate::Config::default(), security, now).unwrap();
        for remote in ["127.0.0.1:7051", "127.0.0.1:7052"] {
            c.accept_stream(now, remote, None).unwrap();
        }
        // Live: the two handshaking streams and our own identity; valid: the streams'
        // handshake deadlines.
        let bound = 4 * 3 + 64;
        let valid = c.timers.len();
        assert_eq!(valid, 2);
        let stale = TimerKey::Op(OpId::from_parts(7, 0));
        for len in valid + 1..=bound {
            c.arm(now, stale.clone());
            assert_eq!(c.timers.len(), len, "compacted too early");
        }
        c.arm(now, stale);
        assert_eq!(c.timers.len(), valid, "stale entries kept");
    }

    /// `stop` leaves no deadline behind, not even an identity's expiry (identities outlive
    /// the stop): a stopped node's driver is not woken again for nothing.
    #[test]
    fn a_stopped_core_has_no_deadline_left() {
        let now = t(1_700_000_000);
        let remote = "127.0.0.1:7051";
        let expiry = now + core::time::Duration::from_secs(60);
        let security = crate::TestOnlyHmacSecurity::new("127.0.0.1:7050")
            .expiring(bytes::Bytes::from_static(remote.as_bytes()), expiry);
        let mut c = Comm::new(crate::Config::default(), security, now).unwrap();
        let s = c.accept_stream(now, remote, None).unwrap();
        let hello =
            crate::testing::conn_establish(remote.as_bytes(), remote.as_bytes(), b"", false, true);
        c.handle_envelope(now, s, hello).unwrap();
        assert_eq!(c.poll_timeout(), Some(expiry));
        c.stop(now);
        assert!(c.identity_of(&PkiId::from(remote)).is_some());
        assert_eq!(c.poll_timeout(), None);
    }
}
