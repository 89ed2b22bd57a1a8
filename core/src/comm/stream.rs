//! One stream's state: handshaking, then established as a connection (Fabric's
//! `connection`, `gossip/comm/conn.go`).

use super::send::SendQueue;
use crate::config::CertHash;
use crate::error::CloseReason;
use crate::ids::{DialId, OpId, PkiId};
use crate::message::ConnectionInfo;
use crate::time::Instant;
use std::sync::Arc;

/// What a handshaking stream is for: decides what its authentication leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Purpose {
    /// An inbound stream: registered once authenticated (unless the remote only probes).
    Inbound,
    /// Our connection attempt keyed by the expected PKI-ID.
    Connect { key: PkiId },
    /// A `handshake()` operation.
    HandshakeOp(OpId),
    /// A `handshake()` operation that authenticated the remote and waits for the remote's
    /// verdict on us: the end of the stream (OK: accepted; an error status: refused).
    Verdict { op: OpId, info: Arc<ConnectionInfo> },
    /// Its owner is gone (an aborted operation): whatever happens to it is reported to
    /// no one, and an authentication only closes it.
    Detached,
}

/// An authenticated, registered stream.
#[derive(Debug)]
pub(super) struct Conn {
    pub(super) info: Arc<ConnectionInfo>,
    /// The losing stream of a crossing dial: carries no new sends.
    pub(super) secondary: bool,
    /// When we close this stream: our own losing stream of a crossing dial, or a retired
    /// one (see `store.rs`, "Retiring a connection"); put off while reading is paused.
    pub(super) grace: Option<Instant>,
    /// Why it closes when `grace` comes (`None`: the crossing loser's grace).
    pub(super) closing: Option<CloseReason>,
    pub(super) queue: SendQueue,
    /// Subscriptions that asked to pause reading this stream.
    pub(super) blocked_by: u32,
    /// Reading resumed since the last grace look (for a stream not retired yet: ever,
    /// until `retire` takes it): what the driver held may not be in yet.
    pub(super) resumed: bool,
    /// For a stream we dialled: until when an error ending it is the remote refusing us
    /// (see `Comm::close_stream`). A remote writes its `ConnEstablish` before it judges
    /// ours, so our side of the handshake succeeds either way.
    pub(super) refusable_until: Option<Instant>,
}

impl Conn {
    /// Whether a subscription paused reading it: the driver may then hold envelopes the
    /// remote was told were written, which a close would throw away.
    pub(super) fn paused(&self) -> bool {
        self.blocked_by > 0
    }

    pub(super) fn new(info: Arc<ConnectionInfo>) -> Self {
        Conn {
            info,
            secondary: false,
            grace: None,
            closing: None,
            queue: SendQueue::default(),
            blocked_by: 0,
            resumed: false,
            refusable_until: None,
        }
    }
}

#[derive(Debug)]
pub(super) enum Phase {
    Handshaking { deadline: Instant, purpose: Purpose },
    Established(Box<Conn>),
}

#[derive(Debug)]
pub(super) struct Stream {
    pub(super) inbound: bool,
    /// The client channel carrying it (outbound streams only).
    pub(super) dial: Option<DialId>,
    pub(super) remote_addr: String,
    pub(super) remote_cert_hash: Option<CertHash>,
    pub(super) phase: Phase,
}

impl Stream {
    pub(super) fn is_handshaking(&self) -> bool {
        matches!(self.phase, Phase::Handshaking { .. })
    }

    pub(super) fn conn(&self) -> Option<&Conn> {
        match &self.phase {
            Phase::Established(c) => Some(c),
            Phase::Handshaking { .. } => None,
        }
    }

    pub(super) fn conn_mut(&mut self) -> Option<&mut Conn> {
        match &mut self.phase {
            Phase::Established(c) => Some(c),
            Phase::Handshaking { .. } => None,
        }
    }
}
