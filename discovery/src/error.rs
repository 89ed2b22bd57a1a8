//! Typed reasons why input is refused.

use core::time::Duration;
use fabric_gossip_core::{Error as CommError, HandshakeError, IdentityRefusal, SecurityError};

/// Why a configuration cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Not `host:port` with one colon and a 16-bit port (Fabric panics on this at start).
    /// An IPv6 literal (`[::1]:7051`) is refused so too, and its text says so.
    #[error("{}", bad_endpoint_text(.0))]
    BadEndpoint(String),
    /// A period that must be positive is zero.
    #[error("{0} must be positive")]
    ZeroDuration(&'static str),
    /// A bootstrap endpoint is not `host:port` with a 16-bit port: it could never be
    /// dialled, and would only fail again every `reconnect_interval`. (Fabric checks
    /// nothing here; the host may be an IPv6 literal in brackets.)
    #[error("bootstrap endpoint {0:?} is not host:port")]
    BadBootstrap(String),
    /// `alive_expiration` is not longer than `alive_interval`: every member would be
    /// declared dead between two of its heartbeats, and come back alive at the next.
    #[error(
        "alive_expiration ({expiration:?}) must be longer than alive_interval ({interval:?}), \
         or members are declared dead between their heartbeats"
    )]
    ExpirationNotAfterInterval {
        /// `alive_expiration`.
        expiration: Duration,
        /// `alive_interval`.
        interval: Duration,
    },
    /// A bound or factor that must be positive is zero (`max_members`,
    /// `max_membership_bytes`, `msg_expiration_factor`): with it the layer could hold no
    /// member, or would keep no alive message long enough to refuse its replay.
    #[error("{0} must be positive")]
    Zero(&'static str),
    /// A period is longer than the one it serves (the expiry check's, longer than the
    /// expiration it checks).
    #[error("{name} ({value:?}) must not exceed {limit} ({max:?})")]
    TooLong {
        /// The setting that is too long.
        name: &'static str,
        /// Its value.
        value: Duration,
        /// The setting it must not exceed.
        limit: &'static str,
        /// That setting's value.
        max: Duration,
    },
}

/// `BadEndpoint`'s text: an IPv6 literal is host:port to its writer, so say why it is not.
fn bad_endpoint_text(endpoint: &str) -> String {
    let host = endpoint.rsplit_once(':').map_or(endpoint, |(host, _)| host);
    let unbracketed = host.trim_start_matches('[').trim_end_matches(']');
    if unbracketed.parse::<std::net::Ipv6Addr>().is_ok() {
        format!(
            "endpoint {endpoint:?} is an IPv6 literal, which Fabric refuses (an endpoint has \
             one colon): use a host name"
        )
    } else {
        format!("endpoint {endpoint:?} is not host:port")
    }
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
        /// `"alive envelope"`, `"metadata"`, `"endpoint"` or `"internal endpoint"`.
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

/// Why joining through a bootstrap peer failed
/// ([`DiscoveryEvent::BootstrapFailed`](crate::DiscoveryEvent::BootstrapFailed)): typed, so
/// that an application can tell a peer it cannot reach from one of the wrong organization
/// without reading the text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BootstrapError {
    /// The handshake that identifies it failed: it could not be reached, TLS failed, or
    /// it refused us (with its own reason when it gave one), or we refused its identity.
    #[error("{0}")]
    Handshake(HandshakeError),
    /// It proved an identity of another organization, and bootstrap peers must be of
    /// ours (Fabric's rule; join another organization's anchor peer with
    /// [`Discovery::connect_anchor`](crate::Discovery::connect_anchor)).
    #[error("{0} isn't in our organization, cannot be a bootstrap peer")]
    OtherOrganization(String),
    /// An anchor peer the channel configuration puts in our organization
    /// ([`Discovery::connect_anchor_of`](crate::Discovery::connect_anchor_of)) proved an
    /// identity of another organization (Fabric: "isn't in our org, but is claimed to
    /// be"). Retried like a failed handshake.
    #[error("anchor peer {0} isn't in our organization, but is claimed to be")]
    NotOfClaimedOrganization(String),
    /// An anchor peer of another organization, or of none known, while we have no
    /// external endpoint: it could not reach us, and would not list us.
    #[error("anchor peer of another organization and no external endpoint")]
    AnchorWithoutExternalEndpoint,
    /// It never answered our membership request (sent `max_connection_attempts` times).
    #[error("no membership response")]
    NoResponse,
    /// The comm core would not start the handshake (it is stopped, or its table of
    /// operations is full); the attempt counts and is retried like any other.
    #[error("cannot start the handshake: {0}")]
    NotStarted(CommError),
    /// Our own alive message could not be signed, so no request could be sent.
    #[error("cannot sign our alive message")]
    CannotSign,
}
