//! The parts of an X.509 certificate that identity validation needs, extracted once.

use crate::keys::{Arithmetic, PublicKey};
use core::time::Duration;
use der::oid::ObjectIdentifier;
use der::{Decode, Encode, Header, Reader, SliceReader};
use fabric_gossip_core::Instant;
use x509_cert::Certificate;
use x509_cert::ext::pkix::{BasicConstraints, ExtendedKeyUsage, SubjectKeyIdentifier};

const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_WITH_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const ECDSA_WITH_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.4");
/// id-at-organizationalUnitName.
const ORGANIZATIONAL_UNIT: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.11");
/// id-kp-serverAuth and anyExtendedKeyUsage: the extended key usages Go's `x509.Verify`
/// asks of every certificate of a chain when its caller names none, as Fabric's MSP does.
const SERVER_AUTH: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.1");
const ANY_EXTENDED_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37.0");
/// The certificate extensions Go's parser handles (Go 1.19, `parser.go`): a critical
/// extension of any other kind makes `x509.Verify` refuse the chain.
const HANDLED_EXTENSIONS: [ObjectIdentifier; 10] = [
    ObjectIdentifier::new_unwrap("2.5.29.14"), // subjectKeyIdentifier
    ObjectIdentifier::new_unwrap("2.5.29.15"), // keyUsage
    ObjectIdentifier::new_unwrap("2.5.29.17"), // subjectAltName
    ObjectIdentifier::new_unwrap("2.5.29.19"), // basicConstraints
    ObjectIdentifier::new_unwrap("2.5.29.30"), // nameConstraints
    ObjectIdentifier::new_unwrap("2.5.29.31"), // cRLDistributionPoints
    ObjectIdentifier::new_unwrap("2.5.29.32"), // certificatePolicies
    ObjectIdentifier::new_unwrap("2.5.29.35"), // authorityKeyIdentifier
    ObjectIdentifier::new_unwrap("2.5.29.37"), // extKeyUsage
    ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.1.1"), // authorityInfoAccess
];

/// The digest a certificate's issuer signed its to-be-signed part with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CertDigest {
    Sha256,
    Sha384,
    Sha512,
}

impl CertDigest {
    /// The digest of an ECDSA signature algorithm; `None` for any other algorithm (this
    /// crate verifies ECDSA only).
    pub(crate) fn of_ecdsa(alg: ObjectIdentifier) -> Option<CertDigest> {
        if alg == ECDSA_WITH_SHA256 {
            Some(CertDigest::Sha256)
        } else if alg == ECDSA_WITH_SHA384 {
            Some(CertDigest::Sha384)
        } else if alg == ECDSA_WITH_SHA512 {
            Some(CertDigest::Sha512)
        } else {
            None
        }
    }

    pub(crate) fn digest(self, data: &[u8]) -> Vec<u8> {
        use sha2::Digest;
        match self {
            CertDigest::Sha256 => sha2::Sha256::digest(data).to_vec(),
            CertDigest::Sha384 => sha2::Sha384::digest(data).to_vec(),
            CertDigest::Sha512 => sha2::Sha512::digest(data).to_vec(),
        }
    }
}

/// Why a certificate could not be turned into a [`CertInfo`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum CertError {
    /// Not a DER X.509 certificate, or one whose fields are inconsistent.
    Malformed(String),
    /// The subject key is not an ECDSA P-256/P-384 key, or not a point on its curve.
    Key(String),
}

/// A parsed certificate, reduced to what chain building and signature checks use.
#[derive(Clone, Debug)]
pub(crate) struct CertInfo {
    /// The whole certificate, DER.
    pub(crate) der: Vec<u8>,
    /// The exact to-be-signed bytes as they appear in `der`.
    pub(crate) tbs: Vec<u8>,
    /// DER of the subject and issuer names; chains link on byte equality, as Go does.
    pub(crate) subject: Vec<u8>,
    pub(crate) issuer: Vec<u8>,
    /// How the issuer signed `tbs`; `None` for an algorithm this crate does not verify.
    pub(crate) digest: Option<CertDigest>,
    /// The issuer's signature over `tbs` (DER ECDSA when `digest` is `Some`).
    pub(crate) signature: Vec<u8>,
    pub(crate) key: PublicKey,
    /// The serial number's DER content octets. DER gives an integer one encoding, so two
    /// serials are the same number exactly when these bytes are equal (Go compares the
    /// numbers).
    pub(crate) serial: Vec<u8>,
    /// The subjectKeyIdentifier extension's key identifier: a revocation list names the
    /// CA that issued it by this value (its authorityKeyIdentifier).
    pub(crate) ski: Option<Vec<u8>>,
    pub(crate) not_before: Instant,
    pub(crate) not_after: Instant,
    /// `basicConstraints.cA`.
    pub(crate) is_ca: bool,
    /// `basicConstraints.pathLenConstraint`: how many intermediate CAs may follow this CA
    /// down to a leaf.
    pub(crate) max_path_len: Option<u8>,
    /// Whether Go's default key usage check passes this certificate (it has no extended
    /// key usage, or one naming serverAuth or any), as every certificate of a chain must
    /// for Fabric's MSP.
    pub(crate) server_auth: bool,
    /// A critical extension Go does not handle, by OID: Go refuses a chain holding one.
    pub(crate) unhandled_critical: Option<String>,
    /// The subject's organizational units (OU attributes), in the order they appear, as
    /// Go's `Subject.OrganizationalUnit` lists them (bytes, as Go's strings are): an MSP's NodeOU roles and OU
    /// identifiers are matched against these.
    pub(crate) units: Vec<Vec<u8>>,
}

fn instant_of(d: Duration) -> Instant {
    Instant::from_unix_secs(d.as_secs())
}

impl CertInfo {
    /// Parses a DER certificate (strict DER, as Go's parser is).
    pub(crate) fn from_der(der: &[u8]) -> Result<CertInfo, CertError> {
        let cert = Certificate::from_der(der)
            .map_err(|e| CertError::Malformed(format!("not an X.509 certificate: {e}")))?;
        let tbs_cert = &cert.tbs_certificate;
        if tbs_cert.signature != cert.signature_algorithm {
            return Err(CertError::Malformed(
                "signature algorithm differs between certificate and its TBS part".into(),
            ));
        }
        let tbs = raw_tbs(der)
            .map_err(|e| CertError::Malformed(format!("cannot locate TBS certificate: {e}")))?
            .to_vec();
        let subject = tbs_cert
            .subject
            .to_der()
            .map_err(|e| CertError::Malformed(format!("subject: {e}")))?;
        let issuer = tbs_cert
            .issuer
            .to_der()
            .map_err(|e| CertError::Malformed(format!("issuer: {e}")))?;
        let digest = CertDigest::of_ecdsa(cert.signature_algorithm.oid);
        let signature = cert
            .signature
            .as_bytes()
            .ok_or_else(|| CertError::Malformed("signature has unused bits".into()))?
            .to_vec();
        let key =
            PublicKey::from_spki(&tbs_cert.subject_public_key_info).map_err(CertError::Key)?;
        let (is_ca, max_path_len) = match tbs_cert.get::<BasicConstraints>() {
            Ok(bc) => bc.map_or((false, None), |(_, bc)| (bc.ca, bc.path_len_constraint)),
            Err(e) => return Err(CertError::Malformed(format!("basicConstraints: {e}"))),
        };
        let server_auth = match tbs_cert.get::<ExtendedKeyUsage>() {
            Ok(eku) => eku.is_none_or(|(_, eku)| {
                eku.0.is_empty()
                    || eku
                        .0
                        .iter()
                        .any(|u| *u == SERVER_AUTH || *u == ANY_EXTENDED_KEY_USAGE)
            }),
            Err(e) => return Err(CertError::Malformed(format!("extKeyUsage: {e}"))),
        };
        let unhandled_critical = tbs_cert
            .extensions
            .iter()
            .flatten()
            .find(|e| e.critical && !HANDLED_EXTENSIONS.contains(&e.extn_id))
            .map(|e| e.extn_id.to_string());
        let ski = match tbs_cert.get::<SubjectKeyIdentifier>() {
            Ok(ski) => ski.map(|(_, ski)| ski.0.as_bytes().to_vec()),
            Err(e) => return Err(CertError::Malformed(format!("subjectKeyIdentifier: {e}"))),
        };
        let units = organizational_units(&tbs_cert.subject)
            .map_err(|e| CertError::Malformed(format!("subject: {e}")))?;
        organizational_units(&tbs_cert.issuer)
            .map_err(|e| CertError::Malformed(format!("issuer: {e}")))?;
        let not_before = instant_of(tbs_cert.validity.not_before.to_unix_duration());
        let not_after = instant_of(tbs_cert.validity.not_after.to_unix_duration());
        Ok(CertInfo {
            der: der.to_vec(),
            tbs,
            subject,
            issuer,
            digest,
            signature,
            key,
            serial: tbs_cert.serial_number.as_bytes().to_vec(),
            ski,
            not_before,
            not_after,
            is_ca,
            max_path_len,
            server_auth,
            unhandled_critical,
            units,
        })
    }

    /// Whether `issuer`'s key produced this certificate's signature. High-S signatures are
    /// accepted here, as Go's `x509.Verify` (and so Fabric) accepts them in certificates.
    pub(crate) fn is_signed_by(&self, issuer: &CertInfo, arithmetic: Arithmetic) -> bool {
        match self.digest {
            Some(d) => issuer
                .key
                .verify_certificate(d, &self.tbs, &self.signature, arithmetic),
            None => false,
        }
    }

    /// Whether the certificate is self-signed (issuer name = subject name, its own key
    /// verifies the signature) with a high-S ECDSA signature: the root CA that Fabric's MSP
    /// (v2.4.9, built with Go 1.19 or later) cannot name as a certifier (see
    /// [`TrustStore::fabric_unloadable_roots`](crate::TrustStore::fabric_unloadable_roots)).
    /// High or low by the certificate's own key's curve, as Fabric's `sanitizeCert` folds
    /// a root's signature.
    pub(crate) fn is_high_s_self_signed(&self) -> bool {
        self.issuer == self.subject
            && self.key.low_s_form(&self.signature).is_some()
            && self.is_signed_by(self, Arithmetic::AwsLc)
    }

    /// The subject as RFC 4514 text (`CN=ca.example.com,O=example.com,...`), for messages.
    pub(crate) fn subject_text(&self) -> String {
        x509_cert::name::Name::from_der(&self.subject)
            .map_or_else(|_| "(unreadable subject)".to_owned(), |n| n.to_string())
    }

    /// Whether the certificate is within its validity period at `at`. Bounds are inclusive
    /// and compared to the nanosecond, as Go's `x509.Verify` does (valid unless `at` is
    /// before notBefore or after notAfter), so Fabric and this crate agree on the boundary.
    pub(crate) fn valid_at(&self, at: Instant) -> bool {
        self.not_before <= at && at <= self.not_after
    }
}

/// The values of `name`'s OU attributes, in order, as the bytes of the strings Go reads
/// (Go strings are bytes: a TeletexString is kept as it is). Go's certificate parser
/// (`parseName`, then `parseASN1String` on every attribute value) refuses a certificate
/// whose subject or issuer holds a value that is not one of ASN.1's string types or breaks
/// its type's alphabet; so does this one, for every attribute of `name`, so that a
/// certificate Fabric cannot even parse is not accepted here.
fn organizational_units(name: &x509_cert::name::Name) -> Result<Vec<Vec<u8>>, String> {
    let mut units = Vec::new();
    for rdn in name.0.iter() {
        for atv in rdn.0.iter() {
            let tag = der::Tagged::tag(&atv.value);
            let value = go_string(tag, atv.value.value())
                .map_err(|e| format!("invalid attribute value ({}): {e}", atv.oid))?;
            if atv.oid == ORGANIZATIONAL_UNIT {
                units.push(value);
            }
        }
    }
    Ok(units)
}

/// An ASN.1 string's value as Go's `parseASN1String` reads it.
fn go_string(tag: der::Tag, value: &[u8]) -> Result<Vec<u8>, String> {
    use der::Tag;
    // Go's isPrintable: PrintableString's alphabet, plus '*' and '&', which real
    // certificates use.
    let printable = |b: &u8| b.is_ascii_alphanumeric() || b" '()+,-./:=?*&".contains(b);
    match tag {
        Tag::TeletexString => Ok(value.to_vec()),
        Tag::PrintableString if value.iter().all(printable) => Ok(value.to_vec()),
        Tag::PrintableString => Err("invalid PrintableString".into()),
        Tag::Utf8String if core::str::from_utf8(value).is_ok() => Ok(value.to_vec()),
        Tag::Utf8String => Err("invalid UTF-8 string".into()),
        Tag::Ia5String if value.is_ascii() => Ok(value.to_vec()),
        Tag::Ia5String => Err("invalid IA5String".into()),
        Tag::NumericString if value.iter().all(|b| b.is_ascii_digit() || *b == b' ') => {
            Ok(value.to_vec())
        }
        Tag::NumericString => Err("invalid NumericString".into()),
        Tag::BmpString => {
            if !value.len().is_multiple_of(2) {
                return Err("invalid BMPString".into());
            }
            // Go strips a terminating NUL and decodes lone surrogates as U+FFFD.
            let value = value.strip_suffix(&[0, 0]).unwrap_or(value);
            let units = value
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]));
            Ok(char::decode_utf16(units)
                .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
                .collect::<String>()
                .into_bytes())
        }
        other => Err(format!("unsupported string type {other}")),
    }
}

/// The bytes of the TBS part exactly as they were signed (not a re-encoding): the first
/// element of the outer SEQUENCE, in a certificate as in a revocation list.
pub(crate) fn raw_tbs(der: &[u8]) -> der::Result<&[u8]> {
    let mut reader = SliceReader::new(der)?;
    let _outer = Header::decode(&mut reader)?;
    reader.tlv_bytes()
}

/// `der` (a certificate) with its signature value replaced by `signature`, the TBS part and
/// the signature algorithm kept byte for byte: what Go's `asn1.Marshal` writes when Fabric's
/// `sanitizeECDSASignedCert` re-encodes a certificate with a low-S signature.
pub(crate) fn with_signature(der: &[u8], signature: &[u8]) -> der::Result<Vec<u8>> {
    let mut reader = SliceReader::new(der)?;
    let _outer = Header::decode(&mut reader)?;
    let tbs = reader.tlv_bytes()?;
    let algorithm = reader.tlv_bytes()?;
    let mut body = Vec::with_capacity(tbs.len() + algorithm.len() + signature.len() + 8);
    body.extend_from_slice(tbs);
    body.extend_from_slice(algorithm);
    der::asn1::BitString::from_bytes(signature)?.encode_to_vec(&mut body)?;
    let mut out = Vec::with_capacity(body.len() + 4);
    Header::new(der::Tag::Sequence, der::Length::try_from(body.len())?)?.encode_to_vec(&mut out)?;
    out.extend_from_slice(&body);
    Ok(out)
}

/// Splits a PEM file into its blocks: `(label, DER)` for each, in order. Text outside the
/// blocks (comments, as OpenSSL writes) is ignored, as Go's `pem.Decode` ignores it.
pub(crate) fn pem_blocks(text: &[u8]) -> Result<Vec<(String, Vec<u8>)>, String> {
    const BEGIN: &[u8] = b"-----BEGIN ";
    const END: &[u8] = b"-----END ";
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = find(rest, BEGIN) {
        let block = &rest[start..];
        let Some(end_at) = find(block, END) else {
            return Err("PEM block without an END line".into());
        };
        // The END line runs to the next "-----" after "-----END ".
        let after_end = &block[end_at + END.len()..];
        let Some(close) = find(after_end, b"-----") else {
            return Err("unterminated PEM END line".into());
        };
        let len = end_at + END.len() + close + 5;
        let (label, der) =
            pem_rfc7468::decode_vec(&block[..len]).map_err(|e| format!("bad PEM block: {e}"))?;
        out.push((label.to_owned(), der));
        rest = &block[len..];
    }
    Ok(out)
}

/// Decodes text that must be exactly one PEM block: nothing before `-----BEGIN`, and after
/// the closing `-----` only spaces, tabs or a carriage return, then at most one newline.
/// This is the form Go's `pem.Decode` leaves no rest for, i.e. what Fabric's `IsWellFormed`
/// accepts, minus leading text; it keeps one certificate from having many serialized forms.
pub(crate) fn pem_exactly_one(text: &[u8]) -> Result<(String, Vec<u8>), String> {
    if !text.starts_with(b"-----BEGIN ") {
        return Err("does not start with a PEM BEGIN line".into());
    }
    let mut blocks = pem_blocks(text)?;
    if blocks.len() != 1 {
        return Err(format!("holds {} PEM blocks, not one", blocks.len()));
    }
    // The one block ends at the first "-----" after "-----END ".
    let tail = find(text, b"-----END ")
        .and_then(|at| {
            let after = &text[at + 9..];
            find(after, b"-----").map(|c| &after[c + 5..])
        })
        .unwrap_or_default();
    let (line, rest) = match tail.iter().position(|b| *b == b'\n') {
        Some(nl) => (&tail[..nl], &tail[nl + 1..]),
        None => (tail, &[][..]),
    };
    if !rest.is_empty() || line.iter().any(|b| !matches!(b, b' ' | b'\t' | b'\r')) {
        return Err("trailing bytes after the PEM block".into());
    }
    Ok(blocks.remove(0))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// When a certificate (DER) stops being valid, its NotAfter, whatever its key: for tools
/// that warn before an enrollment or TLS certificate expires, as a Fabric peer does at start
/// (`TrackExpiration`). A `SystemTime`, not an [`Instant`], so that a date past 2554 (RFC
/// 5280's 99991231235959Z) is shown as the certificate says. `source` names the input in
/// errors.
pub fn certificate_not_after(
    der: &[u8],
    source: &str,
) -> Result<std::time::SystemTime, crate::LoadError> {
    let cert = Certificate::from_der(der).map_err(|e| crate::LoadError::Certificate {
        source: source.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(cert.tbs_certificate.validity.not_after.to_system_time())
}

#[cfg(test)]
mod tests {
    use super::{certificate_not_after, go_string};
    use der::Tag;

    #[test]
    fn not_after_of_a_certificate_whatever_its_key() {
        let pem = include_bytes!("../tests/fixtures/node_ous/members/peer.pem");
        let (_, der) = pem_rfc7468::decode_vec(pem).expect("PEM");
        let at = certificate_not_after(&der, "peer.pem").expect("a certificate");
        assert_eq!(
            at,
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(2_082_585_600)
        );
        assert!(matches!(
            certificate_not_after(b"not DER", "junk"),
            Err(crate::LoadError::Certificate { .. })
        ));
    }

    /// OU values are read as Go's `parseASN1String` reads them.
    #[test]
    fn strings_are_read_as_go_reads_them() {
        assert_eq!(go_string(Tag::PrintableString, b"peer").unwrap(), b"peer");
        assert_eq!(go_string(Tag::PrintableString, b"R&D *").unwrap(), b"R&D *");
        assert!(go_string(Tag::PrintableString, b"dept_1").is_err());
        assert_eq!(
            go_string(Tag::Ia5String, b"peer@org1").unwrap(),
            b"peer@org1"
        );
        assert!(go_string(Tag::Ia5String, "p\u{e9}er".as_bytes()).is_err());
        assert!(go_string(Tag::NumericString, b"peer").is_err());
        assert_eq!(go_string(Tag::NumericString, b"12 3").unwrap(), b"12 3");
        assert!(go_string(Tag::Utf8String, &[0xff]).is_err());
        // T61: the bytes as they are, whatever they are.
        assert_eq!(go_string(Tag::TeletexString, &[0xe9]).unwrap(), [0xe9]);
        // BMP: a terminating NUL dropped, a lone surrogate replaced.
        assert_eq!(
            go_string(Tag::BmpString, &[0, b'p', 0, b'e', 0, b'e', 0, b'r', 0, 0]).unwrap(),
            b"peer"
        );
        assert_eq!(
            go_string(Tag::BmpString, &[0xd8, 0x00]).unwrap(),
            "\u{fffd}".as_bytes()
        );
        assert!(go_string(Tag::BmpString, &[0, b'p', 0]).is_err());
        assert!(go_string(Tag::Integer, &[1]).is_err());
    }

    /// Every attribute of a name is read as Go reads it, not only its OUs.
    #[test]
    fn a_name_with_a_value_go_refuses_is_refused() {
        use der::asn1::{Any, SetOfVec};
        use x509_cert::attr::AttributeTypeAndValue;
        use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
        let rdn = |oid: &str, tag: Tag, value: &[u8]| {
            let atv = AttributeTypeAndValue {
                oid: der::oid::ObjectIdentifier::new_unwrap(oid),
                value: Any::new(tag, value).unwrap(),
            };
            RelativeDistinguishedName(SetOfVec::try_from(vec![atv]).unwrap())
        };
        let good: Name = RdnSequence(vec![
            rdn("2.5.4.3", Tag::PrintableString, b"peer0"),
            rdn("2.5.4.11", Tag::Utf8String, b"peer"),
        ]);
        assert_eq!(
            super::organizational_units(&good).unwrap(),
            [b"peer".to_vec()]
        );
        let bad_cn: Name = RdnSequence(vec![
            rdn("2.5.4.3", Tag::PrintableString, b"peer_0"),
            rdn("2.5.4.11", Tag::Utf8String, b"peer"),
        ]);
        let e = super::organizational_units(&bad_cn).unwrap_err();
        assert!(e.contains("2.5.4.3"), "{e}");
    }
}
