//! Endpoints where a dial of ours authenticated another member than the one it was for:
//! for a while, no other member may claim them.
//!
//! Any member may put any endpoint in its signed alive message. One of another peer's
//! (a misconfiguration: two peers behind one address; or an insider's doing) makes
//! every node that dials it reach that peer instead: within an organization, an identity
//! switch, which purges the claimant, whose next alive message teaches it again, to be
//! dialled again. Fabric loops so for as long as the claim stands; an insider sending 200
//! alive messages a second made every other node of ours dial the victim, switch and
//! replace its connection for each one, 8.2 s of the victim's CPU in 20 s (an attack,
//! 2026-12-07). Here the endpoint is noted as the one that answered's, and an alive
//! message of any other member claiming it to be dialled (its preferred endpoint) is
//! refused meanwhile (`alive_endpoint_taken`, a warning a second): one dial per hold
//! instead of one per message.
//!
//! A note is authenticated truth: the owner answered at that endpoint. It lasts one
//! `alive_expiration` from the last time a dial of ours reached the owner there, so a
//! peer that leaves the endpoint frees it soon. A peer renewing its identity behind the
//! same endpoint is no case of it: the dial expecting the old PKI-ID answers with the
//! new, which is noted as the owner, and the old one's stale messages are refused.
//!
//! A dial that reached this node itself is one of them (its endpoint is ours): otherwise
//! the victim of such a claim dialled itself for each alive message naming it.
//!
//! An endpoint is noted as the string dialled, and many strings reach one server: a
//! port's leading zeros, a name's capitals or trailing dot, any `127.x.y.z` for one bound
//! on `0.0.0.0`, an IPv4-mapped IPv6 address, a second DNS name (all tried on loopback,
//! 2026-12-07). An insider naming the victim a new way in each alive message was dialled
//! for each as before (120 switches a node in 120 s in the simulator). So the member a
//! dial was for is counted too: one whose dials reached another member
//! [`MISDIRECTED_DIALS`] times within a hold is refused whatever endpoint it names, until
//! one `alive_expiration` after the last. Once is a peer that moved, its old address now
//! another's: its next alive message names the new one and is dialled at once.

use crate::machine::Discovery;
use crate::store::Map;
use crate::validate::ParsedAlive;
use fabric_gossip_core::{Instant, PkiId};

/// Endpoints noted at once, at most: each note comes from one of our own dials that
/// reached someone unexpected, so they are few; past this, expired notes go first, then
/// a new one is not kept (its endpoint's claimants are dialled as before, as in Fabric).
pub const MAX_ENDPOINT_OWNERS: usize = 1024;

/// Dials of one member that reached another member, within one `alive_expiration` of
/// each other, after which its alive messages are refused whatever endpoint they name.
/// One is a peer that moved (its old address now another's), which must be dialled at
/// its new one at once; a second so soon is a member naming others' endpoints.
pub const MISDIRECTED_DIALS: u32 = 2;

/// Who answered at an endpoint, until when that holds.
#[derive(Clone, Debug)]
struct Owner {
    pki_id: PkiId,
    until: Instant,
}

/// How many dials of a member reached another member, the last hold ending at `until`.
#[derive(Clone, Debug)]
struct Misdirected {
    dials: u32,
    until: Instant,
}

/// The endpoints noted, and the members whose dials reached others (see the module's
/// docs). Keyed with the fixed seed of [`Map`]: each entry comes from a dial of ours that
/// reached an authenticated peer, at most [`MAX_ENDPOINT_OWNERS`] of each, so colliding
/// keys would buy an attacker little.
#[derive(Clone, Debug, Default)]
pub(crate) struct EndpointOwners {
    owners: Map<String, Owner>,
    claimants: Map<PkiId, Misdirected>,
}

/// Why a member's claim is refused for now.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal<'a> {
    /// The endpoint answered a dial of ours as this other member.
    Taken(&'a PkiId),
    /// [`MISDIRECTED_DIALS`] dials of the member reached others within a hold.
    Misdirecting,
}

impl EndpointOwners {
    /// Notes that `pki_id` answered a dial of ours at `endpoint`, expecting another
    /// member, holding until `until`. Whether it was kept (false: the notes are full).
    pub(crate) fn note(
        &mut self,
        endpoint: &str,
        pki_id: &PkiId,
        now: Instant,
        until: Instant,
    ) -> bool {
        if let Some(owner) = self.owners.get_mut(endpoint) {
            *owner = Owner {
                pki_id: pki_id.clone(),
                until,
            };
            return true;
        }
        if self.owners.len() >= MAX_ENDPOINT_OWNERS {
            self.owners.retain(|_, o| now < o.until);
            if self.owners.len() >= MAX_ENDPOINT_OWNERS {
                return false;
            }
        }
        self.owners.insert(
            endpoint.to_owned(),
            Owner {
                pki_id: pki_id.clone(),
                until,
            },
        );
        true
    }

    /// A dial of ours for `claimant` reached another member: one more within a hold that
    /// lasts until `until`. Whether it was kept (false: the notes are full).
    pub(crate) fn misdirected(&mut self, claimant: &PkiId, now: Instant, until: Instant) -> bool {
        if let Some(m) = self.claimants.get_mut(claimant) {
            let dials = if now < m.until {
                m.dials.saturating_add(1)
            } else {
                1
            };
            *m = Misdirected { dials, until };
            return true;
        }
        if self.claimants.len() >= MAX_ENDPOINT_OWNERS {
            self.claimants.retain(|_, m| now < m.until);
            if self.claimants.len() >= MAX_ENDPOINT_OWNERS {
                return false;
            }
        }
        self.claimants
            .insert(claimant.clone(), Misdirected { dials: 1, until });
        true
    }

    /// Whether `claimant`'s claim to be dialled at `endpoint` is refused at `now`, and why.
    pub(crate) fn refusal(
        &self,
        endpoint: &str,
        claimant: &PkiId,
        now: Instant,
    ) -> Option<Refusal<'_>> {
        if self
            .claimants
            .get(claimant)
            .is_some_and(|m| now < m.until && m.dials >= MISDIRECTED_DIALS)
        {
            return Some(Refusal::Misdirecting);
        }
        self.other_owner(endpoint, claimant, now)
            .map(Refusal::Taken)
    }

    /// A dial of ours reached `pki_id` at `endpoint`: if it is that endpoint's noted
    /// owner, the note holds until `until`.
    pub(crate) fn reached(&mut self, endpoint: &str, pki_id: &PkiId, until: Instant) {
        if let Some(owner) = self.owners.get_mut(endpoint)
            && owner.pki_id == *pki_id
        {
            owner.until = owner.until.max(until);
        }
    }

    /// The member `endpoint` is noted as belonging to at `now`, if it is not `claimant`.
    fn other_owner(&self, endpoint: &str, claimant: &PkiId, now: Instant) -> Option<&PkiId> {
        let owner = self.owners.get(endpoint)?;
        (now < owner.until && owner.pki_id != *claimant).then_some(&owner.pki_id)
    }

    /// Endpoints noted, expired ones included until a full set drops them.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.owners.len()
    }

    /// Members noted as misdirecting dials, expired ones included until a full set
    /// drops them.
    #[cfg(test)]
    pub(crate) fn claimants(&self) -> usize {
        self.claimants.len()
    }
}

impl Discovery {
    /// A dial of ours for `expected` at `endpoint` reached `owner`: the endpoint is
    /// `owner`'s for one `alive_expiration`, and `expected` has one more misdirected dial
    /// (`endpoint_owners_full` counts an event either note of which was not kept).
    pub(crate) fn note_endpoint_owner(
        &mut self,
        now: Instant,
        endpoint: &str,
        owner: &PkiId,
        expected: &PkiId,
    ) {
        let until = now + self.cfg.alive_expiration;
        let counted = self.endpoint_owners.misdirected(expected, now, until);
        let noted = self.endpoint_owners.note(endpoint, owner, now, until);
        if !(counted && noted) {
            self.stats.endpoint_owners_full += 1;
        }
        tracing::debug!(
            target: "fabric_gossip_discovery::endpoint_owners",
            %endpoint,
            %owner,
            %expected,
            noted = counted && noted,
            "an endpoint answered as another member: others' claims to it refused for now"
        );
    }

    /// Whether the endpoint a valid alive message would be dialled at is, for now,
    /// another member's, or its member's dials reached others [`MISDIRECTED_DIALS`]
    /// times within a hold: then it is refused (`alive_endpoint_taken`) and a warning
    /// says so, one a second. Two peers behind one address, or an insider naming
    /// another's.
    pub(crate) fn endpoint_taken(&mut self, now: Instant, parsed: &ParsedAlive) -> bool {
        let endpoint = parsed.preferred_endpoint();
        let Some(refusal) = self.endpoint_owners.refusal(endpoint, &parsed.pki_id, now) else {
            return false;
        };
        self.stats.alive_endpoint_taken += 1;
        if let Some(not_logged) = self.claim_log.admit(now) {
            self.claim_lines += 1;
            match refusal {
                Refusal::Taken(owner) if self.me.as_ref().is_some_and(|me| me.pki_id == *owner) => {
                    tracing::warn!(
                        target: "fabric_gossip_discovery::endpoint_owners",
                        pki_id = %parsed.pki_id,
                        %endpoint,
                        not_logged,
                        "alive message refused: its endpoint is this node's (our dial of it \
                         reached ourselves): a claim to our endpoint"
                    )
                }
                Refusal::Taken(owner) => tracing::warn!(
                    target: "fabric_gossip_discovery::endpoint_owners",
                    pki_id = %parsed.pki_id,
                    %endpoint,
                    answered_as = %owner,
                    not_logged,
                    "alive message refused: its endpoint answered our dial as another member \
                     (two peers behind one address, or a claim to another's)"
                ),
                Refusal::Misdirecting => tracing::warn!(
                    target: "fabric_gossip_discovery::endpoint_owners",
                    pki_id = %parsed.pki_id,
                    %endpoint,
                    not_logged,
                    "alive message refused: our dials of this member reached other members \
                     twice in a short time (endpoints claimed from others, written \
                     differently each time); refused whatever endpoint it names, for now"
                ),
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::time::Duration;

    fn id(s: &str) -> PkiId {
        PkiId::new(s.as_bytes().to_vec())
    }

    #[test]
    fn an_owner_holds_its_endpoint_until_its_note_expires() {
        let t0 = Instant::from_unix_secs(1);
        let hold = Duration::from_secs(25);
        let mut o = EndpointOwners::default();
        assert!(o.note("e:1", &id("v"), t0, t0 + hold));
        assert_eq!(o.other_owner("e:1", &id("m"), t0), Some(&id("v")));
        assert_eq!(o.other_owner("e:1", &id("v"), t0), None, "its own endpoint");
        assert_eq!(o.other_owner("e:2", &id("m"), t0), None, "another endpoint");
        assert_eq!(
            o.other_owner("e:1", &id("m"), t0 + hold - Duration::from_nanos(1)),
            Some(&id("v"))
        );
        assert_eq!(o.other_owner("e:1", &id("m"), t0 + hold), None, "expired");
    }

    #[test]
    fn reaching_the_owner_extends_its_note_and_reaching_another_does_not() {
        let t0 = Instant::from_unix_secs(1);
        let hold = Duration::from_secs(25);
        let mut o = EndpointOwners::default();
        o.note("e:1", &id("v"), t0, t0 + hold);
        o.reached("e:1", &id("m"), t0 + 2 * hold);
        assert_eq!(o.other_owner("e:1", &id("m"), t0 + hold), None);
        o.reached("e:1", &id("v"), t0 + 2 * hold);
        o.reached("e:1", &id("v"), t0 + hold);
        assert_eq!(
            o.other_owner("e:1", &id("m"), t0 + hold),
            Some(&id("v")),
            "extended, and never shortened"
        );
        // A later switch at the endpoint names its new owner.
        o.note("e:1", &id("w"), t0, t0 + hold);
        assert_eq!(o.other_owner("e:1", &id("v"), t0), Some(&id("w")));
        assert_eq!(o.other_owner("e:1", &id("w"), t0), None);
    }

    #[test]
    fn a_member_misdirected_twice_within_a_hold_is_refused_anywhere_until_it_ends() {
        let t0 = Instant::from_unix_secs(1);
        let hold = Duration::from_secs(25);
        let sec = Duration::from_secs(1);
        let mut o = EndpointOwners::default();
        assert!(o.misdirected(&id("m"), t0, t0 + hold));
        assert_eq!(
            o.refusal("m:1", &id("m"), t0),
            None,
            "once: a peer that moved"
        );
        // A second after the first's hold ended counts as a first.
        assert!(o.misdirected(&id("m"), t0 + hold, t0 + 2 * hold));
        assert_eq!(o.refusal("m:1", &id("m"), t0 + hold), None);
        // A second within the hold: refused anywhere, until one hold after it.
        let second = t0 + hold + sec;
        assert!(o.misdirected(&id("m"), second, second + hold));
        for endpoint in ["m:1", "any:2", ""] {
            assert_eq!(
                o.refusal(endpoint, &id("m"), second),
                Some(Refusal::Misdirecting)
            );
        }
        assert_eq!(o.refusal("m:1", &id("w"), second), None, "only that member");
        let end = second + hold;
        assert_eq!(
            o.refusal("m:1", &id("m"), end - Duration::from_nanos(1)),
            Some(Refusal::Misdirecting)
        );
        assert_eq!(o.refusal("m:1", &id("m"), end), None, "expired");
        // An endpoint noted as another's is refused as taken.
        o.note("v:1", &id("v"), end, end + hold);
        assert_eq!(
            o.refusal("v:1", &id("w"), end),
            Some(Refusal::Taken(&id("v")))
        );
    }

    #[test]
    fn a_full_set_of_misdirected_members_drops_expired_ones_first() {
        let t0 = Instant::from_unix_secs(1);
        let hold = Duration::from_secs(25);
        let mut o = EndpointOwners::default();
        for i in 0..MAX_ENDPOINT_OWNERS {
            let until = if i == 0 { t0 + hold } else { t0 + 4 * hold };
            assert!(o.misdirected(&id(&format!("m{i}")), t0, until));
        }
        assert!(!o.misdirected(&id("new"), t0, t0 + hold), "full");
        assert!(
            o.misdirected(&id("m7"), t0, t0 + 4 * hold),
            "a kept one counts"
        );
        assert_eq!(o.claimants(), MAX_ENDPOINT_OWNERS);
        assert!(
            o.misdirected(&id("new"), t0 + hold, t0 + 2 * hold),
            "m0 expired"
        );
        assert_eq!(o.claimants(), MAX_ENDPOINT_OWNERS);
    }

    #[test]
    fn a_full_set_drops_expired_notes_first_and_then_keeps_no_new_one() {
        let t0 = Instant::from_unix_secs(1);
        let hold = Duration::from_secs(25);
        let mut o = EndpointOwners::default();
        for i in 0..MAX_ENDPOINT_OWNERS {
            let until = if i == 0 { t0 + hold } else { t0 + 4 * hold };
            assert!(o.note(&format!("e:{i}"), &id("v"), t0, until));
        }
        assert!(!o.note("new:1", &id("v"), t0, t0 + hold), "full");
        assert_eq!(o.len(), MAX_ENDPOINT_OWNERS);
        assert!(
            o.note("new:1", &id("v"), t0 + hold, t0 + 2 * hold),
            "e:0 expired"
        );
        assert_eq!(o.len(), MAX_ENDPOINT_OWNERS);
        assert_eq!(o.other_owner("e:0", &id("m"), t0), None, "dropped");
        assert!(
            o.note("e:5", &id("w"), t0 + hold, t0 + 2 * hold),
            "a kept one moves"
        );
    }
}
