//! A driver that checks the core after every input.

use super::*;

/// A dial or a stream the core issued: where it leads, and whether the core has closed it
/// (`CloseDial`, `CloseStream`), which every later action and input naming it is held to.
#[derive(Clone, Copy, Debug)]
pub(super) struct Link {
    /// Which remote peer it leads to (index into `PEERS`; `PEERS.len()` = ourselves).
    pub(super) peer: usize,
    pub(super) closed: bool,
}

impl Link {
    fn open(peer: usize) -> Self {
        Link {
            peer,
            closed: false,
        }
    }
}

/// A stream: its [`Link`], and what its actions so far allow next.
#[derive(Debug)]
pub(super) struct StreamState {
    pub(super) link: Link,
    pub(super) inbound: bool,
    pub(super) writes: usize,
    pub(super) paused: bool,
}

impl StreamState {
    fn open(peer: usize, inbound: bool) -> Self {
        StreamState {
            link: Link::open(peer),
            inbound,
            writes: 0,
            paused: false,
        }
    }
}

/// What the core promised to send, and where it went; [`Driver::check`] holds it against
/// the core's own counters after every input.
#[derive(Debug, Default)]
pub(super) struct SendLedger {
    /// Messages (one per peer) the core accepted for sending.
    pub(super) units: u64,
    /// Of those, the ones a `SendWithAck` was told at once would block: never queued.
    pub(super) wouldblock: u64,
    /// Data writes the core asked for.
    pub(super) data_writes: u64,
}

impl SendLedger {
    /// What must end written, queued or counted as dropped.
    fn promised(&self) -> u64 {
        self.units - self.wouldblock
    }
}

/// What the core promised to deliver, and where it went (see [`SendLedger`]).
#[derive(Debug, Default)]
pub(super) struct DeliveryLedger {
    /// Messages the application polled.
    pub(super) polled: u64,
    /// Messages still queued when their subscription ended.
    pub(super) discarded: u64,
}

/// A driver that checks the core after every input: it carries out nothing on a network,
/// but records every handle the core issues and closes, and every unit of work it takes
/// on, so that what comes out can be checked against what went in.
pub(super) struct Driver {
    pub(super) comm: Comm<CastSecurity>,
    /// Set while `revalidate_identities` runs: only then may `IdentitiesRevalidated` come.
    pub(super) revalidating: Option<usize>,
    pub(super) now: Instant,
    pub(super) streams: BTreeMap<StreamId, StreamState>,
    pub(super) dials: BTreeMap<DialId, Link>,
    /// Handles in the order they were issued: what `Op` indices select from.
    pub(super) stream_order: Vec<StreamId>,
    pub(super) dial_order: Vec<DialId>,
    /// Dials the driver reported a failed attempt for since the core last asked for one:
    /// only these may be asked for another (`Action::Dial` on the same handle).
    pub(super) dial_failed: BTreeSet<DialId>,
    pub(super) sub_order: Vec<SubscriptionId>,
    pub(super) subs: BTreeMap<SubscriptionId, Arc<AtomicU64>>,
    pub(super) live_subs: BTreeSet<SubscriptionId>,
    pub(super) ops: BTreeMap<OpId, usize>,
    pub(super) pending_inbound: BTreeSet<StreamId>,
    pub(super) conn_pki: BTreeMap<StreamId, PkiId>,
    pub(super) nonces: Vec<u64>,
    pub(super) last: Vec<u64>,
    pub(super) stopped: bool,
    pub(super) sent: SendLedger,
    pub(super) delivered: DeliveryLedger,
    /// Arrival number of every envelope handed in, by the address of its bytes (a received
    /// message keeps the very `Bytes` it arrived in), and the last one each subscription
    /// was given: deliveries must come in arrival order.
    pub(super) arrivals: BTreeMap<usize, u64>,
    pub(super) last_arrival: BTreeMap<SubscriptionId, u64>,
    pub(super) arrival: u64,
    pub(super) seq: u64,
}

/// What [`Driver::check`] held the core's counters and handles against, noted for the tests
/// (see [`checked`]).
#[cfg(test)]
#[derive(Debug)]
#[allow(dead_code, reason = "read through Debug")]
pub(super) struct Ledgers {
    pub(super) stopped: bool,
    pub(super) promised: u64,
    pub(super) accounted: u64,
    pub(super) accepted: u64,
    pub(super) polled: u64,
    pub(super) queued: u64,
    /// Live streams, dials and operations.
    pub(super) live: (usize, usize, usize),
}

impl Driver {
    pub(super) fn new(config: Config, tls_on: u8) -> Self {
        let config = if tls_on & 1 == 1 {
            config.with_tls(own_tls())
        } else {
            config
        };
        let comm = Comm::new(config, security(), t0()).expect("own identity is valid");
        let last = counters(comm.stats());
        Driver {
            comm,
            revalidating: None,
            now: t0(),
            streams: BTreeMap::new(),
            stream_order: Vec::new(),
            dial_order: Vec::new(),
            dial_failed: BTreeSet::new(),
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
            sent: SendLedger::default(),
            delivered: DeliveryLedger::default(),
            arrivals: BTreeMap::new(),
            last_arrival: BTreeMap::new(),
            arrival: 0,
            seq: 0,
        }
    }

    /// Feeds one driver input naming a handle: `Err` must mean exactly "that handle is dead".
    pub(super) fn input(
        &mut self,
        f: impl FnOnce(&mut Comm<CastSecurity>, Instant) -> Result<(), Error>,
    ) {
        let r = f(&mut self.comm, self.now);
        assert!(matches!(r, Ok(()) | Err(Error::UnknownHandle)), "{r:?}");
        self.drain();
    }

    /// Hands an envelope to the core, noting its arrival number.
    pub(super) fn feed(&mut self, s: StreamId, bytes: Bytes) -> Result<(), Error> {
        self.arrival += 1;
        self.arrivals.insert(bytes.as_ptr() as usize, self.arrival);
        self.comm.handle_envelope(self.now, s, bytes)
    }

    /// [`Driver::feed`], then drain; `Err` must mean the stream is dead.
    pub(super) fn envelope(&mut self, s: StreamId, bytes: Bytes) {
        let r = self.feed(s, bytes);
        assert!(matches!(r, Ok(()) | Err(Error::UnknownHandle)), "{r:?}");
        self.drain();
    }

    pub(super) fn peer_of_endpoint(endpoint: &str) -> usize {
        PEERS
            .iter()
            .position(|p| *p == endpoint)
            .unwrap_or(PEERS.len())
    }

    pub(super) fn accept(&mut self, peer: usize, cert_kind: u8) -> StreamId {
        self.try_accept(peer, cert_kind)
            .expect("a running core accepts")
    }

    pub(super) fn try_accept(&mut self, peer: usize, cert_kind: u8) -> Option<StreamId> {
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
                self.streams.insert(s, StreamState::open(peer, true));
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

    pub(super) fn subscribe(&mut self, filter: u8) -> SubscriptionId {
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

    pub(super) fn poll(&mut self, sub: SubscriptionId, n: usize) {
        for _ in 0..n {
            let Some(m) = self.comm.poll_delivery(sub) else {
                break;
            };
            assert!(!self.stopped, "nothing is delivered after stop");
            assert!(self.live_subs.contains(&sub));
            self.delivered.polled += 1;
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
    pub(super) fn drain(&mut self) {
        let mut stopped_now = false;
        loop {
            match self.comm.poll_output() {
                crate::Output::Action(a) => {
                    assert!(
                        !self.stopped
                            || matches!(a, Action::CloseStream { .. } | Action::CloseDial { .. }),
                        "no network work after stop: {a:?}"
                    );
                    self.on_action(a);
                }
                crate::Output::Event(e) => {
                    self.on_event(&e, &mut stopped_now);
                }
                crate::Output::Timeout(t) => {
                    // The drain ends only when nothing is pending, with the same deadline
                    // poll_timeout gives.
                    assert_eq!(t, self.comm.poll_timeout());
                    assert!(matches!(self.comm.poll_output(), crate::Output::Timeout(_)));
                    break;
                }
            }
        }
        if stopped_now {
            self.stopped = true;
        }
    }

    /// Checks one event against what the driver knows.
    fn on_event(&mut self, e: &Event, stopped_now: &mut bool) {
        {
            match e {
                Event::Stopped => {
                    assert!(!self.stopped, "Stopped once");
                    *stopped_now = true;
                }
                // Once per revalidation the driver asked for, with the count it returned.
                Event::IdentitiesRevalidated { refused } => {
                    let asked = self
                        .revalidating
                        .take()
                        .expect("revalidation reported though nothing asked for it");
                    assert_eq!(*refused, asked, "the event and the call agree");
                }
                Event::DeliveryReady(sub) => {
                    assert!(
                        !self.stopped && !*stopped_now,
                        "nothing delivered after stop"
                    );
                    assert!(self.live_subs.contains(sub));
                }
                Event::Connected {
                    conn,
                    info,
                    inbound,
                } => {
                    assert!(!self.stopped && !*stopped_now);
                    let st = self.streams.get(conn).expect("an issued stream");
                    assert_eq!(st.inbound, *inbound);
                    self.pending_inbound.remove(conn);
                    self.conn_pki.insert(*conn, info.id.clone());
                }
                Event::Disconnected { conn, pki_id, .. } => {
                    assert_eq!(self.conn_pki.get(conn), Some(pki_id));
                    assert!(self.streams.get(conn).is_some_and(|s| s.link.closed));
                }
                Event::Probed { stream, .. } => {
                    assert!(
                        self.streams
                            .get(stream)
                            .is_some_and(|s| s.link.closed && s.inbound)
                    );
                    assert!(
                        !self.conn_pki.contains_key(stream),
                        "probed after Connected"
                    );
                }
                Event::HandshakeFailed { stream, .. } => {
                    assert!(self.streams.get(stream).is_some_and(|s| s.link.closed));
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
                    // Peers refused at once (the caller is told, nothing is counted): no
                    // room, no connection slot, or (a peer of unknown PKI-ID) another such
                    // peer's attempt in progress.
                    self.sent.wouldblock += results
                        .iter()
                        .filter(|r| match &r.result {
                            Err(AckError::WouldBlock) => true,
                            Err(AckError::NoConnection(e)) => {
                                e.starts_with("limit reached")
                                    || e.starts_with("a connection attempt to")
                            }
                            _ => false,
                        })
                        .count() as u64;
                }
                Event::PresumedDead(_) | Event::IdentitySwitch(_) => {}
                // A purge closes the peer's connections first: none is left.
                Event::IdentityPurged { pki_id, reason } => {
                    assert!(!self.stopped && !*stopped_now, "no purge after stop");
                    assert!(matches!(
                        reason,
                        crate::CloseReason::IdentityUnused | crate::CloseReason::IdentityExpired
                    ));
                    assert!(
                        self.comm.identity_of(pki_id).is_none(),
                        "a purged identity is gone"
                    );
                }
            }
        }
    }

    pub(super) fn on_action(&mut self, a: Action) {
        let live_stream = |d: &Self, s: &StreamId| {
            let st = d.streams.get(s).expect("an action names an issued stream");
            assert!(
                !st.link.closed,
                "no action names a stream after its CloseStream"
            );
        };
        let live_dial = |d: &Self, x: &DialId| {
            let st = d.dials.get(x).expect("an action names an issued dial");
            assert!(!st.closed, "no action names a dial after its CloseDial");
        };
        match a {
            Action::Dial { dial, endpoint } => {
                if self.dials.contains_key(&dial) {
                    // Another connection attempt of the same channel, after a back-off.
                    live_dial(self, &dial);
                    assert!(
                        self.dial_failed.remove(&dial),
                        "a dial is tried again only after its attempt failed"
                    );
                    assert!(
                        self.comm.config().dial_backoff.is_some(),
                        "one attempt a dial without a back-off"
                    );
                    return;
                }
                self.dial_order.push(dial);
                self.dials
                    .insert(dial, Link::open(Self::peer_of_endpoint(&endpoint)));
            }
            Action::Ping { dial } => live_dial(self, &dial),
            Action::OpenStream { dial, stream } => {
                live_dial(self, &dial);
                assert!(
                    !self.streams.contains_key(&stream),
                    "a handle is never reissued"
                );
                let peer = self.dials[&dial].peer;
                self.stream_order.push(stream);
                self.streams.insert(stream, StreamState::open(peer, false));
            }
            Action::Write {
                stream,
                envelope,
                kind,
            } => {
                live_stream(self, &stream);
                let handshake = is_conn_establish(&envelope);
                let st = self.streams.get_mut(&stream).expect("checked");
                assert_eq!(handshake, st.writes == 0, "a ConnEstablish first, once");
                assert_eq!(
                    kind == WriteKind::Handshake,
                    handshake,
                    "a write says whether it is the handshake"
                );
                st.writes += 1;
                if !handshake {
                    self.sent.data_writes += 1;
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
                    st.link.closed = true;
                }
                self.pending_inbound.remove(&stream);
            }
            Action::CloseDial { dial } => {
                live_dial(self, &dial);
                if let Some(d) = self.dials.get_mut(&dial) {
                    d.closed = true;
                }
            }
        }
    }

    /// The core's invariants, checked after every input.
    pub(super) fn check(&mut self) {
        let c = &self.comm;
        let cfg = c.config().clone();
        // At most one registered (primary) connection per PKI-ID, each live and proving it.
        let conns = c.connections();
        let mut seen = BTreeSet::new();
        for w in conns.windows(2) {
            assert!(w[0].pki_id < w[1].pki_id, "one entry per PKI-ID");
        }
        for crate::ConnectionEntry {
            pki_id: pki,
            primary,
            secondary,
        } in &conns
        {
            assert!(c.is_live_stream(*primary));
            assert_eq!(c.connection_info(*primary).map(|i| &i.id), Some(pki));
            assert!(seen.insert(*primary), "a stream serves one PKI-ID");
            if let Some(s) = secondary {
                assert!(c.is_live_stream(*s));
                assert_eq!(c.connection_info(*s).map(|i| &i.id), Some(pki));
                assert!(seen.insert(*s));
            }
        }
        c.check_identity_store();
        // Handles: live exactly until closed.
        let crate::LiveCounts {
            streams: live_streams,
            dials: live_dials,
            ops: live_ops,
        } = c.live_counts();
        let mut open = 0;
        for (s, st) in &self.streams {
            assert_eq!(c.is_live_stream(*s), !st.link.closed, "{s:?}");
            open += usize::from(!st.link.closed);
            if let Some(q) = c.send_queue_len(*s) {
                assert!(q.buffered <= cfg.send_buffer_size.max(1));
                assert!(q.in_flight <= cfg.write_window);
                if q.buffered + q.waiting + q.in_flight == 0 {
                    assert_eq!(q.bytes, 0, "the byte tally of {s:?} drifted");
                }
            }
        }
        assert_eq!(live_streams, open);
        assert_eq!(
            live_dials,
            self.dials.values().filter(|d| !d.closed).count()
        );
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
            self.delivered.polled
                + queued
                + self.delivered.discarded
                + st.dropped_subscription_overflow
                + st.dropped_on_stop,
            "every accepted delivery is polled, queued or counted"
        );
        assert_eq!(
            self.delivered.discarded, st.dropped_on_unsubscribe,
            "every delivery an unsubscribe discarded is counted"
        );
        // Nothing promised for sending is lost without a count; exact once all is settled.
        let mut waiting = 0;
        for s in self.streams.keys() {
            if let Some(q) = c.send_queue_len(*s) {
                waiting += (q.buffered + q.waiting) as u64;
            }
        }
        let accounted = self.sent.data_writes
            + waiting
            + st.dropped_overflow
            + st.dropped_on_close
            + st.dropped_no_connection;
        let promised = self.sent.promised();
        assert!(promised >= accounted, "{promised} < {accounted}");
        if self.stopped {
            assert_eq!(
                promised, accounted,
                "after stop every unit is written or counted"
            );
            assert_eq!(c.live_counts(), crate::LiveCounts::default());
            assert!(conns.is_empty());
            assert!(self.ops.is_empty(), "every operation reported");
        }
        #[cfg(test)]
        checked(
            "ledgers",
            Ledgers {
                stopped: self.stopped,
                promised,
                accounted,
                accepted,
                polled: self.delivered.polled,
                queued,
                live: (live_streams, live_dials, live_ops),
            },
        );
    }

    pub(super) fn advance(&mut self, by: Duration) {
        self.now = self.now + by;
        self.comm.handle_timeout(self.now);
        self.drain();
        if let Some(t) = self.comm.poll_timeout() {
            assert!(t >= self.now, "no deadline left in the past");
        }
    }

    pub(super) fn stop(&mut self) {
        self.comm.stop(self.now);
        self.drain();
        assert!(self.stopped, "stop reports Stopped");
        self.check();
    }
}
