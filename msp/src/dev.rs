//! Development PKI: CAs, peer identities and TLS certificates for any number of
//! organizations, in memory or written out like Fabric's `cryptogen` does.
//!
//! **For development and tests only**: CA keys are written next to the certificates and
//! nothing here is meant to protect a production network.
//!
//! Certificates follow cryptogen's conventions (subject `C=US, ST=California,
//! L=San Francisco, O=<domain>, OU=peer, CN=<peer>.<domain>`, 32-byte SHA-256 subject key
//! identifiers, low-S ECDSA signatures), so a real Fabric peer accepts the same material.
//! Generation is deterministic for a given random source and validity, so a seeded RNG
//! gives the same certificates on every run (the simulator relies on that).
//!
//! # Layout written by [`generate`] / [`write_orgs`]
//!
//! ```text
//! <out>/peerOrganizations/<domain>/
//!   ca/ca.<domain>-cert.pem  ca/priv_sk              identity CA and its key
//!   tlsca/tlsca.<domain>-cert.pem  tlsca/priv_sk     TLS CA and its key
//!   msp/cacerts/ca.<domain>-cert.pem                 the organization's MSP: pass it as
//!   msp/tlscacerts/tlsca.<domain>-cert.pem             trust (`--trust MSPID=<this msp dir>`)
//!   msp/config.yaml                                  NodeOUs, as cryptogen writes it
//!   peers/<peer>.<domain>/msp/                       a peer's own MSP: pass it as identity
//!     cacerts/ca.<domain>-cert.pem                     (`--msp-dir <this> --msp-id MSPID`)
//!     signcerts/<peer>.<domain>-cert.pem
//!     keystore/priv_sk                               PKCS#8 PEM, mode 0600
//!     tlscacerts/tlsca.<domain>-cert.pem
//!     config.yaml
//!   peers/<peer>.<domain>/tls/
//!     ca.crt                                         the TLS CA
//!     server.crt  server.key                         TLS certificate (server and client
//!                                                    authentication, like cryptogen's)
//! ```

use crate::error::LoadError;
use crate::identity::certificate_pem;
use crate::keys::PrivateKey;
use crate::{MspSecurity, TrustStore};
use core::fmt;
use core::time::Duration;
use fabric_gossip_core::Instant;
use rand_core::CryptoRngCore;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyIdMethod, KeyUsagePurpose, PublicKeyData, SerialNumber, SignatureAlgorithm, SigningKey,
};
use std::path::{Path, PathBuf};

/// The operating system's random source: what to pass as `rng` for real (non-reproducible)
/// keys. Tests and simulations pass a seeded RNG instead to get the same PKI every run.
pub use rand_core::OsRng;

/// The curve of generated keys. Fabric's cryptogen uses P-256; Fabric CA can issue P-384.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Curve {
    /// NIST P-256, with ECDSA-SHA256 certificate signatures.
    #[default]
    P256,
    /// NIST P-384, with ECDSA-SHA384 certificate signatures.
    P384,
}

/// One organization to generate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrgSpec {
    /// Its MSP ID, e.g. `Org1MSP`: what identities name and trust is keyed by.
    pub msp_id: String,
    /// Its domain, e.g. `org1.example.com`: names the folders and certificates.
    pub domain: String,
    /// Short peer names, e.g. `peer0`; each peer's host name is `<name>.<domain>`.
    pub peers: Vec<String>,
    /// The curve of every key of this organization.
    pub curve: Curve,
}

impl OrgSpec {
    /// An organization with peers `peer0` .. `peer{n-1}` on P-256, as cryptogen's default.
    pub fn new(msp_id: impl Into<String>, domain: impl Into<String>, peers: usize) -> Self {
        OrgSpec {
            msp_id: msp_id.into(),
            domain: domain.into(),
            peers: (0..peers).map(|i| format!("peer{i}")).collect(),
            curve: Curve::P256,
        }
    }

    /// The same organization with keys on `curve`.
    pub fn with_curve(mut self, curve: Curve) -> Self {
        self.curve = curve;
        self
    }
}

/// A validity period for generated certificates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    /// First instant of validity (whole seconds are kept).
    pub not_before: Instant,
    /// Last instant of validity (whole seconds are kept); [`Instant::MAX`] writes RFC 5280's
    /// "no well-defined expiration date", 99991231235959Z.
    pub not_after: Instant,
}

impl Validity {
    /// Valid from `start` for `length`.
    pub fn starting(start: Instant, length: Duration) -> Self {
        Validity {
            not_before: start,
            not_after: start + length,
        }
    }

    /// Ten years from `start`: cryptogen's validity, long enough never to bother a demo.
    pub fn ten_years_from(start: Instant) -> Self {
        Self::starting(start, Duration::from_secs(10 * 365 * 24 * 3600))
    }
}

/// Why generating or writing development material failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevError {
    /// rcgen refused the certificate parameters (e.g. a domain that is not a DNS name).
    #[error("certificate generation failed: {0}")]
    Generate(String),
    /// Writing a file failed.
    #[error("{}: {error}", .path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's reason (in this error's text too: it has no `source()`).
        error: std::io::Error,
    },
    /// The organization's folder already exists; nothing is overwritten, so a CA key in use
    /// is never replaced by accident.
    #[error("{} already exists; remove it to generate new material", .0.display())]
    Exists(PathBuf),
    /// The generated material could not be loaded back (a bug, reported rather than hidden).
    #[error("generated material does not load: {0}")]
    Load(LoadError),
}

impl From<rcgen::Error> for DevError {
    fn from(e: rcgen::Error) -> Self {
        DevError::Generate(e.to_string())
    }
}

impl From<LoadError> for DevError {
    fn from(e: LoadError) -> Self {
        DevError::Load(e)
    }
}

/// An rcgen signer backed by the RustCrypto key, so certificates are signed low-S (as
/// Fabric's own tools do) and no second crypto library is built.
struct DevKey {
    key: PrivateKey,
    curve: Curve,
    public: Vec<u8>,
    alg: &'static SignatureAlgorithm,
}

fn algorithm(curve: Curve) -> Result<&'static SignatureAlgorithm, DevError> {
    let oid: &[u64] = match curve {
        Curve::P256 => &[1, 2, 840, 10045, 4, 3, 2],
        Curve::P384 => &[1, 2, 840, 10045, 4, 3, 3],
    };
    Ok(SignatureAlgorithm::from_oid(oid)?)
}

impl DevKey {
    fn generate(curve: Curve, rng: &mut impl CryptoRngCore) -> Result<DevKey, DevError> {
        // The same steps on either curve's own types: a random key, and its public point
        // uncompressed (the form certificates carry).
        macro_rules! random_key {
            ($curve:ident, $variant:ident) => {{
                let k = $curve::ecdsa::SigningKey::random(rng);
                let p = k.verifying_key().to_encoded_point(false);
                (PrivateKey::$variant(k), p.as_bytes().to_vec())
            }};
        }
        let (key, public) = match curve {
            Curve::P256 => random_key!(p256, P256),
            Curve::P384 => random_key!(p384, P384),
        };
        Ok(DevKey {
            key,
            curve,
            public,
            alg: algorithm(curve)?,
        })
    }

    fn pkcs8_pem(&self) -> Result<String, DevError> {
        use p256::pkcs8::{EncodePrivateKey, LineEnding};
        let pem = match &self.key {
            PrivateKey::P256(k) => p256::SecretKey::from(k).to_pkcs8_pem(LineEnding::LF),
            PrivateKey::P384(k) => p384::SecretKey::from(k).to_pkcs8_pem(LineEnding::LF),
        };
        pem.map(|z| z.to_string())
            .map_err(|e| DevError::Generate(format!("PKCS#8 encoding: {e}")))
    }
}

impl PublicKeyData for DevKey {
    fn der_bytes(&self) -> &[u8] {
        &self.public
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.alg
    }
}

impl SigningKey for DevKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        use sha2::Digest;
        let digest = match self.curve {
            Curve::P256 => sha2::Sha256::digest(msg).to_vec(),
            Curve::P384 => sha2::Sha384::digest(msg).to_vec(),
        };
        self.key
            .sign_prehash_low_s(&digest)
            .map_err(|_| rcgen::Error::RemoteKeyError)
    }
}

/// A public key given as raw SEC1 bytes, to certify keys this module did not generate
/// (including invalid ones, for tests).
struct RawKey {
    point: Vec<u8>,
    alg: &'static SignatureAlgorithm,
}

impl PublicKeyData for RawKey {
    fn der_bytes(&self) -> &[u8] {
        &self.point
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.alg
    }
}

/// SHA-256 of the uncompressed public point: cryptogen's subject key identifier.
fn ski(point: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(point).to_vec()
}

/// `at` as a certificate date; [`Instant::MAX`] ("never") is RFC 5280's 99991231235959Z.
fn odt(at: Instant) -> Result<time::OffsetDateTime, DevError> {
    if at == Instant::MAX {
        const NO_EXPIRATION: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z
        return time::OffsetDateTime::from_unix_timestamp(NO_EXPIRATION)
            .map_err(|e| DevError::Generate(format!("time out of range: {e}")));
    }
    let secs = i64::try_from(at.as_unix_nanos() / 1_000_000_000)
        .map_err(|_| DevError::Generate("time out of range".into()))?;
    time::OffsetDateTime::from_unix_timestamp(secs)
        .map_err(|e| DevError::Generate(format!("time out of range: {e}")))
}

fn serial(rng: &mut impl CryptoRngCore) -> SerialNumber {
    let mut b = [0u8; 16];
    rng.fill_bytes(&mut b);
    // Positive and without a leading zero byte, so every encoder writes it the same way.
    b[0] = (b[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&b)
}

fn base_params(
    common_name: &str,
    organization: &str,
    units: &[&str],
    sans: Vec<String>,
    validity: Validity,
    rng: &mut impl CryptoRngCore,
) -> Result<CertificateParams, DevError> {
    let mut p = CertificateParams::new(sans)?;
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(DnType::CountryName, "US");
    dn.push(DnType::StateOrProvinceName, "California");
    dn.push(DnType::LocalityName, "San Francisco");
    dn.push(DnType::OrganizationName, organization);
    // rcgen keeps one value per attribute type; a second OU goes in under the same OID
    // written as a custom type, which rcgen keeps apart.
    match units {
        [] => {}
        [ou] => dn.push(DnType::OrganizationalUnitName, *ou),
        [first, second] => {
            dn.push(DnType::OrganizationalUnitName, *first);
            dn.push(DnType::CustomDnType(vec![2, 5, 4, 11]), *second);
        }
        _ => {
            return Err(DevError::Generate(
                "at most two organizational units per certificate".into(),
            ));
        }
    }
    dn.push(DnType::CommonName, common_name);
    p.distinguished_name = dn;
    p.not_before = odt(validity.not_before)?;
    p.not_after = odt(validity.not_after)?;
    p.serial_number = Some(serial(rng));
    Ok(p)
}

/// A certificate authority that can issue certificates.
pub struct DevCa {
    cert_der: Vec<u8>,
    key_pem: String,
    organization: String,
    curve: Curve,
    /// Its subjectKeyIdentifier: what its revocation lists name it by.
    ski: Vec<u8>,
    issuer: Issuer<'static, DevKey>,
}

impl fmt::Debug for DevCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevCa")
            .field("organization", &self.organization)
            .field("curve", &self.curve)
            .finish_non_exhaustive()
    }
}

/// What a leaf certificate is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    /// An MSP identity (signing gossip messages): digitalSignature only.
    Identity,
    /// A TLS certificate usable for server and client authentication.
    Tls,
}

/// A certificate and its private key.
#[derive(Clone)]
pub struct DevCert {
    /// The certificate, DER.
    pub cert_der: Vec<u8>,
    /// The private key, PKCS#8 PEM (what cryptogen writes to `priv_sk`).
    pub key_pem: String,
}

impl fmt::Debug for DevCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevCert")
            .field("cert_der_len", &self.cert_der.len())
            .finish_non_exhaustive()
    }
}

impl DevCert {
    /// The certificate, PEM.
    pub fn cert_pem(&self) -> String {
        certificate_pem(&self.cert_der)
    }

    /// SHA-256 of the certificate: the `tls_cert_hash` a TLS certificate is bound with.
    pub fn hash(&self) -> [u8; 32] {
        fabric_gossip_core::cert_hash(&self.cert_der)
    }
}

impl DevCa {
    /// A self-signed root CA named `common_name` for `organization`.
    pub fn root(
        common_name: &str,
        organization: &str,
        curve: Curve,
        validity: Validity,
        rng: &mut impl CryptoRngCore,
    ) -> Result<DevCa, DevError> {
        Self::root_with(common_name, organization, curve, validity, rng, |_| {})
    }

    /// A root as [`DevCa::root`] makes one, its parameters changed by `tweak` before it
    /// is signed (tests of what Go's `x509.Verify` refuses).
    pub(crate) fn root_with(
        common_name: &str,
        organization: &str,
        curve: Curve,
        validity: Validity,
        rng: &mut impl CryptoRngCore,
        tweak: impl FnOnce(&mut CertificateParams),
    ) -> Result<DevCa, DevError> {
        let key = DevKey::generate(curve, rng)?;
        let mut p = base_params(common_name, organization, &[], vec![], validity, rng)?;
        ca_extensions(&mut p, &key);
        p.use_authority_key_identifier_extension = false;
        tweak(&mut p);
        let cert = p.self_signed(&key)?;
        Ok(DevCa {
            cert_der: cert.der().to_vec(),
            key_pem: key.pkcs8_pem()?,
            organization: organization.to_owned(),
            curve,
            ski: ski(&key.public),
            issuer: Issuer::new(p, key),
        })
    }

    /// An intermediate CA under this one (Fabric CA deployments often have one).
    pub fn intermediate(
        &self,
        common_name: &str,
        validity: Validity,
        rng: &mut impl CryptoRngCore,
    ) -> Result<DevCa, DevError> {
        let key = DevKey::generate(self.curve, rng)?;
        let mut p = base_params(common_name, &self.organization, &[], vec![], validity, rng)?;
        ca_extensions(&mut p, &key);
        let cert = p.signed_by(&key, &self.issuer)?;
        Ok(DevCa {
            cert_der: cert.der().to_vec(),
            key_pem: key.pkcs8_pem()?,
            organization: self.organization.clone(),
            curve: self.curve,
            ski: ski(&key.public),
            issuer: Issuer::new(p, key),
        })
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// A certificate this CA signs for a new key, as [`DevCa::issue`] makes an identity,
    /// its parameters changed by `tweak` before it is signed (tests of what Go's
    /// `x509.Verify` refuses).
    #[cfg(test)]
    pub(crate) fn issue_with(
        &self,
        common_name: &str,
        validity: Validity,
        rng: &mut impl CryptoRngCore,
        tweak: impl FnOnce(&mut CertificateParams),
    ) -> Result<DevCert, DevError> {
        let key = DevKey::generate(self.curve, rng)?;
        let cert_der = self.certify_with(
            common_name,
            Usage::Identity,
            &["peer"],
            &[],
            &key,
            validity,
            rng,
            tweak,
        )?;
        Ok(DevCert {
            cert_der,
            key_pem: key.pkcs8_pem()?,
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        certificate_pem(&self.cert_der)
    }

    /// The CA's private key, PKCS#8 PEM.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Issues a certificate for a new key of this CA's curve. `common_name` becomes the CN
    /// and, for TLS, a DNS name together with `extra_names` (DNS names or IP addresses).
    pub fn issue(
        &self,
        common_name: &str,
        usage: Usage,
        extra_names: &[&str],
        validity: Validity,
        rng: &mut impl CryptoRngCore,
    ) -> Result<DevCert, DevError> {
        let key = DevKey::generate(self.curve, rng)?;
        let cert_der = self.certify(common_name, usage, extra_names, &key, validity, rng)?;
        Ok(DevCert {
            cert_der,
            key_pem: key.pkcs8_pem()?,
        })
    }

    /// Issues an MSP identity whose subject carries the organizational units `units`, in
    /// order (none, one or two), where [`DevCa::issue`] gives it `peer`: members of other
    /// NodeOU roles (`client`, `admin`, `orderer`), of none, or of two, for tests of an
    /// MSP's `config.yaml`.
    pub fn issue_with_units(
        &self,
        common_name: &str,
        units: &[&str],
        validity: Validity,
        rng: &mut impl CryptoRngCore,
    ) -> Result<DevCert, DevError> {
        let key = DevKey::generate(self.curve, rng)?;
        let cert_der = self.certify_with(
            common_name,
            Usage::Identity,
            units,
            &[],
            &key,
            validity,
            rng,
            |_| {},
        )?;
        Ok(DevCert {
            cert_der,
            key_pem: key.pkcs8_pem()?,
        })
    }

    /// A CRL of this CA revoking `revoked` (certificates, DER, that it issued), PEM, as
    /// Fabric CA's `gencrl` writes one for an MSP's `crls/` folder: version 2, this CA's
    /// subjectKeyIdentifier as authorityKeyIdentifier, valid from `this_update` for a week.
    pub fn revocation_list(
        &self,
        revoked: &[&[u8]],
        this_update: Instant,
    ) -> Result<String, DevError> {
        self.revocation_list_naming(self, revoked, this_update)
    }

    /// Like [`DevCa::revocation_list`], but naming `claimed` as its issuer while this CA
    /// signs it: a forged CRL, which Fabric (and this crate) skip because `claimed`'s key
    /// does not verify it. For tests of that rule.
    pub fn revocation_list_naming(
        &self,
        claimed: &DevCa,
        revoked: &[&[u8]],
        this_update: Instant,
    ) -> Result<String, DevError> {
        use rcgen::{CertificateRevocationListParams, RevokedCertParams};
        use x509_cert::der::Decode;
        let at = odt(this_update)?;
        let revoked_certs = revoked
            .iter()
            .map(|der| {
                let cert = x509_cert::Certificate::from_der(der)
                    .map_err(|e| DevError::Generate(format!("revoked certificate: {e}")))?;
                Ok(RevokedCertParams {
                    serial_number: SerialNumber::from_slice(
                        cert.tbs_certificate.serial_number.as_bytes(),
                    ),
                    revocation_time: at,
                    reason_code: None,
                    invalidity_date: None,
                })
            })
            .collect::<Result<Vec<_>, DevError>>()?;
        let params = CertificateRevocationListParams {
            this_update: at,
            next_update: at + time::Duration::days(7),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::PreSpecified(claimed.ski.clone()),
        };
        Ok(params.signed_by(&self.issuer)?.pem()?)
    }

    /// Certifies arbitrary SEC1 public key bytes as if they were a key of this CA's curve,
    /// without checking them: for tests of a key that is not on its curve.
    pub fn certify_raw_public_key(
        &self,
        common_name: &str,
        sec1_point: Vec<u8>,
        validity: Validity,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Vec<u8>, DevError> {
        let key = RawKey {
            point: sec1_point,
            alg: algorithm(self.curve)?,
        };
        self.certify(common_name, Usage::Identity, &[], &key, validity, rng)
    }

    fn certify(
        &self,
        common_name: &str,
        usage: Usage,
        extra_names: &[&str],
        key: &impl PublicKeyData,
        validity: Validity,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Vec<u8>, DevError> {
        // cryptogen's identities carry the OU of their NodeOU role; TLS certificates none.
        let units: &[&str] = match usage {
            Usage::Identity => &["peer"],
            Usage::Tls => &[],
        };
        self.certify_with(
            common_name,
            usage,
            units,
            extra_names,
            key,
            validity,
            rng,
            |_| {},
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn certify_with(
        &self,
        common_name: &str,
        usage: Usage,
        units: &[&str],
        extra_names: &[&str],
        key: &impl PublicKeyData,
        validity: Validity,
        rng: &mut impl CryptoRngCore,
        tweak: impl FnOnce(&mut CertificateParams),
    ) -> Result<Vec<u8>, DevError> {
        let sans = match usage {
            Usage::Identity => vec![],
            Usage::Tls => {
                let mut sans = vec![common_name.to_owned()];
                sans.extend(extra_names.iter().map(|s| (*s).to_owned()));
                sans
            }
        };
        let mut p = base_params(common_name, &self.organization, units, sans, validity, rng)?;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_identifier_method = KeyIdMethod::PreSpecified(ski(key.der_bytes()));
        p.use_authority_key_identifier_extension = true;
        match usage {
            Usage::Identity => p.key_usages = vec![KeyUsagePurpose::DigitalSignature],
            Usage::Tls => {
                p.key_usages = vec![
                    KeyUsagePurpose::DigitalSignature,
                    KeyUsagePurpose::KeyEncipherment,
                ];
                p.extended_key_usages = vec![
                    ExtendedKeyUsagePurpose::ServerAuth,
                    ExtendedKeyUsagePurpose::ClientAuth,
                ];
            }
        }
        tweak(&mut p);
        Ok(p.signed_by(key, &self.issuer)?.der().to_vec())
    }
}

fn ca_extensions(p: &mut CertificateParams, key: &DevKey) {
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_identifier_method = KeyIdMethod::PreSpecified(ski(&key.public));
    p.use_authority_key_identifier_extension = true;
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ClientAuth,
        ExtendedKeyUsagePurpose::ServerAuth,
    ];
}

/// One generated peer.
#[derive(Clone, Debug)]
pub struct DevPeer {
    /// Its host name, `<name>.<domain>`.
    pub host: String,
    /// Its MSP identity (signcerts + keystore).
    pub identity: DevCert,
    /// Its TLS certificate and key.
    pub tls: DevCert,
}

/// One generated organization: its CAs and peers.
#[derive(Debug)]
pub struct DevOrg {
    /// What was asked for.
    pub spec: OrgSpec,
    /// The identity CA (`msp/cacerts`).
    pub ca: DevCa,
    /// The TLS CA (`msp/tlscacerts`, each peer's `tls/ca.crt`).
    pub tls_ca: DevCa,
    /// The peers, in the order of `spec.peers`.
    pub peers: Vec<DevPeer>,
}

impl DevOrg {
    /// Generates the organization: its CAs valid for `validity`, and one identity and one
    /// TLS certificate per peer, valid for `validity` as well.
    pub fn generate(
        spec: &OrgSpec,
        validity: Validity,
        rng: &mut impl CryptoRngCore,
    ) -> Result<DevOrg, DevError> {
        // cryptogen's two roots per organization: `ca.<domain>` and `tlsca.<domain>`.
        let root = |name: &str, rng: &mut _| {
            let common_name = format!("{name}.{}", spec.domain);
            DevCa::root(&common_name, &spec.domain, spec.curve, validity, rng)
        };
        let ca = root("ca", rng)?;
        let tls_ca = root("tlsca", rng)?;
        let mut org = DevOrg {
            spec: spec.clone(),
            ca,
            tls_ca,
            peers: Vec::new(),
        };
        for name in &spec.peers {
            let peer = org.issue_peer(name, validity, rng)?;
            org.peers.push(peer);
        }
        Ok(org)
    }

    /// Issues a new identity and TLS certificate for peer `name` (short name), e.g. a
    /// renewed certificate or one with a chosen validity for tests. The peer is not added
    /// to `self.peers`.
    pub fn issue_peer(
        &self,
        name: &str,
        validity: Validity,
        rng: &mut impl CryptoRngCore,
    ) -> Result<DevPeer, DevError> {
        let host = format!("{name}.{}", self.spec.domain);
        let identity = self.ca.issue(&host, Usage::Identity, &[], validity, rng)?;
        let tls = self.tls_ca.issue(
            &host,
            Usage::Tls,
            &[name, "localhost", "127.0.0.1"],
            validity,
            rng,
        )?;
        Ok(DevPeer {
            host,
            identity,
            tls,
        })
    }

    /// Trusts this organization's identity CA for its MSP ID.
    pub fn add_to_trust(&self, trust: &mut TrustStore) -> Result<(), LoadError> {
        trust.add_ca_pem(&self.spec.msp_id, self.ca.cert_pem().as_bytes())?;
        Ok(())
    }

    /// A security provider for `peer` (any peer of this organization, generated or issued)
    /// trusting `trust`.
    pub fn security(&self, peer: &DevPeer, trust: TrustStore) -> Result<MspSecurity, LoadError> {
        MspSecurity::new(
            &self.spec.msp_id,
            peer.identity.cert_pem().as_bytes(),
            peer.identity.key_pem.as_bytes(),
            trust,
        )
    }
}

/// Generates every organization in memory.
pub fn generate_in_memory(
    specs: &[OrgSpec],
    validity: Validity,
    rng: &mut impl CryptoRngCore,
) -> Result<Vec<DevOrg>, DevError> {
    specs
        .iter()
        .map(|s| DevOrg::generate(s, validity, rng))
        .collect()
}

/// Every organization generated in memory from a seed, with certificates valid for 13 years
/// from 2023-01-01: the same PKI on every run, for tests and simulations that must be
/// deterministic, and valid both on a simulator's virtual clock (which starts in November
/// 2023) and on the wall clock until 2036. The seed drives ChaCha8, so two callers with
/// different seeds get unrelated keys.
pub fn seeded_in_memory(specs: &[OrgSpec], seed: u64) -> Result<Vec<DevOrg>, DevError> {
    use rand_core::SeedableRng;
    let validity = Validity::starting(
        Instant::from_unix_secs(1_672_531_200),
        Duration::from_secs(13 * 365 * 24 * 3600),
    );
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    generate_in_memory(specs, validity, &mut rng)
}

/// A trust store with the identity CA of every organization.
pub fn trust_all(orgs: &[DevOrg]) -> Result<TrustStore, LoadError> {
    let mut trust = TrustStore::new();
    for org in orgs {
        org.add_to_trust(&mut trust)?;
    }
    Ok(trust)
}

/// Where [`write_orgs`] put things.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The output directory.
    pub root: PathBuf,
    /// One entry per organization, in the order given.
    pub orgs: Vec<OrgLayout>,
}

/// Where one organization's material is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrgLayout {
    /// Its MSP ID.
    pub msp_id: String,
    /// Its domain.
    pub domain: String,
    /// `<out>/peerOrganizations/<domain>`.
    pub dir: PathBuf,
    /// The organization's MSP folder: what other nodes trust (`--trust MSPID=DIR`).
    pub msp_dir: PathBuf,
    /// Its peers.
    pub peers: Vec<PeerLayout>,
}

/// Where one peer's material is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerLayout {
    /// The peer's host name.
    pub host: String,
    /// Its own MSP folder (`--msp-dir`).
    pub msp_dir: PathBuf,
    /// Its TLS folder.
    pub tls_dir: PathBuf,
    /// `tls/server.crt`.
    pub tls_cert: PathBuf,
    /// `tls/server.key`.
    pub tls_key: PathBuf,
    /// `tls/ca.crt`.
    pub tls_ca: PathBuf,
}

/// Generates `specs` and writes them under `out` in cryptogen's layout (module docs).
/// Refuses to touch an organization folder that already exists.
pub fn generate(
    out: impl AsRef<Path>,
    specs: &[OrgSpec],
    validity: Validity,
    rng: &mut impl CryptoRngCore,
) -> Result<Layout, DevError> {
    let out = out.as_ref();
    for spec in specs {
        let dir = org_dir(out, spec);
        if dir.exists() {
            return Err(DevError::Exists(dir));
        }
    }
    let orgs = generate_in_memory(specs, validity, rng)?;
    write_orgs(out, &orgs)
}

fn org_dir(out: &Path, spec: &OrgSpec) -> PathBuf {
    out.join("peerOrganizations").join(&spec.domain)
}

/// Writes already generated organizations under `out` (module docs for the layout).
/// Refuses to touch an organization folder that already exists.
pub fn write_orgs(out: impl AsRef<Path>, orgs: &[DevOrg]) -> Result<Layout, DevError> {
    let out = out.as_ref();
    for org in orgs {
        let dir = org_dir(out, &org.spec);
        if dir.exists() {
            return Err(DevError::Exists(dir));
        }
    }
    let mut layout = Layout {
        root: out.to_owned(),
        orgs: Vec::new(),
    };
    for org in orgs {
        let d = &org.spec.domain;
        let dir = org_dir(out, &org.spec);
        let ca_name = format!("ca.{d}-cert.pem");
        let tlsca_name = format!("tlsca.{d}-cert.pem");
        let ca_pem = org.ca.cert_pem();
        let tlsca_pem = org.tls_ca.cert_pem();
        put(&dir.join("ca").join(&ca_name), &ca_pem, false)?;
        put(&dir.join("ca/priv_sk"), org.ca.key_pem(), true)?;
        put(&dir.join("tlsca").join(&tlsca_name), &tlsca_pem, false)?;
        put(&dir.join("tlsca/priv_sk"), org.tls_ca.key_pem(), true)?;
        let msp_dir = dir.join("msp");
        write_msp_common(&msp_dir, &ca_name, &ca_pem, &tlsca_name, &tlsca_pem)?;
        let mut peers = Vec::new();
        for peer in &org.peers {
            let pdir = dir.join("peers").join(&peer.host);
            let pmsp = pdir.join("msp");
            write_msp_common(&pmsp, &ca_name, &ca_pem, &tlsca_name, &tlsca_pem)?;
            put(
                &pmsp
                    .join("signcerts")
                    .join(format!("{}-cert.pem", peer.host)),
                &peer.identity.cert_pem(),
                false,
            )?;
            put(&pmsp.join("keystore/priv_sk"), &peer.identity.key_pem, true)?;
            let tls_dir = pdir.join("tls");
            let (tls_ca, tls_cert, tls_key) = (
                tls_dir.join("ca.crt"),
                tls_dir.join("server.crt"),
                tls_dir.join("server.key"),
            );
            put(&tls_ca, &tlsca_pem, false)?;
            put(&tls_cert, &peer.tls.cert_pem(), false)?;
            put(&tls_key, &peer.tls.key_pem, true)?;
            peers.push(PeerLayout {
                host: peer.host.clone(),
                msp_dir: pmsp,
                tls_dir,
                tls_cert,
                tls_key,
                tls_ca,
            });
        }
        layout.orgs.push(OrgLayout {
            msp_id: org.spec.msp_id.clone(),
            domain: d.clone(),
            dir,
            msp_dir,
            peers,
        });
    }
    Ok(layout)
}

fn write_msp_common(
    msp: &Path,
    ca_name: &str,
    ca_pem: &str,
    tlsca_name: &str,
    tlsca_pem: &str,
) -> Result<(), DevError> {
    put(&msp.join("cacerts").join(ca_name), ca_pem, false)?;
    put(&msp.join("tlscacerts").join(tlsca_name), tlsca_pem, false)?;
    let mut config = String::from("NodeOUs:\n  Enable: true\n");
    for (field, ou) in [
        ("ClientOUIdentifier", "client"),
        ("PeerOUIdentifier", "peer"),
        ("AdminOUIdentifier", "admin"),
        ("OrdererOUIdentifier", "orderer"),
    ] {
        config.push_str(&format!(
            "  {field}:\n    Certificate: cacerts/{ca_name}\n    OrganizationalUnitIdentifier: {ou}\n"
        ));
    }
    put(&msp.join("config.yaml"), &config, false)
}

/// Writes `contents` to `path`, creating parent folders; private keys are made readable
/// by the owner only.
fn put(path: &Path, contents: &str, private: bool) -> Result<(), DevError> {
    let err = |error| DevError::Io {
        path: path.to_owned(),
        error,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    use std::io::Write;
    let mut f = opts.open(path).map_err(err)?;
    f.write_all(contents.as_bytes()).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cert::CertInfo;
    use crate::keys::Arithmetic;
    use der::Decode;
    use der::oid::ObjectIdentifier;
    use rand_chacha::ChaCha20Rng;
    use rand_chacha::rand_core::SeedableRng;
    use x509_cert::Certificate;
    use x509_cert::ext::pkix::name::GeneralName;
    use x509_cert::ext::pkix::{
        AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAltName,
        SubjectKeyIdentifier,
    };
    use x509_cert::time::Time;

    const SERVER_AUTH: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.1");
    const CLIENT_AUTH: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.2");
    const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
    const ECDSA_WITH_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");

    /// 2023-11-14T22:13:20Z, the core harness's start.
    fn start() -> Instant {
        Instant::from_unix_secs(1_700_000_000)
    }

    fn year() -> Validity {
        Validity::starting(start(), Duration::from_secs(365 * 24 * 3600))
    }

    fn parse(der: &[u8]) -> Certificate {
        Certificate::from_der(der).expect("a generated certificate parses")
    }

    /// The subject's attributes in the order they are written, e.g. `["C=US", ...]`.
    fn subject(cert: &Certificate) -> Vec<String> {
        cert.tbs_certificate
            .subject
            .0
            .iter()
            .flat_map(|rdn| rdn.0.iter().map(|atv| atv.to_string()))
            .collect()
    }

    fn extension<'a, T: der::Decode<'a> + der::oid::AssociatedOid>(
        cert: &'a Certificate,
    ) -> Option<T> {
        cert.tbs_certificate
            .get::<T>()
            .expect("the extension decodes")
            .map(|(_, e)| e)
    }

    /// The key usages set in the certificate's keyUsage extension, by name.
    fn key_usages(cert: &Certificate) -> Vec<&'static str> {
        let ku = extension::<KeyUsage>(cert).expect("a keyUsage");
        [
            ("digitalSignature", ku.digital_signature()),
            ("nonRepudiation", ku.non_repudiation()),
            ("keyEncipherment", ku.key_encipherment()),
            ("dataEncipherment", ku.data_encipherment()),
            ("keyAgreement", ku.key_agreement()),
            ("keyCertSign", ku.key_cert_sign()),
            ("cRLSign", ku.crl_sign()),
            ("encipherOnly", ku.encipher_only()),
            ("decipherOnly", ku.decipher_only()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect()
    }

    fn ski_of(cert: &Certificate) -> Vec<u8> {
        extension::<SubjectKeyIdentifier>(cert)
            .expect("a subjectKeyIdentifier")
            .0
            .as_bytes()
            .to_vec()
    }

    fn aki_of(cert: &Certificate) -> Option<Vec<u8>> {
        extension::<AuthorityKeyIdentifier>(cert).map(|aki| {
            aki.key_identifier
                .expect("a keyIdentifier")
                .as_bytes()
                .to_vec()
        })
    }

    /// SHA-256 of the public point the certificate carries.
    fn point_hash(cert: &Certificate) -> Vec<u8> {
        use sha2::Digest;
        let point = cert
            .tbs_certificate
            .subject_public_key_info
            .subject_public_key
            .as_bytes()
            .expect("whole bytes");
        sha2::Sha256::digest(point).to_vec()
    }

    fn org(curve: Curve, seed: u64) -> DevOrg {
        let spec = OrgSpec::new("Org1MSP", "org1.example.com", 2).with_curve(curve);
        DevOrg::generate(&spec, year(), &mut ChaCha20Rng::seed_from_u64(seed)).unwrap()
    }

    /// A real Fabric peer matches cryptogen's names: the CA `ca.<domain>` of organization
    /// `<domain>`, its peers' identities with the NodeOU `peer` and their TLS certificates
    /// without an OU, each attribute in cryptogen's order.
    #[test]
    fn subjects_are_cryptogens() {
        let org = org(Curve::P256, 1);
        let base = [
            "C=US",
            "ST=California",
            "L=San Francisco",
            "O=org1.example.com",
        ];
        let with = |rest: &[&str]| -> Vec<String> {
            base.iter().chain(rest).map(|s| (*s).to_owned()).collect()
        };
        let ca = parse(org.ca.cert_der());
        assert_eq!(subject(&ca), with(&["CN=ca.org1.example.com"]));
        assert_eq!(ca.tbs_certificate.issuer, ca.tbs_certificate.subject);
        let tls_ca = parse(org.tls_ca.cert_der());
        assert_eq!(subject(&tls_ca), with(&["CN=tlsca.org1.example.com"]));
        assert_eq!(org.peers.len(), 2);
        for (i, peer) in org.peers.iter().enumerate() {
            let host = format!("peer{i}.org1.example.com");
            assert_eq!(peer.host, host);
            let identity = parse(&peer.identity.cert_der);
            assert_eq!(
                subject(&identity),
                with(&["OU=peer", &format!("CN={host}")])
            );
            assert_eq!(identity.tbs_certificate.issuer, ca.tbs_certificate.subject);
            let tls = parse(&peer.tls.cert_der);
            assert_eq!(subject(&tls), with(&[&format!("CN={host}")]));
            assert_eq!(tls.tbs_certificate.issuer, tls_ca.tbs_certificate.subject);
        }
    }

    /// An MSP's NodeOU roles and OU identifiers match a member's OUs: an identity can
    /// carry none, one or two, in the order given; a third is refused, not dropped.
    #[test]
    fn identities_carry_the_units_asked_for() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let ca = DevCa::root("ca.org1", "org1", Curve::P256, year(), &mut rng).unwrap();
        for units in [&[][..], &["admin"], &["blue", "client"]] {
            let cert = ca
                .issue_with_units("member.org1", units, year(), &mut rng)
                .unwrap();
            let info = CertInfo::from_der(&cert.cert_der).unwrap();
            let want: Vec<Vec<u8>> = units.iter().map(|u| u.as_bytes().to_vec()).collect();
            assert_eq!(info.units, want, "{units:?}");
        }
        let three = ca.issue_with_units("member.org1", &["a", "b", "c"], year(), &mut rng);
        assert!(matches!(three, Err(DevError::Generate(_))), "{three:?}");
    }

    /// An organization made from `seed`, an intermediate CA under its root, and a member
    /// that intermediate issued: the chain of three that Fabric's MSPs also accept.
    fn with_intermediate(curve: Curve, seed: u64) -> (DevOrg, DevCa, DevCert) {
        let org = org(curve, seed);
        let mut rng = ChaCha20Rng::seed_from_u64(seed + 1);
        let ica = org
            .ca
            .intermediate("ica.org1.example.com", year(), &mut rng)
            .unwrap();
        let member = ica
            .issue(
                "peer9.org1.example.com",
                Usage::Identity,
                &[],
                year(),
                &mut rng,
            )
            .unwrap();
        (org, ica, member)
    }

    /// cryptogen's subject key identifier is SHA-256 of the public point (Fabric's CRLs
    /// and `x509.Verify`'s chain search name CAs by it); every issued certificate names
    /// its CA's the same way, and a root names none.
    #[test]
    fn key_identifiers_are_sha256_of_the_point_and_chain_to_the_issuer() {
        for curve in [Curve::P256, Curve::P384] {
            let (org, ica, member) = with_intermediate(curve, 3);
            let ca = parse(org.ca.cert_der());
            let tls_ca = parse(org.tls_ca.cert_der());
            let ica = parse(ica.cert_der());
            let member = parse(&member.cert_der);
            for root in [&ca, &tls_ca] {
                assert_eq!(ski_of(root), point_hash(root), "{curve:?}");
                assert_eq!(aki_of(root), None, "{curve:?}: a root names no authority");
            }
            assert_eq!(ski_of(&ica), point_hash(&ica));
            assert_eq!(aki_of(&ica), Some(ski_of(&ca)));
            assert_eq!(ski_of(&member), point_hash(&member));
            assert_eq!(aki_of(&member), Some(ski_of(&ica)));
            for peer in &org.peers {
                let identity = parse(&peer.identity.cert_der);
                assert_eq!(ski_of(&identity), point_hash(&identity), "{curve:?}");
                assert_eq!(aki_of(&identity), Some(ski_of(&ca)), "{curve:?}");
                let tls = parse(&peer.tls.cert_der);
                assert_eq!(ski_of(&tls), point_hash(&tls), "{curve:?}");
                assert_eq!(aki_of(&tls), Some(ski_of(&tls_ca)), "{curve:?}");
            }
        }
    }

    /// Each certificate is signed by its issuer's key with the curve's own hash
    /// (ECDSA-SHA256 on P-256, ECDSA-SHA384 on P-384), with a low `s`, as Fabric's
    /// tools sign; its private key is the pair of its public key, on the curve asked for.
    #[test]
    fn certificates_are_signed_low_s_by_their_issuer_with_the_curves_hash() {
        for (curve, alg, point_len) in [
            (Curve::P256, ECDSA_WITH_SHA256, 65),
            (Curve::P384, ECDSA_WITH_SHA384, 97),
        ] {
            let (org, ica, ica_member) = with_intermediate(curve, 5);
            let mut rng = ChaCha20Rng::seed_from_u64(7);
            let root = |ca: &DevCa| (ca.cert_der().to_vec(), ca.key_pem().to_owned());
            let mut signed: Vec<(Vec<u8>, String, &[u8])> = vec![
                (root(&org.ca).0, root(&org.ca).1, org.ca.cert_der()),
                (
                    root(&org.tls_ca).0,
                    root(&org.tls_ca).1,
                    org.tls_ca.cert_der(),
                ),
                (root(&ica).0, root(&ica).1, org.ca.cert_der()),
                (
                    ica_member.cert_der.clone(),
                    ica_member.key_pem.clone(),
                    ica.cert_der(),
                ),
            ];
            for _ in 0..8 {
                let peer = org.issue_peer("peer7", year(), &mut rng).unwrap();
                signed.push((
                    peer.identity.cert_der,
                    peer.identity.key_pem,
                    org.ca.cert_der(),
                ));
                signed.push((peer.tls.cert_der, peer.tls.key_pem, org.tls_ca.cert_der()));
            }
            for (der, key_pem, issuer) in &signed {
                let cert = CertInfo::from_der(der).unwrap();
                let issuer = CertInfo::from_der(issuer).unwrap();
                assert_eq!(parse(der).signature_algorithm.oid, alg, "{curve:?}");
                assert!(
                    cert.is_signed_by(&issuer, Arithmetic::PureRust),
                    "{curve:?}"
                );
                assert!(cert.is_signed_by(&issuer, Arithmetic::AwsLc), "{curve:?}");
                assert!(
                    issuer.key.low_s_form(&cert.signature).is_none(),
                    "{curve:?}: a high-S signature"
                );
                let spki = &parse(der).tbs_certificate.subject_public_key_info;
                assert_eq!(spki.subject_public_key.raw_bytes().len(), point_len);
                let key = crate::keys::PrivateKey::from_pem(key_pem.as_bytes()).unwrap();
                assert!(
                    key.is_pair_of(&cert.key),
                    "{curve:?}: the key is the certificate's"
                );
            }
        }
    }

    /// What each certificate may be used for, as cryptogen writes it: CAs sign
    /// certificates and CRLs (and are unconstrained CAs), identities only sign, TLS
    /// certificates serve both ends of a mutual TLS connection under the names asked for.
    #[test]
    fn key_usages_constraints_and_names_are_cryptogens() {
        let org = org(Curve::P256, 7);
        let mut rng = ChaCha20Rng::seed_from_u64(8);
        let ica = org
            .ca
            .intermediate("ica.org1.example.com", year(), &mut rng)
            .unwrap();
        for ca in [org.ca.cert_der(), org.tls_ca.cert_der(), ica.cert_der()] {
            let ca = parse(ca);
            let bc = extension::<BasicConstraints>(&ca).expect("basicConstraints");
            assert!(bc.ca);
            assert_eq!(bc.path_len_constraint, None);
            assert_eq!(
                key_usages(&ca),
                [
                    "digitalSignature",
                    "keyEncipherment",
                    "keyCertSign",
                    "cRLSign"
                ]
            );
            let eku = extension::<ExtendedKeyUsage>(&ca).expect("extKeyUsage").0;
            assert_eq!(eku, vec![CLIENT_AUTH, SERVER_AUTH]);
            assert!(extension::<SubjectAltName>(&ca).is_none());
        }
        for peer in &org.peers {
            let identity = parse(&peer.identity.cert_der);
            let bc = extension::<BasicConstraints>(&identity).expect("basicConstraints");
            assert!(!bc.ca);
            assert_eq!(key_usages(&identity), ["digitalSignature"]);
            assert!(extension::<ExtendedKeyUsage>(&identity).is_none());
            assert!(extension::<SubjectAltName>(&identity).is_none());

            let tls = parse(&peer.tls.cert_der);
            let bc = extension::<BasicConstraints>(&tls).expect("basicConstraints");
            assert!(!bc.ca);
            assert_eq!(key_usages(&tls), ["digitalSignature", "keyEncipherment"]);
            let eku = extension::<ExtendedKeyUsage>(&tls).expect("extKeyUsage").0;
            assert_eq!(eku, vec![SERVER_AUTH, CLIENT_AUTH]);
            let short = peer.host.split('.').next().unwrap();
            let names: Vec<String> = extension::<SubjectAltName>(&tls)
                .expect("subjectAltName")
                .0
                .iter()
                .map(|n| match n {
                    GeneralName::DnsName(d) => format!("DNS:{}", d.as_str()),
                    GeneralName::IpAddress(ip) => format!("IP:{:?}", ip.as_bytes()),
                    other => panic!("unexpected name {other:?}"),
                })
                .collect();
            assert_eq!(
                names,
                [
                    format!("DNS:{}", peer.host),
                    format!("DNS:{short}"),
                    "DNS:localhost".to_owned(),
                    "IP:[127, 0, 0, 1]".to_owned(),
                ]
            );
        }
    }

    fn unix_secs(t: &Time) -> u64 {
        t.to_unix_duration().as_secs()
    }

    /// Certificates keep the whole seconds of their validity (an instant inside a second
    /// starts at that second, not later, so a member is valid when it was asked to be),
    /// and "never" is RFC 5280's 99991231235959Z, which Go reads as the end of time.
    #[test]
    fn validity_is_kept_to_the_second_and_never_is_rfc_5280s() {
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        let within = Validity {
            not_before: start() + Duration::from_millis(999),
            not_after: start() + Duration::from_secs(86_400) + Duration::from_millis(1),
        };
        let ca = DevCa::root("ca.org1", "org1", Curve::P256, within, &mut rng).unwrap();
        let leaf = ca
            .issue("peer0.org1", Usage::Tls, &[], within, &mut rng)
            .unwrap();
        for der in [ca.cert_der(), &leaf.cert_der] {
            let validity = parse(der).tbs_certificate.validity;
            assert_eq!(unix_secs(&validity.not_before), 1_700_000_000);
            assert_eq!(unix_secs(&validity.not_after), 1_700_086_400);
        }
        let forever = Validity {
            not_before: start(),
            not_after: Instant::MAX,
        };
        let ca = DevCa::root("ca.org1", "org1", Curve::P256, forever, &mut rng).unwrap();
        let leaf = ca
            .issue("peer0.org1", Usage::Identity, &[], forever, &mut rng)
            .unwrap();
        for der in [ca.cert_der(), &leaf.cert_der] {
            let validity = parse(der).tbs_certificate.validity;
            assert!(matches!(validity.not_after, Time::GeneralTime(_)));
            assert_eq!(unix_secs(&validity.not_after), 253_402_300_799);
            assert_eq!(unix_secs(&validity.not_before), 1_700_000_000);
        }
    }

    /// The validities the module offers: a length from a start, cryptogen's ten years
    /// (of 365 days), and the seeded PKI's 13 years from 2023-01-01.
    #[test]
    fn the_offered_validities_span_what_they_say() {
        let v = Validity::starting(start(), Duration::from_secs(90));
        assert_eq!(v.not_before, start());
        assert_eq!(v.not_after, Instant::from_unix_secs(1_700_000_090));
        let ten = Validity::ten_years_from(start());
        assert_eq!(ten.not_before, start());
        assert_eq!(
            ten.not_after,
            Instant::from_unix_secs(1_700_000_000 + 3650 * 86_400)
        );
        let orgs = seeded_in_memory(&[OrgSpec::new("Org1MSP", "org1.example.com", 1)], 1).unwrap();
        let org = &orgs[0];
        for der in [
            org.ca.cert_der(),
            org.tls_ca.cert_der(),
            &org.peers[0].identity.cert_der,
            &org.peers[0].tls.cert_der,
        ] {
            let validity = parse(der).tbs_certificate.validity;
            assert_eq!(unix_secs(&validity.not_before), 1_672_531_200);
            assert_eq!(
                unix_secs(&validity.not_after),
                1_672_531_200 + 13 * 365 * 86_400
            );
        }
    }

    /// Serial numbers are 16 bytes, positive and without a leading zero byte (so every DER
    /// encoder writes them alike), and random in all but the top two bits of their first
    /// byte: two certificates of a CA never share one.
    #[test]
    fn serials_are_sixteen_positive_random_bytes() {
        let org = org(Curve::P256, 10);
        let mut rng = ChaCha20Rng::seed_from_u64(11);
        let mut serials = vec![
            parse(org.ca.cert_der()).tbs_certificate.serial_number,
            parse(org.tls_ca.cert_der()).tbs_certificate.serial_number,
        ];
        for _ in 0..32 {
            let peer = org.issue_peer("peer0", year(), &mut rng).unwrap();
            for der in [peer.identity.cert_der, peer.tls.cert_der] {
                serials.push(parse(&der).tbs_certificate.serial_number);
            }
        }
        let mut first_bytes = std::collections::BTreeSet::new();
        for serial in &serials {
            let bytes = serial.as_bytes();
            assert_eq!(bytes.len(), 16, "{bytes:02x?}");
            assert!((0x40..=0x7f).contains(&bytes[0]), "{bytes:02x?}");
            first_bytes.insert(bytes[0]);
        }
        assert!(first_bytes.len() > 16, "{first_bytes:02x?}");
        let distinct: std::collections::BTreeSet<_> =
            serials.iter().map(|s| s.as_bytes()).collect();
        assert_eq!(distinct.len(), serials.len());
    }

    /// The simulator's and the tests' PKI is the same for a seed on every run (certificates
    /// and keys byte for byte), and unrelated for another seed.
    #[test]
    fn a_seed_gives_the_same_pki_and_another_seed_another() {
        let specs = [
            OrgSpec::new("Org1MSP", "org1.example.com", 2),
            OrgSpec::new("Org2MSP", "org2.example.com", 1).with_curve(Curve::P384),
        ];
        let material = |orgs: &[DevOrg]| {
            let mut all = Vec::new();
            for org in orgs {
                all.push(org.ca.cert_pem());
                all.push(org.ca.key_pem().to_owned());
                all.push(org.tls_ca.cert_pem());
                all.push(org.tls_ca.key_pem().to_owned());
                for peer in &org.peers {
                    all.push(peer.identity.cert_pem());
                    all.push(peer.identity.key_pem.clone());
                    all.push(peer.tls.cert_pem());
                    all.push(peer.tls.key_pem.clone());
                }
            }
            all
        };
        let a = material(&seeded_in_memory(&specs, 7).unwrap());
        assert_eq!(a.len(), 2 * 4 + 3 * 4);
        assert_eq!(a, material(&seeded_in_memory(&specs, 7).unwrap()));
        let b = material(&seeded_in_memory(&specs, 8).unwrap());
        assert!(a.iter().zip(&b).all(|(x, y)| x != y));
    }

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// `generate` writes cryptogen's folders: the organization's MSP, with NodeOUs on for
    /// its four roles, is what another node trusts, and a peer's own MSP folder and TLS
    /// folder load as that peer, its keys readable by the owner alone. An organization
    /// folder that exists is refused before anything is written or generated.
    #[test]
    fn generate_writes_cryptogens_folders_that_load_as_the_peers() {
        use fabric_gossip_core::Security;
        let out = tempfile::tempdir().unwrap();
        let specs = [
            OrgSpec::new("Org1MSP", "org1.example.com", 2),
            OrgSpec::new("Org2MSP", "org2.example.com", 1).with_curve(Curve::P384),
        ];
        let mut rng = ChaCha20Rng::seed_from_u64(12);
        let layout = generate(out.path(), &specs, year(), &mut rng).unwrap();
        let now = start() + Duration::from_secs(3600);
        assert_eq!(layout.root, out.path());
        assert_eq!(layout.orgs.len(), 2);
        let mut trust = TrustStore::new();
        for (org, spec) in layout.orgs.iter().zip(&specs) {
            let d = &spec.domain;
            assert_eq!((&org.msp_id, &org.domain), (&spec.msp_id, d));
            assert_eq!(org.dir, out.path().join("peerOrganizations").join(d));
            assert_eq!(org.msp_dir, org.dir.join("msp"));
            trust.add_msp_dir(&org.msp_id, &org.msp_dir).unwrap();
            let mut roles: Vec<String> = trust
                .node_roles(&org.msp_id)
                .iter()
                .map(|(role, ou)| format!("{role:?}={ou}"))
                .collect();
            roles.sort();
            assert_eq!(
                roles,
                [
                    "Admin=admin",
                    "Client=client",
                    "Orderer=orderer",
                    "Peer=peer"
                ]
            );
            let ca = read(&org.dir.join(format!("ca/ca.{d}-cert.pem")));
            let tlsca = read(&org.dir.join(format!("tlsca/tlsca.{d}-cert.pem")));
            for msp in std::iter::once(&org.msp_dir).chain(org.peers.iter().map(|p| &p.msp_dir)) {
                assert_eq!(read(&msp.join(format!("cacerts/ca.{d}-cert.pem"))), ca);
                assert_eq!(
                    read(&msp.join(format!("tlscacerts/tlsca.{d}-cert.pem"))),
                    tlsca
                );
                assert_eq!(
                    read(&msp.join("config.yaml")),
                    read(&org.msp_dir.join("config.yaml"))
                );
            }
            for (ca_dir, ca_pem) in [("ca", &ca), ("tlsca", &tlsca)] {
                let key = crate::keys::PrivateKey::from_pem(
                    read(&org.dir.join(ca_dir).join("priv_sk")).as_bytes(),
                )
                .unwrap();
                let der = crate::cert::pem_exactly_one(ca_pem.as_bytes()).unwrap().1;
                assert!(
                    key.is_pair_of(&CertInfo::from_der(&der).unwrap().key),
                    "{ca_dir}"
                );
            }
            assert_eq!(org.peers.len(), spec.peers.len());
            for (peer, name) in org.peers.iter().zip(&spec.peers) {
                assert_eq!(peer.host, format!("{name}.{d}"));
                let pdir = org.dir.join("peers").join(&peer.host);
                assert_eq!(peer.msp_dir, pdir.join("msp"));
                assert_eq!(peer.tls_dir, pdir.join("tls"));
                assert_eq!(peer.tls_cert, pdir.join("tls/server.crt"));
                assert_eq!(peer.tls_key, pdir.join("tls/server.key"));
                assert_eq!(peer.tls_ca, pdir.join("tls/ca.crt"));
                assert_eq!(read(&peer.tls_ca), tlsca);
                let tls = crate::cert::pem_exactly_one(read(&peer.tls_cert).as_bytes())
                    .unwrap()
                    .1;
                let tls = CertInfo::from_der(&tls).unwrap();
                let tls_key =
                    crate::keys::PrivateKey::from_pem(read(&peer.tls_key).as_bytes()).unwrap();
                assert!(tls_key.is_pair_of(&tls.key));
                assert_eq!(
                    subject(&parse(&tls.der)).last().unwrap(),
                    &format!("CN={}", peer.host)
                );
                assert!(
                    peer.msp_dir
                        .join(format!("signcerts/{}-cert.pem", peer.host))
                        .is_file()
                );
            }
        }
        for org in &layout.orgs {
            for peer in &org.peers {
                let me =
                    MspSecurity::from_msp_dir(&peer.msp_dir, &org.msp_id, trust.clone()).unwrap();
                for other in &layout.orgs {
                    for them in &other.peers {
                        let them = MspSecurity::from_msp_dir(
                            &them.msp_dir,
                            &other.msp_id,
                            TrustStore::new(),
                        )
                        .unwrap();
                        assert_eq!(me.validate_identity(&them.own_identity(), now), Ok(()));
                    }
                }
            }
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            let org = &layout.orgs[0];
            for key in [
                org.dir.join("ca/priv_sk"),
                org.dir.join("tlsca/priv_sk"),
                org.peers[0].msp_dir.join("keystore/priv_sk"),
                org.peers[0].tls_key.clone(),
            ] {
                assert_eq!(mode(&key), 0o600, "{}", key.display());
            }
        }
        // A second run refuses the first organization's folder and writes nothing new.
        let more = [
            OrgSpec::new("Org3MSP", "org3.example.com", 1),
            specs[0].clone(),
        ];
        let again = generate(out.path(), &more, year(), &mut rng);
        match again {
            Err(DevError::Exists(dir)) => assert_eq!(dir, layout.orgs[0].dir),
            other => panic!("expected Exists, got {other:?}"),
        }
        assert!(
            !out.path()
                .join("peerOrganizations/org3.example.com")
                .exists()
        );
    }

    /// `write_orgs` on its own (the simulator's and the CLI's path) refuses an organization
    /// folder that exists before writing any, as `generate` does.
    #[test]
    fn write_orgs_refuses_an_existing_organization_folder() {
        let out = tempfile::tempdir().unwrap();
        let orgs = generate_in_memory(
            &[
                OrgSpec::new("Org1MSP", "org1.example.com", 1),
                OrgSpec::new("Org2MSP", "org2.example.com", 1),
            ],
            year(),
            &mut ChaCha20Rng::seed_from_u64(13),
        )
        .unwrap();
        std::fs::create_dir_all(out.path().join("peerOrganizations/org2.example.com")).unwrap();
        match write_orgs(out.path(), &orgs) {
            Err(DevError::Exists(dir)) => {
                assert_eq!(dir, out.path().join("peerOrganizations/org2.example.com"));
            }
            other => panic!("expected Exists, got {other:?}"),
        }
        assert!(
            !out.path()
                .join("peerOrganizations/org1.example.com")
                .exists()
        );
    }

    /// Debug output names a CA and sizes a certificate, never printing a private key.
    #[test]
    fn debug_output_never_holds_a_key() {
        let org = org(Curve::P384, 14);
        let ca = format!("{:?}", org.ca);
        assert!(ca.starts_with("DevCa {"), "{ca}");
        assert!(
            ca.contains("org1.example.com") && ca.contains("P384"),
            "{ca}"
        );
        let cert = format!("{:?}", org.peers[0].identity);
        assert_eq!(
            cert,
            format!(
                "DevCert {{ cert_der_len: {}, .. }}",
                org.peers[0].identity.cert_der.len()
            )
        );
        let key_body = |pem: &str| pem.lines().nth(1).unwrap().to_owned();
        let all = format!("{org:?}");
        for key in [
            org.ca.key_pem(),
            org.tls_ca.key_pem(),
            &org.peers[0].identity.key_pem,
        ] {
            assert!(!all.contains(&key_body(key)));
        }
    }

    /// A certificate's PEM is its DER, and its hash (what a TLS certificate is bound with
    /// in a `ConnEstablish`) is SHA-256 of that DER.
    #[test]
    fn pem_and_hash_are_of_the_der() {
        use sha2::Digest;
        let org = org(Curve::P256, 15);
        let peer = &org.peers[1];
        for cert in [&peer.identity, &peer.tls] {
            let (label, der) = crate::cert::pem_exactly_one(cert.cert_pem().as_bytes()).unwrap();
            assert_eq!(
                (label.as_str(), der),
                ("CERTIFICATE", cert.cert_der.clone())
            );
            assert_eq!(
                cert.hash().to_vec(),
                sha2::Sha256::digest(&cert.cert_der).to_vec()
            );
        }
        let der = crate::cert::pem_exactly_one(org.ca.cert_pem().as_bytes())
            .unwrap()
            .1;
        assert_eq!(der, org.ca.cert_der());
    }

    /// A key this module did not generate is certified as given, byte for byte and named
    /// by its own SHA-256, even one that is no point of the curve: what the tests of a
    /// member whose key is off its curve present (and the crate refuses to parse).
    #[test]
    fn a_raw_public_key_is_certified_as_given() {
        let mut rng = ChaCha20Rng::seed_from_u64(16);
        for (curve, len) in [(Curve::P256, 65), (Curve::P384, 97)] {
            let ca = DevCa::root("ca.org1", "org1", curve, year(), &mut rng).unwrap();
            let mut point = vec![0x04];
            point.resize(len, 0x01);
            let der = ca
                .certify_raw_public_key("peer0.org1", point.clone(), year(), &mut rng)
                .unwrap();
            let cert = parse(&der);
            let spki = &cert.tbs_certificate.subject_public_key_info;
            assert_eq!(spki.subject_public_key.raw_bytes(), point, "{curve:?}");
            assert_eq!(ski_of(&cert), point_hash(&cert), "{curve:?}");
            assert_eq!(aki_of(&cert), Some(ski_of(&parse(ca.cert_der()))));
            assert!(matches!(
                CertInfo::from_der(&der),
                Err(crate::cert::CertError::Key(_))
            ));
        }
    }

    /// A CRL as Fabric CA's `gencrl` writes one: the CA it names (by subjectKeyIdentifier,
    /// its own or, forged, another's) and as issuer, the serials revoked, valid from
    /// `this_update` for a week.
    #[test]
    fn revocation_lists_name_their_ca_and_last_a_week() {
        use x509_cert::crl::CertificateList;
        use x509_cert::ext::pkix::AuthorityKeyIdentifier;
        let org = org(Curve::P256, 17);
        let mut rng = ChaCha20Rng::seed_from_u64(18);
        let other = DevCa::root("ca.org2", "org2", Curve::P256, year(), &mut rng).unwrap();
        let revoked = [org.peers[0].identity.cert_der.as_slice()];
        let at = start() + Duration::from_millis(1500);
        for (pem, named) in [
            (org.ca.revocation_list(&revoked, at).unwrap(), &org.ca),
            (
                org.ca.revocation_list_naming(&other, &revoked, at).unwrap(),
                &other,
            ),
        ] {
            let (label, der) = crate::cert::pem_exactly_one(pem.as_bytes()).unwrap();
            assert_eq!(label, "X509 CRL");
            let crl = CertificateList::from_der(&der).unwrap();
            let list = &crl.tbs_cert_list;
            assert_eq!(
                list.issuer,
                parse(org.ca.cert_der()).tbs_certificate.subject
            );
            assert_eq!(unix_secs(&list.this_update), 1_700_000_001);
            let next = list.next_update.as_ref().expect("nextUpdate");
            assert_eq!(unix_secs(next), 1_700_000_001 + 7 * 86_400);
            let serials: Vec<_> = list
                .revoked_certificates
                .iter()
                .flatten()
                .map(|r| r.serial_number.clone())
                .collect();
            assert_eq!(serials, [parse(revoked[0]).tbs_certificate.serial_number]);
            let aki = list
                .crl_extensions
                .iter()
                .flatten()
                .find(|e| e.extn_id == ObjectIdentifier::new_unwrap("2.5.29.35"))
                .expect("authorityKeyIdentifier");
            let aki = AuthorityKeyIdentifier::from_der(aki.extn_value.as_bytes()).unwrap();
            let named_ski = ski_of(&parse(named.cert_der()));
            assert_eq!(aki.key_identifier.unwrap().as_bytes(), named_ski.as_slice());
        }
    }
}
