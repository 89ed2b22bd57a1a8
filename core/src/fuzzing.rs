//! Fuzzing entry points, shared by the cargo-fuzz targets in `fuzz/` and by the corpus
//! replay test (`core/tests/fuzz_corpus.rs`), so that every input the fuzzers found
//! interesting is also an ordinary test on stable.
//!
//! Each entry point takes raw bytes and must not panic on any of them: a panic is either a
//! bug in the core or a failed `assert!` of an invariant, and both are findings. The
//! structured targets read their input one byte at a time through
//! [`arbitrary::Unstructured`] (missing bytes read as zero), which keeps the format stable
//! and lets [`encode_ops`] and [`encode_handshake`] write meaningful seeds.
//!
//! Compiled with `--cfg fuzzing` (cargo fuzz) or the `fuzzing` feature.

use crate::{
    AckError, Action, CertHash, Comm, Config, DialId, Error, Event, Instant, OpId, PkiId,
    RemotePeer, SignedMessage, Stats, StreamEnd, StreamId, SubscriptionId, TestOnlyHmacSecurity,
    TlsHashes, verify_envelope,
};
use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use core::time::Duration;
use fabric_gossip_proto::gossip::{
    Acknowledgement, ConnEstablish, DataMessage, Envelope, GossipMessage, Payload, SecretEnvelope,
    gossip_message,
};
use prost::Message;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

// ------------------------------------------------------------------------ round trips

/// Decodes an `Envelope`, re-encodes it and compares what must match: the re-encoding
/// decodes to the same value and re-encodes to the same bytes (byte equality with the input
/// only holds for canonical input, since prost drops unknown fields). Also checks that
/// [`SignedMessage::from_envelope_bytes`] keeps the received bytes exactly and that
/// [`verify_envelope`] accepts exactly the envelopes an independent check accepts.
pub fn envelope(data: &[u8]) {
    let input = Bytes::copy_from_slice(data);
    let Ok(env) = Envelope::decode(input.clone()) else {
        assert!(SignedMessage::from_envelope_bytes(input).is_err());
        return;
    };
    let first = env.encode_to_vec();
    assert_eq!(first.len(), env.encoded_len());
    assert!(first.len() <= data.len(), "re-encoding never grows");
    let again = Envelope::decode(first.as_slice()).expect("a re-encoding decodes");
    assert_eq!(again, env);
    assert_eq!(again.encode_to_vec(), first);

    // The core's view: a received envelope is kept byte for byte.
    match SignedMessage::from_envelope_bytes(input.clone()) {
        Ok(m) => {
            assert_eq!(m.envelope_bytes(), &input);
            let msg = GossipMessage::decode(env.payload.clone()).expect("decoded once already");
            assert_eq!(m.message(), &msg);
        }
        Err(_) => assert!(GossipMessage::decode(env.payload.clone()).is_err()),
    }

    // Verification with Fabric's test provider, against an independent oracle.
    let sec = TestOnlyHmacSecurity::new("fuzz");
    let verifies = |payload: &[u8], sig: &[u8]| {
        !payload.is_empty() && !sig.is_empty() && sig == TestOnlyHmacSecurity::hmac(payload)
    };
    let expected = match (&env.secret_envelope, verifies(&env.payload, &env.signature)) {
        (_, false) => false,
        (None, true) => true,
        (Some(s), true) => verifies(&s.payload, &s.signature),
    };
    assert_eq!(verify_envelope(&sec, b"fuzz", &env).is_ok(), expected);
}

/// Decodes a `GossipMessage` (any content type), re-encodes and compares as [`envelope`]
/// does; then signs and noop-signs it and checks both come back intact, and hands it to an
/// established connection of a core, which must deliver it unchanged, intercept it as an
/// ack, or drop it as empty, and keep the connection either way.
pub fn gossip_message(data: &[u8]) {
    let Ok(msg) = GossipMessage::decode(data) else {
        return;
    };
    let first = msg.encode_to_vec();
    assert_eq!(first.len(), msg.encoded_len());
    let again = GossipMessage::decode(first.as_slice()).expect("a re-encoding decodes");
    assert_eq!(again, msg);
    assert_eq!(again.encode_to_vec(), first);
    assert_eq!(
        msg.content_kind().map(|k| k.as_str()),
        msg.content.as_ref().map(|_| msg.content_name())
    );

    let sec = TestOnlyHmacSecurity::new(PEERS[0]);
    let signed = SignedMessage::sign(msg.clone(), &sec).expect("the test provider signs");
    let back = SignedMessage::from_envelope_bytes(signed.envelope_bytes().clone())
        .expect("our own envelope decodes");
    assert_eq!(back.message(), &msg);
    let env = Envelope::decode(signed.envelope_bytes().clone()).expect("decodes");
    assert_eq!(
        verify_envelope(&sec, PEERS[0].as_bytes(), &env).is_ok(),
        !first.is_empty()
    );
    let noop = SignedMessage::noop(msg.clone());

    // Through the core's receive path.
    let cfg = Config {
        max_message_size: usize::MAX,
        ..Config::default()
    };
    let mut d = Driver::new(cfg, 0);
    let sub = d.subscribe(0);
    let s = d.accept(0, 0);
    d.envelope(s, d_hello(0, true, 0));
    assert!(d.conn_pki.contains_key(&s), "the valid handshake registers");
    let before = d.comm.stats().clone();
    d.envelope(s, noop.envelope_bytes().clone());
    let after = d.comm.stats().clone();
    assert_eq!(after.received, before.received + 1);
    assert!(d.comm.is_live_stream(s), "a decodable message never closes");
    match &msg.content {
        None => assert_eq!(after.empty_messages, before.empty_messages + 1),
        Some(gossip_message::Content::Ack(_)) => {
            assert_eq!(after.acks_unmatched, before.acks_unmatched + 1);
        }
        Some(_) => {
            let got = d.comm.poll_delivery(sub).expect("delivered");
            d.polled += 1;
            assert_eq!(got.message, msg);
            assert_eq!(&got.envelope_bytes, noop.envelope_bytes());
            assert_eq!(got.conn, s);
        }
    }
    d.check();
}

// ------------------------------------------------------------------------ the cast

/// The core under test.
const ME: &str = "m-local:7051";
/// Remote peers (test provider: identity = PKI-ID = endpoint). `a` sorts below `ME` and
/// `y`/`z` above it, so both branches of the crossing rule are reachable; the last one's
/// identity expires three seconds in.
const PEERS: [&str; 5] = [
    "a-peer:7051",
    "b-peer:7051",
    "y-peer:7051",
    "z-peer:7051",
    "e-expiring:7051",
];
/// An identity the provider refuses, and one that expired before the run.
const REJECTED: &str = "rejected:7051";
const EXPIRED: &str = "expired:7051";

fn t0() -> Instant {
    Instant::from_unix_secs(1_700_000_000)
}

fn security() -> TestOnlyHmacSecurity {
    TestOnlyHmacSecurity::new(ME)
        .rejecting(Bytes::from_static(REJECTED.as_bytes()))
        .expiring(
            Bytes::from_static(EXPIRED.as_bytes()),
            t0() - Duration::from_secs(1),
        )
        .expiring(
            Bytes::from_static(PEERS[4].as_bytes()),
            t0() + Duration::from_secs(3),
        )
}

/// The TLS certificate hash peer `k` presents as a client (`inbound` streams, from our
/// side) or as a server. Index `PEERS.len()` is our own.
fn cert(k: usize, client: bool) -> CertHash {
    let base = if client { 0x10 } else { 0x80 };
    [base + k as u8; 32]
}

const WRONG_CERT: CertHash = [0xee; 32];

fn own_tls() -> TlsHashes {
    TlsHashes {
        client_cert_hash: cert(PEERS.len(), true),
        server_cert_hash: cert(PEERS.len(), false),
    }
}

fn envelope_bytes(payload: Vec<u8>, signature: Vec<u8>, secret: Option<SecretEnvelope>) -> Bytes {
    Bytes::from(
        Envelope {
            payload: payload.into(),
            signature: signature.into(),
            secret_envelope: secret,
        }
        .encode_to_vec(),
    )
}

fn conn_message(pki: &[u8], identity: &[u8], hash: &[u8], probe: bool) -> GossipMessage {
    GossipMessage {
        tag: gossip_message::Tag::Empty as i32,
        content: Some(gossip_message::Content::Conn(ConnEstablish {
            pki_id: Bytes::copy_from_slice(pki),
            identity: Bytes::copy_from_slice(identity),
            tls_cert_hash: Bytes::copy_from_slice(hash),
            probe,
        })),
        ..Default::default()
    }
}

/// A valid, signed ConnEstablish of peer `k` (`PEERS.len()` and above: `ME`), with the
/// certificate hash of `cert_kind` (0: the right one for the role, 1: wrong, 2: empty).
fn d_hello(k: usize, inbound: bool, cert_kind: u8) -> Bytes {
    let name = PEERS.get(k).copied().unwrap_or(ME);
    let hash = match cert_kind % 3 {
        0 => cert(k.min(PEERS.len()), inbound).to_vec(),
        1 => WRONG_CERT.to_vec(),
        _ => Vec::new(),
    };
    let payload = conn_message(name.as_bytes(), name.as_bytes(), &hash, false).encode_to_vec();
    let sig = TestOnlyHmacSecurity::hmac(&payload).to_vec();
    envelope_bytes(payload, sig, None)
}

/// Marks the data messages the harness sends, so order checks ignore look-alikes.
const DATA_MARK: &[u8] = b"fuzz-seq";

fn data_message(seq: u64) -> GossipMessage {
    GossipMessage {
        content: Some(gossip_message::Content::DataMsg(DataMessage {
            payload: Some(Payload {
                seq_num: seq,
                data: Bytes::from_static(DATA_MARK),
                private_data: vec![],
            }),
        })),
        ..Default::default()
    }
}

fn data_seq(msg: &GossipMessage) -> Option<u64> {
    match &msg.content {
        Some(gossip_message::Content::DataMsg(DataMessage { payload: Some(p) }))
            if p.data.as_ref() == DATA_MARK =>
        {
            Some(p.seq_num)
        }
        _ => None,
    }
}

fn is_conn_establish(envelope: &Bytes) -> bool {
    SignedMessage::from_envelope_bytes(envelope.clone())
        .is_ok_and(|m| matches!(m.message().content, Some(gossip_message::Content::Conn(_))))
}

/// Every counter of `Stats`, destructured so that a new field fails to compile here until
/// it is added to the monotonicity check.
fn counters(s: &Stats) -> Vec<u64> {
    let Stats {
        sent,
        received,
        dropped_overflow,
        dropped_on_close,
        dropped_no_connection,
        dropped_subscription_overflow,
        dropped_on_stop,
        unrouted,
        empty_messages,
        acks_unmatched,
        presumed_dead_dropped,
        oversized,
        malformed,
        handshakes_ok,
        handshake_failures,
        probed,
        connections_opened,
        connections_closed,
        crossings,
        presumed_dead,
        identity_switches,
        read_pauses,
        events_dropped,
    } = s;
    let mut v = vec![
        *sent,
        *received,
        *dropped_overflow,
        *dropped_on_close,
        *dropped_no_connection,
        *dropped_subscription_overflow,
        *dropped_on_stop,
        *unrouted,
        *empty_messages,
        *acks_unmatched,
        *presumed_dead_dropped,
        *oversized,
        *malformed,
        *handshakes_ok,
        *probed,
        *connections_opened,
        *connections_closed,
        *crossings,
        *presumed_dead,
        *identity_switches,
        *read_pauses,
        *events_dropped,
    ];
    v.extend_from_slice(handshake_failures);
    v
}

// ------------------------------------------------------------------------ the driver

#[derive(Debug, Default)]
struct StreamState {
    inbound: bool,
    /// Which remote peer it leads to (index into `PEERS`; `PEERS.len()` = ourselves).
    peer: usize,
    closed: bool,
    writes: usize,
    paused: bool,
}

/// A driver that checks the core after every input: it carries out nothing on a network,
/// but records every handle the core issues and closes, and every unit of work it takes
/// on, so that what comes out can be checked against what went in.
struct Driver {
    comm: Comm<TestOnlyHmacSecurity>,
    now: Instant,
    streams: BTreeMap<StreamId, StreamState>,
    dials: BTreeMap<DialId, (usize, bool)>,
    /// Handles in the order they were issued: what `Op` indices select from.
    stream_order: Vec<StreamId>,
    dial_order: Vec<DialId>,
    sub_order: Vec<SubscriptionId>,
    subs: BTreeMap<SubscriptionId, Arc<AtomicU64>>,
    live_subs: BTreeSet<SubscriptionId>,
    ops: BTreeMap<OpId, usize>,
    pending_inbound: BTreeSet<StreamId>,
    conn_pki: BTreeMap<StreamId, PkiId>,
    nonces: Vec<u64>,
    last: Vec<u64>,
    stopped: bool,
    // What the core promised to send, and where it went.
    units: u64,
    wouldblock: u64,
    data_writes: u64,
    // What the core promised to deliver, and where it went.
    polled: u64,
    discarded: u64,
    /// Arrival number of every envelope handed in, by the address of its bytes (a received
    /// message keeps the very `Bytes` it arrived in), and the last one each subscription
    /// was given: deliveries must come in arrival order.
    arrivals: BTreeMap<usize, u64>,
    last_arrival: BTreeMap<SubscriptionId, u64>,
    arrival: u64,
    seq: u64,
}

impl Driver {
    fn new(config: Config, tls_on: u8) -> Self {
        let config = if tls_on & 1 == 1 {
            config.with_tls(own_tls())
        } else {
            config
        };
        let comm = Comm::new(config, security(), t0()).expect("own identity is valid");
        let last = counters(comm.stats());
        Driver {
            comm,
            now: t0(),
            streams: BTreeMap::new(),
            stream_order: Vec::new(),
            dial_order: Vec::new(),
            sub_order: Vec::new(),
            dials: BTreeMap::new(),
            subs: BTreeMap::new(),
            live_subs: BTreeSet::new(),
            ops: BTreeMap::new(),
            pending_inbound: BTreeSet::new(),
            conn_pki: BTreeMap::new(),
            nonces: Vec::new(),
            last,
            stopped: false,
            units: 0,
            wouldblock: 0,
            data_writes: 0,
            polled: 0,
            discarded: 0,
            arrivals: BTreeMap::new(),
            last_arrival: BTreeMap::new(),
            arrival: 0,
            seq: 0,
        }
    }

    /// Feeds one driver input naming a handle: `Err` must mean exactly "that handle is dead".
    fn input(
        &mut self,
        f: impl FnOnce(&mut Comm<TestOnlyHmacSecurity>, Instant) -> Result<(), Error>,
    ) {
        let r = f(&mut self.comm, self.now);
        assert!(matches!(r, Ok(()) | Err(Error::UnknownHandle)), "{r:?}");
        self.drain();
    }

    /// Hands an envelope to the core, noting its arrival number.
    fn feed(&mut self, s: StreamId, bytes: Bytes) -> Result<(), Error> {
        self.arrival += 1;
        self.arrivals.insert(bytes.as_ptr() as usize, self.arrival);
        self.comm.handle_envelope(self.now, s, bytes)
    }

    /// [`Driver::feed`], then drain; `Err` must mean the stream is dead.
    fn envelope(&mut self, s: StreamId, bytes: Bytes) {
        let r = self.feed(s, bytes);
        assert!(matches!(r, Ok(()) | Err(Error::UnknownHandle)), "{r:?}");
        self.drain();
    }

    fn peer_of_endpoint(endpoint: &str) -> usize {
        PEERS
            .iter()
            .position(|p| *p == endpoint)
            .unwrap_or(PEERS.len())
    }

    fn accept(&mut self, peer: usize, cert_kind: u8) -> StreamId {
        self.try_accept(peer, cert_kind)
            .expect("a running core accepts")
    }

    fn try_accept(&mut self, peer: usize, cert_kind: u8) -> Option<StreamId> {
        let hash = match cert_kind % 3 {
            0 => Some(cert(peer, true)),
            1 => None,
            _ => Some(WRONG_CERT),
        };
        let addr = PEERS.get(peer).copied().unwrap_or(ME);
        let r = self.comm.accept_stream(self.now, addr, hash);
        match r {
            Ok(s) => {
                assert!(!self.stopped);
                assert!(!self.streams.contains_key(&s), "a handle is never reissued");
                self.stream_order.push(s);
                self.streams.insert(
                    s,
                    StreamState {
                        inbound: true,
                        peer,
                        ..Default::default()
                    },
                );
                self.pending_inbound.insert(s);
                self.drain();
                Some(s)
            }
            Err(e) => {
                assert!(self.stopped && e == Error::Stopped, "{e:?}");
                self.drain();
                None
            }
        }
    }

    fn subscribe(&mut self, filter: u8) -> SubscriptionId {
        let hits = Arc::new(AtomicU64::new(0));
        let h = hits.clone();
        let acceptor = move |m: &crate::ReceivedMessage| {
            let take = match (filter % 3, data_seq(&m.message)) {
                (0, _) => true,
                (1, Some(s)) => s.is_multiple_of(2),
                (2, Some(s)) => s % 2 == 1,
                _ => false,
            };
            if take {
                h.fetch_add(1, Ordering::Relaxed);
            }
            take
        };
        let sub = self.comm.subscribe(Box::new(acceptor));
        let sub = match sub {
            Ok(s) => s,
            Err(e) => {
                assert!(
                    matches!(e, Error::Stopped | Error::LimitReached(_)),
                    "{e:?}"
                );
                assert_eq!(self.stopped, e == Error::Stopped);
                return SubscriptionId::from_parts(u32::MAX, 0);
            }
        };
        assert!(!self.subs.contains_key(&sub), "a handle is never reissued");
        self.subs.insert(sub, hits);
        self.sub_order.push(sub);
        self.live_subs.insert(sub);
        sub
    }

    fn poll(&mut self, sub: SubscriptionId, n: usize) {
        for _ in 0..n {
            let Some(m) = self.comm.poll_delivery(sub) else {
                break;
            };
            assert!(!self.stopped, "nothing is delivered after stop");
            assert!(self.live_subs.contains(&sub));
            self.polled += 1;
            if let Some(&n) = self.arrivals.get(&(m.envelope_bytes.as_ptr() as usize)) {
                let last = self.last_arrival.insert(sub, n);
                assert!(last.is_none_or(|l| l < n), "deliveries in arrival order");
            }
            let pki = self
                .conn_pki
                .get(&m.conn)
                .expect("delivered from a connection");
            assert_eq!(&m.info.id, pki, "the sender is who the connection proved");
            let again = SignedMessage::from_envelope_bytes(m.envelope_bytes.clone())
                .expect("a delivered envelope decodes");
            assert_eq!(again.message(), &m.message);
        }
        self.drain();
    }

    /// Drains actions and events in the documented order, checking each.
    fn drain(&mut self) {
        while let Some(a) = self.comm.poll_action() {
            assert!(
                !self.stopped || matches!(a, Action::CloseStream { .. } | Action::CloseDial { .. }),
                "no network work after stop: {a:?}"
            );
            self.on_action(a);
        }
        let mut stopped_now = false;
        while let Some(e) = self.comm.poll_event() {
            match &e {
                Event::Stopped => {
                    assert!(!self.stopped, "Stopped once");
                    stopped_now = true;
                }
                Event::DeliveryReady(sub) => {
                    assert!(
                        !self.stopped && !stopped_now,
                        "nothing delivered after stop"
                    );
                    assert!(self.live_subs.contains(sub));
                }
                Event::Connected {
                    conn,
                    info,
                    inbound,
                } => {
                    assert!(!self.stopped && !stopped_now);
                    let st = self.streams.get(conn).expect("an issued stream");
                    assert_eq!(st.inbound, *inbound);
                    self.pending_inbound.remove(conn);
                    self.conn_pki.insert(*conn, info.id.clone());
                }
                Event::Disconnected { conn, pki_id, .. } => {
                    assert_eq!(self.conn_pki.get(conn), Some(pki_id));
                    assert!(self.streams.get(conn).is_some_and(|s| s.closed));
                }
                Event::HandshakeFailed { stream, .. } => {
                    assert!(self.streams.get(stream).is_some_and(|s| s.closed));
                    assert!(
                        !self.conn_pki.contains_key(stream),
                        "failed after Connected"
                    );
                }
                Event::ProbeDone { op, .. } | Event::HandshakeDone { op, .. } => {
                    assert!(self.ops.remove(op).is_some(), "one result per operation");
                }
                Event::SendWithAckDone { op, results } => {
                    let n = self.ops.remove(op).expect("one result per operation");
                    assert!(results.len() <= n);
                    let peers: BTreeSet<_> = results.iter().map(|r| &r.peer).collect();
                    assert_eq!(peers.len(), results.len(), "one result per peer");
                    // Peers refused at once (the caller is told, nothing is counted).
                    self.wouldblock += results
                        .iter()
                        .filter(|r| match &r.result {
                            Err(AckError::WouldBlock) => true,
                            Err(AckError::NoConnection(e)) => e.starts_with("limit reached"),
                            _ => false,
                        })
                        .count() as u64;
                }
                Event::PresumedDead(_) | Event::IdentitySwitch(_) => {}
            }
        }
        if stopped_now {
            self.stopped = true;
        }
    }

    fn on_action(&mut self, a: Action) {
        let live_stream = |d: &Self, s: &StreamId| {
            let st = d.streams.get(s).expect("an action names an issued stream");
            assert!(!st.closed, "no action names a stream after its CloseStream");
        };
        let live_dial = |d: &Self, x: &DialId| {
            let st = d.dials.get(x).expect("an action names an issued dial");
            assert!(!st.1, "no action names a dial after its CloseDial");
        };
        match a {
            Action::Dial { dial, endpoint } => {
                assert!(
                    !self.dials.contains_key(&dial),
                    "a handle is never reissued"
                );
                self.dial_order.push(dial);
                self.dials
                    .insert(dial, (Self::peer_of_endpoint(&endpoint), false));
            }
            Action::Ping { dial } => live_dial(self, &dial),
            Action::OpenStream { dial, stream } => {
                live_dial(self, &dial);
                assert!(
                    !self.streams.contains_key(&stream),
                    "a handle is never reissued"
                );
                let peer = self.dials[&dial].0;
                self.stream_order.push(stream);
                self.streams.insert(
                    stream,
                    StreamState {
                        inbound: false,
                        peer,
                        ..Default::default()
                    },
                );
            }
            Action::Write { stream, envelope } => {
                live_stream(self, &stream);
                let handshake = is_conn_establish(&envelope);
                let st = self.streams.get_mut(&stream).expect("checked");
                assert_eq!(handshake, st.writes == 0, "a ConnEstablish first, once");
                st.writes += 1;
                if !handshake {
                    self.data_writes += 1;
                    if let Ok(m) = SignedMessage::from_envelope_bytes(envelope)
                        && m.message().nonce != 0
                    {
                        if self.nonces.len() >= 16 {
                            self.nonces.remove(0);
                        }
                        self.nonces.push(m.message().nonce);
                    }
                }
            }
            Action::PauseRead { stream } | Action::ResumeRead { stream } => {
                live_stream(self, &stream);
                let pause = matches!(a, Action::PauseRead { .. });
                let st = self.streams.get_mut(&stream).expect("checked");
                assert_ne!(st.paused, pause, "PauseRead and ResumeRead alternate");
                st.paused = pause;
            }
            Action::CloseStream { stream, .. } => {
                live_stream(self, &stream);
                if let Some(st) = self.streams.get_mut(&stream) {
                    st.closed = true;
                }
                self.pending_inbound.remove(&stream);
            }
            Action::CloseDial { dial } => {
                live_dial(self, &dial);
                if let Some(d) = self.dials.get_mut(&dial) {
                    d.1 = true;
                }
            }
        }
    }

    /// The core's invariants, checked after every input.
    fn check(&mut self) {
        let c = &self.comm;
        let cfg = c.config().clone();
        // At most one registered (primary) connection per PKI-ID, each live and proving it.
        let conns = c.connections();
        let mut seen = BTreeSet::new();
        for w in conns.windows(2) {
            assert!(w[0].0 < w[1].0, "one entry per PKI-ID");
        }
        for (pki, primary, secondary) in &conns {
            assert!(c.is_live_stream(*primary));
            assert_eq!(c.connection_info(*primary).map(|i| &i.id), Some(pki));
            assert!(seen.insert(*primary), "a stream serves one PKI-ID");
            if let Some(s) = secondary {
                assert!(c.is_live_stream(*s));
                assert_eq!(c.connection_info(*s).map(|i| &i.id), Some(pki));
                assert!(seen.insert(*s));
            }
        }
        // Handles: live exactly until closed.
        let (live_streams, live_dials, live_ops) = c.live_counts();
        let mut open = 0;
        for (s, st) in &self.streams {
            assert_eq!(c.is_live_stream(*s), !st.closed, "{s:?}");
            open += usize::from(!st.closed);
            if let Some((buf, _waiting, in_flight)) = c.send_queue_len(*s) {
                assert!(buf <= cfg.send_buffer_size.max(1));
                assert!(in_flight <= cfg.write_window);
            }
        }
        assert_eq!(live_streams, open);
        assert_eq!(live_dials, self.dials.values().filter(|d| !d.1).count());
        assert_eq!(live_ops, self.ops.len());
        // Bounds.
        assert!(self.pending_inbound.len() <= cfg.max_pending_handshakes);
        assert!(
            live_streams <= cfg.max_pending_handshakes + cfg.max_connections + live_dials,
            "streams bounded"
        );
        let mut queued = 0;
        for sub in &self.live_subs {
            let n = c.delivery_queue_len(*sub);
            assert!(n <= cfg.subscription_buffer + cfg.recv_buffer_size);
            queued += n as u64;
        }
        // Monotonic counters.
        let now = counters(c.stats());
        for (i, (a, b)) in self.last.iter().zip(&now).enumerate() {
            assert!(a <= b, "counter {i} went backwards");
        }
        self.last = now;
        // Nothing promised for delivery is lost without a count.
        let st = c.stats();
        let accepted: u64 = self.subs.values().map(|h| h.load(Ordering::Relaxed)).sum();
        assert_eq!(
            accepted,
            self.polled
                + queued
                + self.discarded
                + st.dropped_subscription_overflow
                + st.dropped_on_stop,
            "every accepted delivery is polled, queued or counted"
        );
        // Nothing promised for sending is lost without a count; exact once all is settled.
        let mut waiting = 0;
        for s in self.streams.keys() {
            if let Some((b, w, _)) = c.send_queue_len(*s) {
                waiting += (b + w) as u64;
            }
        }
        let accounted = self.data_writes
            + waiting
            + st.dropped_overflow
            + st.dropped_on_close
            + st.dropped_no_connection;
        let promised = self.units - self.wouldblock;
        assert!(promised >= accounted, "{promised} < {accounted}");
        if self.stopped {
            assert_eq!(
                promised, accounted,
                "after stop every unit is written or counted"
            );
            assert_eq!(c.live_counts(), (0, 0, 0));
            assert!(conns.is_empty());
            assert!(self.ops.is_empty(), "every operation reported");
        }
    }

    fn advance(&mut self, by: Duration) {
        self.now = self.now + by;
        self.comm.handle_timeout(self.now);
        self.drain();
        if let Some(t) = self.comm.poll_timeout() {
            assert!(t >= self.now, "no deadline left in the past");
        }
    }

    fn stop(&mut self) {
        self.comm.stop(self.now);
        self.drain();
        assert!(self.stopped, "stop reports Stopped");
        self.check();
    }
}

// ------------------------------------------------------------------------ input bytes

/// Reads the fuzz input one byte at a time; missing bytes read as zero.
struct Input<'a>(Unstructured<'a>);

impl<'a> Input<'a> {
    fn u8(&mut self) -> u8 {
        u8::arbitrary(&mut self.0).unwrap_or(0)
    }
    fn u16(&mut self) -> u16 {
        u16::from(self.u8()) | (u16::from(self.u8()) << 8)
    }
    fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }
    fn blob(&mut self) -> &'a [u8] {
        let n = usize::from(self.u16()).min(self.0.len());
        self.0.bytes(n).unwrap_or(&[])
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Writes seeds in the format [`Input`] reads.
#[derive(Default)]
struct Output(Vec<u8>);

impl Output {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bool(&mut self, v: bool) {
        self.0.push(u8::from(v));
    }
    fn blob(&mut self, b: &[u8]) {
        let b = &b[..b.len().min(usize::from(u16::MAX))];
        self.u16(b.len() as u16);
        self.0.extend_from_slice(b);
    }
}

// ------------------------------------------------------------------------ handshake

/// The first (or a later) Envelope of the `handshake` target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandshakeMessage {
    /// These bytes, as they are.
    Raw(Vec<u8>),
    /// A ConnEstablish built from choices, each able to be right or wrong.
    Crafted {
        /// Claimed PKI-ID: 0 `a-peer`, 1 `z-peer`, 2 ourselves, 3 empty, 4 rejected,
        /// 5 expired, 6 an identity larger than the limit.
        pki: u8,
        /// The identity, chosen like `pki`.
        identity: u8,
        /// 0 the right certificate hash for the role, 1 wrong, 2 empty.
        cert: u8,
        /// The `probe` flag.
        probe: bool,
        /// 0 a ConnEstablish, 1 a data message, 2 no content.
        content: u8,
        /// 0 signed, 1 unsigned, 2 corrupted signature, 3 signature of other bytes.
        signature: u8,
        /// 0 no secret envelope, 1 a valid one, 2 an unsigned one.
        secret: u8,
    },
}

/// One input of the `handshake` target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandshakeCase {
    /// 0: the core accepts the stream; 1: it dials to send; 2: a `handshake()` operation.
    pub role: u8,
    /// TLS on.
    pub tls: bool,
    /// The certificate the remote presents: 0 its own, 1 none, 2 a wrong one.
    pub cert: u8,
    /// For the dialling roles, the PKI-ID expected: 0 `a-peer`, 1 unknown, 2 `z-peer`.
    pub expect: u8,
    /// Let the handshake deadline pass before the first message.
    pub late: bool,
    /// The first Envelope.
    pub first: HandshakeMessage,
    /// Later inputs on the stream: an Envelope, time passing (ms), or the stream ending.
    pub later: Vec<Later>,
}

/// What happens after the first Envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Later {
    /// Another Envelope arrives.
    Envelope(HandshakeMessage),
    /// Time passes (milliseconds).
    Wait(u16),
    /// The remote ends the stream.
    End,
}

fn read_message(i: &mut Input<'_>) -> HandshakeMessage {
    if i.u8().is_multiple_of(2) {
        HandshakeMessage::Raw(i.blob().to_vec())
    } else {
        HandshakeMessage::Crafted {
            pki: i.u8(),
            identity: i.u8(),
            cert: i.u8(),
            probe: i.bool(),
            content: i.u8(),
            signature: i.u8(),
            secret: i.u8(),
        }
    }
}

fn write_message(o: &mut Output, m: &HandshakeMessage) {
    match m {
        HandshakeMessage::Raw(b) => {
            o.u8(0);
            o.blob(b);
        }
        HandshakeMessage::Crafted {
            pki,
            identity,
            cert,
            probe,
            content,
            signature,
            secret,
        } => {
            o.u8(1);
            for b in [*pki, *identity, *cert] {
                o.u8(b);
            }
            o.bool(*probe);
            for b in [*content, *signature, *secret] {
                o.u8(b);
            }
        }
    }
}

/// Encodes a [`HandshakeCase`] as input for [`handshake`] (for seeds).
pub fn encode_handshake(case: &HandshakeCase) -> Vec<u8> {
    let mut o = Output::default();
    o.u8(case.role);
    o.bool(case.tls);
    o.u8(case.cert);
    o.u8(case.expect);
    o.bool(case.late);
    write_message(&mut o, &case.first);
    for l in &case.later {
        match l {
            Later::Envelope(m) => {
                o.u8(0);
                write_message(&mut o, m);
            }
            Later::Wait(ms) => {
                o.u8(1);
                o.u16(*ms);
            }
            Later::End => o.u8(2),
        }
    }
    o.0
}

const MAX_IDENTITY: usize = 300;

fn build_message(m: &HandshakeMessage, inbound: bool) -> Bytes {
    let (pki, identity, cert_kind, probe, content, signature, secret) = match m {
        HandshakeMessage::Raw(b) => return Bytes::copy_from_slice(b),
        HandshakeMessage::Crafted {
            pki,
            identity,
            cert: c,
            probe,
            content,
            signature,
            secret,
        } => (*pki, *identity, *c, *probe, *content, *signature, *secret),
    };
    let name = |k: u8| -> Vec<u8> {
        match k % 7 {
            0 => PEERS[0].into(),
            1 => PEERS[3].into(),
            2 => ME.into(),
            3 => Vec::new(),
            4 => REJECTED.into(),
            5 => EXPIRED.into(),
            _ => vec![b'i'; MAX_IDENTITY + 1],
        }
    };
    let pki = name(pki);
    let hash = match cert_kind % 3 {
        0 => cert(
            Driver::peer_of_endpoint(&String::from_utf8_lossy(&pki)),
            inbound,
        )
        .to_vec(),
        1 => WRONG_CERT.to_vec(),
        _ => Vec::new(),
    };
    let msg = match content % 3 {
        0 => conn_message(&pki, &name(identity), &hash, probe),
        1 => data_message(1),
        _ => GossipMessage::default(),
    };
    let payload = msg.encode_to_vec();
    let good = TestOnlyHmacSecurity::hmac(&payload).to_vec();
    let sig = match signature % 4 {
        0 => good,
        1 => Vec::new(),
        2 => {
            let mut s = good;
            s[0] ^= 1;
            s
        }
        _ => TestOnlyHmacSecurity::hmac(b"other").to_vec(),
    };
    let secret = match secret % 3 {
        0 => None,
        1 => Some(SecretEnvelope {
            payload: Bytes::from_static(b"secret"),
            signature: Bytes::copy_from_slice(&TestOnlyHmacSecurity::hmac(b"secret")),
        }),
        _ => Some(SecretEnvelope {
            payload: Bytes::from_static(b"secret"),
            signature: Bytes::new(),
        }),
    };
    envelope_bytes(payload, sig, secret)
}

/// What an independent reading of the spec (section 4, Fabric's order) says the handshake
/// must end in: the proved PKI-ID and probe flag, or the label of the error.
fn oracle(
    bytes: &[u8],
    cfg: &Config,
    presented: Option<CertHash>,
) -> Result<(PkiId, bool), &'static str> {
    if bytes.len() > cfg.max_message_size {
        return Err("malformed");
    }
    let env = Envelope::decode(bytes).map_err(|_| "malformed")?;
    let msg = GossipMessage::decode(env.payload.clone()).map_err(|_| "malformed")?;
    let Some(gossip_message::Content::Conn(c)) = msg.content else {
        return Err("wrong_type");
    };
    if c.pki_id.is_empty() {
        return Err("no_pki_id");
    }
    if c.identity.len() > cfg.max_identity_size {
        return Err("identity_too_large");
    }
    if c.identity.is_empty() {
        return Err("no_identity");
    }
    if c.identity.as_ref() == REJECTED.as_bytes() {
        return Err("invalid_identity");
    }
    if c.identity != c.pki_id {
        return Err("identity_mismatch");
    }
    if c.identity.as_ref() == EXPIRED.as_bytes() {
        return Err("identity_expired");
    }
    if cfg.tls.is_some() && Some(c.tls_cert_hash.as_ref()) != presented.as_ref().map(|h| &h[..]) {
        return Err("tls_cert_hash_mismatch");
    }
    let ok = |p: &[u8], s: &[u8]| s == TestOnlyHmacSecurity::hmac(p);
    if env.payload.is_empty() || env.signature.is_empty() {
        return Err("unsigned");
    }
    if !ok(&env.payload, &env.signature) {
        return Err("bad_signature");
    }
    if let Some(s) = &env.secret_envelope
        && (s.payload.is_empty() || s.signature.is_empty() || !ok(&s.payload, &s.signature))
    {
        return Err("bad_secret_envelope");
    }
    Ok((PkiId(c.pki_id), c.probe))
}

/// Arbitrary first and later Envelopes to an accepting core and to a dialling core (for a
/// connection, or a `handshake()` operation). The outcome must be exactly what an
/// independent reading of the spec's checks predicts, reported by the right event and
/// counted; later Envelopes must find the stream live exactly when the handshake
/// registered it.
pub fn handshake(data: &[u8]) {
    let mut i = Input(Unstructured::new(data));
    let role = i.u8() % 3;
    let tls = i.bool();
    let cert_kind = i.u8() % 3;
    let expect = match i.u8() % 3 {
        0 => PkiId::from(PEERS[0]),
        1 => PkiId::default(),
        _ => PkiId::from(PEERS[3]),
    };
    let late = i.bool();
    let first = read_message(&mut i);

    let cfg = Config {
        max_message_size: 4096,
        max_identity_size: MAX_IDENTITY,
        ..Config::default()
    };
    let mut d = Driver::new(cfg, u8::from(tls));
    let cfg = d.comm.config().clone();
    let sub = d.subscribe(0);
    let remote = PEERS[0];
    let presented = match cert_kind {
        0 => Some(cert(0, role == 0)),
        1 => None,
        _ => Some(WRONG_CERT),
    };
    let peer = RemotePeer::new(remote, expect.clone());
    let mut op = None;
    let s = if role == 0 {
        d.accept(0, cert_kind)
    } else {
        if role == 1 {
            let m = SignedMessage::noop(data_message(9));
            assert_eq!(d.comm.send(d.now, &m, core::slice::from_ref(&peer)), Ok(()));
            d.units += 1;
        } else {
            let id = d
                .comm
                .handshake(d.now, &peer)
                .expect("a running core starts it");
            d.ops.insert(id, 1);
            op = Some(id);
        }
        d.drain();
        let (&dial, _) = d.dials.iter().next().expect("the core dials");
        d.input(|c, now| c.handle_dial_result(now, dial, Ok(presented)));
        d.input(|c, now| c.handle_ping_result(now, dial, Ok(())));
        *d.streams.keys().next().expect("the core opens a stream")
    };
    d.check();
    let failures = d.comm.stats().handshake_failures_total();
    if tls && presented.is_none() {
        // Refused before anything is read.
        assert!(!d.comm.is_live_stream(s));
        assert_eq!(
            d.comm.stats().handshake_failures_for("no_tls_certificate"),
            1
        );
    }
    if late {
        // Every role waits conn_timeout for the remote's ConnEstablish.
        d.advance(cfg.conn_timeout);
        assert!(
            !d.comm.is_live_stream(s),
            "no stream outlives its handshake deadline"
        );
        if !(tls && presented.is_none()) {
            assert_eq!(d.comm.stats().handshake_failures_for("timeout"), 1);
        }
    }
    let live_before = d.comm.is_live_stream(s);
    let first_bytes = build_message(&first, role == 0);
    let r = d.feed(s, first_bytes.clone());
    assert_eq!(r.is_ok(), live_before, "{r:?}");
    d.drain();
    d.check();
    if live_before {
        let predicted = oracle(&first_bytes, &cfg, presented);
        let stats = d.comm.stats().clone();
        let connected = d.conn_pki.get(&s).cloned();
        match (role, predicted) {
            (_, Err(label)) => {
                assert_eq!(stats.handshake_failures_for(label), 1, "{label}");
                if role == 1 {
                    assert_eq!(stats.dropped_no_connection, 1, "the waiting message");
                }
                assert_eq!(stats.handshake_failures_total(), failures + 1);
                assert!(connected.is_none());
                assert!(!d.comm.is_live_stream(s));
            }
            (0, Ok((_, true))) => {
                assert_eq!(stats.probed, 1);
                assert!(connected.is_none() && !d.comm.is_live_stream(s));
            }
            (0, Ok((pki, false))) => {
                assert_eq!(connected.as_ref(), Some(&pki));
                assert_eq!(d.comm.connections(), vec![(pki, s, None)]);
            }
            (1, Ok((pki, _))) if !expect.is_empty() && expect != pki => {
                assert_eq!(stats.handshake_failures_for("unexpected_peer"), 1);
                assert!(connected.is_none() && !d.comm.is_live_stream(s));
                assert_eq!(stats.dropped_no_connection, 1);
            }
            (1, Ok((pki, _))) => {
                assert_eq!(connected.as_ref(), Some(&pki));
                assert_eq!(d.data_writes, 1, "the waiting message goes out");
            }
            (_, Ok((pki, _))) if !expect.is_empty() && expect != pki => {
                assert_eq!(stats.handshake_failures_for("pki_id_mismatch"), 1);
                assert!(!d.comm.is_live_stream(s) && d.ops.is_empty());
            }
            (_, Ok(_)) => {
                assert_eq!(stats.handshakes_ok, 1);
                assert!(connected.is_none() && !d.comm.is_live_stream(s));
                assert!(d.ops.is_empty(), "the operation reported");
            }
        }
    }
    if op.is_some() {
        // A handshake() operation reports once its stream is gone.
        assert!(d.ops.is_empty());
    }

    while !i.is_empty() {
        match i.u8() % 3 {
            0 => {
                let m = build_message(&read_message(&mut i), role == 0);
                let live = d.comm.is_live_stream(s);
                let before = d.comm.stats().clone();
                let r = d.feed(s, m.clone());
                assert_eq!(r.is_ok(), live, "{r:?}");
                d.drain();
                let after = d.comm.stats().clone();
                if live && d.conn_pki.contains_key(&s) {
                    // Established: counted exactly once, one way or another.
                    let moved = |f: fn(&Stats) -> u64| f(&after) - f(&before);
                    let ways = moved(|s| s.oversized)
                        + moved(|s| s.malformed)
                        + moved(|s| s.empty_messages)
                        + moved(|s| s.acks_unmatched)
                        + moved(|s| s.unrouted)
                        + u64::from(d.comm.delivery_queue_len(sub) > 0);
                    assert!(ways >= 1, "the envelope went somewhere");
                    d.poll(sub, usize::MAX);
                }
            }
            1 => {
                let ms = i.u16();
                d.advance(Duration::from_millis(u64::from(ms)));
            }
            _ => {
                d.input(|c, now| c.handle_stream_closed(now, s, StreamEnd::Finished));
                assert!(!d.comm.is_live_stream(s));
            }
        }
        d.check();
    }
    d.stop();
}

// ------------------------------------------------------------------------ core_ops

/// One step of the `core_ops` target: a driver event, an API call or time passing. Handles
/// are chosen by index among those the core ever issued (dead ones included), so both
/// sides of every "is the handle live" branch are taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// A remote opens a stream; `cert` picks the certificate it presents.
    Accept {
        /// Which remote (`PEERS`, or ourselves).
        peer: u8,
        /// 0 its own certificate, 1 none, 2 a wrong one.
        cert: u8,
    },
    /// A dial completes.
    DialResult {
        /// Which dial.
        dial: u8,
        /// Whether it succeeded.
        ok: bool,
        /// The certificate the server presents, as for `Accept`.
        cert: u8,
    },
    /// A Ping completes.
    PingResult {
        /// Which dial.
        dial: u8,
        /// Whether it succeeded.
        ok: bool,
    },
    /// A ConnEstablish arrives on a stream.
    Hello {
        /// Which stream.
        stream: u8,
        /// Who it claims to be: below 128, `PEERS` or ourselves; from 128, the peer the
        /// stream really leads to.
        peer: u8,
        /// 0 valid, 1 bad signature, 2 wrong certificate hash, 3 not a ConnEstablish,
        /// 4 unsigned, 5 a probe.
        flaw: u8,
    },
    /// One of our data messages arrives on a stream.
    Data {
        /// Which stream.
        stream: u8,
    },
    /// An Acknowledgement arrives, for a nonce we sent (or a made-up one).
    AckIn {
        /// Which stream.
        stream: u8,
        /// Which nonce.
        nonce: u8,
        /// Whether it carries an error.
        error: bool,
    },
    /// These bytes arrive as an Envelope.
    Garbage {
        /// Which stream.
        stream: u8,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// An Envelope one byte over the limit arrives.
    Oversized {
        /// Which stream.
        stream: u8,
    },
    /// The driver confirms writes.
    Sent {
        /// Which stream.
        stream: u8,
        /// How many.
        count: u8,
    },
    /// A write fails.
    WriteFailed {
        /// Which stream.
        stream: u8,
    },
    /// A stream ends.
    Closed {
        /// Which stream.
        stream: u8,
        /// With an error rather than cleanly.
        error: bool,
    },
    /// `send` to the peers in a bit mask.
    Send {
        /// Bits 0–4: `PEERS`; bits 5–7: how the RemotePeer is named.
        peers: u8,
    },
    /// `send_wait` to one peer.
    SendWait {
        /// Which peer and how it is named.
        peer: u8,
    },
    /// `send_with_ack` to the peers in a bit mask.
    SendWithAck {
        /// As for `Send`.
        peers: u8,
        /// `min_ack`.
        min_ack: u8,
        /// Time-out, in 100 ms.
        timeout: u8,
    },
    /// `probe` a peer.
    Probe {
        /// Which peer and how it is named.
        peer: u8,
    },
    /// A `handshake()` operation.
    Handshake {
        /// Which peer and how it is named.
        peer: u8,
    },
    /// `subscribe` with an acceptor: 0 all, 1 even sequence numbers, 2 odd.
    Subscribe {
        /// The acceptor.
        filter: u8,
    },
    /// `unsubscribe`.
    Unsubscribe {
        /// Which subscription.
        sub: u8,
    },
    /// The application polls deliveries.
    Poll {
        /// Which subscription.
        sub: u8,
        /// At most this many.
        count: u8,
    },
    /// `respond` on a stream.
    Respond {
        /// Which stream.
        stream: u8,
    },
    /// `ack` on a stream.
    AckOut {
        /// Which stream.
        stream: u8,
        /// Nonce acked.
        nonce: u8,
    },
    /// `close_conn`.
    CloseConn {
        /// Which peer.
        peer: u8,
    },
    /// `stop`.
    Stop,
    /// Time passes, then `handle_timeout`.
    Advance {
        /// Milliseconds.
        millis: u16,
    },
    /// Time jumps to the next deadline, then `handle_timeout`.
    AdvanceToDeadline,
    /// A driver input with a handle made up from parts.
    StaleHandle {
        /// 0 stream, 1 dial, 2 subscription.
        kind: u8,
        /// Slot index.
        index: u8,
        /// Generation.
        generation: u8,
    },
}

const OP_KINDS: u8 = 26;

impl Op {
    fn read(i: &mut Input<'_>) -> Op {
        match i.u8() % OP_KINDS {
            0 => Op::Accept {
                peer: i.u8(),
                cert: i.u8(),
            },
            1 => Op::DialResult {
                dial: i.u8(),
                ok: i.bool(),
                cert: i.u8(),
            },
            2 => Op::PingResult {
                dial: i.u8(),
                ok: i.bool(),
            },
            3 => Op::Hello {
                stream: i.u8(),
                peer: i.u8(),
                flaw: i.u8(),
            },
            4 => Op::Data { stream: i.u8() },
            5 => Op::AckIn {
                stream: i.u8(),
                nonce: i.u8(),
                error: i.bool(),
            },
            6 => Op::Garbage {
                stream: i.u8(),
                bytes: i.blob().to_vec(),
            },
            7 => Op::Oversized { stream: i.u8() },
            8 => Op::Sent {
                stream: i.u8(),
                count: i.u8(),
            },
            9 => Op::WriteFailed { stream: i.u8() },
            10 => Op::Closed {
                stream: i.u8(),
                error: i.bool(),
            },
            11 => Op::Send { peers: i.u8() },
            12 => Op::SendWait { peer: i.u8() },
            13 => Op::SendWithAck {
                peers: i.u8(),
                min_ack: i.u8(),
                timeout: i.u8(),
            },
            14 => Op::Probe { peer: i.u8() },
            15 => Op::Handshake { peer: i.u8() },
            16 => Op::Subscribe { filter: i.u8() },
            17 => Op::Unsubscribe { sub: i.u8() },
            18 => Op::Poll {
                sub: i.u8(),
                count: i.u8(),
            },
            19 => Op::Respond { stream: i.u8() },
            20 => Op::AckOut {
                stream: i.u8(),
                nonce: i.u8(),
            },
            21 => Op::CloseConn { peer: i.u8() },
            22 => Op::Stop,
            23 => Op::Advance { millis: i.u16() },
            24 => Op::AdvanceToDeadline,
            _ => Op::StaleHandle {
                kind: i.u8(),
                index: i.u8(),
                generation: i.u8(),
            },
        }
    }

    fn write(&self, o: &mut Output) {
        match self {
            Op::Accept { peer, cert } => [0, *peer, *cert].iter().for_each(|b| o.u8(*b)),
            Op::DialResult { dial, ok, cert } => {
                [1, *dial, u8::from(*ok), *cert]
                    .iter()
                    .for_each(|b| o.u8(*b));
            }
            Op::PingResult { dial, ok } => [2, *dial, u8::from(*ok)].iter().for_each(|b| o.u8(*b)),
            Op::Hello { stream, peer, flaw } => {
                [3, *stream, *peer, *flaw].iter().for_each(|b| o.u8(*b));
            }
            Op::Data { stream } => [4, *stream].iter().for_each(|b| o.u8(*b)),
            Op::AckIn {
                stream,
                nonce,
                error,
            } => [5, *stream, *nonce, u8::from(*error)]
                .iter()
                .for_each(|b| o.u8(*b)),
            Op::Garbage { stream, bytes } => {
                o.u8(6);
                o.u8(*stream);
                o.blob(bytes);
            }
            Op::Oversized { stream } => [7, *stream].iter().for_each(|b| o.u8(*b)),
            Op::Sent { stream, count } => [8, *stream, *count].iter().for_each(|b| o.u8(*b)),
            Op::WriteFailed { stream } => [9, *stream].iter().for_each(|b| o.u8(*b)),
            Op::Closed { stream, error } => {
                [10, *stream, u8::from(*error)]
                    .iter()
                    .for_each(|b| o.u8(*b));
            }
            Op::Send { peers } => [11, *peers].iter().for_each(|b| o.u8(*b)),
            Op::SendWait { peer } => [12, *peer].iter().for_each(|b| o.u8(*b)),
            Op::SendWithAck {
                peers,
                min_ack,
                timeout,
            } => [13, *peers, *min_ack, *timeout]
                .iter()
                .for_each(|b| o.u8(*b)),
            Op::Probe { peer } => [14, *peer].iter().for_each(|b| o.u8(*b)),
            Op::Handshake { peer } => [15, *peer].iter().for_each(|b| o.u8(*b)),
            Op::Subscribe { filter } => [16, *filter].iter().for_each(|b| o.u8(*b)),
            Op::Unsubscribe { sub } => [17, *sub].iter().for_each(|b| o.u8(*b)),
            Op::Poll { sub, count } => [18, *sub, *count].iter().for_each(|b| o.u8(*b)),
            Op::Respond { stream } => [19, *stream].iter().for_each(|b| o.u8(*b)),
            Op::AckOut { stream, nonce } => [20, *stream, *nonce].iter().for_each(|b| o.u8(*b)),
            Op::CloseConn { peer } => [21, *peer].iter().for_each(|b| o.u8(*b)),
            Op::Stop => o.u8(22),
            Op::Advance { millis } => {
                o.u8(23);
                o.u16(*millis);
            }
            Op::AdvanceToDeadline => o.u8(24),
            Op::StaleHandle {
                kind,
                index,
                generation,
            } => [25, *kind, *index, *generation]
                .iter()
                .for_each(|b| o.u8(*b)),
        }
    }
}

impl<'a> Arbitrary<'a> for Op {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let mut i = Input(Unstructured::new(u.bytes(u.len().min(1 << 16))?));
        Ok(Op::read(&mut i))
    }
}

/// The configuration bytes of a `core_ops` input: small bounds so that every limit is hit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpsConfig(pub [u8; 12]);

impl OpsConfig {
    fn config(&self) -> (Config, u8) {
        let b = self.0;
        let ms = |x: u8, unit: u64| Duration::from_millis(unit * u64::from(x % 8));
        let cfg = Config {
            dial_timeout: ms(b[0], 100),
            conn_timeout: ms(b[1], 100),
            handshake_timeout: ms(b[2], 250),
            send_buffer_size: usize::from(b[3] % 4),
            max_waiting_sends: usize::from((b[3] >> 2) % 4),
            write_window: usize::from((b[3] >> 4) % 3),
            subscription_buffer: usize::from(b[4] % 3),
            recv_buffer_size: usize::from((b[4] >> 2) % 3),
            presumed_dead_buffer: usize::from((b[4] >> 4) % 3),
            max_message_size: 200 + 4 * usize::from(b[5]),
            max_identity_size: 64,
            max_pending_handshakes: usize::from(b[6] % 4),
            max_connections: usize::from((b[6] >> 2) % 5),
            identity_store_capacity: usize::from(b[7] % 6),
            max_operations: usize::from((b[7] >> 3) % 4),
            max_subscriptions: usize::from(b[8] % 3),
            crossing_grace: ms(b[9], 100),
            tls: None,
            rng_seed: u64::from(b[10]),
        };
        (cfg, b[11])
    }
}

/// Encodes a configuration and a list of operations as input for [`core_ops`] (for seeds).
pub fn encode_ops(config: &OpsConfig, ops: &[Op]) -> Vec<u8> {
    let mut o = Output::default();
    for b in config.0 {
        o.u8(b);
    }
    for op in ops {
        op.write(&mut o);
    }
    o.0
}

fn remote_peer(sel: u8) -> RemotePeer {
    let k = usize::from(sel) % (PEERS.len() + 1);
    let name = PEERS.get(k).copied().unwrap_or(ME);
    match (sel >> 5) % 4 {
        0 => RemotePeer::new(name, name),
        1 => RemotePeer::new(name, PkiId::default()),
        2 => RemotePeer::new(name, PEERS[(k + 1) % PEERS.len()]),
        _ => RemotePeer::new(PEERS[(k + 2) % PEERS.len()], name),
    }
}

fn mask_peers(mask: u8) -> Vec<RemotePeer> {
    (0..PEERS.len())
        .filter(|k| mask & (1 << k) != 0)
        .map(|k| remote_peer(k as u8 | (mask >> 5) << 5))
        .collect()
}

fn pick<T: Copy>(items: impl Iterator<Item = T> + Clone, sel: u8) -> Option<T> {
    let n = items.clone().count();
    (n > 0).then(|| items.clone().nth(usize::from(sel) % n))?
}

/// An `Arbitrary` list of driver events, API calls and time steps fed to one core, which
/// the harness drives as the call order prescribes, checking the core's invariants after
/// each: one primary connection per PKI-ID, no action naming a handle after its close,
/// handles live exactly until closed, every queue within its bound, nothing delivered after
/// stop, counters monotonic, no deadline left in the past, and every message the core took
/// on (to send or to deliver) accounted for: written, delivered, still queued, or counted
/// as dropped. The run ends with `stop`, after which the accounting must be exact.
pub fn core_ops(data: &[u8]) {
    core_ops_stats(data);
}

/// Runs [`core_ops`] and returns the core's final counters, so a seed can be checked to
/// reach the states its scenario is about.
pub fn core_ops_stats(data: &[u8]) -> Stats {
    let mut i = Input(Unstructured::new(data));
    let mut cb = [0u8; 12];
    for b in &mut cb {
        *b = i.u8();
    }
    let (cfg, tls) = OpsConfig(cb).config();
    let mut d = Driver::new(cfg, tls);
    let cfg = d.comm.config().clone();
    let mut steps = 0;
    while !i.is_empty() && steps < 512 {
        steps += 1;
        let op = Op::read(&mut i);
        step(&mut d, &cfg, op);
        d.check();
    }
    if !d.stopped {
        d.stop();
    }
    d.comm.stats().clone()
}

fn step(d: &mut Driver, cfg: &Config, op: Op) {
    let stream = |d: &Driver, sel: u8| pick(d.stream_order.iter().copied(), sel);
    let dial = |d: &Driver, sel: u8| pick(d.dial_order.iter().copied(), sel);
    let cert_of = |d: &Driver, sel: u8, k: usize, client: bool| match sel % 3 {
        _ if d.comm.config().tls.is_none() => None,
        0 => Some(cert(k, client)),
        1 => None,
        _ => Some(WRONG_CERT),
    };
    match op {
        Op::Accept { peer, cert } => {
            let k = usize::from(peer) % (PEERS.len() + 1);
            let _ = d.try_accept(k, cert);
        }
        Op::DialResult {
            dial: sel,
            ok,
            cert,
        } => {
            if let Some(x) = dial(d, sel) {
                let k = d.dials[&x].0;
                let r = if ok {
                    Ok(cert_of(d, cert, k, false))
                } else {
                    Err("refused".to_owned())
                };
                let live = !d.dials[&x].1;
                let res = d.comm.handle_dial_result(d.now, x, r);
                assert_eq!(res.is_ok(), live, "{res:?}");
                d.drain();
            }
        }
        Op::PingResult { dial: sel, ok } => {
            if let Some(x) = dial(d, sel) {
                let r = if ok { Ok(()) } else { Err("down".to_owned()) };
                let live = !d.dials[&x].1;
                let res = d.comm.handle_ping_result(d.now, x, r);
                assert_eq!(res.is_ok(), live, "{res:?}");
                d.drain();
            }
        }
        Op::Hello {
            stream: sel,
            peer,
            flaw,
        } => {
            if let Some(s) = stream(d, sel) {
                let inbound = d.streams[&s].inbound;
                // High values: whoever the stream really leads to.
                let k = if peer >= 128 {
                    d.streams[&s].peer
                } else {
                    usize::from(peer) % (PEERS.len() + 1)
                };
                let bytes = match flaw % 6 {
                    0 => d_hello(k, inbound, 0),
                    1 => {
                        let mut env = Envelope::decode(d_hello(k, inbound, 0)).expect("ours");
                        env.signature = Bytes::from_static(&[1; 32]);
                        Bytes::from(env.encode_to_vec())
                    }
                    2 => d_hello(k, inbound, 1),
                    3 => SignedMessage::noop(data_message(0))
                        .envelope_bytes()
                        .clone(),
                    4 => {
                        let mut env = Envelope::decode(d_hello(k, inbound, 0)).expect("ours");
                        env.signature = Bytes::new();
                        Bytes::from(env.encode_to_vec())
                    }
                    _ => {
                        let name = PEERS.get(k).copied().unwrap_or(ME);
                        let h = cert(k, inbound);
                        let p = conn_message(name.as_bytes(), name.as_bytes(), &h, true)
                            .encode_to_vec();
                        let sig = TestOnlyHmacSecurity::hmac(&p).to_vec();
                        envelope_bytes(p, sig, None)
                    }
                };
                feed(d, s, bytes);
            }
        }
        Op::Data { stream: sel } => {
            if let Some(s) = stream(d, sel) {
                d.seq += 1;
                let m = SignedMessage::noop(data_message(d.seq));
                feed(d, s, m.envelope_bytes().clone());
            }
        }
        Op::AckIn {
            stream: sel,
            nonce,
            error,
        } => {
            if let Some(s) = stream(d, sel) {
                let n = pick(d.nonces.iter().copied(), nonce).unwrap_or(u64::from(nonce));
                let m = GossipMessage {
                    nonce: n,
                    content: Some(gossip_message::Content::Ack(Acknowledgement {
                        error: if error { "nope".into() } else { String::new() },
                    })),
                    ..Default::default()
                };
                feed(d, s, SignedMessage::noop(m).envelope_bytes().clone());
            }
        }
        Op::Garbage { stream: sel, bytes } => {
            if let Some(s) = stream(d, sel) {
                feed(d, s, Bytes::from(bytes));
            }
        }
        Op::Oversized { stream: sel } => {
            if let Some(s) = stream(d, sel) {
                feed(d, s, Bytes::from(vec![0u8; cfg.max_message_size + 1]));
            }
        }
        Op::Sent { stream: sel, count } => {
            if let Some(s) = stream(d, sel) {
                let live = !d.streams[&s].closed;
                let r = d.comm.handle_sent(d.now, s, usize::from(count % 4));
                assert_eq!(r.is_ok(), live);
                d.drain();
            }
        }
        Op::WriteFailed { stream: sel } => {
            if let Some(s) = stream(d, sel) {
                let live = !d.streams[&s].closed;
                let r = d.comm.handle_write_failed(d.now, s, "broken pipe".into());
                assert_eq!(r.is_ok(), live);
                d.drain();
                assert!(!d.comm.is_live_stream(s));
            }
        }
        Op::Closed { stream: sel, error } => {
            if let Some(s) = stream(d, sel) {
                let live = !d.streams[&s].closed;
                let end = if error {
                    StreamEnd::Error("reset".into())
                } else {
                    StreamEnd::Finished
                };
                let r = d.comm.handle_stream_closed(d.now, s, end);
                assert_eq!(r.is_ok(), live);
                d.drain();
                assert!(!d.comm.is_live_stream(s));
            }
        }
        Op::Send { peers } => {
            let to = mask_peers(peers);
            d.seq += 1;
            let m = SignedMessage::noop(data_message(d.seq));
            match d.comm.send(d.now, &m, &to) {
                Ok(()) => d.units += to.len() as u64,
                Err(Error::NoPeers) => assert!(to.is_empty()),
                Err(e) => assert!(d.stopped && e == Error::Stopped, "{e:?}"),
            }
            d.drain();
        }
        Op::SendWait { peer } => {
            d.seq += 1;
            let m = SignedMessage::noop(data_message(d.seq));
            match d.comm.send_wait(d.now, &m, &remote_peer(peer)) {
                Ok(()) => d.units += 1,
                Err(Error::WouldBlock) => assert!(!d.stopped),
                Err(e) => assert!(
                    (d.stopped && e == Error::Stopped) || matches!(e, Error::LimitReached(_)),
                    "{e:?}"
                ),
            }
            d.drain();
        }
        Op::SendWithAck {
            peers,
            min_ack,
            timeout,
        } => {
            let to = mask_peers(peers);
            d.seq += 1;
            let unique: BTreeSet<_> = to.iter().map(|p| p.pki_id.clone()).collect();
            let r = d.comm.send_with_ack(
                d.now,
                data_message(d.seq),
                Duration::from_millis(100 * u64::from(timeout % 16)),
                usize::from(min_ack % 4),
                &to,
            );
            match r {
                Ok(op) => {
                    assert!(d.ops.insert(op, unique.len()).is_none());
                    d.units += unique.len() as u64;
                }
                Err(Error::NoPeers) => assert!(to.is_empty()),
                Err(Error::LimitReached(_)) => assert!(d.ops.len() >= cfg.max_operations),
                Err(e) => assert!(d.stopped && e == Error::Stopped, "{e:?}"),
            }
            d.drain();
        }
        Op::Probe { peer } | Op::Handshake { peer } => {
            let p = remote_peer(peer);
            let r = if matches!(op, Op::Probe { .. }) {
                d.comm.probe(d.now, &p)
            } else {
                d.comm.handshake(d.now, &p)
            };
            match r {
                Ok(id) => assert!(d.ops.insert(id, 0).is_none()),
                Err(Error::LimitReached(_)) => assert!(d.ops.len() >= cfg.max_operations),
                Err(e) => assert!(d.stopped && e == Error::Stopped, "{e:?}"),
            }
            d.drain();
        }
        Op::Subscribe { filter } => {
            let _ = d.subscribe(filter);
        }
        Op::Unsubscribe { sub } => {
            if let Some(s) = pick(d.sub_order.iter().copied(), sub) {
                let queued = d.comm.delivery_queue_len(s) as u64;
                let live = d.live_subs.contains(&s) && !d.stopped;
                let r = d.comm.unsubscribe(s);
                assert_eq!(r.is_ok(), live, "{r:?}");
                if r.is_ok() {
                    d.discarded += queued;
                    d.live_subs.remove(&s);
                }
                d.drain();
            }
        }
        Op::Poll { sub, count } => {
            if let Some(s) = pick(d.sub_order.iter().copied(), sub) {
                d.poll(s, usize::from(count % 8) + 1);
            }
        }
        Op::Respond { stream: sel } | Op::AckOut { stream: sel, .. } => {
            if let Some(s) = stream(d, sel) {
                let r = match op {
                    Op::AckOut { nonce, .. } => {
                        let n = pick(d.nonces.iter().copied(), nonce).unwrap_or(u64::from(nonce));
                        d.comm.ack(d.now, s, n, None)
                    }
                    _ => {
                        d.seq += 1;
                        d.comm.respond(d.now, s, data_message(d.seq))
                    }
                };
                match r {
                    Ok(()) => d.units += 1,
                    Err(Error::Stopped) => assert!(d.stopped),
                    Err(Error::ConnectionClosed) => {
                        assert!(d.streams[&s].closed || !d.conn_pki.contains_key(&s));
                    }
                    Err(Error::WouldBlock) => assert!(!d.streams[&s].closed),
                    Err(e) => panic!("{e:?}"),
                }
                d.drain();
            }
        }
        Op::CloseConn { peer } => {
            let p = remote_peer(peer);
            d.comm.close_conn(d.now, &p.pki_id);
            d.drain();
            assert!(d.comm.connection(&p.pki_id).is_none());
        }
        Op::Stop => d.stop(),
        Op::Advance { millis } => d.advance(Duration::from_millis(u64::from(millis))),
        Op::AdvanceToDeadline => {
            if let Some(t) = d.comm.poll_timeout() {
                let by = t.saturating_duration_since(d.now);
                d.advance(by);
            }
        }
        Op::StaleHandle {
            kind,
            index,
            generation,
        } => {
            let (index, generation) = (u32::from(index % 8), u32::from(generation % 4));
            match kind % 3 {
                0 => {
                    let s = StreamId::from_parts(index, generation);
                    let live = d.streams.get(&s).is_some_and(|st| !st.closed);
                    let r = d.comm.handle_sent(d.now, s, 0);
                    assert_eq!(r.is_ok(), live);
                }
                1 => {
                    let x = DialId::from_parts(index, generation);
                    let live = d.dials.get(&x).is_some_and(|st| !st.1);
                    // A dial result for a dial past dialling is ignored, not an error.
                    let r = d.comm.handle_dial_result(d.now, x, Err("late".into()));
                    assert_eq!(r.is_ok(), live);
                }
                _ => {
                    let s = SubscriptionId::from_parts(index, generation);
                    if !d.live_subs.contains(&s) || d.stopped {
                        assert!(d.comm.poll_delivery(s).is_none());
                        assert_eq!(d.comm.unsubscribe(s), Err(Error::UnknownHandle));
                    }
                }
            }
            d.drain();
        }
    }
}

/// Hands an envelope to a stream: `Ok` exactly when the stream is live.
fn feed(d: &mut Driver, s: StreamId, bytes: Bytes) {
    let live = !d.streams[&s].closed;
    let r = d.feed(s, bytes);
    assert_eq!(r.is_ok(), live, "{r:?}");
    d.drain();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_inputs_are_harmless() {
        envelope(&[]);
        gossip_message(&[]);
        handshake(&[]);
        core_ops(&[]);
    }

    #[test]
    fn ops_encode_as_they_read() {
        let ops = vec![
            Op::Accept { peer: 1, cert: 0 },
            Op::Garbage {
                stream: 0,
                bytes: vec![1, 2, 3],
            },
            Op::Advance { millis: 1234 },
            Op::Stop,
        ];
        let bytes = encode_ops(&OpsConfig([7; 12]), &ops);
        let mut i = Input(Unstructured::new(&bytes[12..]));
        let back: Vec<Op> = (0..ops.len()).map(|_| Op::read(&mut i)).collect();
        assert_eq!(back, ops);
        assert!(i.is_empty());
    }
}
