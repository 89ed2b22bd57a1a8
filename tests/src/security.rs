//! Providers that scenarios need beyond Fabric's test provider. Both sign with Fabric's
//! test HMAC, so they are **test only**: anyone can forge their signatures.

use bytes::Bytes;
use fabric_gossip_core::{Instant, PkiId, Security, SecurityError, TestOnlyHmacSecurity};

/// Fabric's test provider with some of its identity mappings replaced by `M`: signing,
/// verifying, validation and expiry stay the test provider's.
#[derive(Clone, Debug)]
pub struct Remapped<M> {
    inner: TestOnlyHmacSecurity,
    map: M,
}

/// The mappings a [`Remapped`] provider replaces; each defaults to the test provider's.
pub trait IdentityMap: Send {
    /// The PKI-ID of `identity`.
    fn pki_id_of(&self, inner: &TestOnlyHmacSecurity, identity: &[u8]) -> PkiId {
        inner.pki_id_of(identity)
    }
    /// The organization of `identity`.
    fn organization_of(&self, inner: &TestOnlyHmacSecurity, identity: &[u8]) -> Option<Bytes> {
        inner.organization_of(identity)
    }
}

impl<M: IdentityMap> Security for Remapped<M> {
    fn own_identity(&self) -> Bytes {
        self.inner.own_identity()
    }
    fn sign(&self, msg: &[u8]) -> Result<Bytes, SecurityError> {
        self.inner.sign(msg)
    }
    fn verify(&self, identity: &[u8], sig: &[u8], msg: &[u8]) -> Result<(), SecurityError> {
        self.inner.verify(identity, sig, msg)
    }
    fn validate_identity(&self, identity: &[u8], now: Instant) -> Result<(), SecurityError> {
        self.inner.validate_identity(identity, now)
    }
    fn expiration(&self, identity: &[u8]) -> Result<Option<Instant>, SecurityError> {
        self.inner.expiration(identity)
    }
    fn pki_id_of(&self, identity: &[u8]) -> PkiId {
        self.map.pki_id_of(&self.inner, identity)
    }
    fn organization_of(&self, identity: &[u8]) -> Option<Bytes> {
        self.map.organization_of(&self.inner, identity)
    }
}

/// Organization = the part of the identity before `|`.
#[derive(Clone, Copy, Debug)]
pub struct OrgPrefix;

impl IdentityMap for OrgPrefix {
    fn organization_of(&self, _: &TestOnlyHmacSecurity, identity: &[u8]) -> Option<Bytes> {
        let end = identity.iter().position(|b| *b == b'|')?;
        Some(Bytes::copy_from_slice(&identity[..end]))
    }
}

/// Our own PKI-ID = `alias:` + our identity; every other identity's as the test provider
/// computes it. Only the node itself is odd: a peer judging its handshake finds the PKI-ID
/// it claims at odds with its identity, while it finds nothing wrong with the peer's. Had it
/// aliased every identity, both sides would refuse each other, and which refusal came first
/// would be a race (a mutual-TLS run once saw the dialler's first).
#[derive(Clone, Copy, Debug)]
pub struct AliasPki;

impl IdentityMap for AliasPki {
    fn pki_id_of(&self, inner: &TestOnlyHmacSecurity, identity: &[u8]) -> PkiId {
        if identity != &inner.own_identity()[..] {
            return inner.pki_id_of(identity);
        }
        let mut v = b"alias:".to_vec();
        v.extend_from_slice(identity);
        PkiId::from(v)
    }
}

/// Fabric's test provider with organizations: identity = `ORG|endpoint#generation`,
/// PKI-ID = identity, organization = the part before `|`. Identity-switch scenarios need
/// a provider that can tell organizations apart from the identity bytes alone, since the
/// dialling node judges an identity it has never been told about.
pub type OrgSecurity = Remapped<OrgPrefix>;

impl OrgSecurity {
    /// The provider of a node of `org` at `endpoint`, identity generation `generation`.
    pub fn new(org: &str, endpoint: &str, generation: u32) -> Self {
        Remapped {
            inner: TestOnlyHmacSecurity::new(format!("{org}|{endpoint}#{generation}")),
            map: OrgPrefix,
        }
    }
}

/// Fabric's test provider with a different PKI-ID for itself: `alias:` + its identity.
/// A node using it claims a PKI-ID that a node with the ordinary mapping computes
/// differently, which is exactly the "PKI-ID doesn't match the identity" handshake error.
pub type AliasPkiSecurity = Remapped<AliasPki>;

impl AliasPkiSecurity {
    /// Identity = `endpoint` (generation 0) or `endpoint#generation`.
    pub fn new(endpoint: &str, generation: u32) -> Self {
        let id = if generation == 0 {
            endpoint.to_string()
        } else {
            format!("{endpoint}#{generation}")
        };
        Remapped {
            inner: TestOnlyHmacSecurity::new(id),
            map: AliasPki,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn org_is_the_prefix_and_alias_differs() {
        let s = OrgSecurity::new("Org1", "127.0.0.1:7051", 2);
        assert_eq!(
            s.own_identity(),
            Bytes::from_static(b"Org1|127.0.0.1:7051#2")
        );
        assert_eq!(
            s.organization_of(b"Org2|x#0"),
            Some(Bytes::from_static(b"Org2"))
        );
        assert_eq!(s.organization_of(b"no org"), None);
        let a = AliasPkiSecurity::new("e", 0);
        assert_eq!(a.pki_id_of(b"e"), PkiId::from("alias:e"));
        assert_ne!(
            a.pki_id_of(b"e"),
            TestOnlyHmacSecurity::new("e").pki_id_of(b"e")
        );
        // Others' PKI-IDs as the ordinary mapping has them: only the node itself is odd.
        assert_eq!(
            a.pki_id_of(b"f"),
            TestOnlyHmacSecurity::new("e").pki_id_of(b"f")
        );
    }
}
