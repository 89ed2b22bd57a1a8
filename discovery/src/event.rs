//! What the membership layer tells the application.

use crate::alive::Timestamp;
use crate::error::BootstrapError;
use crate::store::MemberState;
use fabric_gossip_core::{Instant, PkiId};

/// One member as the application sees it (a row of `watch`'s table).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    /// Its PKI-ID.
    pub pki_id: PkiId,
    /// Its external endpoint (`Member.endpoint`), `""` if none.
    pub endpoint: String,
    /// Its internal endpoint (from the secret; only known within the organization).
    pub internal_endpoint: String,
    /// Its MSP ID, if its identity is known and its organization resolvable. The
    /// organization is whatever the security provider reports: Fabric's test provider
    /// (`TestOnlyHmacSecurity`) puts every identity in one empty organization, so there
    /// it is `Some("")`, not `None`.
    pub org: Option<String>,
    /// Its latest timestamp.
    pub timestamp: Timestamp,
    /// When we last received a strictly newer alive message from it.
    pub last_seen: Instant,
    /// Alive or dead.
    pub alive: bool,
    /// The first instant at which its identity (certificate) is expired, if the security
    /// provider gives one: the layer purges the member then (`identity_expired`), as Fabric
    /// 2.5.11 does. Shown so that an operator sees a renewal due before members vanish.
    pub identity_expires: Option<Instant>,
}

impl MemberInfo {
    pub(crate) fn from_state(pki_id: &PkiId, m: &MemberState) -> Self {
        MemberInfo {
            pki_id: pki_id.clone(),
            endpoint: m.endpoint.clone(),
            internal_endpoint: m.internal_endpoint.clone(),
            org: m
                .org
                .as_ref()
                .map(|o| String::from_utf8_lossy(o).into_owned()),
            timestamp: m.ts,
            last_seen: m.last_seen,
            alive: m.alive,
            identity_expires: m.expires,
        }
    }

    /// Where to reach it: internal endpoint if known, else external (`PreferredEndpoint`).
    pub fn preferred_endpoint(&self) -> &str {
        preferred(&self.endpoint, &self.internal_endpoint)
    }
}

/// Fabric's `PreferredEndpoint`: the internal endpoint if there is one, else the external.
/// The one rule behind every member's and alive message's preferred endpoint here.
pub(crate) fn preferred<'a>(endpoint: &'a str, internal_endpoint: &'a str) -> &'a str {
    if internal_endpoint.is_empty() {
        endpoint
    } else {
        internal_endpoint
    }
}

/// Why a member was declared dead.
///
/// Non-exhaustive, like the core's events: a reason Fabric (or this layer) adds later must
/// not break every application's `match`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeadReason {
    /// No strictly newer alive message for more than `alive_expiration`.
    Expired,
    /// Comm could not reach it (Fabric's PresumedDead): a dial or a send failed.
    PresumedDead,
    /// Unknown to us until a peer's membership response listed it among the dead. Fabric
    /// learns such members silently; the event is ours, so that whoever follows the events
    /// (`fabric-gossip watch --changes`) sees every member the table lists.
    Reported,
}

/// Why a member was forgotten altogether. Non-exhaustive: `Evicted` and `IdentityRefused`
/// came after the first release, and more may.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PurgeReason {
    /// Dead for longer than the alive-message TTL (500 s by default).
    LongDead,
    /// Comm found a new identity of the same organization at its endpoint.
    IdentitySwitch,
    /// Its certificate expired (Fabric fixed this only in 2.5.11 / 3.1.0).
    IdentityExpired,
    /// Comm closed its connection because its identity no longer validates
    /// ([`Comm::revalidate_identities`](fabric_gossip_core::Comm::revalidate_identities):
    /// a revoked certificate, an MSP no longer trusted).
    IdentityRefused,
    /// Membership was full and a member of our own organization, or of an organization
    /// with a smaller share of it, arrived: a member of the organization with the largest
    /// share it may displace (the one dead longest, else heard from least recently) made
    /// room (`DiscoveryStats::members_evicted`).
    Evicted,
}

/// A change in membership, or news of a bootstrap peer. Non-exhaustive, so that a new kind
/// of news breaks no application's `match`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DiscoveryEvent {
    /// A member became alive: newly learned, or resurrected by a newer timestamp.
    MemberAlive {
        /// The member.
        member: MemberInfo,
        /// True if it was known dead before.
        resurrected: bool,
    },
    /// An alive member came back with a newer incarnation before it was declared dead: it
    /// restarted within `alive_expiration`, which no other event shows (a rolling restart
    /// had left a day-2 trial's change log empty).
    MemberRestarted {
        /// The member, with its new incarnation.
        member: MemberInfo,
        /// The incarnation it had before.
        previous_incarnation: u64,
    },
    /// A member became dead in our view: an alive member was declared dead (its connection
    /// was closed), or a member we did not know was listed dead by a peer's membership
    /// response ([`DeadReason::Reported`]).
    MemberDead {
        /// The member.
        member: MemberInfo,
        /// Why.
        reason: DeadReason,
    },
    /// A member was removed from every map.
    MemberPurged {
        /// The member as last known.
        member: MemberInfo,
        /// Why.
        reason: PurgeReason,
    },
    /// A bootstrap peer answered our membership request.
    BootstrapJoined {
        /// The configured endpoint.
        endpoint: String,
        /// The PKI-ID it proved.
        pki_id: PkiId,
    },
    /// An attempt to join through a bootstrap peer failed (it will be retried unless
    /// `gave_up`).
    BootstrapFailed {
        /// The configured endpoint.
        endpoint: String,
        /// Why (its text has the remote's own reason when it gave one).
        error: BootstrapError,
        /// Attempts so far.
        attempt: u32,
        /// No more attempts will be made (`max_connection_attempts` reached).
        gave_up: bool,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Members of the organization are reached where the organization's secret says;
    /// others where they announce themselves.
    #[test]
    fn a_member_is_reached_at_its_internal_endpoint_if_known() {
        let mut m = MemberInfo {
            pki_id: PkiId::from("p"),
            endpoint: "peer0.org1:7051".into(),
            internal_endpoint: String::new(),
            org: None,
            timestamp: Timestamp::default(),
            last_seen: Instant::from_unix_secs(1),
            alive: true,
            identity_expires: None,
        };
        assert_eq!(m.preferred_endpoint(), "peer0.org1:7051");
        m.internal_endpoint = "10.0.0.7:7051".into();
        assert_eq!(m.preferred_endpoint(), "10.0.0.7:7051");
    }
}
