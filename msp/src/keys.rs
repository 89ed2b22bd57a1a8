//! ECDSA keys on the curves Fabric uses (P-256, and P-384 which Fabric CA can issue), and
//! Fabric's signature rules: SHA-256 of the message, DER `(r, s)`, low-S only.

use der::oid::ObjectIdentifier;
use ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
use fabric_gossip_core::SecurityError;
use x509_cert::spki::SubjectPublicKeyInfoOwned;

const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");

/// A verifying key. Parsing from a certificate checks the point is on its curve, so a
/// `PublicKey` is always usable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PublicKey {
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
}

/// Outcome of checking a signature under Fabric's rules, before mapping to an error.
macro_rules! verify_low_s {
    ($key:expr, $curve:ident, $prehash:expr, $sig:expr) => {{
        let sig = $curve::ecdsa::Signature::from_der($sig)
            .map_err(|_| SecurityError::MalformedSignature("not a DER ECDSA signature".into()))?;
        match sig.normalize_s() {
            // High-S: say so only if the signature is otherwise genuine, so that a forged
            // high-S signature still reads as a bad signature.
            Some(low) => match $key.verify_prehash($prehash, &low) {
                Ok(()) => Err(SecurityError::HighS),
                Err(_) => Err(SecurityError::BadSignature(
                    "signature does not verify".into(),
                )),
            },
            None => $key
                .verify_prehash($prehash, &sig)
                .map_err(|_| SecurityError::BadSignature("signature does not verify".into())),
        }
    }};
}

impl PublicKey {
    /// Reads an ECDSA key from a certificate's SubjectPublicKeyInfo.
    pub(crate) fn from_spki(spki: &SubjectPublicKeyInfoOwned) -> Result<PublicKey, String> {
        if spki.algorithm.oid != ID_EC_PUBLIC_KEY {
            return Err(format!(
                "public key algorithm {} is not ECDSA",
                spki.algorithm.oid
            ));
        }
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<ObjectIdentifier>().ok())
            .ok_or_else(|| "ECDSA key without a named curve".to_string())?;
        let point = spki
            .subject_public_key
            .as_bytes()
            .ok_or_else(|| "public key bit string has unused bits".to_string())?;
        if curve == SECP256R1 {
            p256::ecdsa::VerifyingKey::from_sec1_bytes(point)
                .map(PublicKey::P256)
                .map_err(|_| "P-256 public key is not a point on the curve".to_string())
        } else if curve == SECP384R1 {
            p384::ecdsa::VerifyingKey::from_sec1_bytes(point)
                .map(PublicKey::P384)
                .map_err(|_| "P-384 public key is not a point on the curve".to_string())
        } else {
            Err(format!("unsupported curve {curve} (P-256 and P-384 are)"))
        }
    }

    /// Verifies a DER signature over a digest, accepting either form of `s`: the rule for
    /// certificate signatures, which Go and Fabric do not require to be low-S.
    pub(crate) fn verify_prehash_any_s(&self, prehash: &[u8], der_sig: &[u8]) -> bool {
        match self {
            PublicKey::P256(k) => p256::ecdsa::Signature::from_der(der_sig)
                .is_ok_and(|s| k.verify_prehash(prehash, &s).is_ok()),
            PublicKey::P384(k) => p384::ecdsa::Signature::from_der(der_sig)
                .is_ok_and(|s| k.verify_prehash(prehash, &s).is_ok()),
        }
    }

    /// Verifies a gossip signature as Fabric's BCCSP does: SHA-256 of `msg` on either curve,
    /// strict DER, and `s` at most half the group order.
    pub(crate) fn verify_fabric(&self, msg: &[u8], der_sig: &[u8]) -> Result<(), SecurityError> {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(msg);
        match self {
            PublicKey::P256(k) => verify_low_s!(k, p256, &digest, der_sig),
            PublicKey::P384(k) => verify_low_s!(k, p384, &digest, der_sig),
        }
    }
}

/// The node's own signing key.
#[derive(Clone)]
pub(crate) enum PrivateKey {
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
}

impl core::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Never print key material.
        match self {
            PrivateKey::P256(_) => f.write_str("PrivateKey(P-256)"),
            PrivateKey::P384(_) => f.write_str("PrivateKey(P-384)"),
        }
    }
}

impl PrivateKey {
    /// Reads the first private key in a PEM file: PKCS#8 `PRIVATE KEY` (what cryptogen and
    /// Fabric CA write) or SEC1 `EC PRIVATE KEY` (what `openssl ecparam -genkey` writes).
    pub(crate) fn from_pem(text: &[u8]) -> Result<PrivateKey, String> {
        let blocks = crate::cert::pem_blocks(text)?;
        let mut labels = Vec::new();
        for (label, der) in &blocks {
            match label.as_str() {
                "PRIVATE KEY" => return Self::from_pkcs8_der(der),
                "EC PRIVATE KEY" => return Self::from_sec1_der(der),
                "ENCRYPTED PRIVATE KEY" => {
                    return Err("encrypted private keys are not supported".into());
                }
                other => labels.push(other.to_owned()),
            }
        }
        if labels.is_empty() {
            Err("no PEM block".into())
        } else {
            Err(format!(
                "no PRIVATE KEY or EC PRIVATE KEY block (found: {})",
                labels.join(", ")
            ))
        }
    }

    pub(crate) fn from_pkcs8_der(der: &[u8]) -> Result<PrivateKey, String> {
        use p256::pkcs8::DecodePrivateKey;
        if let Ok(k) = p256::SecretKey::from_pkcs8_der(der) {
            return Ok(PrivateKey::P256(k.into()));
        }
        p384::SecretKey::from_pkcs8_der(der)
            .map(|k| PrivateKey::P384(k.into()))
            .map_err(|_| "not a PKCS#8 ECDSA P-256 or P-384 private key".to_string())
    }

    fn from_sec1_der(der: &[u8]) -> Result<PrivateKey, String> {
        if let Ok(k) = p256::SecretKey::from_sec1_der(der) {
            return Ok(PrivateKey::P256(k.into()));
        }
        p384::SecretKey::from_sec1_der(der)
            .map(|k| PrivateKey::P384(k.into()))
            .map_err(|_| "not a SEC1 ECDSA P-256 or P-384 private key".to_string())
    }

    pub(crate) fn public_key(&self) -> PublicKey {
        match self {
            PrivateKey::P256(k) => PublicKey::P256(*k.verifying_key()),
            PrivateKey::P384(k) => PublicKey::P384(*k.verifying_key()),
        }
    }

    /// Signs as Fabric's BCCSP does: SHA-256 of `msg`, deterministic nonce (RFC 6979, so a
    /// simulation replays byte for byte), `s` folded to low-S, DER.
    pub(crate) fn sign_fabric(&self, msg: &[u8]) -> Result<Vec<u8>, SecurityError> {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(msg);
        self.sign_prehash_low_s(&digest)
    }

    /// Signs a digest, low-S, DER.
    pub(crate) fn sign_prehash_low_s(&self, digest: &[u8]) -> Result<Vec<u8>, SecurityError> {
        let fail = |e: ecdsa::Error| SecurityError::SigningFailed(e.to_string());
        Ok(match self {
            PrivateKey::P256(k) => {
                let sig: p256::ecdsa::Signature = k.sign_prehash(digest).map_err(fail)?;
                sig.normalize_s()
                    .unwrap_or(sig)
                    .to_der()
                    .as_bytes()
                    .to_vec()
            }
            PrivateKey::P384(k) => {
                let sig: p384::ecdsa::Signature = k.sign_prehash(digest).map_err(fail)?;
                sig.normalize_s()
                    .unwrap_or(sig)
                    .to_der()
                    .as_bytes()
                    .to_vec()
            }
        })
    }
}
