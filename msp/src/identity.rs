//! Serialized identities: the bytes a peer sends in `ConnEstablish.identity`, and the PKI-ID
//! everyone derives from them.

use bytes::Bytes;
use fabric_gossip_core::PkiId;
use fabric_gossip_core::proto::msp::SerializedIdentity;
use prost::Message;

/// The PEM text of a DER certificate, byte for byte as Go's `pem.EncodeToMemory` writes it
/// (64-column base64, LF line ends, trailing newline), which is what a Fabric MSP puts in
/// `id_bytes`. Encoding the same way makes our PKI-ID the one a Fabric peer computes for the
/// same certificate.
pub fn certificate_pem(der: &[u8]) -> String {
    // Encoding into a String cannot fail for a label this short; fall back to empty text
    // rather than panic, which any validator then refuses as malformed.
    pem_rfc7468::encode_string("CERTIFICATE", pem_rfc7468::LineEnding::LF, der).unwrap_or_default()
}

/// The serialized `msp.SerializedIdentity { mspid, id_bytes: PEM(cert) }` for a DER
/// certificate: the identity a node with this certificate presents.
pub fn serialize_identity(msp_id: &str, cert_der: &[u8]) -> Bytes {
    serialize_identity_pem(msp_id, certificate_pem(cert_der).as_bytes())
}

/// The serialized identity for `id_bytes` taken as they are (no re-encoding); for tests and
/// tools that need an identity exactly as some other party encoded it.
pub fn serialize_identity_pem(msp_id: &str, id_bytes: &[u8]) -> Bytes {
    SerializedIdentity {
        mspid: msp_id.to_owned(),
        id_bytes: Bytes::copy_from_slice(id_bytes),
    }
    .encode_to_vec()
    .into()
}

/// Fabric's PKI-ID of a real identity: SHA-256(mspid ‖ id_bytes). It hashes the parts, not
/// the protobuf, so two encodings of the same identity map to the same peer.
pub fn pki_id(msp_id: &str, id_bytes: &[u8]) -> PkiId {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(msp_id.as_bytes());
    h.update(id_bytes);
    PkiId::from(h.finalize().to_vec())
}

/// Decodes `msp.SerializedIdentity`; `None` if the bytes are not one.
pub(crate) fn decode(identity: &[u8]) -> Option<SerializedIdentity> {
    SerializedIdentity::decode(identity).ok()
}
