//! The demultiplexer: received messages to subscriptions (`gossip/comm/demux.go`,
//! `ChannelDeMultiplexer`; Fabric's `Accept` subscribes with a `MessageAcceptor`).
//!
//! Fabric gives each subscription a channel and blocks the stream's reader when one is
//! full. Here each subscription has a queue of `subscription_buffer` deliveries; when it
//! fills, the streams feeding it are paused (`Action::PauseRead`) and resumed once the
//! consumer takes enough out (`Action::ResumeRead`), so the back-pressure reaches the
//! sender through the transport's flow control. This module is the only place that
//! pauses or resumes reading.

use super::Comm;
use super::output::{Action, Event};
use super::stream::Phase;
use crate::error::{CloseReason, Error};
use crate::ids::{Slab, StreamId, SubscriptionId};
use crate::message::ReceivedMessage;
use crate::security::Security;
use bytes::Bytes;
use fabric_gossip_proto::gossip::{Envelope, GossipMessage};
use prost::Message;
use smallvec::SmallVec;
use std::collections::VecDeque;

/// A subscription's acceptor: Fabric's `MessageAcceptor`.
pub type Acceptor = Box<dyn Fn(&ReceivedMessage) -> bool + Send>;

struct Subscription {
    acceptor: Acceptor,
    /// Boxed: a delivery stays in the allocation it was decoded into until the application
    /// takes it (see [`Comm::on_established_envelope`]).
    queue: VecDeque<Box<ReceivedMessage>>,
    /// A DeliveryReady was emitted and the queue has not been emptied since.
    notified: bool,
    /// Streams this subscription paused.
    blocked: SmallVec<[StreamId; 4]>,
}

/// What queueing one delivery did.
#[derive(Debug, Default, PartialEq, Eq)]
struct Delivered {
    /// Queued (else dropped: the queue was full past its slack).
    queued: bool,
    /// The subscription needs a DeliveryReady.
    notify: bool,
    /// The subscription now asks to pause the stream.
    pause: bool,
}

/// Streams a subscription stopped holding paused.
type Released = SmallVec<[StreamId; 4]>;

/// The subscriptions, in slot order (acceptors run in that order: deterministic).
#[derive(Default)]
pub(super) struct Demux {
    subs: Slab<SubscriptionId, Subscription>,
    /// Emptied delivery allocations, reused for the next messages received (boxed: the
    /// allocations themselves are what is kept, each to become a delivery again).
    #[allow(clippy::vec_box)]
    spare: Vec<Box<ReceivedMessage>>,
}

impl core::fmt::Debug for Demux {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Demux")
            .field("subscriptions", &self.subs.len())
            .finish()
    }
}

impl Demux {
    fn subscribe(&mut self, acceptor: Acceptor) -> SubscriptionId {
        self.subs.insert(Subscription {
            acceptor,
            queue: VecDeque::new(),
            notified: false,
            blocked: SmallVec::new(),
        })
    }

    pub(super) fn len(&self) -> usize {
        self.subs.len()
    }

    pub(super) fn queue_len(&self, sub: SubscriptionId) -> usize {
        self.subs.get(sub).map_or(0, |s| s.queue.len())
    }

    /// The subscriptions whose acceptor takes the message; each acceptor runs once.
    fn route(&self, msg: &ReceivedMessage) -> SmallVec<[SubscriptionId; 4]> {
        // A loop rather than `collect`: `SmallVec`'s `extend` cost about 70 instructions
        // per message for the one subscription of a lossless one-way run.
        let mut targets = SmallVec::new();
        for (id, s) in self.subs.iter() {
            if (s.acceptor)(msg) {
                targets.push(id);
            }
        }
        targets
    }

    /// Queues one delivery from `stream`: `cap` deliveries pause the stream, `hard_cap`
    /// drop.
    #[inline]
    fn deliver(
        &mut self,
        id: SubscriptionId,
        msg: Box<ReceivedMessage>,
        stream: StreamId,
        cap: usize,
        hard_cap: usize,
    ) -> Delivered {
        let mut d = Delivered::default();
        let Some(sub) = self.subs.get_mut(id) else {
            return d;
        };
        if sub.queue.len() >= hard_cap {
            // Dropped; a stream first heard from now must still be paused, or its driver
            // reads on and every message it carries is dropped while the queue is full.
            if !sub.blocked.contains(&stream) {
                sub.blocked.push(stream);
                d.pause = true;
            }
            return d;
        }
        d.queued = true;
        sub.queue.push_back(msg);
        if !sub.notified {
            sub.notified = true;
            d.notify = true;
        }
        if sub.queue.len() >= cap && !sub.blocked.contains(&stream) {
            sub.blocked.push(stream);
            d.pause = true;
        }
        d
    }

    /// Takes the next delivery (`None`: there is none, or the subscription is unknown).
    /// Once its queue is below `cap`, the streams the subscription held paused go to
    /// `released`.
    #[inline]
    fn take(
        &mut self,
        sub: SubscriptionId,
        cap: usize,
        released: &mut Released,
    ) -> Option<Box<ReceivedMessage>> {
        let s = self.subs.get_mut(sub)?;
        let msg = s.queue.pop_front();
        if s.queue.is_empty() {
            s.notified = false;
        }
        if s.queue.len() < cap && !s.blocked.is_empty() {
            core::mem::swap(released, &mut s.blocked);
        }
        msg
    }

    /// Ends a subscription: its undelivered count and the streams it held paused.
    fn remove(&mut self, sub: SubscriptionId) -> Option<(usize, SmallVec<[StreamId; 4]>)> {
        self.subs.remove(sub).map(|s| (s.queue.len(), s.blocked))
    }

    /// A closed stream is held paused by no subscription any more (else a subscription
    /// that stays full would keep the handle of every stream that ever fed it).
    pub(super) fn forget_stream(&mut self, stream: StreamId) {
        for (_, s) in self.subs.iter_mut() {
            s.blocked.retain(|b| *b != stream);
        }
    }

    fn ids(&self) -> Vec<SubscriptionId> {
        self.subs.iter().map(|(id, _)| id).collect()
    }
}

/// A received message that goes nowhere, and why.
fn dropped(conn: StreamId, cause: &'static str) {
    tracing::debug!(target: "fabric_gossip_core::demux", %conn, cause, "message dropped");
}

impl<S: Security> Comm<S> {
    /// Fabric's `Accept`.
    pub(super) fn add_subscription(&mut self, acceptor: Acceptor) -> Result<SubscriptionId, Error> {
        if self.stopped {
            return Err(Error::Stopped);
        }
        if self.demux.len() >= self.config.max_subscriptions {
            return Err(Error::LimitReached("subscriptions"));
        }
        Ok(self.demux.subscribe(acceptor))
    }

    /// Ends a subscription, counting the deliveries it discards; streams it paused may
    /// resume.
    pub(super) fn remove_subscription(&mut self, sub: SubscriptionId) -> Result<(), Error> {
        let (undelivered, released) = self.demux.remove(sub).ok_or(Error::UnknownHandle)?;
        self.stats.dropped_on_unsubscribe += undelivered as u64;
        self.unblock(released);
        Ok(())
    }

    /// Gives back the allocation of a delivery the application is done with
    /// ([`Comm::poll_delivery_boxed`]), for the next message received: otherwise every
    /// message costs a `malloc` where it is read and a `free` where the application drops
    /// it, often on another thread and in batches that glibc's per-thread cache does not
    /// hold (together about 9 % of the user-space instructions of a lossless one-way run
    /// on the tonic driver). The core keeps as many as one subscription's queue may hold
    /// ([`Comm::spare_deliveries`]): a consumer that fell a full queue behind and caught up
    /// costs no allocation for the next queue. The rest are freed.
    ///
    /// What the message refers to (the received buffer, shared with the messages read
    /// with it) is dropped only when the allocation is reused, on the thread that decodes
    /// into it: empty it first ([`ReceivedMessage::clear`]) to release it now, as the tonic
    /// driver does for everything but a small DataMessage (what else a message holds
    /// decoded may be far larger than its Envelope, and an allocation may wait long to be
    /// reused).
    pub fn recycle_delivery(&mut self, msg: Box<ReceivedMessage>) {
        if self.demux.spare.len() < self.spare_deliveries() {
            self.demux.spare.push(msg);
        }
    }

    /// How many deliveries [`Comm::recycle_delivery`] keeps: as many as one
    /// subscription's queue may hold, `subscription_buffer + recv_buffer_size` (30 by
    /// default; 376 bytes each).
    pub fn spare_deliveries(&self) -> usize {
        self.config.subscription_buffer + self.config.recv_buffer_size
    }

    /// A decoded message that goes to no subscription: its allocation is kept for the
    /// next, emptied now.
    fn spare(&mut self, mut msg: Box<ReceivedMessage>) {
        msg.clear();
        self.recycle_delivery(msg);
    }

    /// Takes the next delivery of a subscription (`None` for an unknown one).
    #[inline]
    pub(super) fn take_delivery(&mut self, sub: SubscriptionId) -> Option<Box<ReceivedMessage>> {
        let mut released = Released::new();
        let msg = self
            .demux
            .take(sub, self.config.subscription_buffer, &mut released);
        if !released.is_empty() {
            self.unblock(released);
        }
        msg
    }

    /// At stop: every subscription ends; returns the deliveries discarded.
    pub(super) fn end_subscriptions(&mut self) -> u64 {
        let mut dropped = 0;
        for sub in self.demux.ids() {
            if let Some((n, _)) = self.demux.remove(sub) {
                dropped += n as u64;
            }
        }
        dropped
    }

    /// Streams a subscription stopped holding: each resumes once no subscription holds it.
    fn unblock(&mut self, streams: SmallVec<[StreamId; 4]>) {
        for stream in streams {
            if let Some(c) = self.streams.get_mut(stream).and_then(|s| s.conn_mut()) {
                c.blocked_by = c.blocked_by.saturating_sub(1);
                if c.blocked_by == 0 {
                    self.out.action(Action::ResumeRead { stream });
                    // A stream waiting to be closed (retired, or our crossing loser)
                    // is closed no sooner than the grace look after next: the driver hands
                    // in what it read ahead only after this ResumeRead, and a look in
                    // between would close the stream with that backlog unread. So is a
                    // stream retired before its next grace look (`retire`): it may be
                    // retired before the driver took the lock again.
                    c.resumed = true;
                }
            }
        }
    }

    /// A subscription holds `stream`: the first one to do so pauses it.
    fn block(&mut self, stream: StreamId) {
        if let Some(c) = self.streams.get_mut(stream).and_then(|s| s.conn_mut()) {
            c.blocked_by += 1;
            if c.blocked_by == 1 {
                tracing::debug!(target: "fabric_gossip_core::demux", stream = %stream, "reading paused");
                self.stats.read_pauses += 1;
                self.out.action(Action::PauseRead { stream });
            }
        }
    }

    /// An Envelope on an established connection (Fabric's `conn.go`,
    /// `connection.readFromStream`, then the handler `comm_impl.go` installs in
    /// `createConnection`: `interceptAcks`, then `msgPublisher.DeMultiplex`): decoded, acks taken by their SendWithAck, the rest
    /// handed to every subscription that accepts it.
    ///
    /// The message is decoded in place into the one allocation its delivery keeps until the
    /// application takes it: a `ReceivedMessage` is hundreds of bytes, and moving it by
    /// value from decoder to queue to driver cost about 8 % of the CPU of a one-way run.
    pub(super) fn on_established_envelope(&mut self, stream: StreamId, bytes: Bytes) {
        self.stats.received += 1;
        // Not handshaking: established (the caller looked).
        let Some(Phase::Established(c)) = self.streams.get(stream).map(|s| &s.phase) else {
            return;
        };
        let fresh = ReceivedMessage {
            message: GossipMessage::default(),
            envelope: Envelope::default(),
            envelope_bytes: bytes,
            conn: stream,
            info: c.info.clone(),
        };
        // Overwritten whole rather than filled in place: filling it in place (emptying it
        // only if the application had not, keeping the sender's `ConnectionInfo` when it
        // is the same) ran 1.8 % fewer instructions but cost 3-5 % more CPU per message on
        // cores sharing no cache (`bench_report --only ratio`, 2026-12-03).
        let mut received = match self.demux.spare.pop() {
            Some(mut spare) => {
                *spare = fresh;
                spare
            }
            None => Box::new(fresh),
        };
        let r = &mut *received;
        let decoded = r
            .envelope
            .merge(Slices::new(&r.envelope_bytes))
            .map_err(|e| e.to_string())
            .and_then(|()| within_decode_bound(&r.envelope.payload))
            .and_then(|()| {
                r.message
                    .merge(Slices::new(&r.envelope.payload))
                    .map_err(|e| e.to_string())
            });
        match decoded {
            Ok(()) => {}
            Err(e) => {
                // A warning, as Fabric's `readFromStream` warns "Got error, aborting" when
                // a message does not decode; under the connection lines' budget, since
                // each closes a connection an authenticated peer may open again.
                if let Some(not_logged) = self.conn_log.admit(self.now) {
                    tracing::warn!(
                        target: "fabric_gossip_core::demux",
                        conn = %stream,
                        pki_id = %r.info.id,
                        endpoint = %r.info.endpoint,
                        error = %e,
                        not_logged,
                        "malformed envelope: closing the connection"
                    );
                }
                self.stats.malformed += 1;
                self.close_stream(stream, CloseReason::Malformed(e));
                self.spare(received);
                return;
            }
        };
        if received.message.content.is_none() {
            dropped(stream, "no content");
            self.stats.empty_messages += 1;
            self.spare(received);
            return;
        }
        if self.intercept_ack(&received.message, &received.info.id) {
            self.spare(received);
            return;
        }
        self.route_received(stream, received);
    }

    fn route_received(&mut self, stream: StreamId, received: Box<ReceivedMessage>) {
        let targets = self.demux.route(&received);
        let Some((&last, others)) = targets.split_last() else {
            dropped(stream, "no subscription accepts it");
            self.stats.unrouted += 1;
            self.spare(received);
            return;
        };
        // Every target but the last gets a copy; the last takes the message itself.
        for &id in others {
            self.deliver_to(id, received.clone(), stream);
        }
        self.deliver_to(last, received, stream);
    }

    /// Queues one delivery on subscription `id`, or counts it dropped; notifies and pauses
    /// as the subscription asks.
    #[inline]
    fn deliver_to(&mut self, id: SubscriptionId, msg: Box<ReceivedMessage>, stream: StreamId) {
        let cap = self.config.subscription_buffer;
        let hard_cap = cap + self.config.recv_buffer_size;
        let d = self.demux.deliver(id, msg, stream, cap, hard_cap);
        if !d.queued {
            tracing::debug!(
                target: "fabric_gossip_core::demux",
                conn = %stream,
                subscription = %id,
                cause = "subscription queue full past its slack",
                "message dropped"
            );
            self.stats.dropped_subscription_overflow += 1;
            if d.pause {
                self.block(stream);
            }
            return;
        }
        if d.notify {
            self.out.event(Event::DeliveryReady(id));
        }
        if d.pause {
            self.block(stream);
        }
    }
}

/// A received buffer read front to back by the decoder, which takes each `bytes` field as
/// a slice of it. Decoding from a clone of the `Bytes` instead costs a reference-count
/// increment and decrement per decode, on a count the application's thread decrements
/// too when it drops its deliveries: the count's cache line moves between the two cores.
struct Slices<'a> {
    whole: &'a Bytes,
    /// What is left to read: the end of `whole`.
    rest: &'a [u8],
}

impl<'a> Slices<'a> {
    fn new(whole: &'a Bytes) -> Self {
        Slices { whole, rest: whole }
    }
}

impl bytes::Buf for Slices<'_> {
    #[inline]
    fn remaining(&self) -> usize {
        self.rest.len()
    }

    #[inline]
    fn chunk(&self) -> &[u8] {
        self.rest
    }

    #[inline]
    fn advance(&mut self, cnt: usize) {
        self.rest = &self.rest[cnt..];
    }

    #[inline]
    fn copy_to_bytes(&mut self, len: usize) -> Bytes {
        let at = self.whole.len() - self.rest.len();
        let field = self.whole.slice(at..at + len);
        self.rest = &self.rest[len..];
        field
    }
}

/// Messages this large or larger are checked before decoding for what decoding would
/// allocate; a smaller one cannot cost more than a few MiB however it is made.
const DECODE_CHECK_FROM: usize = 64 * 1024;

/// `Err` when decoding `payload` (a GossipMessage) would allocate more than 16 times its
/// size plus 1 MiB ([`fabric_gossip_proto::gossip_message_decode_bound`]). Beyond Fabric,
/// whose decoder allocates whatever the message asks: empty elements of repeated fields
/// cost about 140 times their wire size decoded, and an authenticated peer took a node to
/// 2.36 GB with a 20 MB MembershipResponse of empty alive Envelopes. Real messages cost
/// about their size or less (a `bytes` field is a slice of the received buffer); digests of
/// short sequence numbers, the dearest real shape, about 11 times.
fn within_decode_bound(payload: &[u8]) -> Result<(), String> {
    if payload.len() < DECODE_CHECK_FROM {
        return Ok(());
    }
    let limit = 16 * payload.len() as u64 + (1 << 20);
    match fabric_gossip_proto::gossip_message_decode_bound(payload) {
        Some(cost) if cost > limit => Err(format!(
            "decoding {} bytes would allocate about {cost} bytes, over the limit of {limit}",
            payload.len()
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::PkiId;
    use crate::message::{ConnectionInfo, SignedMessage};
    use std::sync::Arc;

    fn msg(stream: StreamId, seq: u64) -> Box<ReceivedMessage> {
        let m = GossipMessage {
            nonce: seq,
            content: Some(fabric_gossip_proto::gossip::gossip_message::Content::Empty(
                Default::default(),
            )),
            ..Default::default()
        };
        let signed = SignedMessage::noop(m);
        Box::new(ReceivedMessage {
            message: signed.message().clone(),
            envelope: Envelope::decode(signed.envelope_bytes().clone()).unwrap(),
            envelope_bytes: signed.envelope_bytes().clone(),
            conn: stream,
            info: Arc::new(ConnectionInfo {
                id: PkiId::from("p"),
                identity: Bytes::new(),
                endpoint: String::new(),
                signed_data: Bytes::new(),
                signature: Bytes::new(),
            }),
        })
    }

    /// A delivery given back is decoded into again, whole: nothing of the message it held
    /// survives, even when it was given back without being emptied.
    #[cfg(feature = "testing")]
    #[test]
    fn a_recycled_delivery_is_reused_for_the_next_message() {
        use crate::testing::{Net, data_msg};
        let mut net = Net::connected_pair(|_| crate::Config::default(), b"first");
        net.nodes[1].slow_reader = true;
        let sub = net.nodes[1].subs[0];
        net.send(0, 1, b"a second message, longer than the third");
        net.settle();
        let second = net.nodes[1].comm.poll_delivery_boxed(sub).unwrap();
        assert_eq!(
            second.message,
            data_msg(b"a second message, longer than the third")
        );
        // Gives `boxed` back, sends `data`, and returns its delivery: in the same box.
        let mut reuse = |boxed: Box<ReceivedMessage>, data: &[u8]| {
            let at: *const ReceivedMessage = &*boxed;
            let spare = net.nodes[1].comm.demux.spare.len();
            net.nodes[1].comm.recycle_delivery(boxed);
            // Kept, then taken: the address alone cannot tell a kept box from a freed one
            // the allocator hands out again.
            assert_eq!(net.nodes[1].comm.demux.spare.len(), spare + 1, "not kept");
            net.send(0, 1, data);
            net.settle();
            assert_eq!(net.nodes[1].comm.demux.spare.len(), spare, "not taken");
            let next = net.nodes[1].comm.poll_delivery_boxed(sub).unwrap();
            assert!(std::ptr::eq(&*next, at), "the allocation was not reused");
            assert_eq!(next.message, data_msg(data));
            next
        };
        // A box given back as it is still holds what it refers to, until it is reused.
        let held = second.envelope_bytes.clone();
        assert!(!held.is_unique());
        let third = reuse(second, b"third");
        assert!(
            held.is_unique(),
            "the reused box still refers to the old buffer"
        );
        assert_eq!(
            third.envelope,
            Envelope::decode(third.envelope_bytes.clone()).unwrap()
        );
        // One that another connection delivered: the next message names its own
        // connection and sender.
        let foreign = msg(StreamId::from_parts(77, 3), 9);
        assert_ne!(foreign.info, third.info);
        let fourth = reuse(foreign, b"fourth");
        assert_eq!(fourth.conn, third.conn);
        assert!(Arc::ptr_eq(&fourth.info, &third.info));
    }

    /// Emptying a delivery lets go of the received buffer at once, not when its box is
    /// next decoded into.
    #[cfg(feature = "testing")]
    #[test]
    fn an_emptied_delivery_holds_nothing_of_the_received_buffer() {
        use crate::testing::Net;
        let mut net = Net::connected_pair(|_| crate::Config::default(), b"first");
        net.nodes[1].slow_reader = true;
        let sub = net.nodes[1].subs[0];
        net.send(0, 1, b"second");
        net.settle();
        let mut got = net.nodes[1].comm.poll_delivery_boxed(sub).unwrap();
        let held = got.envelope_bytes.clone();
        assert!(!held.is_unique());
        got.clear();
        assert!(held.is_unique());
        assert_eq!((got.message, got.envelope), Default::default());
    }

    #[test]
    fn acceptors_pick_subscriptions_in_slot_order() {
        let mut d = Demux::default();
        let even = d.subscribe(Box::new(|m| m.message.nonce % 2 == 0));
        let all = d.subscribe(Box::new(|_| true));
        let s = StreamId::from_parts(0, 0);
        assert_eq!(d.route(&msg(s, 2)).to_vec(), vec![even, all]);
        assert_eq!(d.route(&msg(s, 3)).to_vec(), vec![all]);
    }

    #[test]
    fn a_full_queue_pauses_once_then_drops_past_its_slack() {
        let mut d = Demux::default();
        let sub = d.subscribe(Box::new(|_| true));
        let s = StreamId::from_parts(0, 0);
        let first = d.deliver(sub, msg(s, 0), s, 2, 3);
        assert_eq!(
            first,
            Delivered {
                queued: true,
                notify: true,
                pause: false
            }
        );
        let second = d.deliver(sub, msg(s, 1), s, 2, 3);
        assert_eq!(
            second,
            Delivered {
                queued: true,
                notify: false,
                pause: true
            }
        );
        let third = d.deliver(sub, msg(s, 2), s, 2, 3);
        assert_eq!(
            third,
            Delivered {
                queued: true,
                notify: false,
                pause: false
            }
        );
        assert!(!d.deliver(sub, msg(s, 3), s, 2, 3).queued);
        // Taking one leaves 2 (not below cap): still paused; the next releases the stream.
        let mut released = SmallVec::new();
        let m = d.take(sub, 2, &mut released);
        assert_eq!(m.map(|m| m.message.nonce), Some(0));
        assert!(released.is_empty());
        assert!(d.take(sub, 2, &mut released).is_some());
        assert_eq!(released.to_vec(), vec![s]);
    }

    #[test]
    fn an_emptied_queue_notifies_again() {
        let mut d = Demux::default();
        let sub = d.subscribe(Box::new(|_| true));
        let s = StreamId::from_parts(0, 0);
        assert!(d.deliver(sub, msg(s, 0), s, 5, 5).notify);
        let mut released = SmallVec::new();
        assert!(d.take(sub, 5, &mut released).is_some());
        assert!(d.deliver(sub, msg(s, 1), s, 5, 5).notify);
        assert!(
            d.take(SubscriptionId::from_parts(9, 0), 5, &mut released)
                .is_none()
        );
        assert!(released.is_empty());
    }

    /// Deliveries given back are kept for reuse up to `spare_deliveries` (one
    /// subscription's queue, `subscription_buffer + recv_buffer_size`); the rest are freed.
    /// (`a_recycled_delivery_is_reused_for_the_next_message` cannot tell a kept box from
    /// a freed one that the allocator hands out again at the same address.)
    #[test]
    fn recycled_deliveries_are_kept_up_to_spare_deliveries() {
        let cfg = crate::Config::default();
        let expected = cfg.subscription_buffer + cfg.recv_buffer_size;
        let now = crate::Instant::from_unix_secs(1);
        let mut c = Comm::new(cfg, crate::TestOnlyHmacSecurity::new("a"), now).unwrap();
        assert_eq!(c.spare_deliveries(), expected);
        let s = StreamId::from_parts(0, 0);
        for i in 0..expected + 3 {
            c.recycle_delivery(msg(s, i as u64));
            assert_eq!(c.demux.spare.len(), (i + 1).min(expected));
        }
    }
}
