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
