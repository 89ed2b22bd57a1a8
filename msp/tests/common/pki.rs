// Test PKI: two organizations generated with a seeded RNG, and a wrapper provider that
// misbehaves in exactly one way, to check that each refusal carries its own error.
use bytes::Bytes;
use core::time::Duration;
use fabric_gossip_core::{Instant, PkiId, Security, SecurityError};
use fabric_gossip_msp::dev::{self, Curve, DevCa, DevCert, DevOrg, DevPeer, OrgSpec, Validity};
use fabric_gossip_msp::{LoadError, MspSecurity, TrustStore};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

pub const ORG1: &str = "Org1MSP";
pub const ORG2: &str = "Org2MSP";
pub const DAY: Duration = Duration::from_secs(24 * 3600);

/// The clock of every test (the core harness's start time).
pub fn now() -> Instant {
    Instant::from_unix_secs(1_700_000_000)
}

pub fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

/// A P-256 root CA `ca.{domain}` of organization `domain`, valid for [`year`].
pub fn root_ca(domain: &str, rng: &mut ChaCha20Rng) -> DevCa {
    DevCa::root(&format!("ca.{domain}"), domain, Curve::P256, year(), rng).unwrap()
}

/// A root CA `ca.{domain}`, an intermediate `ica.{domain}` under it, and a member
/// identity `peer0.{domain}` the intermediate issued, all valid for [`year`].
pub fn intermediate_chain(domain: &str, rng: &mut ChaCha20Rng) -> (DevCa, DevCa, DevCert) {
    let root = root_ca(domain, rng);
    let ica = root
        .intermediate(&format!("ica.{domain}"), year(), rng)
        .unwrap();
    let leaf = ica
        .issue(
            &format!("peer0.{domain}"),
            dev::Usage::Identity,
            &[],
            year(),
            rng,
        )
        .unwrap();
    (root, ica, leaf)
}

/// Valid from a day before `now()` for a year.
pub fn year() -> Validity {
    Validity {
        not_before: Instant::from_unix_secs(1_700_000_000 - 24 * 3600),
        not_after: now() + 365 * DAY,
    }
}

/// A provider for `msp_id` from `cert`'s certificate and the key `key_pem`, as PEM files
/// would give them: the loading tests pair certificates with keys that are not theirs.
pub fn load(
    msp_id: &str,
    cert: &DevCert,
    key_pem: &str,
    trust: TrustStore,
) -> Result<MspSecurity, LoadError> {
    MspSecurity::new(
        msp_id,
        cert.cert_pem().as_bytes(),
        key_pem.as_bytes(),
        trust,
    )
}

pub struct Pki {
    pub orgs: Vec<DevOrg>,
    pub trust: TrustStore,
    pub rng: ChaCha20Rng,
}

/// Org1MSP (org1.example.com, 2 peers) and Org2MSP (org2.example.com, 1 peer), both
/// trusted.
pub fn two_orgs() -> Pki {
    let mut rng = rng(7);
    let orgs = dev::generate_in_memory(
        &[
            OrgSpec::new(ORG1, "org1.example.com", 2),
            OrgSpec::new(ORG2, "org2.example.com", 1),
        ],
        year(),
        &mut rng,
    )
    .unwrap();
    let trust = dev::trust_all(&orgs).unwrap();
    Pki { orgs, trust, rng }
}

impl Pki {
    pub fn security(&self, org: usize, peer: usize) -> MspSecurity {
        self.security_for(org, &self.orgs[org].peers[peer])
    }

    pub fn security_for(&self, org: usize, peer: &DevPeer) -> MspSecurity {
        self.orgs[org].security(peer, self.trust.clone()).unwrap()
    }

    /// A new identity for `name` in `org`, valid for `validity`.
    pub fn issue(&mut self, org: usize, name: &str, validity: Validity) -> DevPeer {
        self.orgs[org]
            .issue_peer(name, validity, &mut self.rng)
            .unwrap()
    }

    /// A certificate valid from [`year`]'s start until `not_after`: expired when that is
    /// before [`now`], or about to expire.
    pub fn issue_until(&mut self, org: usize, name: &str, not_after: Instant) -> DevPeer {
        let not_before = year().not_before;
        self.issue(
            org,
            name,
            Validity {
                not_before,
                not_after,
            },
        )
    }
}

/// A CRL of `ca` revoking `revoked`'s identities, PEM, issued at [`now`].
pub fn crl(ca: &DevCa, revoked: &[&DevPeer]) -> String {
    let ders: Vec<&[u8]> = revoked
        .iter()
        .map(|p| p.identity.cert_der.as_slice())
        .collect();
    ca.revocation_list(&ders, now()).unwrap()
}

/// `trust` with a CRL of `ca` revoking `revoked`, configured for `msp_id`.
pub fn revoking(trust: &TrustStore, msp_id: &str, ca: &DevCa, revoked: &[&DevPeer]) -> TrustStore {
    let mut trust = trust.clone();
    trust
        .add_crl_pem(msp_id, crl(ca, revoked).as_bytes())
        .unwrap();
    trust
}

/// The same ECDSA signature with `s` replaced by `n - s` (its high-S twin when `s` was low),
/// computed with the curve crates' scalar negation.
pub fn high_s_twin(der: &[u8]) -> Vec<u8> {
    if let Ok(sig) = p256::ecdsa::Signature::from_der(der) {
        let (r, s) = sig.split_scalars();
        let neg = -s;
        let twin = p256::ecdsa::Signature::from_scalars(r.to_bytes(), neg.to_bytes()).unwrap();
        return twin.to_der().as_bytes().to_vec();
    }
    let sig = p384::ecdsa::Signature::from_der(der).unwrap();
    let (r, s) = sig.split_scalars();
    let neg = -s;
    let twin = p384::ecdsa::Signature::from_scalars(r.to_bytes(), neg.to_bytes()).unwrap();
    twin.to_der().as_bytes().to_vec()
}

/// Flips a bit inside `s`, keeping the DER well-formed.
pub fn tamper(der: &[u8]) -> Vec<u8> {
    let mut v = der.to_vec();
    let last = v.len() - 1;
    v[last] ^= 0x01;
    v
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Misbehave {
    /// Signatures have one bit flipped.
    TamperedSignature,
    /// Signatures are replaced by their high-S twin.
    HighS,
    /// The node claims a PKI-ID that is not the hash of its identity.
    WrongPkiId,
    /// The node presents `identity` (set with `presenting`), whatever its provider holds.
    ForeignIdentity,
}

/// A real provider with one misbehaviour. It accepts its own (possibly bad) identity so
/// that its core starts; everything about remote identities is the real provider's.
pub struct Rogue {
    pub inner: MspSecurity,
    pub how: Misbehave,
    pub identity: Option<Bytes>,
}

impl Rogue {
    pub fn new(inner: MspSecurity, how: Misbehave) -> Self {
        Rogue {
            inner,
            how,
            identity: None,
        }
    }

    pub fn presenting(mut self, identity: Bytes) -> Self {
        self.identity = Some(identity);
        self
    }

    fn own(&self) -> Bytes {
        self.identity
            .clone()
            .unwrap_or_else(|| self.inner.own_identity())
    }
}

impl Security for Rogue {
    fn own_identity(&self) -> Bytes {
        self.own()
    }
    fn sign(&self, msg: &[u8]) -> Result<Bytes, SecurityError> {
        let sig = self.inner.sign(msg)?;
        Ok(match self.how {
            Misbehave::TamperedSignature => tamper(&sig).into(),
            Misbehave::HighS => high_s_twin(&sig).into(),
            _ => sig,
        })
    }
    fn verify(
        &self,
        identity: &[u8],
        signature: &[u8],
        message: &[u8],
    ) -> Result<(), SecurityError> {
        self.inner.verify(identity, signature, message)
    }
    fn validate_identity(&self, identity: &[u8], now: Instant) -> Result<(), SecurityError> {
        if identity == self.own().as_ref() {
            return Ok(());
        }
        self.inner.validate_identity(identity, now)
    }
    fn expiration(&self, identity: &[u8]) -> Result<Option<Instant>, SecurityError> {
        if identity == self.own().as_ref() {
            return Ok(None);
        }
        self.inner.expiration(identity)
    }
    fn pki_id_of(&self, identity: &[u8]) -> PkiId {
        if self.how == Misbehave::WrongPkiId && identity == self.own().as_ref() {
            return PkiId::from(vec![0xee; 32]);
        }
        self.inner.pki_id_of(identity)
    }
    fn organization_of(&self, identity: &[u8]) -> Option<Bytes> {
        self.inner.organization_of(identity)
    }
}
