//! ECDSA keys on the curves Fabric uses (P-256, and P-384 which Fabric CA can issue), and
//! Fabric's signature rules: SHA-256 of the message, DER `(r, s)`, low-S only.
//!
//! Two implementations sit behind the same rules. `aws-lc-rs` (AWS-LC's constant-time
//! assembly, the library rustls already uses for this crate's TLS) verifies every gossip
//! signature and every certificate signature, and signs with P-256 keys; RustCrypto's
//! pure-Rust `p256`/`p384` parses keys and DER, signs when signatures must be reproducible
//! (RFC 6979) or the key is P-384 (AWS-LC signs P-384 only over SHA-384, and Fabric hashes
//! with SHA-256 on every curve), and remains callable as the reference the fast path is
//! tested against.

use crate::cert::CertDigest;
use aws_lc_rs::signature::{self as lc, EcdsaKeyPair, ParsedPublicKey, UnparsedPublicKey};
use der::oid::ObjectIdentifier;
use ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
use fabric_gossip_core::SecurityError;
use x509_cert::spki::SubjectPublicKeyInfoOwned;

const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");

/// Whose curve arithmetic checks certificate signatures: AWS-LC's, or the pure-Rust
/// reference ([`crate::MspSecurity::with_pure_rust_ecdsa`]). Either way RustCrypto reads the
/// DER, so both refuse the same encodings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Arithmetic {
    AwsLc,
    PureRust,
}

/// A verifying key. Parsing from a certificate checks the point is on its curve, so a
/// `PublicKey` is always usable, by either implementation.
#[derive(Clone, Debug)]
pub(crate) struct PublicKey {
    key: Key,
    /// AWS-LC's parsed form of the key for gossip signatures (SHA-256 on either curve),
    /// made once from the checked key, so that verifying with a cached identity parses
    /// nothing but the signature. Its bytes are the uncompressed SEC1 point, which
    /// certificate checks hand AWS-LC with the algorithm their certificate names.
    gossip: ParsedPublicKey,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Key {
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
}

fn bad_signature() -> SecurityError {
    SecurityError::BadSignature("signature does not verify".into())
}

fn malformed() -> SecurityError {
    SecurityError::MalformedSignature("not a DER ECDSA signature".into())
}

/// Outcome of checking a signature under Fabric's rules with RustCrypto.
macro_rules! verify_low_s {
    ($key:expr, $curve:ident, $prehash:expr, $sig:expr) => {{
        let sig = $curve::ecdsa::Signature::from_der($sig).map_err(|_| malformed())?;
        match sig.normalize_s() {
            // High-S: say so only if the signature is otherwise genuine, so that a forged
            // high-S signature still reads as a bad signature.
            Some(low) => match $key.verify_prehash($prehash, &low) {
                Ok(()) => Err(SecurityError::HighS),
                Err(_) => Err(bad_signature()),
            },
            None => $key
                .verify_prehash($prehash, &sig)
                .map_err(|_| bad_signature()),
        }
    }};
}

/// Fabric's verdict from whether `s` is high and whether the mathematics holds: a high-S
/// signature is reported as such only if it is otherwise genuine (`(r, s)` verifies iff
/// `(r, n - s)` does), so a forged high-S signature still reads as a bad signature.
fn verdict(high_s: bool, genuine: bool) -> Result<(), SecurityError> {
    match (genuine, high_s) {
        (true, false) => Ok(()),
        (true, true) => Err(SecurityError::HighS),
        (false, _) => Err(bad_signature()),
    }
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
        // Fabric reads certificates with Go's x509, which takes only the uncompressed form
        // (`elliptic.Unmarshal`) and refuses the certificate otherwise; RustCrypto would read
        // a compressed point too, and a node would accept an identity Fabric peers refuse.
        if point.first() != Some(&0x04) {
            return Err(
                "public key is not an uncompressed EC point (Fabric reads no other form)".into(),
            );
        }
        if curve == SECP256R1 {
            let k = p256::ecdsa::VerifyingKey::from_sec1_bytes(point)
                .map_err(|_| "P-256 public key is not a point on the curve".to_string())?;
            PublicKey::from_key(Key::P256(k), point)
        } else if curve == SECP384R1 {
            let k = p384::ecdsa::VerifyingKey::from_sec1_bytes(point)
                .map_err(|_| "P-384 public key is not a point on the curve".to_string())?;
            PublicKey::from_key(Key::P384(k), point)
        } else {
            Err(format!("unsupported curve {curve} (P-256 and P-384 are)"))
        }
    }

    /// The key with AWS-LC's parsed form of `uncompressed`, its SEC1 point. RustCrypto has
    /// checked the point already; AWS-LC checks it again, and a refusal would mean the two
    /// disagree, so it is an error rather than a key only one implementation could use.
    fn from_key(key: Key, uncompressed: &[u8]) -> Result<PublicKey, String> {
        let alg: &'static lc::EcdsaVerificationAlgorithm = match &key {
            // P-256 signatures reach AWS-LC as fixed-width `r || s` (below).
            Key::P256(_) => &lc::ECDSA_P256_SHA256_FIXED,
            // AWS-LC has no fixed-width P-384/SHA-256 verifier: canonical DER instead.
            Key::P384(_) => &lc::ECDSA_P384_SHA256_ASN1,
        };
        let gossip = UnparsedPublicKey::new(alg, uncompressed)
            .parse()
            .map_err(|e| format!("AWS-LC refuses a public key RustCrypto accepted: {e}"))?;
        Ok(PublicKey { key, gossip })
    }

    /// Verifies a certificate's signature over its TBS bytes, with the digest its algorithm
    /// names, accepting either form of `s` (Go and Fabric do not require certificates to be
    /// low-S). Each identity a node has not seen before costs one such check per link of its
    /// chain, so with thousands of peers joining it is on the path of every new connection.
    pub(crate) fn verify_certificate(
        &self,
        digest: CertDigest,
        tbs: &[u8],
        der_sig: &[u8],
        arithmetic: Arithmetic,
    ) -> bool {
        if arithmetic == Arithmetic::PureRust {
            return self.verify_prehash_any_s(&digest.digest(tbs), der_sig);
        }
        // AWS-LC takes the message and hashes it itself, with any of the three digests on
        // either curve. It is handed the canonical DER of what RustCrypto accepted, so that
        // AWS-LC's own reader never decides what is well formed.
        use CertDigest::{Sha256, Sha384, Sha512};
        let alg: &'static lc::EcdsaVerificationAlgorithm = match (&self.key, digest) {
            (Key::P256(_), Sha256) => &lc::ECDSA_P256_SHA256_ASN1,
            (Key::P256(_), Sha384) => &lc::ECDSA_P256_SHA384_ASN1,
            (Key::P256(_), Sha512) => &lc::ECDSA_P256_SHA512_ASN1,
            (Key::P384(_), Sha256) => &lc::ECDSA_P384_SHA256_ASN1,
            (Key::P384(_), Sha384) => &lc::ECDSA_P384_SHA384_ASN1,
            (Key::P384(_), Sha512) => &lc::ECDSA_P384_SHA512_ASN1,
        };
        let canonical =
            match &self.key {
                Key::P256(_) => p256::ecdsa::Signature::from_der(der_sig)
                    .map(|s| s.to_der().as_bytes().to_vec()),
                Key::P384(_) => p384::ecdsa::Signature::from_der(der_sig)
                    .map(|s| s.to_der().as_bytes().to_vec()),
            };
        canonical.is_ok_and(|sig| {
            UnparsedPublicKey::new(alg, self.gossip.as_ref())
                .verify(tbs, &sig)
                .is_ok()
        })
    }

    /// `der_sig` with its `s` folded to low-S for this key's curve (Fabric's
    /// `utils.SignatureToLowS`, which its MSP's `sanitizeCert` applies to a certificate's
    /// signature with the issuer's key), DER; `None` when `s` is low already or the bytes
    /// are not a DER ECDSA signature.
    pub(crate) fn low_s_form(&self, der_sig: &[u8]) -> Option<Vec<u8>> {
        match &self.key {
            Key::P256(_) => p256::ecdsa::Signature::from_der(der_sig)
                .ok()?
                .normalize_s()
                .map(|low| low.to_der().as_bytes().to_vec()),
            Key::P384(_) => p384::ecdsa::Signature::from_der(der_sig)
                .ok()?
                .normalize_s()
                .map(|low| low.to_der().as_bytes().to_vec()),
        }
    }

    /// Verifies a DER signature over a digest, accepting either form of `s`: the pure-Rust
    /// form of [`PublicKey::verify_certificate`].
    fn verify_prehash_any_s(&self, prehash: &[u8], der_sig: &[u8]) -> bool {
        match &self.key {
            Key::P256(k) => p256::ecdsa::Signature::from_der(der_sig)
                .is_ok_and(|s| k.verify_prehash(prehash, &s).is_ok()),
            Key::P384(k) => p384::ecdsa::Signature::from_der(der_sig)
                .is_ok_and(|s| k.verify_prehash(prehash, &s).is_ok()),
        }
    }

    /// Verifies a gossip signature as Fabric's BCCSP does: SHA-256 of `msg` on either curve,
    /// strict DER, and `s` at most half the group order. The DER is read (and `s` judged)
    /// by RustCrypto, exactly as [`PublicKey::verify_fabric_pure_rust`] reads it, so both
    /// refuse the same encodings; the curve arithmetic is AWS-LC's.
    pub(crate) fn verify_fabric(&self, msg: &[u8], der_sig: &[u8]) -> Result<(), SecurityError> {
        let (high_s, genuine) = match &self.key {
            Key::P256(_) => {
                let sig = p256::ecdsa::Signature::from_der(der_sig).map_err(|_| malformed())?;
                let fixed = sig.to_bytes();
                (
                    sig.normalize_s().is_some(),
                    self.gossip.verify_sig(msg, &fixed).is_ok(),
                )
            }
            Key::P384(_) => {
                let sig = p384::ecdsa::Signature::from_der(der_sig).map_err(|_| malformed())?;
                let canonical = sig.to_der();
                (
                    sig.normalize_s().is_some(),
                    self.gossip.verify_sig(msg, canonical.as_bytes()).is_ok(),
                )
            }
        };
        verdict(high_s, genuine)
    }

    /// [`PublicKey::verify_fabric`] with RustCrypto's arithmetic: the implementation this
    /// crate began with, kept as the reference and for [`crate::MspSecurity::with_pure_rust_ecdsa`].
    pub(crate) fn verify_fabric_pure_rust(
        &self,
        msg: &[u8],
        der_sig: &[u8],
    ) -> Result<(), SecurityError> {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(msg);
        match &self.key {
            Key::P256(k) => verify_low_s!(k, p256, &digest, der_sig),
            Key::P384(k) => verify_low_s!(k, p384, &digest, der_sig),
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

    /// The public half (the crate compares halves with [`PrivateKey::is_pair_of`]).
    #[cfg(test)]
    pub(crate) fn public_key(&self) -> Result<PublicKey, String> {
        let key = self.verifying_key();
        let point = match &key {
            Key::P256(k) => k.to_encoded_point(false).as_bytes().to_vec(),
            Key::P384(k) => k.to_encoded_point(false).as_bytes().to_vec(),
        };
        PublicKey::from_key(key, &point)
    }

    /// Whether `public` is this key's public half (a certificate's key against a
    /// keystore's): compared on RustCrypto's keys, nothing parsed.
    pub(crate) fn is_pair_of(&self, public: &PublicKey) -> bool {
        self.verifying_key() == public.key
    }

    fn verifying_key(&self) -> Key {
        match self {
            PrivateKey::P256(k) => Key::P256(*k.verifying_key()),
            PrivateKey::P384(k) => Key::P384(*k.verifying_key()),
        }
    }

    /// AWS-LC's signer for this key, if AWS-LC can sign as Fabric does with it (P-256
    /// only: Fabric hashes with SHA-256 on every curve, and AWS-LC pairs P-384 with
    /// SHA-384 alone).
    pub(crate) fn fast_signer(&self) -> Option<AwsLcSigner> {
        match self {
            PrivateKey::P256(k) => AwsLcSigner::p256(k).ok(),
            PrivateKey::P384(_) => None,
        }
    }

    /// Signs as Fabric's BCCSP does: SHA-256 of `msg`, deterministic nonce (RFC 6979, so a
    /// simulation replays byte for byte), `s` folded to low-S, DER. Pure Rust.
    pub(crate) fn sign_fabric(&self, msg: &[u8]) -> Result<Vec<u8>, SecurityError> {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(msg);
        self.sign_prehash_low_s(&digest)
    }

    /// Signs a digest, low-S, DER.
    pub(crate) fn sign_prehash_low_s(&self, digest: &[u8]) -> Result<Vec<u8>, SecurityError> {
        let fail = |e: ecdsa::Error| SecurityError::SigningFailed(e.to_string());
        // The same steps with either curve's signature type.
        macro_rules! low_s_der {
            ($key:expr, $curve:ident) => {{
                let sig: $curve::ecdsa::Signature = $key.sign_prehash(digest).map_err(fail)?;
                let low = sig.normalize_s().unwrap_or(sig);
                low.to_der().as_bytes().to_vec()
            }};
        }
        Ok(match self {
            PrivateKey::P256(k) => low_s_der!(k, p256),
            PrivateKey::P384(k) => low_s_der!(k, p384),
        })
    }
}

/// AWS-LC's P-256 signer: the fast path for the node's own signatures. Its nonces are
/// random (AWS-LC hedges them with the key and the digest), so the same message signs
/// differently each time.
pub(crate) struct AwsLcSigner {
    pair: EcdsaKeyPair,
    /// AWS-LC draws its nonces itself; the ring-compatible `sign` still takes a source.
    rng: aws_lc_rs::rand::SystemRandom,
}

impl AwsLcSigner {
    fn p256(key: &p256::ecdsa::SigningKey) -> Result<AwsLcSigner, String> {
        let public = key.verifying_key().to_encoded_point(false);
        let pair = EcdsaKeyPair::from_private_key_and_public_key(
            &lc::ECDSA_P256_SHA256_FIXED_SIGNING,
            &key.to_bytes(),
            public.as_bytes(),
        )
        .map_err(|e| format!("AWS-LC refuses the P-256 key: {e}"))?;
        let rng = aws_lc_rs::rand::SystemRandom::new();
        // AWS-LC seeds its random generator the first time a process asks it for bytes,
        // gathering jitter entropy: about 30 ms of CPU on this project's machines. Asking
        // now, while the provider is built, keeps that off the node's first handshake
        // (whose signature is made under the node's lock, on its event loop).
        aws_lc_rs::rand::SecureRandom::fill(&rng, &mut [0u8; 1])
            .map_err(|e| format!("AWS-LC's random generator: {e}"))?;
        Ok(AwsLcSigner { pair, rng })
    }

    /// Signs as Fabric's BCCSP does: SHA-256 of `msg`, `s` folded to low-S (AWS-LC does not
    /// fold it, and Fabric peers refuse high-S), DER.
    pub(crate) fn sign_fabric(&self, msg: &[u8]) -> Result<Vec<u8>, SecurityError> {
        let fixed = self
            .pair
            .sign(&self.rng, msg)
            .map_err(|e| SecurityError::SigningFailed(format!("AWS-LC: {e}")))?;
        let sig = p256::ecdsa::Signature::from_slice(fixed.as_ref())
            .map_err(|e| SecurityError::SigningFailed(format!("AWS-LC's signature: {e}")))?;
        Ok(sig
            .normalize_s()
            .unwrap_or(sig)
            .to_der()
            .as_bytes()
            .to_vec())
    }
}

impl core::fmt::Debug for AwsLcSigner {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Never print key material.
        f.write_str("AwsLcSigner(P-256)")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! AWS-LC against the pure-Rust reference: each verifies what the other signs, they agree
    //! on every refusal, and AWS-LC's signatures leave low-S.
    use super::*;
    use rand_core::{RngCore, SeedableRng};

    fn rng(seed: u64) -> rand_chacha::ChaCha20Rng {
        rand_chacha::ChaCha20Rng::seed_from_u64(seed)
    }

    fn p256_key(seed: u64) -> PrivateKey {
        PrivateKey::P256(p256::ecdsa::SigningKey::random(&mut rng(seed)))
    }

    fn p384_key(seed: u64) -> PrivateKey {
        PrivateKey::P384(p384::ecdsa::SigningKey::random(&mut rng(seed)))
    }

    fn is_high_s(der: &[u8]) -> bool {
        match p256::ecdsa::Signature::from_der(der) {
            Ok(s) => s.normalize_s().is_some(),
            Err(_) => p384::ecdsa::Signature::from_der(der)
                .unwrap()
                .normalize_s()
                .is_some(),
        }
    }

    /// `(r, n - s)`: the same signature with `s` on the other side of n/2 (also what the
    /// trust store's tests make a high-S certificate with).
    pub(crate) fn twin(der: &[u8]) -> Vec<u8> {
        if let Ok(sig) = p256::ecdsa::Signature::from_der(der) {
            let (r, s) = sig.split_scalars();
            let t = p256::ecdsa::Signature::from_scalars(r.to_bytes(), (-s).to_bytes()).unwrap();
            return t.to_der().as_bytes().to_vec();
        }
        let sig = p384::ecdsa::Signature::from_der(der).unwrap();
        let (r, s) = sig.split_scalars();
        let t = p384::ecdsa::Signature::from_scalars(r.to_bytes(), (-s).to_bytes()).unwrap();
        t.to_der().as_bytes().to_vec()
    }

    #[test]
    fn aws_lc_signatures_verify_with_the_pure_rust_verifier_and_are_low_s() {
        let key = p256_key(1);
        let fast = key.fast_signer().expect("AWS-LC takes a P-256 key");
        let public = key.public_key().unwrap();
        let mut raw_high = 0;
        for i in 0..64u32 {
            let msg = format!("alive message {i}").into_bytes();
            let sig = fast.sign_fabric(&msg).unwrap();
            public.verify_fabric_pure_rust(&msg, &sig).unwrap();
            public.verify_fabric(&msg, &sig).unwrap();
            assert!(!is_high_s(&sig), "AWS-LC signature {i} left high-S");
            // Without folding, about half of AWS-LC's signatures would be high-S: the
            // folding is exercised, not assumed.
            let fixed = fast.pair.sign(&fast.rng, &msg).unwrap();
            let s = p256::ecdsa::Signature::from_slice(fixed.as_ref()).unwrap();
            raw_high += usize::from(s.normalize_s().is_some());
        }
        assert!((8..=56).contains(&raw_high), "{raw_high} of 64 raw high-S");
    }

    #[test]
    fn aws_lc_nonces_are_random_and_rfc6979_nonces_are_not() {
        let key = p256_key(2);
        let fast = key.fast_signer().unwrap();
        assert_ne!(
            fast.sign_fabric(b"m").unwrap(),
            fast.sign_fabric(b"m").unwrap()
        );
        assert_eq!(
            key.sign_fabric(b"m").unwrap(),
            key.sign_fabric(b"m").unwrap()
        );
    }

    #[test]
    fn pure_rust_signatures_verify_with_aws_lc_on_both_curves() {
        for key in [p256_key(3), p384_key(3)] {
            let public = key.public_key().unwrap();
            for i in 0..16u32 {
                let msg = format!("conn establish {i}").into_bytes();
                let sig = key.sign_fabric(&msg).unwrap();
                public.verify_fabric(&msg, &sig).unwrap();
                public.verify_fabric_pure_rust(&msg, &sig).unwrap();
            }
        }
    }

    #[test]
    fn p384_keys_have_no_fast_signer() {
        // AWS-LC signs P-384 only over SHA-384; Fabric uses SHA-256.
        assert!(p384_key(4).fast_signer().is_none());
    }

    /// Keys and signers show their kind, never their material.
    #[test]
    fn keys_and_signers_show_only_their_kind() {
        let key = p256_key(5);
        assert_eq!(
            format!("{:?}", key.fast_signer().unwrap()),
            "AwsLcSigner(P-256)"
        );
        assert_eq!(format!("{key:?}"), "PrivateKey(P-256)");
        assert_eq!(format!("{:?}", p384_key(5)), "PrivateKey(P-384)");
    }

    /// A certificate's key in compressed form is refused, as Fabric's Go x509 refuses it,
    /// though RustCrypto could read it; the same key uncompressed is read.
    #[test]
    fn only_uncompressed_certificate_keys_are_read() {
        use der::asn1::{Any, BitString};
        use x509_cert::spki::AlgorithmIdentifierOwned;
        let spki = |curve: ObjectIdentifier, point: &[u8]| SubjectPublicKeyInfoOwned {
            algorithm: AlgorithmIdentifierOwned {
                oid: ID_EC_PUBLIC_KEY,
                parameters: Some(Any::encode_from(&curve).unwrap()),
            },
            subject_public_key: BitString::from_bytes(point).unwrap(),
        };
        let PrivateKey::P256(k256) = p256_key(11) else {
            unreachable!()
        };
        let PrivateKey::P384(k384) = p384_key(11) else {
            unreachable!()
        };
        let p256_points =
            [true, false].map(|c| k256.verifying_key().to_encoded_point(c).as_bytes().to_vec());
        let p384_points =
            [true, false].map(|c| k384.verifying_key().to_encoded_point(c).as_bytes().to_vec());
        for (curve, [compressed, uncompressed]) in
            [(SECP256R1, p256_points), (SECP384R1, p384_points)]
        {
            // The compressed form, which RustCrypto reads too: the refusal is ours.
            assert!(matches!(compressed[0], 0x02 | 0x03));
            let err = PublicKey::from_spki(&spki(curve, &compressed)).unwrap_err();
            assert!(err.contains("uncompressed"), "{err}");
            PublicKey::from_spki(&spki(curve, &uncompressed)).unwrap();
        }
    }

    /// Certificate signatures: on both curves and with each digest a certificate may name,
    /// AWS-LC's arithmetic and the reference agree on genuine signatures (either form of `s`
    /// passes), on other keys, other TBS bytes and damaged DER.
    #[test]
    fn both_arithmetics_agree_on_certificate_signatures() {
        let mut r = rng(8);
        let mut verdicts = [0usize; 2];
        for (key, other) in [(p256_key(9), p256_key(10)), (p384_key(9), p384_key(10))] {
            let (public, stranger) = (key.public_key().unwrap(), other.public_key().unwrap());
            for digest in [CertDigest::Sha256, CertDigest::Sha384, CertDigest::Sha512] {
                for i in 0..8u32 {
                    let tbs = format!("to be signed {i}").into_bytes();
                    let sig = key.sign_prehash_low_s(&digest.digest(&tbs)).unwrap();
                    let mut cases = vec![
                        (sig.clone(), tbs.clone(), &public, true),
                        (twin(&sig), tbs.clone(), &public, true),
                        (sig.clone(), b"other bytes".to_vec(), &public, false),
                        (sig.clone(), tbs.clone(), &stranger, false),
                    ];
                    for _ in 0..8 {
                        let mut bad = sig.clone();
                        let at = (r.next_u32() as usize) % bad.len();
                        bad[at] ^= 1 << (r.next_u32() % 8);
                        cases.push((bad, tbs.clone(), &public, false));
                    }
                    for (sig, tbs, key, genuine) in cases {
                        let fast = key.verify_certificate(digest, &tbs, &sig, Arithmetic::AwsLc);
                        let reference =
                            key.verify_certificate(digest, &tbs, &sig, Arithmetic::PureRust);
                        assert_eq!(fast, reference, "{digest:?} {sig:02x?}");
                        if genuine {
                            assert!(fast, "a genuine signature refused ({digest:?})");
                        }
                        verdicts[usize::from(fast)] += 1;
                    }
                }
            }
        }
        assert!(verdicts[0] > 0 && verdicts[1] > 0, "{verdicts:?}");
    }

    /// Every refusal the reference makes, AWS-LC's path makes with the same error variant, on
    /// both curves: high-S twins, forgeries, wrong keys, other messages, and random damage
    /// to the DER (most of which is malformed, some of which is a well-formed forgery).
    #[test]
    fn both_verifiers_give_the_same_verdict_on_damaged_signatures() {
        let mut r = rng(5);
        let variant = |x: &Result<(), SecurityError>| core::mem::discriminant(x);
        let mut verdicts = std::collections::BTreeMap::<String, usize>::new();
        for (key, other) in [(p256_key(6), p256_key(7)), (p384_key(6), p384_key(7))] {
            let public = key.public_key().unwrap();
            let stranger = other.public_key().unwrap();
            for i in 0..24u32 {
                let msg = format!("gossip {i}").into_bytes();
                let sig = match key.fast_signer() {
                    Some(fast) if i % 2 == 0 => fast.sign_fabric(&msg).unwrap(),
                    _ => key.sign_fabric(&msg).unwrap(),
                };
                let mut cases = vec![
                    (sig.clone(), msg.clone(), &public),
                    (twin(&sig), msg.clone(), &public),
                    (sig.clone(), b"another message".to_vec(), &public),
                    (sig.clone(), msg.clone(), &stranger),
                    (twin(&sig), msg.clone(), &stranger),
                ];
                for _ in 0..16 {
                    let mut bad = sig.clone();
                    let at = (r.next_u32() as usize) % bad.len();
                    match r.next_u32() % 3 {
                        0 => bad[at] ^= 1 << (r.next_u32() % 8),
                        1 => {
                            bad.remove(at);
                        }
                        _ => bad.insert(at, r.next_u32() as u8),
                    }
                    cases.push((bad, msg.clone(), &public));
                }
                for (sig, msg, key) in cases {
                    let reference = key.verify_fabric_pure_rust(&msg, &sig);
                    let fast = key.verify_fabric(&msg, &sig);
                    assert_eq!(
                        variant(&reference),
                        variant(&fast),
                        "{reference:?} vs {fast:?} for {sig:02x?}"
                    );
                    *verdicts.entry(format!("{fast:?}")).or_default() += 1;
                }
            }
        }
        // The damage reached every verdict, so the comparison above covered each.
        for want in ["Ok(())", "BadSignature", "MalformedSignature", "HighS"] {
            assert!(verdicts.keys().any(|k| k.contains(want)), "{verdicts:?}");
        }
    }
}
