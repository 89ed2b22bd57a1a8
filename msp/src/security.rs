//! [`MspSecurity`]: the core's `Security` for real Fabric identities.

use crate::cert::{CertError, CertInfo, pem_exactly_one};
use crate::error::LoadError;
use crate::files::{read_msp_file, required_pem_files};
use crate::identity::{self, certificate_pem};
use crate::keys::{Arithmetic, AwsLcSigner, PrivateKey, PublicKey};
use crate::trust::{Pem, TrustStore};
use bytes::Bytes;
use core::time::Duration;
use fabric_gossip_core::{Instant, PkiId, Security, SecurityError};
use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Default number of parsed identities [`MspSecurity`] keeps. A Fabric channel rarely has
/// more than a few hundred peers; 4096 entries of about 750 bytes each (half of it the key
/// in AWS-LC's parsed form, about 500 bytes measured) cost ~3 MiB and keep every peer of a
/// large network parsed.
pub const DEFAULT_CACHE_CAPACITY: usize = 4096;

/// Fabric's X.509 MSP as a [`Security`] provider: the node's own certificate and ECDSA key,
/// and a [`TrustStore`] deciding which remote identities are acceptable.
///
/// * Identities are `msp.SerializedIdentity { mspid, id_bytes: PEM certificate }`;
///   PKI-ID = SHA-256(mspid ‖ id_bytes); organization = mspid (Fabric's
///   `OrgByPeerIdentity`), reported only for MSPs in the trust store.
/// * Signing: ECDSA over SHA-256 of the message, DER, always low-S. P-256 keys sign with
///   `aws-lc-rs` and random (hedged) nonces, so the same message signs differently each time;
///   [`MspSecurity::with_deterministic_signatures`] signs with RFC 6979 nonces instead, as
///   a simulation that must replay byte for byte needs. P-384 keys always sign with RFC 6979
///   (AWS-LC has no P-384 signer over SHA-256, the digest Fabric uses on every curve).
/// * Verifying: P-256 or P-384 keys, with `aws-lc-rs`; malformed DER, high-S and bad signatures
///   are refused, each with its own [`SecurityError`]. The identity must also chain to its
///   MSP (as Fabric's `Verify` validates the identity first), but time is not checked there.
/// * `validate_identity`: chain to a CA of the named MSP (see [`TrustStore`]) and the
///   certificate within its validity period at `now`.
/// * `expiration`: just after the certificate's notAfter (Fabric's `ExpiresAt`), so the
///   core's identity store drops the identity and closes its connections then.
///
/// # Parsed-identity cache
///
/// Parsing X.509 and checking the chain costs far more than one signature check, and the
/// same identity is verified on every handshake and often on every message. Results
/// (including refusals) are kept per identity (keyed by SHA-256 of its bytes) in a cache of
/// at most `capacity` entries with CLOCK eviction: a full cache drops the oldest entry not
/// used since it was last passed over. Only time-independent facts are cached; validity
/// periods are checked against `now` on every call. Memory is bounded by the capacity, not
/// by what remotes send. Set the capacity with [`MspSecurity::with_cache_capacity`]
/// (0 disables caching).
///
/// # Changing what is trusted while running
///
/// [`MspSecurity::trust_handle`] gives a handle that replaces the trust store (a new CRL,
/// an organization added or dropped) after the provider has moved into a node; the cache
/// is emptied with it. Then ask the node to revalidate the identities it holds
/// (`Comm::revalidate_identities`, Fabric's `SuspectPeers`), which closes the connections
/// of those now refused.
pub struct MspSecurity {
    msp_id: String,
    identity: Bytes,
    pki_id: PkiId,
    cert: Arc<CertInfo>,
    key: PrivateKey,
    /// AWS-LC's signer for `key`; `None` for P-384 keys.
    fast_signer: Option<AwsLcSigner>,
    ecdsa: Ecdsa,
    /// The trust store and the verdicts reached under it; shared with [`TrustHandle`]s.
    shared: Arc<Mutex<IdentityCache>>,
    hits: AtomicU64,
    misses: AtomicU64,
    /// How far the wall clock is from the node's time: certificate validity is judged by
    /// the wall clock (see [`WallClockOffset`]).
    wall: WallClockOffset,
}

/// How far the wall clock is from the node's time, which the driver that runs the node
/// keeps up to date (the tonic driver calls `Security::wall_clock` every second, which
/// sets it; [`MspSecurity::wall_clock_offset`] is the handle for other drivers); zero
/// until it is set, and in a simulation, which has one time.
///
/// A node's time is the wall clock read once at start plus a monotonic clock, so that its
/// timers never jump. A clock stepped after start (NTP correcting a VM restored with a
/// wrong clock, a host resumed from suspend, which the monotonic clock does not count)
/// would otherwise leave certificate expiry judged by the clock as it was at start until
/// a restart: a node started 47 h ahead and then corrected purged an honest member as
/// expired, and refused its handshakes, two days early; one started behind took expired
/// identities (an attack, 2026-12-07). Fabric judges expiry by the wall clock
/// (`time.Now()`); with the offset set, so does this provider: an identity is validated
/// at the wall clock's time, and its expiry is given in the node's time, as far from its
/// `NotAfter` as the clock moved. An expiry already armed from an identity accepted
/// before the step keeps its time, as Fabric's timer does: the identity may be forgotten
/// early, and is taken again at the peer's next handshake.
///
/// Cheap to clone; every clone acts on the same provider.
#[derive(Clone, Debug, Default)]
pub struct WallClockOffset(Arc<AtomicI64>);

impl WallClockOffset {
    /// Records that the wall clock read `wall` when the node's time was `node`.
    pub fn set(&self, node: Instant, wall: Instant) {
        let offset = wall.nanos_since(node);
        let offset = i64::try_from(offset).unwrap_or(if offset > 0 { i64::MAX } else { i64::MIN });
        self.0.store(offset, Ordering::Relaxed);
    }

    /// The wall clock's time minus the node's, in nanoseconds (negative: the wall clock
    /// is behind).
    pub fn nanos(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }

    /// The node's time `now` on the wall clock (saturating; [`Instant::MAX`], never,
    /// stays never): where a date the node reports is shown to people.
    pub fn to_wall(&self, now: Instant) -> Instant {
        shift(now, self.nanos())
    }

    /// The wall clock's time `wall` in the node's time (saturating; never stays never).
    pub fn to_node(&self, wall: Instant) -> Instant {
        shift(wall, self.nanos().saturating_neg())
    }
}

/// `at` moved by `nanos`, saturating; [`Instant::MAX`] (never) stays never.
fn shift(at: Instant, nanos: i64) -> Instant {
    if at == Instant::MAX {
        return at;
    }
    at.shifted(i128::from(nanos))
}

/// Replaces the trust store of an [`MspSecurity`] that a node already owns: see "Changing
/// what is trusted while running" there. Cheap to clone; every clone acts on the same
/// provider.
#[derive(Clone)]
pub struct TrustHandle {
    shared: Arc<Mutex<IdentityCache>>,
    msp_id: String,
    cert: Arc<CertInfo>,
}

impl core::fmt::Debug for TrustHandle {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TrustHandle")
            .field("msp_id", &self.msp_id)
            .finish_non_exhaustive()
    }
}

impl TrustHandle {
    /// Makes `trust` the provider's trust store and forgets every cached verdict, so each
    /// identity is judged again under `trust` when next seen. Refused, leaving the provider
    /// as it was, when `trust` refuses the node's own identity (as [`MspSecurity::new`]
    /// refuses to start): a node its own trust store refuses would be refused by peers
    /// sharing that configuration.
    pub fn replace(&self, trust: TrustStore) -> Result<(), LoadError> {
        trust.validate_own(&self.msp_id, &self.cert, "own signing certificate")?;
        let mut state = lock(&self.shared);
        state.trust = Arc::new(trust);
        state.generation += 1;
        state.clear();
        Ok(())
    }

    /// The trust store in use.
    pub fn current(&self) -> Arc<TrustStore> {
        lock(&self.shared).trust.clone()
    }
}

fn lock(m: &Mutex<IdentityCache>) -> MutexGuard<'_, IdentityCache> {
    // Nothing panics while the lock is held; recover the data if that ever changes.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl core::fmt::Debug for MspSecurity {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MspSecurity")
            .field("msp_id", &self.msp_id)
            .field("pki_id", &self.pki_id)
            .field("key", &self.key)
            .field("ecdsa", &self.ecdsa)
            .field("trusted_msps", &self.trust().msp_ids().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Which ECDSA implementation does what (see [`MspSecurity::with_deterministic_signatures`]
/// and [`MspSecurity::with_pure_rust_ecdsa`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ecdsa {
    /// AWS-LC signs (P-256) and verifies: the fastest.
    AwsLc,
    /// RFC 6979 signatures (pure Rust), AWS-LC verifies: reproducible and still fast to
    /// verify.
    DeterministicSigning,
    /// Pure Rust both ways: the implementation this crate began with.
    PureRust,
}

/// Counters of the parsed-identity cache, to check it is doing its job.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that parsed the identity.
    pub misses: u64,
    /// Identities currently cached.
    pub len: usize,
    /// Most identities the cache holds.
    pub capacity: usize,
}

/// What the cache keeps of a parsed identity: everything except time-dependent checks.
#[derive(Debug)]
pub(crate) struct Parsed {
    msp_id: String,
    key: PublicKey,
    not_after: Instant,
    /// The chain check against the trust store (time-independent, see `validate_chain`).
    chain: Result<(), SecurityError>,
}

type Entry = Result<Arc<Parsed>, SecurityError>;

struct Slot {
    value: Entry,
    referenced: bool,
}

/// A bounded map with CLOCK (second-chance) eviction, and the trust store its verdicts
/// were reached under: the two change together.
struct IdentityCache {
    capacity: usize,
    map: HashMap<[u8; 32], Slot>,
    ring: VecDeque<[u8; 32]>,
    trust: Arc<TrustStore>,
    /// Counts trust store replacements: a verdict reached under an earlier store is not
    /// cached.
    generation: u64,
}

impl IdentityCache {
    fn new(capacity: usize, trust: Arc<TrustStore>) -> Self {
        IdentityCache {
            capacity,
            map: HashMap::new(),
            ring: VecDeque::new(),
            trust,
            generation: 0,
        }
    }

    fn clear(&mut self) {
        self.map.clear();
        self.ring.clear();
    }

    fn get(&mut self, key: &[u8; 32]) -> Option<Entry> {
        let slot = self.map.get_mut(key)?;
        slot.referenced = true;
        Some(slot.value.clone())
    }

    fn insert(&mut self, key: [u8; 32], value: Entry) {
        if self.capacity == 0 || self.map.contains_key(&key) {
            return;
        }
        // Each pass clears a referenced bit or evicts, so this ends within two turns.
        while self.map.len() >= self.capacity {
            let Some(old) = self.ring.pop_front() else {
                break;
            };
            match self.map.get_mut(&old) {
                Some(slot) if slot.referenced => {
                    slot.referenced = false;
                    self.ring.push_back(old);
                }
                Some(_) => {
                    self.map.remove(&old);
                }
                None => {}
            }
        }
        self.ring.push_back(key);
        self.map.insert(
            key,
            Slot {
                value,
                referenced: false,
            },
        );
    }
}

impl MspSecurity {
    /// A provider for the identity `cert_pem` (the signing certificate) of `msp_id`, signing
    /// with `key_pem` (PKCS#8 or SEC1 PEM). Fails if the key does not match the certificate
    /// or the certificate does not chain to a CA of `msp_id` in `trust`, so a misconfigured
    /// node stops at start-up instead of failing every handshake.
    ///
    /// The certificate is presented as a Fabric MSP presents its own
    /// ([`TrustStore::sanitize_certificate`]: a high-S CA signature folded to low-S), so a
    /// node given a Fabric peer's folder has that peer's PKI-ID.
    pub fn new(
        msp_id: &str,
        cert_pem: &[u8],
        key_pem: &[u8],
        trust: TrustStore,
    ) -> Result<Self, LoadError> {
        let cert = Pem {
            text: cert_pem,
            source: "signing certificate",
        };
        let key = Pem {
            text: key_pem,
            source: "private key",
        };
        Self::build(msp_id, cert, key, trust)
    }

    /// Like [`MspSecurity::new`], reading the certificate and key from files.
    pub fn from_pem_files(
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
        msp_id: &str,
        trust: TrustStore,
    ) -> Result<Self, LoadError> {
        let (cert, key) = (cert.as_ref(), key.as_ref());
        let cert_pem = read_msp_file(cert)?;
        let key_pem = read_msp_file(key)?;
        let (cert_source, key_source) = (cert.display().to_string(), key.display().to_string());
        let cert = Pem {
            text: &cert_pem,
            source: &cert_source,
        };
        let key = Pem {
            text: &key_pem,
            source: &key_source,
        };
        Self::build(msp_id, cert, key, trust)
    }

    /// Loads the node's identity from a Fabric MSP folder, as `cryptogen` or a Fabric CA
    /// client writes one (e.g. `peerOrganizations/org1.example.com/peers/peer0.org1.example.com/msp`):
    /// the certificate in `signcerts/` and the matching key among the files of `keystore/`
    /// (`priv_sk`, `<ski>_sk`, or any name). The folder's `cacerts/`, `intermediatecerts/`
    /// and `crls/`, when present, are added to `trust` for `msp_id`, as a Fabric peer
    /// trusts its own MSP.
    ///
    /// So a wrong `msp_id` is not caught here: the folder's CAs are trusted under whatever
    /// ID is given, and the node starts. It shows once peers meet: every peer of the
    /// organization then names an MSP we do not know (`UnknownMsp("Org1MSP")` where our
    /// ID should have been `Org1MSP`), and each of them refuses us ("failed classifying
    /// identity"). Take the ID from the peer's `CORE_PEER_LOCALMSPID`, not the domain.
    pub fn from_msp_dir(
        dir: impl AsRef<Path>,
        msp_id: &str,
        mut trust: TrustStore,
    ) -> Result<Self, LoadError> {
        let dir = dir.as_ref();
        trust.add_own_msp_dir(msp_id, dir)?;
        let (signcerts, keystore) = (dir.join("signcerts"), dir.join("keystore"));
        let cert_files = required_pem_files(&signcerts, "signing certificate")?;
        let key_files = required_pem_files(&keystore, "private key")?;
        let mut keys = Vec::new();
        let mut first_key_error = None;
        for path in &key_files {
            let text = read_msp_file(path)?;
            match PrivateKey::from_pem(&text) {
                Ok(k) => keys.push((path, text, k)),
                Err(reason) => {
                    first_key_error.get_or_insert(LoadError::Key {
                        source: path.display().to_string(),
                        reason,
                    });
                }
            }
        }
        if keys.is_empty() {
            return Err(first_key_error.unwrap_or(LoadError::Empty {
                path: keystore,
                expected: "private key",
            }));
        }
        for cert_path in &cert_files {
            let text = read_msp_file(cert_path)?;
            let source = cert_path.display().to_string();
            let cert_pem = Pem {
                text: &text,
                source: &source,
            };
            let cert = cert_pem.leaf_certificate()?;
            if let Some((key_path, key_text, _)) =
                keys.iter().find(|(_, _, k)| k.is_pair_of(&cert.key))
            {
                let key_source = key_path.display().to_string();
                let key = Pem {
                    text: key_text,
                    source: &key_source,
                };
                return Self::build(msp_id, cert_pem, key, trust);
            }
        }
        Err(LoadError::KeyMismatch {
            certificate: signcerts.display().to_string(),
            keys: keystore.display().to_string(),
        })
    }

    fn build(
        msp_id: &str,
        cert_pem: Pem<'_>,
        key_pem: Pem<'_>,
        trust: TrustStore,
    ) -> Result<Self, LoadError> {
        let (cert_source, key_source) = (cert_pem.source, key_pem.source);
        let cert = cert_pem.leaf_certificate()?;
        let key = PrivateKey::from_pem(key_pem.text).map_err(|reason| LoadError::Key {
            source: key_source.to_owned(),
            reason,
        })?;
        if !key.is_pair_of(&cert.key) {
            return Err(LoadError::KeyMismatch {
                certificate: cert_source.to_owned(),
                keys: key_source.to_owned(),
            });
        }
        trust.validate_own(msp_id, &cert, cert_source)?;
        // The certificate as a Fabric MSP presents it (`sanitizeCert`: a high-S CA signature
        // folded to low-S), so that the node's PKI-ID is the one a Fabric peer with the same
        // folder has.
        let sanitized = trust.sanitize_certificate(msp_id, &cert.der);
        let cert = if sanitized == cert.der {
            cert
        } else {
            CertInfo::from_der(&sanitized).unwrap_or(cert)
        };
        let pem = certificate_pem(&cert.der);
        let identity = identity::serialize_identity_pem(msp_id, pem.as_bytes());
        let pki_id = identity::pki_id(msp_id, pem.as_bytes());
        Ok(MspSecurity {
            msp_id: msp_id.to_owned(),
            identity,
            pki_id,
            cert: Arc::new(cert),
            fast_signer: key.fast_signer(),
            key,
            ecdsa: Ecdsa::AwsLc,
            shared: Arc::new(Mutex::new(IdentityCache::new(
                DEFAULT_CACHE_CAPACITY,
                Arc::new(trust),
            ))),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            wall: WallClockOffset::default(),
        })
    }

    /// Sets how many parsed identities are kept (see the type's docs); empties the cache.
    pub fn with_cache_capacity(self, capacity: usize) -> Self {
        {
            let mut state = self.lock();
            state.capacity = capacity;
            state.clear();
        }
        self
    }

    /// Signs with deterministic nonces (RFC 6979, pure Rust) instead of AWS-LC's random ones:
    /// the same message always gives the same signature bytes, so a seeded simulation with
    /// real identities replays byte for byte (signatures travel in every handshake and end
    /// up in traces). Signing is about ten times slower; verification keeps using AWS-LC.
    /// Peers cannot tell the difference: both are low-S DER ECDSA over SHA-256.
    pub fn with_deterministic_signatures(mut self) -> Self {
        self.ecdsa = Ecdsa::DeterministicSigning;
        self
    }

    /// Signs (RFC 6979), verifies, and checks the certificate signatures of identities it
    /// has not seen before with the pure-Rust RustCrypto implementation this crate began
    /// with, with the same rules and the same errors. It is the reference the AWS-LC path
    /// is checked and benchmarked against, and a way to rule AWS-LC out when chasing an
    /// interoperability problem; it is several times slower.
    pub fn with_pure_rust_ecdsa(mut self) -> Self {
        self.ecdsa = Ecdsa::PureRust;
        self
    }

    /// The handle through which the driver running the node tells this provider how far
    /// the wall clock has moved from the node's time (see [`WallClockOffset`]); take it
    /// before the provider moves into the node.
    pub fn wall_clock_offset(&self) -> WallClockOffset {
        self.wall.clone()
    }

    /// Whether the same message always gets the same signature from this provider (see
    /// [`MspSecurity::with_deterministic_signatures`]).
    pub fn signs_deterministically(&self) -> bool {
        self.ecdsa != Ecdsa::AwsLc || self.fast_signer.is_none()
    }

    /// The node's MSP ID (its organization).
    pub fn msp_id(&self) -> &str {
        &self.msp_id
    }

    /// The node's PKI-ID.
    pub fn pki_id(&self) -> &PkiId {
        &self.pki_id
    }

    /// The node's signing certificate, DER, as the node presents it: sanitized as a Fabric
    /// MSP sanitizes it (see [`MspSecurity::new`]), so it may differ from the file's in its
    /// signature's encoding.
    pub fn certificate_der(&self) -> &[u8] {
        &self.cert.der
    }

    /// When the node's own certificate stops being valid: a node should be given a new one
    /// before then, or peers will drop it. `None` when it is valid past what an [`Instant`]
    /// holds (2554), as a certificate with RFC 5280's "no expiration" date (9999) is; its
    /// date is [`certificate_not_after`](crate::certificate_not_after) of
    /// [`certificate_der`](Self::certificate_der).
    pub fn own_expiration(&self) -> Option<Instant> {
        expired_from(self.cert.not_after)
    }

    /// The MSPs this node accepts identities from, as it is now (see [`TrustHandle`]).
    pub fn trust(&self) -> Arc<TrustStore> {
        self.lock().trust.clone()
    }

    /// A handle that replaces the trust store once the provider has moved into a node.
    pub fn trust_handle(&self) -> TrustHandle {
        TrustHandle {
            shared: self.shared.clone(),
            msp_id: self.msp_id.clone(),
            cert: self.cert.clone(),
        }
    }

    /// Counters of the parsed-identity cache.
    pub fn cache_stats(&self) -> CacheStats {
        let cache = self.lock();
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            len: cache.map.len(),
            capacity: cache.capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, IdentityCache> {
        lock(&self.shared)
    }

    /// The parsed form of `identity`, from the cache or parsed now (and cached).
    fn parsed(&self, identity: &[u8]) -> Entry {
        use sha2::Digest;
        let key: [u8; 32] = sha2::Sha256::digest(identity).into();
        let (trust, generation) = {
            let mut state = self.lock();
            if let Some(hit) = state.get(&key) {
                self.hits.fetch_add(1, Ordering::Relaxed);
                return hit;
            }
            (state.trust.clone(), state.generation)
        };
        self.misses.fetch_add(1, Ordering::Relaxed);
        // Parsed without the lock: it is the slow part.
        let value = self.parse(identity, &trust).map(Arc::new);
        let mut state = self.lock();
        if state.generation == generation {
            state.insert(key, value.clone());
        }
        value
    }

    fn parse(&self, identity: &[u8], trust: &TrustStore) -> Result<Parsed, SecurityError> {
        let arithmetic = match self.ecdsa {
            Ecdsa::PureRust => Arithmetic::PureRust,
            Ecdsa::AwsLc | Ecdsa::DeterministicSigning => Arithmetic::AwsLc,
        };
        parse(identity, trust, arithmetic)
    }
}

/// A serialized identity, parsed and judged against `trust` (all but the clock).
pub(crate) fn parse(
    identity: &[u8],
    trust: &TrustStore,
    arithmetic: Arithmetic,
) -> Result<Parsed, SecurityError> {
    let sid = identity::decode(identity)
        .ok_or_else(|| SecurityError::MalformedIdentity("not an msp.SerializedIdentity".into()))?;
    if sid.mspid.is_empty() {
        return Err(SecurityError::MalformedIdentity("empty MSP ID".into()));
    }
    let der = single_certificate(&sid.id_bytes).map_err(SecurityError::MalformedIdentity)?;
    let cert = CertInfo::from_der(&der).map_err(|e| match e {
        CertError::Malformed(s) => SecurityError::MalformedIdentity(s),
        CertError::Key(s) => SecurityError::BadKey(s),
    })?;
    let chain = trust.validate_chain(&sid.mspid, &cert, arithmetic);
    Ok(Parsed {
        msp_id: sid.mspid,
        key: cert.key,
        not_after: cert.not_after,
        chain,
    })
}

impl Parsed {
    /// The verdict at `now`: the chain's, then expiry. A certificate not valid yet is
    /// accepted, as Fabric accepts it: its MSP checks the chain at the certificate's own
    /// notBefore + 1 s, never against the clock, and its identity mapper refuses only
    /// an identity past notAfter. Refusing it would refuse a freshly enrolled peer that
    /// every Fabric peer accepts whenever our clock is behind its CA's by more than the
    /// CA backdates (cryptogen: 5 minutes).
    pub(crate) fn verdict(&self, now: Instant) -> Result<(), SecurityError> {
        self.chain.clone()?;
        if now > self.not_after {
            return Err(SecurityError::Expired(format!(
                "expired on {}, {} ago",
                shown_date(self.not_after),
                shown_age(now.saturating_duration_since(self.not_after))
            )));
        }
        Ok(())
    }
}

/// `at` as a UTC date and time to the second (`2026-12-07T10:57:45Z`), as an operator reads
/// a certificate's dates (an instant holds none past 2554; the raw instant if one did).
fn shown_date(at: Instant) -> String {
    let since_epoch = Duration::from_secs(at.as_unix_nanos() / 1_000_000_000);
    der::DateTime::from_unix_duration(since_epoch)
        .map_or_else(|_| at.to_string(), |d| d.to_string())
}

/// `d` in its largest whole unit (`45 s`, `3 min`, `5 h`, `12 days`).
fn shown_age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s} s"),
        60..3_600 => format!("{} min", s / 60),
        3_600..86_400 => format!("{} h", s / 3_600),
        86_400..172_800 => "1 day".to_owned(),
        _ => format!("{} days", s / 86_400),
    }
}

/// The first instant at which Go's `now.After(NotAfter)` is true; `None` for a NotAfter
/// past what an [`Instant`] holds (it saturated to [`Instant::MAX`] when parsed), which no
/// clock of ours reaches: the identity never expires.
fn expired_from(not_after: Instant) -> Option<Instant> {
    (not_after != Instant::MAX).then(|| not_after + Duration::from_nanos(1))
}

/// `id_bytes` must be exactly one PEM `CERTIFICATE` block and nothing else, as Fabric's
/// `IsWellFormed` requires, so that one certificate has one serialized form and one PKI-ID.
fn single_certificate(id_bytes: &[u8]) -> Result<Vec<u8>, String> {
    let (label, der) = pem_exactly_one(id_bytes).map_err(|e| format!("id_bytes {e}"))?;
    if label != "CERTIFICATE" {
        return Err(format!("id_bytes holds a {label}, not a CERTIFICATE"));
    }
    Ok(der)
}

impl Security for MspSecurity {
    fn own_identity(&self) -> Bytes {
        self.identity.clone()
    }

    fn sign(&self, msg: &[u8]) -> Result<Bytes, SecurityError> {
        match (&self.fast_signer, self.ecdsa) {
            (Some(fast), Ecdsa::AwsLc) => fast.sign_fabric(msg),
            _ => self.key.sign_fabric(msg),
        }
        .map(Bytes::from)
    }

    fn verify(
        &self,
        identity: &[u8],
        signature: &[u8],
        message: &[u8],
    ) -> Result<(), SecurityError> {
        let parsed = self.parsed(identity)?;
        parsed.chain.clone()?;
        match self.ecdsa {
            Ecdsa::PureRust => parsed.key.verify_fabric_pure_rust(message, signature),
            Ecdsa::AwsLc | Ecdsa::DeterministicSigning => {
                parsed.key.verify_fabric(message, signature)
            }
        }
    }

    fn validate_identity(&self, identity: &[u8], now: Instant) -> Result<(), SecurityError> {
        self.parsed(identity)?.verdict(self.wall.to_wall(now))
    }

    fn wall_clock(&self, now: Instant, wall: Instant) {
        self.wall.set(now, wall);
    }

    fn expiration(&self, identity: &[u8]) -> Result<Option<Instant>, SecurityError> {
        let not_after = self.parsed(identity)?.not_after;
        Ok(expired_from(not_after).map(|at| self.wall.to_node(at)))
    }

    fn pki_id_of(&self, identity: &[u8]) -> PkiId {
        if identity == self.identity.as_ref() {
            return self.pki_id.clone();
        }
        match identity::decode(identity) {
            Some(sid) => identity::pki_id(&sid.mspid, &sid.id_bytes),
            // Fabric returns nil here; the empty ID never matches a claimed one.
            None => PkiId::default(),
        }
    }

    fn organization_of(&self, identity: &[u8]) -> Option<Bytes> {
        let parsed = self.parsed(identity).ok()?;
        self.lock()
            .trust
            .contains(&parsed.msp_id)
            .then(|| Bytes::copy_from_slice(parsed.msp_id.as_bytes()))
    }

    /// The `mspid` the identity names, decoded and looked up among the trusted MSPs: no
    /// certificate parsed, no chain checked, and the identity cache left as it was (a
    /// response of 10,000 newcomers' forged identities took 731 ms through
    /// `organization_of`, and emptied the cache of the identities in use).
    fn claimed_organization(&self, identity: &[u8]) -> Option<Bytes> {
        let sid = identity::decode(identity)?;
        self.lock()
            .trust
            .contains(&sid.mspid)
            .then(|| Bytes::from(sid.mspid))
    }
}

#[cfg(test)]
mod tests {
    use crate::dev::{self, OrgSpec};

    /// An expiry's age in its largest whole unit, each unit from its first second; a date
    /// past what a certificate can say shows the raw instant.
    #[test]
    fn an_age_is_told_in_its_largest_unit_and_a_date_to_the_second() {
        use core::time::Duration;
        let cases = [
            (59, "59 s"),
            (60, "1 min"),
            (3_599, "59 min"),
            (3_600, "1 h"),
        ];
        let days = [(86_399, "23 h"), (86_400, "1 day"), (172_800, "2 days")];
        for (secs, text) in cases.into_iter().chain(days) {
            assert_eq!(super::shown_age(Duration::from_secs(secs)), text, "{secs}");
        }
        let at = super::Instant::from_unix_nanos(1_699_999_000_999_999_999);
        assert_eq!(super::shown_date(at), "2023-11-14T21:56:40Z");
    }

    /// `parsed` caches a verdict only if the store's generation it read before parsing is
    /// still current, so that a verdict reached under a store being replaced (a CRL just
    /// added) is not kept: every replacement must start a new generation.
    #[test]
    fn replacing_the_trust_store_starts_a_new_generation() {
        let orgs =
            dev::seeded_in_memory(&[OrgSpec::new("Org1MSP", "org1.example.com", 1)], 3).unwrap();
        let trust = dev::trust_all(&orgs).unwrap();
        let s = orgs[0].security(&orgs[0].peers[0], trust.clone()).unwrap();
        let generation = || s.lock().generation;
        let before = generation();
        s.trust_handle().replace(trust.clone()).unwrap();
        let once = generation();
        s.trust_handle().replace(trust).unwrap();
        assert!(before < once && once < generation(), "{before} {once}");
    }
}
