//! The comm state machine: one node's connections, handshakes, buffers and operations.
//!
//! [`Comm`] is Fabric's `commImpl` (`gossip/comm/comm_impl.go`) without goroutines. Its
//! parts live in their own modules, each with its own state and unit tests, named after
//! the part of Fabric they stand for:
//!
//! | module | Fabric | what it owns |
//! | --- | --- | --- |
//! | [`dial`] | `comm_impl.go`, `createConnection` (the connFactory); grpc-go's blocking dial | client channels: dial (retried after a back-off until the dial timeout), Ping, open a stream |
//! | [`handshake`] | `comm_impl.go`, `authenticateRemotePeer` | the signed `ConnEstablish` exchange and its checks |
//! | [`store`] | `conn.go`, `connectionStore` (`getConnection`, `onConnected`, `closeConnByPKIid`) | one connection per PKI-ID, attempts, crossing dials, identity switch |
//! | [`send`] | `conn.go`, `connection.send` / `writeToStream` | send buffers, the write window, waiting sends |
//! | [`demux`] | `demux.go`, `ChannelDeMultiplexer` | subscriptions, routing, pause/resume of reading |
//! | [`acks`] | `ack.go`, `ackSendOperation` and `interceptAcks`; `comm_impl.go`, `SendWithAck` | nonces, ack interception, aggregation |
//! | [`ops`] | `comm_impl.go`, `Probe` / `Handshake` | operations whose result comes as an event |
//! | [`timers`] | the `time.After`s of all of the above | deadlines |
//! | [`output`] | the channels `PresumedDead()`, `IdentitySwitch()` | actions and events for the driver |
//!
//! This file keeps the public API: the getters, the polls, the driver inputs
//! ([`input`](self::input)) and Fabric's API calls ([`api`](self::api)).

mod acks;
mod api;
mod demux;
mod dial;
mod handshake;
mod input;
mod ops;
mod output;
mod send;
mod store;
mod stream;
mod timers;

use crate::config::Config;
use crate::error::HandshakeError;
use crate::identity::IdentityStore;
use crate::ids::{OpId, PkiId, Slab, StreamId, SubscriptionId};
use crate::message::{ConnectionInfo, ReceivedMessage};
use crate::security::Security;
use crate::stats::Stats;
use crate::time::Instant;
use bytes::Bytes;
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;
use std::sync::Arc;

pub use demux::Acceptor;
pub use output::{Action, DeadCause, DeadPeer, Event, Output, SendResult, SwitchedPeer, WriteKind};

use acks::Acks;
use demux::Demux;
use dial::Dial;
use handshake::Handshakes;
use ops::Op;
use output::Outputs;
use store::Store;
use stream::{Phase, Stream};
use timers::Timers;

/// The core's hash maps, seeded from `Config::rng_seed` so that one seed gives one layout.
/// Their keys are PKI-IDs the security provider derived (SHA-256 under an MSP) or the
/// caller named, and nonces: foldhash's fixed global seeds are public, so bytes a remote
/// sender chose freely must not be keys here.
pub(crate) type Map<K, V> = hashbrown::HashMap<K, V, foldhash::fast::FixedState>;

pub(crate) fn new_map<K, V>(seed: u64) -> Map<K, V> {
    Map::with_hasher(foldhash::fast::FixedState::with_seed(seed))
}

/// A remote peer as the caller names it (Fabric's `RemotePeer`, `gossip/comm/comm.go`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RemotePeer {
    /// Where to dial it, `host:port`.
    pub endpoint: String,
    /// The PKI-ID it is expected to prove; empty when unknown. Connection attempts are
    /// told apart by PKI-ID, so while one to a peer of unknown PKI-ID is in progress, a
    /// message for another endpoint of unknown PKI-ID is refused
    /// ([`Error::UnknownPkiIdBusy`](crate::Error::UnknownPkiIdBusy)) or, by a
    /// non-blocking send, dropped and counted (`dropped_no_connection`), never sent to the
    /// first peer; `handshake` learns a peer's PKI-ID.
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

/// One registered connection as [`Comm::connections`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionEntry {
    /// The remote's PKI-ID.
    pub pki_id: PkiId,
    /// The connection new sends go to.
    pub primary: StreamId,
    /// The losing stream of a crossing dial, kept until one side closes it.
    pub secondary: Option<StreamId>,
}

/// What waits on one connection, as [`Comm::send_queue_len`] reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendQueueLen {
    /// Envelopes in the send buffer (Fabric's `outBuff`).
    pub buffered: usize,
    /// Blocking sends waiting for room in the send buffer.
    pub waiting: usize,
    /// Envelopes handed to the driver and not yet confirmed with `handle_sent`.
    pub in_flight: usize,
    /// Bytes of the three together, what [`Config::send_buffer_bytes`](crate::Config::send_buffer_bytes) bounds.
    pub bytes: usize,
    /// Bytes the driver confirmed written on this connection so far. With `bytes`, it
    /// places a message just queued: it is written once `written` reaches the sum of the
    /// two taken right after queueing it (messages leave in order).
    pub written: u64,
}

/// Where a message went, as [`Comm::respond_to_peer_or_drop`] reports it: a caller that
/// accounts for what it queued (the membership layer bounds the responses requesters have
/// not taken) must know the connection that holds it, which need not be the one it named.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendOutcome {
    /// Queued on this established connection.
    Queued(StreamId),
    /// Held by the connection attempt to the peer, one in progress or one this call
    /// started (a dial): it moves to the connection once the peer is connected, and is
    /// dropped, counted in `dropped_no_connection`, if the attempt fails.
    Connecting,
    /// Dropped and counted in [`Stats`](crate::Stats): a full send buffer
    /// (`dropped_overflow`), or no connection to be had (`dropped_no_connection`:
    /// `max_connections` reached, no endpoint to dial, an attempt to another peer of
    /// unknown PKI-ID in progress).
    Dropped,
}

/// How many live objects the core holds, as [`Comm::live_counts`] reports it: what a leak
/// check compares before and after.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LiveCounts {
    /// Streams, handshaking or established.
    pub streams: usize,
    /// Client channels (dials).
    pub dials: usize,
    /// Pending operations (`probe`, `handshake`, `send_with_ack`).
    pub ops: usize,
}

/// One node's gossip comm layer, sans-IO. See the crate docs for the call order.
pub struct Comm<S: Security> {
    config: Config,
    security: S,
    own_pki: PkiId,
    own_identity: Bytes,
    rng: ChaCha8Rng,
    /// The jitter of dial back-offs: the seed's generator on a stream of its own, so that
    /// how many dials fail does not change the nonces `rng` draws.
    dial_rng: ChaCha8Rng,
    stopped: bool,
    /// Whether the hosted layer is the caller now ([`Comm::as_layer`]): the messages it
    /// sends are the layer's own, which a flush before stopping does not wait for.
    for_layer: bool,
    /// Every stream, handshaking or established; also the connections' own state.
    streams: Slab<StreamId, Stream>,
    /// The connFactory's client channels.
    dials: Slab<crate::ids::DialId, Dial>,
    /// Probe, Handshake and SendWithAck operations.
    ops: Slab<OpId, Op>,
    /// The connection store.
    store: Store,
    /// The demultiplexer.
    demux: Demux,
    /// Acks awaited by SendWithAck operations.
    acks: Acks,
    /// Handshake state shared by all streams.
    handshakes: Handshakes,
    /// The connection lines (registered, closed, identity switch, refused for too many):
    /// 20 a second, each saying how many before it were not logged. One insider's alive
    /// messages advertising a live member's endpoint made every other node dial it,
    /// switch identity and replace its connection, about 7 lines each, unbounded (an
    /// attack, 2026-12-07). Counters count every one.
    conn_log: crate::time::LogBudget,
    identities: IdentityStore,
    /// When the identity store is next swept for unused identities, if it is to be.
    usage_sweep: Option<Instant>,
    timers: Timers,
    out: Outputs,
    stats: Stats,
    now: Instant,
}

impl<S: Security> core::fmt::Debug for Comm<S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Comm")
            .field("pki_id", &self.own_pki)
            .field("stopped", &self.stopped)
            .field("streams", &self.streams.len())
            .field("connections", &self.store.len())
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
        let seed = config.rng_seed;
        let mut identities =
            IdentityStore::new(config.identity_store_capacity, own_pki.clone(), seed ^ 3);
        identities.put(&security, &own_pki, &own_identity, now, |_| true)?;
        Ok(Comm {
            rng: ChaCha8Rng::seed_from_u64(seed),
            dial_rng: {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                rng.set_stream(1);
                rng
            },
            store: Store::new(seed),
            acks: Acks::new(seed ^ 2),
            out: Outputs::new(config.max_queued_events, config.presumed_dead_buffer),
            config,
            security,
            own_pki,
            own_identity,
            stopped: false,
            for_layer: false,
            streams: Slab::default(),
            dials: Slab::default(),
            ops: Slab::default(),
            demux: Demux::default(),
            handshakes: Handshakes::default(),
            conn_log: crate::time::LogBudget::default(),
            identities,
            usage_sweep: None,
            timers: Timers::default(),
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

    /// The configuration, to change under the running core: for the tests of what watches
    /// a core (the simulator's invariant checker), which must see a core past the bounds
    /// its configuration sets, where no call of the API can take a correct core.
    #[cfg(feature = "testing")]
    pub fn config_mut_for_tests(&mut self) -> &mut Config {
        &mut self.config
    }

    /// The security provider.
    pub fn security(&self) -> &S {
        &self.security
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The latest instant any input carried: the core's idea of "now", which a layer
    /// stacked on it (see [`crate::Stack`]) uses for calls it makes between inputs.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Whether `stop` was called.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// The registered (primary) connection to `pki_id`, if any.
    pub fn connection(&self, pki_id: &PkiId) -> Option<StreamId> {
        self.store.primary(pki_id)
    }

    /// Whether a connection attempt to `pki_id` is in progress (a dial, its handshake, or
    /// a dial waiting out its back-off), holding what was sent to the peer meanwhile.
    pub fn is_connecting(&self, pki_id: &PkiId) -> bool {
        self.store.has_attempt(pki_id)
    }

    /// Every registered connection, sorted by PKI-ID.
    pub fn connections(&self) -> Vec<ConnectionEntry> {
        self.store.entries()
    }

    /// What is known about the remote of an established connection.
    pub fn connection_info(&self, conn: StreamId) -> Option<&Arc<ConnectionInfo>> {
        match &self.streams.get(conn)?.phase {
            Phase::Established(c) => Some(&c.info),
            Phase::Handshaking { .. } => None,
        }
    }

    /// Messages queued on a connection (send buffer, wait queue, in flight).
    pub fn send_queue_len(&self, conn: StreamId) -> Option<SendQueueLen> {
        match &self.streams.get(conn)?.phase {
            Phase::Established(c) => Some(c.queue.len()),
            Phase::Handshaking { .. } => None,
        }
    }

    /// Messages accepted by a send and not yet written or dropped: in send buffers and wait
    /// queues, handed to the driver and unconfirmed, or held by a connection attempt. At
    /// zero every send so far was confirmed written by the driver or dropped (counted in
    /// [`Stats`](crate::Stats); the few a driver had in hand when their stream closed are
    /// neither, their fate being the transport's). [`Comm::stop`] (Fabric's `Stop`) drops
    /// them; what a tool waits for before it stops is [`Comm::unsent_to_flush`].
    pub fn unsent(&self) -> usize {
        self.unsent_on_connections() + self.store.attempts_pending()
    }

    /// What an application flushes before it stops: [`Comm::unsent`] less the messages of
    /// connection attempts that hold only the hosted layer's messages. A layer's gossip
    /// to a member that has just left (the membership layer keeps sending it alive
    /// messages until it is presumed dead or expires) waits in an attempt retrying with
    /// back-off for up to the dial timeout, and a new attempt starts with the layer's next
    /// message: waiting for those held a node's stop for seconds, for messages that the
    /// layer, stopping with the node, no longer needs. An attempt holding any message of
    /// the application's is waited for whole (its messages leave in order), and so are
    /// established connections' queues, which drain at the network's pace.
    pub fn unsent_to_flush(&self) -> usize {
        self.unsent_on_connections() + self.store.attempts_pending_for_application()
    }

    fn unsent_on_connections(&self) -> usize {
        self.streams
            .iter()
            .filter_map(|(_, s)| match &s.phase {
                Phase::Established(c) => Some(c.queue.len()),
                Phase::Handshaking { .. } => None,
            })
            .map(|l| l.buffered + l.waiting + l.in_flight)
            .sum()
    }

    /// Runs `f` on behalf of the hosted layer ([`crate::Stack`] calls every layer input
    /// through it): the messages sent meanwhile are the layer's, which
    /// [`Comm::unsent_to_flush`] tells apart from the application's.
    pub(crate) fn as_layer<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> R {
        let outer = core::mem::replace(&mut self.for_layer, true);
        let r = f(self);
        self.for_layer = outer;
        r
    }

    /// Live streams (handshaking or established), live dials, pending operations.
    pub fn live_counts(&self) -> LiveCounts {
        LiveCounts {
            streams: self.streams.len(),
            dials: self.dials.len(),
            ops: self.ops.len(),
        }
    }

    /// Whether `stream` names a live stream.
    pub fn is_live_stream(&self, stream: StreamId) -> bool {
        self.streams.get(stream).is_some()
    }

    /// Deliveries waiting in a subscription's queue.
    pub fn delivery_queue_len(&self, sub: SubscriptionId) -> usize {
        self.demux.queue_len(sub)
    }

    /// Panics unless the identity store's two maps agree (the fuzz targets' invariants).
    #[cfg(feature = "fuzzing")]
    pub(crate) fn check_identity_store(&self) {
        self.identities.check_ages();
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

    /// The next network action. Prefer [`Comm::poll_output`], which also orders actions,
    /// events and the time-out; this stays for drivers written against it.
    #[inline]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.out.pop_action()
    }

    /// The next application event. Prefer [`Comm::poll_output`].
    #[inline]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.out.pop_event()
    }

    /// The next delivery of a subscription, in arrival order. Taking one may resume reading
    /// of streams that were paused for this subscription: the `ResumeRead` comes out of the
    /// next [`Comm::poll_output`].
    #[inline]
    pub fn poll_delivery(&mut self, sub: SubscriptionId) -> Option<ReceivedMessage> {
        self.take_delivery(sub).map(|m| *m)
    }

    /// [`Comm::poll_delivery`], leaving the message in the allocation the core decoded it
    /// into: a `ReceivedMessage` is hundreds of bytes, so a driver that queues deliveries
    /// (as the tonic driver's `Incoming` does) moves a pointer instead.
    pub fn poll_delivery_boxed(&mut self, sub: SubscriptionId) -> Option<Box<ReceivedMessage>> {
        self.take_delivery(sub)
    }

    /// When the core next needs [`Comm::handle_timeout`]. Deadlines of objects that are
    /// gone are discarded here, so a driver is not woken for nothing. (An early
    /// `handle_timeout` is still harmless.)
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.next_deadline()
    }

    /// Everything the driver must see, in the one order that is always right: every
    /// pending [`Action`] first (network work, including a `ResumeRead` queued by
    /// [`Comm::poll_delivery`] or [`Comm::unsubscribe`]), then every pending [`Event`], and
    /// only when neither is left, [`Output::Timeout`] with the next deadline. Call it after
    /// every input, API call and `poll_delivery` until it returns `Output::Timeout`; that
    /// value ends the drain.
    pub fn poll_output(&mut self) -> Output {
        if let Some(a) = self.out.pop_action() {
            return Output::Action(a);
        }
        if let Some(e) = self.out.pop_event() {
            return Output::Event(e);
        }
        Output::Timeout(self.next_deadline())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{conn_establish, drain};
    use crate::{Event, TestOnlyHmacSecurity};
    use core::hash::BuildHasher;

    const ME: &str = "127.0.0.1:7050";
    const REMOTE: &str = "127.0.0.1:7051";

    fn now() -> Instant {
        Instant::from_unix_secs(1_700_000_000)
    }

    fn core() -> Comm<TestOnlyHmacSecurity> {
        Comm::new(Config::default(), TestOnlyHmacSecurity::new(ME), now()).unwrap()
    }

    /// The core's maps hash with the seed they are given (`Config::rng_seed`): one seed
    /// gives one layout, another seed another, rather than foldhash's one fixed seed for
    /// every node.
    #[test]
    fn maps_hash_with_the_seed_they_are_given() {
        let key = PkiId::from(REMOTE);
        let (one, two) = (new_map::<PkiId, ()>(1), new_map::<PkiId, ()>(2));
        assert_ne!(one.hasher().hash_one(&key), two.hasher().hash_one(&key));
        assert_eq!(
            one.hasher().hash_one(&key),
            new_map::<PkiId, ()>(1).hasher().hash_one(&key)
        );
    }

    /// `identity` is the serialized identity the provider holds, the one the node proves
    /// in its handshakes and a layer embeds in its own messages (the membership layer's
    /// alive messages).
    #[test]
    fn identity_is_the_providers_own_identity() {
        let c = core();
        assert_eq!(c.identity(), &TestOnlyHmacSecurity::new(ME).own_identity());
        assert_eq!(c.pki_id(), &PkiId::from(ME));
    }

    /// `is_stopped` turns true with `stop`, and only then.
    #[test]
    fn is_stopped_says_whether_stop_was_called() {
        let mut c = core();
        assert!(!c.is_stopped());
        c.stop(now());
        assert!(c.is_stopped());
    }

    /// `poll_action` and `poll_event`, kept for drivers written against them, give the
    /// actions and the events `poll_output` gives, each in its order.
    #[test]
    fn the_separate_polls_give_what_poll_output_gives() {
        let feed = |c: &mut Comm<TestOnlyHmacSecurity>| {
            let s = c.accept_stream(now(), REMOTE, None).unwrap();
            let hello = conn_establish(REMOTE.as_bytes(), REMOTE.as_bytes(), b"", false, true);
            c.handle_envelope(now(), s, hello).unwrap();
            c.close_conn(now(), &PkiId::from(REMOTE));
        };
        let (mut one, mut two) = (core(), core());
        feed(&mut one);
        feed(&mut two);
        let (actions, events) = drain(&mut one);
        assert!(events.iter().any(|e| matches!(e, Event::Connected { .. })));
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::Disconnected { .. }))
        );
        let polled_actions: Vec<_> = core::iter::from_fn(|| two.poll_action()).collect();
        let polled_events: Vec<_> = core::iter::from_fn(|| two.poll_event()).collect();
        assert_eq!(polled_actions, actions);
        // Events are not `PartialEq`: compared as the harness prints them.
        let fmt = |e: &[Event]| e.iter().map(crate::testing::fmt_event).collect::<Vec<_>>();
        assert_eq!(fmt(&polled_events), fmt(&events));
    }
}
