//! Counters: what Fabric counts, and what this implementation adds so every drop and every
//! refusal is visible.

use crate::error::HandshakeError;

/// Monotonic counters of one core. Cheap to copy; read with [`crate::Comm::stats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Envelopes the driver confirmed written (Fabric `SentMessages`), handshakes excluded.
    pub sent: u64,
    /// Envelopes received on established connections (Fabric `ReceivedMessages`).
    pub received: u64,
    /// Messages dropped because a send buffer was full (Fabric `BufferOverflow`).
    pub dropped_overflow: u64,
    /// Queued messages discarded because their connection closed before they were written.
    pub dropped_on_close: u64,
    /// Messages that waited for a connection attempt which failed.
    pub dropped_no_connection: u64,
    /// Deliveries dropped because a subscription's queue was full past its slack
    /// (a driver that kept reading after `PauseRead`).
    pub dropped_subscription_overflow: u64,
    /// Deliveries discarded because the node stopped before they were polled.
    pub dropped_on_stop: u64,
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
    /// Handshake failures, by reason, indexed like [`HandshakeError::LABELS`].
    pub handshake_failures: [u64; HandshakeError::LABELS.len()],
    /// Inbound probes answered (remote sent `probe: true`).
    pub probed: u64,
    /// Connections registered.
    pub connections_opened: u64,
    /// Connections closed, for any reason.
    pub connections_closed: u64,
    /// Crossing dials detected and resolved by the PKI-ID rule.
    pub crossings: u64,
    /// PresumedDead events emitted.
    pub presumed_dead: u64,
    /// IdentitySwitch events emitted.
    pub identity_switches: u64,
    /// Times reading of a stream was paused because a subscription was full.
    pub read_pauses: u64,
    /// Informational events dropped because the driver did not drain the event queue.
    pub events_dropped: u64,
}

impl Stats {
    pub(crate) fn handshake_failed(&mut self, e: &HandshakeError) {
        let label = e.label();
        if let Some(i) = HandshakeError::LABELS.iter().position(|l| *l == label) {
            self.handshake_failures[i] += 1;
        }
    }

    /// Handshake failures for one reason label (see [`HandshakeError::label`]).
    pub fn handshake_failures_for(&self, label: &str) -> u64 {
        HandshakeError::LABELS
            .iter()
            .position(|l| *l == label)
            .map_or(0, |i| self.handshake_failures[i])
    }

    /// All handshake failures.
    pub fn handshake_failures_total(&self) -> u64 {
        self.handshake_failures.iter().sum()
    }
}
