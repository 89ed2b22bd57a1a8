//! Fabric's `Comm` interface (`gossip/comm/comm.go`): the calls an application or a layer
//! makes. Each returns at once; results that take time come as events.

use super::send::Mode;
use super::{Acceptor, Comm, RemotePeer, SendOutcome};
use crate::error::{CloseReason, Error, HandshakeError};
use crate::ids::{DialId, OpId, PkiId, StreamId, SubscriptionId};
use crate::message::SignedMessage;
use crate::security::Security;
use crate::time::Instant;
use bytes::Bytes;
use core::borrow::Borrow;
use core::time::Duration;
use fabric_gossip_proto::gossip::{Acknowledgement, GossipMessage, gossip_message};

impl<S: Security> Comm<S> {
    /// Fabric's `Send`: to each peer, over its connection (opening one if needed), without
    /// waiting: a full send buffer drops the message and counts it. Messages to one peer
    /// leave in the order they were sent. Failing to connect presumes the peer dead.
    ///
    /// A peer that is this node (its own PKI-ID, or an endpoint that reaches it) is dialled
    /// like any other, and the handshake refuses the connection at both its ends
    /// (`HandshakeError::OwnPkiId`): the message is dropped (`dropped_no_connection`) and
    /// `PresumedDead` names this node. Layers leave themselves out, as the membership layer
    /// does (as Fabric's discovery skips "connecting to myself").
    pub fn send(
        &mut self,
        now: Instant,
        msg: &SignedMessage,
        peers: &[RemotePeer],
    ) -> Result<(), Error> {
        self.send_each(now, msg, peers)
    }

    /// [`Comm::send`] to borrowed peers: a layer that keeps its peers ready sends to them
    /// without copying their endpoints and PKI-IDs for every message.
    pub fn send_borrowed(
        &mut self,
        now: Instant,
        msg: &SignedMessage,
        peers: &[&RemotePeer],
    ) -> Result<(), Error> {
        self.send_each(now, msg, peers)
    }

    fn send_each<P: Borrow<RemotePeer>>(
        &mut self,
        now: Instant,
        msg: &SignedMessage,
        peers: &[P],
    ) -> Result<(), Error> {
        self.tick(now);
        self.check_outgoing(msg.envelope_bytes(), peers.is_empty())?;
        for peer in peers {
            // A full buffer in Drop mode is a counted drop, not an error.
            let _ = self.enqueue(
                peer.borrow(),
                msg.envelope_bytes().clone(),
                Mode::Drop,
                None,
            );
        }
        Ok(())
    }

    /// Like `send` to one peer, but a full send buffer makes the message wait (up to
    /// `max_waiting_sends` per connection) instead of dropping: for callers that must not
    /// lose messages. `Err(WouldBlock)` means even the wait queue is full: retry once room
    /// may have come, after a `handle_sent`, a `CloseStream` or a `CloseDial` (a failed
    /// attempt drops its queue; the retry starts a new one).
    pub fn send_wait(
        &mut self,
        now: Instant,
        msg: &SignedMessage,
        peer: &RemotePeer,
    ) -> Result<(), Error> {
        self.tick(now);
        self.check_outgoing(msg.envelope_bytes(), false)?;
        self.enqueue(peer, msg.envelope_bytes().clone(), Mode::Wait, None)
            .map(drop)
    }

    /// Fabric's `SendWithAck`: gives `msg` a fresh nonce, noop-signs it, sends it to every
    /// peer (waiting for buffer room), and completes with `Event::SendWithAckDone` as soon
    /// as `min_ack` peers acked or every peer has a result, or at `timeout`.
    ///
    /// `min_ack` is taken as at least 1: 0 waits for one ack, as 1 does. (Fabric's loop,
    /// given 0, returns at the first result if it is a failure and otherwise waits for
    /// every peer; nothing in Fabric passes 0.)
    ///
    /// `peers` are taken once per PKI-ID, so peers of unknown (empty) PKI-ID are one send
    /// (Fabric sends to each). Name peers by PKI-ID: an ack is matched by the PKI-ID its
    /// connection proved, so a peer named without one only ever gets the time-out, in
    /// Fabric too.
    ///
    /// A peer's failure is reported when it is known, not at `timeout`, where Fabric's
    /// only failure besides the remote's own error is "timed out": a peer whose
    /// connection attempt fails gets `AckError::NoConnection` (the handshake or dial error)
    /// at that moment, one whose wait queue is full `AckError::WouldBlock` at once (Fabric
    /// waits for room), and at [`Comm::stop`] every peer still awaited gets
    /// `AckError::Stopped` (Fabric's call goes on to its time-out). An ack counts if it
    /// arrives within `timeout` of the call, as in Fabric, whose subscription to it ends
    /// then (though its "timed out" comes later for a peer it had to dial first).
    pub fn send_with_ack(
        &mut self,
        now: Instant,
        msg: GossipMessage,
        timeout: Duration,
        min_ack: usize,
        peers: &[RemotePeer],
    ) -> Result<OpId, Error> {
        self.admit_op(now)?;
        let has_content = msg.content.is_some();
        self.start_send_with_ack(
            now,
            |nonce| {
                let mut msg = msg;
                msg.nonce = nonce;
                SignedMessage::noop(msg).into_envelope()
            },
            has_content,
            timeout,
            min_ack,
            peers,
        )
    }

    /// [`Comm::send_with_ack`] for a message already encoded, as Fabric's `SendWithAck`
    /// takes a `SignedGossipMessage`: the same Envelope goes out (noop-signed, with a fresh
    /// nonce), but made by replacing the nonce in `msg`'s encoding rather than by encoding
    /// the message again, so a message sent with acks many times is encoded once. `msg`'s
    /// signature and secret envelope are not sent, as with Fabric's `NoopSign`.
    pub fn send_with_ack_signed(
        &mut self,
        now: Instant,
        msg: &SignedMessage,
        timeout: Duration,
        min_ack: usize,
        peers: &[RemotePeer],
    ) -> Result<OpId, Error> {
        self.admit_op(now)?;
        self.start_send_with_ack(
            now,
            |nonce| msg.noop_envelope_with_nonce(nonce),
            msg.message().content.is_some(),
            timeout,
            min_ack,
            peers,
        )
    }

    /// Fabric's `Probe`: dial and Ping, no handshake, nothing registered. The result comes
    /// as `Event::ProbeDone`.
    pub fn probe(&mut self, now: Instant, peer: &RemotePeer) -> Result<OpId, Error> {
        self.admit_op(now)?;
        Ok(self.start_probe(peer))
    }

    /// Fabric's `Handshake`: dial, Ping, open a stream and authenticate the remote with
    /// `probe: true`, within `handshake_timeout`; nothing is registered. The result comes as
    /// `Event::HandshakeDone`. An empty expected PKI-ID accepts whoever answers.
    pub fn handshake(&mut self, now: Instant, peer: &RemotePeer) -> Result<OpId, Error> {
        self.admit_op(now)?;
        Ok(self.start_handshake_op(now, peer))
    }

    /// Fabric's `Accept`: a subscription to every received message (acks excepted) that
    /// `acceptor` accepts, in arrival order.
    pub fn subscribe(&mut self, acceptor: Acceptor) -> Result<SubscriptionId, Error> {
        self.add_subscription(acceptor)
    }

    /// Ends a subscription; its undelivered messages are discarded (counted in
    /// `Stats::dropped_on_unsubscribe`) and any stream paused for it may resume (the
    /// `ResumeRead` comes out of the next [`Comm::poll_output`]).
    pub fn unsubscribe(&mut self, sub: SubscriptionId) -> Result<(), Error> {
        self.remove_subscription(sub)
    }

    /// Fabric's `ReceivedMessage.Respond`: noop-signs `msg` and sends it on the connection
    /// the request came in on, waiting for buffer room.
    pub fn respond(
        &mut self,
        now: Instant,
        conn: StreamId,
        msg: GossipMessage,
    ) -> Result<(), Error> {
        self.respond_in(now, conn, msg, Mode::Wait).map(drop)
    }

    /// An answer that must not wait: noop-signs `msg` and queues it on the connection the
    /// request came in on (`Ok(true)`), or drops it (`Ok(false)`, counted in
    /// `dropped_overflow`) when that connection's send buffer is full, as Fabric's `Send`
    /// does. Fabric answers a membership request with `SendToPeer`, not `Respond`; waiting
    /// instead let a requester that replays requests and never reads make a node queue a
    /// thousand responses.
    pub fn respond_or_drop(
        &mut self,
        now: Instant,
        conn: StreamId,
        msg: GossipMessage,
    ) -> Result<bool, Error> {
        self.respond_in(now, conn, msg, Mode::Drop)
    }

    /// Fabric's `SendToPeer` for an answer: noop-signs `msg` and queues it on `conn`, the
    /// connection the request came in on, if that is still open; else sends it to `peer`
    /// (the requester's PKI-ID and where to reach it) as [`Comm::send`] does: over the
    /// connection to that PKI-ID there is now (the one that replaced `conn` after a
    /// crossing dial, or the requester's new one), else over a connection attempt to
    /// `peer.endpoint`, joining the one in progress or dialling. Never waits: a full send
    /// buffer drops it. Returns where it went (a drop is counted in [`Stats`](crate::Stats)
    /// as `send` counts it). An empty `peer.endpoint` means no dial: without a connection
    /// the answer is dropped (`dropped_no_connection`).
    ///
    /// Fabric answers a membership request with `SendToPeer`, which sends to the
    /// requester's PKI-ID and dials its preferred endpoint when no connection is there;
    /// [`Comm::respond_or_drop`] answers on `conn` alone, so an answer whose connection a
    /// crossing dial had replaced was lost.
    ///
    /// `Err` as [`Comm::respond_or_drop`]: stopped, an oversized message, a `conn` this
    /// core never issued (`UnknownHandle`: a caller's mistake, not a closed connection).
    pub fn respond_to_peer_or_drop(
        &mut self,
        now: Instant,
        conn: StreamId,
        peer: &RemotePeer,
        msg: GossipMessage,
    ) -> Result<SendOutcome, Error> {
        let bytes = self.answer_envelope(now, msg)?;
        match self.enqueue_on(conn, bytes.clone(), Mode::Drop) {
            Ok(true) => Ok(SendOutcome::Queued(conn)),
            Ok(false) => Ok(SendOutcome::Dropped),
            Err(Error::ConnectionClosed) => {
                if peer.endpoint.is_empty() && self.store.primary(&peer.pki_id).is_none() {
                    super::send::dropped(&peer.pki_id, "no connection and no endpoint to dial");
                    self.stats.dropped_no_connection += 1;
                    return Ok(SendOutcome::Dropped);
                }
                self.enqueue(peer, bytes, Mode::Drop, None)
            }
            Err(error) => Err(error),
        }
    }

    /// Noop-signs `msg` and queues it on `conn` in `mode` (see [`Comm::respond_or_drop`]).
    fn respond_in(
        &mut self,
        now: Instant,
        conn: StreamId,
        msg: GossipMessage,
        mode: Mode,
    ) -> Result<bool, Error> {
        let bytes = self.answer_envelope(now, msg)?;
        let res = self.enqueue_on(conn, bytes, mode);
        if matches!(res, Err(Error::ConnectionClosed)) {
            super::send::dropped(&conn, "an answer after its connection closed");
            self.stats.answers_after_close += 1;
        }
        res
    }

    /// An answer's Envelope: `msg` noop-signed (Fabric's `NoopSign`), refused once stopped
    /// or when larger than the node sends.
    fn answer_envelope(&mut self, now: Instant, msg: GossipMessage) -> Result<Bytes, Error> {
        self.tick(now);
        if self.stopped {
            return Err(Error::Stopped);
        }
        let signed = SignedMessage::noop(msg);
        self.check_size(signed.envelope_bytes().len())?;
        Ok(signed.into_envelope())
    }

    /// Fabric's `ReceivedMessage.Ack`: answers the message with nonce `nonce` received on
    /// `conn` with an Acknowledgement carrying `error` (`None` for success).
    pub fn ack(
        &mut self,
        now: Instant,
        conn: StreamId,
        nonce: u64,
        error: Option<&str>,
    ) -> Result<(), Error> {
        self.respond(now, conn, ack_message(nonce, error))
    }

    /// [`Comm::ack`] that never waits: queued (`Ok(true)`) or, when the connection's send
    /// buffer is full, dropped and counted in `dropped_overflow` (`Ok(false)`), as Fabric's
    /// `Send` drops. For an application that must not let one peer that stopped reading
    /// hold up its answers to the others.
    pub fn ack_or_drop(
        &mut self,
        now: Instant,
        conn: StreamId,
        nonce: u64,
        error: Option<&str>,
    ) -> Result<bool, Error> {
        self.respond_in(now, conn, ack_message(nonce, error), Mode::Drop)
    }

    /// Fabric's `CloseConn`: closes the connection(s) registered for `pki_id`. A later send
    /// opens a new one.
    ///
    /// A connection still being made for a send (its dial, its handshake, or a dial
    /// waiting out its back-off before the next attempt) is not one of them: it goes on,
    /// and delivers what it carries if the peer answers, as Fabric's `CloseConn` leaves a
    /// `createConnection` in flight. To give up on a peer altogether, stop sending to it.
    pub fn close_conn(&mut self, now: Instant, pki_id: &PkiId) {
        self.tick(now);
        self.close_peer(pki_id, CloseReason::Local);
    }

    /// Fabric's identity mapper `Put` from outside a handshake: a layer that learned
    /// `pki_id`'s identity (an alive message carrying it, the identity pull) shares it with
    /// comm, as Fabric's membership and comm share one mapper. What comm holds decides an
    /// identity switch: a peer dialled under this PKI-ID that answers with a new one of the
    /// same organization is reported as [`Event::IdentitySwitch`](super::Event::IdentitySwitch)
    /// and kept, where a PKI-ID comm never held is refused as `UnexpectedPeer`.
    ///
    /// Returns `Ok(true)` when the identity is new to comm, `Ok(false)` when comm already
    /// holds one for `pki_id` (kept, unchecked: Fabric keeps the identity it has), and the
    /// refusal a handshake would give otherwise (no PKI-ID or identity, unreadable expiry,
    /// refused by the provider, of another PKI-ID, expired, larger than
    /// `max_identity_size`). An identity with an expiry is forgotten then, and the peer's
    /// connection closed, as one learnt by a handshake.
    ///
    /// **When to call it.** An application running its own membership on the core (no
    /// `fabric-gossip-discovery`) calls it for every identity its membership accepts, as
    /// soon as it accepts it and before it sends to that PKI-ID: without it, a member of
    /// our organization known from membership alone that comes back with a renewed
    /// certificate is refused (`PresumedDead` with `DeadCause::Connect(UnexpectedPeer)`)
    /// where it would have been an identity switch. The membership layer does this itself.
    /// On the tonic driver, `Node::learn_identity` calls it.
    ///
    /// **The errors** are the identity checks of a handshake:
    /// [`NoPkiId`](HandshakeError::NoPkiId), [`NoIdentity`](HandshakeError::NoIdentity),
    /// [`UnclassifiableIdentity`](HandshakeError::UnclassifiableIdentity),
    /// [`InvalidIdentity`](HandshakeError::InvalidIdentity),
    /// [`IdentityMismatch`](HandshakeError::IdentityMismatch),
    /// [`IdentityExpired`](HandshakeError::IdentityExpired) and
    /// [`IdentityTooLarge`](HandshakeError::IdentityTooLarge). None is about the network;
    /// comm keeps nothing of a refused identity. `Ok(false)` comes before any check: an
    /// identity given for a PKI-ID comm holds (its own included) is not looked at.
    ///
    /// **A full store**
    /// ([`Config::identity_store_capacity`](crate::Config::identity_store_capacity))
    /// makes room by evicting the identity stored longest ago that no connection uses
    /// (never the node's own), counted in
    /// [`Stats::identities_evicted`](crate::Stats::identities_evicted): `Ok(true)` may have
    /// pushed another out, which no event reports. The order is by first storing, not by
    /// use: learning an identity comm already holds (`Ok(false)`) does not make it younger,
    /// so a long-known member without a connection is among the first to go. An evicted
    /// identity learnt again is new again (`Ok(true)`). [`Comm::identity_count`] tells how
    /// full the store is.
    pub fn learn_identity(
        &mut self,
        now: Instant,
        pki_id: &PkiId,
        identity: &[u8],
    ) -> Result<bool, HandshakeError> {
        self.tick(now);
        if self.identities.get(pki_id).is_some() {
            return Ok(false);
        }
        if identity.len() > self.config.max_identity_size {
            return Err(HandshakeError::IdentityTooLarge {
                size: identity.len(),
                limit: self.config.max_identity_size,
            });
        }
        // Kept for as long as comm holds it: copied out of whatever message carried it,
        // which may share its buffer with much more.
        let pki = PkiId(Bytes::copy_from_slice(pki_id.as_bytes()));
        let identity = Bytes::copy_from_slice(identity);
        self.put_identity(&pki, &identity, now)?;
        self.stats.identities_shared += 1;
        Ok(true)
    }

    /// Fabric's identity mapper `Put` (checks, then keeps an identity already held), with
    /// the identity's expiry armed: the one way into the identity store, for handshakes
    /// and for [`Comm::learn_identity`].
    pub(super) fn put_identity(
        &mut self,
        pki: &PkiId,
        identity: &Bytes,
        now: Instant,
    ) -> Result<(), HandshakeError> {
        let store = &self.store;
        let put = self
            .identities
            .put(&self.security, pki, identity, now, |p| {
                store.is_registered(p)
            })?;
        self.stats.identities_evicted += u64::from(put.evicted);
        if let Some(at) = put.expires {
            self.arm(at, super::timers::TimerKey::Identity(pki.clone()));
        }
        self.arm_usage_sweep(now);
        Ok(())
    }

    /// Fabric's identity mapper `Get` (which its `Verify` goes through): the identity comm
    /// holds for `pki_id`, marked as used at `now`, so that the disuse purge
    /// ([`Config::identity_usage_threshold`](crate::Config::identity_usage_threshold))
    /// leaves it, and the connection to its peer, alone for another threshold. A layer
    /// calls it whenever it verifies a message of that peer or otherwise relies on its
    /// identity, as Fabric's gossip layer verifies through the mapper it shares with
    /// comm: the membership layer calls it for every alive message it verifies, its
    /// members' identities being its own to hold. Without such calls, a peer that only
    /// talks through the layer is purged a threshold after its last handshake. `None`
    /// (and nothing marked) if comm holds no identity for `pki_id`.
    /// [`Comm::identity_of`] reads without marking.
    pub fn use_identity(&mut self, now: Instant, pki_id: &PkiId) -> Option<&Bytes> {
        self.tick(now);
        if !self.identities.mark_used(pki_id.as_bytes(), now) {
            return None;
        }
        self.identities.get(pki_id).map(|s| &s.identity)
    }

    /// Fabric's `SuspectPeers`, for when what the security provider accepts has changed
    /// (a new revocation list, an organization no longer trusted): asks the provider to
    /// validate every identity the node holds again, forgets those it refuses, and closes
    /// their connections with [`CloseReason::IdentityRefused`], then reports
    /// [`Event::IdentitiesRevalidated`](super::Event::IdentitiesRevalidated) so that layers
    /// judge their own identities again. Returns how many were refused. Identities met later are judged by the provider as it is then, so call
    /// this after changing the provider, not before.
    pub fn revalidate_identities(&mut self, now: Instant) -> usize {
        self.tick(now);
        let refused = self.identities.revalidate(&self.security, now);
        for (pki, error) in &refused {
            self.close_peer(pki, CloseReason::IdentityRefused(error.clone()));
        }
        self.out.event(super::output::Event::IdentitiesRevalidated {
            refused: refused.len(),
        });
        refused.len()
    }

    /// Fabric's `Stop`: idempotent; closes every stream and channel, ends every subscription
    /// (undelivered messages are discarded), fails pending operations, refuses new work.
    pub fn stop(&mut self, now: Instant) {
        self.tick(now);
        if self.stopped {
            return;
        }
        self.stopped = true;
        let streams: Vec<StreamId> = self.streams.iter().map(|(id, _)| id).collect();
        for s in streams {
            let handshaking = self.streams.get(s).is_some_and(|st| st.is_handshaking());
            if handshaking {
                self.fail_handshake(s, HandshakeError::ShuttingDown);
            } else {
                self.close_stream(s, CloseReason::Stopped);
            }
        }
        let dials: Vec<DialId> = self.dials.iter().map(|(id, _)| id).collect();
        for d in dials {
            self.dial_failed(d, crate::error::DialError::Failed("Shutting down".into()));
        }
        let ops: Vec<OpId> = self.ops.iter().map(|(id, _)| id).collect();
        for op in ops {
            self.fail_op(op);
        }
        let undelivered = self.end_subscriptions();
        let unsent = self.store.clear_attempts();
        tracing::info!(
            target: "fabric_gossip_core::output",
            undelivered,
            unsent,
            "stopped: undelivered messages and messages waiting for a connection dropped"
        );
        self.stats.dropped_on_stop += undelivered;
        self.stats.dropped_no_connection += unsent;
        self.acks.clear();
        self.timers.clear();
        self.usage_sweep = None;
        self.out.forget_deliveries();
        self.out.event(super::output::Event::Stopped);
    }
}

/// Fabric's acknowledgement of the message with `nonce`: an empty error is success.
fn ack_message(nonce: u64, error: Option<&str>) -> GossipMessage {
    GossipMessage {
        nonce,
        content: Some(gossip_message::Content::Ack(Acknowledgement {
            error: error.unwrap_or_default().to_owned(),
        })),
        ..Default::default()
    }
}
