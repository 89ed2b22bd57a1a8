//! The identity store (Fabric's identity mapper): PKI-ID → identity, with expiry.

use crate::comm::{Map, new_map};
use crate::error::HandshakeError;
use crate::ids::{PkiId, PkiKey};
use crate::security::{Security, SecurityError};
use crate::time::Instant;
use bytes::Bytes;

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

#[derive(Clone, Debug)]
pub(crate) struct StoredIdentity {
    pub(crate) identity: Bytes,
    pub(crate) expires: Option<Instant>,
    pub(crate) organization: Option<Bytes>,
    inserted: u64,
}

/// Identities the node has accepted, keyed by PKI-ID. Bounded: when full, the oldest
/// identity that `in_use` says is not needed is evicted. A hash map (seeded from the
/// node's configuration, keyed by [`PkiKey`] as the connection store's): every handshake
/// looks its remote up here, and a tree of thousands of PKI-IDs costs a dozen byte-string
/// compares per look-up. Nothing depends on its iteration order: eviction picks the smallest
/// insertion number, which is unique.
#[derive(Debug)]
pub(crate) struct IdentityStore {
    by_pki: Map<PkiKey, StoredIdentity>,
    capacity: usize,
    seq: u64,
    own: PkiId,
}

impl IdentityStore {
    pub(crate) fn new(capacity: usize, own: PkiId, seed: u64) -> Self {
        IdentityStore {
            by_pki: new_map(seed),
            capacity,
            seq: 0,
            own,
        }
    }

    /// Fabric's `Put`: checks in Fabric's order, then stores (keeping an existing entry).
    /// Returns the expiry of a newly stored identity, for the caller to arm a timer.
    pub(crate) fn put(
        &mut self,
        security: &dyn Security,
        pki_id: &PkiId,
        identity: &Bytes,
        now: Instant,
        in_use: impl Fn(&[u8]) -> bool,
    ) -> Result<Option<Instant>, HandshakeError> {
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
            return Ok(None);
        }
        if expires.is_some_and(|e| e <= now) {
            return Err(HandshakeError::IdentityExpired);
        }
        if self.by_pki.len() >= self.capacity {
            self.evict_one(&in_use);
        }
        self.seq += 1;
        self.by_pki.insert(
            PkiKey::from(pki_id),
            StoredIdentity {
                identity: identity.clone(),
                expires,
                organization: security.organization_of(identity),
                inserted: self.seq,
            },
        );
        Ok(expires)
    }

    fn evict_one(&mut self, in_use: &impl Fn(&[u8]) -> bool) {
        let victim = self
            .by_pki
            .iter()
            .filter(|(k, _)| k.as_slice() != self.own.as_bytes() && !in_use(k.as_slice()))
            .min_by_key(|(_, v)| v.inserted)
            .map(|(k, _)| k.clone());
        if let Some(k) = victim {
            self.by_pki.remove(k.as_slice());
        }
    }

    pub(crate) fn get(&self, pki_id: &PkiId) -> Option<&StoredIdentity> {
        self.by_pki.get(pki_id.as_bytes())
    }

    /// Removes the identity if it has expired by `now`; returns whether it did.
    pub(crate) fn purge_if_expired(&mut self, pki_id: &PkiId, now: Instant) -> bool {
        let expired = self
            .by_pki
            .get(pki_id.as_bytes())
            .is_some_and(|s| s.expires.is_some_and(|e| e <= now));
        if expired {
            self.by_pki.remove(pki_id.as_bytes());
        }
        expired
    }

    pub(crate) fn len(&self) -> usize {
        self.by_pki.len()
    }

    /// Fabric's `SuspectPeers` with the provider as judge: validates every stored identity
    /// but the node's own again at `now`, removes those refused and returns them, in
    /// PKI-ID order, with the provider's reason.
    pub(crate) fn revalidate(
        &mut self,
        security: &dyn Security,
        now: Instant,
    ) -> Vec<(PkiId, SecurityError)> {
        let own = self.own.as_bytes();
        let mut refused: Vec<(PkiId, SecurityError)> = self
            .by_pki
            .iter()
            .filter(|(k, _)| k.as_slice() != own)
            .filter_map(|(k, v)| {
                let error = security.validate_identity(&v.identity, now).err()?;
                Some((k.to_pki_id(), error))
            })
            .collect();
        refused.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        for (pki, _) in &refused {
            self.by_pki.remove(pki.as_bytes());
        }
        refused
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

    /// Full, the store evicts the identity inserted first among those not in use (never
    /// its own), whatever order the hash map keeps them in.
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
        // p0 is in use: p1, the next oldest, goes.
        let (p4, identity) = id("p4");
        let in_use = |p: &[u8]| p == b"p0";
        store.put(&sec, &p4, &identity, now, in_use).unwrap();
        assert_eq!(store.len(), names.len());
        assert!(store.get(&id("p1").0).is_none());
        for kept in ["own", "p0", "p2", "p3", "p4"] {
            assert!(store.get(&id(kept).0).is_some(), "{kept} kept");
        }
        // Nothing is in use now: p0 is the oldest left.
        let (p5, identity) = id("p5");
        store.put(&sec, &p5, &identity, now, |_| false).unwrap();
        assert!(store.get(&id("p0").0).is_none() && store.get(&id("own").0).is_some());
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
