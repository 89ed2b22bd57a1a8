//! Counters: what Fabric counts, and what this implementation adds so every drop and every
//! refusal is visible.

use crate::error::{HandshakeError, HandshakeFailure};

/// Monotonic counters of one core. Cheap to copy; read with [`crate::Comm::stats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Envelopes the driver confirmed written (Fabric `SentMessages`), handshakes excluded.
    pub sent: u64,
    /// Envelopes received on established connections (Fabric `ReceivedMessages`).
    pub received: u64,
    /// Messages dropped because a send buffer was full, in messages or in bytes
    /// (Fabric `BufferOverflow`).
    pub dropped_overflow: u64,
    /// Queued messages discarded because their connection closed before they were written.
    pub dropped_on_close: u64,
    /// Answers (`respond`, `ack` and their non-waiting forms) given for a connection that
    /// had closed, or closed while the answer waited for room: the caller gets
    /// `ConnectionClosed`, and the answer is lost (a peer that left before its ack, or an
    /// `--auto-ack` node's acks waiting on a peer that stopped reading, then left).
    pub answers_after_close: u64,
    /// Messages handed to the driver to write (inside the write window) and not yet
    /// confirmed written when their connection closed. They may or may not have reached the
    /// peer, so they are not in `dropped_on_close`; without this count they would be in no
    /// counter at all (Fabric loses them so, uncounted).
    pub unconfirmed_on_close: u64,
    /// Messages that waited for a connection attempt which failed (with retries on, at the
    /// end of its `dial_timeout`), or was ended by `stop`, or that no attempt could
    /// be made for: `max_connections` reached, or (for a peer of unknown PKI-ID) another
    /// peer of unknown PKI-ID being dialled.
    pub dropped_no_connection: u64,
    /// Deliveries dropped because a subscription's queue was full past its slack
    /// (a driver that kept reading after `PauseRead`).
    pub dropped_subscription_overflow: u64,
    /// Deliveries discarded because the node stopped before they were polled.
    pub dropped_on_stop: u64,
    /// Deliveries discarded because their subscription ended (`unsubscribe`) before they
    /// were polled.
    pub dropped_on_unsubscribe: u64,
    /// Received messages that no subscription accepted.
    pub unrouted: u64,
    /// Received messages with no content (an empty payload, or a content type this version
    /// does not know), dropped before the subscriptions: nothing could act on one, and
    /// Fabric's gossip layer discards them too.
    pub empty_messages: u64,
    /// Acks received that matched no pending `send_with_ack`.
    pub acks_unmatched: u64,
    /// PresumedDead notifications dropped because the buffer was full of undelivered ones.
    pub presumed_dead_dropped: u64,
    /// Envelopes refused for exceeding `max_message_size`.
    pub oversized: u64,
    /// Envelopes (after the handshake) that failed to decode; each closed its connection.
    pub malformed: u64,
    /// Handshakes that authenticated the remote.
    pub handshakes_ok: u64,
    /// Handshake failures, by reason, indexed by [`HandshakeFailure::index`]. `Debug` prints
    /// them as bare numbers: read them by label with
    /// [`handshake_failures_for`](Self::handshake_failures_for) or all with their kinds with
    /// [`handshake_failures_by_kind`](Self::handshake_failures_by_kind).
    pub handshake_failures: [u64; HandshakeFailure::COUNT],
    /// Inbound probes answered (remote sent `probe: true`).
    pub probed: u64,
    /// Connections registered.
    pub connections_opened: u64,
    /// Connections closed, for any reason.
    pub connections_closed: u64,
    /// Crossing dials detected and resolved by the PKI-ID rule.
    pub crossings: u64,
    /// Connection attempts a dial made again after its previous one failed
    /// ([`Config::dial_backoff`](crate::Config::dial_backoff), grpc-go's reconnect within
    /// Fabric's dial timeout): a count that grows with peers restarting or down.
    pub dial_retries: u64,
    /// PresumedDead events emitted.
    pub presumed_dead: u64,
    /// IdentitySwitch events emitted.
    pub identity_switches: u64,
    /// Identities a layer shared with comm outside a handshake (`Comm::learn_identity`:
    /// alive messages, the identity pull) that comm did not hold yet.
    pub identities_shared: u64,
    /// Identities the identity store let go, full
    /// ([`Config::identity_store_capacity`](crate::Config::identity_store_capacity)), to
    /// make room for a newer one: the one held longest with no connection. A peer whose
    /// identity went and that comes back with a renewed certificate is refused where it
    /// would have been an identity switch.
    pub identities_evicted: u64,
    /// Identities purged because nothing used them for
    /// [`Config::identity_usage_threshold`](crate::Config::identity_usage_threshold)
    /// (Fabric's identity mapper usage purge); each closed its connections, if any, with
    /// [`CloseReason::IdentityUnused`](crate::CloseReason::IdentityUnused). A peer purged
    /// so that comes back is handshaken, and its identity stored, anew.
    pub identities_purged_unused: u64,
    /// Times reading of a stream was paused because a subscription was full.
    pub read_pauses: u64,
    /// Retired connections closed while reading them was still paused, because the peer's
    /// connection was replaced again (at most one retired connection per peer waits for
    /// its reader): what they held unread is discarded, and their stream ends with an
    /// error status.
    pub retired_closed_unread: u64,
    /// Informational events dropped because the driver did not drain the event queue.
    pub events_dropped: u64,
}

impl Stats {
    pub(crate) fn handshake_failed(&mut self, e: &HandshakeError) {
        self.handshake_failures[e.kind().index()] += 1;
    }

    /// Handshake failures of one kind.
    pub fn handshake_failures_of(&self, kind: HandshakeFailure) -> u64 {
        self.handshake_failures[kind.index()]
    }

    /// Handshake failures for one reason label (see [`HandshakeError::label`]); 0 for a
    /// label that names no kind.
    pub fn handshake_failures_for(&self, label: &str) -> u64 {
        HandshakeFailure::from_label(label).map_or(0, |k| self.handshake_failures_of(k))
    }

    /// All handshake failures.
    pub fn handshake_failures_total(&self) -> u64 {
        self.handshake_failures.iter().sum()
    }

    /// Every handshake failure kind with its count, in counter order.
    pub fn handshake_failures_by_kind(&self) -> impl Iterator<Item = (HandshakeFailure, u64)> + '_ {
        HandshakeFailure::ALL
            .into_iter()
            .map(|k| (k, self.handshake_failures_of(k)))
    }

    /// Adds `other`'s counters to these: totals over several nodes.
    pub fn merge(&mut self, other: &Stats) {
        let mut other = other.clone();
        let (theirs, their_failures) = other.fields_mut();
        let (ours, our_failures) = self.fields_mut();
        for ((_, total), (_, n)) in ours.into_iter().zip(theirs) {
            *total += *n;
        }
        for (total, n) in our_failures.iter_mut().zip(their_failures.iter()) {
            *total += n;
        }
    }

    /// Every plain counter by field name, in declaration order (the handshake failures
    /// are [`Stats::handshake_failures_by_kind`]): for metrics exports and summaries.
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        let mut copy = self.clone();
        let (fields, _) = copy.fields_mut();
        fields.into_iter().map(|(name, v)| (name, *v)).collect()
    }

    /// The one list of the counters. Destructured, so a new field fails to compile here
    /// until `merge` and `counters` know it.
    #[allow(clippy::type_complexity)]
    fn fields_mut(
        &mut self,
    ) -> (
        [(&'static str, &mut u64); 30],
        &mut [u64; HandshakeFailure::COUNT],
    ) {
        let Stats {
            sent,
            received,
            dropped_overflow,
            dropped_on_close,
            answers_after_close,
            unconfirmed_on_close,
            dropped_no_connection,
            dropped_subscription_overflow,
            dropped_on_stop,
            dropped_on_unsubscribe,
            unrouted,
            empty_messages,
            acks_unmatched,
            presumed_dead_dropped,
            oversized,
            malformed,
            handshakes_ok,
            handshake_failures,
            probed,
            connections_opened,
            connections_closed,
            crossings,
            dial_retries,
            presumed_dead,
            identity_switches,
            identities_shared,
            identities_evicted,
            identities_purged_unused,
            read_pauses,
            retired_closed_unread,
            events_dropped,
        } = self;
        (
            [
                ("sent", sent),
                ("received", received),
                ("dropped_overflow", dropped_overflow),
                ("dropped_on_close", dropped_on_close),
                ("answers_after_close", answers_after_close),
                ("unconfirmed_on_close", unconfirmed_on_close),
                ("dropped_no_connection", dropped_no_connection),
                (
                    "dropped_subscription_overflow",
                    dropped_subscription_overflow,
                ),
                ("dropped_on_stop", dropped_on_stop),
                ("dropped_on_unsubscribe", dropped_on_unsubscribe),
                ("unrouted", unrouted),
                ("empty_messages", empty_messages),
                ("acks_unmatched", acks_unmatched),
                ("presumed_dead_dropped", presumed_dead_dropped),
                ("oversized", oversized),
                ("malformed", malformed),
                ("handshakes_ok", handshakes_ok),
                ("probed", probed),
                ("connections_opened", connections_opened),
                ("connections_closed", connections_closed),
                ("crossings", crossings),
                ("dial_retries", dial_retries),
                ("presumed_dead", presumed_dead),
                ("identity_switches", identity_switches),
                ("identities_shared", identities_shared),
                ("identities_evicted", identities_evicted),
                ("identities_purged_unused", identities_purged_unused),
                ("read_pauses", read_pauses),
                ("retired_closed_unread", retired_closed_unread),
                ("events_dropped", events_dropped),
            ],
            handshake_failures,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_own_slot_and_label() {
        for (i, k) in HandshakeFailure::ALL.into_iter().enumerate() {
            assert_eq!(k.index(), i);
            assert_eq!(HandshakeError::LABELS[i], k.label());
            assert_eq!(HandshakeFailure::from_label(k.label()), Some(k));
        }
        let labels: std::collections::BTreeSet<_> = HandshakeError::LABELS.into_iter().collect();
        assert_eq!(labels.len(), HandshakeFailure::COUNT, "labels are distinct");
    }

    #[test]
    fn counting_uses_the_kind() {
        let mut s = Stats::default();
        let e = HandshakeError::IdentityTooLarge { size: 9, limit: 1 };
        s.handshake_failed(&e);
        s.handshake_failed(&HandshakeError::Timeout);
        assert_eq!(
            s.handshake_failures_of(HandshakeFailure::IdentityTooLarge),
            1
        );
        assert_eq!(s.handshake_failures_for("identity_too_large"), 1);
        assert_eq!(s.handshake_failures_for("no_such_label"), 0);
        assert_eq!(s.handshake_failures_total(), 2);
        let listed: Vec<_> = s.handshake_failures_by_kind().collect();
        assert_eq!(
            listed.len(),
            HandshakeFailure::COUNT,
            "every kind, counted or not"
        );
        assert!(listed.contains(&(HandshakeFailure::Timeout, 1)));
        assert_eq!(listed.iter().map(|(_, n)| n).sum::<u64>(), 2);
    }

    #[test]
    fn counters_name_every_field() {
        let s = Stats {
            sent: 3,
            events_dropped: 4,
            ..Stats::default()
        };
        let c = s.counters();
        assert_eq!(c.first(), Some(&("sent", 3)));
        assert_eq!(c.last(), Some(&("events_dropped", 4)));
        assert_eq!(c.iter().map(|(_, v)| v).sum::<u64>(), 7);
    }

    #[test]
    fn merge_adds_every_counter() {
        let mut a = Stats {
            sent: 1,
            events_dropped: 2,
            ..Stats::default()
        };
        a.handshake_failed(&HandshakeError::IdentityTooLarge { size: 9, limit: 1 });
        let mut b = a.clone();
        b.received = 5;
        b.handshake_failed(&HandshakeError::Evicted);
        a.merge(&b);
        assert_eq!(a.sent, 2);
        assert_eq!(a.received, 5);
        assert_eq!(a.events_dropped, 4);
        assert_eq!(
            a.handshake_failures_of(HandshakeFailure::IdentityTooLarge),
            2
        );
        assert_eq!(a.handshake_failures_of(HandshakeFailure::Evicted), 1);
        assert_eq!(a.handshake_failures_total(), 3);
    }
}
