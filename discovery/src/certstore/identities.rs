//! The identities the certstore holds (Fabric's identity mapper, for what the pull brings):
//! each with its owner's signed `PeerIdentity` message, which is what we serve to others.
//! Bounded in number and in bytes; expired and long-unused entries are purged, our own
//! never. Those purged for disuse are remembered for a while, so that the pull does not
//! bring them back from a peer that has not purged them yet.

use super::wire::ValidIdentity;
use bytes::Bytes;
use core::time::Duration;
use fabric_gossip_core::proto::gossip::Envelope;
use fabric_gossip_core::{Instant, PkiId, detached_envelope};
use std::collections::{BTreeMap, BTreeSet};

/// One identity.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub(crate) cert: Bytes,
    pub(crate) envelope: Envelope,
    pub(crate) org: Option<Bytes>,
    pub(crate) expires: Option<Instant>,
    /// Last time it verified a message (Fabric's `lastAccessTime`).
    pub(crate) last_used: Instant,
    /// What it holds, as counted against the byte bound ([`weight`]).
    weight: usize,
    /// Of our own organization: it may use the share of the bounds kept for ours.
    ours: bool,
}

/// Room an entry takes beyond its bytes: the map's node, the entry's fields.
pub(crate) const ENTRY_OVERHEAD: usize = 128;

/// What an identity holds, as counted against the certstore's byte bound: its signed
/// message (relayed verbatim), its certificate, its PKI-ID (twice: key and message) and
/// organization, and [`ENTRY_OVERHEAD`].
pub(crate) fn weight(id: &ValidIdentity, org: Option<&Bytes>) -> usize {
    use prost::Message;
    ENTRY_OVERHEAD
        + id.envelope.encoded_len()
        + id.cert.len()
        + id.pki_id.as_bytes().len()
        + org.map_or(0, Bytes::len)
}

/// Why [`Identities::put`] refused a new identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Full {
    /// As many identities as the count bound allows are held.
    Count,
    /// It would take the bytes held past the byte bound.
    Bytes,
}

/// The bounds of the store: identities held and their bytes. Identities of other
/// organizations may take at most three quarters of either ([`others_share`]): the rest is
/// kept for our own organization, whose members' identities a hostile organization's CA
/// could otherwise crowd out by filling the store first, as it could membership before
/// membership was shared out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Bounds {
    pub(crate) count: usize,
    pub(crate) bytes: usize,
}

/// What other organizations' identities may take of a bound: three quarters.
pub(crate) fn others_share(bound: usize) -> usize {
    bound - bound / 4
}

/// What the held entries take, as the bounds count it.
#[derive(Debug, Default)]
struct Held {
    /// The sum of the entries' weights.
    bytes: usize,
    /// Entries of other organizations (or of none known), and the sum of their weights.
    others: usize,
    others_bytes: usize,
}

impl Held {
    fn add(&mut self, e: &Entry) {
        self.bytes += e.weight;
        if !e.ours {
            self.others += 1;
            self.others_bytes += e.weight;
        }
    }

    fn remove(&mut self, e: &Entry) {
        self.bytes -= e.weight;
        if !e.ours {
            self.others -= 1;
            self.others_bytes -= e.weight;
        }
    }
}

impl Entry {
    fn expired(&self, now: Instant) -> bool {
        self.expires.is_some_and(|e| e <= now)
    }
}

/// What a purge removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Purged {
    pub(crate) expired: u64,
    pub(crate) unused: u64,
}

/// PKI-ID → identity, in PKI-ID order (deterministic digests).
#[derive(Debug, Default)]
pub(crate) struct Identities {
    map: BTreeMap<PkiId, Entry>,
    own: PkiId,
    /// Our own organization (that of our own identity).
    own_org: Option<Bytes>,
    /// What the entries take, in all and of other organizations.
    held: Held,
    /// Identities purged for disuse → until when the pull must not bring them back.
    forgotten: BTreeMap<PkiId, Instant>,
    /// The same, by the end of their period: they expire, and make room, in this order.
    forgotten_by_end: BTreeSet<(Instant, PkiId)>,
}

impl Identities {
    /// Stores our own identity message (never purged).
    pub(crate) fn set_own(&mut self, id: ValidIdentity, org: Option<Bytes>, now: Instant) {
        self.own = id.pki_id.clone();
        self.own_org = org.clone();
        self.insert(id, org, now);
    }

    /// Kept for as long as the identity is: its bytes are copied out of the buffer the
    /// message arrived in (see `detached_envelope`).
    fn insert(&mut self, id: ValidIdentity, org: Option<Bytes>, now: Instant) {
        let entry = Entry {
            cert: Bytes::copy_from_slice(&id.cert),
            envelope: detached_envelope(&id.envelope),
            weight: weight(&id, org.as_ref()),
            ours: self.is_ours(org.as_ref()),
            org,
            expires: id.expires,
            last_used: now,
        };
        self.held.add(&entry);
        let old = self
            .map
            .insert(PkiId(Bytes::copy_from_slice(&id.pki_id.0)), entry);
        if let Some(old) = &old {
            self.held.remove(old);
        }
    }

    fn is_ours(&self, org: Option<&Bytes>) -> bool {
        org.is_some() && org == self.own_org.as_ref()
    }

    /// Stores a validated identity unless one is held for its PKI-ID (Fabric keeps the
    /// first). `Ok(true)` if new; refused when the count bound is reached or when it would
    /// take the bytes held past the byte bound (an expired entry it replaces makes room).
    pub(crate) fn put(
        &mut self,
        id: ValidIdentity,
        org: Option<Bytes>,
        now: Instant,
        bounds: Bounds,
    ) -> Result<bool, Full> {
        let old = self.map.get(&id.pki_id);
        if old.is_some_and(|e| !e.expired(now)) {
            return Ok(false);
        }
        if old.is_none() && self.map.len() >= bounds.count {
            return Err(Full::Count);
        }
        let freed = old.map_or(0, |e| e.weight);
        let held = self.held.bytes - freed;
        let w = weight(&id, org.as_ref());
        if held.saturating_add(w) > bounds.bytes {
            return Err(Full::Bytes);
        }
        if !self.is_ours(org.as_ref()) {
            // An expired entry of another organization that this one replaces makes room.
            let old_other = old.filter(|e| !e.ours);
            let others = self.held.others - usize::from(old_other.is_some());
            let others_bytes = self.held.others_bytes - old_other.map_or(0, |e| e.weight);
            if others >= others_share(bounds.count) {
                return Err(Full::Count);
            }
            if others_bytes.saturating_add(w) > others_share(bounds.bytes) {
                return Err(Full::Bytes);
            }
        }
        self.insert(id, org, now);
        Ok(true)
    }

    /// The unexpired entry of a PKI-ID.
    pub(crate) fn get(&self, pki_id: &PkiId, now: Instant) -> Option<&Entry> {
        self.map.get(pki_id).filter(|e| !e.expired(now))
    }

    /// Whether an unexpired identity is held for `pki_id`.
    pub(crate) fn has(&self, pki_id: &PkiId, now: Instant) -> bool {
        self.get(pki_id, now).is_some()
    }

    /// Marks an identity as just used to verify a message. If it had been purged for
    /// disuse, it is not forgotten any more: its owner is back (the identity came from its
    /// alive message or a handshake), and the pull may bring it again.
    pub(crate) fn touch(&mut self, pki_id: &PkiId, now: Instant) {
        if let Some(e) = self.map.get_mut(pki_id) {
            e.last_used = now;
        }
        if let Some(end) = self.forgotten.remove(pki_id) {
            self.forgotten_by_end.remove(&(end, pki_id.clone()));
        }
    }

    /// Whether `pki_id` was purged for disuse and its period is not over: the pull must
    /// not bring it back.
    pub(crate) fn is_forgotten(&self, pki_id: &PkiId, now: Instant) -> bool {
        self.forgotten.get(pki_id).is_some_and(|end| *end > now)
    }

    /// Remembers `pki_id` as purged for disuse until `end`; at most `max` are remembered,
    /// the one whose period ends first making room.
    fn forget(&mut self, pki_id: PkiId, end: Instant, max: usize) {
        if let Some(old) = self.forgotten.remove(&pki_id) {
            self.forgotten_by_end.remove(&(old, pki_id.clone()));
        }
        while self.forgotten.len() >= max {
            let Some((_, first)) = self.forgotten_by_end.pop_first() else {
                return;
            };
            self.forgotten.remove(&first);
        }
        self.forgotten_by_end.insert((end, pki_id.clone()));
        self.forgotten.insert(pki_id, end);
    }

    /// How many identities are remembered as purged for disuse (for tests).
    #[cfg(test)]
    pub(crate) fn forgotten(&self) -> usize {
        self.forgotten.len()
    }

    /// Unexpired entries, in PKI-ID order.
    pub(crate) fn iter(&self, now: Instant) -> impl Iterator<Item = (&PkiId, &Entry)> {
        self.map.iter().filter(move |(_, e)| !e.expired(now))
    }

    /// Removes expired identities and those unused for `unused_after` (Fabric's
    /// `SuspectPeers` sweep with its one-hour usage threshold), ours excepted. Those unused
    /// are remembered for `unused_after` more (at most `max_forgotten` of them), so that a
    /// peer that purges later cannot give them back with a fresh last use: with nodes
    /// purging at different times, an identity whose owner had gone would otherwise go
    /// round forever. Remembered identities whose period ended are forgotten here too.
    pub(crate) fn purge(
        &mut self,
        now: Instant,
        unused_after: Duration,
        max_forgotten: usize,
    ) -> Purged {
        while let Some((end, _)) = self.forgotten_by_end.first()
            && *end <= now
        {
            if let Some((_, k)) = self.forgotten_by_end.pop_first() {
                self.forgotten.remove(&k);
            }
        }
        let mut purged = Purged::default();
        let mut unused = Vec::new();
        let own = &self.own;
        let held = &mut self.held;
        self.map.retain(|k, e| {
            if k == own {
                return true;
            }
            let keep = !e.expired(now) && e.last_used + unused_after > now;
            if !keep {
                held.remove(e);
            }
            if e.expired(now) {
                purged.expired += 1;
                false
            } else if e.last_used + unused_after <= now {
                purged.unused += 1;
                unused.push(k.clone());
                false
            } else {
                true
            }
        });
        for k in unused {
            self.forget(k, now + unused_after, max_forgotten);
        }
        purged
    }

    /// Keeps the identities `keep` accepts, ours always; returns how many went.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&Entry) -> bool) -> u64 {
        let before = self.map.len();
        let own = &self.own;
        let held = &mut self.held;
        self.map.retain(|k, e| {
            let kept = k == own || keep(e);
            if !kept {
                held.remove(e);
            }
            kept
        });
        (before - self.map.len()) as u64
    }

    /// How many are held (ours included).
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// The bytes held (ours included), as the byte bound counts them (for tests and the
    /// fuzz target's invariants).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn bytes(&self) -> usize {
        self.held.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{SEC, T0};

    fn vid(n: &str, expires: Option<Instant>) -> ValidIdentity {
        ValidIdentity {
            pki_id: PkiId::new(Bytes::copy_from_slice(n.as_bytes())),
            cert: Bytes::copy_from_slice(n.as_bytes()),
            expires,
            envelope: Envelope::default(),
        }
    }

    /// Other organizations' identities (and those of no organization known) take at most
    /// three quarters of the count and of the bytes; ours have the rest, and free
    /// room is theirs again once others go.
    #[test]
    fn other_organizations_take_at_most_three_quarters_of_the_bounds() {
        let org = |o: &str| Some(Bytes::copy_from_slice(o.as_bytes()));
        let fresh = || {
            let mut s = Identities::default();
            s.set_own(vid("me", None), org("A"), T0);
            s
        };
        let mut s = fresh();
        let by_count = Bounds {
            count: 8,
            bytes: usize::MAX,
        };
        for who in ["b1", "b2", "b3", "b4", "b5", "b6"] {
            assert_eq!(
                s.put(vid(who, None), org("B"), T0, by_count),
                Ok(true),
                "{who}"
            );
        }
        assert_eq!(
            s.put(vid("c1", None), org("C"), T0, by_count),
            Err(Full::Count)
        );
        assert_eq!(s.put(vid("x1", None), None, T0, by_count), Err(Full::Count));
        assert_eq!(s.put(vid("a1", None), org("A"), T0, by_count), Ok(true));
        assert_eq!(s.retain(|e| e.cert.as_ref() != b"b1"), 1);
        assert_eq!(s.put(vid("c1", None), org("C"), T0, by_count), Ok(true));
        // The same in bytes: every entry here weighs what ours does.
        let mut s = fresh();
        let w = s.bytes();
        let by_bytes = Bounds {
            count: 1000,
            bytes: 8 * w,
        };
        for who in ["b1", "b2", "b3", "b4", "b5", "b6"] {
            assert_eq!(
                s.put(vid(who, None), org("B"), T0, by_bytes),
                Ok(true),
                "{who}"
            );
        }
        assert_eq!(
            s.put(vid("c1", None), org("C"), T0, by_bytes),
            Err(Full::Bytes)
        );
        assert_eq!(s.put(vid("a1", None), org("A"), T0, by_bytes), Ok(true));
        assert_eq!(s.bytes(), 8 * w);
        // Purged, others' bytes come back.
        assert_eq!(s.purge(T0 + SEC, SEC, 10).unused, 7);
        assert_eq!(s.bytes(), w);
        assert_eq!(s.put(vid("c1", None), org("C"), T0, by_bytes), Ok(true));
    }

    #[test]
    fn keeps_the_first_bounded_and_purges_expired_and_unused_but_not_ours() {
        let mut s = Identities::default();
        s.set_own(vid("me", Some(T0 + SEC)), None, T0);
        let three = Bounds {
            count: 3,
            bytes: usize::MAX,
        };
        assert_eq!(s.put(vid("a", None), None, T0, three), Ok(true));
        assert_eq!(s.put(vid("a", None), None, T0, three), Ok(false));
        assert_eq!(
            s.put(vid("b", Some(T0 + 5 * SEC)), None, T0, three),
            Ok(true)
        );
        assert_eq!(s.put(vid("c", None), None, T0, three), Err(Full::Count));
        assert!(s.has(&vid("b", None).pki_id, T0 + 4 * SEC));
        assert!(!s.has(&vid("b", None).pki_id, T0 + 5 * SEC), "expired");
        s.touch(&vid("a", None).pki_id, T0 + 50 * SEC);
        assert_eq!(
            s.purge(T0 + 60 * SEC, 20 * SEC, 10),
            Purged {
                expired: 1,
                unused: 0
            }
        );
        assert_eq!(
            s.purge(T0 + 70 * SEC, 20 * SEC, 10),
            Purged {
                expired: 0,
                unused: 1
            }
        );
        assert_eq!(s.len(), 1, "ours stays, even expired");
        assert_eq!(s.bytes(), weight(&vid("me", None), None));
        // Room again.
        assert_eq!(s.put(vid("c", None), None, T0, three), Ok(true));
    }

    #[test]
    fn identities_purged_for_disuse_are_remembered_for_a_while_bounded() {
        let mut s = Identities::default();
        s.set_own(vid("me", None), None, T0);
        let room = Bounds {
            count: 10,
            bytes: usize::MAX,
        };
        for n in ["a", "b", "c"] {
            s.put(vid(n, None), None, T0, room).unwrap();
        }
        s.put(vid("x", Some(T0 + SEC)), None, T0, room).unwrap();
        s.touch(&vid("c", None).pki_id, T0 + 5 * SEC);
        // a, b unused, x expired: only a and b are remembered, at most two.
        let p = s.purge(T0 + 10 * SEC, 10 * SEC, 2);
        assert_eq!((p.unused, p.expired), (2, 1));
        let id = |n: &str| vid(n, None).pki_id;
        assert!(s.is_forgotten(&id("a"), T0 + 10 * SEC));
        assert!(s.is_forgotten(&id("b"), T0 + 19 * SEC));
        assert!(
            !s.is_forgotten(&id("x"), T0 + 10 * SEC),
            "expired, not unused"
        );
        assert!(!s.is_forgotten(&id("a"), T0 + 20 * SEC), "period over");
        // c purged later takes the place of the one whose period ends first.
        s.purge(T0 + 15 * SEC, 10 * SEC, 2);
        assert_eq!(s.forgotten(), 2);
        assert!(s.is_forgotten(&id("c"), T0 + 15 * SEC));
        // Used again (its owner is back): no longer forgotten.
        s.touch(&id("c"), T0 + 16 * SEC);
        assert!(!s.is_forgotten(&id("c"), T0 + 16 * SEC));
        // Periods that ended are dropped at the next purge.
        s.purge(T0 + 30 * SEC, 10 * SEC, 2);
        assert_eq!(s.forgotten(), 0);
    }

    #[test]
    fn bytes_are_bounded_and_accounted() {
        // All of our organization: other organizations' share is another test's.
        let a = Some(Bytes::from_static(b"A"));
        let mut s = Identities::default();
        s.set_own(vid("me", None), a.clone(), T0);
        let one = weight(&vid("a", None), a.as_ref());
        let bounds = Bounds {
            count: 10,
            bytes: s.bytes() + 2 * one,
        };
        assert_eq!(s.put(vid("a", None), a.clone(), T0, bounds), Ok(true));
        assert_eq!(
            s.put(vid("b", Some(T0 + SEC)), a.clone(), T0, bounds),
            Ok(true)
        );
        assert_eq!(
            s.put(vid("c", None), a.clone(), T0, bounds),
            Err(Full::Bytes)
        );
        // An expired entry replaced by a fresh one of its PKI-ID frees its own bytes.
        assert_eq!(
            s.put(vid("b", None), a.clone(), T0 + 2 * SEC, bounds),
            Ok(true)
        );
        assert_eq!(s.bytes(), bounds.bytes);
        // What leaves gives its bytes back.
        assert_eq!(s.retain(|e| &e.cert[..] != b"a"), 1);
        assert_eq!(s.put(vid("c", None), a.clone(), T0, bounds), Ok(true));
        let sum: usize = s.map.values().map(|e| e.weight).sum();
        assert_eq!(s.bytes(), sum);
        s.purge(T0 + 10 * SEC, SEC, 10);
        assert_eq!(s.bytes(), weight(&vid("me", None), a.as_ref()));
    }
}
