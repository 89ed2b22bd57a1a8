//! The cast: the peers, identities, certificates and messages every target uses.

use super::*;

/// The core under test.
pub(super) const ME: &str = "m-local:7051";
/// Remote peers (test provider: identity = PKI-ID = endpoint). `a` sorts below `ME` and
/// `y`/`z` above it, so both branches of the crossing rule are reachable; the last one's
/// identity expires three seconds in.
pub(super) const PEERS: [&str; 5] = [
    "a-peer:7051",
    "b-peer:7051",
    "y-peer:7051",
    "z-peer:7051",
    "e-expiring:7051",
];
/// An identity the provider refuses, and one that expired before the run.
pub(super) const REJECTED: &str = "rejected:7051";
pub(super) const EXPIRED: &str = "expired:7051";

pub(super) fn t0() -> Instant {
    Instant::from_unix_secs(1_700_000_000)
}

pub(super) fn security() -> CastSecurity {
    CastSecurity {
        inner: TestOnlyHmacSecurity::new(ME)
            .rejecting(Bytes::from_static(REJECTED.as_bytes()))
            .expiring(
                Bytes::from_static(EXPIRED.as_bytes()),
                t0() - Duration::from_secs(1),
            )
            .expiring(
                Bytes::from_static(PEERS[4].as_bytes()),
                t0() + Duration::from_secs(3),
            ),
        revoked: Arc::default(),
    }
}

/// The cast's provider, whose verdicts can change while the core runs, as a real one's do
/// when a CRL arrives or an organization is dropped: `Op::Revoke` revokes an identity, then
/// revalidates.
#[derive(Clone)]
pub(super) struct CastSecurity {
    inner: TestOnlyHmacSecurity,
    /// Identities revoked so far, shared with the driver.
    pub(super) revoked: Arc<std::sync::Mutex<BTreeSet<Vec<u8>>>>,
}

impl CastSecurity {
    fn is_revoked(&self, identity: &[u8]) -> bool {
        self.revoked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(identity)
    }
}

impl crate::Security for CastSecurity {
    fn own_identity(&self) -> Bytes {
        self.inner.own_identity()
    }

    fn sign(&self, msg: &[u8]) -> Result<Bytes, crate::SecurityError> {
        self.inner.sign(msg)
    }

    fn verify(&self, identity: &[u8], sig: &[u8], msg: &[u8]) -> Result<(), crate::SecurityError> {
        self.inner.verify(identity, sig, msg)
    }

    fn validate_identity(&self, identity: &[u8], now: Instant) -> Result<(), crate::SecurityError> {
        if self.is_revoked(identity) {
            return Err(crate::SecurityError::Revoked(
                "revoked by the fuzzer".into(),
            ));
        }
        self.inner.validate_identity(identity, now)
    }

    fn expiration(&self, identity: &[u8]) -> Result<Option<Instant>, crate::SecurityError> {
        self.inner.expiration(identity)
    }

    fn pki_id_of(&self, identity: &[u8]) -> PkiId {
        self.inner.pki_id_of(identity)
    }

    fn organization_of(&self, identity: &[u8]) -> Option<Bytes> {
        self.inner.organization_of(identity)
    }

    fn claimed_organization(&self, identity: &[u8]) -> Option<Bytes> {
        self.inner.claimed_organization(identity)
    }
}

/// The TLS certificate hash peer `k` presents as a client (`inbound` streams, from our
/// side) or as a server. Index `PEERS.len()` is our own.
pub(super) fn cert(k: usize, client: bool) -> CertHash {
    let base = if client { 0x10 } else { 0x80 };
    [base + k as u8; 32]
}

pub(super) const WRONG_CERT: CertHash = [0xee; 32];

pub(super) fn own_tls() -> TlsHashes {
    TlsHashes {
        client_cert_hash: cert(PEERS.len(), true),
        server_cert_hash: cert(PEERS.len(), false),
    }
}

pub(super) fn conn_message(pki: &[u8], identity: &[u8], hash: &[u8], probe: bool) -> GossipMessage {
    crate::message::conn_establish_message(
        Bytes::copy_from_slice(pki),
        Bytes::copy_from_slice(identity),
        Bytes::copy_from_slice(hash),
        probe,
    )
}

/// A valid, signed ConnEstablish of peer `k` (`PEERS.len()` and above: `ME`), with the
/// certificate hash of `cert_kind` (0: the right one for the role, 1: wrong, 2: empty).
pub(super) fn d_hello(k: usize, inbound: bool, cert_kind: u8) -> Bytes {
    hello_with(k, inbound, cert_kind, false)
}

/// [`d_hello`], for a probe when `probe`.
pub(super) fn hello_with(k: usize, inbound: bool, cert_kind: u8, probe: bool) -> Bytes {
    let name = PEERS.get(k).copied().unwrap_or(ME);
    let hash = match cert_kind % 3 {
        0 => cert(k.min(PEERS.len()), inbound).to_vec(),
        1 => WRONG_CERT.to_vec(),
        _ => Vec::new(),
    };
    crate::scripted::conn_establish(name.as_bytes(), name.as_bytes(), &hash, probe, true)
}

/// Marks the data messages the harness sends, so order checks ignore look-alikes.
pub(super) const DATA_MARK: &[u8] = b"fuzz-seq";

pub(super) fn data_message(seq: u64) -> GossipMessage {
    crate::data_message(seq, Bytes::from_static(DATA_MARK))
}

pub(super) fn data_seq(msg: &GossipMessage) -> Option<u64> {
    crate::data_payload(msg)
        .filter(|(_, data)| data.as_ref() == DATA_MARK)
        .map(|(seq, _)| seq)
}

pub(super) fn is_conn_establish(envelope: &Bytes) -> bool {
    SignedMessage::from_envelope_bytes(envelope.clone())
        .is_ok_and(|m| matches!(m.message().content, Some(gossip_message::Content::Conn(_))))
}

/// Every counter of `Stats` (plain ones, then the handshake failures), for the
/// monotonicity check.
pub(super) fn counters(s: &Stats) -> Vec<u64> {
    let mut v: Vec<u64> = s.counters().into_iter().map(|(_, n)| n).collect();
    v.extend_from_slice(&s.handshake_failures);
    v
}
