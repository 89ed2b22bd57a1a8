//! What comes out of the core: network [`Action`]s for the driver, [`Event`]s for the
//! application, and the [`Output`] that orders them. Fabric hands these out through Go
//! channels (`PresumedDead()`, `IdentitySwitch()` in `gossip/comm/comm_impl.go`) and
//! goroutines that write to streams; here they wait in bounded queues until polled.

use crate::error::{AckError, CloseReason, HandshakeError, ProbeError};
use crate::ids::{DialId, OpId, PkiId, StreamId, SubscriptionId};
use crate::message::ConnectionInfo;
use crate::time::Instant;
use bytes::Bytes;
use smallvec::SmallVec;
use std::collections::VecDeque;
use std::sync::Arc;

use crate::comm::Comm;

/// One step of [`Comm::poll_output`]: the driver carries out actions, hands events to the
/// application, and a `Timeout` ends the drain.
#[derive(Clone, Debug)]
#[must_use]
pub enum Output {
    /// Network work; per stream, carry them out in the order given.
    Action(Action),
    /// Something for the application.
    Event(Event),
    /// Nothing else is pending. Call [`Comm::handle_timeout`] at this instant (`None`: no
    /// deadline; wait for the next input). Always the last output of a drain.
    Timeout(Option<Instant>),
}
/// Something the driver must do on the network, from [`Comm::poll_output`]; per stream,
/// carry them out in the order given.
#[derive(Clone, Debug, PartialEq)]
#[must_use]
pub enum Action {
    /// Make a connection attempt to `endpoint` for the client channel `dial`; answer with
    /// [`Comm::handle_dial_result`].
    ///
    /// The same `dial` may come again: after the driver answered an attempt with an error,
    /// the core waits out a back-off ([`Config::dial_backoff`](crate::Config::dial_backoff),
    /// grpc-go's reconnect within Fabric's dial timeout) and asks for another attempt with a
    /// new `Dial` naming the same handle. Carry it out as a fresh attempt (keep nothing of
    /// the failed one). The core asks again only after an error was reported, so at most
    /// one attempt per handle is under way, and the handle is dead only after
    /// [`Action::CloseDial`]: a driver that keys its dials by handle may simply replace
    /// the entry.
    Dial {
        /// Handle for the channel.
        dial: DialId,
        /// `host:port` to dial.
        endpoint: String,
    },
    /// Call the unary `Ping` on the channel; answer with [`Comm::handle_ping_result`].
    Ping {
        /// The channel.
        dial: DialId,
    },
    /// Open a `GossipStream` on the channel. `Write`s for `stream` follow at once; queue them
    /// until the stream is open.
    OpenStream {
        /// The channel.
        dial: DialId,
        /// Handle of the new stream.
        stream: StreamId,
    },
    /// Write one encoded Envelope to the stream. `kind` says whether it uses write credit:
    /// confirm a [`WriteKind::Message`] with [`Comm::handle_sent`] once written; never count
    /// the [`WriteKind::Handshake`].
    Write {
        /// The stream.
        stream: StreamId,
        /// The Envelope, encoded (shared by every stream the message goes to).
        envelope: Bytes,
        /// The handshake's `ConnEstablish`, or a message inside the write window.
        kind: WriteKind,
    },
    /// Stop reading the stream until `ResumeRead` (a subscription is full). Envelopes already
    /// read may still be handed in.
    PauseRead {
        /// The stream.
        stream: StreamId,
    },
    /// Reading the stream may continue. Hand in what was held while it was paused before
    /// any other input, within the drain that took this action: a retired stream is closed
    /// a look or two (`crossing_grace`) after its resume, with whatever its driver still
    /// holds.
    ResumeRead {
        /// The stream.
        stream: StreamId,
    },
    /// Close the stream. For an inbound stream, `error` is the status to end the RPC with
    /// (`None`: end it cleanly). The handle is dead from now on.
    CloseStream {
        /// The stream.
        stream: StreamId,
        /// Error status for the remote, if any.
        error: Option<String>,
    },
    /// Close the client channel, ending an attempt still under way (the dial's time is up,
    /// or its purpose went away). The handle is dead from now on.
    CloseDial {
        /// The channel.
        dial: DialId,
    },
}

/// What a [`Action::Write`] is to flow control, so a driver need not know that a stream's
/// first write is special.
///
/// A stream carries exactly one `Handshake` write, first, and then `Message` writes: at
/// most [`Config::write_window`](crate::Config::write_window) of them unconfirmed at a time
/// (`comm.config().write_window`). A driver sizing its per-stream queue needs room for
/// that window plus the handshake; a driver returning credit in batches counts only the
/// `Message` writes it has put on the wire, because [`Comm::handle_sent`] refills the
/// window by the count it is given (a confirmation that arrives while the handshake runs
/// is ignored, but one counted after it would open the window too early).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WriteKind {
    /// Our signed `ConnEstablish`, the stream's first write: outside the write window, not
    /// confirmed.
    Handshake,
    /// A gossip message: inside the write window, confirmed with [`Comm::handle_sent`].
    Message,
}

/// A peer presumed dead: who, and why. Its `Display` is the PKI-ID alone, what Fabric's
/// notification carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadPeer {
    /// The PKI-ID; empty when the peer was dialled without one (then `endpoint` names it).
    pub pki_id: PkiId,
    /// The endpoint dialled, or the remote address of the connection.
    pub endpoint: String,
    /// What failed.
    pub cause: DeadCause,
}

impl core::fmt::Display for DeadPeer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.pki_id.fmt(f)
    }
}

/// A peer that answered under a new identity of its organization. Its `Display` is the old
/// PKI-ID alone, what Fabric's notification carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwitchedPeer {
    /// The PKI-ID it was dialled under, which membership and the identity store forget.
    pub old: PkiId,
    /// The PKI-ID it answered with, which the connection now has.
    pub new: PkiId,
    /// The endpoint dialled.
    pub endpoint: String,
}

impl core::fmt::Display for SwitchedPeer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.old.fmt(f)
    }
}

/// Why a peer is presumed dead: the two failures Fabric presumes a peer dead for.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeadCause {
    /// No connection could be had: the dial, the Ping or the handshake failed (including a
    /// remote that refused us, with its status).
    Connect(HandshakeError),
    /// Writing to its connection failed (the driver's reason).
    Write(String),
}

impl core::fmt::Display for DeadCause {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DeadCause::Connect(e) => write!(f, "connecting failed: {e}"),
            DeadCause::Write(e) => write!(f, "write failed: {e}"),
        }
    }
}

/// One peer's outcome in a `send_with_ack` (Fabric's `SendResult`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendResult {
    /// The peer.
    pub peer: PkiId,
    /// `Ok` when it acked without error.
    pub result: Result<(), AckError>,
}

/// Something that happened, for the application, from [`Comm::poll_output`].
///
/// Non-exhaustive: Fabric's comm grows (`IdentitiesRevalidated` came with `SuspectPeers`),
/// and a new kind of event must not break every driver's and application's `match`. End
/// yours with an arm that ignores the rest; the drivers in this repository list every
/// variant before theirs.
#[derive(Clone, Debug)]
#[must_use]
#[non_exhaustive]
pub enum Event {
    /// Sending to this peer failed (no connection could be had, or a write failed); it is
    /// presumed dead (Fabric's `PresumedDead()` stream, which carries only the PKI-ID; here
    /// also the endpoint, which names a peer dialled without a PKI-ID, and the cause).
    PresumedDead(DeadPeer),
    /// A peer dialled under an old PKI-ID answered with a new identity of the same
    /// organization (Fabric's `IdentitySwitch()` stream, which carries only the old PKI-ID;
    /// here also the new one and the endpoint, which an operator needs to tell a renewed
    /// certificate from a stranger at a member's address).
    IdentitySwitch(SwitchedPeer),
    /// The subscription has deliveries to poll with [`Comm::poll_delivery`].
    DeliveryReady(SubscriptionId),
    /// A `probe` finished.
    ProbeDone {
        /// The operation.
        op: OpId,
        /// Its outcome.
        result: Result<(), ProbeError>,
    },
    /// A `handshake` finished; on success, what the remote proved.
    HandshakeDone {
        /// The operation.
        op: OpId,
        /// Its outcome.
        result: Result<Arc<ConnectionInfo>, HandshakeError>,
    },
    /// A `send_with_ack` finished: one result per peer that answered (or failed) in time.
    SendWithAckDone {
        /// The operation.
        op: OpId,
        /// One result for each peer that acked, refused or timed out before the operation
        /// completed, in the order the peers were given: peers still awaited when
        /// `min_ack` acks came are left out, as Fabric leaves them out.
        results: Vec<SendResult>,
    },
    /// A remote probed us (a `ConnEstablish` with `probe: true`, Fabric's `Handshake`): it
    /// authenticated and we ended the stream with OK (informational; Fabric logs "probed
    /// us").
    Probed {
        /// The stream it used (already closed).
        stream: StreamId,
        /// The remote.
        info: Arc<ConnectionInfo>,
    },
    /// A connection was authenticated and registered (informational).
    Connected {
        /// Its handle.
        conn: StreamId,
        /// The remote.
        info: Arc<ConnectionInfo>,
        /// Whether the remote opened it.
        inbound: bool,
    },
    /// A registered connection closed (informational).
    Disconnected {
        /// Its handle (now dead).
        conn: StreamId,
        /// The remote's PKI-ID.
        pki_id: PkiId,
        /// Why.
        reason: CloseReason,
    },
    /// A stream failed its handshake (informational).
    HandshakeFailed {
        /// The stream (now dead).
        stream: StreamId,
        /// The remote address.
        remote: String,
        /// Whether the remote opened it.
        inbound: bool,
        /// Why.
        error: HandshakeError,
    },
    /// [`Comm::revalidate_identities`] finished: what the security provider accepts may
    /// have changed, so a layer holding identities of its own (the membership layer's
    /// members) judges them again. Never dropped.
    IdentitiesRevalidated {
        /// How many of the identities the core held were refused.
        refused: usize,
    },
    /// The identity store let go of a peer's identity the way Fabric's identity mapper
    /// does (its `delete`, which calls `onPurge`): for disuse
    /// ([`CloseReason::IdentityUnused`], the periodic sweep of
    /// [`Config::identity_usage_threshold`](crate::Config::identity_usage_threshold)) or at
    /// its certificate's expiry ([`CloseReason::IdentityExpired`]). Its connections, if
    /// any, were closed with the same reason (`Disconnected` comes before this). Fabric's
    /// `onPurge` also removes the identity from the certstore's pull; this event is how a
    /// layer holding identities of its own (the membership layer's certstore) does the
    /// same. Sent whether or not the peer was connected. Informational: dropped past
    /// [`Config::max_queued_events`](crate::Config::max_queued_events), like
    /// `Disconnected`.
    IdentityPurged {
        /// The peer whose identity went.
        pki_id: PkiId,
        /// Why: `IdentityUnused` or `IdentityExpired`.
        reason: CloseReason,
    },
    /// `stop` completed: every connection is closed and every subscription ended.
    Stopped,
}

/// The core's output queues. Results of operations are never dropped (their number is
/// bounded by `max_operations`); informational events beyond `max_events` are, and
/// PresumedDead has its own bound, as Fabric's buffered channel of 100 does.
#[derive(Debug)]
pub(super) struct Outputs {
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
    /// Peers with an undelivered PresumedDead: one notification each is enough.
    queued_dead: SmallVec<[(PkiId, String); 8]>,
    max_events: usize,
    max_dead: usize,
}

/// What became of a PresumedDead notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DeadNotice {
    /// Queued.
    Queued,
    /// One for the same peer is still undelivered.
    AlreadyQueued,
    /// The PresumedDead buffer is full.
    Dropped,
}

impl Outputs {
    pub(super) fn new(max_events: usize, max_dead: usize) -> Self {
        Outputs {
            actions: VecDeque::new(),
            events: VecDeque::new(),
            queued_dead: SmallVec::new(),
            max_events,
            max_dead,
        }
    }

    pub(super) fn action(&mut self, a: Action) {
        self.actions.push_back(a);
    }

    pub(super) fn write(&mut self, stream: StreamId, envelope: Bytes, kind: WriteKind) {
        self.actions.push_back(Action::Write {
            stream,
            envelope,
            kind,
        });
    }

    #[inline]
    pub(super) fn pop_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// A result or a DeliveryReady: always queued.
    pub(super) fn event(&mut self, e: Event) {
        self.events.push_back(e);
    }

    /// An informational event; `false` if it was dropped because the queue is full.
    pub(super) fn info_event(&mut self, e: Event) -> bool {
        if self.events.len() >= self.max_events {
            return false;
        }
        self.events.push_back(e);
        true
    }

    pub(super) fn presumed_dead(&mut self, dead: DeadPeer) -> DeadNotice {
        let key = (dead.pki_id.clone(), dead.endpoint.clone());
        if self.queued_dead.contains(&key) {
            return DeadNotice::AlreadyQueued;
        }
        if self.queued_dead.len() >= self.max_dead {
            return DeadNotice::Dropped;
        }
        self.queued_dead.push(key);
        self.events.push_back(Event::PresumedDead(dead));
        DeadNotice::Queued
    }

    #[inline]
    pub(super) fn pop_event(&mut self) -> Option<Event> {
        let ev = self.events.pop_front()?;
        if let Event::PresumedDead(p) = &ev
            && let Some(i) = self
                .queued_dead
                .iter()
                .position(|(k, e)| *k == p.pki_id && *e == p.endpoint)
        {
            self.queued_dead.remove(i);
        }
        Some(ev)
    }

    /// At stop: deliveries are discarded, so their notifications go too.
    pub(super) fn forget_deliveries(&mut self) {
        self.events
            .retain(|e| !matches!(e, Event::DeliveryReady(_)));
    }
}

impl<S: crate::security::Security> Comm<S> {
    /// An informational event, or a counted drop when the queue is full.
    pub(super) fn info_event(&mut self, ev: Event) {
        if !self.out.info_event(ev) {
            tracing::debug!(
                target: "fabric_gossip_core::output",
                limit = self.config.max_queued_events,
                "event dropped: the event queue is full"
            );
            self.stats.events_dropped += 1;
        }
    }

    /// Fabric's `PresumedDead` channel: at most one undelivered notice per peer, none
    /// after stop.
    pub(super) fn presumed_dead(&mut self, pki: PkiId, endpoint: String, cause: DeadCause) {
        if self.stopped {
            return;
        }
        let pki_log = pki.clone();
        let dead = DeadPeer {
            pki_id: pki,
            endpoint,
            cause,
        };
        let (endpoint_log, cause_log) = (dead.endpoint.clone(), dead.cause.to_string());
        match self.out.presumed_dead(dead) {
            DeadNotice::Queued => {
                // A connection line, under their budget (3,000 made-up members wrote
                // 16,896 of these in 110 s: an attack, 2026-12-07).
                if let Some(not_logged) = self.conn_log.admit(self.now) {
                    tracing::info!(
                        target: "fabric_gossip_core::store",
                        pki_id = %pki_log,
                        endpoint = %endpoint_log,
                        cause = %cause_log,
                        not_logged,
                        "peer presumed dead"
                    );
                }
                self.stats.presumed_dead += 1;
            }
            DeadNotice::Dropped => {
                tracing::debug!(
                    target: "fabric_gossip_core::output",
                    pki_id = %pki_log,
                    "PresumedDead dropped: its buffer is full"
                );
                self.stats.presumed_dead_dropped += 1;
            }
            DeadNotice::AlreadyQueued => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_presumed_dead_per_peer_until_polled() {
        let mut o = Outputs::new(10, 2);
        let dead = |p: &str| DeadPeer {
            pki_id: PkiId::from(p),
            endpoint: format!("{p}:7051"),
            cause: DeadCause::Write("gone".into()),
        };
        let a = dead("a");
        assert_eq!(o.presumed_dead(a.clone()), DeadNotice::Queued);
        assert_eq!(o.presumed_dead(a.clone()), DeadNotice::AlreadyQueued);
        assert_eq!(o.presumed_dead(dead("b")), DeadNotice::Queued);
        assert_eq!(o.presumed_dead(dead("c")), DeadNotice::Dropped);
        assert!(matches!(o.pop_event(), Some(Event::PresumedDead(p)) if p == a));
        assert_eq!(
            o.presumed_dead(a),
            DeadNotice::Queued,
            "polled, so it may come again"
        );
    }

    #[test]
    fn informational_events_are_bounded_results_are_not() {
        let mut o = Outputs::new(1, 1);
        assert!(o.info_event(Event::Stopped));
        assert!(!o.info_event(Event::Stopped));
        o.event(Event::Stopped);
        assert_eq!(core::iter::from_fn(|| o.pop_event()).count(), 2);
    }
}
