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

/// What [`Identities::put`] did with an identity it took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stored {
    /// One was already held for its PKI-ID (Fabric keeps the first).
    Held,
    /// Stored, with room to spare.
    New,
    /// Stored in the place of this many identities of organizations holding a larger
    /// share than its own ([`Identities::put`]).
    Evicting(usize),
}

/// The bounds of the store: identities held and their bytes. Identities of other
/// organizations may take at most three quarters of either ([`others_share`]): the rest is
/// kept for our own organization, whose members' identities a hostile organization's CA
/// could otherwise crowd out by filling the store first, as it could membership before
/// membership was shared out. Among other organizations the bounds are shared out too
/// ([`Identities::put`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Bounds {
    pub(crate) count: usize,
    pub(crate) bytes: usize,
}

impl Bounds {
    /// How much of the store `share` takes, as one number comparable between
    /// organizations: the larger of its fraction of the count bound and its fraction of
    /// the byte bound (its dominant share, as membership reckons it), scaled by both
    /// bounds so that no division is needed. A CA minting few but large identities fills
    /// the byte bound as fast as one minting many small ones fills the count.
    fn usage(self, share: Share) -> u128 {
        let count = self.count.max(1) as u128;
        let bytes = self.bytes.max(1) as u128;
        (share.count as u128 * bytes).max(share.bytes as u128 * count)
    }
}

/// What other organizations' identities may take of a bound: three quarters.
pub(crate) fn others_share(bound: usize) -> usize {
    bound - bound / 4
}

/// Identities and the bytes they take, as the bounds count them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Share {
    count: usize,
    bytes: usize,
}

impl Share {
    fn add(&mut self, weight: usize) {
        self.count += 1;
        self.bytes += weight;
    }

    fn sub(&mut self, weight: usize) {
        self.count -= 1;
        self.bytes -= weight;
    }
}

/// One other organization's identities: their share, and their PKI-IDs by last use, the
/// least recently used first (the first evicted).
#[derive(Debug, Default)]
struct OrgHeld {
    share: Share,
    by_use: BTreeSet<(Instant, PkiId)>,
}

/// The name an organization's share is kept under: identities of no organization known
/// count as one organization, the empty name (as in membership).
fn org_key(org: Option<&Bytes>) -> Bytes {
    org.cloned().unwrap_or_default()
}

/// What the held entries take, as the bounds count it.
#[derive(Debug, Default)]
struct Held {
    /// The sum of the entries' weights.
    bytes: usize,
    /// Entries of other organizations (or of none known), and the sum of their weights.
    others: Share,
    /// The same by organization, with each one's entries by last use.
    orgs: BTreeMap<Bytes, OrgHeld>,
}

impl Held {
    fn add(&mut self, pki_id: &PkiId, e: &Entry) {
        self.bytes += e.weight;
        if !e.ours {
            self.others.add(e.weight);
            let org = self.orgs.entry(org_key(e.org.as_ref())).or_default();
            org.share.add(e.weight);
            org.by_use.insert((e.last_used, pki_id.clone()));
        }
    }

    fn remove(&mut self, pki_id: &PkiId, e: &Entry) {
        self.bytes -= e.weight;
        if !e.ours {
            self.others.sub(e.weight);
            let key = org_key(e.org.as_ref());
            if let Some(org) = self.orgs.get_mut(&key) {
                org.share.sub(e.weight);
                org.by_use.remove(&(e.last_used, pki_id.clone()));
                if org.share.count == 0 {
                    self.orgs.remove(&key);
                }
            }
        }
    }

    /// `e`, about to be marked used at `now`, moves to the end of its organization's
    /// order.
    fn used(&mut self, pki_id: &PkiId, e: &Entry, now: Instant) {
        if e.ours {
            return;
        }
        if let Some(org) = self.orgs.get_mut(org_key(e.org.as_ref()).as_ref()) {
            org.by_use.remove(&(e.last_used, pki_id.clone()));
            org.by_use.insert((now, pki_id.clone()));
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
    /// Identities purged for disuse, until when the pull must not bring them back.
    forgotten: Remembered,
    /// Identities that came expired in an update, until when they are not asked for
    /// again. Apart from `forgotten`: an alive message of their owner does not end it.
    expired: Remembered,
}

/// PKI-IDs remembered until an instant each, at most a bound of them (the one whose period
/// ends first making room).
#[derive(Debug, Default)]
struct Remembered {
    until: BTreeMap<PkiId, Instant>,
    /// The same, by the end of their period: they expire, and make room, in this order.
    by_end: BTreeSet<(Instant, PkiId)>,
}

impl Remembered {
    fn insert(&mut self, pki_id: PkiId, end: Instant, max: usize) {
        self.remove(&pki_id);
        while self.until.len() >= max {
            let Some((_, first)) = self.by_end.pop_first() else {
                return;
            };
            self.until.remove(&first);
        }
        self.by_end.insert((end, pki_id.clone()));
        self.until.insert(pki_id, end);
    }

    fn remove(&mut self, pki_id: &PkiId) -> bool {
        match self.until.remove(pki_id) {
            Some(end) => {
                self.by_end.remove(&(end, pki_id.clone()));
                true
            }
            None => false,
        }
    }

    fn contains(&self, pki_id: &PkiId, now: Instant) -> bool {
        self.until.get(pki_id).is_some_and(|end| *end > now)
    }

    /// Forgets those whose period ended by `now`.
    fn expire(&mut self, now: Instant) {
        while let Some((end, _)) = self.by_end.first()
            && *end <= now
        {
            if let Some((_, k)) = self.by_end.pop_first() {
                self.until.remove(&k);
            }
        }
    }
}

impl Identities {
    /// Stores our own identity message (never purged, never evicted).
    pub(crate) fn set_own(&mut self, id: ValidIdentity, org: Option<Bytes>, now: Instant) {
        self.own = id.pki_id.clone();
        self.own_org = org.clone();
        self.insert(id, org, now);
    }

    /// Kept for as long as the identity is: its bytes are copied out of the buffer the
    /// message arrived in (see `detached_envelope`).
    fn insert(&mut self, id: ValidIdentity, org: Option<Bytes>, now: Instant) {
        let pki_id = PkiId(Bytes::copy_from_slice(&id.pki_id.0));
        let entry = Entry {
            cert: Bytes::copy_from_slice(&id.cert),
            envelope: detached_envelope(&id.envelope),
            weight: weight(&id, org.as_ref()),
            // Our own identity uses our share whatever its organization.
            ours: self.is_ours(org.as_ref()) || pki_id == self.own,
            org,
            expires: id.expires,
            last_used: now,
        };
        if let Some(old) = self.map.remove(&pki_id) {
            self.held.remove(&pki_id, &old);
        }
        self.held.add(&pki_id, &entry);
        self.map.insert(pki_id, entry);
    }

    fn is_ours(&self, org: Option<&Bytes>) -> bool {
        org.is_some() && org == self.own_org.as_ref()
    }

    /// Stores a validated identity unless one is held for its PKI-ID (Fabric keeps the
    /// first; an expired one is replaced). When the bounds leave no room, it may take the
    /// place of identities of another organization, each the least recently used of the
    /// organization whose share ([`Bounds::usage`]) is the largest it may take: one of
    /// our organization may take any other's; one of another organization only that of an
    /// organization whose share is larger than its own would be with it, so that none is
    /// left with less than the one it displaced. One of no organization known takes no
    /// place, and ours are never taken. The places are all chosen before any identity
    /// goes: if they cannot make room, nothing goes and it is refused, as
    /// [`Full::Count`] or [`Full::Bytes`] by the first bound it would pass. Beyond
    /// Fabric, which bounds nothing: without the sharing, a hostile organization's CA
    /// filling the store first kept every other organization's newcomers out.
    pub(crate) fn put(
        &mut self,
        id: ValidIdentity,
        org: Option<Bytes>,
        now: Instant,
        bounds: Bounds,
    ) -> Result<Stored, Full> {
        if let Some(old) = self.map.get(&id.pki_id) {
            if !old.expired(now) {
                return Ok(Stored::Held);
            }
            // The expired entry it replaces goes first, making its room.
            if let Some(old) = self.map.remove(&id.pki_id) {
                self.held.remove(&id.pki_id, &old);
            }
        }
        let victims = self.room_for(org.as_ref(), weight(&id, org.as_ref()), bounds)?;
        for victim in &victims {
            if let Some(e) = self.map.remove(victim) {
                self.held.remove(victim, &e);
            }
        }
        self.insert(id, org, now);
        Ok(match victims.len() {
            0 => Stored::New,
            n => Stored::Evicting(n),
        })
    }

    /// The identities whose places a newcomer of `org` weighing `weight` would take (none
    /// if it fits as things are), all chosen before any goes (see [`Identities::put`]).
    fn room_for(
        &self,
        org: Option<&Bytes>,
        weight: usize,
        bounds: Bounds,
    ) -> Result<Vec<PkiId>, Full> {
        let ours = self.is_ours(org);
        let lacking = |count: usize, bytes: usize, others: Share| {
            if count >= bounds.count {
                Some(Full::Count)
            } else if bytes.saturating_add(weight) > bounds.bytes {
                Some(Full::Bytes)
            } else if ours {
                None
            } else if others.count >= others_share(bounds.count) {
                Some(Full::Count)
            } else if others.bytes.saturating_add(weight) > others_share(bounds.bytes) {
                Some(Full::Bytes)
            } else {
                None
            }
        };
        let (mut count, mut bytes, mut others) =
            (self.map.len(), self.held.bytes, self.held.others);
        let Some(full) = lacking(count, bytes, others) else {
            return Ok(Vec::new());
        };
        let Some(org) = org else {
            return Err(full);
        };
        let mut newcomer = self
            .held
            .orgs
            .get(org)
            .map_or(Share::default(), |o| o.share);
        newcomer.add(weight);
        let newcomer = bounds.usage(newcomer);
        // Each other organization that may lose places: its share as it would be with
        // those chosen gone, and its identities in the order they would go.
        let mut victims: Vec<(Share, _)> = self
            .held
            .orgs
            .iter()
            .filter(|(name, _)| *name != org)
            .map(|(_, o)| (o.share, o.by_use.iter()))
            .collect();
        let mut chosen = Vec::new();
        while lacking(count, bytes, others).is_some() {
            let Some((share, order)) = victims
                .iter_mut()
                .filter(|(share, _)| share.count > 0 && (ours || bounds.usage(*share) > newcomer))
                .max_by_key(|(share, _)| bounds.usage(*share))
            else {
                return Err(full);
            };
            let Some((_, pki_id)) = order.next() else {
                return Err(full);
            };
            let w = self.map.get(pki_id).map_or(0, |e| e.weight);
            share.sub(w);
            others.sub(w);
            count -= 1;
            bytes -= w;
            chosen.push(pki_id.clone());
        }
        Ok(chosen)
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
            self.held.used(pki_id, e, now);
            e.last_used = now;
        }
        self.remember_again(pki_id);
    }

    /// Ends `pki_id`'s period of being forgotten, if it has one: the pull may bring its
    /// identity again. Returns whether it had one.
    pub(crate) fn remember_again(&mut self, pki_id: &PkiId) -> bool {
        self.forgotten.remove(pki_id)
    }

    /// Remembers `pki_id`, whose identity came expired, as not to be asked for until
    /// `end`: Fabric's pull keeps such an item in its state and never asks for it again,
    /// while its identity mapper refuses it. At most `max` are remembered.
    pub(crate) fn skip_expired(&mut self, pki_id: PkiId, end: Instant, max: usize) {
        self.expired.insert(pki_id, end, max);
    }

    /// Whether the pull must not bring `pki_id`'s identity now: purged for disuse, or
    /// received expired, and the period not over.
    pub(crate) fn is_forgotten(&self, pki_id: &PkiId, now: Instant) -> bool {
        self.forgotten.contains(pki_id, now) || self.expired.contains(pki_id, now)
    }

    /// How many identities are remembered as purged for disuse (for tests).
    #[cfg(test)]
    pub(crate) fn forgotten(&self) -> usize {
        self.forgotten.until.len()
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
        self.forgotten.expire(now);
        self.expired.expire(now);
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
                held.remove(k, e);
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
            self.forgotten.insert(k, now + unused_after, max_forgotten);
        }
        purged
    }

    /// Removes `pki_id`'s identity (never ours), which comm purged for disuse, and
    /// remembers it as [`purge`](Self::purge) remembers one it found unused itself, until
    /// `end` (at most `max_forgotten`): Fabric's `onPurge` removes a purged identity from
    /// the certstore's pull at once. Returns whether one was held.
    pub(crate) fn forget_unused(
        &mut self,
        pki_id: &PkiId,
        end: Instant,
        max_forgotten: usize,
    ) -> bool {
        if *pki_id == self.own {
            return false;
        }
        let Some(e) = self.map.remove(pki_id) else {
            return false;
        };
        self.held.remove(pki_id, &e);
        self.forgotten.insert(pki_id.clone(), end, max_forgotten);
        true
    }

    /// Keeps the identities `keep` accepts, ours always; returns how many went.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&Entry) -> bool) -> u64 {
        let before = self.map.len();
        let own = &self.own;
        let held = &mut self.held;
        self.map.retain(|k, e| {
            let kept = k == own || keep(e);
            if !kept {
                held.remove(k, e);
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

    /// Panics unless the running totals are those of the entries held: the bytes, other
    /// organizations' shares, each organization's order by last use (for tests and the
    /// fuzz target's invariants).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn check_accounts(&self) {
        let mut held = Held::default();
        for (k, e) in &self.map {
            held.add(k, e);
        }
        assert_eq!(held.bytes, self.held.bytes, "bytes held");
        assert_eq!(held.others, self.held.others, "other organizations' share");
        let view = |h: &Held| {
            h.orgs
                .iter()
                .map(|(k, o)| (k.clone(), o.share, o.by_use.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(view(&held), view(&self.held), "shares by organization");
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

    fn org(o: &str) -> Option<Bytes> {
        Some(Bytes::copy_from_slice(o.as_bytes()))
    }

    /// A store holding our own identity, of organization A.
    fn ours_a() -> Identities {
        let mut s = Identities::default();
        s.set_own(vid("me", None), org("A"), T0);
        s
    }

    /// Other organizations' identities (and those of no organization known) take at most
    /// three quarters of the count and of the bytes; ours have the rest, and free
    /// room is theirs again once others go.
    #[test]
    fn other_organizations_take_at_most_three_quarters_of_the_bounds() {
        let mut s = ours_a();
        let by_count = Bounds {
            count: 8,
            bytes: usize::MAX,
        };
        for who in ["b1", "b2", "b3", "b4", "b5", "b6"] {
            assert_eq!(
                s.put(vid(who, None), org("B"), T0, by_count),
                Ok(Stored::New),
                "{who}"
            );
        }
        assert_eq!(
            s.put(vid("b7", None), org("B"), T0, by_count),
            Err(Full::Count),
            "B holds other organizations' three quarters"
        );
        assert_eq!(s.put(vid("x1", None), None, T0, by_count), Err(Full::Count));
        assert_eq!(
            s.put(vid("a1", None), org("A"), T0, by_count),
            Ok(Stored::New)
        );
        assert_eq!(s.retain(|e| e.cert.as_ref() != b"b1"), 1);
        assert_eq!(
            s.put(vid("b1", None), org("B"), T0, by_count),
            Ok(Stored::New)
        );
        s.check_accounts();
        // The same in bytes: every entry here weighs what ours does.
        let mut s = ours_a();
        let w = s.bytes();
        let by_bytes = Bounds {
            count: 1000,
            bytes: 8 * w,
        };
        for who in ["b1", "b2", "b3", "b4", "b5", "b6"] {
            assert_eq!(
                s.put(vid(who, None), org("B"), T0, by_bytes),
                Ok(Stored::New),
                "{who}"
            );
        }
        assert_eq!(
            s.put(vid("b7", None), org("B"), T0, by_bytes),
            Err(Full::Bytes)
        );
        assert_eq!(
            s.put(vid("a1", None), org("A"), T0, by_bytes),
            Ok(Stored::New)
        );
        assert_eq!(s.bytes(), 8 * w);
        // Purged, others' bytes come back.
        assert_eq!(s.purge(T0 + SEC, SEC, 10).unused, 7);
        assert_eq!(s.bytes(), w);
        assert_eq!(
            s.put(vid("b7", None), org("B"), T0, by_bytes),
            Ok(Stored::New)
        );
        s.check_accounts();
    }

    /// With other organizations' share full, a newcomer of an organization holding less
    /// takes the place of the least recently used identity of the one holding the most;
    /// one of the largest, or of no organization known, takes none; ours take any other's.
    #[test]
    fn other_organizations_share_the_store_as_they_share_membership() {
        let mut s = ours_a();
        let bounds = Bounds {
            count: 9,
            bytes: usize::MAX,
        };
        // B fills other organizations' share: 7 of 9.
        assert_eq!(others_share(9), 7);
        for (i, who) in ["b1", "b2", "b3", "b4", "b5", "b6", "b7"]
            .iter()
            .enumerate()
        {
            let at = T0 + SEC * i as u32;
            assert_eq!(s.put(vid(who, None), org("B"), at, bounds), Ok(Stored::New));
        }
        // b1 is used again: b2 is now B's least recently used.
        s.touch(&vid("b1", None).pki_id, T0 + 10 * SEC);
        let c1 = s.put(vid("c1", None), org("C"), T0 + 11 * SEC, bounds);
        assert_eq!(c1, Ok(Stored::Evicting(1)));
        assert!(
            !s.has(&vid("b2", None).pki_id, T0 + 11 * SEC),
            "B's least used went"
        );
        assert!(s.has(&vid("b1", None).pki_id, T0 + 11 * SEC));
        // B (6) may not take C's place (1), nor may C take more than evens them out:
        // C with a newcomer holds 2, B 6, then 3 against 5, then 4 against 4.
        assert_eq!(
            s.put(vid("b8", None), org("B"), T0 + 12 * SEC, bounds),
            Err(Full::Count)
        );
        for who in ["c2", "c3"] {
            assert_eq!(
                s.put(vid(who, None), org("C"), T0 + 12 * SEC, bounds),
                Ok(Stored::Evicting(1)),
                "{who}"
            );
        }
        assert_eq!(
            s.put(vid("c4", None), org("C"), T0 + 12 * SEC, bounds),
            Err(Full::Count),
            "with it C would hold 4, as many as B: no larger share to take"
        );
        // No organization known: no place.
        assert_eq!(s.put(vid("x", None), None, T0, bounds), Err(Full::Count));
        // Ours use their own quarter first, then take others' places.
        assert_eq!(
            s.put(vid("a1", None), org("A"), T0, bounds),
            Ok(Stored::New)
        );
        assert_eq!(
            s.put(vid("a2", None), org("A"), T0, bounds),
            Ok(Stored::Evicting(1))
        );
        assert_eq!(s.len(), 9);
        s.check_accounts();
    }

    /// In bytes too: a CA minting few large identities is reckoned by the share of the
    /// byte bound they take, and a newcomer takes as many places as it needs, or none.
    #[test]
    fn shares_are_dominant_shares_and_places_are_chosen_before_any_goes() {
        let sized = |n: &str, len: usize| ValidIdentity {
            cert: Bytes::from(vec![0u8; len]),
            ..vid(n, None)
        };
        let mut s = ours_a();
        let small = weight(&vid("c000", None), org("C").as_ref());
        let large = weight(&sized("d1", 3000), org("D").as_ref());
        let bounds = Bounds {
            count: 1000,
            bytes: s.bytes() + 4 * large,
        };
        let share = others_share(bounds.bytes);
        // C fills other organizations' bytes with small identities, far from the count.
        let mut c = 0;
        while s.put(vid(&format!("c{c:03}"), None), org("C"), T0, bounds) == Ok(Stored::New) {
            c += 1;
        }
        assert_eq!(c, share / small);
        // A large newcomer of D needs the places of several of C's: C's share of the
        // bytes stays larger than D's would be throughout, so D takes all it needs.
        let needed = (c * small + large - share).div_ceil(small);
        assert!(needed > 1);
        assert_eq!(
            s.put(sized("d1", 3000), org("D"), T0, bounds),
            Ok(Stored::Evicting(needed))
        );
        s.check_accounts();
        // A newcomer of E so large that C would have to fall below E's share to make
        // room takes none, and nothing goes.
        let before = s.len();
        let huge = sized("e1", share - 2 * large);
        assert_eq!(s.put(huge, org("E"), T0, bounds), Err(Full::Bytes));
        assert_eq!(s.len(), before, "nothing went for a newcomer refused");
        s.check_accounts();
    }

    /// An identity weighs its signed message, its certificate, its PKI-ID and its
    /// organization, each once, and [`ENTRY_OVERHEAD`].
    #[test]
    fn an_identity_weighs_each_of_its_parts_once() {
        let id = ValidIdentity {
            pki_id: PkiId::new(Bytes::from_static(b"pki")),
            cert: Bytes::from_static(b"certificate"),
            expires: None,
            envelope: Envelope {
                payload: Bytes::from_static(b"payload"),
                signature: Bytes::from_static(b"sig"),
                secret_envelope: None,
            },
        };
        let message = prost::Message::encoded_len(&id.envelope);
        assert!(message > 0);
        assert_eq!(
            weight(&id, org("Org1").as_ref()),
            ENTRY_OVERHEAD + message + "certificate".len() + "pki".len() + "Org1".len()
        );
        assert_eq!(
            weight(&id, None),
            ENTRY_OVERHEAD + message + "certificate".len() + "pki".len()
        );
    }

    /// A share is the larger of its fractions of the two bounds: an organization holding
    /// half the count bound in small identities holds a larger share than one holding a
    /// quarter of it in large identities that take more bytes (but less of the byte
    /// bound), and the newcomer takes the place of one of the former's.
    #[test]
    fn an_organization_holding_more_of_the_count_bound_gives_way_first() {
        let sized = |n: &str, len: usize| ValidIdentity {
            cert: Bytes::from(vec![0u8; len]),
            ..vid(n, None)
        };
        let mut s = ours_a();
        let bounds = Bounds {
            count: 8,
            bytes: 10_000,
        };
        // Other organizations' share of the count, 6 of 8: B holds 4, C 2.
        for who in ["b1", "b2", "b3", "b4"] {
            assert_eq!(s.put(vid(who, None), org("B"), T0, bounds), Ok(Stored::New));
        }
        for who in ["c1", "c2"] {
            assert_eq!(
                s.put(sized(who, 1000), org("C"), T0, bounds),
                Ok(Stored::New)
            );
        }
        let held = |s: &Identities, o: &str| s.held.orgs[&org(o).unwrap()].share;
        let (b, c) = (held(&s, "B"), held(&s, "C"));
        assert!(c.bytes > b.bytes, "C takes more bytes");
        assert!(
            c.bytes * bounds.count < c.count * bounds.bytes,
            "C's is a count share"
        );
        assert!(bounds.usage(b) > bounds.usage(c));
        assert_eq!(
            s.put(vid("d1", None), org("D"), T0, bounds),
            Ok(Stored::Evicting(1))
        );
        assert!(!s.has(&vid("b1", None).pki_id, T0), "B's least used went");
        assert!(s.has(&vid("c1", None).pki_id, T0));
        assert!(s.has(&vid("c2", None).pki_id, T0));
        s.check_accounts();
    }

    /// A newcomer of ours past the byte bound takes as many of other organizations'
    /// places as the bytes it needs, each place counted by what its identity weighs.
    #[test]
    fn ours_take_as_many_places_as_the_byte_bound_needs() {
        let mut s = ours_a();
        let w = s.bytes();
        let bounds = Bounds {
            count: 100,
            bytes: 6 * w,
        };
        for who in ["b1", "b2", "b3", "b4"] {
            assert_eq!(s.put(vid(who, None), org("B"), T0, bounds), Ok(Stored::New));
        }
        // Five of six held: a newcomer of more than two but at most three of them
        // needs two places.
        let large = ValidIdentity {
            cert: Bytes::from(vec![0u8; 2 * w]),
            ..vid("a1", None)
        };
        let weighs = weight(&large, org("A").as_ref());
        assert!(2 * w < weighs && weighs <= 3 * w);
        assert_eq!(s.put(large, org("A"), T0, bounds), Ok(Stored::Evicting(2)));
        assert_eq!(s.bytes(), 3 * w + weighs);
        s.check_accounts();
    }

    /// The accounts check is not vacuous: running totals that drift from the entries
    /// held fail it.
    #[test]
    #[should_panic(expected = "bytes held")]
    fn the_accounts_check_notices_totals_that_drift_from_the_entries() {
        let mut s = ours_a();
        assert_eq!(
            s.put(
                vid("b1", None),
                org("B"),
                T0,
                Bounds {
                    count: 8,
                    bytes: usize::MAX
                }
            ),
            Ok(Stored::New)
        );
        s.check_accounts();
        s.held.bytes += 1;
        s.check_accounts();
    }

    #[test]
    fn keeps_the_first_bounded_and_purges_expired_and_unused_but_not_ours() {
        let mut s = Identities::default();
        s.set_own(vid("me", Some(T0 + SEC)), None, T0);
        let three = Bounds {
            count: 3,
            bytes: usize::MAX,
        };
        assert_eq!(s.put(vid("a", None), None, T0, three), Ok(Stored::New));
        assert_eq!(s.put(vid("a", None), None, T0, three), Ok(Stored::Held));
        assert_eq!(
            s.put(vid("b", Some(T0 + 5 * SEC)), None, T0, three),
            Ok(Stored::New)
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
        assert_eq!(s.put(vid("c", None), None, T0, three), Ok(Stored::New));
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
        assert_eq!(
            s.put(vid("a", None), a.clone(), T0, bounds),
            Ok(Stored::New)
        );
        assert_eq!(
            s.put(vid("b", Some(T0 + SEC)), a.clone(), T0, bounds),
            Ok(Stored::New)
        );
        assert_eq!(
            s.put(vid("c", None), a.clone(), T0, bounds),
            Err(Full::Bytes)
        );
        // An expired entry replaced by a fresh one of its PKI-ID frees its own bytes.
        assert_eq!(
            s.put(vid("b", None), a.clone(), T0 + 2 * SEC, bounds),
            Ok(Stored::New)
        );
        assert_eq!(s.bytes(), bounds.bytes);
        // What leaves gives its bytes back.
        assert_eq!(s.retain(|e| &e.cert[..] != b"a"), 1);
        assert_eq!(
            s.put(vid("c", None), a.clone(), T0, bounds),
            Ok(Stored::New)
        );
        let sum: usize = s.map.values().map(|e| e.weight).sum();
        assert_eq!(s.bytes(), sum);
        s.purge(T0 + 10 * SEC, SEC, 10);
        assert_eq!(s.bytes(), weight(&vid("me", None), a.as_ref()));
    }
}
