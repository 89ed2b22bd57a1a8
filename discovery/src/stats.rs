//! Counters of everything the membership layer did or refused.

use crate::certstore::CertStoreStats;
use crate::error::AliveError;
use crate::event::PurgeReason;
#[cfg(doc)]
use crate::{
    ANSWER_BURST, MAX_BOOTSTRAPS, MAX_ENDPOINT_OWNERS, MAX_RECONNECT_PROBES, MAX_RESPONSE_FAILURES,
    MIN_ANSWER_INTERVAL, MISDIRECTED_DIALS, STORE_ENTRIES_PER_MEMBER,
};

/// Counters, monotonically increasing. Every refused input is counted under one reason,
/// so an operator can tell a replay from a forgery from a misconfigured peer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DiscoveryStats {
    /// Alive messages received directly (gossip).
    pub alive_received: u64,
    /// Alive messages (direct, or in requests and responses) dropped by the message
    /// store: a copy of, or older than, the last direct one from the same member
    /// (replays, gossip loops).
    pub alive_duplicate: u64,
    /// Alive messages (any path) that were valid but not newer than what membership knows.
    pub alive_stale: u64,
    /// Alive messages (any path, valid) refused because the endpoint they would be dialled
    /// at is, for now, another member's: a dial of ours there reached that one instead;
    /// or because [`MISDIRECTED_DIALS`] dials of their member reached others within a
    /// hold, whatever endpoint they name (see `Discovery`'s endpoint owners; logged as a
    /// warning, one a second).
    pub alive_endpoint_taken: u64,
    /// Dials that reached another member but whose endpoint or member was not noted (see
    /// `alive_endpoint_taken`): the notes held [`MAX_ENDPOINT_OWNERS`] unexpired ones.
    pub endpoint_owners_full: u64,
    /// Calls of `connect_anchor` ignored: [`MAX_BOOTSTRAPS`] bootstrap and anchor
    /// endpoints were followed, none of them an anchor whose attempt had ended.
    pub anchors_refused: u64,
    /// Valid direct alive messages of peers that are not members (membership is full)
    /// neither stored nor forwarded: the message store held its bound of entries
    /// ([`STORE_ENTRIES_PER_MEMBER`] × `max_members`).
    pub alive_store_full: u64,
    /// Members purged without a tombstone in the message store, which held its bound of
    /// entries: another peer's response may teach such a member again (as a dead one).
    pub tombstones_store_full: u64,
    /// Alive messages refused as malformed (undecodable, not alive, missing fields, unsigned).
    pub alive_malformed: u64,
    /// Alive messages refused because no identity is known for their PKI-ID.
    pub alive_unknown_identity: u64,
    /// Alive messages refused because their embedded identity is invalid, mismatched or expired.
    pub alive_bad_identity: u64,
    /// Alive messages refused because a signature does not verify (forgeries).
    pub alive_bad_signature: u64,
    /// Alive messages about ourselves (dropped; a different endpoint means a second node
    /// runs with our identity: `alive_impostors`): direct, in requests, and entries of
    /// responses (a response lists us as a rule; an entry there is verified, and judged,
    /// only when it names another endpoint than ours, and only in the alive list, as
    /// Fabric judges it).
    pub alive_about_me: u64,
    /// Of `alive_about_me`, those carrying another external endpoint than ours, or
    /// another internal endpoint in their secret: another node runs with our identity
    /// (Fabric's `isSentByMe` logs "Bad configuration detected"; logged at error level,
    /// at most once a second). Our own heartbeats echoed back are not counted here.
    pub alive_impostors: u64,
    /// Messages on our subscription with an illegal tag (not EMPTY).
    pub illegal_tag: u64,
    /// Our heartbeats sent (one per recipient).
    pub alive_sent: u64,
    /// Alive messages of others forwarded (one per recipient).
    pub alive_forwarded: u64,
    /// Membership requests sent (bootstrap, sync, reconnect).
    pub requests_sent: u64,
    /// Membership requests received.
    pub requests_received: u64,
    /// Requests whose `self_information` names another PKI-ID than the connection's.
    pub requests_spoofed: u64,
    /// Requests whose `self_information` is malformed or invalid.
    pub requests_invalid: u64,
    /// Requests refused by the disclosure policy (connection closed, no response).
    pub requests_refused: u64,
    /// Requests dropped unread because their sender had the same one (its nonce)
    /// answered less than [`MIN_ANSWER_INTERVAL`] before, or had drawn every answer its
    /// bucket held ([`ANSWER_BURST`], refilled one per
    /// [`DiscoveryConfig::answer_refill`](crate::DiscoveryConfig::answer_refill)).
    pub requests_throttled: u64,
    /// Membership responses sent.
    pub responses_sent: u64,
    /// Of `responses_sent`, those that went to the requester other than on the
    /// connection its request came on, which had closed before we answered: over the
    /// connection to it there was then (a crossing dial replaced the first, or it
    /// reconnected), or over one dialled to the endpoint its request's alive message
    /// prefers (Fabric's `SendToPeer`). Until 2026-12-06 such an answer was dropped.
    pub responses_rerouted: u64,
    /// Membership responses dropped because the send buffer they went to was full (the
    /// requester reads slower than it asks; comm counts them in `dropped_overflow` too),
    /// or because, its request's connection closed, there was no connection to the
    /// requester to be had (`max_connections` reached, no endpoint to dial; comm counts
    /// them in `dropped_no_connection`). An answer handed to a dial that then fails is
    /// counted sent here and dropped by comm (`dropped_no_connection`).
    pub responses_dropped: u64,
    /// Membership responses dropped because requesters that had not taken theirs held
    /// `max_response_backlog` (none of them long enough to be closed).
    pub responses_over_backlog: u64,
    /// Connections closed because their requester had not taken its membership response
    /// for [`RESPONSE_STALL`](crate::RESPONSE_STALL) while others needed the room.
    pub stalled_requesters_closed: u64,
    /// Membership responses received.
    pub responses_received: u64,
    /// Responses whose processing stopped: at an undecodable entry, or an entry of the
    /// alive list that is not an alive message (an empty payload is an empty message),
    /// where Fabric abandons the rest (quirk Q3), or once [`MAX_RESPONSE_FAILURES`] of their entries failed verification (a
    /// peer relays only alive messages it verified, so such a response is hostile, and
    /// each failure cost a signature or chain check under the node's lock).
    pub responses_aborted: u64,
    /// Entries of a response skipped because an entry for the same member came earlier
    /// in it (a response lists each member once; a repeated entry would cost another
    /// verification).
    pub response_entries_repeated: u64,
    /// Responses we sent without some members because the whole would have exceeded the
    /// message size limit (and been dropped by comm).
    pub responses_truncated: u64,
    /// Alive messages refused for their size ([`AliveError::TooLarge`]).
    pub alive_too_large: u64,
    /// Members learned (alive or dead).
    pub members_learned: u64,
    /// Dead members that came back with a newer incarnation or sequence.
    pub members_resurrected: u64,
    /// Alive members declared dead after `alive_expiration` of silence.
    pub members_expired: u64,
    /// Alive members declared dead because comm presumed them dead.
    pub members_presumed_dead: u64,
    /// Members removed from every map, for any reason; the fields after it say which
    /// (an operator alerts on expired or refused identities, not on the long dead).
    pub members_purged: u64,
    /// Members purged after being dead longer than the alive-message TTL
    /// ([`PurgeReason::LongDead`]).
    pub members_purged_long_dead: u64,
    /// Members purged because comm found a new identity at their endpoint
    /// ([`PurgeReason::IdentitySwitch`]).
    pub members_purged_identity_switch: u64,
    /// Members purged because their certificate expired ([`PurgeReason::IdentityExpired`]).
    pub members_purged_identity_expired: u64,
    /// Members purged because their identity no longer validates: revoked, or of an MSP no
    /// longer trusted ([`PurgeReason::IdentityRefused`]).
    pub members_purged_identity_refused: u64,
    /// New members refused because `max_members` is reached.
    pub members_refused_full: u64,
    /// Members purged to make room in a full membership for a newcomer of ours or of an
    /// organization with a smaller share (`PurgeReason::Evicted`).
    pub members_evicted: u64,
    /// Probes sent to dead members.
    pub reconnect_probes: u64,
    /// Dead members a reconnect pass left for a later one ([`MAX_RECONNECT_PROBES`]).
    pub reconnect_deferred: u64,
    /// Bootstrap peers that answered our request.
    pub bootstrap_acked: u64,
    /// Failed attempts to identify or reach a bootstrap peer.
    pub bootstrap_failures: u64,
    /// Calls into comm that it refused (stopped, limits, a connection closed under an
    /// answer of the identity pull), and our own messages the security provider would
    /// not sign (then nothing is sent: no heartbeat, request or response). Each is logged
    /// with its cause: a refusal at debug (`gossip.discovery=debug`), a signature that
    /// failed as a warning.
    pub comm_errors: u64,
    /// Events dropped because the application did not drain them.
    pub events_dropped: u64,
    /// The identity pull's counters.
    pub certstore: CertStoreStats,
}

impl DiscoveryStats {
    /// Counts one refused alive message under its reason.
    pub(crate) fn count_refused(&mut self, e: &AliveError) {
        tracing::debug!(error = %e, "alive message refused");
        match e {
            AliveError::Unsigned
            | AliveError::Undecodable(_)
            | AliveError::NotAlive
            | AliveError::MissingField(_) => self.alive_malformed += 1,
            AliveError::UnknownIdentity => self.alive_unknown_identity += 1,
            AliveError::BadIdentity(_)
            | AliveError::IdentityMismatch
            | AliveError::IdentityExpired => self.alive_bad_identity += 1,
            AliveError::BadSignature(_) => self.alive_bad_signature += 1,
            AliveError::TooLarge { .. } => self.alive_too_large += 1,
        }
    }

    /// Counts a call into comm that comm refused (`comm_errors`) and logs which call and
    /// why at debug: a live soak saw the counter at 2 with nothing to tell what it was.
    pub(crate) fn comm_refused(&mut self, call: &'static str, error: &dyn std::fmt::Display) {
        self.comm_errors += 1;
        tracing::debug!(call, %error, "comm refused a call of the membership layer");
    }

    /// Counts a message of ours the security provider would not sign (`comm_errors`): then
    /// nothing is sent, so it is logged as a warning, as Fabric warns "Failed creating
    /// alive message".
    pub(crate) fn cannot_sign(&mut self, what: &'static str, error: &dyn std::fmt::Display) {
        self.comm_errors += 1;
        tracing::warn!(what, %error, "could not sign our own message; nothing sent");
    }

    /// Counts one purge under `members_purged` and its reason's counter.
    pub(crate) fn count_purge(&mut self, reason: PurgeReason) {
        self.members_purged += 1;
        match reason {
            PurgeReason::LongDead => self.members_purged_long_dead += 1,
            PurgeReason::IdentitySwitch => self.members_purged_identity_switch += 1,
            PurgeReason::IdentityExpired => self.members_purged_identity_expired += 1,
            PurgeReason::IdentityRefused => self.members_purged_identity_refused += 1,
            PurgeReason::Evicted => self.members_evicted += 1,
        }
    }

    /// Every alive message refused for any reason (malformed, identity, signature).
    pub fn alive_refused(&self) -> u64 {
        self.alive_malformed
            + self.alive_unknown_identity
            + self.alive_bad_identity
            + self.alive_bad_signature
            + self.alive_too_large
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fabric_gossip_core::{HandshakeError, SecurityError};

    #[test]
    fn each_refusal_has_one_counter() {
        let mut s = DiscoveryStats::default();
        s.count_refused(&AliveError::NotAlive);
        s.count_refused(&AliveError::MissingField("timestamp"));
        s.count_refused(&AliveError::UnknownIdentity);
        s.count_refused(&AliveError::IdentityMismatch);
        s.count_refused(&AliveError::BadIdentity(SecurityError::HighS));
        s.count_refused(&AliveError::BadSignature(HandshakeError::Unsigned));
        s.count_refused(&AliveError::TooLarge {
            what: "metadata",
            size: 5000,
            max: 4096,
        });
        assert_eq!(s.alive_malformed, 2);
        assert_eq!(s.alive_unknown_identity, 1);
        assert_eq!(s.alive_bad_identity, 2);
        assert_eq!(s.alive_bad_signature, 1);
        assert_eq!(s.alive_too_large, 1);
        assert_eq!(s.alive_refused(), 7);
    }

    #[test]
    fn each_purge_is_counted_under_its_reason_and_in_the_total() {
        let mut s = DiscoveryStats::default();
        for reason in [
            PurgeReason::LongDead,
            PurgeReason::LongDead,
            PurgeReason::IdentitySwitch,
            PurgeReason::IdentityExpired,
            PurgeReason::IdentityRefused,
            PurgeReason::Evicted,
        ] {
            s.count_purge(reason);
        }
        assert_eq!(s.members_purged, 6);
        assert_eq!(s.members_purged_long_dead, 2);
        assert_eq!(s.members_purged_identity_switch, 1);
        assert_eq!(s.members_purged_identity_expired, 1);
        assert_eq!(s.members_purged_identity_refused, 1);
        assert_eq!(s.members_evicted, 1);
    }
}
