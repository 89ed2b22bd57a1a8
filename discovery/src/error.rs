//! Typed reasons why input is refused.

use core::fmt;
use fabric_gossip_core::{HandshakeError, IdentityRefusal, SecurityError};

/// Why a configuration cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// Not `host:port` with one colon and a 16-bit port (Fabric panics on this at start).
    BadEndpoint(String),
    /// A period that must be positive is zero.
    ZeroDuration(&'static str),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::BadEndpoint(e) => write!(f, "endpoint {e:?} is not host:port"),
            ConfigError::ZeroDuration(n) => write!(f, "{n} must be positive"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Why an alive message (direct, or inside a membership request or response) is refused.
/// Each reason has its own counter in [`crate::DiscoveryStats`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AliveError {
    /// The envelope has no payload or no signature.
    Unsigned,
    /// The payload is not a GossipMessage.
    Undecodable(String),
    /// The message is not an AliveMessage.
    NotAlive,
    /// `membership`, `membership.pki_id` or `timestamp` is missing (Fabric would
    /// dereference nil here, quirk Q2).
    MissingField(&'static str),
    /// No identity for the PKI-ID: none embedded, none learnt by handshake or earlier.
    UnknownIdentity,
    /// The embedded identity is refused by the security provider.
    BadIdentity(SecurityError),
    /// The embedded identity's PKI-ID is not the one the message claims.
    IdentityMismatch,
    /// The embedded identity has already expired.
    IdentityExpired,
    /// The signature (or the secret envelope's) does not verify.
    BadSignature(HandshakeError),
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

impl fmt::Display for AliveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AliveError::Unsigned => f.write_str("envelope without payload or signature"),
            AliveError::Undecodable(e) => write!(f, "payload does not decode: {e}"),
            AliveError::NotAlive => f.write_str("not an alive message"),
            AliveError::MissingField(n) => write!(f, "alive message without {n}"),
            AliveError::UnknownIdentity => f.write_str("no certificate for this PKI-ID"),
            AliveError::BadIdentity(e) => write!(f, "identity refused: {e}"),
            AliveError::IdentityMismatch => f.write_str("identity doesn't match the pki_id"),
            AliveError::IdentityExpired => f.write_str("identity expired"),
            AliveError::BadSignature(e) => write!(f, "bad signature: {e}"),
        }
    }
}

impl std::error::Error for AliveError {}
