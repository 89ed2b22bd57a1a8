//! Typed reasons why input is refused.

use fabric_gossip_core::{HandshakeError, IdentityRefusal, SecurityError};

/// Why a configuration cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Not `host:port` with one colon and a 16-bit port (Fabric panics on this at start).
    #[error("endpoint {0:?} is not host:port")]
    BadEndpoint(String),
    /// A period that must be positive is zero.
    #[error("{0} must be positive")]
    ZeroDuration(&'static str),
}

/// Why an alive message (direct, or inside a membership request or response) is refused.
/// Each reason has its own counter in [`crate::DiscoveryStats`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AliveError {
    /// The envelope has no payload or no signature.
    #[error("envelope without payload or signature")]
    Unsigned,
    /// The payload is not a GossipMessage.
    #[error("payload does not decode: {0}")]
    Undecodable(String),
    /// The message is not an AliveMessage.
    #[error("not an alive message")]
    NotAlive,
    /// `membership`, `membership.pki_id` or `timestamp` is missing (Fabric would
    /// dereference nil here, quirk Q2).
    #[error("alive message without {0}")]
    MissingField(&'static str),
    /// No identity for the PKI-ID: none embedded, none learnt by handshake or earlier.
    #[error("no certificate for this PKI-ID")]
    UnknownIdentity,
    /// The embedded identity is refused by the security provider.
    #[error("identity refused: {0}")]
    BadIdentity(SecurityError),
    /// The embedded identity's PKI-ID is not the one the message claims.
    #[error("identity doesn't match the pki_id")]
    IdentityMismatch,
    /// The embedded identity has already expired.
    #[error("identity expired")]
    IdentityExpired,
    /// The signature (or the secret envelope's) does not verify.
    #[error("bad signature: {0}")]
    BadSignature(HandshakeError),
    /// The envelope, or its metadata, is larger than any member needs (see
    /// [`crate::DiscoveryConfig::max_metadata_size`]): refused before it is decoded or
    /// verified, so that one member cannot make every node hold and forward megabytes.
    #[error("{what} of {size} bytes, over the limit of {max}")]
    TooLarge {
        /// `"alive envelope"` or `"metadata"`.
        what: &'static str,
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
}

impl From<IdentityRefusal> for AliveError {
    fn from(r: IdentityRefusal) -> Self {
        match r {
            IdentityRefusal::Unclassifiable(e) | IdentityRefusal::Invalid(e) => {
                AliveError::BadIdentity(e)
            }
            IdentityRefusal::Mismatch => AliveError::IdentityMismatch,
        }
    }
}
