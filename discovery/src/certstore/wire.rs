//! The certstore's wire messages, as Fabric builds them (`gossip/gossip/pull/pullstore.go`,
//! `certstore.go`): our signed `PeerIdentity`, and the four unsigned pull messages of type
//! `IDENTITY_MSG` (tag EMPTY, no channel, outer nonce 0); and the check every pulled
//! identity message must pass before its certificate is believed.

use crate::alive::envelope_of;
use crate::error::AliveError;
use crate::validate::check_identity;
use bytes::Bytes;
use fabric_gossip_core::proto::gossip::{
    DataDigest, DataRequest, DataUpdate, Envelope, GossipHello, GossipMessage, PeerIdentity,
    PullMsgType, gossip_message,
};
use fabric_gossip_core::{
    HandshakeError, Instant, PkiId, Security, SecurityError, SignedMessage, verify_envelope,
};
use prost::Message;

/// Whether `m` is a pull message of the identity pull (the only pull this layer runs; block
/// pull belongs to channels).
pub fn is_identity_pull(m: &GossipMessage) -> bool {
    use gossip_message::Content;
    let ty = match &m.content {
        Some(Content::Hello(h)) => h.msg_type,
        Some(Content::DataDig(d)) => d.msg_type,
        Some(Content::DataReq(r)) => r.msg_type,
        Some(Content::DataUpdate(u)) => u.msg_type,
        _ => return false,
    };
    ty == PullMsgType::IdentityMsg as i32
}

/// Fabric's pull message frame: tag EMPTY, empty channel, outer nonce 0 (the round's nonce
/// travels inside the content).
fn pull_message(content: gossip_message::Content) -> GossipMessage {
    GossipMessage {
        nonce: 0,
        channel: Bytes::new(),
        tag: gossip_message::Tag::Empty as i32,
        content: Some(content),
    }
}

/// Starts a round with one peer.
pub fn hello(nonce: u64) -> GossipMessage {
    pull_message(gossip_message::Content::Hello(GossipHello {
        nonce,
        metadata: Bytes::new(),
        msg_type: PullMsgType::IdentityMsg as i32,
    }))
}

/// Answers a hello: the PKI-IDs whose identities we hold and may show the asker.
pub fn digest(nonce: u64, items: &[PkiId]) -> GossipMessage {
    pull_message(gossip_message::Content::DataDig(DataDigest {
        nonce,
        digests: items.iter().map(|p| p.0.clone()).collect(),
        msg_type: PullMsgType::IdentityMsg as i32,
    }))
}

/// Asks a peer that advertised them for some identities.
pub fn request(nonce: u64, items: &[PkiId]) -> GossipMessage {
    pull_message(gossip_message::Content::DataReq(DataRequest {
        nonce,
        digests: items.iter().map(|p| p.0.clone()).collect(),
        msg_type: PullMsgType::IdentityMsg as i32,
    }))
}

/// Carries the requested identity messages, each still signed by its owner.
pub fn update(nonce: u64, data: Vec<Envelope>) -> GossipMessage {
    pull_message(gossip_message::Content::DataUpdate(DataUpdate {
        nonce,
        data,
        msg_type: PullMsgType::IdentityMsg as i32,
    }))
}

/// Our own identity message (`createIdentityMessage`): `PeerIdentity{pki_id, cert}` with no
/// metadata, tag EMPTY, signed by us, so that whoever relays it cannot alter it.
pub fn own_identity_message(security: &dyn Security) -> Result<Envelope, SecurityError> {
    let cert = security.own_identity();
    let msg = GossipMessage {
        nonce: 0,
        channel: Bytes::new(),
        tag: gossip_message::Tag::Empty as i32,
        content: Some(gossip_message::Content::PeerIdentity(PeerIdentity {
            pki_id: security.pki_id_of(&cert).0,
            cert,
            metadata: Bytes::new(),
        })),
    };
    let signed = SignedMessage::sign(msg, security).map_err(|e| match e {
        fabric_gossip_core::Error::Signing(s) => s,
        other => SecurityError::Other(other.to_string()),
    })?;
    Ok(envelope_of(&signed))
}

/// Why a pulled identity message is refused. Fabric refuses the whole `DataUpdate` that
/// carries one, an expired identity excepted (its identity mapper refuses that item alone);
/// so do we. Each reason has its own counter in [`super::CertStoreStats`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityMsgError {
    /// The envelope has no payload or no signature.
    #[error("envelope without payload or signature")]
    Unsigned,
    /// The payload is not a GossipMessage.
    #[error("payload does not decode: {0}")]
    Undecodable(String),
    /// The message is not a `PeerIdentity`.
    #[error("not a PeerIdentity message")]
    NotIdentity,
    /// `pki_id` or `cert` is empty.
    #[error("PeerIdentity without {0}")]
    MissingField(&'static str),
    /// The certificate's PKI-ID (its hash) is not the claimed one.
    #[error("certificate doesn't match the claimed pki_id")]
    IdentityMismatch,
    /// The security provider (the MSP) refuses the certificate.
    #[error("identity refused: {0}")]
    BadIdentity(SecurityError),
    /// The certificate has already expired, and the item is signed by it. In an update,
    /// this item alone is left out.
    #[error("identity expired")]
    IdentityExpired,
    /// The envelope is not signed by the certificate it carries.
    #[error("not signed by its certificate: {0}")]
    BadSignature(HandshakeError),
    /// The envelope, its certificate or its metadata is larger than [`IdentityLimits`]
    /// allow.
    #[error("{what} of {size} bytes exceeds the limit of {max}")]
    TooLarge {
        /// What is too large: `"identity envelope"`, `"certificate"` or `"metadata"`.
        what: &'static str,
        /// Its size in bytes.
        size: usize,
        /// The limit.
        max: usize,
    },
}

/// How large a pulled identity message may be, so that one member cannot make every node
/// hold and serve megabytes (a member serving its own `PeerIdentity` with 20–90 MB of
/// metadata had every node pull, hold and re-serve it; Fabric bounds none of it). The
/// bounds are the membership's for the same things: the certificate at most the largest
/// identity comm accepts in a handshake (`Config::max_identity_size`, 64 KiB), the metadata
/// at most [`max_metadata_size`](crate::DiscoveryConfig::max_metadata_size) (4 KiB; Fabric's
/// own identity messages carry none), and the whole envelope at most an alive message's
/// ([`AliveLimits`](crate::validate::AliveLimits): both, plus 4 KiB).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdentityLimits {
    /// The whole envelope, encoded.
    pub envelope: usize,
    /// `PeerIdentity.cert`.
    pub cert: usize,
    /// `PeerIdentity.metadata`.
    pub metadata: usize,
}

impl IdentityLimits {
    /// The limits for an identity bound and a metadata bound.
    pub fn new(max_identity_size: usize, max_metadata_size: usize) -> Self {
        IdentityLimits {
            envelope: crate::validate::AliveLimits::new(max_identity_size, max_metadata_size)
                .envelope,
            cert: max_identity_size,
            metadata: max_metadata_size,
        }
    }

    /// Refuses an envelope over the bound before anything of it is decoded.
    pub fn check_envelope(&self, env: &Envelope) -> Result<(), IdentityMsgError> {
        too_large("identity envelope", env.encoded_len(), self.envelope)
    }

    /// Refuses a parsed identity whose certificate or metadata is over its bound.
    pub fn check_parsed(&self, id: &PeerIdentity) -> Result<(), IdentityMsgError> {
        too_large("certificate", id.cert.len(), self.cert)?;
        too_large("metadata", id.metadata.len(), self.metadata)
    }
}

fn too_large(what: &'static str, size: usize, max: usize) -> Result<(), IdentityMsgError> {
    if size > max {
        return Err(IdentityMsgError::TooLarge { what, size, max });
    }
    Ok(())
}

/// A pulled identity message that passed every check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidIdentity {
    /// Its owner.
    pub pki_id: PkiId,
    /// The owner's serialized identity (certificate).
    pub cert: Bytes,
    /// When the certificate expires, if ever.
    pub expires: Option<Instant>,
    /// The signed message, relayed verbatim to those who pull it from us.
    pub envelope: Envelope,
}

/// The structural half of [`validate_identity_msg`], without a certificate or signature
/// check: signed, a `PeerIdentity`, with a PKI-ID and a certificate. Cheap (one protobuf
/// decode, no copy), so an update's items can all be screened before any crypto runs.
pub(crate) fn parse_identity_msg(env: &Envelope) -> Result<PeerIdentity, IdentityMsgError> {
    if env.payload.is_empty() || env.signature.is_empty() {
        return Err(IdentityMsgError::Unsigned);
    }
    let msg = GossipMessage::decode(env.payload.clone())
        .map_err(|e| IdentityMsgError::Undecodable(e.to_string()))?;
    let Some(gossip_message::Content::PeerIdentity(id)) = msg.content else {
        return Err(IdentityMsgError::NotIdentity);
    };
    if id.pki_id.is_empty() {
        return Err(IdentityMsgError::MissingField("pki_id"));
    }
    if id.cert.is_empty() {
        return Err(IdentityMsgError::MissingField("cert"));
    }
    Ok(id)
}

/// Fabric's `validateIdentityMsg` and the identity mapper's `Put`: a `PeerIdentity` whose
/// PKI-ID is its certificate's, accepted by the MSP, unexpired, and signed by that very
/// certificate (so nobody but its owner can make one, yet anybody can relay it). The
/// cheaper certificate checks run before the signature.
pub fn validate_identity_msg(
    security: &dyn Security,
    env: &Envelope,
    now: Instant,
) -> Result<ValidIdentity, IdentityMsgError> {
    validate_parsed(security, parse_identity_msg(env)?, env, now)
}

/// The certificate and signature half of [`validate_identity_msg`], on what
/// [`parse_identity_msg`] read from `env`.
pub(crate) fn validate_parsed(
    security: &dyn Security,
    id: PeerIdentity,
    env: &Envelope,
    now: Instant,
) -> Result<ValidIdentity, IdentityMsgError> {
    let pki_id = PkiId(id.pki_id);
    let checked = match check_identity(security, &pki_id, &id.cert, now) {
        Ok(c) => c,
        // Expired, by our expiry check or the provider's: reported only for an item whose
        // PKI-ID is its certificate's and which that certificate signed, in Fabric's order
        // (PKI-ID, signature; expiry only in its identity mapper). The provider's verdict
        // comes before the PKI-ID comparison, so it is made here again: an expired
        // certificate must not stand for PKI-IDs not its own.
        Err(AliveError::IdentityExpired | AliveError::BadIdentity(SecurityError::Expired(_))) => {
            if security.pki_id_of(&id.cert) != pki_id {
                return Err(IdentityMsgError::IdentityMismatch);
            }
            verify_envelope(security, &id.cert, env).map_err(IdentityMsgError::BadSignature)?;
            return Err(IdentityMsgError::IdentityExpired);
        }
        Err(e) => {
            return Err(match e {
                AliveError::IdentityMismatch => IdentityMsgError::IdentityMismatch,
                AliveError::BadIdentity(s) => IdentityMsgError::BadIdentity(s),
                other => IdentityMsgError::BadIdentity(SecurityError::Other(other.to_string())),
            });
        }
    };
    verify_envelope(security, &id.cert, env).map_err(IdentityMsgError::BadSignature)?;
    Ok(ValidIdentity {
        pki_id,
        cert: checked.identity,
        expires: checked.expires,
        envelope: env.clone(),
    })
}
