//! Errors and reasons. Three kinds of outcome are kept apart: a caller's misuse of the API
//! is an [`Error`] returned at once; a remote's misbehaviour closes the connection and is
//! reported as an event with a [`CloseReason`] or [`HandshakeError`]; a broken internal
//! invariant is a bug (and is never reachable from input).

use crate::ids::PkiId;
use crate::security::SecurityError;
use core::fmt;

/// API misuse, returned synchronously. Nothing about the network is implied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The core was stopped; it accepts no new work.
    #[error("comm is stopped")]
    Stopped,
    /// The handle does not name a live object (closed, or from another generation).
    #[error("unknown or stale handle")]
    UnknownHandle,
    /// The connection behind the handle has closed (e.g. `respond` after the peer left).
    #[error("connection is closed")]
    ConnectionClosed,
    /// No peers were given where at least one is needed.
    #[error("no peers given")]
    NoPeers,
    /// A blocking send found both the send buffer and the wait queue full.
    #[error("send buffer and wait queue are full")]
    WouldBlock,
    /// A bounded table is full (operations, subscriptions, pending handshakes).
    #[error("limit reached: {0}")]
    LimitReached(&'static str),
    /// A message for a peer of unknown (empty) PKI-ID while a connection attempt to another
    /// endpoint, of unknown PKI-ID too, is in progress: attempts are told apart by PKI-ID,
    /// so it would go wherever that one connects. Name the peer's PKI-ID (`handshake`
    /// learns it), or send once that attempt has ended.
    #[error(
        "a connection attempt to {pending}, whose PKI-ID is unknown too, is in progress; \
         name this peer's PKI-ID or send after it"
    )]
    UnknownPkiIdBusy {
        /// The endpoint of the attempt in progress.
        pending: String,
    },
    /// The message could not be signed.
    #[error("signing failed: {0}")]
    Signing(SecurityError),
    /// The message is larger than `max_message_size` once encoded.
    #[error("message of {size} bytes exceeds the limit of {limit}")]
    MessageTooLarge {
        /// Encoded size.
        size: usize,
        /// Configured limit.
        limit: usize,
    },
    /// The message has no content, which no Fabric peer would accept.
    #[error("message has no content")]
    EmptyMessage,
}

/// Why a handshake failed. Variants follow Fabric's checks in Fabric's order
/// (`gossip/comm/comm_impl.go`, `authenticateRemotePeer`; `gossip/identity/identity.go`,
/// `identityMapperImpl.Put`), each distinct so tests and counters can tell them apart.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// TLS is on and the remote presented no certificate ("No TLS certificate", Fabric's
    /// text, which the remote is sent). A Go client sends none when none of its
    /// certificates chains to the CAs our TLS server asks for: with a client that has
    /// one, check those CAs first.
    #[error("No TLS certificate")]
    NoTlsCertificate,
    /// No `ConnEstablish` arrived within `conn_timeout`.
    #[error("timed out waiting for connection message")]
    Timeout,
    /// `handshake()`: the remote's `ConnEstablish` came and verified, but its verdict on
    /// ours (the end of the stream: OK accepts, an error status refuses) did not come within
    /// `conn_timeout`, as from a remote that took our stream for a connection. Counted as
    /// a `timeout`; its own variant so the message does not blame a `ConnEstablish` that
    /// came.
    #[error(
        "timed out waiting for the remote's verdict: its connection message came and \
         verified, but it neither accepted ours (ending the stream) nor refused it"
    )]
    VerdictTimeout,
    /// The stream ended before the remote's `ConnEstablish` arrived.
    #[error("stream ended during handshake: {0}")]
    StreamEnded(String),
    /// The first Envelope could not be decoded (bytes, or its payload as a GossipMessage).
    #[error("malformed handshake message: {0}")]
    Malformed(String),
    /// The first message is not a `ConnEstablish` ("wrong type").
    #[error("wrong type")]
    WrongType,
    /// `ConnEstablish.pki_id` is empty ("no PKI-ID").
    #[error("no PKI-ID")]
    NoPkiId,
    /// `ConnEstablish.identity` is empty ("identity is nil").
    #[error("identity is nil")]
    NoIdentity,
    /// The provider cannot classify the identity ("failed classifying identity").
    #[error("failed classifying identity: {0}")]
    UnclassifiableIdentity(SecurityError),
    /// The provider refused the identity (`ValidateIdentity`).
    #[error("identity refused: {0}")]
    InvalidIdentity(SecurityError),
    /// PKI-ID-of(identity) differs from the claimed PKI-ID.
    #[error("identity doesn't match the computed pkiID")]
    IdentityMismatch,
    /// The identity is larger than `Config::max_identity_size`. Fabric has no such bound;
    /// real identities are a few KiB, and a huge one would be kept in the identity store.
    #[error("identity of {size} bytes exceeds the limit of {limit}")]
    IdentityTooLarge {
        /// Size of the identity received.
        size: usize,
        /// Configured limit.
        limit: usize,
    },
    /// The identity has expired.
    #[error("identity expired")]
    IdentityExpired,
    /// `tls_cert_hash` differs from the hash of the certificate the remote presented.
    #[error("TLS certificate hash doesn't match the presented certificate")]
    TlsCertHashMismatch,
    /// The Envelope's payload or signature is empty.
    #[error("envelope has an empty payload or signature")]
    Unsigned,
    /// The signature does not verify with the claimed identity.
    #[error("failed verifying signature: {0}")]
    BadSignature(SecurityError),
    /// The secret envelope is present but incomplete or does not verify.
    #[error("secret envelope doesn't verify")]
    BadSecretEnvelope,
    /// Dialling the remote failed or timed out (initiator side).
    #[error("dial failed: {0}")]
    Dial(DialError),
    /// The remote's Ping failed or timed out (initiator side).
    #[error("ping failed: {0}")]
    Ping(String),
    /// The remote authenticated as a PKI-ID other than the expected one, in another
    /// organization ("authentication failure"), or in ours while comm holds no identity
    /// for the expected PKI-ID: an identity switch is only recognised from an identity
    /// comm holds (from a handshake, or given by a layer with `Comm::learn_identity`; an
    /// identity evicted from a full store no longer counts).
    #[error("authentication failure: expected {expected}, remote is {actual}")]
    UnexpectedPeer {
        /// The PKI-ID the caller expected.
        expected: PkiId,
        /// The PKI-ID the remote proved.
        actual: PkiId,
    },
    /// `handshake()` authenticated a PKI-ID other than the expected one
    /// ("PKI-ID of remote peer doesn't match expected PKI-ID").
    #[error("PKI-ID of remote peer doesn't match expected PKI-ID")]
    PkiIdMismatch {
        /// The PKI-ID the caller expected.
        expected: PkiId,
        /// The PKI-ID the remote proved.
        actual: PkiId,
    },
    /// The node is shutting down.
    #[error("Shutting down")]
    ShuttingDown,
    /// Too many handshakes were pending; this one (the oldest) was refused.
    #[error("refused: too many pending handshakes")]
    Evicted,
    /// The node already holds `max_connections` connections.
    #[error("refused: too many connections")]
    TooManyConnections,
    /// `handshake_timeout` elapsed for a `handshake()` operation.
    #[error("handshake timed out")]
    OperationTimeout,
    /// The connection attempt was cancelled (`close_conn` or `stop`).
    #[error("cancelled")]
    Cancelled,
    /// Our own `ConnEstablish` could not be signed.
    #[error("signing own ConnEstablish: {0}")]
    LocalSigning(SecurityError),
    /// The remote claims our own PKI-ID: ourselves dialled through a wrong endpoint, or
    /// someone impersonating us. Fabric registers it as a connection to itself; refused
    /// here, so a node never shows a connection to itself.
    #[error(
        "the remote proved our own PKI-ID: this node reached itself (an endpoint given for, or \
         advertised by, another member is this node's), or another node runs with our identity"
    )]
    OwnPkiId,
    /// The remote authenticated, then refused us: it ended the stream with a non-OK status
    /// instead of OK after reading our `ConnEstablish` (a Fabric peer sends its
    /// `ConnEstablish` before it checks ours, and ends the RPC with e.g. "failed
    /// classifying identity: …"). Only a `handshake()` waits for this verdict.
    #[error("refused by the remote: {status}")]
    RefusedByRemote {
        /// The status the remote ended the stream with, as the driver reported it (gRPC
        /// code and message).
        status: String,
    },
    /// On a stream we opened, the remote's `ConnEstablish` carried the probe flag ("probe",
    /// Fabric's `errProbe`, which fails its dial and its `Handshake` alike). Only the side
    /// that opens a stream may probe; a remote that answers as a prober is not a peer to
    /// keep a connection to.
    #[error("probe")]
    ProbeAnswer,
}

/// Defines [`HandshakeFailure`] from one table: the kinds, their counter index (the
/// order here), and their labels.
macro_rules! failure_kinds {
    ($($kind:ident => $label:literal,)*) => {
        /// The kind of a [`HandshakeError`] without its details: what
        /// [`Stats::handshake_failures`](crate::Stats::handshake_failures) is indexed by
        /// ([`HandshakeFailure::index`]), with a stable label for logs and metrics.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[non_exhaustive]
        pub enum HandshakeFailure {
            $(
                #[doc = concat!("[`HandshakeError::", stringify!($kind), "`] (`", $label, "`).")]
                $kind,
            )*
        }

        impl HandshakeFailure {
            /// Every kind, in counter order.
            pub const ALL: [HandshakeFailure; [$($label),*].len()] = [$(HandshakeFailure::$kind),*];

            /// How many kinds there are: the length of the counter table.
            pub const COUNT: usize = Self::ALL.len();

            /// A short stable name, used as a counter label.
            pub const fn label(self) -> &'static str {
                match self {
                    $(HandshakeFailure::$kind => $label,)*
                }
            }
        }
    };
}

// The order is the counters' order and must stay stable (traces and summaries list them
// in it); new kinds go at the end.
failure_kinds! {
    NoTlsCertificate => "no_tls_certificate",
    Timeout => "timeout",
    StreamEnded => "stream_ended",
    Malformed => "malformed",
    WrongType => "wrong_type",
    NoPkiId => "no_pki_id",
    NoIdentity => "no_identity",
    UnclassifiableIdentity => "unclassifiable_identity",
    InvalidIdentity => "invalid_identity",
    IdentityMismatch => "identity_mismatch",
    IdentityExpired => "identity_expired",
    TlsCertHashMismatch => "tls_cert_hash_mismatch",
    Unsigned => "unsigned",
    BadSignature => "bad_signature",
    BadSecretEnvelope => "bad_secret_envelope",
    Dial => "dial",
    Ping => "ping",
    UnexpectedPeer => "unexpected_peer",
    PkiIdMismatch => "pki_id_mismatch",
    ShuttingDown => "shutting_down",
    Evicted => "evicted",
    TooManyConnections => "too_many_connections",
    OperationTimeout => "operation_timeout",
    Cancelled => "cancelled",
    LocalSigning => "local_signing",
    IdentityTooLarge => "identity_too_large",
    OwnPkiId => "own_pki_id",
    RefusedByRemote => "refused_by_remote",
    ProbeAnswer => "probe_answer",
}

impl HandshakeFailure {
    /// Whether our checks refused the peer's identity or its TLS binding: a failure an
    /// operator must act on (trust an MSP, renew or revoke a certificate), where a dial
    /// that failed or a stream that ended is a member gone, mended by itself. Logged as a
    /// warning, as Fabric warns "Identity store rejected" and "Authentication failed".
    pub const fn is_identity_refusal(self) -> bool {
        matches!(
            self,
            HandshakeFailure::NoTlsCertificate
                | HandshakeFailure::UnclassifiableIdentity
                | HandshakeFailure::InvalidIdentity
                | HandshakeFailure::IdentityMismatch
                | HandshakeFailure::IdentityExpired
                | HandshakeFailure::TlsCertHashMismatch
                | HandshakeFailure::BadSignature
        )
    }

    /// The kind's slot in [`Stats::handshake_failures`](crate::Stats::handshake_failures).
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The kind with this label, if any.
    pub fn from_label(label: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.label() == label)
    }
}

impl fmt::Display for HandshakeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

impl HandshakeError {
    /// The error's kind, which indexes the failure counters.
    pub fn kind(&self) -> HandshakeFailure {
        use HandshakeFailure as K;
        match self {
            HandshakeError::NoTlsCertificate => K::NoTlsCertificate,
            HandshakeError::Timeout | HandshakeError::VerdictTimeout => K::Timeout,
            HandshakeError::StreamEnded(_) => K::StreamEnded,
            HandshakeError::Malformed(_) => K::Malformed,
            HandshakeError::WrongType => K::WrongType,
            HandshakeError::NoPkiId => K::NoPkiId,
            HandshakeError::NoIdentity => K::NoIdentity,
            HandshakeError::UnclassifiableIdentity(_) => K::UnclassifiableIdentity,
            HandshakeError::InvalidIdentity(_) => K::InvalidIdentity,
            HandshakeError::IdentityMismatch => K::IdentityMismatch,
            HandshakeError::IdentityTooLarge { .. } => K::IdentityTooLarge,
            HandshakeError::IdentityExpired => K::IdentityExpired,
            HandshakeError::TlsCertHashMismatch => K::TlsCertHashMismatch,
            HandshakeError::Unsigned => K::Unsigned,
            HandshakeError::BadSignature(_) => K::BadSignature,
            HandshakeError::BadSecretEnvelope => K::BadSecretEnvelope,
            HandshakeError::Dial(_) => K::Dial,
            HandshakeError::Ping(_) => K::Ping,
            HandshakeError::UnexpectedPeer { .. } => K::UnexpectedPeer,
            HandshakeError::PkiIdMismatch { .. } => K::PkiIdMismatch,
            HandshakeError::ShuttingDown => K::ShuttingDown,
            HandshakeError::Evicted => K::Evicted,
            HandshakeError::TooManyConnections => K::TooManyConnections,
            HandshakeError::OperationTimeout => K::OperationTimeout,
            HandshakeError::Cancelled => K::Cancelled,
            HandshakeError::LocalSigning(_) => K::LocalSigning,
            HandshakeError::OwnPkiId => K::OwnPkiId,
            HandshakeError::RefusedByRemote { .. } => K::RefusedByRemote,
            HandshakeError::ProbeAnswer => K::ProbeAnswer,
        }
    }

    /// A short stable name, used as a counter label (the label of [`HandshakeError::kind`]).
    pub fn label(&self) -> &'static str {
        self.kind().label()
    }

    /// Every label, in counter order (derived from [`HandshakeFailure::ALL`]).
    pub const LABELS: [&'static str; HandshakeFailure::COUNT] = {
        let mut out = [""; HandshakeFailure::COUNT];
        let mut i = 0;
        while i < HandshakeFailure::COUNT {
            out[i] = HandshakeFailure::ALL[i].label();
            i += 1;
        }
        out
    };
}

/// Why a dial failed, as reported by the driver or decided by the core's timer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DialError {
    /// No answer within `dial_timeout`.
    #[error("dial timed out")]
    Timeout,
    /// The driver reported a failure (refused, unreachable, TLS error...): the last
    /// attempt's, when the dial retried ([`Config::dial_backoff`](crate::Config::dial_backoff)).
    /// The text is the transport's own; on the tonic driver,
    /// `fabric_gossip_tonic::DialDiagnosis::of(&text, tls)` names its usual cause (nothing
    /// listening, the port serves TLS or plaintext, an untrusted CA, ...).
    #[error("{0}")]
    Failed(String),
}

/// The text of [`ProbeError::Ping`] when the Ping got no answer within `conn_timeout`:
/// a tool that words a time-out its own way matches on it.
pub const PING_TIMED_OUT: &str = "ping timed out";

/// Why `probe` failed. A TLS mismatch shows here as the transport's text: a TLS dial of a
/// plaintext port in [`ProbeError::Dial`], a plaintext dial of a TLS port mostly in
/// [`ProbeError::Ping`]; on the tonic driver, `DialDiagnosis::of(&error.to_string(), tls)`
/// reads either.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// Dialling failed.
    #[error("dial failed: {0}")]
    Dial(DialError),
    /// Ping failed or timed out (`conn_timeout`).
    #[error("ping failed: {0}")]
    Ping(String),
    /// The node is stopping.
    #[error("stopping")]
    Stopped,
}

/// Why one peer of a `send_with_ack` did not ack successfully.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AckError {
    /// The peer acked with this error text.
    #[error("{0}")]
    Remote(String),
    /// No ack arrived within the operation's timeout ("timed out").
    #[error("timed out")]
    Timeout,
    /// No connection to the peer could be had.
    #[error("no connection: {0}")]
    NoConnection(String),
    /// The connection closed before the ack arrived.
    #[error("connection closed before ack")]
    ConnectionClosed,
    /// The message could not be queued (wait queue full).
    #[error("send buffer and wait queue are full")]
    WouldBlock,
    /// The node is stopping.
    #[error("comm is stopping")]
    Stopped,
}

/// Why a connection (an authenticated stream) was closed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The stream ended cleanly from the remote side.
    RemoteClosed,
    /// The stream failed (reset, transport error) with the driver's explanation.
    StreamError(String),
    /// A write to the stream failed; the peer is presumed dead.
    WriteFailed(String),
    /// An Envelope could not be decoded, or exceeded the size limit.
    Malformed(String),
    /// A newer connection with the same PKI-ID replaced this one.
    Replaced,
    /// This stream lost a crossing dial and its grace period ended.
    CrossingLoser,
    /// `close_conn` was called.
    Local,
    /// The remote's identity expired.
    IdentityExpired,
    /// The remote's identity was purged for disuse: nothing used it for
    /// [`Config::identity_usage_threshold`](crate::Config::identity_usage_threshold)
    /// (Fabric's identity mapper purges it and closes the connection, `onPurge`).
    IdentityUnused,
    /// The remote's identity no longer validates: the security provider refused it when
    /// [`Comm::revalidate_identities`](crate::Comm::revalidate_identities) asked again
    /// (a revoked certificate, an MSP no longer trusted).
    IdentityRefused(SecurityError),
    /// The node stopped.
    Stopped,
}

impl CloseReason {
    /// A short stable name, used as a counter label and in traces.
    pub fn label(&self) -> &'static str {
        match self {
            CloseReason::RemoteClosed => "remote_closed",
            CloseReason::StreamError(_) => "stream_error",
            CloseReason::WriteFailed(_) => "write_failed",
            CloseReason::Malformed(_) => "malformed",
            CloseReason::Replaced => "replaced",
            CloseReason::CrossingLoser => "crossing_loser",
            CloseReason::Local => "local",
            CloseReason::IdentityExpired => "identity_expired",
            CloseReason::IdentityUnused => "identity_unused",
            CloseReason::IdentityRefused(_) => "identity_refused",
            CloseReason::Stopped => "stopped",
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::StreamError(e) => write!(f, "stream error: {e}"),
            CloseReason::WriteFailed(e) => write!(f, "write failed: {e}"),
            CloseReason::Malformed(e) => write!(f, "malformed envelope: {e}"),
            CloseReason::IdentityRefused(e) => write!(f, "identity refused: {e}"),
            other => f.write_str(other.label()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SecurityError;

    /// The labels are what logs and the CLI's events show as a close's cause, so each
    /// is stable, and a reason without details reads as its label.
    #[test]
    fn each_close_reason_has_its_own_stable_label() {
        let why = || "x".to_string();
        let cases = [
            (CloseReason::RemoteClosed, "remote_closed"),
            (CloseReason::StreamError(why()), "stream_error"),
            (CloseReason::WriteFailed(why()), "write_failed"),
            (CloseReason::Malformed(why()), "malformed"),
            (CloseReason::Replaced, "replaced"),
            (CloseReason::CrossingLoser, "crossing_loser"),
            (CloseReason::Local, "local"),
            (CloseReason::IdentityExpired, "identity_expired"),
            (CloseReason::IdentityUnused, "identity_unused"),
            (
                CloseReason::IdentityRefused(SecurityError::HighS),
                "identity_refused",
            ),
            (CloseReason::Stopped, "stopped"),
        ];
        for (reason, label) in &cases {
            assert_eq!(reason.label(), *label);
        }
        assert_eq!(CloseReason::IdentityUnused.to_string(), "identity_unused");
        assert_eq!(
            CloseReason::WriteFailed(why()).to_string(),
            "write failed: x"
        );
    }
}
