//! Certificate revocation lists: the `crls/` folder of an MSP (Fabric's `RevocationList`).
//!
//! Fabric's MSP (`validateCertAgainstChain`) revokes a certificate when a CRL of the MSP
//! whose authorityKeyIdentifier equals the subjectKeyIdentifier of the CA that issued the
//! certificate lists the certificate's serial number, and that CA's key verifies the CRL's
//! signature. A listed serial under a CRL whose signature does not verify is skipped (Fabric
//! logs "Invalid signature over the identified CRL"); revocation and update dates are not
//! read. This module keeps what that rule needs from each CRL.

use crate::cert::{CertDigest, CertInfo, raw_tbs};
use crate::keys::Arithmetic;
use der::Decode;
use der::oid::AssociatedOid;
use x509_cert::crl::CertificateList;
use x509_cert::ext::pkix::AuthorityKeyIdentifier;

/// A parsed CRL, reduced to what revocation checks use.
#[derive(Clone, Debug)]
pub(crate) struct Crl {
    /// The whole CRL, DER: loading the same CRL twice keeps one.
    pub(crate) der: Vec<u8>,
    /// The key identifier of the CA that signed it (authorityKeyIdentifier).
    pub(crate) authority_key_id: Vec<u8>,
    /// The exact to-be-signed bytes as they appear in `der`.
    tbs: Vec<u8>,
    digest: CertDigest,
    /// DER ECDSA signature over `tbs`.
    signature: Vec<u8>,
    /// The revoked serial numbers' DER content octets, sorted (see `CertInfo::serial`).
    revoked: Vec<Vec<u8>>,
}

impl Crl {
    /// Parses a DER CRL. Refuses what Fabric would accept but could never use, so that an
    /// operator learns at start-up rather than by a revoked peer getting in:
    /// * no authorityKeyIdentifier, or one without a key identifier: Fabric then fails every
    ///   validation of the MSP ("could not obtain Authority Key Identifier for crl") or never
    ///   matches the CRL to a CA;
    /// * a signature algorithm other than ECDSA with SHA-256/384/512: no CA this crate
    ///   accepts can have made it, so its signature would never verify.
    pub(crate) fn from_der(der: &[u8]) -> Result<Crl, String> {
        let crl = CertificateList::from_der(der)
            .map_err(|e| format!("not a version 2 X.509 CRL: {e}"))?;
        let tbs = raw_tbs(der)
            .map_err(|e| format!("cannot locate the CRL's TBS part: {e}"))?
            .to_vec();
        let digest = CertDigest::of_ecdsa(crl.signature_algorithm.oid).ok_or_else(|| {
            format!(
                "signed with {}, not ECDSA with SHA-256/384/512",
                crl.signature_algorithm.oid
            )
        })?;
        let signature = crl
            .signature
            .as_bytes()
            .ok_or("signature has unused bits")?
            .to_vec();
        ecdsa_der_shape(&signature)?;
        let tbs_list = &crl.tbs_cert_list;
        let aki = tbs_list
            .crl_extensions
            .iter()
            .flatten()
            .find(|ext| ext.extn_id == AuthorityKeyIdentifier::OID)
            .ok_or(
                "no authorityKeyIdentifier extension (Fabric's MSP then refuses every \
                 identity of the MSP; with openssl ca, give -gencrl a section with \
                 crl_extensions = authorityKeyIdentifier=keyid:always)",
            )?;
        let aki = AuthorityKeyIdentifier::from_der(aki.extn_value.as_bytes())
            .map_err(|e| format!("authorityKeyIdentifier: {e}"))?;
        let authority_key_id = aki
            .key_identifier
            .ok_or("authorityKeyIdentifier without a key identifier names no CA")?
            .as_bytes()
            .to_vec();
        let mut revoked: Vec<Vec<u8>> = tbs_list
            .revoked_certificates
            .iter()
            .flatten()
            .map(|r| r.serial_number.as_bytes().to_vec())
            .collect();
        revoked.sort_unstable();
        revoked.dedup();
        Ok(Crl {
            der: der.to_vec(),
            authority_key_id,
            tbs,
            digest,
            signature,
            revoked,
        })
    }

    /// Whether this CRL, made by `issuer`, revokes `cert`: Fabric's rule (see the module
    /// docs), the signature checked last, only for a listed serial, as Fabric checks it.
    pub(crate) fn revokes(
        &self,
        cert: &CertInfo,
        issuer: &CertInfo,
        arithmetic: Arithmetic,
    ) -> bool {
        issuer.ski.as_deref() == Some(self.authority_key_id.as_slice())
            && self.revoked.binary_search(&cert.serial).is_ok()
            && issuer
                .key
                .verify_certificate(self.digest, &self.tbs, &self.signature, arithmetic)
    }

    /// How many serial numbers it revokes.
    pub(crate) fn len(&self) -> usize {
        self.revoked.len()
    }
}

/// Checks that `sig` is a DER `SEQUENCE { r INTEGER, s INTEGER }` with r and s positive.
/// Fabric re-encodes each CRL's ECDSA signature when it loads the MSP and refuses the MSP
/// when that fails, so a CRL whose signature is not of this shape stops a node here too.
fn ecdsa_der_shape(sig: &[u8]) -> Result<(), String> {
    use der::asn1::UintRef;
    use der::{Reader, SliceReader};
    let bad = |e: der::Error| format!("signature is not a DER ECDSA signature: {e}");
    let mut reader = SliceReader::new(sig).map_err(bad)?;
    let (r, s) = reader
        .sequence(|seq| Ok((UintRef::decode(seq)?, UintRef::decode(seq)?)))
        .map_err(bad)?;
    reader.finish(()).map_err(bad)?;
    if r.as_bytes() == [0] || s.as_bytes() == [0] {
        return Err("signature has a zero r or s".into());
    }
    Ok(())
}
