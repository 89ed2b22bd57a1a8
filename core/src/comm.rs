//! The comm state machine: one node's connections, handshakes, buffers and operations.

use crate::config::{CertHash, Config};
use crate::error::{AckError, CloseReason, DialError, Error, HandshakeError, ProbeError};
use crate::identity::IdentityStore;
use crate::ids::{DialId, OpId, PkiId, Slab, StreamId, SubscriptionId};
use crate::message::{ConnectionInfo, ReceivedMessage, SignedMessage, verify_envelope};
use crate::security::Security;
use crate::stats::Stats;
use crate::time::Instant;
use bytes::Bytes;
use core::time::Duration;
use fabric_gossip_proto::gossip::{
    Acknowledgement, ConnEstablish, Envelope, GossipMessage, gossip_message,
};
use prost::Message;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use smallvec::SmallVec;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;

type Map<K, V> = hashbrown::HashMap<K, V, foldhash::fast::FixedState>;

/// Informational events (connected, disconnected, handshake failed) beyond this many
/// undrained ones are dropped and counted; results and PresumedDead have their own bounds.
pub const MAX_QUEUED_EVENTS: usize = 65_536;

/// A remote peer as the caller names it (Fabric's `RemotePeer`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RemotePeer {
    /// Where to dial it, `host:port`.
    pub endpoint: String,
    /// The PKI-ID it is expected to prove; empty when unknown.
    pub pki_id: PkiId,
}

impl RemotePeer {
    /// A peer at `endpoint` expected to prove `pki_id`.
    pub fn new(endpoint: impl Into<String>, pki_id: impl Into<PkiId>) -> Self {
        RemotePeer {
            endpoint: endpoint.into(),
            pki_id: pki_id.into(),
        }
    }
}

/// How a stream ended, as the driver saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEnd {
    /// The remote finished the stream cleanly.
    Finished,
    /// The stream failed (reset, transport error, gRPC status) with this explanation.
    Error(String),
}

/// Something the driver must do on the network. Drain with [`Comm::poll_action`] after every
/// input; per stream, carry them out in the order given.
#[derive(Clone, Debug, PartialEq)]
#[must_use]
pub enum Action {
    /// Open a client channel to `endpoint`; answer with [`Comm::handle_dial_result`].
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
    /// Write one encoded Envelope to the stream; confirm with [`Comm::handle_sent`].
    Write {
        /// The stream.
        stream: StreamId,
        /// The Envelope, encoded (shared by every stream the message goes to).
        envelope: Bytes,
    },
    /// Stop reading the stream until `ResumeRead` (a subscription is full). Envelopes already
    /// read may still be handed in.
    PauseRead {
        /// The stream.
        stream: StreamId,
    },
    /// Reading the stream may continue.
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
    /// Close the client channel. The handle is dead from now on.
    CloseDial {
        /// The channel.
        dial: DialId,
    },
}

/// One peer's outcome in a `send_with_ack` (Fabric's `SendResult`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendResult {
    /// The peer.
    pub peer: PkiId,
    /// `Ok` when it acked without error.
    pub result: Result<(), AckError>,
}

/// Something that happened, for the application. Drain with [`Comm::poll_event`].
#[derive(Clone, Debug)]
#[must_use]
pub enum Event {
    /// Sending to this peer failed (no connection could be had, or a write failed); it is
    /// presumed dead (Fabric's `PresumedDead()` stream).
    PresumedDead(PkiId),
    /// A peer dialled under this (old) PKI-ID answered with a new identity of the same
    /// organization (Fabric's `IdentitySwitch()` stream).
    IdentitySwitch(PkiId),
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
        /// Per-peer results, in the order the peers were given.
        results: Vec<SendResult>,
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
    /// `stop` completed: every connection is closed and every subscription ended.
    Stopped,
}

/// Deadlines, each naming the object it belongs to. An entry is only acted on if the object
/// still has exactly that deadline, so stale entries are harmless.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKey {
    Dial(DialId),
    Stream(StreamId),
    Op(OpId),
    Grace(StreamId),
    Identity(PkiId),
}

#[derive(Debug)]
enum Purpose {
    /// An inbound stream.
    Inbound,
    /// Our connection attempt keyed by the expected PKI-ID.
    Connect { key: PkiId },
    /// A `handshake()` operation.
    HandshakeOp(OpId),
}

#[derive(Debug)]
struct Conn {
    info: Arc<ConnectionInfo>,
    secondary: bool,
    grace: Option<Instant>,
    buf: VecDeque<Bytes>,
    waiting: VecDeque<Bytes>,
    in_flight: usize,
    blocked_by: u32,
}

#[derive(Debug)]
enum Phase {
    Handshaking { deadline: Instant, purpose: Purpose },
    Established(Box<Conn>),
}

#[derive(Debug)]
struct Stream {
    inbound: bool,
    dial: Option<DialId>,
    remote_addr: String,
    remote_cert_hash: Option<CertHash>,
    phase: Phase,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DialState {
    Dialing,
    Pinging,
    Streaming(StreamId),
}

#[derive(Debug)]
enum DialPurpose {
    Connect { key: PkiId },
    Probe(OpId),
    Handshake(OpId),
}

#[derive(Debug)]
struct Dial {
    endpoint: String,
    purpose: DialPurpose,
    state: DialState,
    deadline: Option<Instant>,
    remote_cert_hash: Option<CertHash>,
}

/// Messages that wait for a connection attempt, with the same bounds as a send buffer.
#[derive(Debug, Default)]
struct Attempt {
    dial: Option<DialId>,
    buf: VecDeque<Bytes>,
    waiting: VecDeque<Bytes>,
    ack_waits: SmallVec<[OpId; 2]>,
}

#[derive(Debug)]
enum Op {
    Probe {
        dial: DialId,
    },
    Handshake {
        dial: DialId,
        expected: PkiId,
        deadline: Instant,
    },
    SendWithAck {
        nonce: u64,
        min_ack: usize,
        deadline: Instant,
        peers: Vec<(PkiId, Option<Result<(), AckError>>)>,
    },
}

/// A subscription's acceptor: Fabric's `MessageAcceptor`.
pub type Acceptor = Box<dyn Fn(&ReceivedMessage) -> bool + Send>;

struct Subscription {
    acceptor: Acceptor,
    queue: VecDeque<ReceivedMessage>,
    notified: bool,
    blocked: SmallVec<[StreamId; 4]>,
}

#[derive(Debug, Clone, Copy)]
struct Registered {
    primary: StreamId,
    secondary: Option<StreamId>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Fabric's non-blocking `Send`: drop when the buffer is full.
    Drop,
    /// Fabric's blocking sends: wait for room (bounded by `max_waiting_sends`).
    Wait,
}

/// One node's gossip comm layer, sans-IO. See the crate docs for the call order.
pub struct Comm<S: Security> {
    config: Config,
    security: S,
    own_pki: PkiId,
    own_identity: Bytes,
    rng: ChaCha8Rng,
    stopped: bool,
    streams: Slab<Stream>,
    dials: Slab<Dial>,
    ops: Slab<Op>,
    subs: Slab<Subscription>,
    registry: Map<PkiId, Registered>,
    attempts: Map<PkiId, Attempt>,
    acks: Map<(u64, PkiId), OpId>,
    identities: IdentityStore,
    pending_inbound: VecDeque<StreamId>,
    timers: BinaryHeap<Reverse<(Instant, u64, TimerKey)>>,
    timer_seq: u64,
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
    queued_dead: SmallVec<[PkiId; 8]>,
    conn_establish_cache: [Option<Bytes>; 4],
    stats: Stats,
    now: Instant,
}

impl<S: Security> core::fmt::Debug for Comm<S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Comm")
            .field("pki_id", &self.own_pki)
            .field("stopped", &self.stopped)
            .field("streams", &self.streams.len())
            .field("connections", &self.registry.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<S: Security> Comm<S> {
    /// Creates a core for the identity `security` holds. Fails if the provider refuses the
    /// node's own identity (Fabric panics there; a typed error is kinder).
    pub fn new(config: Config, security: S, now: Instant) -> Result<Self, HandshakeError> {
        let config = config.sanitized();
        let own_identity = security.own_identity();
        let own_pki = security.pki_id_of(&own_identity);
        let mut identities = IdentityStore::new(config.identity_store_capacity, own_pki.clone());
        identities.put(&security, &own_pki, &own_identity, now, |_| true)?;
        let seed = config.rng_seed;
        Ok(Comm {
            rng: ChaCha8Rng::seed_from_u64(seed),
            registry: Map::with_hasher(foldhash::fast::FixedState::with_seed(seed)),
            attempts: Map::with_hasher(foldhash::fast::FixedState::with_seed(seed ^ 1)),
            acks: Map::with_hasher(foldhash::fast::FixedState::with_seed(seed ^ 2)),
            config,
            security,
            own_pki,
            own_identity,
            stopped: false,
            streams: Slab::default(),
            dials: Slab::default(),
            ops: Slab::default(),
            subs: Slab::default(),
            identities,
            pending_inbound: VecDeque::new(),
            timers: BinaryHeap::new(),
            timer_seq: 0,
            actions: VecDeque::new(),
            events: VecDeque::new(),
            queued_dead: SmallVec::new(),
            conn_establish_cache: [None, None, None, None],
            stats: Stats::default(),
            now,
        })
    }

    // ----------------------------------------------------------------- getters

    /// The node's own PKI-ID (Fabric `GetPKIid`).
    pub fn pki_id(&self) -> &PkiId {
        &self.own_pki
    }

    /// The node's own serialized identity.
    pub fn identity(&self) -> &Bytes {
        &self.own_identity
    }

    /// The configuration in force (after sanitizing).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The security provider.
    pub fn security(&self) -> &S {
        &self.security
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Whether `stop` was called.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// The registered (primary) connection to `pki_id`, if any.
    pub fn connection(&self, pki_id: &PkiId) -> Option<StreamId> {
        self.registry.get(pki_id).map(|r| r.primary)
    }

    /// Every registered connection as (PKI-ID, primary, crossing secondary), sorted by PKI-ID.
    pub fn connections(&self) -> Vec<(PkiId, StreamId, Option<StreamId>)> {
        let mut v: Vec<_> = self
            .registry
            .iter()
            .map(|(k, r)| (k.clone(), r.primary, r.secondary))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// What is known about the remote of an established connection.
    pub fn connection_info(&self, conn: StreamId) -> Option<&Arc<ConnectionInfo>> {
        match &self.streams.get(conn.index, conn.generation)?.phase {
            Phase::Established(c) => Some(&c.info),
            Phase::Handshaking { .. } => None,
        }
    }

    /// Messages queued on a connection (send buffer, wait queue, in flight).
    pub fn send_queue_len(&self, conn: StreamId) -> Option<(usize, usize, usize)> {
        match &self.streams.get(conn.index, conn.generation)?.phase {
            Phase::Established(c) => Some((c.buf.len(), c.waiting.len(), c.in_flight)),
            Phase::Handshaking { .. } => None,
        }
    }

    /// Live streams (handshaking or established), live dials, pending operations.
    pub fn live_counts(&self) -> (usize, usize, usize) {
        (self.streams.len(), self.dials.len(), self.ops.len())
    }

    /// Whether `stream` names a live stream.
    pub fn is_live_stream(&self, stream: StreamId) -> bool {
        self.streams.get(stream.index, stream.generation).is_some()
    }

    /// Deliveries waiting in a subscription's queue.
    pub fn delivery_queue_len(&self, sub: SubscriptionId) -> usize {
        self.subs
            .get(sub.index, sub.generation)
            .map_or(0, |s| s.queue.len())
    }

    /// Identities currently in the identity store (own included).
    pub fn identity_count(&self) -> usize {
        self.identities.len()
    }

    /// The identity stored for `pki_id`, if any.
    pub fn identity_of(&self, pki_id: &PkiId) -> Option<&Bytes> {
        self.identities.get(pki_id).map(|s| &s.identity)
    }

    // ----------------------------------------------------------------- outputs

    /// The next network action. Drain after every input.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next application event. Drain after every input.
    pub fn poll_event(&mut self) -> Option<Event> {
        let ev = self.events.pop_front()?;
        if let Event::PresumedDead(p) = &ev
            && let Some(i) = self.queued_dead.iter().position(|q| q == p)
        {
            self.queued_dead.remove(i);
        }
        Some(ev)
    }

    /// The next delivery of a subscription, in arrival order. Taking one may resume reading
    /// of streams that were paused for this subscription.
    pub fn poll_delivery(&mut self, sub: SubscriptionId) -> Option<ReceivedMessage> {
        let cap = self.config.subscription_buffer;
        let s = self.subs.get_mut(sub.index, sub.generation)?;
        let msg = s.queue.pop_front();
        if s.queue.is_empty() {
            s.notified = false;
        }
        if s.queue.len() < cap && !s.blocked.is_empty() {
            let blocked = core::mem::take(&mut s.blocked);
            for stream in blocked {
                if let Some(Stream {
                    phase: Phase::Established(c),
                    ..
                }) = self.streams.get_mut(stream.index, stream.generation)
                {
                    c.blocked_by = c.blocked_by.saturating_sub(1);
                    if c.blocked_by == 0 {
                        self.actions.push_back(Action::ResumeRead { stream });
                    }
                }
            }
        }
        msg
    }

    /// When the core next needs [`Comm::handle_timeout`]. Deadlines of objects that are
    /// gone are discarded here, so a driver is not woken for nothing. (An early
    /// `handle_timeout` is still harmless.)
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, _, key))) = self.timers.peek() {
            if self.timer_valid(*at, key) {
                return Some(*at);
            }
            self.timers.pop();
        }
        None
    }

    // ----------------------------------------------------------------- driver inputs

    /// Advances time: fires every deadline at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tick(now);
        while let Some(Reverse((at, _, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((at, _, key))) = self.timers.pop() else {
                break;
            };
            self.fire(at, key, now);
        }
    }

    /// A remote opened a `GossipStream` to us. Returns the stream's handle; the handshake's
    /// first write (or, with TLS and no client certificate, a `CloseStream`) is queued.
    /// `Err(Stopped)` means: refuse the RPC ("Shutting down").
    pub fn accept_stream(
        &mut self,
        now: Instant,
        remote_addr: &str,
        remote_cert_hash: Option<CertHash>,
    ) -> Result<StreamId, Error> {
        self.tick(now);
        if self.stopped {
            return Err(Error::Stopped);
        }
        while self.pending_inbound.len() >= self.config.max_pending_handshakes {
            let Some(oldest) = self.pending_inbound.pop_front() else {
                break;
            };
            self.fail_handshake(oldest, HandshakeError::Evicted);
        }
        let deadline = now + self.config.conn_timeout;
        let (index, generation) = self.streams.insert(Stream {
            inbound: true,
            dial: None,
            remote_addr: remote_addr.to_owned(),
            remote_cert_hash,
            phase: Phase::Handshaking {
                deadline,
                purpose: Purpose::Inbound,
            },
        });
        let stream = StreamId { index, generation };
        self.pending_inbound.push_back(stream);
        self.start_handshake(stream, false, deadline);
        Ok(stream)
    }

    /// The outcome of an `Action::Dial`. On success, pass the SHA-256 of the leaf
    /// certificate the server presented (with TLS), or `None`.
    pub fn handle_dial_result(
        &mut self,
        now: Instant,
        dial: DialId,
        result: Result<Option<CertHash>, String>,
    ) -> Result<(), Error> {
        self.tick(now);
        let d = self
            .dials
            .get_mut(dial.index, dial.generation)
            .ok_or(Error::UnknownHandle)?;
        if d.state != DialState::Dialing {
            return Ok(());
        }
        match result {
            Ok(hash) => {
                d.remote_cert_hash = hash;
                d.state = DialState::Pinging;
                let deadline = now + self.config.conn_timeout;
                d.deadline = Some(deadline);
                self.actions.push_back(Action::Ping { dial });
                self.arm(deadline, TimerKey::Dial(dial));
            }
            Err(reason) => self.dial_failed(dial, DialError::Failed(reason)),
        }
        Ok(())
    }

    /// The outcome of an `Action::Ping`.
    pub fn handle_ping_result(
        &mut self,
        now: Instant,
        dial: DialId,
        result: Result<(), String>,
    ) -> Result<(), Error> {
        self.tick(now);
        let d = self
            .dials
            .get(dial.index, dial.generation)
            .ok_or(Error::UnknownHandle)?;
        if d.state != DialState::Pinging {
            return Ok(());
        }
        match result {
            Ok(()) => self.ping_ok(dial, now),
            Err(reason) => self.ping_failed(dial, reason),
        }
        Ok(())
    }

    /// One Envelope read from a stream, as received (its bytes are kept for forwarding).
    /// Malformed input closes the stream and is reported as an event, never as `Err`;
    /// `Err` only means the handle is dead.
    pub fn handle_envelope(
        &mut self,
        now: Instant,
        stream: StreamId,
        bytes: Bytes,
    ) -> Result<(), Error> {
        self.tick(now);
        let s = self
            .streams
            .get(stream.index, stream.generation)
            .ok_or(Error::UnknownHandle)?;
        let handshaking = matches!(s.phase, Phase::Handshaking { .. });
        if bytes.len() > self.config.max_message_size {
            self.refuse_oversized(stream, handshaking, bytes.len());
            return Ok(());
        }
        if handshaking {
            self.on_handshake_envelope(stream, bytes, now);
        } else {
            self.on_established_envelope(stream, bytes);
        }
        Ok(())
    }

    /// The driver saw a message of `size` bytes announced on this stream (a gRPC length
    /// prefix) that exceeds `max_message_size`, and refused to read it: the same outcome as
    /// [`Comm::handle_envelope`] with that many bytes (`oversized` counted, the handshake
    /// fails or the connection closes `Malformed`), without the driver having to hold them.
    /// `Err` only means the handle is dead.
    pub fn handle_oversized(
        &mut self,
        now: Instant,
        stream: StreamId,
        size: usize,
    ) -> Result<(), Error> {
        self.tick(now);
        let handshaking = self.handshaking(stream)?;
        self.refuse_oversized(stream, handshaking, size);
        Ok(())
    }

    fn refuse_oversized(&mut self, stream: StreamId, handshaking: bool, size: usize) {
        self.stats.oversized += 1;
        let why = format!(
            "envelope of {size} bytes exceeds the limit of {}",
            self.config.max_message_size
        );
        if handshaking {
            self.fail_handshake(stream, HandshakeError::Malformed(why));
        } else {
            self.close_stream(stream, CloseReason::Malformed(why));
        }
    }

    /// The driver finished writing `count` envelopes of this stream (credit comes back).
    pub fn handle_sent(
        &mut self,
        now: Instant,
        stream: StreamId,
        count: usize,
    ) -> Result<(), Error> {
        self.tick(now);
        let s = self
            .streams
            .get_mut(stream.index, stream.generation)
            .ok_or(Error::UnknownHandle)?;
        if let Phase::Established(c) = &mut s.phase {
            let n = count.min(c.in_flight);
            c.in_flight -= n;
            self.stats.sent += n as u64;
            self.pump(stream);
        }
        Ok(())
    }

    /// Whether a live stream is still handshaking; `Err(UnknownHandle)` if it is dead.
    fn handshaking(&self, stream: StreamId) -> Result<bool, Error> {
        self.streams
            .get(stream.index, stream.generation)
            .map(|s| matches!(s.phase, Phase::Handshaking { .. }))
            .ok_or(Error::UnknownHandle)
    }

    /// A write to the stream failed: the peer is presumed dead and the connection closed
    /// (Fabric's `disconnect`).
    pub fn handle_write_failed(
        &mut self,
        now: Instant,
        stream: StreamId,
        reason: String,
    ) -> Result<(), Error> {
        self.tick(now);
        if self.handshaking(stream)? {
            self.fail_handshake(stream, HandshakeError::StreamEnded(reason));
        } else {
            self.close_stream(stream, CloseReason::WriteFailed(reason));
        }
        Ok(())
    }

    /// The stream ended (read side saw end or error). The handle is dead afterwards.
    pub fn handle_stream_closed(
        &mut self,
        now: Instant,
        stream: StreamId,
        end: StreamEnd,
    ) -> Result<(), Error> {
        self.tick(now);
        if self.handshaking(stream)? {
            let why = match end {
                StreamEnd::Finished => "closed by remote".to_owned(),
                StreamEnd::Error(e) => e,
            };
            self.fail_handshake(stream, HandshakeError::StreamEnded(why));
        } else {
            let reason = match end {
                StreamEnd::Finished => CloseReason::RemoteClosed,
                StreamEnd::Error(e) => CloseReason::StreamError(e),
            };
            self.close_stream(stream, reason);
        }
        Ok(())
    }

    // ----------------------------------------------------------------- API

    /// Fabric's `Send`: to each peer, over its connection (opening one if needed), without
    /// waiting: a full send buffer drops the message and counts it. Messages to one peer
    /// leave in the order they were sent. Failing to connect presumes the peer dead.
    pub fn send(
        &mut self,
        now: Instant,
        msg: &SignedMessage,
        peers: &[RemotePeer],
    ) -> Result<(), Error> {
        self.tick(now);
        self.check_outgoing(msg.envelope_bytes(), peers)?;
        for peer in peers {
            // A full buffer in Drop mode is a counted drop, not an error.
            let _ = self.enqueue(peer, msg.envelope_bytes().clone(), Mode::Drop, None);
        }
        Ok(())
    }

    /// Like `send` to one peer, but a full send buffer makes the message wait (up to
    /// `max_waiting_sends` per connection) instead of dropping: for callers that must not
    /// lose messages. `Err(WouldBlock)` means even the wait queue is full: retry after the
    /// connection drains.
    pub fn send_wait(
        &mut self,
        now: Instant,
        msg: &SignedMessage,
        peer: &RemotePeer,
    ) -> Result<(), Error> {
        self.tick(now);
        self.check_outgoing(msg.envelope_bytes(), core::slice::from_ref(peer))?;
        self.enqueue(peer, msg.envelope_bytes().clone(), Mode::Wait, None)
    }

    /// Fabric's `SendWithAck`: gives `msg` a fresh nonce, noop-signs it, sends it to every
    /// peer (waiting for buffer room), and completes with `Event::SendWithAckDone` as soon
    /// as `min_ack` peers acked or every peer has a result, or at `timeout`.
    pub fn send_with_ack(
        &mut self,
        now: Instant,
        mut msg: GossipMessage,
        timeout: Duration,
        min_ack: usize,
        peers: &[RemotePeer],
    ) -> Result<OpId, Error> {
        self.admit_op(now)?;
        if peers.is_empty() {
            return Err(Error::NoPeers);
        }
        if msg.content.is_none() {
            return Err(Error::EmptyMessage);
        }
        let mut unique: Vec<&RemotePeer> = Vec::with_capacity(peers.len());
        for p in peers {
            if !unique.iter().any(|q| q.pki_id == p.pki_id) {
                unique.push(p);
            }
        }
        let nonce = loop {
            let n = self.rng.next_u64();
            if !unique
                .iter()
                .any(|p| self.acks.contains_key(&(n, p.pki_id.clone())))
            {
                break n;
            }
        };
        msg.nonce = nonce;
        let signed = SignedMessage::noop(msg);
        let size = signed.envelope_bytes().len();
        if size > self.config.max_message_size {
            return Err(Error::MessageTooLarge {
                size,
                limit: self.config.max_message_size,
            });
        }
        let deadline = now + timeout;
        let (index, generation) = self.ops.insert(Op::SendWithAck {
            nonce,
            min_ack,
            deadline,
            peers: unique.iter().map(|p| (p.pki_id.clone(), None)).collect(),
        });
        let op = OpId { index, generation };
        self.arm(deadline, TimerKey::Op(op));
        for p in &unique {
            self.acks.insert((nonce, p.pki_id.clone()), op);
        }
        for p in unique {
            if let Err(e) = self.enqueue(p, signed.envelope_bytes().clone(), Mode::Wait, Some(op)) {
                let err = match e {
                    Error::WouldBlock => AckError::WouldBlock,
                    Error::Stopped => AckError::Stopped,
                    other => AckError::NoConnection(other.to_string()),
                };
                self.ack_result(op, &p.pki_id, Err(err));
            }
        }
        Ok(op)
    }

    /// Whether a new operation may start: not stopped, and under `max_operations`.
    fn admit_op(&mut self, now: Instant) -> Result<(), Error> {
        self.tick(now);
        if self.stopped {
            return Err(Error::Stopped);
        }
        if self.ops.len() >= self.config.max_operations {
            return Err(Error::LimitReached("operations"));
        }
        Ok(())
    }

    /// Fabric's `Probe`: dial and Ping, no handshake, nothing registered. The result comes
    /// as `Event::ProbeDone`.
    pub fn probe(&mut self, now: Instant, peer: &RemotePeer) -> Result<OpId, Error> {
        self.admit_op(now)?;
        let (index, generation) = self.ops.insert(Op::Probe {
            dial: DialId::from_parts(u32::MAX, u32::MAX),
        });
        let op = OpId { index, generation };
        let dial = self.start_dial(&peer.endpoint, DialPurpose::Probe(op));
        if let Some(Op::Probe { dial: d }) = self.ops.get_mut(index, generation) {
            *d = dial;
        }
        Ok(op)
    }

    /// Fabric's `Handshake`: dial, Ping, open a stream and authenticate the remote with
    /// `probe: true`, within `handshake_timeout`; nothing is registered. The result comes as
    /// `Event::HandshakeDone`. An empty expected PKI-ID accepts whoever answers.
    pub fn handshake(&mut self, now: Instant, peer: &RemotePeer) -> Result<OpId, Error> {
        self.admit_op(now)?;
        let deadline = now + self.config.handshake_timeout;
        let (index, generation) = self.ops.insert(Op::Handshake {
            dial: DialId::from_parts(u32::MAX, u32::MAX),
            expected: peer.pki_id.clone(),
            deadline,
        });
        let op = OpId { index, generation };
        self.arm(deadline, TimerKey::Op(op));
        let dial = self.start_dial(&peer.endpoint, DialPurpose::Handshake(op));
        if let Some(Op::Handshake { dial: d, .. }) = self.ops.get_mut(index, generation) {
            *d = dial;
        }
        Ok(op)
    }

    /// Fabric's `Accept`: a subscription to every received message (acks excepted) that
    /// `acceptor` accepts, in arrival order.
    pub fn subscribe(&mut self, acceptor: Acceptor) -> Result<SubscriptionId, Error> {
        if self.stopped {
            return Err(Error::Stopped);
        }
        if self.subs.len() >= self.config.max_subscriptions {
            return Err(Error::LimitReached("subscriptions"));
        }
        let (index, generation) = self.subs.insert(Subscription {
            acceptor,
            queue: VecDeque::new(),
            notified: false,
            blocked: SmallVec::new(),
        });
        Ok(SubscriptionId { index, generation })
    }

    /// Ends a subscription; its undelivered messages are discarded and any stream paused
    /// for it may resume.
    pub fn unsubscribe(&mut self, sub: SubscriptionId) -> Result<(), Error> {
        let s = self
            .subs
            .remove(sub.index, sub.generation)
            .ok_or(Error::UnknownHandle)?;
        for stream in s.blocked {
            if let Some(Stream {
                phase: Phase::Established(c),
                ..
            }) = self.streams.get_mut(stream.index, stream.generation)
            {
                c.blocked_by = c.blocked_by.saturating_sub(1);
                if c.blocked_by == 0 {
                    self.actions.push_back(Action::ResumeRead { stream });
                }
            }
        }
        Ok(())
    }

    /// Fabric's `ReceivedMessage.Respond`: noop-signs `msg` and sends it on the connection
    /// the request came in on, waiting for buffer room.
    pub fn respond(
        &mut self,
        now: Instant,
        conn: StreamId,
        msg: GossipMessage,
    ) -> Result<(), Error> {
        self.tick(now);
        if self.stopped {
            return Err(Error::Stopped);
        }
        let signed = SignedMessage::noop(msg);
        let size = signed.envelope_bytes().len();
        if size > self.config.max_message_size {
            return Err(Error::MessageTooLarge {
                size,
                limit: self.config.max_message_size,
            });
        }
        self.enqueue_on(conn, signed.envelope_bytes().clone(), Mode::Wait)
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
        let msg = GossipMessage {
            nonce,
            content: Some(gossip_message::Content::Ack(Acknowledgement {
                error: error.unwrap_or_default().to_owned(),
            })),
            ..Default::default()
        };
        self.respond(now, conn, msg)
    }

    /// Fabric's `CloseConn`: closes the connection(s) registered for `pki_id`. A later send
    /// opens a new one.
    pub fn close_conn(&mut self, now: Instant, pki_id: &PkiId) {
        self.tick(now);
        if let Some(reg) = self.registry.get(pki_id).copied() {
            if let Some(sec) = reg.secondary {
                self.close_stream(sec, CloseReason::Local);
            }
            self.close_stream(reg.primary, CloseReason::Local);
        }
    }

    /// Fabric's `Stop`: idempotent; closes every stream and channel, ends every subscription
    /// (undelivered messages are discarded), fails pending operations, refuses new work.
    pub fn stop(&mut self, now: Instant) {
        self.tick(now);
        if self.stopped {
            return;
        }
        self.stopped = true;
        let streams: Vec<StreamId> = self
            .streams
            .iter()
            .map(|(i, g, _)| StreamId::from_parts(i, g))
            .collect();
        for s in streams {
            let handshaking = self
                .streams
                .get(s.index, s.generation)
                .is_some_and(|st| matches!(st.phase, Phase::Handshaking { .. }));
            if handshaking {
                self.fail_handshake(s, HandshakeError::ShuttingDown);
            } else {
                self.close_stream(s, CloseReason::Stopped);
            }
        }
        let dials: Vec<DialId> = self
            .dials
            .iter()
            .map(|(i, g, _)| DialId::from_parts(i, g))
            .collect();
        for d in dials {
            self.dial_failed(d, DialError::Failed("Shutting down".into()));
        }
        let ops: Vec<OpId> = self
            .ops
            .iter()
            .map(|(i, g, _)| OpId::from_parts(i, g))
            .collect();
        for op in ops {
            self.fail_op(op);
        }
        let subs: Vec<SubscriptionId> = self
            .subs
            .iter()
            .map(|(i, g, _)| SubscriptionId::from_parts(i, g))
            .collect();
        for sub in subs {
            if let Some(s) = self.subs.remove(sub.index, sub.generation) {
                self.stats.dropped_on_stop += s.queue.len() as u64;
            }
        }
        let leftover: u64 = self
            .attempts
            .values()
            .map(|a| (a.buf.len() + a.waiting.len()) as u64)
            .sum();
        self.stats.dropped_no_connection += leftover;
        self.attempts.clear();
        self.acks.clear();
        self.timers.clear();
        self.events
            .retain(|e| !matches!(e, Event::DeliveryReady(_)));
        self.events.push_back(Event::Stopped);
    }

    // ----------------------------------------------------------------- internals: time

    fn tick(&mut self, now: Instant) {
        if now > self.now {
            self.now = now;
        }
    }

    fn arm(&mut self, at: Instant, key: TimerKey) {
        self.timer_seq += 1;
        self.timers.push(Reverse((at, self.timer_seq, key)));
        let live = self.streams.len() + self.dials.len() + self.ops.len() + self.identities.len();
        if self.timers.len() > 4 * live + 64 {
            self.compact_timers();
        }
    }

    /// Drops timer entries whose object no longer has that deadline, so the heap stays
    /// proportional to live objects however many deadlines were cancelled.
    fn compact_timers(&mut self) {
        let timers = core::mem::take(&mut self.timers);
        let kept: Vec<_> = timers
            .into_vec()
            .into_iter()
            .filter(|Reverse((at, _, key))| self.timer_valid(*at, key))
            .collect();
        self.timers = BinaryHeap::from(kept);
    }

    fn timer_valid(&self, at: Instant, key: &TimerKey) -> bool {
        match key {
            TimerKey::Dial(d) => self
                .dials
                .get(d.index, d.generation)
                .is_some_and(|x| x.deadline == Some(at)),
            TimerKey::Stream(s) => self.streams.get(s.index, s.generation).is_some_and(
                |x| matches!(x.phase, Phase::Handshaking { deadline, .. } if deadline == at),
            ),
            TimerKey::Grace(s) => self
                .streams
                .get(s.index, s.generation)
                .is_some_and(|x| matches!(&x.phase, Phase::Established(c) if c.grace == Some(at))),
            TimerKey::Op(o) => self
                .ops
                .get(o.index, o.generation)
                .is_some_and(|x| match x {
                    Op::Probe { .. } => false,
                    Op::Handshake { deadline, .. } | Op::SendWithAck { deadline, .. } => {
                        *deadline == at
                    }
                }),
            TimerKey::Identity(p) => self
                .identities
                .get(p)
                .is_some_and(|s| s.expires == Some(at)),
        }
    }

    fn fire(&mut self, at: Instant, key: TimerKey, now: Instant) {
        if !self.timer_valid(at, &key) {
            return;
        }
        match key {
            TimerKey::Dial(d) => {
                let state = self.dials.get(d.index, d.generation).map(|x| x.state);
                match state {
                    Some(DialState::Dialing) => self.dial_failed(d, DialError::Timeout),
                    Some(DialState::Pinging) => self.ping_failed(d, "ping timed out".into()),
                    _ => {}
                }
            }
            TimerKey::Stream(s) => self.fail_handshake(s, HandshakeError::Timeout),
            TimerKey::Grace(s) => self.close_stream(s, CloseReason::CrossingLoser),
            TimerKey::Op(op) => self.op_deadline(op),
            TimerKey::Identity(p) => {
                if self.identities.purge_if_expired(&p, now)
                    && let Some(reg) = self.registry.get(&p).copied()
                {
                    if let Some(sec) = reg.secondary {
                        self.close_stream(sec, CloseReason::IdentityExpired);
                    }
                    self.close_stream(reg.primary, CloseReason::IdentityExpired);
                }
            }
        }
    }

    // ----------------------------------------------------------------- internals: events

    fn push_info_event(&mut self, ev: Event) {
        if self.events.len() >= MAX_QUEUED_EVENTS {
            self.stats.events_dropped += 1;
        } else {
            self.events.push_back(ev);
        }
    }

    fn presumed_dead(&mut self, pki: PkiId) {
        if self.stopped || self.queued_dead.contains(&pki) {
            return;
        }
        if self.queued_dead.len() >= self.config.presumed_dead_buffer {
            self.stats.presumed_dead_dropped += 1;
            return;
        }
        self.stats.presumed_dead += 1;
        self.queued_dead.push(pki.clone());
        self.events.push_back(Event::PresumedDead(pki));
    }

    // ----------------------------------------------------------------- internals: dialling

    fn start_dial(&mut self, endpoint: &str, purpose: DialPurpose) -> DialId {
        let deadline = self.now + self.config.dial_timeout;
        let (index, generation) = self.dials.insert(Dial {
            endpoint: endpoint.to_owned(),
            purpose,
            state: DialState::Dialing,
            deadline: Some(deadline),
            remote_cert_hash: None,
        });
        let dial = DialId { index, generation };
        self.actions.push_back(Action::Dial {
            dial,
            endpoint: endpoint.to_owned(),
        });
        self.arm(deadline, TimerKey::Dial(dial));
        dial
    }

    fn dial_failed(&mut self, dial: DialId, err: DialError) {
        let Some(d) = self.dials.remove(dial.index, dial.generation) else {
            return;
        };
        self.actions.push_back(Action::CloseDial { dial });
        if let DialState::Streaming(stream) = d.state {
            // The channel is going away; so is its stream.
            if let Some(s) = self.streams.get_mut(stream.index, stream.generation) {
                s.dial = None;
                if matches!(s.phase, Phase::Handshaking { .. }) {
                    self.fail_handshake(stream, HandshakeError::Dial(err));
                } else {
                    self.close_stream(stream, CloseReason::StreamError(err.to_string()));
                }
            }
            return;
        }
        let probe_err = ProbeError::Dial(err.clone());
        self.dial_purpose_failed(d.purpose, HandshakeError::Dial(err), probe_err);
    }

    fn ping_failed(&mut self, dial: DialId, reason: String) {
        let Some(d) = self.dials.remove(dial.index, dial.generation) else {
            return;
        };
        self.actions.push_back(Action::CloseDial { dial });
        let probe_err = ProbeError::Ping(reason.clone());
        self.dial_purpose_failed(d.purpose, HandshakeError::Ping(reason), probe_err);
    }

    /// Reports a dial or Ping failure to whatever the dial was for.
    fn dial_purpose_failed(
        &mut self,
        purpose: DialPurpose,
        err: HandshakeError,
        probe_err: ProbeError,
    ) {
        match purpose {
            DialPurpose::Connect { key } => self.attempt_failed(&key, err),
            DialPurpose::Probe(op) => self.finish_probe(op, Err(probe_err)),
            DialPurpose::Handshake(op) => self.finish_handshake_op(op, Err(err)),
        }
    }

    fn ping_ok(&mut self, dial: DialId, now: Instant) {
        let Some(d) = self.dials.get_mut(dial.index, dial.generation) else {
            return;
        };
        let purpose = match &d.purpose {
            DialPurpose::Probe(op) => {
                let op = *op;
                self.dials.remove(dial.index, dial.generation);
                self.actions.push_back(Action::CloseDial { dial });
                self.finish_probe(op, Ok(()));
                return;
            }
            DialPurpose::Connect { key } => Purpose::Connect { key: key.clone() },
            DialPurpose::Handshake(op) => Purpose::HandshakeOp(*op),
        };
        let probe = matches!(purpose, Purpose::HandshakeOp(_));
        let deadline = now + self.config.conn_timeout;
        let remote_addr = d.endpoint.clone();
        let remote_cert_hash = d.remote_cert_hash;
        d.deadline = None;
        let (index, generation) = self.streams.insert(Stream {
            inbound: false,
            dial: Some(dial),
            remote_addr,
            remote_cert_hash,
            phase: Phase::Handshaking { deadline, purpose },
        });
        let stream = StreamId { index, generation };
        if let Some(d) = self.dials.get_mut(dial.index, dial.generation) {
            d.state = DialState::Streaming(stream);
        }
        self.actions.push_back(Action::OpenStream { dial, stream });
        self.start_handshake(stream, probe, deadline);
    }

    // ----------------------------------------------------------------- internals: handshake

    /// Spec 4 steps 1–3: refuse a TLS peer without a certificate, else send our signed
    /// `ConnEstablish` and wait for the remote's until `deadline`.
    fn start_handshake(&mut self, stream: StreamId, probe: bool, deadline: Instant) {
        let Some(s) = self.streams.get(stream.index, stream.generation) else {
            return;
        };
        let inbound = s.inbound;
        if self.config.tls.is_some() && s.remote_cert_hash.is_none() {
            self.fail_handshake(stream, HandshakeError::NoTlsCertificate);
            return;
        }
        match self.conn_establish(inbound, probe) {
            Ok(bytes) => {
                self.actions.push_back(Action::Write {
                    stream,
                    envelope: bytes,
                });
                self.arm(deadline, TimerKey::Stream(stream));
            }
            Err(e) => self.fail_handshake(stream, HandshakeError::LocalSigning(e)),
        }
    }

    /// Our signed `ConnEstablish` for a role; the four variants are signed once and reused.
    fn conn_establish(
        &mut self,
        inbound: bool,
        probe: bool,
    ) -> Result<Bytes, crate::SecurityError> {
        let slot = usize::from(inbound) * 2 + usize::from(probe);
        if let Some(b) = &self.conn_establish_cache[slot] {
            return Ok(b.clone());
        }
        let tls_cert_hash = match &self.config.tls {
            Some(t) if inbound => Bytes::copy_from_slice(&t.server_cert_hash),
            Some(t) => Bytes::copy_from_slice(&t.client_cert_hash),
            None => Bytes::new(),
        };
        let msg = GossipMessage {
            nonce: 0,
            tag: gossip_message::Tag::Empty as i32,
            content: Some(gossip_message::Content::Conn(ConnEstablish {
                pki_id: self.own_pki.0.clone(),
                identity: self.own_identity.clone(),
                tls_cert_hash,
                probe,
            })),
            ..Default::default()
        };
        let signed = SignedMessage::sign(msg, &self.security).map_err(|e| match e {
            Error::Signing(s) => s,
            other => crate::SecurityError::SigningFailed(other.to_string()),
        })?;
        let bytes = signed.envelope_bytes().clone();
        self.conn_establish_cache[slot] = Some(bytes.clone());
        Ok(bytes)
    }

    /// Spec 4 step 4: the checks, in Fabric's order.
    fn authenticate(
        &mut self,
        bytes: Bytes,
        remote_cert_hash: Option<CertHash>,
        remote_addr: &str,
        now: Instant,
    ) -> Result<(ConnectionInfo, bool), HandshakeError> {
        let env = Envelope::decode(bytes).map_err(|e| HandshakeError::Malformed(e.to_string()))?;
        let msg = GossipMessage::decode(env.payload.clone())
            .map_err(|e| HandshakeError::Malformed(e.to_string()))?;
        let Some(gossip_message::Content::Conn(conn)) = msg.content else {
            return Err(HandshakeError::WrongType);
        };
        if conn.pki_id.is_empty() {
            return Err(HandshakeError::NoPkiId);
        }
        if conn.identity.len() > self.config.max_identity_size {
            return Err(HandshakeError::IdentityTooLarge {
                size: conn.identity.len(),
                limit: self.config.max_identity_size,
            });
        }
        let pki = PkiId(conn.pki_id);
        let registry = &self.registry;
        let expires = self
            .identities
            .put(&self.security, &pki, &conn.identity, now, |p| {
                registry.contains_key(p)
            })?;
        if let Some(at) = expires {
            self.arm(at, TimerKey::Identity(pki.clone()));
        }
        if self.config.tls.is_some() {
            let presented = remote_cert_hash.ok_or(HandshakeError::NoTlsCertificate)?;
            if conn.tls_cert_hash.as_ref() != presented.as_slice() {
                return Err(HandshakeError::TlsCertHashMismatch);
            }
        }
        verify_envelope(&self.security, &conn.identity, &env)?;
        Ok((
            ConnectionInfo {
                id: pki,
                identity: conn.identity,
                endpoint: remote_addr.to_owned(),
                signed_data: env.payload,
                signature: env.signature,
            },
            conn.probe,
        ))
    }

    fn on_handshake_envelope(&mut self, stream: StreamId, bytes: Bytes, now: Instant) {
        let Some(s) = self.streams.get(stream.index, stream.generation) else {
            return;
        };
        let remote_cert_hash = s.remote_cert_hash;
        let remote_addr = s.remote_addr.clone();
        let inbound = s.inbound;
        match self.authenticate(bytes, remote_cert_hash, &remote_addr, now) {
            Err(e) => self.fail_handshake(stream, e),
            Ok((info, remote_probe)) => {
                self.stats.handshakes_ok += 1;
                if let Some(i) = self.pending_inbound.iter().position(|p| *p == stream) {
                    self.pending_inbound.remove(i);
                }
                let purpose = match self.streams.get_mut(stream.index, stream.generation) {
                    Some(Stream {
                        phase: Phase::Handshaking { purpose, .. },
                        ..
                    }) => core::mem::replace(purpose, Purpose::Inbound),
                    _ => return,
                };
                let info = Arc::new(info);
                match purpose {
                    Purpose::Inbound if remote_probe => {
                        // Spec 4 step 6: a probing remote is authenticated, then let go.
                        self.stats.probed += 1;
                        self.drop_stream(stream, None);
                    }
                    Purpose::Inbound => {
                        self.register(stream, info, inbound, now);
                    }
                    Purpose::HandshakeOp(op) => {
                        self.drop_stream(stream, None);
                        self.finish_handshake_op(op, Ok(info));
                    }
                    Purpose::Connect { key } => self.attempt_authenticated(stream, key, info, now),
                }
            }
        }
    }

    /// Spec 5: our dial authenticated someone; check who, then register.
    fn attempt_authenticated(
        &mut self,
        stream: StreamId,
        key: PkiId,
        info: Arc<ConnectionInfo>,
        now: Instant,
    ) {
        if !key.is_empty() && key != info.id {
            let new_org = self.security.organization_of(&info.identity);
            let old_org = self
                .identities
                .get(&key)
                .and_then(|s| s.organization.clone());
            if new_org.is_some() && new_org == old_org {
                self.stats.identity_switches += 1;
                self.events.push_back(Event::IdentitySwitch(key.clone()));
            } else {
                let err = HandshakeError::UnexpectedPeer {
                    expected: key.clone(),
                    actual: info.id.clone(),
                };
                self.stats.handshake_failed(&err);
                let remote = info.endpoint.clone();
                self.drop_stream(stream, None);
                self.push_info_event(Event::HandshakeFailed {
                    stream,
                    remote,
                    inbound: false,
                    error: err.clone(),
                });
                self.attempt_failed(&key, err);
                return;
            }
        }
        let actual = info.id.clone();
        if !self.register(stream, info, false, now) {
            self.attempt_failed(&key, HandshakeError::TooManyConnections);
            return;
        }
        // Messages that waited for the attempt go to whatever connection now serves the peer.
        if let Some(att) = self.attempts.remove(&key)
            && let Some(target) = self.registry.get(&actual).map(|r| r.primary)
        {
            self.absorb(target, att.buf, att.waiting);
        }
    }

    fn fail_handshake(&mut self, stream: StreamId, err: HandshakeError) {
        let Some(s) = self.streams.get(stream.index, stream.generation) else {
            return;
        };
        let Phase::Handshaking { purpose, .. } = &s.phase else {
            return;
        };
        let purpose = match purpose {
            Purpose::Inbound => Purpose::Inbound,
            Purpose::Connect { key } => Purpose::Connect { key: key.clone() },
            Purpose::HandshakeOp(op) => Purpose::HandshakeOp(*op),
        };
        let remote = s.remote_addr.clone();
        let inbound = s.inbound;
        self.stats.handshake_failed(&err);
        if let Some(i) = self.pending_inbound.iter().position(|p| *p == stream) {
            self.pending_inbound.remove(i);
        }
        let status = inbound.then(|| err.to_string());
        self.drop_stream(stream, status);
        self.push_info_event(Event::HandshakeFailed {
            stream,
            remote,
            inbound,
            error: err.clone(),
        });
        match purpose {
            Purpose::Inbound => {}
            Purpose::Connect { key } => self.attempt_failed(&key, err),
            Purpose::HandshakeOp(op) => self.finish_handshake_op(op, Err(err)),
        }
    }

    /// Removes a stream that holds no connection state (handshaking, or just authenticated
    /// and not registered): close it and its channel.
    fn drop_stream(&mut self, stream: StreamId, error: Option<String>) {
        let Some(s) = self.streams.remove(stream.index, stream.generation) else {
            return;
        };
        self.actions
            .push_back(Action::CloseStream { stream, error });
        if let Some(dial) = s.dial
            && self.dials.remove(dial.index, dial.generation).is_some()
        {
            self.actions.push_back(Action::CloseDial { dial });
        }
    }

    // ----------------------------------------------------------------- internals: the store

    /// Spec 6 plus the crossing rule. Returns false if the connection was refused.
    fn register(
        &mut self,
        stream: StreamId,
        info: Arc<ConnectionInfo>,
        inbound: bool,
        now: Instant,
    ) -> bool {
        let total: usize = self
            .registry
            .values()
            .map(|r| 1 + usize::from(r.secondary.is_some()))
            .sum();
        if total >= self.config.max_connections {
            let err = HandshakeError::TooManyConnections;
            self.stats.handshake_failed(&err);
            let remote = info.endpoint.clone();
            self.drop_stream(stream, inbound.then(|| err.to_string()));
            self.push_info_event(Event::HandshakeFailed {
                stream,
                remote,
                inbound,
                error: err,
            });
            return false;
        }
        let pki = info.id.clone();
        if let Some(s) = self.streams.get_mut(stream.index, stream.generation) {
            s.phase = Phase::Established(Box::new(Conn {
                info: info.clone(),
                secondary: false,
                grace: None,
                buf: VecDeque::new(),
                waiting: VecDeque::new(),
                in_flight: 0,
                blocked_by: 0,
            }));
        }
        self.stats.connections_opened += 1;
        self.push_info_event(Event::Connected {
            conn: stream,
            info,
            inbound,
        });
        let Some(reg) = self.registry.get(&pki).copied() else {
            self.registry.insert(
                pki.clone(),
                Registered {
                    primary: stream,
                    secondary: None,
                },
            );
            // Messages waiting for our own attempt to this peer go first on the new
            // connection: later sends take it directly, and must not overtake them.
            if let Some(att) = self.attempts.get_mut(&pki) {
                let buf = core::mem::take(&mut att.buf);
                let waiting = core::mem::take(&mut att.waiting);
                self.absorb(stream, buf, waiting);
            }
            return true;
        };
        let old_inbound = self
            .streams
            .get(reg.primary.index, reg.primary.generation)
            .is_some_and(|s| s.inbound);
        if old_inbound == inbound || pki == self.own_pki {
            // Same initiator: a reconnection. Fabric replaces the old connection.
            self.registry.insert(
                pki.clone(),
                Registered {
                    primary: stream,
                    secondary: reg.secondary,
                },
            );
            let (buf, waiting) = self.take_queues(reg.primary);
            self.absorb(stream, buf, waiting);
            self.close_stream(reg.primary, CloseReason::Replaced);
            return true;
        }
        // Crossing dials: the stream opened by the lower PKI-ID wins on both sides.
        self.stats.crossings += 1;
        let we_are_lower = self.own_pki < pki;
        let new_wins = we_are_lower != inbound;
        let (winner, loser) = if new_wins {
            (stream, reg.primary)
        } else {
            (reg.primary, stream)
        };
        if let Some(old_secondary) = reg.secondary {
            self.registry.insert(
                pki.clone(),
                Registered {
                    primary: reg.primary,
                    secondary: None,
                },
            );
            self.close_stream(old_secondary, CloseReason::Replaced);
        }
        self.registry.insert(
            pki,
            Registered {
                primary: winner,
                secondary: Some(loser),
            },
        );
        if new_wins {
            let (buf, waiting) = self.take_queues(loser);
            self.absorb(winner, buf, waiting);
        }
        let loser_is_ours = self
            .streams
            .get(loser.index, loser.generation)
            .is_some_and(|s| !s.inbound);
        let grace = now + self.config.crossing_grace;
        if let Some(Stream {
            phase: Phase::Established(c),
            ..
        }) = self.streams.get_mut(loser.index, loser.generation)
        {
            c.secondary = true;
            if loser_is_ours {
                c.grace = Some(grace);
            }
        }
        if loser_is_ours {
            self.arm(grace, TimerKey::Grace(loser));
        }
        true
    }

    fn take_queues(&mut self, stream: StreamId) -> (VecDeque<Bytes>, VecDeque<Bytes>) {
        match self.streams.get_mut(stream.index, stream.generation) {
            Some(Stream {
                phase: Phase::Established(c),
                ..
            }) => (core::mem::take(&mut c.buf), core::mem::take(&mut c.waiting)),
            _ => (VecDeque::new(), VecDeque::new()),
        }
    }

    /// Appends queued messages to a connection, after the ones it already holds: into its
    /// send buffer while that has room and nothing waits, the rest to its wait queue. None
    /// is dropped: a send buffer also holds blocking sends (acks, `send_with_ack`,
    /// `send_wait`) that found room, which must not be lost because two queues merged (a
    /// crossing dial, a reconnection). The merged queues were each bounded, so the result
    /// is too; new blocking sends are refused until it drains below the bounds.
    fn absorb(&mut self, stream: StreamId, buf: VecDeque<Bytes>, waiting: VecDeque<Bytes>) {
        if buf.is_empty() && waiting.is_empty() {
            return;
        }
        let cap = self.config.send_buffer_size;
        let mut dropped = 0;
        if let Some(Stream {
            phase: Phase::Established(c),
            ..
        }) = self.streams.get_mut(stream.index, stream.generation)
        {
            for b in buf {
                if c.buf.len() < cap && c.waiting.is_empty() {
                    c.buf.push_back(b);
                } else {
                    c.waiting.push_back(b);
                }
            }
            c.waiting.extend(waiting);
        } else {
            dropped += (buf.len() + waiting.len()) as u64;
        }
        self.stats.dropped_overflow += dropped;
        self.pump(stream);
    }

    /// Closes an established connection and unregisters it; promotes a crossing secondary
    /// if the primary goes.
    fn close_stream(&mut self, stream: StreamId, reason: CloseReason) {
        let Some(s) = self.streams.get(stream.index, stream.generation) else {
            return;
        };
        let Phase::Established(c) = &s.phase else {
            // Not established: nothing registered.
            let err = match &reason {
                CloseReason::Stopped => HandshakeError::ShuttingDown,
                _ => HandshakeError::Cancelled,
            };
            self.fail_handshake(stream, err);
            return;
        };
        let pki = c.info.id.clone();
        let mut leftover = (c.buf.len() + c.waiting.len()) as u64;
        let write_failed = matches!(reason, CloseReason::WriteFailed(_));
        if let Some(reg) = self.registry.get(&pki).copied() {
            if reg.primary == stream {
                if let Some(sec) = reg.secondary {
                    self.registry.insert(
                        pki.clone(),
                        Registered {
                            primary: sec,
                            secondary: None,
                        },
                    );
                    if let Some(Stream {
                        phase: Phase::Established(sc),
                        ..
                    }) = self.streams.get_mut(sec.index, sec.generation)
                    {
                        sc.secondary = false;
                        sc.grace = None;
                    }
                    if !write_failed {
                        let (buf, waiting) = self.take_queues(stream);
                        leftover = 0;
                        self.absorb(sec, buf, waiting);
                    }
                } else {
                    self.registry.remove(&pki);
                }
            } else if reg.secondary == Some(stream) {
                self.registry.insert(
                    pki.clone(),
                    Registered {
                        primary: reg.primary,
                        secondary: None,
                    },
                );
            }
        }
        self.stats.dropped_on_close += leftover;
        self.stats.connections_closed += 1;
        if write_failed {
            self.presumed_dead(pki.clone());
        }
        let error = match &reason {
            CloseReason::Malformed(e) => Some(e.clone()),
            _ => None,
        };
        self.drop_stream(stream, error);
        self.push_info_event(Event::Disconnected {
            conn: stream,
            pki_id: pki,
            reason,
        });
    }

    fn attempt_failed(&mut self, key: &PkiId, err: HandshakeError) {
        let Some(att) = self.attempts.remove(key) else {
            return;
        };
        // Someone may have connected to us meanwhile under that PKI-ID: use theirs.
        if let Some(target) = self.registry.get(key).map(|r| r.primary) {
            self.absorb(target, att.buf, att.waiting);
            return;
        }
        self.stats.dropped_no_connection += (att.buf.len() + att.waiting.len()) as u64;
        for op in att.ack_waits {
            self.ack_result(op, key, Err(AckError::NoConnection(err.to_string())));
        }
        self.presumed_dead(key.clone());
    }

    // ----------------------------------------------------------------- internals: sending

    fn check_outgoing(&self, envelope: &Bytes, peers: &[RemotePeer]) -> Result<(), Error> {
        if self.stopped {
            return Err(Error::Stopped);
        }
        if peers.is_empty() {
            return Err(Error::NoPeers);
        }
        if envelope.len() > self.config.max_message_size {
            return Err(Error::MessageTooLarge {
                size: envelope.len(),
                limit: self.config.max_message_size,
            });
        }
        Ok(())
    }

    /// Puts a message on the way to a peer: its connection, the attempt in progress, or a
    /// new attempt.
    fn enqueue(
        &mut self,
        peer: &RemotePeer,
        bytes: Bytes,
        mode: Mode,
        ack_op: Option<OpId>,
    ) -> Result<(), Error> {
        if let Some(reg) = self.registry.get(&peer.pki_id) {
            return self.enqueue_on(reg.primary, bytes, mode);
        }
        let cap = self.config.send_buffer_size;
        let max_wait = self.config.max_waiting_sends;
        let new_attempt = !self.attempts.contains_key(&peer.pki_id);
        if new_attempt && self.attempts.len() + self.registry.len() >= self.config.max_connections {
            // No room for another connection: refuse rather than grow without bound. Only a
            // non-blocking send is a counted drop; a blocking one tells its caller instead.
            if mode == Mode::Drop {
                self.stats.dropped_no_connection += 1;
                return Ok(());
            }
            return Err(Error::LimitReached("connections"));
        }
        let att = self.attempts.entry(peer.pki_id.clone()).or_default();
        let res = push_bounded(&mut att.buf, &mut att.waiting, bytes, mode, cap, max_wait);
        if res.is_ok()
            && let Some(op) = ack_op
        {
            att.ack_waits.push(op);
        }
        match res {
            Err(Error::WouldBlock) if mode == Mode::Drop => self.stats.dropped_overflow += 1,
            _ => {}
        }
        if new_attempt {
            let dial = self.start_dial(
                &peer.endpoint,
                DialPurpose::Connect {
                    key: peer.pki_id.clone(),
                },
            );
            if let Some(att) = self.attempts.get_mut(&peer.pki_id) {
                att.dial = Some(dial);
            }
        }
        if mode == Mode::Drop { Ok(()) } else { res }
    }

    fn enqueue_on(&mut self, stream: StreamId, bytes: Bytes, mode: Mode) -> Result<(), Error> {
        let cap = self.config.send_buffer_size;
        let max_wait = self.config.max_waiting_sends;
        let Some(s) = self.streams.get_mut(stream.index, stream.generation) else {
            return Err(if self.streams.ever_issued(stream.index) {
                Error::ConnectionClosed
            } else {
                Error::UnknownHandle
            });
        };
        let Phase::Established(c) = &mut s.phase else {
            return Err(Error::ConnectionClosed);
        };
        let res = push_bounded(&mut c.buf, &mut c.waiting, bytes, mode, cap, max_wait);
        if res.is_err() && mode == Mode::Drop {
            self.stats.dropped_overflow += 1;
        }
        self.pump(stream);
        if mode == Mode::Drop { Ok(()) } else { res }
    }

    /// Hands the driver as many queued envelopes as the write window allows, then refills
    /// the send buffer from the wait queue.
    fn pump(&mut self, stream: StreamId) {
        let window = self.config.write_window;
        let cap = self.config.send_buffer_size;
        let Some(Stream {
            phase: Phase::Established(c),
            ..
        }) = self.streams.get_mut(stream.index, stream.generation)
        else {
            return;
        };
        loop {
            while c.buf.len() < cap.max(1) {
                match c.waiting.pop_front() {
                    Some(b) => c.buf.push_back(b),
                    None => break,
                }
            }
            if c.in_flight >= window {
                break;
            }
            let Some(envelope) = c.buf.pop_front() else {
                break;
            };
            c.in_flight += 1;
            self.actions.push_back(Action::Write { stream, envelope });
        }
    }

    // ----------------------------------------------------------------- internals: receiving

    fn on_established_envelope(&mut self, stream: StreamId, bytes: Bytes) {
        self.stats.received += 1;
        let decoded = Envelope::decode(bytes.clone()).and_then(|env| {
            let msg = GossipMessage::decode(env.payload.clone())?;
            Ok((env, msg))
        });
        let (envelope, message) = match decoded {
            Ok(x) => x,
            Err(e) => {
                self.stats.malformed += 1;
                self.close_stream(stream, CloseReason::Malformed(e.to_string()));
                return;
            }
        };
        let Some(Stream {
            phase: Phase::Established(c),
            ..
        }) = self.streams.get(stream.index, stream.generation)
        else {
            return;
        };
        let info = c.info.clone();
        if message.content.is_none() {
            self.stats.empty_messages += 1;
            return;
        }
        if let Some(gossip_message::Content::Ack(ack)) = &message.content {
            let key = (message.nonce, info.id.clone());
            match self.acks.get(&key).copied() {
                Some(op) => {
                    let result = if ack.error.is_empty() {
                        Ok(())
                    } else {
                        Err(AckError::Remote(ack.error.clone()))
                    };
                    self.ack_result(op, &info.id, result);
                }
                None => self.stats.acks_unmatched += 1,
            }
            return;
        }
        let received = ReceivedMessage {
            message,
            envelope,
            envelope_bytes: bytes,
            conn: stream,
            info,
        };
        let cap = self.config.subscription_buffer;
        let hard_cap = cap + self.config.recv_buffer_size;
        // Acceptors run once per message, in subscription slot order (deterministic).
        let targets: SmallVec<[SubscriptionId; 4]> = self
            .subs
            .iter()
            .filter(|(_, _, s)| (s.acceptor)(&received))
            .map(|(i, g, _)| SubscriptionId::from_parts(i, g))
            .collect();
        if targets.is_empty() {
            self.stats.unrouted += 1;
            return;
        }
        let n = targets.len();
        let mut received = Some(received);
        for (k, id) in targets.into_iter().enumerate() {
            let Some(sub) = self.subs.get_mut(id.index, id.generation) else {
                continue;
            };
            if sub.queue.len() >= hard_cap {
                self.stats.dropped_subscription_overflow += 1;
                continue;
            }
            let msg = if k + 1 == n {
                received.take()
            } else {
                received.clone()
            };
            let Some(msg) = msg else { continue };
            sub.queue.push_back(msg);
            if !sub.notified {
                sub.notified = true;
                self.events.push_back(Event::DeliveryReady(id));
            }
            if sub.queue.len() >= cap && !sub.blocked.contains(&stream) {
                sub.blocked.push(stream);
                if let Some(Stream {
                    phase: Phase::Established(c),
                    ..
                }) = self.streams.get_mut(stream.index, stream.generation)
                {
                    c.blocked_by += 1;
                    if c.blocked_by == 1 {
                        self.stats.read_pauses += 1;
                        self.actions.push_back(Action::PauseRead { stream });
                    }
                }
            }
        }
    }

    // ----------------------------------------------------------------- internals: operations

    fn ack_result(&mut self, op: OpId, peer: &PkiId, result: Result<(), AckError>) {
        let Some(Op::SendWithAck {
            nonce,
            min_ack,
            peers,
            ..
        }) = self.ops.get_mut(op.index, op.generation)
        else {
            return;
        };
        let Some(slot) = peers.iter_mut().find(|(p, r)| p == peer && r.is_none()) else {
            return;
        };
        slot.1 = Some(result);
        let nonce = *nonce;
        self.acks.remove(&(nonce, peer.clone()));
        let successes = peers
            .iter()
            .filter(|(_, r)| matches!(r, Some(Ok(()))))
            .count();
        let all = peers.iter().all(|(_, r)| r.is_some());
        if successes >= (*min_ack).max(1) || all {
            self.finish_send_with_ack(op);
        }
    }

    fn finish_send_with_ack(&mut self, op: OpId) {
        let Some(Op::SendWithAck { nonce, peers, .. }) = self.ops.remove(op.index, op.generation)
        else {
            return;
        };
        let mut results = Vec::with_capacity(peers.len());
        for (peer, r) in peers {
            match r {
                Some(result) => results.push(SendResult { peer, result }),
                None => {
                    self.acks.remove(&(nonce, peer));
                }
            }
        }
        self.events
            .push_back(Event::SendWithAckDone { op, results });
    }

    fn op_deadline(&mut self, op: OpId) {
        match self.ops.get_mut(op.index, op.generation) {
            Some(Op::SendWithAck { peers, .. }) => {
                for (_, r) in peers.iter_mut() {
                    if r.is_none() {
                        *r = Some(Err(AckError::Timeout));
                    }
                }
                self.finish_send_with_ack(op);
            }
            Some(Op::Handshake { dial, .. }) => {
                let dial = *dial;
                self.abort_dial(dial);
                self.finish_handshake_op(op, Err(HandshakeError::OperationTimeout));
            }
            _ => {}
        }
    }

    /// Tears down a dial and whatever stream it carries, without reporting through the
    /// dial's purpose (the caller reports).
    fn abort_dial(&mut self, dial: DialId) {
        let Some(d) = self.dials.get_mut(dial.index, dial.generation) else {
            return;
        };
        if let DialState::Streaming(stream) = d.state {
            if let Some(s) = self.streams.get_mut(stream.index, stream.generation)
                && let Phase::Handshaking { purpose, .. } = &mut s.phase
            {
                *purpose = Purpose::Inbound; // detach from the op
            }
            self.drop_stream(stream, None);
        }
        if self.dials.remove(dial.index, dial.generation).is_some() {
            self.actions.push_back(Action::CloseDial { dial });
        }
    }

    fn fail_op(&mut self, op: OpId) {
        match self.ops.get(op.index, op.generation) {
            Some(Op::Probe { .. }) => self.finish_probe(op, Err(ProbeError::Stopped)),
            Some(Op::Handshake { .. }) => {
                self.finish_handshake_op(op, Err(HandshakeError::ShuttingDown));
            }
            Some(Op::SendWithAck { .. }) => {
                if let Some(Op::SendWithAck { peers, .. }) =
                    self.ops.get_mut(op.index, op.generation)
                {
                    for (_, r) in peers.iter_mut() {
                        if r.is_none() {
                            *r = Some(Err(AckError::Stopped));
                        }
                    }
                }
                self.finish_send_with_ack(op);
            }
            None => {}
        }
    }

    fn finish_probe(&mut self, op: OpId, result: Result<(), ProbeError>) {
        if self.ops.remove(op.index, op.generation).is_some() {
            self.events.push_back(Event::ProbeDone { op, result });
        }
    }

    fn finish_handshake_op(
        &mut self,
        op: OpId,
        result: Result<Arc<ConnectionInfo>, HandshakeError>,
    ) {
        let Some(Op::Handshake { expected, dial, .. }) = self.ops.remove(op.index, op.generation)
        else {
            return;
        };
        self.abort_dial(dial);
        let result = match result {
            Ok(info) if !expected.is_empty() && info.id != expected => {
                let err = HandshakeError::PkiIdMismatch {
                    expected,
                    actual: info.id.clone(),
                };
                self.stats.handshake_failed(&err);
                Err(err)
            }
            other => other,
        };
        self.events.push_back(Event::HandshakeDone { op, result });
    }
}

/// The send-buffer rule shared by connections and attempts.
fn push_bounded(
    buf: &mut VecDeque<Bytes>,
    waiting: &mut VecDeque<Bytes>,
    bytes: Bytes,
    mode: Mode,
    cap: usize,
    max_wait: usize,
) -> Result<(), Error> {
    if buf.len() < cap && waiting.is_empty() {
        buf.push_back(bytes);
        return Ok(());
    }
    match mode {
        Mode::Drop => Err(Error::WouldBlock),
        Mode::Wait if waiting.len() < max_wait => {
            waiting.push_back(bytes);
            Ok(())
        }
        Mode::Wait => Err(Error::WouldBlock),
    }
}
