//! The identity store (Fabric's identity mapper): PKI-ID → identity, with expiry.

use crate::comm::{Map, new_map};
use crate::error::HandshakeError;
use crate::ids::{PkiId, PkiKey};
use crate::security::{Security, SecurityError};
use crate::time::Instant;
use bytes::Bytes;
use std::collections::BTreeMap;

/// Why [`check_identity_claim`] refused an identity.
#[derive(Debug)]
pub enum IdentityRefusal {
    /// Its expiry cannot be read (Fabric: the identity is unclassifiable).
    Unclassifiable(SecurityError),
    /// The security provider does not accept it.
    Invalid(SecurityError),
    /// It maps to another PKI-ID than the one claimed.
    Mismatch,
}

impl From<IdentityRefusal> for HandshakeError {
    fn from(r: IdentityRefusal) -> Self {
        match r {
            IdentityRefusal::Unclassifiable(e) => HandshakeError::UnclassifiableIdentity(e),
            IdentityRefusal::Invalid(e) => HandshakeError::InvalidIdentity(e),
            IdentityRefusal::Mismatch => HandshakeError::IdentityMismatch,
        }
    }
}

/// The checks Fabric's identity mapper (`Put`) makes of an identity before believing that
/// it belongs to `pki_id`, in Fabric's order: its expiry is readable, the provider
/// validates it, and it maps to `pki_id`. Returns the expiry. The handshake and the
/// membership layer's alive messages both rely on it, so the rule is written once.
pub fn check_identity_claim(
    security: &dyn Security,
    pki_id: &PkiId,
    identity: &[u8],
    now: Instant,
) -> Result<Option<Instant>, IdentityRefusal> {
    let expires = security
        .expiration(identity)
        .map_err(IdentityRefusal::Unclassifiable)?;
    security
        .validate_identity(identity, now)
        .map_err(IdentityRefusal::Invalid)?;
    if security.pki_id_of(identity) != *pki_id {
        return Err(IdentityRefusal::Mismatch);
    }
    Ok(expires)
}

/// What [`IdentityStore::put`] did with an identity it accepted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Put {
    /// Its expiry, if it was stored now (one already held is kept: `None`).
    pub(crate) expires: Option<Instant>,
    /// Whether another identity was evicted to make room for it.
    pub(crate) evicted: bool,
}

#[derive(Clone, Debug)]
pub(crate) struct StoredIdentity {
    pub(crate) identity: Bytes,
    pub(crate) expires: Option<Instant>,
    pub(crate) organization: Option<Bytes>,
    /// The `now` of the last call that used it (Fabric's `lastAccessTime`, refreshed by
    /// its mapper's `Get`): set when it is stored and by [`IdentityStore::mark_used`],
    /// never by storing it again. What the disuse purge reads.
    pub(crate) last_used: Instant,
    /// When it was stored, or last found in use by an eviction (a number unique in the
    /// store, growing).
    age: u64,
}

/// Identities the node has accepted, keyed by PKI-ID. Bounded: when full, the identity
/// longest in the store is evicted, unless `in_use` says it is needed (the node's own is
/// always): then it counts as just stored, and the next longest is looked at. A hash map
/// (seeded from the node's configuration, keyed by [`PkiKey`] as the connection store's):
/// every handshake looks its remote up here, and a tree of thousands of PKI-IDs costs a
/// dozen byte-string compares per look-up. Beside it, the same keys by age, so that an
/// eviction costs a look at the oldest few, not a scan of them all: with membership
/// sharing every identity it learns, a full store of 16,384 took 227 µs per newcomer,
/// and the identity pull may bring tens of thousands of a hostile organization's.
#[derive(Debug)]
pub(crate) struct IdentityStore {
    by_pki: Map<PkiKey, StoredIdentity>,
    /// Every key of `by_pki` under its entry's `age`, the oldest first.
    by_age: BTreeMap<u64, PkiKey>,
    capacity: usize,
    seq: u64,
    own: PkiId,
}

impl IdentityStore {
    pub(crate) fn new(capacity: usize, own: PkiId, seed: u64) -> Self {
        IdentityStore {
            by_pki: new_map(seed),
            by_age: BTreeMap::new(),
            capacity,
            seq: 0,
            own,
        }
    }

    /// Fabric's `Put`: checks in Fabric's order, then stores (keeping an existing entry).
    /// Returns what became of it: a newly stored identity's expiry is for the caller to
    /// arm a timer.
    pub(crate) fn put(
        &mut self,
        security: &dyn Security,
        pki_id: &PkiId,
        identity: &Bytes,
        now: Instant,
        in_use: impl Fn(&[u8]) -> bool,
    ) -> Result<Put, HandshakeError> {
        if pki_id.is_empty() {
            return Err(HandshakeError::NoPkiId);
        }
        if identity.is_empty() {
            return Err(HandshakeError::NoIdentity);
        }
        let expires = check_identity_claim(security, pki_id, identity, now)?;
        if let Some(existing) = self.by_pki.get(pki_id.as_bytes()) {
            // Fabric keeps the identity it has; an expired one would already be purged.
            if existing.expires.is_some_and(|e| e <= now) {
                return Err(HandshakeError::IdentityExpired);
            }
            return Ok(Put::default());
        }
        if expires.is_some_and(|e| e <= now) {
            return Err(HandshakeError::IdentityExpired);
        }
        let evicted = self.by_pki.len() >= self.capacity && self.evict_one(&in_use);
        let key = PkiKey::from(pki_id);
        let age = self.next_age();
        self.by_age.insert(age, key.clone());
        self.by_pki.insert(
            key,
            StoredIdentity {
                identity: identity.clone(),
                expires,
                organization: security.organization_of(identity),
                last_used: now,
                age,
            },
        );
        Ok(Put { expires, evicted })
    }

    fn next_age(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Evicts the oldest identity not in use; those in use (and our own) it passes count
    /// as just stored, so that the next eviction does not look at them again. Looks at
    /// each identity at most once: if all are in use, none goes (the store then holds one
    /// more than its bound, as many as connections need). Whether one went.
    fn evict_one(&mut self, in_use: &impl Fn(&[u8]) -> bool) -> bool {
        for _ in 0..self.by_age.len() {
            let Some((_, key)) = self.by_age.pop_first() else {
                return false;
            };
            if key.as_slice() != self.own.as_bytes() && !in_use(key.as_slice()) {
                self.by_pki.remove(key.as_slice());
                return true;
            }
            let age = self.next_age();
            if let Some(e) = self.by_pki.get_mut(key.as_slice()) {
                e.age = age;
            }
            self.by_age.insert(age, key);
        }
        false
    }

    /// Removes `pki_id`'s identity from both maps.
    fn remove(&mut self, pki_id: &[u8]) -> Option<StoredIdentity> {
        let e = self.by_pki.remove(pki_id)?;
        self.by_age.remove(&e.age);
        Some(e)
    }

    pub(crate) fn get(&self, pki_id: &PkiId) -> Option<&StoredIdentity> {
        self.by_pki.get(pki_id.as_bytes())
    }

    /// Fabric's `fetchIdentity`: marks `pki_id`'s identity as used at `now` (a later use
    /// never made earlier by an input carrying an older `now`). Returns whether one is
    /// held.
    pub(crate) fn mark_used(&mut self, pki_id: &[u8], now: Instant) -> bool {
        match self.by_pki.get_mut(pki_id) {
            Some(e) => {
                e.last_used = e.last_used.max(now);
                true
            }
            None => false,
        }
    }

    /// Whether an identity other than the node's own is held: the disuse sweep has
    /// nothing to look at otherwise.
    pub(crate) fn holds_others(&self) -> bool {
        let own = usize::from(self.by_pki.contains_key(self.own.as_bytes()));
        self.by_pki.len() > own
    }

    /// Fabric's `validateIdentities` usage check: removes every identity but the node's
    /// own whose last use is more than `threshold` before `now`, and returns them with
    /// their last use, in PKI-ID order (so what the caller does with them does not depend
    /// on the hash map's order).
    pub(crate) fn purge_unused(
        &mut self,
        now: Instant,
        threshold: core::time::Duration,
    ) -> Vec<(PkiId, Instant)> {
        self.remove_others_where(|v| (v.last_used + threshold < now).then_some(v.last_used))
    }

    /// Removes every identity but the node's own for which `verdict` says why, and returns
    /// them with it in PKI-ID order (so what the caller does with them does not depend on
    /// the hash map's order): the one walk the usage purge and revalidation share.
    fn remove_others_where<T>(
        &mut self,
        mut verdict: impl FnMut(&StoredIdentity) -> Option<T>,
    ) -> Vec<(PkiId, T)> {
        let own = self.own.as_bytes();
        let mut gone: Vec<(PkiId, T)> = self
            .by_pki
            .iter()
            .filter(|(k, _)| k.as_slice() != own)
            .filter_map(|(k, v)| Some((k.to_pki_id(), verdict(v)?)))
            .collect();
        gone.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        for (pki, _) in &gone {
            self.remove(pki.as_bytes());
        }
        gone
    }

    /// Removes the identity if it has expired by `now`; returns whether it did.
    pub(crate) fn purge_if_expired(&mut self, pki_id: &PkiId, now: Instant) -> bool {
        let expired = self
            .by_pki
            .get(pki_id.as_bytes())
            .is_some_and(|s| s.expires.is_some_and(|e| e <= now));
        if expired {
            self.remove(pki_id.as_bytes());
        }
        expired
    }

    pub(crate) fn len(&self) -> usize {
        self.by_pki.len()
    }

    /// Panics unless the keys by age are exactly the stored ones, under their ages (for
    /// tests and the fuzz targets' invariants).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn check_ages(&self) {
        assert_eq!(self.by_age.len(), self.by_pki.len(), "one age per identity");
        for (age, key) in &self.by_age {
            assert_eq!(self.by_pki.get(key.as_slice()).map(|e| e.age), Some(*age));
        }
    }

    /// Fabric's `SuspectPeers` with the provider as judge: validates every stored identity
    /// but the node's own again at `now`, removes those refused and returns them, in
    /// PKI-ID order, with the provider's reason.
    pub(crate) fn revalidate(
        &mut self,
        security: &dyn Security,
        now: Instant,
    ) -> Vec<(PkiId, SecurityError)> {
        self.remove_others_where(|v| security.validate_identity(&v.identity, now).err())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::TestOnlyHmacSecurity;

    fn id(s: &str) -> (PkiId, Bytes) {
        let b = Bytes::copy_from_slice(s.as_bytes());
        (PkiId(b.clone()), b)
    }

    /// Full, the store evicts the identity stored first among those not in use (never its
    /// own), whatever order the hash map keeps them in; one found in use counts as just
    /// stored from then on.
    #[test]
    fn a_full_store_evicts_the_oldest_identity_not_in_use() {
        let sec = TestOnlyHmacSecurity::new("own");
        let now = Instant::from_unix_secs(1);
        let names = ["own", "p0", "p1", "p2", "p3"];
        let mut store = IdentityStore::new(names.len(), id("own").0, 7);
        for n in names {
            let (pki, identity) = id(n);
            store.put(&sec, &pki, &identity, now, |_| false).unwrap();
        }
        assert_eq!(store.len(), names.len());
        let put = |store: &mut IdentityStore, n: &str, in_use: &dyn Fn(&[u8]) -> bool| {
            let (pki, identity) = id(n);
            store.put(&sec, &pki, &identity, now, in_use).unwrap();
            store.check_ages();
            let mut held: Vec<String> = store
                .by_pki
                .keys()
                .map(|k| String::from_utf8(k.as_slice().to_vec()).unwrap())
                .collect();
            held.sort();
            held
        };
        // p0 is in use: p1, the next oldest, goes.
        let held = put(&mut store, "p4", &|p| p == b"p0");
        assert_eq!(held, ["own", "p0", "p2", "p3", "p4"]);
        // Nothing is in use now. p0, found in use just before p4 was stored, counts as
        // stored then: p2 and p3 go first, then p0, then p4.
        let held = put(&mut store, "p5", &|_| false);
        assert_eq!(held, ["own", "p0", "p3", "p4", "p5"]);
        assert_eq!(
            put(&mut store, "p6", &|_| false),
            ["own", "p0", "p4", "p5", "p6"]
        );
        assert_eq!(
            put(&mut store, "p7", &|_| false),
            ["own", "p4", "p5", "p6", "p7"]
        );
        assert_eq!(
            put(&mut store, "p8", &|_| false),
            ["own", "p5", "p6", "p7", "p8"]
        );
        // All in use: none goes, the store holds one more than its bound.
        assert_eq!(
            put(&mut store, "p9", &|_| true),
            ["own", "p5", "p6", "p7", "p8", "p9"]
        );
        // Removals leave the two maps agreeing.
        assert!(store.remove(b"p7").is_some());
        store.check_ages();
    }

    /// Fabric's usage purge: an identity whose last use is more than the threshold ago is
    /// purged (one exactly the threshold ago is not: Fabric's `Before`), the node's own
    /// never however long unused; a use (`mark_used`) starts the threshold again, storing
    /// the identity again does not, and a use carrying an older `now` does not move the
    /// last use back.
    #[test]
    fn identities_unused_for_the_threshold_are_purged_never_our_own() {
        let sec = TestOnlyHmacSecurity::new("own");
        let t0 = Instant::from_unix_secs(1_000);
        let hour = core::time::Duration::from_secs(3600);
        let ns = core::time::Duration::from_nanos(1);
        let mut store = IdentityStore::new(8, id("own").0, 7);
        for n in ["own", "p2", "p0", "p1"] {
            let (pki, identity) = id(n);
            store.put(&sec, &pki, &identity, t0, |_| false).unwrap();
        }
        let half = t0 + hour / 2;
        assert!(store.mark_used(b"p1", half));
        assert!(store.mark_used(b"p1", t0), "an older use is taken");
        assert!(!store.mark_used(b"nobody", half));
        // p2 is stored again later: Fabric's `Put` keeps the first and its last use.
        let (pki, identity) = id("p2");
        store.put(&sec, &pki, &identity, half, |_| false).unwrap();
        assert!(store.purge_unused(t0 + hour, hour).is_empty());
        let purged = store.purge_unused(t0 + hour + ns, hour);
        let names: Vec<_> = purged.iter().map(|(p, _)| p.as_bytes().to_vec()).collect();
        assert_eq!(names, [b"p0".to_vec(), b"p2".to_vec()], "in PKI-ID order");
        assert!(purged.iter().all(|(_, last)| *last == t0));
        store.check_ages();
        assert!(store.holds_others());
        assert!(store.purge_unused(half + hour, hour).is_empty());
        let purged = store.purge_unused(half + hour + ns, hour);
        assert_eq!(purged, [(id("p1").0, half)]);
        assert!(!store.holds_others());
        // Ours stays, a hundred hours unused.
        assert!(store.purge_unused(t0 + 100 * hour, hour).is_empty());
        assert!(store.get(&id("own").0).is_some());
        assert_eq!(store.len(), 1);
        store.check_ages();
    }

    /// Revalidation asks the provider about every identity but the node's own, forgets
    /// those refused and reports them in PKI-ID order.
    #[test]
    fn revalidation_forgets_the_identities_the_provider_now_refuses() {
        let now = Instant::from_unix_secs(1);
        let mut store = IdentityStore::new(8, id("own").0, 7);
        for n in ["own", "p2", "p0", "p1"] {
            let (pki, identity) = id(n);
            store
                .put(
                    &TestOnlyHmacSecurity::new("own"),
                    &pki,
                    &identity,
                    now,
                    |_| false,
                )
                .unwrap();
        }
        let strict = TestOnlyHmacSecurity::new("own")
            .rejecting("p2")
            .rejecting("p0")
            .rejecting("own");
        let refused = store.revalidate(&strict, now);
        let names: Vec<_> = refused.iter().map(|(p, _)| p.as_bytes().to_vec()).collect();
        assert_eq!(names, [b"p0".to_vec(), b"p2".to_vec()]);
        assert!(store.get(&id("p1").0).is_some() && store.get(&id("own").0).is_some());
        assert!(store.get(&id("p0").0).is_none() && store.get(&id("p2").0).is_none());
        assert!(store.revalidate(&strict, now).is_empty());
    }
}
